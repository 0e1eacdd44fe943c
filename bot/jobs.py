"""Jobs: the durable unit of work, as plain values, and the transitions between their states."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.renderers.base import Operation, Usage

# Discord invalidates an interaction token 15 minutes after the interaction; a little
# margin keeps a slow upload from racing the deadline.
INTERACTION_TOKEN_TTL = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=30)
# Public ids: Crockford's base32 (no i, l, o, u to misread), 10 characters = 50 random bits.
PUBLIC_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
PUBLIC_ID_LENGTH = 10


class JobKind(enum.StrEnum):
    """Why a job exists, as the member asked for it."""

    IMAGINE = "imagine"
    VARIATION = "variation"
    REROLL = "reroll"
    UPSCALE = "upscale"
    PICK = "pick"  # U1-U4: one image of a grid, no rendering needed

    @property
    def operation(self) -> Operation:
        """The renderer operation this kind of job needs."""
        if self is JobKind.VARIATION:
            return Operation.VARY
        if self is JobKind.UPSCALE:
            return Operation.UPSCALE
        return Operation.GENERATE


class JobStatus(enum.StrEnum):
    """Where a job is on its path from request to posted result."""

    QUEUED = "queued"
    RUNNING = "running"
    RENDERED = "rendered"
    POSTED = "posted"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Every allowed transition; the store refuses anything else, so a bug cannot post a
# cancelled job or re-render a posted one.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.RENDERED, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RENDERED: frozenset({JobStatus.POSTED, JobStatus.FAILED}),
    JobStatus.POSTED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class Interaction:
    """What delivery needs to answer through an interaction's webhook while its token lives."""

    application_id: int
    # The token lets anyone post as Easel in that channel for 15 minutes: never in a repr.
    token: str = field(repr=False)
    created_at: datetime
    message_id: int | None = None

    def token_valid(self, now: datetime) -> bool:
        """Whether the webhook token can still be used at ``now``."""
        return now < self.created_at + INTERACTION_TOKEN_TTL - TOKEN_MARGIN


@dataclass(frozen=True)
class JobParams:
    """The render parameters of a job, as chosen at request time."""

    prompt: str
    width: int
    height: int
    count: int = 1
    negative: str = ""
    seed: int | None = None  # None for backends that take no seed (OpenAI)
    quality: str = ""
    strength: float = 0.6
    extra_prompt: str = ""
    guidance: float | None = None  # CFG scale asked for; None: the backend has none (OpenAI)
    steps: int = 0  # denoising steps the backend runs (0: it has no such setting)
    stylize: int | None = None  # --s as the member gave it, for the /imagine line
    chaos: int = 0  # --chaos: how far the images of one job spread apart (0-100)
    image_weight: float | None = None  # --iw, kept for image prompts
    ratio: str = ""  # --ar as given, reduced ("16:9"); empty when an aspect name chose the shape
    # Options the backend could not honour, comma-separated (seed, negative, stylize, chaos,
    # strength, iw, ar): the result says so instead of dropping them silently.
    unhonoured: str = ""


@dataclass(frozen=True)
class NewJob:
    """A job as the service asks the queue to accept it."""

    guild_id: int
    channel_id: int
    user_id: int
    kind: JobKind
    backend: str
    params: JobParams
    interaction: Interaction | None = None
    parent_id: int | None = None
    parent_index: int | None = None
    upload_limit: int = 10 * 1024 * 1024
    source_image: bytes | None = None
    flagged: bool = False  # made from a flagged result: shown only where that one may be
    private: bool = False  # answered ephemerally: only the member sees its place in line and result


@dataclass(frozen=True)
class Job:
    """A job as stored: the one Python shape of a ``jobs`` row."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    kind: JobKind
    backend: str
    status: JobStatus
    params: JobParams
    created_at: datetime
    interaction: Interaction | None = None
    parent_id: int | None = None
    parent_index: int | None = None
    upload_limit: int = 10 * 1024 * 1024
    images: tuple[str, ...] = ()
    source_path: str | None = None
    made_by: str = ""
    usage: Usage | None = None
    error: str = ""
    message_id: int | None = None
    posted_channel_id: int | None = None
    cancel_requested: bool = False
    attempts: int = 0
    public_id: str = ""  # what /show takes: random, so results cannot be found by counting
    deleted_at: datetime | None = None  # when 🗑️ Delete removed the result: never shown again
    flagged: bool = False  # the safety checker flagged it: shown only in age-restricted channels
    private: bool = False  # answered ephemerally; posted in the channel only once that answer is gone

    @property
    def is_grid(self) -> bool:
        """Whether the result shows several images (and so U/V buttons)."""
        return len(self.images) > 1

    @property
    def posted_in(self) -> int:
        """The channel the result was posted in (the request's channel until it is posted)."""
        return self.posted_channel_id if self.posted_channel_id is not None else self.channel_id


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def new_public_id() -> str:
    """Return a fresh random public id for a job."""
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def _sees_nothing(_channel_id: int) -> bool:
    return False


@dataclass(frozen=True)
class Requester:
    """Who asks, where, and through which interaction; filled by the cog from Discord's payload."""

    guild_id: int
    channel_id: int
    user_id: int
    upload_limit: int
    interaction: Interaction | None = None
    manage_messages: bool = False
    manage_guild: bool = False
    role_ids: tuple[int, ...] = ()
    parent_channel_id: int | None = None  # a thread's channel, whose rules the thread follows
    # Whether the member can see a channel of this guild and read its history, as Discord's
    # permissions say (the cog asks); by default nothing, so a forgotten lookup fails closed.
    can_view: Callable[[int], bool] = _sees_nothing
    age_restricted: bool = False  # whether the channel asked in is age-restricted
    private: bool = False  # whether the interaction was acknowledged ephemerally (bot.visibility decides)
