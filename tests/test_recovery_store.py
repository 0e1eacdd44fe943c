"""What the store hands back for recovery after a restart: never a posted job, every untold ending."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bot.jobs import JobStatus
from bot.store import Store, TransitionRefused
from tests.factories import new_job

_backends = itertools.count()


async def job_in(store: Store, state: str) -> int:
    """Write one job and move it to ``state`` (a status, or "<status> told" once the member was told)."""
    # Each job on its own backend, so that a claim takes exactly this one.
    backend = f"b{next(_backends)}"
    job = await store.jobs.add_queued(new_job(backend=backend))
    status, _, told = state.partition(" ")
    if status == "queued":
        return job.id
    await store.jobs.start(backend, [job.id], [])
    if status == "running":
        return job.id
    if status == "stopping":  # running, and its member asked to cancel it
        await store.jobs.request_cancel(job.id)
        return job.id
    if status == "cancelled":
        await store.jobs.mark_cancelled(job.id)
    elif status == "failed":
        await store.jobs.mark_failed(job.id, "The renderer refused.")
    else:
        await store.jobs.mark_rendered(job.id, (f"jobs/{job.id}/1.png",), "test", None)
        if status == "posted":
            await store.jobs.mark_posted(job.id, 9000 + job.id, 100)
    if told:
        await store.jobs.set_message(job.id, 8000 + job.id)
    return job.id


STATES = (
    "queued",
    "running",
    "stopping",
    "rendered",
    "posted",
    "failed",
    "failed told",
    "cancelled",
    "cancelled told",
)


async def test_undelivered_is_what_still_needs_a_post_and_never_a_posted_job(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    async with Store.open(path) as store:
        ids = {state: await job_in(store, state) for state in STATES}
        assert [j.id for j in await store.jobs.undelivered()] == [
            ids["rendered"],
            ids["failed"],
            ids["cancelled"],
        ]

    # A restart: the same file, a new connection, the worker's recovery steps in order.
    async with Store.open(path) as store:
        await store.jobs.requeue_interrupted()
        status = {state: (await store.jobs.get(job_id)).status for state, job_id in ids.items()}
        assert status["running"] is JobStatus.QUEUED  # rendered again
        assert status["stopping"] is JobStatus.CANCELLED  # its member already cancelled it
        assert status["queued"] is JobStatus.QUEUED
        assert status["posted"] is JobStatus.POSTED
        undelivered = [j.id for j in await store.jobs.undelivered()]
        assert undelivered == sorted([ids["stopping"], ids["rendered"], ids["failed"], ids["cancelled"]])
        assert ids["posted"] not in undelivered

        # Running recovery twice (a crash during recovery) changes nothing more.
        await store.jobs.requeue_interrupted()
        assert [j.id for j in await store.jobs.undelivered()] == undelivered


async def test_a_posted_job_cannot_be_posted_or_failed_again(store: Store) -> None:
    job_id = await job_in(store, "posted")
    with pytest.raises(TransitionRefused, match="is posted"):
        await store.jobs.mark_posted(job_id, 1, 100)
    with pytest.raises(TransitionRefused, match="is posted"):
        await store.jobs.mark_failed(job_id, "late failure")
    job = await store.jobs.get(job_id)
    assert (job.status, job.message_id) == (JobStatus.POSTED, 9000 + job_id)
