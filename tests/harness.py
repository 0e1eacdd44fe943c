"""Runs the real Easel bot (composition root and all) against the local Discord and OpenAI test servers."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from bot.__main__ import open_app
from bot.app import EaselBot
from bot.config import Settings, parse_settings
from bot.jobs import utcnow
from tests.fakediscord import DEFAULT_MEMBER_PERMISSIONS, FakeDiscord, Interaction, Message
from tests.fakeopenai import FakeOpenAI

GUILD_A, CHANNEL_A = 111_000_000_000_000_001, 111_000_000_000_000_101
GUILD_B, CHANNEL_B = 222_000_000_000_000_002, 222_000_000_000_000_202
ALICE, BOB, CAROL = 900_000_000_000_000_001, 900_000_000_000_000_002, 900_000_000_000_000_003
OPENAI_KEY = "sk-test-e2e-0123456789abcdef"
MANAGE_GUILD = 1 << 5
MODERATOR = DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD
NO_PINGS = {"parse": []}


def settings_for(
    discord_server: FakeDiscord, openai_server: FakeOpenAI | None, data_dir: Path, **sections: Any
) -> Settings:
    """Build settings that point Easel at the test servers, like an operator's proxy config would."""
    raw: dict[str, Any] = {
        "discord": {
            "token": discord_server.token,
            "api_base": discord_server.api_base,
            "dev_guild_ids": [GUILD_A, GUILD_B],
        },
        "storage": {"path": str(data_dir / "easel.sqlite3")},
        "queue": {"position_update_s": 1.0},
        # Tests act far faster than members: the per-member rate limit stays out of their way
        # unless a test sets [limits] itself.
        "limits": {"burst": 100, "refill_s": 0.1},
    }
    if openai_server is not None:
        raw["openai"] = {
            "api_key": OPENAI_KEY,
            "base_url": openai_server.base_url,
            "model": "gpt-image-1-mini",
        }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_settings(raw, {}, base_dir=data_dir)


@dataclass
class Harness:
    """A FakeDiscord, a FakeOpenAI and the Easel bot between them; the bot can be restarted."""

    discord: FakeDiscord
    openai: FakeOpenAI
    data_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], datetime] = utcnow
    bot: EaselBot | None = None
    _stack: contextlib.AsyncExitStack | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Settings:
        """The settings the bot runs with."""
        return settings_for(self.discord, self.openai, self.data_dir, **self.overrides)

    async def start_bot(self) -> EaselBot:
        """Start Easel through its composition root and wait until its commands are synced."""
        settings = self.settings
        self._stack = contextlib.AsyncExitStack()
        self.bot = await self._stack.enter_async_context(open_app(settings, clock=self.clock))
        self._task = asyncio.create_task(self.bot.start(settings.discord.token.reveal()))
        await self.discord.wait_connected(timeout=15)
        # Commands go to the dev guilds when there are any, else globally (key None).
        targets = settings.discord.dev_guild_ids or (None,)
        await self.discord.wait_for(lambda: all(t in self.discord.commands for t in targets), timeout=30)
        return self.bot

    async def stop_bot(self) -> None:
        """Stop Easel the way an operator's Ctrl-C or a container stop does."""
        if self._stack is not None:
            await self._stack.aclose()
        if self._task is not None:
            await self._task
        self.bot, self._stack, self._task = None, None, None

    async def imagine(
        self, prompt: str, *, user: int = ALICE, guild: int = GUILD_A, **options: Any
    ) -> Interaction:
        """Send /imagine as a member would."""
        channel = CHANNEL_A if guild == GUILD_A else CHANNEL_B
        return await self.discord.slash(
            guild_id=guild,
            channel_id=channel,
            user_id=user,
            name="imagine",
            options={"prompt": prompt, **options},
        )

    async def result_of(self, interaction: Interaction, timeout: float = 20) -> Message:
        """Wait until the interaction's response shows a result (an embed with an image) and return it."""

        def done() -> bool:
            msg = interaction.original
            return msg is not None and bool(msg.embeds) and bool(msg.attachments)

        await self.discord.wait_for(done, timeout=timeout)
        assert interaction.original is not None
        return interaction.original


async def command(
    easel: Harness,
    name: str,
    *,
    user: int = CAROL,
    permissions: int = MODERATOR,
    guild: int = GUILD_A,
    where: int | None = None,
    roles: list[int] | None = None,
    **options: Any,
) -> Interaction:
    """Send a slash command (by default as CAROL, a moderator, in guild A's channel) and wait for its answer."""
    inter = await easel.discord.slash(
        guild_id=guild,
        channel_id=where or (CHANNEL_A if guild == GUILD_A else CHANNEL_B),
        user_id=user,
        name=name,
        options=options,
        permissions=permissions,
        roles=roles,
    )
    await inter.wait_callback()
    return inter


async def said(easel: Harness, name: str, **kwargs: Any) -> str:
    """Send a command that answers at once and privately; return what it said."""
    inter = await command(easel, name, **kwargs)
    assert inter.original is not None, easel.discord.dump()
    assert inter.original.ephemeral
    assert inter.original.allowed_mentions == NO_PINGS
    return inter.original.content


def image_of(message: Message) -> Image.Image:
    """Decode the one image attached to a message."""
    assert len(message.attachments) == 1, message.attachments
    return Image.open(io.BytesIO(message.attachments[0].data))


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    guilds: Sequence[tuple[int, int]] | None = None,
    age_restricted: Collection[int] = (),
    clock: Callable[[], datetime] = utcnow,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """Start both test servers with ``guilds`` ((guild, channel) pairs; default A and B) and the bot.

    ``age_restricted`` channels are marked NSFW on Discord; ``clock`` gives quotas and challenge
    deadlines the time; ``overrides`` are config sections.
    """
    discord = FakeDiscord()
    openai = FakeOpenAI(api_key=OPENAI_KEY)
    await discord.start()
    await openai.start()
    for guild_id, channel_id in guilds or ((GUILD_A, CHANNEL_A), (GUILD_B, CHANNEL_B)):
        discord.add_guild(
            guild_id,
            channels=[(channel_id, "art")],
            nsfw_channels=[channel_id] if channel_id in age_restricted else [],
        )
    harness = Harness(discord, openai, tmp_path, dict(overrides), clock)
    try:
        await harness.start_bot()
        yield harness
    finally:
        await harness.stop_bot()
        await openai.close()
        await discord.close()
