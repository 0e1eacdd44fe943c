"""Custom ids: every id Easel makes parses back; forged or malformed ids are refused clearly."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import discord
import pytest

from bot.app import EaselButton, StaleButton
from bot.buttons import (
    CUSTOM_ID_MAX,
    Action,
    ButtonRef,
    cancel_view,
    parse_custom_id,
    result_view,
    vote_view,
    withdraw_view,
)
from bot.errors import InvalidInput
from bot.jobs import Job, JobKind, JobParams, JobStatus
from cogs.challenges import BUTTONS as CHALLENGE_BUTTONS
from cogs.history import BUTTONS as HISTORY_BUTTONS
from cogs.mydata import BUTTONS as MYDATA_BUTTONS
from cogs.results import BUTTONS as RESULT_BUTTONS


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


REGISTERED: tuple[type[EaselButton], ...] = (
    StaleButton,
    *RESULT_BUTTONS,
    *CHALLENGE_BUTTONS,
    *HISTORY_BUTTONS,
    *MYDATA_BUTTONS,
)


def handlers(custom_id: str) -> list[type[EaselButton]]:
    """The registered items discord.py would run for a click on ``custom_id`` (it runs every match)."""
    return [item for item in REGISTERED if item.__discord_ui_compiled_template__.fullmatch(custom_id)]


def refs(view: discord.ui.View) -> list[ButtonRef]:
    return [parse_custom_id(item.custom_id) for item in view.children if isinstance(item, discord.ui.Button)]


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", list(JobKind))
def test_every_custom_id_made_is_answered_by_exactly_its_actions_button(count: int, kind: JobKind) -> None:
    views = [result_view(job(count, kind), submit=True), cancel_view(2**53), vote_view(7), withdraw_view(7)]
    for view in views:
        for item in view.children:
            assert isinstance(item, discord.ui.Button)
            assert item.custom_id is not None
            assert len(item.custom_id) <= CUSTOM_ID_MAX
            ref = parse_custom_id(item.custom_id)
            [handler] = handlers(item.custom_id)
            assert handler is not StaleButton
            assert re.fullmatch(rf"easel:{ref.action.value}:.*", item.custom_id)
            assert handler.__name__.lower().startswith(ref.action.name.lower())


def test_every_action_has_one_button_that_answers_it() -> None:
    for action in Action:
        ref = ButtonRef(action, 12, 1 if action.indexed else None)
        assert len(handlers(ref.custom_id)) == 1, action


def test_a_grid_gets_u_and_v_per_image_and_a_single_image_gets_vary_and_upscale() -> None:
    grid = refs(result_view(job(4)))
    assert [r.action for r in grid if r] == [Action.PICK] * 4 + [Action.VARY] * 4 + [
        Action.REROLL,
        Action.PARAMETERS,
        Action.DELETE,
    ]
    single = refs(result_view(job(1)))
    assert [r.action for r in single if r] == [
        Action.SUBTLE,
        Action.STRONG,
        Action.UPSCALE,
        Action.REROLL,
        Action.PARAMETERS,
        Action.DELETE,
    ]
    upscaled = refs(result_view(replace(job(1), kind=JobKind.UPSCALE)))
    assert Action.UPSCALE not in [r.action for r in upscaled]


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
    # Only the catch-all answers them, so the member gets that message and nothing else runs.
    assert handlers(custom_id) == [StaleButton]


def test_the_single_vary_of_messages_posted_before_subtle_and_strong_is_still_answered() -> None:
    [handler] = handlers("easel:v:42:1")
    assert handler.__name__ == "VaryButton"


def test_custom_ids_round_trip() -> None:
    ref = ButtonRef(Action.VARY, 42, 3)
    assert ref.custom_id == "easel:v:42:3"
    assert parse_custom_id(ref.custom_id) == ref
