"""The fair job queue: an interface, and its embedded SQLite implementation."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

from bot.config import QueueSettings
from bot.fairness import fair_order
from bot.files import ImageFiles
from bot.jobs import Job, NewJob
from bot.quotas import Admission
from bot.store import Store


class JobQueue(Protocol):
    """Accepts jobs durably and hands them out in fair order; jobs are plain data."""

    async def submit(self, new: NewJob, admission: Admission | None = None) -> Job:
        """Store a job as queued, charged to its member (or raise LimitReached); durable on return."""
        ...

    async def check(self, new: NewJob, admission: Admission) -> None:
        """Raise what ``submit`` would raise for ``new`` now (a limit, the quota), storing nothing."""
        ...

    async def claim(self, backend: str) -> Job | None:
        """Take the next job for ``backend`` in fair order, marking it running."""
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
        """Store a job as queued, charged to its member (or raise LimitReached); durable on return."""
        source = await self._files.save_source(new.source_image) if new.source_image else None
        try:
            job = await self._store.enqueue(
                new,
                max_per_member=self._limits.max_per_member,
                max_per_guild=self._limits.max_per_guild,
                max_total=self._limits.max_total,
                source_path=source,
                admission=admission,
            )
        except BaseException:
            if source:
                await self._files.remove(source)
            raise
        self.poke(job.backend)
        return job

    async def check(self, new: NewJob, admission: Admission) -> None:
        """Raise what ``submit`` would raise for ``new`` now (a limit, the quota), storing nothing."""
        await self._store.check_enqueue(
            new,
            max_per_member=self._limits.max_per_member,
            max_per_guild=self._limits.max_per_guild,
            max_total=self._limits.max_total,
            admission=admission,
        )

    async def claim(self, backend: str) -> Job | None:
        """Take the next job for ``backend`` in fair order, marking it running."""
        jobs = await self._store.claim(backend)
        return jobs[0] if jobs else None

    async def claim_batch(self, backend: str, joins: Callable[[Sequence[Job], Job], bool]) -> list[Job]:
        """Take the next job in fair order and, walking on in that order, each job ``joins`` admits."""
        return await self._store.claim(backend, joins)

    async def positions(self, backend: str) -> dict[int, int]:
        """Return each queued job's 1-based place in line for ``backend``."""
        jobs, turns = await self._store.queue_snapshot(backend)
        return {job_id: place for place, job_id in enumerate(fair_order(jobs, turns), start=1)}

    async def wait(self, backend: str) -> None:
        """Wait until a job may have been added for ``backend``."""
        event = self._events[backend]
        await event.wait()
        event.clear()

    def poke(self, backend: str) -> None:
        """Wake whoever waits for work on ``backend`` (a job was added or returned)."""
        self._events[backend].set()
