"""Inline ``--`` parameters in a prompt, as Midjourney members type them: parsed, checked, written back.

Pure functions: no Discord, no store. ``parse_prompt`` splits ``a fox --ar 16:9 --no text`` into the
prompt and its parameters, or raises ``PromptParamsError`` naming every part it did not understand;
``to_line`` writes parameters back as the text that would make them again.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bot.errors import InvalidInput
from bot.i18n import _

SEED_MAX = 2**32 - 1
# Midjourney's ranges, which members already know: stylize 0-1000 (100 when not given),
# chaos 0-100, image weight 0-3.
STYLIZE_MAX = 1000
STYLIZE_DEFAULT = 100
CHAOS_MAX = 100
IMAGE_WEIGHT_MAX = 3.0
QUALITIES = ("low", "medium", "high")
# A ratio side above this is a typo (16:9 is meant, not 16000:9); mapping clamps extreme shapes anyway.
RATIO_SIDE_MAX = 10_000

# Each parameter by every name members type for it; the value is the canonical name.
NAMES = {
    "ar": "ar",
    "aspect": "ar",
    "no": "no",
    "seed": "seed",
    "q": "q",
    "quality": "q",
    "s": "s",
    "stylize": "s",
    "c": "chaos",
    "chaos": "chaos",
    "iw": "iw",
}
FIELDS = {
    "ar": "ratio",
    "no": "negative",
    "seed": "seed",
    "q": "quality",
    "s": "stylize",
    "chaos": "chaos",
    "iw": "image_weight",
}
ACCEPTED = "--ar W:H, --no …, --seed N, --q low|medium|high, --s 0–1000, --chaos 0–100, --iw 0–3"
# A parameter starts at "--" (or the "—" phone keyboards make of it) at the start of the text or
# after a space, followed by a letter: "semi--colon" and "-- " stay prompt text.
_MARK = re.compile(r"(?:^|(?<=\s))(?:--|—)(?=[A-Za-z])")
_NAME = re.compile(r"[A-Za-z]+")
_RATIO = re.compile(r"(\d{1,5}):(\d{1,5})")


class PromptParamsError(InvalidInput):
    """Parts of a prompt's inline parameters that were not understood; str() lists them and what works."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            _(
                "Easel did not understand {problems}. Inline parameters it accepts: {accepted}. "
                "Fix or remove them and try again.",
                problems="; ".join(problems),
                accepted=ACCEPTED,
            )
        )


@dataclass(frozen=True)
class PromptParams:
    """A prompt with its inline parameters taken out; None (or empty) where a parameter was not given."""

    prompt: str
    ratio: tuple[int, int] | None = None
    negative: str = ""
    seed: int | None = None
    quality: str = ""
    stylize: int | None = None
    chaos: int | None = None
    image_weight: float | None = None


def parse_prompt(text: str) -> PromptParams:
    """Split ``text`` into its prompt and inline parameters; raise PromptParamsError listing what is wrong."""
    marks = list(_MARK.finditer(text))
    prompt = text[: marks[0].start()] if marks else text
    problems: list[str] = []
    seen: dict[str, str] = {}
    values: dict[str, object] = {}  # PromptParams' field name -> checked value
    for i, mark in enumerate(marks):
        chunk = text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        name_match = _NAME.match(chunk)
        assert name_match is not None  # the mark's lookahead saw a letter
        typed, value = name_match[0], chunk[name_match.end() :].strip()
        name = NAMES.get(typed.lower())
        if name is None:
            problems.append(_("--{name} (not a parameter Easel knows)", name=typed))
            continue
        if name in seen:
            problems.append(_("--{name} (given twice: keep one)", name=typed))
            continue
        seen[name] = typed
        try:
            values[FIELDS[name]] = _value(name, value)
        except ValueError as bad:
            problems.append(_("--{name} {value} ({why})", name=typed, value=value or "…", why=str(bad)))
    if problems:
        raise PromptParamsError(problems)
    return PromptParams(
        prompt=" ".join(prompt.split()),
        **values,  # type: ignore[arg-type]
    )


def _value(name: str, value: str) -> object:
    """Check one parameter's value; raise ValueError with what the member should write instead."""
    if name == "no":
        negative = " ".join(value.split())
        if not negative:
            raise ValueError(_("say what to leave out, like --no text, people"))
        return negative
    if name == "ar":
        ratio = _RATIO.fullmatch(value)
        if ratio is None or not all(1 <= int(side) <= RATIO_SIDE_MAX for side in ratio.groups()):
            raise ValueError(_("write the shape as width:height, like --ar 16:9"))
        width, height = int(ratio[1]), int(ratio[2])
        divisor = math.gcd(width, height)
        return (width // divisor, height // divisor)
    if name == "q":
        if value.lower() not in QUALITIES:
            raise ValueError(_("use low, medium or high"))
        return value.lower()
    if name == "iw":
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not 0.0 <= weight <= IMAGE_WEIGHT_MAX:
            raise ValueError(_("use a number from 0 to {top}", top=f"{IMAGE_WEIGHT_MAX:g}"))
        return weight
    top = {"seed": SEED_MAX, "s": STYLIZE_MAX, "chaos": CHAOS_MAX}[name]
    if not value.isascii() or not value.isdigit() or int(value) > top:
        raise ValueError(_("use a whole number from 0 to {top}", top=top))
    return int(value)


def ratio_text(width: int, height: int) -> str:
    """Return ``width``×``height`` as the reduced ratio ``--ar`` takes (1360×768 → 85:48)."""
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def to_line(params: PromptParams) -> str:
    """Write a prompt and its parameters back as one prompt text that ``parse_prompt`` reads the same."""
    parts = [params.prompt]
    if params.ratio is not None:
        parts.append(f"--ar {params.ratio[0]}:{params.ratio[1]}")
    if params.negative:
        parts.append(f"--no {params.negative}")
    if params.seed is not None:
        parts.append(f"--seed {params.seed}")
    if params.quality:
        parts.append(f"--q {params.quality}")
    if params.stylize is not None:
        parts.append(f"--s {params.stylize}")
    if params.chaos is not None:
        parts.append(f"--chaos {params.chaos}")
    if params.image_weight is not None:
        parts.append(f"--iw {params.image_weight:g}")
    return " ".join(parts)
