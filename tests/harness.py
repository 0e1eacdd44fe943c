"""Runs the real Easel bot (composition root and all) against the local Discord and OpenAI test servers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from bot.__main__ import open_app
from bot.app import EaselBot
from bot.config import Settings, parse_settings
from bot.jobs import JobStatus, utcnow
from bot.store import Store
from tests.fakediscord import DEFAULT_MEMBER_PERMISSIONS, FakeDiscord, Interaction, Message
from tests.fakeopenai import FakeOpenAI

GUILD_A, CHANNEL_A = 111_000_000_000_000_001, 111_000_000_000_000_101
GUILD_B, CHANNEL_B = 222_000_000_000_000_002, 222_000_000_000_000_202
ALICE, BOB, CAROL = 900_000_000_000_000_001, 900_000_000_000_000_002, 900_000_000_000_000_003
OPENAI_KEY = "sk-test-e2e-0123456789abcdef"
MANAGE_GUILD = 1 << 5
MODERATOR = DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD
NO_PINGS = {"parse": []}


REPO = Path(__file__).resolve().parents[1]


def settings_for(
    discord_server: FakeDiscord, openai_server: FakeOpenAI | None, data_dir: Path, **sections: Any
) -> Settings:
    """Build settings that point Easel at the test servers, like an operator's proxy config would."""
    return parse_settings(
        config_for(discord_server, openai_server, data_dir, **sections), {}, base_dir=data_dir
    )


def config_for(
    discord_server: FakeDiscord, openai_server: FakeOpenAI | None, data_dir: Path, **sections: Any
) -> dict[str, Any]:
    """Return the config, as parsed TOML, of settings_for."""
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
    return raw


def toml_text(raw: dict[str, Any]) -> str:
    """Write a config of plain tables as TOML (JSON's scalars, strings and lists are valid TOML)."""
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                raise TypeError(f"[{section}] {key}: nested tables are not supported here")
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


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
    process: asyncio.subprocess.Process | None = None

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

    async def wait_recovered(self, timeout: float = 30) -> None:
        """Wait until the running bot has attempted every delivery it found pending at start."""
        assert self.bot is not None, "the bot is not running"
        await asyncio.wait_for(self.bot.services.worker.recovered(), timeout)

    async def restart_bot(self) -> EaselBot:
        """Stop the bot, start it again and wait until its recovery after the restart has run."""
        await self.stop_bot()
        bot = await self.start_bot()
        await self.wait_recovered()
        return bot

    async def start_bot_process(self) -> asyncio.subprocess.Process:
        """Run Easel as its own process (``python -m bot``), so that a test can kill it outright."""
        config = config_for(self.discord, self.openai, self.data_dir, **self.overrides)
        # Secrets travel in the environment, as an operator's container would pass them.
        env = {**os.environ, "DISCORD_TOKEN": config["discord"].pop("token")}
        if "openai" in config:
            env["OPENAI_API_KEY"] = config["openai"].pop("api_key")
        path = self.data_dir / "easel-process.toml"
        path.write_text(toml_text(config), encoding="utf-8")
        with self.process_log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", "--config", str(path), cwd=REPO, env=env, stderr=log
            )
        process = self.process
        targets = self.settings.discord.dev_guild_ids or (None,)

        def up() -> bool:
            synced = all(t in self.discord.commands for t in targets)
            return process.returncode is not None or (self.discord.connected() and synced)

        await self.discord.wait_for(up, timeout=60)
        if process.returncode is not None:
            raise RuntimeError(f"Easel exited with {process.returncode}:\n{self.process_log.read_text()}")
        return process

    async def kill_bot_process(self) -> None:
        """Kill the Easel process at once (SIGKILL): no shutdown code of its own runs."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None

    @property
    def process_log(self) -> Path:
        """Where the Easel process writes its log."""
        return self.data_dir / "easel-process.log"

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

    async def imagine_in_turn(self, prompt: str, **kwargs: Any) -> Interaction:
        """Send /imagine and wait until Easel has queued its job, as a member who presses Enter only
        after the last command was accepted: tests of queue order must not race the bot's handlers."""
        async with Store.open(self.settings.storage.path) as store:
            before = len(await store.jobs.jobs_with_status(*JobStatus))
            inter = await self.imagine(prompt, **kwargs)
            async with asyncio.timeout(10):
                # The store has no change event to wait on: poll it.
                while len(await store.jobs.jobs_with_status(*JobStatus)) == before:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        return inter

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
    start: bool = True,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """Start both test servers with ``guilds`` ((guild, channel) pairs; default A and B) and the bot.

    ``age_restricted`` channels are marked NSFW on Discord; ``clock`` gives quotas and challenge
    deadlines the time; ``start=False`` leaves starting the bot (or its process) to the test;
    ``overrides`` are config sections.
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
        if start:
            await harness.start_bot()
        yield harness
    finally:
        await harness.kill_bot_process()
        await harness.stop_bot()
        await openai.close()
        await discord.close()
