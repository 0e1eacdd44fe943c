"""Security of settings and shown text (issue 10, items 2, 3, 8, 9 and 10), end to end.

Settings reach no other server's channels, no blocked pattern stalls or exhausts the bot, members
read nothing of the settings, /status names no operator folder, and a challenge's theme is shown
literally wherever it appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from bot.store import Store
from tests.fakediscord import DEFAULT_MEMBER_PERMISSIONS, Message
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL_A,
    CHANNEL_B,
    GUILD_A,
    GUILD_B,
    MODERATOR,
    Harness,
    running,
    said,
)

MEMBER = DEFAULT_MEMBER_PERMISSIONS
SEND_MESSAGES = 1 << 11
MANAGE_GUILD = 1 << 5
RECURSION = (
    "This pattern uses recursion ((?R), (?1), (?&name) or (?P>name)), which Easel does not run; "
    "write it without recursion."
)
TOO_MANY_COPIES = (
    "This pattern repeats too much for Easel to run: its counted repeats ({n}, {m,n}) multiply "
    "into too many copies; use smaller counts, or + and * instead."
)
# Unchecked, each took 1.5–3 s and 0.5–1 GB on the event loop, then raised MemoryError.
RECURSIVE = ("(?R)", "(?R)?", "(?:(?R)|)")
# Compiling it took 0.75 s and 270 MB on the event loop (no timeout bounds compiling).
COPIED_OUT = "(?:a{1000}){1000}"
# What a stalled event loop looks like from a task sharing it with the bot.
STALL_S = 0.5


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path) as harness:
        yield harness


class Heartbeat:
    """Ticks on the event loop the bot runs on, and records the longest wait between two ticks."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now


async def suggested(
    easel: Harness, *, user: int = CAROL, permissions: int = MODERATOR, **options: str
) -> Any:
    """The values /settings set's autocomplete offers for ``options`` (key and the value typed)."""
    inter = await easel.discord.autocomplete(
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=user,
        name="settings set",
        focused="value",
        options=options,
        permissions=permissions,
    )
    data = (await inter.wait_callback()).data or {}
    return [choice["value"] for choice in data["choices"]]


# -- item 2: channel settings stay inside their server ---------------------------------------------


async def test_channel_settings_take_only_this_servers_channels(easel: Harness) -> None:
    # Server B's moderator names server A's channel, as a mention or a bare id, in every channel setting.
    for key, value in (
        ("audit_channel", f"<#{CHANNEL_A}>"),
        ("allowed_channels", str(CHANNEL_A)),
        ("denied_channels", f"<#{CHANNEL_B}>, <#{CHANNEL_A}>"),
    ):
        refused = await said(easel, "settings set", guild=GUILD_B, key=key, value=value)
        assert refused == (
            f"<#{CHANNEL_A}> is not a channel of this server that Easel can see; "
            f"choose one of this server's channels for {key}."
        )
    # Nothing was set: B's prompts appear nowhere in A, and B may still generate in its channel.
    await easel.result_of(await easel.imagine("a private lighthouse", user=BOB, guild=GUILD_B))
    assert easel.discord.channel_messages(CHANNEL_A) == []

    assert await said(easel, "settings set", guild=GUILD_B, key="audit_channel", value=f"<#{CHANNEL_B}>") == (
        f"**audit_channel**: none → <#{CHANNEL_B}>"
    )


async def test_an_audit_channel_easel_cannot_post_in_is_refused_but_a_rule_there_is_not(
    easel: Harness,
) -> None:
    staff = await easel.discord.add_channel(GUILD_A, "staff", bot_denied=SEND_MESSAGES)
    refused = (
        f"Easel cannot post in <#{staff}>: give it View Channel and Send Messages there, "
        "or choose another channel for audit_channel."
    )
    assert await said(easel, "settings audit", channel=staff) == refused
    assert await said(easel, "settings set", key="audit_channel", value=f"<#{staff}>") == refused
    # A channel rule only needs the channel to be this server's.
    assert await said(easel, "settings channel", channel=staff, rule="deny") == (
        f"**denied_channels**: none → <#{staff}>"
    )


async def test_an_audit_channel_of_another_server_stored_earlier_is_never_posted_to(
    easel: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Stored before settings checked channels: guild B's audit channel is guild A's.
    await easel.stop_bot()
    async with Store.open(easel.settings.storage.path) as store:
        await store.charges.put_guild_setting(GUILD_B, "audit_channel", CHANNEL_A, default=None, by=CAROL)
    await easel.start_bot()
    caplog.set_level(logging.INFO)

    await easel.result_of(await easel.imagine("a secret lighthouse", user=BOB, guild=GUILD_B))
    # Turning it off is itself audited where it was: not there either.
    assert await said(easel, "settings audit", guild=GUILD_B) == f"**audit_channel**: <#{CHANNEL_A}> → none"
    assert easel.discord.channel_messages(CHANNEL_A) == []

    skipped = [r for r in caplog.records if r.name == "bot.moderation" and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in skipped] == [
        f"guild {GUILD_B}: audit channel {CHANNEL_A} is not one of its channels; the line was not posted"
    ] * 2


# -- item 3: no pattern stalls the bot ---------------------------------------------------------------


async def test_recursive_and_copied_out_patterns_are_refused_at_once_while_the_bot_keeps_ticking(
    easel: Harness,
) -> None:
    async with Heartbeat() as heartbeat:
        for pattern, why in (*((p, RECURSION) for p in RECURSIVE), (COPIED_OUT, TOO_MANY_COPIES)):
            started = time.monotonic()
            assert await said(easel, "settings block-pattern", pattern=pattern) == why
            typed = await said(easel, "settings set", key="blocked_patterns", value=f"lighthouse\n{pattern}")
            assert typed == f"Blocked pattern 2: {why}"
            assert await suggested(easel, key="blocked_patterns", value=pattern) == []
            assert time.monotonic() - started < 2 * STALL_S, pattern
    assert heartbeat.longest < STALL_S

    # Nothing was blocked: the prompts the refused lists named still go through.
    await easel.result_of(await easel.imagine("a lighthouse"))


async def test_a_recursive_pattern_stored_earlier_refuses_prompts_until_a_moderator_removes_it(
    easel: Harness,
) -> None:
    # Guards this fix's own edge: a pattern stored before recursion was refused must neither be run
    # nor lock the server out of /settings (a failed load would refuse every command, unblocking too).
    await easel.stop_bot()
    async with Store.open(easel.settings.storage.path) as store:
        await store.charges.put_guild_setting(GUILD_A, "blocked_patterns", ["a(?R)?b"], default=[], by=CAROL)
    await easel.start_bot()

    inter = await easel.imagine("a lighthouse")
    await easel.discord.wait_for(lambda: bool(inter.followups))
    assert "could not check your prompt against this server's rules" in inter.followups[0].content

    assert await said(easel, "settings unblock-pattern", pattern="a(?R)?b") == (
        "**blocked_patterns**: 1 set → none"
    )
    await easel.result_of(await easel.imagine("a lighthouse"))


async def test_settings_autocomplete_offers_members_nothing(easel: Harness) -> None:
    assert "5" in await suggested(easel, key="daily_images", value="5")  # a moderator is helped
    assert await suggested(easel, user=BOB, permissions=MEMBER, key="daily_images", value="5") == []
    assert await suggested(easel, user=BOB, permissions=MEMBER, key="timezone", value="berl") == []
    # A member's pattern is not even tried.
    async with Heartbeat() as heartbeat:
        assert (
            await suggested(easel, user=BOB, permissions=MEMBER, key="blocked_patterns", value="(?R)") == []
        )
    assert heartbeat.longest < STALL_S


# -- item 10: /settings channel tells members nothing -------------------------------------------------


async def test_settings_channel_refuses_a_member_before_saying_what_the_rule_is(easel: Harness) -> None:
    assert await said(easel, "settings channel", channel=CHANNEL_A, rule="deny") == (
        f"**denied_channels**: none → <#{CHANNEL_A}>"
    )
    for rule in ("deny", "allow", "clear"):
        text = await said(
            easel, "settings channel", user=BOB, permissions=MEMBER, channel=CHANNEL_A, rule=rule
        )
        assert text == "Only moderators (Manage Server, or the server's moderator role) can do that."


# -- item 8: /status names the model, not the operator's folders ---------------------------------------


async def test_status_names_the_local_model_without_its_folder(tmp_path: Path, tiny_model: Path) -> None:
    async with running(tmp_path, local={"model": str(tiny_model), "steps": 4}) as easel:
        inter = await easel.discord.slash(
            guild_id=GUILD_A, channel_id=CHANNEL_A, user_id=ALICE, name="status", permissions=MANAGE_GUILD
        )
        callback = await inter.wait_callback()
        assert callback.data is not None
        [local] = [f for f in callback.data["embeds"][0]["fields"] if f["name"] == "`local`"]
        assert f"**Model:** {tiny_model.name} (StableDiffusionPipeline)" in local["value"]
        assert str(tiny_model.parent) not in str(callback.data)


# -- item 9: a challenge's theme is shown as typed ----------------------------------------------------

THEME = "[free nitro](https://evil.example) **now** @everyone"
SHOWN = r"\[free nitro](https://evil.example) \*\*now\*\* @" + "\u200beveryone"


class Clock:
    """The time challenge deadlines see; only the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def challenge_post(easel: Harness, title: str) -> Message | None:
    found = [
        m
        for m in easel.discord.channel_messages(CHANNEL_A)
        if m.embeds and str(m.embeds[0].get("title", "")).startswith(title)
    ]
    return found[-1] if found else None


async def test_a_challenge_theme_is_shown_literally_in_the_announcement_status_and_results(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with running(tmp_path, clock=clock) as easel:
        started = await said(easel, "challenge start", theme=THEME, submit_for="1h", vote_for="1h")
        assert "started" in started
        await easel.discord.wait_for(lambda: challenge_post(easel, "🏆 Challenge:") is not None)
        announcement = challenge_post(easel, "🏆 Challenge:")
        assert announcement is not None
        assert announcement.embeds[0]["title"] == f"🏆 Challenge: {SHOWN}"
        assert f"**Theme:** {SHOWN}\n" in announcement.embeds[0]["description"]

        assert f"**Theme:** {SHOWN}\n" in await said(easel, "challenge status")
        again = await said(easel, "challenge start", theme="another", submit_for="1h", vote_for="1h")
        assert f"(theme: {SHOWN})" in again

        # No entries: at the deadline the challenge finishes and its results are posted.
        clock.now += timedelta(hours=2)
        assert easel.bot is not None
        easel.bot.services.contests.poke()
        await easel.discord.wait_for(lambda: challenge_post(easel, "🏆 Results:") is not None)
        results = challenge_post(easel, "🏆 Results:")
        assert results is not None
        assert results.embeds[0]["title"] == f"🏆 Results: {SHOWN}"
        assert results.embeds[0]["description"].startswith(f"**Results: {SHOWN}**\n")
