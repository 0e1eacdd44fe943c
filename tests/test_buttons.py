"""Custom ids: every id Easel makes parses back; forged or malformed ids are refused clearly."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.buttons import CUSTOM_ID_MAX, Action, ButtonRef, JobButton, cancel_view, parse_custom_id, result_view
from bot.errors import InvalidInput
from bot.jobs import Job, JobKind, JobParams, JobStatus


def job(images: int, kind: JobKind = JobKind.IMAGINE) -> Job:
    return Job(
        id=2**53,
        guild_id=1,
        channel_id=2,
        user_id=3,
        kind=kind,
        backend="openai",
        status=JobStatus.POSTED,
        params=JobParams(prompt="p", width=1024, height=1024, count=images),
        created_at=datetime.now(UTC),
        images=tuple(f"jobs/1/{i}.png" for i in range(images)),
    )


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", list(JobKind))
def test_every_custom_id_made_matches_the_template_and_parses_back(count: int, kind: JobKind) -> None:
    views = [result_view(job(count, kind)), cancel_view(2**53)]
    for view in views:
        for item in view.children:
            assert isinstance(item, JobButton)
            assert item.ref is not None
            assert len(item.custom_id) <= CUSTOM_ID_MAX
            assert JobButton.__discord_ui_compiled_template__.fullmatch(item.custom_id)
            assert parse_custom_id(item.custom_id) == item.ref


def test_a_grid_gets_u_and_v_per_image_and_a_single_image_gets_vary_and_upscale() -> None:
    grid = [item.ref for item in result_view(job(4)).children if isinstance(item, JobButton)]
    assert [r.action for r in grid if r] == [Action.PICK] * 4 + [Action.VARY] * 4 + [
        Action.REROLL,
        Action.DELETE,
    ]
    single = [item.ref for item in result_view(job(1)).children if isinstance(item, JobButton)]
    assert [r.action for r in single if r] == [Action.VARY, Action.UPSCALE, Action.REROLL, Action.DELETE]
    upscaled = result_view(replace(job(1), kind=JobKind.UPSCALE)).children
    assert Action.UPSCALE not in [i.ref.action for i in upscaled if isinstance(i, JobButton) and i.ref]


@pytest.mark.parametrize(
    "custom_id",
    [
        "easel:u:12",  # U needs an image index
        "easel:reroll:12:3",  # reroll takes none
        "easel:u:12:5",  # only 4 images
        "easel:nuke:12",
        "easel:reroll:0",
        "easel:reroll:-4",
        "easel:reroll:12; DROP TABLE jobs",
        "easel:reroll:" + "9" * 40,
        "easel:",
    ],
)
def test_forged_custom_ids_are_refused_with_a_clear_message(custom_id: str) -> None:
    with pytest.raises(InvalidInput, match="not one Easel recognises"):
        parse_custom_id(custom_id)


def test_custom_ids_round_trip() -> None:
    ref = ButtonRef(Action.VARY, 42, 3)
    assert ref.custom_id == "easel:v:42:3"
    assert parse_custom_id(ref.custom_id) == ref
