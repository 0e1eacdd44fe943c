"""What the fake Discord server remembers: messages, interactions, requests and gateway frames."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop, deprecated since 3.11, and pytest runs with -W error.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord

EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
COMPONENTS_V2 = 1 << 15
BUTTON = 2

_increment = itertools.count()
# Easel names the image of job N's result easel-N.<ext>: an upload with that name carries the result.
RESULT_FILE = re.compile(r"easel-(\d+)\.\w+")


def utcnow() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def snowflake(when: dt.datetime | None = None) -> int:
    """Return a fresh snowflake whose timestamp is ``when`` (default now)."""
    # time_snowflake leaves the low 22 bits zero; fill the 12-bit increment like Discord so that
    # ids minted in the same millisecond stay unique and ordered.
    return discord.utils.time_snowflake(when or utcnow()) | (next(_increment) % 4096)


def iso(when: dt.datetime | None) -> str | None:
    """Return Discord's ISO-8601 timestamp for ``when``."""
    return None if when is None else when.isoformat()


@dataclass
class File:
    """A file the bot uploaded, kept with its bytes."""

    filename: str
    data: bytes
    content_type: str | None = None
    id: int = 0
    url: str = ""
    proxy_url: str = ""
    description: str | None = None

    @property
    def size(self) -> int:
        """Return the byte size."""
        return len(self.data)


@dataclass
class Attachment:
    """A file a test user attaches to a slash command; served by the fake CDN."""

    id: int
    filename: str
    url: str
    content_type: str | None
    size: int
    data: bytes
    proxy_url: str = ""


@dataclass(frozen=True)
class Edit:
    """What a message showed after one edit: when, its content and its attachments' file names."""

    at: float
    content: str
    filenames: list[str]


@dataclass
class Message:
    """A message the bot created, through a channel, an interaction response or a followup."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[File] = field(default_factory=list)
    allowed_mentions: dict[str, Any] | None = None  # user and role ids as strings, as Discord keeps them
    nonce: str | int | None = None
    flags: int = 0
    interaction_id: int | None = None
    webhook_id: int | None = None
    deleted: bool = False
    pinned: bool = False
    edits: int = 0
    edit_times: list[float] = field(default_factory=list)
    history: list[Edit] = field(default_factory=list)
    created_via: str = "channel"
    type: int = 0
    tts: bool = False
    reference: dict[str, Any] | None = None
    created_at: dt.datetime = field(default_factory=utcnow)
    edited_at: dt.datetime | None = None
    created_monotonic: float = field(default_factory=time.monotonic)

    @property
    def ephemeral(self) -> bool:
        """Return whether only the invoking user can see this message."""
        return bool(self.flags & EPHEMERAL)

    def walk_components(self) -> list[dict[str, Any]]:
        """Return every component, depth first, in display order."""
        found: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                found.append(item)
                walk(item.get("components") or [])
                if isinstance(item.get("accessory"), dict):
                    walk([item["accessory"]])

        walk(self.components)
        return found

    def custom_ids(self) -> list[str]:
        """Return the custom ids of all buttons, in order."""
        return [
            c["custom_id"] for c in self.walk_components() if c.get("type") == BUTTON and "custom_id" in c
        ]

    def buttons(self) -> list[tuple[str | None, str | None, str | None, bool]]:
        """Return (label, emoji name, custom_id, disabled) for every button, in order."""
        return [
            (c.get("label"), (c.get("emoji") or {}).get("name"), c.get("custom_id"), bool(c.get("disabled")))
            for c in self.walk_components()
            if c.get("type") == BUTTON
        ]


@dataclass
class Callback:
    """The interaction callback the bot posted."""

    type: int
    data: dict[str, Any] | None
    received_at: float
    files: list[File] = field(default_factory=list)


@dataclass
class Interaction:
    """An INTERACTION_CREATE the test injected, and how the bot answered it."""

    id: int
    token: str
    type: int
    guild_id: int | None
    channel_id: int
    user_id: int
    name: str
    payload: dict[str, Any]
    sent_at: float = 0.0
    callback: Callback | None = None
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    expired: bool = False
    message_id: int | None = None

    @property
    def created_at(self) -> dt.datetime:
        """Return the time encoded in the interaction's snowflake."""
        return discord.utils.snowflake_time(self.id)

    @property
    def ephemeral(self) -> bool:
        """Return whether the bot's response was ephemeral."""
        if self.original is not None:
            return self.original.ephemeral
        data = self.callback.data if self.callback else None
        return bool((data or {}).get("flags", 0) & EPHEMERAL)

    async def wait_callback(self, timeout: float = 5) -> Callback:
        """Wait until the bot posts the callback and return it."""
        try:
            await asyncio.wait_for(self.responded.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"interaction {self.id} ({self.name!r}) got no callback within {timeout}s"
            ) from None
        assert self.callback is not None
        return self.callback


@dataclass
class Request:
    """One HTTP request the bot made to the REST API."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[File]
    received_at: float
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    # What the request did to a message: "created", "edited", or "deduplicated" (an enforce_nonce
    # repeat that got the earlier message back); None when it touched no message.
    outcome: str | None = None
    message_id: int | None = None

    @property
    def result_job(self) -> int | None:
        """The job whose result this request uploads (a file named easel-<job>.<ext>), if any."""
        for file in self.files:
            if match := RESULT_FILE.fullmatch(file.filename):
                return int(match[1])
        return None

    def __str__(self) -> str:
        outcome = f" ({self.outcome} {self.message_id})" if self.outcome else ""
        return f"{self.method} {self.path} -> {self.status}{outcome}"


@dataclass
class GatewayEvent:
    """One gateway frame, sent by the server ("send") or by the bot ("recv")."""

    direction: str
    op: int
    t: str | None
    s: int | None
    d: Any
    at: float
    shard_id: int | None = None

    def __str__(self) -> str:
        name = self.t or {1: "HEARTBEAT", 2: "IDENTIFY", 6: "RESUME", 9: "INVALID_SESSION", 10: "HELLO"}.get(
            self.op, ""
        )
        return f"{self.direction} op={self.op} {name} s={self.s} shard={self.shard_id}"


@dataclass
class Guild:
    """A guild the bot is in."""

    id: int
    name: str
    channels: dict[int, str]
    nsfw_channels: set[int]
    filesize_limit: int
    premium_tier: int
    member_count: int
    bot_role_id: int
    joined_at: dt.datetime = field(default_factory=utcnow)
    roles: dict[int, str] = field(default_factory=dict)  # besides @everyone and the bot's role
    # Per channel, its permission overwrites in Discord's wire shape: {"id", "type" (0 role,
    # 1 member), "allow", "deny"}, the permission bits as strings.
    overwrites: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def bot_denied(self, channel_id: int) -> int:
        """The permission bits the channel's overwrites deny the bot's role (which posting checks)."""
        return sum(
            int(o["deny"])
            for o in self.overwrites.get(channel_id, [])
            if o["type"] == 0 and o["id"] == str(self.bot_role_id)
        )
