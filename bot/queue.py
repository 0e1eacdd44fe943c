"""The fair job queue: an interface, and its embedded SQLite implementation."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

from bot import admission as admissions
from bot.config import QueueSettings
from bot.errors import LimitReached, NotAllowed, NotFound
from bot.fairness import fair_order
from bot.files import ImageFiles
from bot.jobs import Job, JobStatus, NewJob
from bot.quotas import Admission
from bot.store import ActiveCounts, RowMissing, Store


class JobQueue(Protocol):
    """Accepts jobs durably and hands them out in fair order; jobs are plain data."""

    async def submit(self, new: NewJob, admission: Admission | None = None) -> Job:
        """Store a job as queued, charged to its member (or raise LimitReached); durable on return."""
        ...

    async def claim(self, backend: str) -> Job | None:
        """Take the next job for ``backend`` in fair order, marking it running."""
        ...

    async def cancel(self, job_id: int, guild_id: int, user_id: int) -> Job:
        """Cancel a member's queued job now, or ask their running one to stop (or raise NotAllowed)."""
        ...

    async def claim_batch(self, backend: str, joins: Callable[[Sequence[Job], Job], bool]) -> list[Job]:
        """Take the next job in fair order and, walking on in that order, each job ``joins`` admits."""
        ...

    async def positions(self, backend: str) -> dict[int, int]:
        """Return each queued job's 1-based place in line for ``backend``."""
        ...

    async def wait(self, backend: str) -> None:
        """Wait until a job may have been added for ``backend``."""
        ...

    def poke(self, backend: str) -> None:
        """Wake whoever waits for work on ``backend`` (a job was added or returned)."""
        ...


class SqliteJobQueue:
    """The embedded queue: jobs live in the Store, waiting workers are woken in-process."""

    def __init__(self, store: Store, files: ImageFiles, limits: QueueSettings) -> None:
        self._store = store
        self._files = files
        self._limits = limits
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def submit(self, new: NewJob, admission: Admission | None = None) -> Job:
        """Store a job as queued, charged to its member (or raise LimitReached); durable on return.

        The limits are checked in the transaction that writes the job, so requests sent at once
        cannot slip past a limit together.
        """
        source = await self._files.save_source(new.source_image) if new.source_image else None
        try:
            async with self._store.transaction():
                self._check_limits(await self._store.jobs.active_counts(new.guild_id, new.user_id))
                if admission is not None:
                    refusal = await admissions.refusal(
                        self._store, new.guild_id, new.user_id, new.backend, admission
                    )
                    if refusal is not None:
                        raise refusal.error()
                job = await self._store.jobs.add_queued(new, source_path=source)
                if admission is not None:
                    await self._store.charges.reserve(job, admission)
        except BaseException:
            if source:
                await self._files.remove(source)
            raise
        self.poke(job.backend)
        return job

    def _check_limits(self, active: ActiveCounts) -> None:
        limits = self._limits
        if active.member >= limits.max_per_member:
            raise LimitReached(
                f"You already have {active.member} job(s) waiting or rendering (the limit is "
                f"{limits.max_per_member}). Wait for one to finish, or cancel one with /queue."
            )
        if active.guild >= limits.max_per_guild:
            raise LimitReached(
                f"This server already has {active.guild} jobs waiting (the limit is {limits.max_per_guild}). "
                "Try again in a minute."
            )
        if active.total >= limits.max_total:
            raise LimitReached("Easel is at capacity right now. Try again in a few minutes.")

    async def cancel(self, job_id: int, guild_id: int, user_id: int) -> Job:
        """Cancel a member's queued job now, or ask their running one to stop (or raise NotAllowed)."""
        async with self._store.transaction():
            try:
                job = await self._store.jobs.find(job_id, guild_id)
            except RowMissing as missing:
                raise NotFound.row(missing.kind, missing.id) from None
            if job.user_id != user_id:
                raise NotAllowed("Only the member who asked for this job can cancel it.")
            if job.status is JobStatus.QUEUED:
                job = await self._store.jobs.mark_cancelled(job_id)
            elif job.status is JobStatus.RUNNING:
                job = await self._store.jobs.request_cancel(job_id)
            else:
                raise NotAllowed(
                    f"Job #{job_id} has already finished ({job.status.value}); nothing to cancel."
                )
        self.poke(job.backend)
        return job

    async def claim(self, backend: str) -> Job | None:
        """Take the next job for ``backend`` in fair order, marking it running."""
        jobs = await self._store.jobs.claim(backend)
        return jobs[0] if jobs else None

    async def claim_batch(self, backend: str, joins: Callable[[Sequence[Job], Job], bool]) -> list[Job]:
        """Take the next job in fair order and, walking on in that order, each job ``joins`` admits."""
        return await self._store.jobs.claim(backend, joins)

    async def positions(self, backend: str) -> dict[int, int]:
        """Return each queued job's 1-based place in line for ``backend``."""
        jobs, turns = await self._store.jobs.queue_snapshot(backend)
        return {job_id: place for place, job_id in enumerate(fair_order(jobs, turns), start=1)}

    async def wait(self, backend: str) -> None:
        """Wait until a job may have been added for ``backend``."""
        event = self._events[backend]
        await event.wait()
        event.clear()

    def poke(self, backend: str) -> None:
        """Wake whoever waits for work on ``backend`` (a job was added or returned)."""
        self._events[backend].set()
