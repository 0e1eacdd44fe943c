"""The render loop: claims jobs in fair order, renders them off the event loop, hands results to delivery."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Mapping, Sequence

from bot import images
from bot.delivery import Delivery
from bot.errors import RenderFailed
from bot.files import ImageFiles
from bot.jobs import Job, JobStatus
from bot.moderation import Moderation
from bot.queue import JobQueue
from bot.renderers.base import (
    BatchRenderer,
    Capabilities,
    Operation,
    ProgressCallback,
    Renderer,
    RenderRequest,
    RenderResult,
)
from bot.store import Store
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

# Status messages of jobs further back than this are refreshed less eagerly: a queue of
# hundreds would otherwise spend Discord's rate limit on edits nobody is watching.
POSITION_EDITS_PER_TICK = 25
FLAGGED = (
    "The safety checker flagged this image, so Easel only posts it in age-restricted channels. "
    "Try a different prompt, or ask in an age-restricted channel."
)
FLAGGED_NEVER = "The safety checker flagged this image, and this server does not allow such images. Try a different prompt."
# A result that still cannot be posted after this many sweeps (a missing file, a channel
# that keeps failing) is ended with a message instead of being retried forever.
DELIVERY_ATTEMPTS = 5


class Worker:
    """Owns the render slots of every backend and the periodic queue-position refresh."""

    def __init__(
        self,
        queue: JobQueue,
        store: Store,
        files: ImageFiles,
        renderers: Mapping[str, Renderer],
        delivery: Delivery,
        *,
        concurrency: Mapping[str, int],
        tick_s: float,
        stop_timeout_s: float = 10.0,
        moderation: Moderation | None = None,
    ) -> None:
        self._moderation = moderation
        self._queue = queue
        self._store = store
        self._files = files
        self._renderers = renderers
        self._delivery = delivery
        self._concurrency = concurrency
        self._tick_s = tick_s
        self._stop_timeout_s = stop_timeout_s
        self._tasks = TaskGroup("worker")
        self._renders = TaskGroup("render")
        self._running: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self._busy: set[int] = set()
        self._shown: dict[int, int] = {}
        self._delivery_failures: dict[int, int] = {}
        self._recovered = asyncio.Event()

    async def start(self) -> None:
        """Recover unfinished work, then start claiming jobs."""
        await self._store.requeue_interrupted()
        for job in await self._store.jobs_with_status(JobStatus.QUEUED):
            if job.backend not in self._renderers:
                # Its backend was removed from the config or failed to load: say so, don't strand it.
                await self._store.mark_failed(
                    job.id, f"The `{job.backend}` backend is not available any more. Please ask again."
                )
        pending = await self._store.undelivered()
        self._delivery.inherit(job.id for job in pending if job.status is JobStatus.RENDERED)
        recovering = [self._tasks.spawn(self._finish(job), name=f"recover-{job.id}") for job in pending]
        self._tasks.spawn(self._mark_recovered(recovering), name="recovered")
        for backend in self._renderers:
            self._tasks.spawn(self._slot_loop(backend), name=f"slots-{backend}")
        self._tasks.spawn(self._tick_loop(), name="positions")
        log.info("worker started: %d job(s) to deliver after restart", len(pending))

    async def recovered(self) -> None:
        """Wait until every job found undelivered at start has had its delivery attempt."""
        await self._recovered.wait()

    async def _mark_recovered(self, recovering: list[asyncio.Task[None]]) -> None:
        if recovering:
            await asyncio.wait(recovering)
        self._recovered.set()

    async def stop(self) -> None:
        """Stop taking work, give running renders a bounded time, and leave the rest for the next start."""
        await self._tasks.cancel_all()
        if self._renders.pending:
            log.info("waiting up to %.0fs for %d render(s)", self._stop_timeout_s, len(self._renders.pending))
            await self._renders.wait(self._stop_timeout_s)
        await self._renders.cancel_all()

    def cancel_running(self, job_id: int) -> bool:
        """Interrupt a running render if its backend allows; otherwise its result will be discarded."""
        entry = self._running.get(job_id)
        if entry is None or not self._renderers[entry[0]].capabilities.cancellable:
            return False
        renderer = self._renderers[entry[0]]
        if isinstance(renderer, BatchRenderer):
            # The job may share its pipeline call with others: only the renderer can stop its part.
            renderer.cancel(job_id)
        else:
            entry[1].cancel()
        return True

    async def announce(self, job: Job) -> None:
        """Show a newly queued job its place in line."""
        positions = await self._queue.positions(job.backend)
        if job.id in positions:
            await self._delivery.show_position(job, positions[job.id], len(positions))
            self._shown[job.id] = positions[job.id]

    async def _slot_loop(self, backend: str) -> None:
        renderer = self._renderers[backend]
        joins = None
        if isinstance(renderer, BatchRenderer) and renderer.capabilities.max_batch > 1:
            joins = functools.partial(may_join, renderer.capabilities)
        slots = asyncio.Semaphore(self._concurrency.get(backend, 1))
        while True:
            await slots.acquire()
            if joins is not None:
                jobs = await self._queue.claim_batch(backend, joins)
            else:
                job = await self._queue.claim(backend)
                jobs = [job] if job else []
            if not jobs:
                slots.release()
                await self._queue.wait(backend)
                continue
            ids = [job.id for job in jobs]
            if len(ids) > 1:
                log.info("jobs %s render together on %s", ", ".join(map(str, ids)), backend)
            self._busy.update(ids)
            task = self._renders.spawn(self._render(jobs), name=f"jobs-{'-'.join(map(str, ids))}")
            for job_id in ids:
                self._running[job_id] = (backend, task)
            task.add_done_callback(functools.partial(self._render_done, ids, slots))

    def _render_done(self, job_ids: list[int], slots: asyncio.Semaphore, _task: asyncio.Task[None]) -> None:
        for job_id in job_ids:
            self._running.pop(job_id, None)
            self._busy.discard(job_id)
        slots.release()

    async def _render(self, jobs: list[Job]) -> None:
        """Render one job, or a batch of compatible jobs in one call, and settle each on its own."""
        renderer = self._renderers[jobs[0].backend]
        try:
            for job in jobs:
                await self._delivery.show_running(job)
            requests = [await self._request_for(job) for job in jobs]
            progress: dict[int, ProgressCallback] = {}
            if renderer.capabilities.progress:
                progress = {job.id: functools.partial(self._delivery.show_progress, job) for job in jobs}
            outcomes: list[RenderResult | RenderFailed]
            if isinstance(renderer, BatchRenderer):
                outcomes = await renderer.render_batch(requests, progress)
            else:
                try:
                    outcomes = [await renderer.render(requests[0], progress.get(jobs[0].id))]
                except RenderFailed as exc:
                    outcomes = [exc]
        except asyncio.CancelledError:
            for job in jobs:
                current = await asyncio.shield(self._store.get(job.id))
                if current.cancel_requested:
                    await asyncio.shield(self._end(job, None))
            raise
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("jobs %s: unexpected error %s", [job.id for job in jobs], error_id)
            for job in jobs:
                await self._end(job, f"Something went wrong on Easel's side (error {error_id}).")
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            await self._settle(job, outcome)

    async def _settle(self, job: Job, outcome: RenderResult | RenderFailed) -> None:
        """Store one job's images and post them, or end it with the renderer's message."""
        if isinstance(outcome, RenderFailed):
            log.info("job %d: render failed: %s", job.id, outcome)
            await self._end(job, str(outcome))
            return
        if outcome.flagged:
            refusal = await self._flagged_refusal(job)
            if refusal is not None:
                log.info("job %d: the safety checker flagged the result; not posted here", job.id)
                await self._end(job, refusal)
                return
        try:
            ext = images.sniff_extension(outcome.images[0])
            paths = await self._files.save_results(job.id, outcome.images, ext)
            job = await self._store.mark_rendered(job.id, paths, outcome.made_by, outcome.usage)
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("job %d: could not store the result (error %s)", job.id, error_id)
            await self._end(job, f"Something went wrong on Easel's side (error {error_id}).")
            return
        await self._finish(job)

    async def _flagged_refusal(self, job: Job) -> str | None:
        """Why a flagged result may not be posted in its channel, or None when it may."""
        if self._moderation is not None and (await self._moderation.settings(job.guild_id)).nsfw == "never":
            return FLAGGED_NEVER
        return None if self._delivery.age_restricted(job) else FLAGGED

    async def _end(self, job: Job, error: str | None) -> None:
        """End a job as failed with ``error``, or as cancelled when ``error`` is None."""
        if error is None:
            job = await self._store.mark_cancelled(job.id)
        else:
            job = await self._store.mark_failed(job.id, error)
        await self._finish(job)

    async def _finish(self, job: Job) -> None:
        """Post a job's result or its ending; a delivery error leaves it for the next tick."""
        self._busy.add(job.id)
        try:
            if job.status is JobStatus.RENDERED:
                await self._delivery.deliver(job)
            elif job.status is JobStatus.CANCELLED:
                await self._files.remove_job(job.id)
                await self._delivery.notify_ended(job)
            elif job.status is JobStatus.FAILED:
                await self._delivery.notify_ended(job)
        except Exception:
            failures = self._delivery_failures.get(job.id, 0) + 1
            self._delivery_failures[job.id] = failures
            if failures < DELIVERY_ATTEMPTS or job.status is not JobStatus.RENDERED:
                log.exception("job %d: delivery failed (attempt %d); will retry", job.id, failures)
                return
            log.exception("job %d: delivery failed %d times; giving up", job.id, failures)
            del self._delivery_failures[job.id]
            await self._end(job, "Easel rendered your images but could not post them. Please try again.")
        finally:
            self._busy.discard(job.id)

    async def _request_for(self, job: Job) -> RenderRequest:
        operation = job.kind.operation
        source = None
        if operation is not Operation.GENERATE:
            if job.source_path:
                source = await self._files.read(job.source_path)
            elif job.parent_id is not None:
                parent = await self._store.get(job.parent_id)
                source = await self._files.read(parent.images[(job.parent_index or 1) - 1])
        p = job.params
        return RenderRequest(
            job_id=job.id,
            operation=operation,
            prompt=p.prompt,
            extra_prompt=p.extra_prompt,
            width=p.width,
            height=p.height,
            count=p.count,
            negative=p.negative,
            seed=p.seed or 0,
            quality=p.quality,
            strength=p.strength,
            source=source,
        )

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self._refresh_positions()
                await self._sweep()
            except Exception:
                log.exception("queue refresh failed")
            await asyncio.sleep(self._tick_s)

    async def _refresh_positions(self) -> None:
        queued = await self._store.jobs_with_status(JobStatus.QUEUED)
        by_id = {job.id: job for job in queued}
        edits: list[tuple[int, Job, int, int]] = []
        for backend in {job.backend for job in queued}:
            positions = await self._queue.positions(backend)
            for job_id, place in positions.items():
                if self._shown.get(job_id) != place and job_id in by_id:
                    edits.append((place, by_id[job_id], place, len(positions)))
        self._shown = {k: v for k, v in self._shown.items() if k in by_id}
        for _, job, place, total in sorted(edits, key=lambda e: e[0])[:POSITION_EDITS_PER_TICK]:
            await self._delivery.show_position(job, place, total)
            self._shown[job.id] = place

    async def _sweep(self) -> None:
        """Retry deliveries that failed earlier (Discord was down, a 5xx outlasted discord.py's retries)."""
        for job in await self._store.undelivered():
            if job.id not in self._busy:
                await self._finish(job)


def batch_key(job: Job) -> tuple[object, ...]:
    """What jobs must share to go into one pipeline call (model, steps and scheduler are the backend's)."""
    p = job.params
    operation = job.kind.operation
    return (operation, p.width, p.height, p.strength if operation is Operation.VARY else None)


def may_join(caps: Capabilities, taken: Sequence[Job], job: Job) -> bool:
    """Whether ``job`` may join the batch ``taken`` (offered in fair order; see Store.claim)."""
    first = taken[0]
    if first.kind.operation is Operation.UPSCALE or batch_key(job) != batch_key(first):
        return False
    room = caps.batch_limit(first.params.width, first.params.height)
    return sum(j.params.count for j in taken) + job.params.count <= room
