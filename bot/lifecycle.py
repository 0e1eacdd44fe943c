"""The job lifecycle: the one way a job moves, from accepted to posted or ended.

``JobLifecycle`` is the seam. The worker, the generation service and delivery move jobs only
through it; renderers never see it and it never sees Discord. ``LocalLifecycle`` is the embedded
implementation: jobs in SQLite, the fair order in memory (``bot.scheduler``), renders in this
process. A remote-worker transport implements the same interface in a module of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

from bot import admission as admissions
from bot import images
from bot.config import QueueSettings
from bot.errors import LimitReached, NotAllowed, NotFound
from bot.files import ImageFiles
from bot.jobs import Job, JobStatus, NewJob
from bot.metrics import NO_METRICS, JobMetrics
from bot.quotas import Admission
from bot.renderers.base import Capabilities, RenderResult
from bot.scheduler import FairQueue, Ticket
from bot.store import RowMissing, Store

log = logging.getLogger(__name__)


class JobLifecycle(Protocol):
    """Every move a job makes. Charges are reserved on submit, settled when posted, released on an end."""

    async def recover(self) -> list[Job]:
        """After a start: requeue interrupted renders and return the jobs still to deliver or notify."""
        ...

    async def submit(self, new: NewJob, admission: Admission | None = None) -> Job:
        """Accept a job durably, charged to its member (or raise LimitReached); queued on return."""
        ...

    async def check(self, new: NewJob, admission: Admission) -> None:
        """Raise what ``submit`` would raise for ``new`` now (a limit, the quota), storing nothing."""
        ...

    async def add_rendered(self, new: NewJob, images: tuple[str, ...], made_by: str) -> Job:
        """Accept a job that needs no rendering (a U-pick of an existing image), ready to deliver."""
        ...

    async def claim(self, backend: str, caps: Capabilities) -> list[Job]:
        """Take the next job in fair order for ``backend``, with the jobs that may share its call."""
        ...

    async def renew(self, job_ids: Sequence[int]) -> None:
        """Keep the claim on these running jobs (a remote worker's lease); owner-checked."""
        ...

    async def complete(self, job: Job, result: RenderResult) -> Job:
        """Store a render's images and mark the job rendered (or cancelled, if its member asked)."""
        ...

    async def fail(self, job_id: int, reason: str) -> Job:
        """End a job with a member-readable reason; nothing is charged."""
        ...

    async def cancel(self, job_id: int, guild_id: int, user_id: int) -> Job:
        """A member cancels: a queued job ends now, a running one is asked to stop."""
        ...

    async def stopped(self, job_id: int) -> Job:
        """End a running job whose member cancelled it, once its render stopped; nothing is charged."""
        ...

    async def posted(self, job_id: int, message_id: int, channel_id: int) -> Job:
        """Record the message showing a job's result, settling its charge: never posted again."""
        ...

    async def notified(self, job_id: int, message_id: int) -> None:
        """Record the message that told a member how their job ended (0: it could not be posted)."""
        ...

    async def undelivered(self) -> list[Job]:
        """Jobs whose result, failure or cancellation still has to be posted."""
        ...

    def place(self, job_id: int) -> tuple[int, int] | None:
        """A queued job's place in line and the length of its backend's line, or None."""
        ...

    def front(self, backend: str, count: int) -> list[int]:
        """The ids of the next ``count`` jobs ``backend`` will serve, in order."""
        ...

    def waiting(self, backend: str) -> int:
        """How many jobs wait for ``backend``."""
        ...

    def backends(self) -> Iterable[str]:
        """The backends that have a line (empty or not)."""
        ...

    async def wait(self, backend: str) -> None:
        """Wait until a job may have been added for ``backend``."""
        ...

    def poke(self, backend: str) -> None:
        """Wake whoever waits for work on ``backend``."""
        ...


class LocalLifecycle:
    """The embedded lifecycle: SQLite for every state, the fair order in memory, wake-ups in-process.

    The in-memory order changes only right after the transaction that changed the stored state
    has committed, with no await in between, so it never shows a state the store does not hold.
    """

    def __init__(
        self, store: Store, files: ImageFiles, limits: QueueSettings, metrics: JobMetrics = NO_METRICS
    ) -> None:
        self._store = store
        self._files = files
        self._limits = limits
        self._metrics = metrics
        self._queues: dict[str, FairQueue] = {}
        # Running jobs (guild, member), kept with the fair order for the queue limits: every job
        # enters and leaves "running" through this class, and a start requeues the ones it finds.
        self._running: dict[int, tuple[int, int]] = {}
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def recover(self) -> list[Job]:
        """After a start: requeue interrupted renders, rebuild the fair order and return what to deliver."""
        await self._store.jobs.requeue_interrupted()
        self._running = {}
        queued = await self._store.jobs.jobs_with_status(JobStatus.QUEUED)
        # Every backend ever served keeps its turns: a guild served last before the restart
        # stays behind the others after it.
        self._queues = {
            backend: FairQueue(turns) for backend, turns in (await self._store.jobs.turns()).items()
        }
        for job in queued:
            self._queue(job.backend).add(Ticket.of(job))
        for backend in self._queues:
            self.poke(backend)
        return await self.undelivered()

    async def submit(self, new: NewJob, admission: Admission | None = None) -> Job:
        """Accept a job durably, charged to its member (or raise LimitReached); queued on return.

        The limits are checked in the transaction that writes the job, so requests sent at once
        cannot slip past a limit together.
        """
        source = await self._files.save_source(new.source_image) if new.source_image else None
        try:
            async with self._store.transaction():
                await self._admit(new, admission)
                job = await self._store.jobs.add_queued(new, source_path=source)
                if admission is not None:
                    await self._store.charges.reserve(job, admission)
        except BaseException:
            if source:
                await self._files.remove(source)
            raise
        self._queue(job.backend).add(Ticket.of(job))
        self.poke(job.backend)
        return job

    async def check(self, new: NewJob, admission: Admission) -> None:
        """Raise what ``submit`` would raise for ``new`` now (a limit, the quota), storing nothing."""
        async with self._store.transaction():
            await self._admit(new, admission)

    async def add_rendered(self, new: NewJob, images: tuple[str, ...], made_by: str) -> Job:
        """Accept a job that needs no rendering (a U-pick of an existing image), ready to deliver."""
        return await self._store.jobs.add_rendered(new, images, made_by)

    async def claim(self, backend: str, caps: Capabilities) -> list[Job]:
        """Take the next job in fair order for ``backend``, with the jobs that may share its call."""
        queue = self._queue(backend)
        if queue.head() is None:
            return []  # an idle slot asks often: no transaction for an empty line
        # Picking inside the transaction: no cancel can commit between the pick and the write.
        async with self._store.transaction():
            tickets = queue.pick(caps if caps.max_batch > 1 else None)
            if not tickets:
                return []
            jobs = await self._store.jobs.start(
                backend, [t.job_id for t in tickets], queue.turns_for(tickets)
            )
        queue.take(tickets)
        self._running.update((job.id, (job.guild_id, job.user_id)) for job in jobs)
        self._metrics.jobs_started(jobs)
        return jobs

    async def renew(self, job_ids: Sequence[int]) -> None:
        """In-process renders hold their jobs until they end: there is no lease to renew."""

    async def complete(self, job: Job, result: RenderResult) -> Job:
        """Store a render's images and mark the job rendered (or cancelled, if its member asked)."""
        ext = images.sniff_extension(result.images[0])
        paths = await self._files.save_results(job.id, result.images, ext)
        done = await self._store.jobs.mark_rendered(
            job.id, paths, result.made_by, result.usage, flagged=result.flagged
        )
        self._running.pop(job.id, None)
        if done.status is JobStatus.CANCELLED:
            await self._files.remove_job(job.id)
        self._metrics.job_ended(done)
        return done

    async def fail(self, job_id: int, reason: str) -> Job:
        """End a job with a member-readable reason; nothing is charged."""
        job = await self._store.jobs.mark_failed(job_id, reason)
        self._running.pop(job_id, None)
        self._forget(job)
        self._metrics.job_ended(job)
        return job

    async def cancel(self, job_id: int, guild_id: int, user_id: int) -> Job:
        """A member cancels: a queued job ends now, a running one is asked to stop."""
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
        self._forget(job)
        self.poke(job.backend)
        self._metrics.job_ended(job)
        return job

    async def stopped(self, job_id: int) -> Job:
        """End a running job whose member cancelled it, once its render stopped; nothing is charged."""
        job = await self._store.jobs.mark_cancelled(job_id)
        self._running.pop(job_id, None)
        await self._files.remove_job(job_id)
        self._metrics.job_ended(job)
        return job

    async def posted(self, job_id: int, message_id: int, channel_id: int) -> Job:
        """Record the message showing a job's result, settling its charge: never posted again."""
        async with self._store.transaction():
            job = await self._store.jobs.mark_posted(job_id, message_id, channel_id)
            usd = await self._store.charges.settled_usd(job_id)
        self._metrics.job_ended(job, usd)
        return job

    async def notified(self, job_id: int, message_id: int) -> None:
        """Record the message that told a member how their job ended (0: it could not be posted)."""
        await self._store.jobs.set_message(job_id, message_id)

    async def undelivered(self) -> list[Job]:
        """Jobs whose result, failure or cancellation still has to be posted."""
        return await self._store.jobs.undelivered()

    def place(self, job_id: int) -> tuple[int, int] | None:
        """A queued job's place in line and the length of its backend's line, or None."""
        for queue in self._queues.values():
            place = queue.place(job_id)
            if place is not None:
                return place, len(queue)
        return None

    def front(self, backend: str, count: int) -> list[int]:
        """The ids of the next ``count`` jobs ``backend`` will serve, in order."""
        queue = self._queues.get(backend)
        if queue is None:
            return []
        order = queue.walk()
        return [ticket.job_id for ticket, _ in zip(order, range(count), strict=False)]

    def waiting(self, backend: str) -> int:
        """How many jobs wait for ``backend``."""
        queue = self._queues.get(backend)
        return 0 if queue is None else len(queue)

    def backends(self) -> Iterable[str]:
        """The backends with a line, empty or not."""
        return tuple(self._queues)

    async def wait(self, backend: str) -> None:
        """Wait until a job may have been added for ``backend``."""
        event = self._events[backend]
        await event.wait()
        event.clear()

    def poke(self, backend: str) -> None:
        """Wake whoever waits for work on ``backend``."""
        self._events[backend].set()

    def _queue(self, backend: str) -> FairQueue:
        queue = self._queues.get(backend)
        if queue is None:
            queue = self._queues[backend] = FairQueue()
        return queue

    def _forget(self, job: Job) -> None:
        if job.status is not JobStatus.QUEUED and job.backend in self._queues:
            self._queues[job.backend].remove(job.id)

    async def _admit(self, new: NewJob, admission: Admission | None) -> None:
        """Raise LimitReached (or the quota's refusal) when ``new`` may not be queued now."""
        self._check_limits(new, list(self._running.values()))
        if admission is not None:
            refusal = await admissions.refusal(self._store, new.guild_id, new.user_id, new.backend, admission)
            if refusal is not None:
                raise refusal.error()

    def _check_limits(self, new: NewJob, running: Sequence[tuple[int, int]]) -> None:
        """Refuse a job over the queue's limits; counts come from the fair order and the running jobs.

        Called inside the submit transaction, which holds the write lock: the in-memory order then
        matches the stored one exactly, and costs nothing per waiting job.
        """
        queues = self._queues.values()
        member = sum(q.count(new.guild_id, new.user_id) for q in queues)
        member += sum(1 for who in running if who == (new.guild_id, new.user_id))
        guild = sum(q.count(new.guild_id) for q in queues) + sum(1 for g, _ in running if g == new.guild_id)
        total = sum(len(q) for q in queues) + len(running)
        limits = self._limits
        if member >= limits.max_per_member:
            raise LimitReached(
                f"You already have {member} job(s) waiting or rendering (the limit is "
                f"{limits.max_per_member}). Wait for one to finish, or cancel one with /queue."
            )
        if guild >= limits.max_per_guild:
            raise LimitReached(
                f"This server already has {guild} jobs waiting (the limit is {limits.max_per_guild}). "
                "Try again in a minute."
            )
        if total >= limits.max_total:
            raise LimitReached("Easel is at capacity right now. Try again in a few minutes.")
