"""The fair job queue: an interface, and its embedded SQLite implementation."""

from __future__ import annotations

import asyncio
import heapq
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Protocol

from bot.config import QueueSettings
from bot.files import ImageFiles
from bot.jobs import Job, NewJob
from bot.store import Store


class JobQueue(Protocol):
    """Accepts jobs durably and hands them out in fair order; jobs are plain data."""

    async def submit(self, new: NewJob) -> Job:
        """Store a job as queued (or raise LimitReached); the job is durable when this returns."""
        ...

    async def claim(self, backend: str) -> Job | None:
        """Take the next job for ``backend`` in fair order, marking it running."""
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

    async def submit(self, new: NewJob) -> Job:
        """Store a job as queued (or raise LimitReached); the job is durable when this returns."""
        source = await self._files.save_source(new.source_image) if new.source_image else None
        try:
            job = await self._store.enqueue(
                new,
                max_per_member=self._limits.max_per_member,
                max_per_guild=self._limits.max_per_guild,
                max_total=self._limits.max_total,
                source_path=source,
            )
        except BaseException:
            if source:
                await self._files.remove(source)
            raise
        self.poke(job.backend)
        return job

    async def claim(self, backend: str) -> Job | None:
        """Take the next job for ``backend`` in fair order, marking it running."""
        return await self._store.claim_next(backend)

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


def fair_order(jobs: Iterable[tuple[int, int, int]], turns: dict[tuple[int, int], int]) -> list[int]:
    """Return job ids in the order the store's ``claim_next`` will hand them out.

    ``jobs`` are (job id, guild id, member id); ``turns`` maps (guild, 0) and (guild, member)
    to the turn each was last served at. This replays ``claim_next``'s rule — least recently
    served guild, then its least recently served member, then oldest job — with heaps, so
    positions for a full queue cost O(n log n).
    """
    queues: dict[int, dict[int, deque[int]]] = defaultdict(lambda: defaultdict(deque))
    for job_id, guild, member in sorted(jobs):
        queues[guild][member].append(job_id)
    turn = max(turns.values(), default=0)

    # Both heaps key on (last turn, oldest waiting job id), matching the SQL ORDER BY:
    # never-served entries have turn 0 and fall back to their oldest job.
    guild_heap = [
        (turns.get((g, 0), 0), min(q[0] for q in members.values()), g) for g, members in queues.items()
    ]
    heapq.heapify(guild_heap)
    member_heaps: dict[int, list[tuple[int, int, int]]] = {}
    for g, members in queues.items():
        heap = [(turns.get((g, m), 0), q[0], m) for m, q in members.items()]
        heapq.heapify(heap)
        member_heaps[g] = heap

    order: list[int] = []
    while guild_heap:
        _, _, guild = heapq.heappop(guild_heap)
        _, _, member = heapq.heappop(member_heaps[guild])
        queue = queues[guild][member]
        order.append(queue.popleft())
        turn += 1
        if queue:
            heapq.heappush(member_heaps[guild], (turn, queue[0], member))
        if member_heaps[guild]:
            heapq.heappush(guild_heap, (turn, min(e[1] for e in member_heaps[guild]), guild))
    return order
