"""The render loop: claims jobs in fair order, renders them off the event loop, hands results to delivery."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import replace

from bot.delivery import Delivery
from bot.errors import RenderFailed
from bot.files import ImageFiles
from bot.jobs import Job, JobStatus
from bot.lifecycle import JobLifecycle
from bot.metrics import NO_METRICS, JobMetrics
from bot.moderation import Moderation
from bot.renderers.base import (
    BatchRenderer,
    Operation,
    Paced,
    ProgressCallback,
    Renderer,
    RenderRequest,
    RenderResult,
    Slots,
)
from bot.store import Store
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

# Places in line are refreshed once a tick: those of the jobs next in line every tick, the rest
# a slice at a time, and at most POSITION_EDITS_PER_TICK edits, nearest first. A queue of
# thousands would otherwise spend Discord's rate limit (and Easel's CPU) on edits nobody watches.
POSITION_EDITS_PER_TICK = 25
POSITION_FRONT = 50
POSITION_CHECKS_PER_TICK = 200
FLAGGED = (
    "The safety checker flagged this image, so Easel only posts it in age-restricted channels. "
    "Try a different prompt, or ask in an age-restricted channel."
)
FLAGGED_NEVER = "The safety checker flagged this image, and this server does not allow such images. Try a different prompt."
# A result that still cannot be posted after this many sweeps (a missing file, a channel
# that keeps failing) is ended with a message instead of being retried forever.
DELIVERY_ATTEMPTS = 5
# Status edits wait this long first: a job that starts (or finishes) sooner skips them, which
# saves two webhook edits per quick job and spares members a flicker of messages.
ANNOUNCE_AFTER_S = 0.5
RUNNING_AFTER_S = 1.0
# A store that refused a claim or an ending (locked, disk full) is asked again after this long.
STORE_RETRY_S = 1.0


class Worker:
    """Owns the render slots of every backend and the periodic queue-position refresh."""

    def __init__(
        self,
        lifecycle: JobLifecycle,
        store: Store,
        files: ImageFiles,
        renderers: Mapping[str, Renderer],
        delivery: Delivery,
        *,
        concurrency: Mapping[str, int],
        tick_s: float,
        stop_timeout_s: float = 10.0,
        moderation: Moderation | None = None,
        metrics: JobMetrics = NO_METRICS,
    ) -> None:
        self._moderation = moderation
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._store = store
        self._files = files
        self._renderers = renderers
        self._delivery = delivery
        self._concurrency = concurrency
        self._tick_s = tick_s
        self._stop_timeout_s = stop_timeout_s
        self._tasks = TaskGroup("worker")
        self._renders = TaskGroup("render")
        self._deliveries = TaskGroup("delivery")
        self._running: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self._rendering: set[int] = set()
        self._delivering: Counter[int] = Counter()  # job id -> deliveries under way
        self._shown: dict[int, int | None] = {}  # job id -> place its message shows (None: unknown)
        self._rotation: deque[int] = deque()  # shown jobs not yet checked this round
        self._delivery_failures: dict[int, int] = {}
        self._unended: dict[int, tuple[Job, str | None]] = {}  # job id -> (job, error) to record again
        self._recovered = asyncio.Event()
        self._notes: dict[str, str | None] = {}  # backend -> why its line waits, as last shown

    async def start(self) -> None:
        """Recover unfinished work, then start claiming jobs."""
        pending = await self._lifecycle.recover()
        for backend in self._lifecycle.backends():
            if backend in self._renderers:
                continue
            # Its backend was removed from the config or failed to load: say so, don't strand it.
            for job_id in self._lifecycle.front(backend, self._lifecycle.waiting(backend)):
                pending.append(
                    await self._lifecycle.fail(
                        job_id, f"The `{backend}` backend is not available any more. Please ask again."
                    )
                )
        for backend in self._lifecycle.backends():
            # Messages from before the restart show places that are stale now.
            self._shown.update(
                dict.fromkeys(self._lifecycle.front(backend, self._lifecycle.waiting(backend)))
            )
        self._delivery.inherit(job.id for job in pending if job.status is JobStatus.RENDERED)
        recovering = [self._hand_over(job) for job in pending]
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
        for backend, task in set(self._running.values()):
            # An interruptible render (the local GPU) is stopped at once rather than waited for: its
            # jobs stay running, so the next start renders them again, and a restart takes seconds.
            if self._renderers[backend].capabilities.cancellable:
                task.cancel()
        if self._renders.pending:
            log.info("waiting up to %.0fs for %d render(s)", self._stop_timeout_s, len(self._renders.pending))
            await self._renders.wait(self._stop_timeout_s)
        await self._renders.cancel_all()
        # Posts under way finish (bounded); one cut short is posted once by the next start.
        await self._deliveries.wait(self._stop_timeout_s)
        await self._deliveries.cancel_all()

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
        """Show a newly queued job its place in line, unless it starts rendering first."""
        self._shown[job.id] = None
        asyncio.get_running_loop().call_later(ANNOUNCE_AFTER_S, self._announce_now, job)

    def _announce_now(self, job: Job) -> None:
        place = self._lifecycle.place(job.id)
        if place is None or self._shown.get(job.id, 0) is not None:
            return  # started already, or the refresh showed it
        self._shown[job.id] = place[0]
        note = self._paused(job.backend)
        self._tasks.spawn(self._delivery.show_position(job, *place, note), name=f"place-{job.id}")

    def _paused(self, backend: str) -> str | None:
        renderer = self._renderers.get(backend)
        return renderer.paused() if isinstance(renderer, Paced) else None

    def _show_running(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.id in self._rendering:
                self._tasks.spawn(self._delivery.show_running(job), name=f"running-{job.id}")

    async def _slot_loop(self, backend: str) -> None:
        renderer = self._renderers[backend]
        # Remote workers come and go: their backend's slots and capabilities follow the live ones.
        slots: Slots = (
            renderer.slots
            if isinstance(renderer, Paced)
            else asyncio.Semaphore(self._concurrency.get(backend, 1))
        )
        while True:
            await slots.acquire()
            caps = renderer.capabilities
            if not isinstance(renderer, BatchRenderer):
                caps = replace(caps, max_batch=1)
            try:
                jobs = await self._lifecycle.claim(backend, caps)
            except Exception:
                # The store refused (locked, disk full): nothing was claimed, so try again shortly.
                slots.release()
                log.exception("claiming a job on %s failed; trying again in %.0fs", backend, STORE_RETRY_S)
                await asyncio.sleep(STORE_RETRY_S)
                continue
            if not jobs:
                slots.release()
                await self._lifecycle.wait(backend)
                continue
            ids = [job.id for job in jobs]
            if len(ids) > 1:
                log.info("jobs %s render together on %s", ", ".join(map(str, ids)), backend)
            self._rendering.update(ids)
            task = self._renders.spawn(self._render(jobs), name=f"jobs-{'-'.join(map(str, ids))}")
            for job_id in ids:
                self._running[job_id] = (backend, task)
            task.add_done_callback(functools.partial(self._render_done, ids, slots))

    def _render_done(self, job_ids: list[int], slots: Slots, _task: asyncio.Task[None]) -> None:
        for job_id in job_ids:
            self._running.pop(job_id, None)
            self._rendering.discard(job_id)
        slots.release()

    async def _render(self, jobs: list[Job]) -> None:
        """Render one job, or a batch of compatible jobs in one call, and settle each on its own."""
        renderer = self._renderers[jobs[0].backend]
        running = asyncio.get_running_loop().call_later(RUNNING_AFTER_S, self._show_running, jobs)
        try:
            requests = [await self._request_for(job) for job in jobs]
            progress: dict[int, ProgressCallback] = {}
            if renderer.capabilities.progress:
                progress = {job.id: functools.partial(self._delivery.show_progress, job) for job in jobs}
            outcomes: list[RenderResult | RenderFailed]
            started = time.monotonic()
            if isinstance(renderer, BatchRenderer):
                outcomes = await renderer.render_batch(requests, progress)
            else:
                try:
                    outcomes = [await renderer.render(requests[0], progress.get(jobs[0].id))]
                except RenderFailed as exc:
                    outcomes = [exc]
            self._metrics.batch_rendered(jobs[0].backend, outcomes, time.monotonic() - started)
        except asyncio.CancelledError:
            for job in jobs:
                current = await asyncio.shield(self._store.jobs.get(job.id))
                if current.cancel_requested:
                    await asyncio.shield(self._end(job, None))
            raise
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("jobs %s: unexpected error %s", [job.id for job in jobs], error_id)
            for job in jobs:
                await self._end(job, f"Something went wrong on Easel's side (error {error_id}).")
            return
        finally:
            running.cancel()
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
            job = await self._lifecycle.complete(job, outcome)
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("job %d: could not store the result (error %s)", job.id, error_id)
            await self._end(job, f"Something went wrong on Easel's side (error {error_id}).")
            return
        self._hand_over(job)

    async def _flagged_refusal(self, job: Job) -> str | None:
        """Why a flagged result may not be posted in its channel, or None when it may."""
        if self._moderation is not None and (await self._moderation.settings(job.guild_id)).nsfw == "never":
            return FLAGGED_NEVER
        return None if self._delivery.age_restricted(job) else FLAGGED

    async def _end(self, job: Job, error: str | None) -> None:
        """End a job as failed with ``error``, or as cancelled when ``error`` is None."""
        try:
            if error is None:
                job = await self._lifecycle.stopped(job.id)
            else:
                job = await self._lifecycle.fail(job.id, error)
        except Exception:
            # The job stays running in the store; the next tick tries to end it again.
            log.exception("job %d: could not record how it ended; trying again", job.id)
            self._unended[job.id] = (job, error)
            return
        self._unended.pop(job.id, None)
        self._hand_over(job)

    def _hand_over(self, job: Job) -> asyncio.Task[None]:
        """Post a job's result or ending in a task of its own, so its render slot is free meanwhile."""
        self._delivering[job.id] += 1
        task = self._deliveries.spawn(self._finish(job), name=f"deliver-{job.id}")
        task.add_done_callback(functools.partial(self._delivered, job.id))
        return task

    def _delivered(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._delivering[job_id] -= 1
        if not self._delivering[job_id]:
            del self._delivering[job_id]

    async def _finish(self, job: Job) -> None:
        """Post a job's result or its ending; a delivery error leaves it for the next tick."""
        try:
            if job.status is JobStatus.RENDERED:
                await self._delivery.deliver(job)
            elif job.status in (JobStatus.CANCELLED, JobStatus.FAILED):
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

    async def _request_for(self, job: Job) -> RenderRequest:
        operation = job.kind.operation
        source = None
        if operation is not Operation.GENERATE:
            if job.source_path:
                source = await self._files.read(job.source_path)
            elif job.parent_id is not None:
                parent = await self._store.jobs.get(job.parent_id)
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
            guidance=p.guidance,
            chaos=p.chaos,
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
        """Edit the places in line that changed: the front of each line, then a slice of the rest."""
        lines = self._lifecycle.backends()
        for backend in lines:
            note = self._paused(backend)
            if note != self._notes.get(backend):
                # Workers came or went: every shown place of that line says so again (rare).
                self._notes[backend] = note
                for job_id in self._lifecycle.front(backend, self._lifecycle.waiting(backend)):
                    if job_id in self._shown:
                        self._shown[job_id] = 0
        front = [job_id for backend in lines for job_id in self._lifecycle.front(backend, POSITION_FRONT)]
        if not self._rotation:
            self._rotation.extend(self._shown)
        rest = [self._rotation.popleft() for _ in range(min(POSITION_CHECKS_PER_TICK, len(self._rotation)))]
        edits: list[tuple[int, int, int]] = []
        for job_id in {*front, *rest}:
            if job_id not in self._shown:
                continue
            now = self._lifecycle.place(job_id)
            if now is None:
                del self._shown[job_id]
            elif self._shown[job_id] != now[0]:
                edits.append((*now, job_id))
        for place, total, job_id in sorted(edits)[:POSITION_EDITS_PER_TICK]:
            job = await self._store.jobs.get(job_id)
            await self._delivery.show_position(job, place, total, self._paused(job.backend))
            self._shown[job_id] = place

    async def _sweep(self) -> None:
        """Retry endings the store refused, and deliveries that failed (Discord down, a lasting 5xx)."""
        for job, error in list(self._unended.values()):
            await self._end(job, error)
        for job in await self._lifecycle.undelivered():
            if job.id not in self._rendering and job.id not in self._delivering:
                self._hand_over(job)
