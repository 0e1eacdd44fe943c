"""The fair queue: round-robin over guilds, then members; limits; durability across restarts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bot.config import QueueSettings
from bot.errors import LimitReached, NotAllowed
from bot.fairness import fair_order
from bot.files import ImageFiles
from bot.jobs import JobStatus
from bot.queue import SqliteJobQueue
from bot.store import Store
from tests.factories import new_job


async def test_a_guild_with_one_job_is_not_starved_by_a_guild_with_fifty(queue: SqliteJobQueue) -> None:
    for _ in range(50):
        await queue.submit(new_job(guild=1, user=10))
    first = await queue.claim("test")  # guild A's first job takes the one render slot
    assert first is not None
    assert first.guild_id == 1
    b_job = await queue.submit(new_job(guild=2, user=20))

    # The slot frees: the very next claim is guild B's job, not A's 49 others.
    nxt = await queue.claim("test")
    assert nxt is not None
    assert nxt.id == b_job.id


async def test_a_guild_that_arrives_first_with_one_job_goes_before_a_busy_guild(
    queue: SqliteJobQueue,
) -> None:
    for _ in range(50):
        await queue.submit(new_job(guild=1, user=10))
    b_job = await queue.submit(new_job(guild=2, user=20))
    claimed = [await queue.claim("test") for _ in range(2)]
    assert b_job.id in {job.id for job in claimed if job}


async def test_members_within_a_guild_take_turns(queue: SqliteJobQueue) -> None:
    for _ in range(5):
        await queue.submit(new_job(guild=1, user=10))
    late = await queue.submit(new_job(guild=1, user=11))
    order = [(await queue.claim("test")) for _ in range(3)]
    users = [job.user_id for job in order if job]
    assert users[:2] == [10, 11]
    assert order[1] is not None
    assert order[1].id == late.id


async def test_positions_predict_the_claim_order_exactly(queue: SqliteJobQueue) -> None:
    rng = random.Random(7)
    for _ in range(60):
        await queue.submit(new_job(guild=rng.randint(1, 4), user=rng.randint(1, 3)))
        if rng.random() < 0.3:
            await queue.claim("test")
    predicted = await queue.positions("test")
    claimed = []
    while (job := await queue.claim("test")) is not None:
        claimed.append(job.id)
    assert [jid for jid, _ in sorted(predicted.items(), key=lambda kv: kv[1])] == claimed


def test_fair_order_alternates_guilds() -> None:
    jobs = [(1, 1, 10), (2, 1, 10), (3, 1, 10), (4, 2, 20), (5, 2, 20)]
    assert fair_order(jobs, {}) == [1, 4, 2, 5, 3]


async def test_backends_have_separate_lines(queue: SqliteJobQueue) -> None:
    await queue.submit(new_job(backend="openai"))
    assert await queue.claim("lanczos") is None
    assert await queue.claim("openai") is not None


@pytest.mark.parametrize(
    ("limits", "submits", "message"),
    [
        (QueueSettings(max_per_member=2, max_per_guild=10, max_total=10), [(1, 10)] * 3, "limit is 2"),
        (
            QueueSettings(max_per_member=5, max_per_guild=2, max_total=10),
            [(1, 10), (1, 11), (1, 12)],
            "limit is 2",
        ),
        (
            QueueSettings(max_per_member=5, max_per_guild=5, max_total=2),
            [(1, 10), (2, 20), (3, 30)],
            "capacity",
        ),
    ],
)
async def test_over_a_limit_nothing_is_enqueued(
    store: Store, files: ImageFiles, limits: QueueSettings, submits: list[tuple[int, int]], message: str
) -> None:
    queue = SqliteJobQueue(store, files, limits)
    for guild, user in submits[:-1]:
        await queue.submit(new_job(guild=guild, user=user))
    guild, user = submits[-1]
    with pytest.raises(LimitReached, match=message):
        await queue.submit(new_job(guild=guild, user=user))
    assert len(await store.jobs_with_status(JobStatus.QUEUED)) == len(submits) - 1


async def test_a_refused_variation_leaves_no_uploaded_file_behind(store: Store, files: ImageFiles) -> None:
    from dataclasses import replace

    queue = SqliteJobQueue(store, files, QueueSettings(max_per_member=1))
    await queue.submit(new_job())
    with pytest.raises(LimitReached):
        await queue.submit(replace(new_job(), source_image=b"\x89PNG fake"))
    assert list(files.root.glob("sources/*")) == []


async def test_jobs_survive_a_restart_and_interrupted_renders_are_requeued(tmp_path: Path) -> None:
    db = tmp_path / "easel.sqlite3"
    async with Store.open(db) as store:
        queue = SqliteJobQueue(store, ImageFiles(tmp_path), QueueSettings())
        a = await queue.submit(new_job(user=1))
        b = await queue.submit(new_job(user=2))
        running = await queue.claim("test")
        assert running is not None
        assert running.id == a.id
    # The process died with job a rendering and job b waiting.
    async with Store.open(db) as store:
        await store.requeue_interrupted()
        queued = await store.jobs_with_status(JobStatus.QUEUED)
        assert [job.id for job in queued] == [a.id, b.id]
        assert (await store.get(a.id)).attempts == 1


async def test_cancel_is_only_for_the_requester_and_only_while_unfinished(
    queue: SqliteJobQueue, store: Store
) -> None:
    job = await queue.submit(new_job(user=10))
    with pytest.raises(NotAllowed, match="Only the member"):
        await store.cancel(job.id, job.guild_id, 99)
    cancelled = await store.cancel(job.id, job.guild_id, 10)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(NotAllowed, match="already finished"):
        await store.cancel(job.id, job.guild_id, 10)
    assert await queue.claim("test") is None


async def test_a_running_job_cancelled_is_discarded_when_it_finishes(
    queue: SqliteJobQueue, store: Store
) -> None:
    await queue.submit(new_job(user=10))
    job = await queue.claim("test")
    assert job is not None
    await store.cancel(job.id, job.guild_id, 10)
    done = await store.mark_rendered(job.id, ("jobs/1/1.png",), "test", None)
    assert done.status is JobStatus.CANCELLED


async def test_a_posted_job_cannot_be_posted_again(queue: SqliteJobQueue, store: Store) -> None:
    await queue.submit(new_job())
    job = await queue.claim("test")
    assert job is not None
    await store.mark_rendered(job.id, ("jobs/1/1.png",), "test", None)
    await store.mark_posted(job.id, 555, job.channel_id)
    with pytest.raises(NotAllowed):
        await store.mark_posted(job.id, 556, job.channel_id)
    assert (await store.get(job.id)).message_id == 555


async def test_another_guilds_job_looks_like_a_missing_one(queue: SqliteJobQueue, store: Store) -> None:
    from bot.errors import NotFound

    job = await queue.submit(new_job(guild=1))
    with pytest.raises(NotFound) as foreign:
        await store.find(job.id, guild_id=2)
    with pytest.raises(NotFound) as missing:
        await store.find(9999, guild_id=2)
    assert str(foreign.value).replace(str(job.id), "N") == str(missing.value).replace("9999", "N")
