"""A render worker on a GPU machine: pulls batches from Redis, renders them with the local model, reports back.

It never talks to Discord and holds no secret but its Redis URL. Each batch it takes is leased: the
lease is renewed while it renders, and results are published only while the lease is still its own,
so a worker that froze past its lease (and whose batch another worker took) can never complete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import PurePath
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.config import Settings
from bot.errors import RenderFailed
from bot.health import Check, HealthServer, listen_error, redis_check
from bot.metrics import WorkerMetrics
from bot.remote import scripts, wire
from bot.renderers.base import BatchRenderer, Progress, ProgressCallback, RenderRequest, RenderResult
from bot.renderers.local import LocalRenderer
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

# One BLOCK of at most a second: a consumer frozen inside a pending BLOCK still gets entries
# assigned, and only its lease gets them back, so the window stays short.
BLOCK_MS = 1000
DEAD_LETTER = (
    "This job crashed the render workers {count} times, so Easel gave up on it. "
    "Nothing was charged; try a different prompt or size."
)
WORKER_ERROR = "The render worker hit an unexpected error. Nothing was charged; please try again."


def model_key(model: str) -> str:
    """How a model names its streams: a Hugging Face id as is, a local path by its last part."""
    path = PurePath(model.rstrip("/"))
    return path.name if path.is_absolute() else model


def host_name() -> str:
    """The default worker name: this machine's host name, cut to what a name may hold."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return name[:64] or "worker"


async def ensure_group(client: Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) from its start, unless it exists."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class RemoteWorker:
    """Serves one model's streams with a loaded renderer (a LocalRenderer), one batch at a time."""

    def __init__(
        self,
        client: Redis,
        renderer: BatchRenderer,
        *,
        name: str,
        model: str,
        lease_s: float,
        metrics: WorkerMetrics,
    ) -> None:
        self._client = client
        self._renderer = renderer
        self._metrics = metrics
        self._name = name
        self._model = model_key(model)
        self._lease_ms = int(lease_s * 1000)
        self._streams = [wire.stream(self._model, w, h) for w, h in renderer.capabilities.sizes]
        self._tasks = TaskGroup("remote-worker")
        self._current: set[int] = set()
        self._reclaim = client.register_script(scripts.RECLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._complete = client.register_script(scripts.COMPLETE)
        self._done = 0
        self._closing = False

    def stop(self) -> None:
        """Stop taking batches; ``run`` returns once the current one is published (or its lease lapses)."""
        self._closing = True

    async def run(self) -> None:
        """Announce this worker, then take batches until cancelled."""
        await self._ensure_groups()
        await self._announce()
        self._tasks.spawn(self._heartbeat_loop(), name="heartbeat")
        self._tasks.spawn(self._cancel_loop(), name="cancels")
        log.info("worker %s serving %s on %d stream(s)", self._name, self._model, len(self._streams))
        down = regroup = False
        try:
            while not self._closing:
                try:
                    if regroup:
                        await self._ensure_groups()
                        regroup = False
                    taken = await self._take()
                    if taken is not None:
                        await self._serve(*taken)
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        log.warning("Redis refused a command; trying again in 1s", exc_info=True)
                        await asyncio.sleep(1)
                        continue
                    # Redis restarted without its data: the bot sends what it lost again.
                    log.warning("this worker's streams are gone from Redis; creating them again")
                    regroup = True
                    continue
                except RedisError as exc:
                    # Redis restarting (from its AOF) or unreachable a moment. A batch taken is
                    # still leased to this worker, and comes back to one once the lease lapses.
                    if not down:
                        log.warning("talking to Redis failed (%s); trying again every 1s", type(exc).__name__)
                    down = True
                    await asyncio.sleep(1)
                    continue
                if down:
                    log.info("Redis is reachable again")
                down = False
        finally:
            self._closing = True
            await self._tasks.wait(BLOCK_MS / 1000 + 1)
            await self._tasks.cancel_all()
        log.info("worker %s stopped", self._name)

    async def _ensure_groups(self) -> None:
        for stream in self._streams:
            await ensure_group(self._client, stream, wire.WORKERS_GROUP)

    async def _announce(self) -> None:
        await self._beat({"started": str(time.time())})

    async def _beat(self, extra: dict[str, str] | None = None) -> None:
        # The whole announcement every beat: a Redis that restarted without its data learns it again.
        health = dict(self._renderer.health())
        mapping = {
            "model": self._model,
            "capabilities": wire.encode_capabilities(self._renderer.capabilities),
            "device": health.get("Device", ""),
            "memory": health.get("GPU memory", ""),
            "current": ",".join(map(str, sorted(self._current))),
            "done": str(self._done),
            **(extra or {}),
        }
        await self._client.hset(wire.announcement(self._name), mapping=mapping)  # type: ignore[arg-type]
        await self._client.sadd(wire.WORKERS, self._name)
        await self._client.set(wire.heartbeat(self._name), "1", px=self._lease_ms)

    async def _heartbeat_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self._beat()
            except Exception:
                log.warning("heartbeat failed; trying again", exc_info=True)

    async def _cancel_loop(self) -> None:
        """Pass cancels on to the renderer: it stops the call within a step once all its jobs are cancelled."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(wire.CANCEL_CHANNEL)
        try:
            while not self._closing:
                try:
                    message = await pubsub.get_message(timeout=BLOCK_MS / 1000)
                except RedisError:
                    log.warning("reading cancels failed; trying again", exc_info=True)
                    await asyncio.sleep(1)
                    continue
                if message is None or message.get("type") != "message":
                    continue
                with contextlib.suppress(ValueError):
                    job_id = int(message["data"])
                    if job_id in self._current:
                        log.info("job %d: cancelled by its member", job_id)
                        self._renderer.cancel(job_id)
        finally:
            await pubsub.aclose()

    async def _take(self) -> tuple[str, str, dict[bytes, bytes]] | None:
        """Lease the next batch: one a dead worker left behind first, else a new one."""
        for stream in self._streams:
            entry = await self._reclaim(
                keys=[stream],
                args=[wire.WORKERS_GROUP, self._name, self._lease_ms, wire.lease(stream, "")],
            )
            if entry:
                entry_id, flat = entry[0].decode(), entry[1]
                log.info("reclaimed batch %s on %s from a worker past its lease", entry_id, stream)
                self._metrics.reclaimed()
                return stream, entry_id, dict(zip(flat[::2], flat[1::2], strict=True))
        read: Any = await self._client.xreadgroup(
            wire.WORKERS_GROUP, self._name, dict.fromkeys(self._streams, ">"), count=1, block=BLOCK_MS
        )
        for entry in wire.entries(read):
            await self._client.set(wire.lease(entry.stream, entry.entry_id), self._name, px=self._lease_ms)
            return entry.stream, entry.entry_id, entry.fields
        return None

    async def _serve(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Render one leased batch (or give it up when it keeps crashing workers) and publish the results."""
        try:
            batch_id, requests = wire.decode_batch(fields)
        except ValueError:
            log.error("batch %s on %s is malformed; dropped", entry_id, stream)
            await self._publish(stream, entry_id, "", [], [])
            self._metrics.malformed()
            return
        job_ids = [r.job_id for r in requests]
        deliveries = await self._deliveries(stream, entry_id)
        if deliveries > wire.MAX_DELIVERIES:
            log.warning("jobs %s: delivered %d times without a result; giving up", job_ids, deliveries)
            failure = RenderFailed(DEAD_LETTER.format(count=deliveries - 1))
            if await self._publish(stream, entry_id, batch_id, job_ids, [failure] * len(job_ids), deliveries):
                self._metrics.dead_lettered(len(job_ids))
            return
        log.info("jobs %s: rendering (batch %s, delivery %d)", job_ids, batch_id, deliveries)
        self._current = set(job_ids)
        try:
            for job_id in job_ids:
                if await self._client.exists(wire.cancelled(job_id)):
                    self._renderer.cancel(job_id)
            started = time.monotonic()
            render = asyncio.ensure_future(self._render(requests))
            lost = asyncio.ensure_future(self._hold(stream, entry_id))
            await asyncio.wait({render, lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                # Another worker owns the batch now: stop, and leave the results to it.
                log.warning("jobs %s: lease lost; stopping this render", job_ids)
                self._metrics.lost(len(job_ids))
                for job_id in job_ids:
                    self._renderer.cancel(job_id)
                with contextlib.suppress(Exception):
                    await render
                return
            lost.cancel()
            outcomes = render.result()
            seconds = time.monotonic() - started
            if not await self._publish(stream, entry_id, batch_id, job_ids, outcomes, deliveries):
                log.warning("jobs %s: lease lost before the results were published; dropped", job_ids)
                self._metrics.lost(len(job_ids))
                return
            self._metrics.published(outcomes, seconds)
            self._done += len(job_ids)
            log.info("jobs %s: results published", job_ids)
        finally:
            self._current = set()

    async def _render(self, requests: Sequence[RenderRequest]) -> list[RenderResult | RenderFailed]:
        progress: dict[int, ProgressCallback] = {r.job_id: self._progress(r.job_id) for r in requests}
        try:
            return await self._renderer.render_batch(requests, progress)
        except Exception:
            log.exception("jobs %s: the render raised", [r.job_id for r in requests])
            return [RenderFailed(WORKER_ERROR) for _ in requests]

    def _progress(self, job_id: int) -> Callable[[Progress], Awaitable[None]]:
        async def report(update: Progress) -> None:
            await self._client.publish(wire.progress_channel(job_id), wire.encode_progress(update))

        return report

    async def _hold(self, stream: str, entry_id: str) -> None:
        """Renew the lease every third of it; return once it is lost."""
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                held = await self._renew(
                    keys=[stream, wire.lease(stream, entry_id)],
                    args=[self._name, self._lease_ms, wire.WORKERS_GROUP, entry_id],
                )
            except Exception:
                # Redis away for a moment: the lease may still hold; the next renewal tells.
                log.warning("renewing the lease on %s failed", entry_id, exc_info=True)
                continue
            if not held:
                return
            self._metrics.renewed()

    async def _deliveries(self, stream: str, entry_id: str) -> int:
        pending: list[dict[str, Any]] = await self._client.xpending_range(
            stream, wire.WORKERS_GROUP, entry_id, entry_id, 1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _publish(
        self,
        stream: str,
        entry_id: str,
        batch_id: str,
        job_ids: Sequence[int],
        outcomes: Sequence[RenderResult | RenderFailed],
        deliveries: int = 1,
    ) -> bool:
        """Announce the results and retire the entry in one owner-fenced step; False when the lease is gone."""
        fields = wire.encode_completion(batch_id, job_ids, outcomes, deliveries)
        flat = [part for pair in fields.items() for part in pair]
        while True:
            try:
                done = await self._complete(
                    keys=[stream, wire.lease(stream, entry_id), wire.COMPLETIONS],
                    args=[self._name, wire.WORKERS_GROUP, entry_id, *flat],
                )
            except RedisError:
                # The script runs whole or not at all: trying again cannot publish twice.
                log.warning("publishing batch %s failed; trying again in 1s", entry_id, exc_info=True)
                await asyncio.sleep(1)
                continue
            return bool(done)


async def serve(settings: Settings) -> None:
    """``python -m bot worker``: load the model, then serve its streams until stopped.

    With ``[metrics] listen``, /metrics and /healthz are served from the start: /healthz answers
    503 while the model loads, and whenever Redis does not answer or the event loop lags.
    """
    name = settings.worker.name or host_name()
    metrics = WorkerMetrics(CollectorRegistry(), name=name, model=model_key(settings.local.model))
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(Redis.from_url(settings.redis.url.reveal()))
        ready = asyncio.Event()
        if settings.metrics.enabled:
            checks = {"model": model_check(ready), "redis": redis_check(client)}
            try:
                await stack.enter_async_context(
                    HealthServer.serving(*settings.metrics.address, metrics.registry, checks)
                )
            except OSError as exc:
                raise listen_error(settings.metrics.listen, exc) from None
        renderer, timings = await LocalRenderer.load(settings.local)
        stack.push_async_callback(renderer.close)
        ready.set()
        log.info(
            "worker %s: model ready (%s)", name, json.dumps({k: round(v, 2) for k, v in timings.items()})
        )
        worker = RemoteWorker(
            client,
            renderer,
            name=name,
            model=settings.local.model,
            lease_s=settings.worker.lease_s,
            metrics=metrics,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()


def model_check(ready: asyncio.Event) -> Check:
    """Healthy once the model is loaded and warmed up."""

    async def check() -> str | None:
        return None if ready.is_set() else "loading the model and warming it up"

    return check
