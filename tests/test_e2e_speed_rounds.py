"""End to end: speed rounds (1-minute phases), the announcement's countdown and the phase reminders.

Through the Discord test server, with a clock the test sets: frozen for the reminder rules, or
running on from a chosen moment to check that the deadline runner wakes at the deadline itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakediscord import Message
from tests.harness import ALICE, BOB, CHANNEL_A, NO_PINGS, Harness, running
from tests.test_e2e_challenges import MANAGE_MESSAGES, press, result, sent, settle, start, wait_posts

# How late a phase may change and still be on time: a pass's few store reads and one request,
# with room for a busy test machine; far below the runner's 10-second regular wake-up.
ON_TIME = timedelta(seconds=3)


class Clock:
    """Easel's clock: frozen where the test sets it, or running on from there at real speed."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0)
        self._since: float | None = None

    def __call__(self) -> datetime:
        if self._since is None:
            return self.at
        return self.at + timedelta(seconds=time.monotonic() - self._since)

    def set(self, moment: datetime, *, running: bool = False) -> None:
        self.at = moment
        self._since = time.monotonic() if running else None

    def when(self, monotonic: float) -> datetime:
        """The time this clock showed at a ``time.monotonic()`` reading (the test server stamps requests so)."""
        assert self._since is not None, "only a running clock maps real time"
        return self.at + timedelta(seconds=monotonic - self._since)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def easel(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    async with running(tmp_path, clock=clock, queue={"max_per_member": 20}) as harness:
        harness.discord.bot_permissions |= MANAGE_MESSAGES
        yield harness


def at(easel: Harness, clock: Clock, moment: datetime, *, running: bool = False) -> None:
    """Set the clock and wake the deadline runner, as a moderator's command would."""
    clock.set(moment, running=running)
    assert easel.bot is not None
    easel.bot.services.contests.poke()


def countdown(announcement: Message) -> str:
    """The announcement's countdown field."""
    [field] = [f for f in announcement.embeds[0].get("fields", []) if f["name"] == "⏳ Countdown"]
    return str(field["value"])


def stamps(moment: datetime) -> tuple[str, str]:
    """A deadline as Discord timestamps: relative (counting down) and absolute."""
    unix = int(moment.timestamp())
    return f"<t:{unix}:R>", f"<t:{unix}:f>"


def reminders(easel: Harness) -> list[Message]:
    return [m for m in easel.discord.channel_messages(CHANNEL_A) if m.content.startswith("⏰")]


def reminder_sends(easel: Harness) -> dict[str, int]:
    return {nonce: n for nonce, n in sent(easel).items() if nonce.startswith("easel-cm")}


async def two_entries(easel: Harness) -> None:
    for user in (ALICE, BOB):
        await press(easel, await result(easel, user, f"a race {user}"), "Submit", user)


async def test_a_one_minute_round_runs_through_its_phases_on_time(easel: Harness, clock: Clock) -> None:
    opened = clock.at
    await start(easel, "a sprint", submit_for="1m", vote_for="1m")
    [announcement] = await wait_posts(easel, "announcement", 1)
    submit_until, vote_until = opened + timedelta(minutes=1), opened + timedelta(minutes=2)
    relative, absolute = stamps(submit_until)
    assert countdown(announcement) == f"Submissions close {relative} ({absolute})."
    await two_entries(easel)

    # Half a second before the deadline the clock runs on by itself: no poke comes at the
    # deadline, so the phase changes on time only if the runner woke for the deadline itself
    # (it otherwise looks every 10 seconds).
    at(easel, clock, submit_until - timedelta(seconds=0.5), running=True)
    await wait_posts(easel, "gallery", 2)
    # The first thing the change does is edit the announcement: the countdown now runs to the
    # end of voting.
    relative, absolute = stamps(vote_until)
    assert countdown(announcement) == f"Voting closes {relative} ({absolute})."
    [edit] = easel.discord.find_requests("PATCH", rf"^/channels/{CHANNEL_A}/messages/{announcement.id}$")
    assert submit_until <= clock.when(edit.received_at) < submit_until + ON_TIME

    at(easel, clock, vote_until - timedelta(seconds=0.5), running=True)
    [results] = await wait_posts(easel, "results", 1)
    [posted] = [r for r in easel.discord.find_requests("POST", "/messages$") if r.message_id == results.id]
    assert vote_until <= clock.when(posted.received_at) < vote_until + ON_TIME
    assert results.allowed_mentions == NO_PINGS
    await easel.discord.wait_for(lambda: announcement.embeds[0]["title"].endswith("(finished)"))
    assert not [f for f in announcement.embeds[0].get("fields", []) if f["name"] == "⏳ Countdown"]
    # Phases under five minutes get no reminder.
    assert not reminders(easel)
    assert not reminder_sends(easel)


async def test_a_ten_minute_phase_is_reminded_once_at_ninety_percent_and_a_two_minute_one_never(
    easel: Harness, clock: Clock
) -> None:
    opened = clock.at
    await start(easel, "a long sprint", submit_for="10m", vote_for="2m")
    await wait_posts(easel, "announcement", 1)
    await two_entries(easel)
    submit_until = opened + timedelta(minutes=10)

    at(easel, clock, opened + timedelta(minutes=8, seconds=59))
    await settle(easel)
    assert not reminders(easel)

    at(easel, clock, opened + timedelta(minutes=9))
    await easel.discord.wait_for(lambda: bool(reminders(easel)))
    [reminder] = reminders(easel)
    relative, absolute = stamps(submit_until)
    assert f"submissions close {relative} ({absolute})" in reminder.content
    assert "a long sprint" in reminder.content
    assert reminder.allowed_mentions == NO_PINGS

    at(easel, clock, opened + timedelta(minutes=9, seconds=30))
    await settle(easel)
    assert len(reminders(easel)) == 1

    # Voting lasts two minutes: nothing at 90%, nor just before the end.
    at(easel, clock, submit_until)
    await wait_posts(easel, "gallery", 2)
    for moment in (timedelta(minutes=11, seconds=48), timedelta(minutes=11, seconds=59)):
        at(easel, clock, opened + moment)
        await settle(easel)
    at(easel, clock, opened + timedelta(minutes=12))
    await wait_posts(easel, "results", 1)
    assert len(reminders(easel)) == 1
    assert reminder_sends(easel) == {"easel-cm1s": 1}


async def test_a_reminder_survives_restarts_never_twice_and_never_skipped_within_its_phase(
    tmp_path: Path, clock: Clock
) -> None:
    async with running(tmp_path, clock=clock, queue={"max_per_member": 20}) as easel:
        opened = clock.at
        await start(easel, "endurance", submit_for="10m", vote_for="10m")
        await wait_posts(easel, "announcement", 1)
        await two_entries(easel)

        at(easel, clock, opened + timedelta(minutes=9))
        await easel.discord.wait_for(lambda: len(reminders(easel)) == 1)
        # Restarted within the phase, past its reminder: not posted again.
        await easel.stop_bot()
        await easel.start_bot()
        await settle(easel)
        assert len(reminders(easel)) == 1

        # Down from half-way through voting until 95% of it: the reminder comes on start, once.
        at(easel, clock, opened + timedelta(minutes=15))
        await wait_posts(easel, "gallery", 2)
        await easel.stop_bot()
        clock.set(opened + timedelta(minutes=19, seconds=30))
        await easel.start_bot()
        await easel.discord.wait_for(lambda: len(reminders(easel)) == 2)
        assert "voting closes" in reminders(easel)[1].content
        await easel.stop_bot()
        await easel.start_bot()
        await settle(easel)
        assert len(reminders(easel)) == 2
        assert reminder_sends(easel) == {"easel-cm1s": 1, "easel-cm1v": 1}


async def test_a_phase_that_ended_while_easel_was_down_gets_no_late_reminder(
    tmp_path: Path, clock: Clock
) -> None:
    async with running(tmp_path, clock=clock, queue={"max_per_member": 20}) as easel:
        opened = clock.at
        await start(easel, "marathon", submit_for="10m", vote_for="10m")
        await wait_posts(easel, "announcement", 1)
        await two_entries(easel)
        await easel.stop_bot()
        clock.set(opened + timedelta(minutes=11))
        await easel.start_bot()
        await wait_posts(easel, "gallery", 2)
        await settle(easel)
        assert not reminders(easel)
        # The countdown moved on with the phase.
        [announcement] = await wait_posts(easel, "announcement", 1)
        relative, absolute = stamps(opened + timedelta(minutes=20))
        assert countdown(announcement) == f"Voting closes {relative} ({absolute})."


async def test_a_refused_reminder_is_retried_later_not_in_a_loop_and_posted_once(
    easel: Harness, clock: Clock
) -> None:
    opened = clock.at
    await start(easel, "a stubborn sprint", submit_for="10m", vote_for="10m")
    await wait_posts(easel, "announcement", 1)
    posts_here = rf"^/channels/{CHANNEL_A}/messages$"
    easel.discord.fail_next("POST", posts_here, 403, times=2)
    at(easel, clock, opened + timedelta(minutes=9))
    await easel.discord.wait_for(
        lambda: [r.status for r in easel.discord.find_requests("POST", posts_here)][-1:] == [403]
    )
    assert easel.bot is not None
    # Refused again: the next try waits for the runner's regular wake-up, not a tight loop.
    assert await easel.bot.services.contests.process_due() > 1
    assert [r.status for r in easel.discord.find_requests("POST", posts_here)][-2:] == [403, 403]
    assert not reminders(easel)
    await settle(easel)
    assert len(reminders(easel)) == 1
    assert reminder_sends(easel) == {"easel-cm1s": 3}
