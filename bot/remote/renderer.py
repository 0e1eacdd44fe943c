"""The bot's side of remote rendering: the ``local`` backend, served by workers on other machines.

The bot's Worker still claims jobs in fair order; this renderer turns each claimed batch into one
entry on its model × size stream and waits for the workers' completion. Its ``slots`` hold the next
claim until a live worker is free, so batches wait in the fair queue (where members can cancel and
see their place), never in Redis. Every result is checked here before the bot may post it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from bot import images
from bot.errors import EaselError, RenderFailed
from bot.jobs import JobStatus
from bot.metrics import NO_METRICS, JobMetrics
from bot.remote import wire
from bot.remote.worker import ensure_group
from bot.renderers.base import (
    Capabilities,
    Operation,
    Progress,
    ProgressCallback,
    RenderRequest,
    RenderResult,
    render_one,
)
from bot.store import RowMissing, Store
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

# What the bot offers before any worker ever announced itself: nothing is rendered until one
# does, and a member's request for another size is refused with the sizes that exist.
NO_WORKERS_YET = Capabilities(sizes=((512, 512),), max_batch=1)
WATCH_S = 1.0
BLOCK_MS = 1000
# A result is at most 4 images of at most 4096×4096 (the upscaler's cap); a worker sending more
# is misbehaving, and the bot never posts what it sent.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGES = 4
BAD_RESULT = (
    "The render worker sent back something that is not a valid image. Nothing was charged; please try again."
)
MAX_WORKER_MESSAGE = 300


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as its announcement and heartbeat show it."""

    name: str
    model: str
    capabilities: Capabilities
    device: str
    memory: str
    current: str
    done: int
    live: bool


class LiveSlots:
    """One render slot per live worker (each renders one batch at a time); resized as workers come and go."""

    def __init__(self) -> None:
        self._in_use = 0
        self._capacity = 0
        self._changed = asyncio.Event()

    def resize(self, capacity: int) -> None:
        """Set how many batches may be out at once."""
        self._capacity = capacity
        self._changed.set()

    async def acquire(self) -> bool:
        """Wait until a live worker is free, and take its slot."""
        while self._in_use >= self._capacity:
            self._changed.clear()
            await self._changed.wait()
        self._in_use += 1
        return True

    def release(self) -> None:
        """Give a slot back."""
        self._in_use -= 1
        self._changed.set()


class RemoteRenderer:
    """Renders ``local`` jobs on remote workers through Redis Streams (a BatchRenderer)."""

    def __init__(
        self, client: Redis, store: Store, *, max_pixels: int, metrics: JobMetrics = NO_METRICS
    ) -> None:
        self._client = client
        self._store = store
        self._max_pixels = max_pixels
        self._metrics = metrics
        self._workers: dict[str, WorkerInfo] = {}
        self._waiting: dict[str, asyncio.Future[wire.Completion]] = {}
        self._progress: dict[int, ProgressCallback] = {}
        self._reporting: dict[int, asyncio.Task[None]] = {}
        self._unacked: dict[str, tuple[str, list[int]]] = {}  # completion entry -> (batch, jobs)
        self._slots = LiveSlots()
        self._closing = False
        self._tasks = TaskGroup("remote")

    @property
    def name(self) -> str:
        """The backend's name as members see it: the same as the in-process one it replaces."""
        return "local"

    @property
    def capabilities(self) -> Capabilities:
        """What the announced workers can do together: every size any of them renders."""
        known = [w.capabilities for w in self._workers.values()]
        live = [w.capabilities for w in self._workers.values() if w.live] or known
        if not live:
            return NO_WORKERS_YET
        sizes = tuple(dict.fromkeys(size for caps in live for size in caps.sizes))
        # Batches go to one worker: the smallest batch limit fits every worker that may take it.
        return replace(live[0], sizes=sizes, max_batch=min(c.max_batch for c in live))

    def health(self) -> tuple[tuple[str, str], ...]:
        """One line per worker for /status (names are operator-chosen, shown as plain text)."""
        rows = []
        for worker in sorted(self._workers.values(), key=lambda w: w.name):
            state = f"working on {worker.current}" if worker.current else "idle"
            if not worker.live:
                state = "gone"
            rows.append(
                (
                    f"Worker {worker.name}",
                    f"{worker.model} · {worker.device} · {worker.memory} · {state} · {worker.done} done",
                )
            )
        return tuple(rows) or (("Workers", "none has announced itself yet"),)

    async def start(self) -> None:
        """Read the workers' announcements, then watch them and consume completions."""
        await ensure_group(self._client, wire.COMPLETIONS, wire.BOT_GROUP)
        await self._refresh()
        await self._drop_orphans()
        self._tasks.spawn(self._watch_loop(), name="watch")
        self._tasks.spawn(self._completion_loop(), name="completions")
        self._tasks.spawn(self._progress_loop(), name="progress")

    async def close(self) -> None:
        """Stop watching; batches still out are left in Redis."""
        # The loops end on their own within a blocking read (1 s): cancelling redis-py inside a
        # blocking XREADGROUP can leave the task hanging in its disconnect.
        self._closing = True
        await self._tasks.wait(2 * BLOCK_MS / 1000 + 1)
        await self._tasks.cancel_all()

    @property
    def slots(self) -> LiveSlots:
        """The Worker's render slots for this backend: one per live worker."""
        return self._slots

    def cancel(self, job_id: int) -> None:
        """Ask the worker rendering ``job_id`` to stop it; a key covers a worker that missed the message."""
        self._tasks.spawn(self._send_cancel(job_id), name=f"cancel-{job_id}")

    async def _send_cancel(self, job_id: int) -> None:
        await self._client.set(wire.cancelled(job_id), "1", ex=3600)
        await self._client.publish(wire.CANCEL_CHANNEL, str(job_id))

    async def render(self, request: RenderRequest, progress: ProgressCallback | None = None) -> RenderResult:
        """Render one request on a worker."""
        return await render_one(self, request, progress)

    async def render_batch(
        self, requests: Sequence[RenderRequest], progress: Mapping[int, ProgressCallback]
    ) -> list[RenderResult | RenderFailed]:
        """Hand a batch to the workers of a model that renders its size and wait for its results."""
        first = requests[0]
        model = self._model_for(first.width, first.height)
        if model is None:
            raise RenderFailed(f"No render worker renders {first.width}×{first.height} any more.")
        stream = wire.stream(model, first.width, first.height)
        batch_id = uuid.uuid4().hex
        job_ids = [r.job_id for r in requests]
        future: asyncio.Future[wire.Completion] = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = future
        self._progress.update(progress)
        try:
            await ensure_group(self._client, stream, wire.WORKERS_GROUP)
            # Recorded before it is sent, so a restarted bot knows which batches are out.
            await self._client.hset(wire.INFLIGHT, batch_id, json.dumps(job_ids))
            await self._client.xadd(stream, wire.encode_batch(batch_id, requests))  # type: ignore[arg-type]
            log.info("jobs %s: sent to %s workers as batch %s", job_ids, model, batch_id)
            completion = await future
        finally:
            del self._waiting[batch_id]
            for job_id in job_ids:
                self._progress.pop(job_id, None)
        # A progress edit still in flight could land after the result and hide it: let it finish.
        await asyncio.gather(*(t for j in job_ids if (t := self._reporting.pop(j, None)) is not None))
        return [self._checked(r, completion.outcomes.get(r.job_id)) for r in requests]

    def _model_for(self, width: int, height: int) -> str | None:
        """The model whose live workers render this size, the one with the most of them."""
        counts: dict[str, int] = {}
        for worker in self._workers.values():
            if worker.live and (width, height) in worker.capabilities.sizes:
                counts[worker.model] = counts.get(worker.model, 0) + 1
        if not counts:
            known = [w.model for w in self._workers.values() if (width, height) in w.capabilities.sizes]
            return known[0] if known else None
        return max(sorted(counts), key=counts.__getitem__)

    def _checked(
        self, request: RenderRequest, outcome: RenderResult | RenderFailed | None
    ) -> RenderResult | RenderFailed:
        """Pass on a worker's outcome only if it is what the bot may post: real images within the caps."""
        if outcome is None:
            log.warning("job %d: the worker's completion had no result for it", request.job_id)
            return RenderFailed(BAD_RESULT)
        if isinstance(outcome, RenderFailed):
            # A worker's text is not trusted as Discord text: one plain line, without markup.
            text = " ".join(str(outcome).split())[:MAX_WORKER_MESSAGE]
            return RenderFailed("".join(c for c in text if c not in "<>@`*_~|#[]()"))
        wanted = request.count if request.operation is not Operation.UPSCALE else 1
        if not 1 <= len(outcome.images) <= min(MAX_IMAGES, max(wanted, 1)):
            log.warning("job %d: the worker sent %d images", request.job_id, len(outcome.images))
            return RenderFailed(BAD_RESULT)
        for data in outcome.images:
            try:
                if images.sniff_extension(data) not in ("png", "jpg", "webp"):
                    raise RenderFailed(BAD_RESULT)
                images.validate_upload(data, max_bytes=MAX_IMAGE_BYTES, max_pixels=self._max_pixels)
            except EaselError:
                log.warning("job %d: the worker sent an invalid image", request.job_id)
                return RenderFailed(BAD_RESULT)
        made_by = " ".join(outcome.made_by.split())[:100]
        return replace(outcome, made_by="".join(c for c in made_by if c not in "<>@`*_~|#[]()"))

    async def _refresh(self) -> None:
        names = sorted(wire.text(n) for n in await self._client.smembers(wire.WORKERS))
        workers: dict[str, WorkerInfo] = {}
        for name in names:
            data: dict[bytes, bytes] = await self._client.hgetall(wire.announcement(name))  # type: ignore[assignment]
            try:
                workers[name] = WorkerInfo(
                    name=name,
                    model=data[b"model"].decode(),
                    capabilities=wire.decode_capabilities(data[b"capabilities"]),
                    device=data.get(b"device", b"").decode(),
                    memory=data.get(b"memory", b"").decode(),
                    current=data.get(b"current", b"").decode(),
                    done=int(data.get(b"done", b"0")),
                    live=bool(await self._client.exists(wire.heartbeat(name))),
                )
            except (KeyError, ValueError, UnicodeDecodeError):
                log.warning("worker %r announced itself in a form this bot does not read", name)
        was = {n for n, w in self._workers.items() if w.live}
        now = {n for n, w in workers.items() if w.live}
        for name in sorted(now - was):
            log.info("worker %s is live (%s)", name, workers[name].model)
        for name in sorted(was - now):
            log.warning("worker %s is gone (silent past its lease)", name)
        self._workers = workers
        self._slots.resize(len(now))
        self._metrics.workers_live(self.name, len(now))

    async def _watch_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(WATCH_S)
            try:
                await self._refresh()
                await self._ack_settled()
            except Exception:
                log.warning("reading the workers' state failed; trying again", exc_info=True)

    async def _drop_orphans(self) -> None:
        """Forget batches sent by an earlier run of the bot: their jobs were requeued at its start."""
        orphans = await self._client.hkeys(wire.INFLIGHT)
        if orphans:
            log.info("%d batch(es) from before the restart will be rendered again", len(orphans))
            await self._client.hdel(wire.INFLIGHT, *orphans)

    async def _completion_loop(self) -> None:
        # "0" first: completions this bot read before a restart but never acknowledged.
        start = "0"
        while not self._closing:
            try:
                read: Any = await self._client.xreadgroup(
                    wire.BOT_GROUP, "bot", {wire.COMPLETIONS: start}, count=16, block=BLOCK_MS
                )
            except Exception:
                log.warning("reading completions failed; trying again", exc_info=True)
                await asyncio.sleep(WATCH_S)
                continue
            entries = wire.entries(read)
            if start == "0" and not entries:
                start = ">"
            for entry in entries:
                self._received(entry.entry_id, entry.fields)
            await self._ack_settled()

    def _received(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            completion = wire.decode_completion(fields)
        except ValueError:
            log.warning("completion %s is malformed; dropped", entry_id)
            self._unacked[entry_id] = ("", [])
            return
        future = self._waiting.get(completion.batch_id)
        if future is None:
            # A batch sent before a restart (its jobs were rendered again) or already answered.
            self._unacked[entry_id] = (completion.batch_id, [])
            return
        if not future.done():
            future.set_result(completion)
            # Each delivery after the first was a reclaim of the whole batch from a worker past its lease.
            jobs = len(completion.outcomes)
            if completion.deliveries > 1:
                self._metrics.lease_reclaimed(self.name, jobs * (completion.deliveries - 1))
            if completion.deliveries > wire.MAX_DELIVERIES:
                self._metrics.dead_lettered(self.name, jobs)
        self._unacked[entry_id] = (completion.batch_id, list(completion.outcomes))

    async def _ack_settled(self) -> None:
        """Acknowledge completions whose jobs the lifecycle has taken: none of them is running any more."""
        for entry_id, (batch_id, job_ids) in list(self._unacked.items()):
            if batch_id in self._waiting or not await self._settled(job_ids):
                continue
            await self._client.xack(wire.COMPLETIONS, wire.BOT_GROUP, entry_id)
            await self._client.xdel(wire.COMPLETIONS, entry_id)
            if batch_id:
                await self._client.hdel(wire.INFLIGHT, batch_id)
            self._unacked.pop(entry_id, None)

    async def _settled(self, job_ids: Sequence[int]) -> bool:
        for job_id in job_ids:
            try:
                if (await self._store.jobs.get(job_id)).status is JobStatus.RUNNING:
                    return False
            except RowMissing:
                continue
        return True

    async def _progress_loop(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.psubscribe(wire.PROGRESS_PATTERN)
        try:
            while not self._closing:
                try:
                    message = await pubsub.get_message(timeout=BLOCK_MS / 1000)
                except Exception:
                    log.warning("reading progress failed; trying again", exc_info=True)
                    await asyncio.sleep(WATCH_S)
                    continue
                if message is None or message.get("type") != "pmessage":
                    continue
                with contextlib.suppress(ValueError):
                    job_id = int(message["channel"].rsplit(b":", 1)[1])
                    self._report(job_id, wire.decode_progress(message["data"]))
        finally:
            await pubsub.aclose()

    def _report(self, job_id: int, update: Progress) -> None:
        """Show progress; while an edit is in flight, updates are dropped (the next one is newer anyway)."""
        callback = self._progress.get(job_id)
        running = self._reporting.get(job_id)
        if callback is None or (running is not None and not running.done()):
            return
        self._reporting[job_id] = self._tasks.spawn(
            self._show(job_id, callback, update), name=f"progress-{job_id}"
        )

    async def _show(self, job_id: int, callback: ProgressCallback, update: Progress) -> None:
        try:
            await callback(update)
        except Exception:
            log.warning("job %d: progress update failed", job_id, exc_info=True)
