"""Quota charges: reserved atomically with the job by the queue, settled on success, released otherwise."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import LimitReached
from bot.jobs import JobStatus
from bot.lifecycle import LocalLifecycle
from bot.quotas import Admission, Budget, Limits, windows
from bot.store import Store
from tests.factories import new_job

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def admission(
    daily: int | None, *, cost: int = 1, cooldown_s: int = 0, budget: Budget | None = None
) -> Admission:
    return Admission(
        limits=Limits(daily=daily, weekly=None),
        cost=cost,
        images=cost,
        usd=0.0,
        now=NOW,
        windows=windows(NOW),
        cooldown_s=cooldown_s,
        budget=budget or Budget(),
    )


async def test_ten_requests_at_once_with_one_image_left_let_exactly_one_through(
    queue: LocalLifecycle, store: Store
) -> None:
    async def ask() -> bool:
        try:
            await queue.submit(new_job(guild=1, user=10), admission(1))
        except LimitReached:
            return False
        return True

    accepted = await asyncio.gather(*(ask() for _ in range(10)))
    assert accepted.count(True) == 1
    assert len(await store.jobs.active_jobs(1)) == 1


async def test_a_failed_or_cancelled_job_gives_its_quota_back_and_a_posted_one_keeps_it(
    queue: LocalLifecycle, store: Store
) -> None:
    used = windows(NOW)
    job = await queue.submit(new_job(guild=1, user=10), admission(3, cost=2))
    assert (await store.charges.member_usage(1, 10, used)).day == 2  # reserved while in flight
    await store.jobs.start("test", [job.id], [])
    await store.jobs.mark_failed(job.id, "boom")
    assert (await store.charges.member_usage(1, 10, used)).day == 0

    job = await queue.submit(new_job(guild=1, user=10), admission(3, cost=2))
    await queue.cancel(job.id, 1, 10)
    assert (await store.charges.member_usage(1, 10, used)).day == 0

    job = await queue.submit(new_job(guild=1, user=10), admission(3, cost=2))
    await store.jobs.start("test", [job.id], [])
    await store.jobs.mark_rendered(job.id, ("a.png",), "test", None)
    await store.jobs.mark_posted(job.id, 555, 100)
    assert (await store.charges.member_usage(1, 10, used)).day == 2
    with pytest.raises(LimitReached, match="left today"):
        await queue.submit(new_job(guild=1, user=10), admission(3, cost=2))


async def test_the_cooldown_counts_from_the_last_accepted_request(
    queue: LocalLifecycle, store: Store
) -> None:
    await queue.submit(new_job(guild=1, user=10), admission(None))
    with pytest.raises(LimitReached, match="wait"):
        await queue.submit(new_job(guild=1, user=10), admission(None, cooldown_s=3600))
    # Another member is not affected.
    await queue.submit(new_job(guild=1, user=11), admission(None, cooldown_s=3600))


async def test_the_monthly_image_budget_pauses_the_guild(queue: LocalLifecycle, store: Store) -> None:
    budget = Budget(images_per_month=3)
    await queue.submit(new_job(guild=1, user=10), admission(None, cost=2, budget=budget))
    with pytest.raises(LimitReached, match="moderator"):
        await queue.submit(new_job(guild=1, user=11), admission(None, cost=2, budget=budget))
    await queue.submit(new_job(guild=2, user=11), admission(None, cost=2, budget=budget))


async def test_charges_since_lists_unreleased_charges(queue: LocalLifecycle, store: Store) -> None:
    kept = await queue.submit(new_job(guild=1, user=10), admission(None, cost=2))
    dropped = await queue.submit(new_job(guild=1, user=11), admission(None, cost=1))
    await queue.cancel(dropped.id, 1, 11)
    rows = await store.charges.charges_since(1, NOW - timedelta(days=30))
    assert [(user, images) for _, user, _, images, _ in rows] == [(10, 2)]
    assert kept.status is JobStatus.QUEUED
