"""The fair queue: round-robin over guilds, then members; limits; durability across restarts."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import QueueSettings
from bot.errors import LimitReached, NotAllowed, NotFound
from bot.files import ImageFiles
from bot.jobs import JobKind, JobStatus, NewJob
from bot.lifecycle import LocalLifecycle
from bot.renderers.base import Capabilities
from bot.store import RowMissing, Store, TransitionRefused
from tests.factories import claim_one, new_job
from tests.fairness_reference import fair_order


async def test_a_guild_with_one_job_is_not_starved_by_a_guild_with_fifty(queue: LocalLifecycle) -> None:
    for _ in range(50):
        await queue.submit(new_job(guild=1, user=10))
    first = await claim_one(queue, "test")  # guild A's first job takes the one render slot
    assert first is not None
    assert first.guild_id == 1
    b_job = await queue.submit(new_job(guild=2, user=20))

    # The slot frees: the very next claim is guild B's job, not A's 49 others.
    nxt = await claim_one(queue, "test")
    assert nxt is not None
    assert nxt.id == b_job.id


async def test_a_guild_that_arrives_first_with_one_job_goes_before_a_busy_guild(
    queue: LocalLifecycle,
) -> None:
    for _ in range(50):
        await queue.submit(new_job(guild=1, user=10))
    b_job = await queue.submit(new_job(guild=2, user=20))
    claimed = [await claim_one(queue, "test") for _ in range(2)]
    assert b_job.id in {job.id for job in claimed if job}


async def test_members_within_a_guild_take_turns(queue: LocalLifecycle) -> None:
    for _ in range(5):
        await queue.submit(new_job(guild=1, user=10))
    late = await queue.submit(new_job(guild=1, user=11))
    order = [(await claim_one(queue, "test")) for _ in range(3)]
    users = [job.user_id for job in order if job]
    assert users[:2] == [10, 11]
    assert order[1] is not None
    assert order[1].id == late.id


async def test_positions_predict_the_claim_order_exactly(queue: LocalLifecycle, store: Store) -> None:
    rng = random.Random(7)
    for _ in range(60):
        await queue.submit(new_job(guild=rng.randint(1, 4), user=rng.randint(1, 3)))
        if rng.random() < 0.3:
            await claim_one(queue, "test")
    queued = await store.jobs.jobs_with_status(JobStatus.QUEUED)
    predicted = {job.id: queue.place(job.id) for job in queued}
    claimed = []
    while (job := await claim_one(queue, "test")) is not None:
        claimed.append(job.id)
    assert len(claimed) == len(queued) > 20
    assert [jid for jid, _ in sorted(predicted.items(), key=lambda kv: kv[1] or (0, 0))] == claimed
    assert {place[1] for place in predicted.values() if place} == {len(queued)}


def test_fair_order_alternates_guilds() -> None:
    jobs = [(1, 1, 10), (2, 1, 10), (3, 1, 10), (4, 2, 20), (5, 2, 20)]
    assert fair_order(jobs, {}) == [1, 4, 2, 5, 3]


async def test_backends_have_separate_lines(queue: LocalLifecycle) -> None:
    await queue.submit(new_job(backend="openai"))
    assert await claim_one(queue, "lanczos") is None
    assert await claim_one(queue, "openai") is not None


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
    queue = LocalLifecycle(store, files, limits)
    for guild, user in submits[:-1]:
        await queue.submit(new_job(guild=guild, user=user))
    guild, user = submits[-1]
    with pytest.raises(LimitReached, match=message):
        await queue.submit(new_job(guild=guild, user=user))
    assert len(await store.jobs.jobs_with_status(JobStatus.QUEUED)) == len(submits) - 1


async def test_a_refused_variation_leaves_no_uploaded_file_behind(store: Store, files: ImageFiles) -> None:
    from dataclasses import replace

    queue = LocalLifecycle(store, files, QueueSettings(max_per_member=1))
    await queue.submit(new_job())
    with pytest.raises(LimitReached):
        await queue.submit(replace(new_job(), source_image=b"\x89PNG fake"))
    assert list(files.root.glob("sources/*")) == []


async def test_jobs_survive_a_restart_and_interrupted_renders_are_requeued(tmp_path: Path) -> None:
    db = tmp_path / "easel.sqlite3"
    async with Store.open(db) as store:
        queue = LocalLifecycle(store, ImageFiles(tmp_path), QueueSettings())
        a = await queue.submit(new_job(user=1))
        b = await queue.submit(new_job(user=2))
        running = await claim_one(queue, "test")
        assert running is not None
        assert running.id == a.id
    # The process died with job a rendering and job b waiting.
    async with Store.open(db) as store:
        queue = LocalLifecycle(store, ImageFiles(tmp_path), QueueSettings())
        assert await queue.recover() == []
        queued = await store.jobs.jobs_with_status(JobStatus.QUEUED)
        assert [job.id for job in queued] == [a.id, b.id]
        assert (await store.jobs.get(a.id)).attempts == 1
        # Member 1 was served before the crash, so member 2 goes first now.
        assert [queue.place(b.id), queue.place(a.id)] == [(1, 2), (2, 2)]
        again = await claim_one(queue, "test")
        assert again is not None
        assert again.id == b.id


async def test_cancel_is_only_for_the_requester_and_only_while_unfinished(
    queue: LocalLifecycle, store: Store
) -> None:
    job = await queue.submit(new_job(user=10))
    with pytest.raises(NotAllowed, match="Only the member"):
        await queue.cancel(job.id, job.guild_id, 99)
    cancelled = await queue.cancel(job.id, job.guild_id, 10)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(NotAllowed, match="already finished"):
        await queue.cancel(job.id, job.guild_id, 10)
    assert await claim_one(queue, "test") is None


async def test_a_running_job_cancelled_is_discarded_when_it_finishes(
    queue: LocalLifecycle, store: Store
) -> None:
    await queue.submit(new_job(user=10))
    job = await claim_one(queue, "test")
    assert job is not None
    await queue.cancel(job.id, job.guild_id, 10)
    done = await store.jobs.mark_rendered(job.id, ("jobs/1/1.png",), "test", None)
    assert done.status is JobStatus.CANCELLED


async def test_a_posted_job_cannot_be_posted_again(queue: LocalLifecycle, store: Store) -> None:
    await queue.submit(new_job())
    job = await claim_one(queue, "test")
    assert job is not None
    await store.jobs.mark_rendered(job.id, ("jobs/1/1.png",), "test", None)
    await store.jobs.mark_posted(job.id, 555, job.channel_id)
    with pytest.raises(TransitionRefused):
        await store.jobs.mark_posted(job.id, 556, job.channel_id)
    assert (await store.jobs.get(job.id)).message_id == 555


async def test_another_guilds_job_looks_like_a_missing_one(queue: LocalLifecycle, store: Store) -> None:
    job = await queue.submit(new_job(guild=1))
    with pytest.raises(RowMissing) as foreign:
        await store.jobs.find(job.id, guild_id=2)
    with pytest.raises(RowMissing) as missing:
        await store.jobs.find(9999, guild_id=2)
    assert (foreign.value.kind, foreign.value.id) == ("job", job.id)
    assert str(foreign.value).replace(str(job.id), "N") == str(missing.value).replace("9999", "N")
    with pytest.raises(NotFound) as refused:
        await queue.cancel(job.id, 2, 10)
    assert str(refused.value) == f"Job #{job.id} does not exist."


def _sized(guild: int, user: int, size: int, *, count: int = 1, kind: JobKind = JobKind.IMAGINE) -> NewJob:
    job = new_job(guild=guild, user=user, count=count)
    return replace(job, kind=kind, params=replace(job.params, width=size, height=size))


BATCH_OF_4 = Capabilities(sizes=((64, 64), (128, 128)), max_batch=4, batch_by_size=(((128, 128), 1),))


async def test_a_batch_takes_compatible_jobs_in_fair_order_and_passed_over_guilds_go_next(
    queue: LocalLifecycle,
) -> None:
    first = await queue.submit(_sized(1, 10, 64))
    other_size = await queue.submit(_sized(2, 20, 96))  # guild 2 is next in fair order, but incompatible
    third = await queue.submit(_sized(3, 30, 64))
    fourth = await queue.submit(_sized(1, 11, 64))
    fifth = await queue.submit(_sized(1, 10, 64))
    batch = await queue.claim("test", BATCH_OF_4)
    # One pipeline call takes the compatible jobs, walking the queue in fair order.
    assert [job.id for job in batch] == [first.id, third.id, fourth.id, fifth.id]
    assert all(job.status is JobStatus.RUNNING for job in batch)
    # The guild that was passed over is served first next time: it waited one batch, no more.
    after = await queue.claim("test", BATCH_OF_4)
    assert [job.id for job in after] == [other_size.id]


async def test_a_batch_holds_at_most_max_batch_images_and_the_per_size_limit(queue: LocalLifecycle) -> None:
    pairs = [await queue.submit(_sized(g, 10, 64, count=2)) for g in (1, 2, 3)]
    batch = await queue.claim("test", BATCH_OF_4)
    assert [job.id for job in batch] == [pairs[0].id, pairs[1].id]  # 2 + 2 images fill max_batch 4

    large = [await queue.submit(_sized(g, 10, 128)) for g in (4, 5)]
    await claim_one(queue, "test")  # the last pair
    alone = await queue.claim("test", BATCH_OF_4)
    assert [job.id for job in alone] == [large[0].id]  # max_batch_by_size: one at a time at 128²


async def test_jobs_of_different_operations_or_strengths_are_not_batched(queue: LocalLifecycle) -> None:
    imagine = await queue.submit(_sized(1, 10, 64))
    await queue.submit(_sized(2, 20, 64, kind=JobKind.VARIATION))
    varied = await queue.submit(_sized(3, 30, 64, kind=JobKind.VARIATION))
    batch = await queue.claim("test", BATCH_OF_4)
    assert [job.id for job in batch] == [imagine.id]
    pair = await queue.claim("test", BATCH_OF_4)
    assert [job.id for job in pair] == [varied.id - 1, varied.id]  # same strength: one call

    upscales = [await queue.submit(_sized(g, 10, 64, kind=JobKind.UPSCALE)) for g in (1, 2)]
    first = await queue.claim("test", BATCH_OF_4)
    assert [job.id for job in first] == [upscales[0].id]  # upscales run one at a time

    while await claim_one(queue, "test") is not None:
        pass
    strong = await queue.submit(_sized(4, 40, 64, kind=JobKind.VARIATION))
    gentle = _sized(5, 50, 64, kind=JobKind.VARIATION)
    gentle = replace(gentle, params=replace(gentle.params, strength=0.3))
    await queue.submit(gentle)
    alone = await queue.claim("test", BATCH_OF_4)
    assert [job.id for job in alone] == [strong.id]


async def test_a_rendering_job_still_counts_against_the_members_limit_until_it_ends(
    store: Store, files: ImageFiles
) -> None:
    queue = LocalLifecycle(store, files, QueueSettings(max_per_member=1))
    await queue.submit(new_job(user=10))
    running = await claim_one(queue)
    assert running is not None
    with pytest.raises(LimitReached, match="limit is 1"):
        await queue.submit(new_job(user=10))
    await queue.fail(running.id, "The renderer refused.")
    assert (await queue.submit(new_job(user=10))).status is JobStatus.QUEUED
