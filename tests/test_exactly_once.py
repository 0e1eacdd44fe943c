"""Every accepted job is posted exactly once or fails with a message, whatever Discord, SQLite or a kill does.

"Posted once" is counted on the wire: the Discord test server records every request that
uploads a job's result (``result_requests``), and what each did (created or edited a message,
or got the earlier message back for a repeated nonce). A test fails when two of them made a
message show the same result, even when they edited the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import discord
import pytest

from bot.files import ImageFiles
from bot.jobs import Job, JobStatus
from bot.store import Store
from tests.factories import new_job
from tests.fakediscord import FakeDiscord, Interaction, Request
from tests.harness import ALICE, CHANNEL_A, GUILD_A, Harness, running
from tests.sqlitefaults import FULL, LOCKED, SQLiteFaults
from tests.test_e2e import png

UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RENDERED)


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path) as harness:
        yield harness


# -- checks --------------------------------------------------------------------------------------


async def jobs_of(easel: Harness) -> dict[int, Job]:
    """Every job in the bot's database (read through a second connection, as an operator would)."""
    async with Store.open(easel.settings.storage.path) as store:
        return {job.id: job for job in await store.jobs.jobs_with_status(*JobStatus)}


def charge_states(easel: Harness) -> dict[int, str]:
    """The state of each job's charge: reserved, settled (posted) or released (failed, cancelled)."""
    with contextlib.closing(sqlite3.connect(easel.settings.storage.path)) as db:
        return {int(job): str(state) for job, state in db.execute("SELECT job_id, state FROM charges")}


def shown_results(discord_server: FakeDiscord, job_id: int) -> list[int]:
    """Ids of the live messages that show job ``job_id``'s result."""
    return [
        m.id
        for m in discord_server.messages.values()
        if not m.deleted and any(f.filename.startswith(f"easel-{job_id}.") for f in m.attachments)
    ]


def summary(requests: list[Request]) -> list[tuple[int | None, str | None]]:
    """(status, outcome) of each request: what Discord answered and what it did to a message."""
    return [(r.status, r.outcome) for r in requests]


async def assert_settled(easel: Harness, *, posted: int = 0, failed: int = 0) -> dict[int, Job]:
    """Check every job ended: posted ones exactly once and charged, failed ones told and not charged."""
    jobs = await jobs_of(easel)
    charges = charge_states(easel)
    assert not [j.id for j in jobs.values() if j.status in UNFINISHED], easel.discord.dump()
    for job in jobs.values():
        if job.status is JobStatus.POSTED:
            [post] = easel.discord.result_posts(job.id)
            assert post.message_id == job.message_id
            assert shown_results(easel.discord, job.id) == [job.message_id]
            assert charges[job.id] == "settled"
        else:
            assert job.status is JobStatus.FAILED, job
            assert job.error, job
            assert job.message_id, f"job {job.id} failed and nobody was told"
            assert not easel.discord.result_posts(job.id)
            assert charges[job.id] == "released"
    assert [j.status for j in jobs.values()].count(JobStatus.POSTED) == posted
    assert [j.status for j in jobs.values()].count(JobStatus.FAILED) == failed
    return jobs


async def ask(easel: Harness, prompt: str, *, late: bool = False) -> Interaction:
    """/imagine as ALICE; ``late``: the interaction is 16 minutes old, so the result goes to the channel."""
    inter = await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=ALICE,
        name="imagine",
        options={"prompt": prompt},
        created_at=datetime.now(UTC) - timedelta(minutes=16) if late else None,
    )
    await inter.wait_callback()
    return inter


async def posted(easel: Harness, count: int = 1, *, timeout: float = 30) -> None:
    """Wait until ``count`` jobs are posted and none is unfinished."""
    unfinished = tuple(s.value for s in UNFINISHED)

    def done() -> bool:
        with contextlib.closing(sqlite3.connect(easel.settings.storage.path)) as db:
            states = [str(row[0]) for row in db.execute("SELECT status FROM jobs")]
        return states.count("posted") >= count and not any(s in unfinished for s in states)

    # wait_for re-checks after every request and every 50 ms: the store changes without traffic too.
    await easel.discord.wait_for(done, timeout=timeout)


# -- Discord refuses or delays the upload ---------------------------------------------------------

RATE_LIMITS = {
    "500": (500, None, {}),
    "429 route": (
        429,
        {"retry_after": 0.05, "global": False},
        {"X-RateLimit-Scope": "user", "X-RateLimit-Bucket": "result"},
    ),
    "429 global": (
        429,
        {"retry_after": 0.05, "global": True},
        {"X-RateLimit-Scope": "global", "X-RateLimit-Global": "true"},
    ),
}


@pytest.mark.parametrize("late", [False, True], ids=["webhook", "channel"])
@pytest.mark.parametrize("fault", list(RATE_LIMITS))
async def test_a_refused_upload_is_retried_and_posted_once(easel: Harness, fault: str, late: bool) -> None:
    status, body, headers = RATE_LIMITS[fault]
    easel.discord.fail_next("*", "", status, body, headers=headers, results=True)
    await ask(easel, "a lighthouse", late=late)
    await posted(easel)
    [job] = (await assert_settled(easel, posted=1)).values()
    assert summary(easel.discord.result_requests(job.id)) == [
        (status, None),
        (200, "created" if late else "edited"),
    ]


# -- the gateway drops while the result is on its way --------------------------------------------


async def test_the_gateway_drops_mid_delivery_and_resumes(easel: Harness) -> None:
    hold = easel.discord.hold_result(applied=True)
    await ask(easel, "a lighthouse")
    await hold.arrived.wait()
    await easel.discord.disconnect_bot()
    await easel.discord.wait_for(lambda: easel.discord.resumes == 1 and easel.discord.connected())
    hold.release()
    await posted(easel)
    await assert_settled(easel, posted=1)
    assert len(easel.discord.identifies) == 1  # resumed, not a new session


# -- the process is killed, then restarted --------------------------------------------------------


@pytest.mark.parametrize("late", [False, True], ids=["webhook", "channel"])
@pytest.mark.parametrize("applied", [False, True], ids=["rendered-not-posted", "posted-not-recorded"])
async def test_a_kill_during_delivery_posts_the_result_once_after_restart(
    tmp_path: Path, applied: bool, late: bool
) -> None:
    async with running(tmp_path, start=False) as easel:
        await easel.start_bot_process()
        hold = easel.discord.hold_result(applied=applied)
        await ask(easel, "a lighthouse", late=late)
        await asyncio.wait_for(hold.arrived.wait(), 30)
        await easel.kill_bot_process()
        hold.drop()
        assert hold.request is not None
        job_id = hold.request.result_job
        assert job_id is not None
        assert (await jobs_of(easel))[job_id].status is JobStatus.RENDERED

        await easel.start_bot()
        await easel.wait_recovered()
        await assert_settled(easel, posted=1)
        outcomes = [r.outcome for r in easel.discord.result_requests(job_id)]
        if not applied:
            assert outcomes == [None, "created" if late else "edited"]
        elif late:
            # The repeat carries the same nonce: Discord hands back the message it already made.
            assert outcomes == ["created", "deduplicated"]
        else:
            # The status message already shows the result: recorded, not edited again.
            assert outcomes == ["edited"]

        await easel.restart_bot()
        assert [r.outcome for r in easel.discord.result_requests(job_id)] == outcomes


async def test_restarts_never_post_a_result_again(easel: Harness) -> None:
    await ask(easel, "by webhook")
    await ask(easel, "to the channel", late=True)
    await posted(easel, 2)
    before = list(easel.discord.requests)
    await easel.restart_bot()
    await easel.restart_bot()
    await assert_settled(easel, posted=2)
    assert [r for r in easel.discord.requests if r.result_job is not None] == [
        r for r in before if r.result_job is not None
    ]


# -- SQLite refuses a transition ------------------------------------------------------------------


@pytest.mark.parametrize("error", [LOCKED, FULL], ids=["locked", "full"])
async def test_sqlite_refusing_to_record_the_post_does_not_post_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    faults = SQLiteFaults()
    faults.install(monkeypatch)
    faults.fail("posted", error)
    async with running(tmp_path) as easel:
        await ask(easel, "a lighthouse")
        await posted(easel)
        assert faults.fired == [("posted", error)]
        [job] = (await assert_settled(easel, posted=1)).values()
        assert len(easel.discord.result_requests(job.id)) == 1


@pytest.mark.parametrize("error", [LOCKED, FULL], ids=["locked", "full"])
async def test_sqlite_refusing_to_record_the_render_fails_the_job_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    faults = SQLiteFaults()
    faults.install(monkeypatch)
    faults.fail("rendered", error)
    async with running(tmp_path) as easel:
        inter = await ask(easel, "a lighthouse")
        await easel.discord.wait_for(
            lambda: inter.original is not None and "failed" in inter.original.content
        )
        assert inter.original is not None
        assert "Something went wrong on Easel's side" in inter.original.content
        assert "Nothing was charged" in inter.original.content
        assert faults.fired == [("rendered", error)]
        await assert_settled(easel, failed=1)


# The worker's claim loop and its endings survive a store that refuses once: nothing stays stuck.


async def test_sqlite_refusing_a_claim_leaves_nothing_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = SQLiteFaults()
    faults.install(monkeypatch)
    faults.fail("running", LOCKED)
    async with running(tmp_path) as easel:
        await ask(easel, "a lighthouse")
        await easel.discord.wait_for(lambda: bool(faults.fired))
        await posted(easel, timeout=8)
        await assert_settled(easel, posted=1)


async def test_sqlite_refusing_to_record_a_failure_leaves_nothing_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = SQLiteFaults()
    faults.install(monkeypatch)
    faults.fail("failed", LOCKED)
    async with running(tmp_path) as easel:
        easel.openai.fail_next(400)
        inter = await ask(easel, "a lighthouse")
        await easel.discord.wait_for(
            lambda: inter.original is not None and "failed" in inter.original.content, timeout=8
        )
        await assert_settled(easel, failed=1)


# -- one job, three deliveries at once -------------------------------------------------------------


async def rendered_job(easel: Harness) -> Job:
    """Write a rendered job of ALICE's whose interaction is gone, as the cog's U button or a sweep finds it."""
    settings = easel.settings
    async with Store.open(settings.storage.path) as store:
        job = await store.jobs.add_queued(
            replace(
                new_job(guild=GUILD_A, user=ALICE, backend="openai"), channel_id=CHANNEL_A, interaction=None
            )
        )
        await store.jobs.start("openai", [job.id], [])
        paths = await ImageFiles(settings.storage.images_dir).save_results(job.id, (png(),), "png")
        return await store.jobs.mark_rendered(job.id, paths, "OpenAI gpt-image-1-mini", None)


async def test_concurrent_deliveries_of_one_job_post_it_once_and_never_run_together(tmp_path: Path) -> None:
    # No periodic sweep during the test: the three callers below are the only ones.
    async with running(tmp_path, queue={"position_update_s": 600.0}) as easel:
        assert easel.bot is not None
        delivery = easel.bot.services.delivery
        job = await rendered_job(easel)

        first_hold = easel.discord.hold_result(job.id, applied=False)
        first = asyncio.create_task(delivery.deliver(job))
        await first_hold.arrived.wait()
        second = asyncio.create_task(delivery.deliver(job))
        await asyncio.sleep(0)  # the second caller now waits for the job's lock

        # The first attempt fails; the second takes over and posts, and is held there.
        easel.discord.fail_next("*", "", 400, {"message": "Invalid Form Body", "code": 50035}, results=True)
        second_hold = easel.discord.hold_result(job.id, applied=True)
        first_hold.release()
        with pytest.raises(discord.HTTPException):
            await first
        await second_hold.arrived.wait()

        # A third caller arrives while the second is posting: it must wait for it, not run beside it.
        third_hold = easel.discord.hold_result(job.id, applied=False)
        third = asyncio.create_task(delivery.deliver(job))
        # Running beside the second caller, it would reach Discord well within this bound.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(third_hold.arrived.wait(), 2.0)
        ran_beside = third_hold.arrived.is_set()
        second_hold.release()
        third_hold.release()
        ends = await asyncio.gather(second, third, return_exceptions=True)

        assert not ran_beside, "a third delivery ran while the second was posting"
        assert [getattr(end, "status", end) for end in ends] == [JobStatus.POSTED, JobStatus.POSTED]
        assert summary(easel.discord.result_requests(job.id)) == [(400, None), (200, "created")]
        assert shown_results(easel.discord, job.id) == [(await jobs_of(easel))[job.id].message_id]
