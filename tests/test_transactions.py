"""Store.transaction(): store calls inside it join it, and a service's load → rule → write is atomic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bot.config import DEFAULT_PRICES
from bot.contests import ChallengeService
from bot.errors import LimitReached
from bot.jobs import JobKind, JobParams, JobStatus, Requester
from bot.lifecycle import LocalLifecycle
from bot.moderation import Moderation
from bot.quotas import PriceTable
from bot.store import Store
from tests.factories import Clock, SilentBoard, new_job

GUILD, CHANNEL = 1, 100
MOD, MEMBER = 10, 20
# Generous against a hang: a store call that waited for the lock its own transaction holds would
# never return, and this turns that into a failure instead of the suite's timeout.
DEADLOCK_S = 10


class RuleRefused(Exception):
    """What a service's rule raises after the transaction already wrote something."""


def who(user: int) -> Requester:
    return Requester(GUILD, CHANNEL, user, 10_000_000, manage_guild=user == MOD)


def moderation(store: Store, clock: Clock) -> Moderation:
    return Moderation(
        store, backends=("test",), prices=PriceTable(DEFAULT_PRICES), priced_models={}, clock=clock
    )


async def write_then_refuse(store: Store) -> None:
    """Write a job and cancel it in one transaction, as a service would before its rule refuses."""
    async with asyncio.timeout(DEADLOCK_S), store.transaction():
        job = await store.jobs.add_queued(new_job())
        # A read inside sees the write not yet committed: it joined, rather than waiting.
        assert [j.id for j in await store.jobs.active_jobs(GUILD)] == [job.id]
        await store.jobs.mark_cancelled(job.id)
        raise RuleRefused


async def test_store_calls_inside_a_transaction_join_it_and_a_raise_rolls_all_of_it_back(
    store: Store,
) -> None:
    with pytest.raises(RuleRefused):
        await write_then_refuse(store)
    assert await store.jobs.jobs_with_status(*JobStatus) == []

    async with store.transaction():
        kept = await store.jobs.add_queued(new_job())
    assert [j.id for j in await store.jobs.jobs_with_status(JobStatus.QUEUED)] == [kept.id]


async def test_a_task_spawned_in_a_transaction_runs_its_own_once_that_one_ended(store: Store) -> None:
    go = asyncio.Event()

    async def later() -> None:
        await go.wait()
        with pytest.raises(RuleRefused):
            await write_then_refuse(store)

    async with store.transaction():
        child = asyncio.create_task(later())
    go.set()
    async with asyncio.timeout(DEADLOCK_S):
        await child
    # Had the task joined the ended transaction, its write would have been committed on its own.
    assert await store.jobs.jobs_with_status(*JobStatus) == []


async def test_ten_requests_at_once_against_a_daily_quota_of_one_let_exactly_one_through(
    store: Store, queue: LocalLifecycle
) -> None:
    clock = Clock(datetime.now(UTC))
    mod = moderation(store, clock)
    await mod.change(who(MOD), "daily_images", "1")
    params = JobParams(prompt="a lighthouse at dusk", width=64, height=64, count=1)

    async def ask() -> str:
        admission = await mod.admit(who(MEMBER), JobKind.IMAGINE, "test", params)
        try:
            await queue.submit(new_job(GUILD, MEMBER), admission)
        except LimitReached as refused:
            return str(refused)
        return "accepted"

    async with asyncio.timeout(DEADLOCK_S):
        accepted = await asyncio.gather(*(ask() for _ in range(10)))
    assert accepted.count("accepted") == 1
    assert all("you have none left today" in answer for answer in accepted if answer != "accepted")
    assert len(await store.jobs.active_jobs(GUILD)) == 1
    assert (await mod.quota_view(who(MEMBER))).usage.day == 1


async def test_ten_votes_at_once_against_one_vote_per_member_let_exactly_one_through(store: Store) -> None:
    clock = Clock(datetime(2026, 5, 4, 18, 0, tzinfo=UTC))
    contests = ChallengeService(store, moderation(store, clock), SilentBoard(), clock=clock)
    challenge = await contests.start(
        who(MOD), theme="fog", submit_for="1h", vote_for="1h", votes_per_member=1
    )
    entries = []
    for user in range(100, 110):
        job = await store.jobs.add_queued(new_job(GUILD, user))
        await store.jobs.start("test", [job.id], [])
        await store.jobs.mark_rendered(job.id, ("a.png",), "test", None)
        await store.jobs.mark_posted(job.id, 5000 + job.id, CHANNEL)
        entries.append(await contests.submit(who(user), CHANNEL, job.id))
    clock.now = challenge.submit_until
    await contests.process_due()

    async def vote(entry_id: int) -> bool:
        try:
            await contests.vote(who(MEMBER), entry_id)
        except LimitReached:
            return False
        return True

    async with asyncio.timeout(DEADLOCK_S):
        accepted = await asyncio.gather(*(vote(entry.id) for entry in entries))
    assert accepted.count(True) == 1
    assert len(await store.challenges.votes(challenge.id, MEMBER)) == 1
