"""What a result says about how it was made: the options its backend could not honour, and its parameters."""

from __future__ import annotations

from bot.i18n import N_, _
from bot.jobs import Job
from bot.prompt_params import PromptParams, ratio_text, to_line
from bot.text import escape

# One short line per option a backend could not honour (JobParams.unhonoured), under the result.
NOTES = {
    "seed": N_("This backend takes no seed, so this image cannot be made again exactly."),
    "negative": N_("This backend has no negative prompt: it was asked in words to avoid it."),
    "stylize": N_("--s was not used: this backend or model has no guidance setting."),
    "chaos": N_("--chaos was not used: this backend or model cannot spread its images apart."),
    "strength": N_(
        "This backend takes no strength number: it was asked in words for a close or a free variation."
    ),
    "iw": N_("--iw was not used: it weighs image prompts, which Easel does not take yet."),
}


def option_notes(job: Job) -> list[str]:
    """The lines a result shows for the options its backend could not honour (empty when it honoured all)."""
    p = job.params
    lines = []
    for name in p.unhonoured.split(","):
        if name == "ar":
            lines.append(
                _(
                    "--ar {ratio} became {width}×{height}, the nearest size this backend makes.",
                    ratio=p.ratio,
                    width=p.width,
                    height=p.height,
                )
            )
        elif name in NOTES:
            lines.append(_(NOTES[name]))
    return lines


def imagine_line(job: Job) -> str:
    """The ``/imagine`` command, with inline parameters, that would make this result again."""
    p = job.params
    prompt = " ".join(part for part in (p.prompt, p.extra_prompt) if part)
    line = to_line(
        PromptParams(
            prompt,
            ratio=_ratio(job),
            negative=p.negative,
            seed=p.seed,
            quality=p.quality,
            stylize=p.stylize,
            chaos=p.chaos or None,
            image_weight=p.image_weight,
        )
    )
    return f'/imagine prompt:"{line}"'


def remix_text(job: Job) -> str:
    """The prompt with its inline parameters that Remix fills in (no seed: a remix takes a new one)."""
    p = job.params
    prompt = " ".join(part for part in (p.prompt, p.extra_prompt) if part)
    return to_line(
        PromptParams(
            prompt,
            ratio=_ratio(job),
            negative=p.negative,
            quality=p.quality,
            stylize=p.stylize,
            chaos=p.chaos or None,
            image_weight=p.image_weight,
        )
    )


def _ratio(job: Job) -> tuple[int, int]:
    ratio = job.params.ratio or ratio_text(job.params.width, job.params.height)
    width, height = (int(side) for side in ratio.split(":"))
    return width, height


def parameters_text(job: Job) -> str:
    """The private answer of the Parameters button: how this result was made, and how to make it again."""
    p = job.params
    unknown = _("not a setting of this backend")
    prompt = " ".join(part for part in (p.prompt, p.extra_prompt) if part)
    lines = [
        _("**Parameters of job #{id}**", id=job.id),
        _("Prompt: {prompt}", prompt=escape(prompt) if prompt else _("none (a variation of an upload)")),
        _("Negative prompt: {negative}", negative=escape(p.negative) if p.negative else _("none")),
        _("Seed: {seed}", seed=p.seed if p.seed is not None else unknown),
        _("Size: {width}×{height}", width=p.width, height=p.height),
        _("Model: {model}", model=job.made_by or job.backend),
        _("Steps: {steps}", steps=p.steps or unknown),
        _("Guidance: {guidance}", guidance=f"{p.guidance:g}" if p.guidance is not None else unknown),
    ]
    lines += option_notes(job)
    # Backticks would end the code span early; the prompt keeps its meaning with quotes instead.
    lines.append(_("Make it again: `{line}`", line=imagine_line(job).replace("`", "'")))
    return "\n".join(lines)
