"""Inline prompt parameters: a table of prompts members type, good and bad, and a round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.prompt_params import PromptParams, PromptParamsError, parse_prompt, ratio_text, to_line

GOOD = [
    ("a fox", PromptParams("a fox")),
    ("a fox --ar 16:9", PromptParams("a fox", ratio=(16, 9))),
    ("a fox --ar 1920:1080", PromptParams("a fox", ratio=(16, 9))),
    ("a fox --aspect 2:3", PromptParams("a fox", ratio=(2, 3))),
    (
        "a fox --ar 16:9 --no text, watermark --seed 7",
        PromptParams("a fox", ratio=(16, 9), negative="text, watermark", seed=7),
    ),
    ("a fox --no text --q high", PromptParams("a fox", negative="text", quality="high")),
    ("a fox --quality LOW", PromptParams("a fox", quality="low")),
    ("a fox --s 250", PromptParams("a fox", stylize=250)),
    ("a fox --stylize 0", PromptParams("a fox", stylize=0)),
    ("a fox --c 100", PromptParams("a fox", chaos=100)),
    ("a fox --iw 0.5", PromptParams("a fox", image_weight=0.5)),
    ("a fox --seed 4294967295", PromptParams("a fox", seed=2**32 - 1)),
    # Phone keyboards turn "--" into an em dash.
    ("a fox —ar 3:2 —no snow", PromptParams("a fox", ratio=(3, 2), negative="snow")),
    # "--" inside a word, or not followed by a letter, is prompt text.
    ("semi--colon art -- 5", PromptParams("semi--colon art -- 5")),
    ("  a   fox  --SEED 3  ", PromptParams("a fox", seed=3)),
]

BAD = [
    ("a fox --ar 16x9", ["--ar 16x9"]),
    ("a fox --ar 0:9", ["--ar 0:9"]),
    ("a fox --ar", ["--ar …"]),
    ("a fox --no", ["--no …"]),
    ("a fox --seed -1", ["--seed -1"]),
    ("a fox --seed 4294967296", ["--seed 4294967296"]),
    ("a fox --seed seven", ["--seed seven"]),
    ("a fox --q ultra", ["--q ultra"]),
    ("a fox --s 1001", ["--s 1001"]),
    ("a fox --chaos 101", ["--chaos 101"]),
    ("a fox --iw 4", ["--iw 4"]),
    ("a fox --iw nan", ["--iw nan"]),
    ("a fox --tile", ["--tile (not a parameter"]),
    ("a fox --v 6 --niji 5", ["--v (not", "--niji (not"]),
    ("a fox --chaos 40 --c 10", ["--c (given twice"]),
    ("a fox --seed ７", ["--seed ７"]),  # a full-width digit is not one --seed reads
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good_prompts_parse(text: str, expected: PromptParams) -> None:
    assert parse_prompt(text) == expected


@pytest.mark.parametrize(("text", "problems"), BAD)
def test_bad_prompts_name_each_problem_and_what_works(text: str, problems: list[str]) -> None:
    with pytest.raises(PromptParamsError) as raised:
        parse_prompt(text)
    assert len(raised.value.problems) == len(problems)
    for found, expected in zip(raised.value.problems, problems, strict=True):
        assert found.startswith(expected), found
    message = str(raised.value)
    assert "--ar W:H" in message  # what is accepted
    assert "--seed N" in message


def test_ratio_text_reduces() -> None:
    assert ratio_text(1360, 768) == "85:48"
    assert ratio_text(1024, 1024) == "1:1"


words = st.text(alphabet="abcdefghij ,", min_size=1, max_size=30).filter(lambda s: s.strip(" ,"))


@given(
    prompt=words,
    ratio=st.none() | st.tuples(st.integers(1, 50), st.integers(1, 50)),
    negative=st.none() | words,
    seed=st.none() | st.integers(0, 2**32 - 1),
    quality=st.sampled_from(["", "low", "medium", "high"]),
    stylize=st.none() | st.integers(0, 1000),
    chaos=st.none() | st.integers(0, 100),
    image_weight=st.none() | st.sampled_from([0.0, 0.25, 1.0, 2.5, 3.0]),
)
def test_to_line_parses_back_to_the_same_parameters(
    prompt: str,
    ratio: tuple[int, int] | None,
    negative: str | None,
    seed: int | None,
    quality: str,
    stylize: int | None,
    chaos: int | None,
    image_weight: float | None,
) -> None:
    params = PromptParams(
        " ".join(prompt.split()),
        ratio=parse_prompt(f"x --ar {ratio[0]}:{ratio[1]}").ratio if ratio else None,
        negative=" ".join((negative or "").split()),
        seed=seed,
        quality=quality,
        stylize=stylize,
        chaos=chaos,
        image_weight=image_weight,
    )
    assert parse_prompt(to_line(params)) == params
