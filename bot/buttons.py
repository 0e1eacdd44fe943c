"""Buttons that survive restarts: custom ids carry a job or entry id, state comes from the store."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

import discord

from bot.errors import InvalidInput
from bot.i18n import _
from bot.jobs import Job, JobKind

NAMESPACE = "easel"
# Discord caps custom ids at 100 characters; ours stay far below by carrying only ids.
CUSTOM_ID_MAX = 100
_TARGET = r"[1-9]\d{0,18}"
_PATTERN = re.compile(rf"easel:(?P<action>[a-z]+):(?P<target>{_TARGET})(?::(?P<index>[1-4]))?")
STALE = (
    "This button is not one Easel recognises (it may be from an old version). "
    "Use /show with the id in the result's footer instead."
)


class Action(enum.StrEnum):
    """What a button asks for."""

    PICK = "u"
    VARY = "v"  # V1-V4 under a grid (and the single Vary of results posted before Subtle/Strong)
    SUBTLE = "subtle"
    STRONG = "strong"
    PARAMETERS = "params"  # how a result was made, privately
    REROLL = "reroll"
    UPSCALE = "upscale"
    DELETE = "delete"
    CANCEL = "cancel"
    SUBMIT = "submit"  # enter a result's image in the channel's challenge
    VOTE = "vote"  # on a gallery entry
    WITHDRAW = "withdraw"  # one's own entry, before submissions close
    HISTORY = "history"  # a /history page (the id of its stored page row)
    RECALL = "recall"  # show one's own job from /history, privately
    FORGET = "forget"  # confirm /mydata delete (the id of the member who asked)

    @property
    def indexed(self) -> bool:
        """Whether the button names one image of a grid."""
        return self in (Action.PICK, Action.VARY)


@dataclass(frozen=True)
class ButtonRef:
    """What a button's custom id says: an action on a job or a challenge entry (for U/V, one image)."""

    action: Action
    target: int  # a job id, an entry id for VOTE and WITHDRAW, a member id for FORGET
    index: int | None = None

    @property
    def custom_id(self) -> str:
        """The custom id Discord stores on the button."""
        suffix = f":{self.index}" if self.index is not None else ""
        return f"{NAMESPACE}:{self.action.value}:{self.target}{suffix}"


def parse_custom_id(custom_id: str) -> ButtonRef:
    """Parse one of our custom ids, refusing anything malformed or forged."""
    match = _PATTERN.fullmatch(custom_id)
    if match is None:
        raise InvalidInput(STALE)
    try:
        action = Action(match["action"])
    except ValueError:
        raise InvalidInput(STALE) from None
    index = int(match["index"]) if match["index"] else None
    if action.indexed != (index is not None):
        raise InvalidInput(STALE)
    return ButtonRef(action, int(match["target"]), index)


def template(action: Action) -> str:
    """The custom-id template of ``action``'s buttons (its DynamicItem registers it)."""
    index = r":(?P<index>[1-4])" if action.indexed else ""
    return rf"{NAMESPACE}:{action.value}:(?P<target>{_TARGET}){index}"


def _shape(action: Action) -> str:
    return rf"{action.value}:{_TARGET}" + (r":[1-4]" if action.indexed else "")


# Every Easel id that no action's template takes: a forged or stale button, answered clearly
# instead of silently (discord.py runs every template that matches, so the two never overlap).
STALE_TEMPLATE = rf"{NAMESPACE}:(?!(?:{'|'.join(_shape(a) for a in Action)})$).*"


def button(
    ref: ButtonRef,
    *,
    label: str,
    emoji: str | None = None,
    style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    row: int | None = None,
) -> discord.ui.Button[Any]:
    """A button carrying ``ref`` in its custom id; its action's DynamicItem answers the click."""
    return discord.ui.Button(label=label, emoji=emoji, style=style, row=row, custom_id=ref.custom_id)


def result_view(job: Job, *, submit: bool = False) -> discord.ui.View:
    """Return the buttons under a job's result: U/V per image on a grid, Vary (Subtle/Strong) and Upscale on one.

    ``submit`` adds a Submit button to a single image while its channel runs a challenge.
    """
    view = discord.ui.View(timeout=None)
    if job.is_grid:
        for i in range(1, len(job.images) + 1):
            view.add_item(button(ButtonRef(Action.PICK, job.id, i), label=f"U{i}", row=0))
        for i in range(1, len(job.images) + 1):
            view.add_item(button(ButtonRef(Action.VARY, job.id, i), label=f"V{i}", row=1))
    else:
        view.add_item(button(ButtonRef(Action.SUBTLE, job.id), label=_("Vary (Subtle)"), emoji="🎲", row=0))
        view.add_item(button(ButtonRef(Action.STRONG, job.id), label=_("Vary (Strong)"), emoji="🎲", row=0))
        if job.kind is not JobKind.UPSCALE:
            view.add_item(button(ButtonRef(Action.UPSCALE, job.id), label="Upscale 2×", emoji="🔍", row=0))
        if submit:
            submit_ref = ButtonRef(Action.SUBMIT, job.id)
            view.add_item(
                button(submit_ref, label="Submit", emoji="🏆", style=discord.ButtonStyle.success, row=0)
            )
    if job.kind in (JobKind.IMAGINE, JobKind.REROLL, JobKind.VARIATION):
        view.add_item(button(ButtonRef(Action.REROLL, job.id), label="Reroll", emoji="🔄", row=2))
    view.add_item(button(ButtonRef(Action.PARAMETERS, job.id), label=_("Parameters"), emoji="📋", row=2))
    view.add_item(
        button(
            ButtonRef(Action.DELETE, job.id),
            label="Delete",
            emoji="🗑️",
            style=discord.ButtonStyle.danger,
            row=2,
        )
    )
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    """Return the Cancel button shown under a queued job."""
    view = discord.ui.View(timeout=None)
    view.add_item(button(ButtonRef(Action.CANCEL, job_id), label="Cancel", emoji="✖️"))
    return view


def vote_view(entry_id: int) -> discord.ui.View:
    """Return the Vote button under a gallery entry."""
    view = discord.ui.View(timeout=None)
    view.add_item(
        button(ButtonRef(Action.VOTE, entry_id), label="Vote", emoji="⭐", style=discord.ButtonStyle.primary)
    )
    return view


def withdraw_view(entry_id: int) -> discord.ui.View:
    """Return the Withdraw button shown to a member who just entered an image."""
    view = discord.ui.View(timeout=None)
    view.add_item(button(ButtonRef(Action.WITHDRAW, entry_id), label="Withdraw", emoji="↩️"))
    return view
