"""The bot's side of remote rendering: the ``local`` backend, served by workers on other machines.

The bot's Worker still claims jobs in fair order; this renderer turns each claimed batch into one
entry on its model × size stream and waits for the workers' completion. Its ``slots`` hold the next
claim until a live worker is free, so batches wait in the fair queue (where members can cancel and
see their place), never in Redis. Every result is checked here before the bot may post it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot import images
from bot.errors import EaselError, RenderFailed
from bot.i18n import N_, _
from bot.jobs import JobStatus
from bot.metrics import NO_METRICS, JobMetrics
from bot.remote import scripts, wire
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
# A batch Redis lost (it restarted without its data) is sent again this many times, then failed.
MAX_RESENDS = 3
# Batches already sent wait this long for a Redis that is down, then fail (their workers may be
# rendering on, but their results could not come back).
OUTAGE_S = 60.0
REDIS_DOWN = N_("Easel could not reach its render queue (error {error}). Please try again in a minute.")
LOST = N_("Easel's render queue kept losing this job (error {error}). Please try again.")
NO_SUCH_SIZE = N_(
    "No render worker online renders {size} any more; the workers online render {sizes}. "
    "Please ask again with another shape."
)
NO_WORKER_FAILED = N_("No render worker online renders {size} any more. Please try again later.")
NO_WORKER = N_("No render worker is online right now: your job starts as soon as one is.")


class BatchLost(Exception):
    """Redis no longer has a batch the bot sent (it restarted without its data)."""


class RedisAway(Exception):
    """Redis has been unreachable for longer than a waiting batch may wait."""

    def __init__(self, error_id: str) -> None:
        super().__init__(error_id)
        self.error_id = error_id


@dataclass(eq=False)
class _Out:
    """A batch in Redis that the bot waits for: sent by this run, or adopted from the run before."""

    batch_id: str
    job_ids: tuple[int, ...]
    stream: str | None
    done: asyncio.Future[wire.Completion]
    adopted: bool = False
    sent: bool = False
    waiters: int = 0


class Outage:
    """Logs a Redis outage once as it starts (with an error id) and once as it ends, not on every try."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.since: float | None = None
        self.error_id = ""

    def failed(self, exc: Exception) -> str:
        """Note a failed call; return the outage's error id."""
        if self.since is None:
            self.since = time.monotonic()
            self.error_id = uuid.uuid4().hex[:8]
            log.warning(
                "Redis is unreachable (error %s: %s); new batches fail, sent ones wait up to %.0fs",
                self.error_id,
                type(exc).__name__,
                self.limit_s,
            )
        return self.error_id

    def ok(self) -> None:
        """Note a call that worked."""
        if self.since is not None:
            log.info("Redis is reachable again (after %.0fs)", time.monotonic() - self.since)
            self.since = None

    def too_long(self) -> bool:
        """Whether Redis has been unreachable for longer than sent batches may wait."""
        return self.since is not None and time.monotonic() - self.since > self.limit_s


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
        self,
        client: Redis,
        store: Store,
        *,
        max_pixels: int,
        metrics: JobMetrics = NO_METRICS,
        outage_s: float = OUTAGE_S,
    ) -> None:
        self._client = client
        self._store = store
        self._max_pixels = max_pixels
        self._metrics = metrics
        self._workers: dict[str, WorkerInfo] = {}
        self._out: dict[str, _Out] = {}  # batch id -> a batch waited for
        self._adopted: dict[int, _Out] = {}  # job id -> the batch an earlier run sent it in
        self._outage = Outage(outage_s)
        self._send_script = client.register_script(scripts.SEND)
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
        if not self._live():
            rows.insert(0, (_("Workers"), _(NO_WORKER)))
        return tuple(rows)

    def paused(self) -> str | None:
        """Why queued jobs wait although nothing renders: no worker is online (None when one is)."""
        return None if self._live() else _(NO_WORKER)

    async def start(self) -> None:
        """Read the workers' announcements, then watch them and consume completions."""
        await ensure_group(self._client, wire.COMPLETIONS, wire.BOT_GROUP)
        await self._refresh()
        await self._adopt()
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
        """Hand a batch to the workers of a model that renders its size and wait for its results.

        Jobs that an earlier run of the bot sent, and that Redis still holds, are not sent again:
        their batch's completion is awaited instead.
        """
        self._progress.update(progress)
        try:
            adopted: dict[str, tuple[_Out, list[RenderRequest]]] = {}
            fresh = []
            for request in requests:
                out = self._adopted.get(request.job_id)
                if out is None:
                    fresh.append(request)
                else:
                    adopted.setdefault(out.batch_id, (out, []))[1].append(request)
            waits = [self._wait(out, part, 0) for out, part in adopted.values()]
            if fresh:
                waits.append(self._send(fresh, None, 0))
            outcomes: dict[int, RenderResult | RenderFailed] = {}
            for part in await asyncio.gather(*waits):
                outcomes.update(part)
        finally:
            for request in requests:
                self._progress.pop(request.job_id, None)
        # A progress edit still in flight could land after the result and hide it: let it finish.
        await asyncio.gather(*(t for r in requests if (t := self._reporting.pop(r.job_id, None)) is not None))
        return [outcomes[r.job_id] for r in requests]

    async def _send(
        self, requests: Sequence[RenderRequest], stream: str | None, resends: int
    ) -> dict[int, RenderResult | RenderFailed]:
        """Put one batch on its stream (``stream``, or the one of a live model for its size) and wait."""
        first = requests[0]
        job_ids = [r.job_id for r in requests]
        if stream is None:
            model = self._model_for(first.width, first.height)
            if model is None:
                log.info("jobs %s: no live worker renders %dx%d", job_ids, first.width, first.height)
                return dict.fromkeys(job_ids, RenderFailed(self._no_such_size(first.width, first.height)))
            stream = wire.stream(model, first.width, first.height)
        batch_id = uuid.uuid4().hex
        out = _Out(batch_id, tuple(job_ids), stream, asyncio.get_running_loop().create_future())
        self._out[batch_id] = out
        try:
            fields = wire.encode_batch(batch_id, requests)
            try:
                await self._send_script(
                    keys=[stream, wire.INFLIGHT],
                    args=[
                        batch_id,
                        wire.encode_inflight(job_ids, stream),
                        wire.WORKERS_GROUP,
                        *(part for pair in fields.items() for part in pair),
                    ],
                )
            except RedisError as exc:
                error_id = self._outage.failed(exc)
                log.warning("jobs %s: not sent, no Redis (error %s)", job_ids, error_id)
                return dict.fromkeys(job_ids, RenderFailed(_(REDIS_DOWN, error=error_id)))
            out.sent = True
            self._outage.ok()
            log.info("jobs %s: sent to %s as batch %s", job_ids, stream, batch_id)
            return await self._wait(out, requests, resends)
        finally:
            self._out.pop(batch_id, None)

    async def _wait(
        self, out: _Out, requests: Sequence[RenderRequest], resends: int
    ) -> dict[int, RenderResult | RenderFailed]:
        """Wait for a batch's completion; send the batch again if Redis lost it."""
        job_ids = [r.job_id for r in requests]
        out.waiters += 1
        try:
            # Shielded: the future is shared by every claim that waits on an adopted batch.
            completion = await asyncio.shield(out.done)
        except BatchLost:
            completion = None
        except RedisAway as away:
            return dict.fromkeys(job_ids, RenderFailed(_(REDIS_DOWN, error=away.error_id)))
        finally:
            out.waiters -= 1
            for job_id in job_ids:
                if self._adopted.get(job_id) is out:
                    del self._adopted[job_id]
            if out.adopted and not out.waiters and out not in self._adopted.values():
                self._out.pop(out.batch_id, None)
        if completion is None:
            if resends >= MAX_RESENDS:
                error_id = uuid.uuid4().hex[:8]
                log.warning(
                    "jobs %s: lost from Redis %d times; failed (error %s)", job_ids, resends + 1, error_id
                )
                return dict.fromkeys(job_ids, RenderFailed(_(LOST, error=error_id)))
            log.warning("jobs %s: batch %s is gone from Redis; sending it again", job_ids, out.batch_id)
            return await self._send(requests, out.stream, resends + 1)
        return {r.job_id: self._checked(r, completion.outcomes.get(r.job_id)) for r in requests}

    def _no_such_size(self, width: int, height: int) -> str:
        sizes = [f"{w}×{h}" for w, h in self.capabilities.sizes] if self._live() else []
        if not sizes:
            return _(NO_WORKER_FAILED, size=f"{width}×{height}")
        return _(NO_SUCH_SIZE, size=f"{width}×{height}", sizes=", ".join(sizes))

    def _live(self) -> list[WorkerInfo]:
        return [w for w in self._workers.values() if w.live]

    def _model_for(self, width: int, height: int) -> str | None:
        """The model whose live workers render this size, the one with the most of them."""
        counts: dict[str, int] = {}
        for worker in self._live():
            if (width, height) in worker.capabilities.sizes:
                counts[worker.model] = counts.get(worker.model, 0) + 1
        if not counts:
            return None
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
                await self._find_lost()
                await self._ack_settled()
                await self._prune_adopted()
                self._outage.ok()
            except RedisError as exc:
                self._outage.failed(exc)
                if self._outage.too_long():
                    for out in [o for o in self._out.values() if o.sent]:
                        self._lose(out, RedisAway(self._outage.error_id))
            except Exception:
                log.warning("reading the workers' state failed; trying again", exc_info=True)

    async def _adopt(self) -> None:
        """Take over the batches an earlier run of the bot sent: their jobs wait for them, not sent again."""
        records: dict[bytes, bytes] = await self._client.hgetall(wire.INFLIGHT)  # type: ignore[assignment]
        for raw_id, raw in records.items():
            batch_id = wire.text(raw_id)
            try:
                job_ids, stream = wire.decode_inflight(raw)
            except ValueError:
                log.warning("in-flight batch %s has a record this bot does not read", batch_id)
                continue
            waiting = [job_id for job_id in job_ids if await self._unfinished(job_id)]
            if not waiting:
                continue  # taken before the restart: its completion, if any, is acknowledged
            future: asyncio.Future[wire.Completion] = asyncio.get_running_loop().create_future()
            out = _Out(batch_id, tuple(job_ids), stream, future, adopted=True, sent=True)
            self._out[batch_id] = out
            self._adopted.update(dict.fromkeys(waiting, out))
            log.info("jobs %s: still in Redis as batch %s; waiting for it", waiting, batch_id)

    async def _unfinished(self, job_id: int) -> bool:
        try:
            status = (await self._store.jobs.get(job_id)).status
        except RowMissing:
            return False
        return status in (JobStatus.QUEUED, JobStatus.RUNNING)

    async def _find_lost(self) -> None:
        """Notice batches Redis no longer has: only the bot removes its record of one, once answered."""
        outs = [o for o in self._out.values() if o.sent and not o.done.done()]
        if not outs:
            return
        present = await self._client.hmget(wire.INFLIGHT, [o.batch_id for o in outs])
        for out, record in zip(outs, present, strict=True):
            if record is None:
                log.warning("batch %s (jobs %s) is gone from Redis", out.batch_id, list(out.job_ids))
                self._lose(out, BatchLost())

    def _lose(self, out: _Out, reason: Exception) -> None:
        """Stop waiting for a batch; claims waiting on it send it again or fail, the others go fresh."""
        self._out.pop(out.batch_id, None)
        for job_id in out.job_ids:
            if self._adopted.get(job_id) is out:
                del self._adopted[job_id]
        if out.waiters and not out.done.done():
            out.done.set_exception(reason)

    async def _prune_adopted(self) -> None:
        """Forget adopted jobs that ended while queued (cancelled): nobody will claim them."""
        for job_id, out in list(self._adopted.items()):
            if out.waiters or await self._unfinished(job_id):
                continue
            del self._adopted[job_id]
            if out not in self._adopted.values():
                self._out.pop(out.batch_id, None)

    async def _completion_loop(self) -> None:
        # "0" first: completions this bot read before a restart but never acknowledged.
        start = "0"
        while not self._closing:
            try:
                read: Any = await self._client.xreadgroup(
                    wire.BOT_GROUP, "bot", {wire.COMPLETIONS: start}, count=16, block=BLOCK_MS
                )
                entries = wire.entries(read)
                if start == "0" and not entries:
                    start = ">"
                for entry in entries:
                    self._received(entry.entry_id, entry.fields)
                await self._ack_settled()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.warning("reading completions failed; trying again", exc_info=True)
                    await asyncio.sleep(WATCH_S)
                    continue
                # Redis restarted without its data: the group comes back, from the stream's start.
                log.warning("the completions group is gone from Redis; creating it again")
                with contextlib.suppress(RedisError):
                    await ensure_group(self._client, wire.COMPLETIONS, wire.BOT_GROUP)
            except RedisError as exc:
                self._outage.failed(exc)
                await asyncio.sleep(WATCH_S)

    def _received(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            completion = wire.decode_completion(fields)
        except ValueError:
            log.warning("completion %s is malformed; dropped", entry_id)
            self._unacked[entry_id] = ("", [])
            return
        out = self._out.get(completion.batch_id)
        if out is None:
            # A batch already answered, or one whose jobs ended without it (Redis away too long).
            self._unacked[entry_id] = (completion.batch_id, [])
            return
        if not out.done.done():
            out.done.set_result(completion)
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
            if batch_id in self._out or not await self._settled(job_ids):
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
                except RedisError as exc:
                    self._outage.failed(exc)
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
