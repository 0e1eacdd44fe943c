"""The operators' HTTP server: Prometheus metrics at ``/metrics`` and a health check at ``/healthz``.

``HealthServer`` knows nothing of Discord or of the store: it serves a registry and runs the
named checks it is given, plus its own event-loop lag probe. The bot passes the checks below
(gateway, store, backends); a render worker (``python -m bot worker``) serves the same pages with
its own (its model, and Redis through ``redis_check``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import discord
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import ConfigError
from bot.renderers.base import Operation, Renderer
from bot.store import Store
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

# A check answers None when healthy, else the reason an operator reads.
Check = Callable[[], Awaitable[str | None]]

# The loop is sampled 4 times a second; the worst lag of the last 5 s counts, so a loop that
# blocks for seconds at a time shows between the blocks, when /healthz can answer at all.
LAG_INTERVAL_S = 0.25
LAG_WINDOW = 20
LAG_LIMIT_S = 1.0
# A check that has not answered by then is reported as not answering; it keeps running (a
# store statement cannot be cancelled half-way) and the next request waits for the same run.
CHECK_TIMEOUT_S = 2.0
# At stop, checks still running get this long to end: a store statement cancelled half-way would
# leave the connection inside its BEGIN. SQLite's busy timeout (5 s) bounds the store's check.
STOP_WAIT_S = 10.0


class LoopLag:
    """How late the event loop wakes a sleeper: a loop blocked by synchronous work shows as lag."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S, window: int = LAG_WINDOW) -> None:
        self._interval_s = interval_s
        self._samples: deque[float] = deque(maxlen=window)

    @property
    def worst(self) -> float:
        """The largest lag, in seconds, of the recent samples (0 before the first)."""
        return max(self._samples, default=0.0)

    async def run(self) -> None:
        """Sample the lag until cancelled."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(self._interval_s)
            self._samples.append(max(0.0, time.monotonic() - started - self._interval_s))


class _Probe:
    """One check with at most one run in flight, so a slow check is not started again per request."""

    def __init__(self, name: str, check: Check, tasks: TaskGroup) -> None:
        self._name = name
        self._check = check
        self._tasks = tasks
        self._run: asyncio.Task[str | None] | None = None

    async def reason(self, timeout_s: float) -> str | None:
        """Run the check (or join the run in flight) and return why it fails, or None."""
        if self._run is None or self._run.done():
            self._run = self._tasks.spawn(self._guarded(), name=f"health-{self._name}")
        done, _ = await asyncio.wait({self._run}, timeout=timeout_s)
        if not done:
            return f"{self._name}: no answer within {timeout_s:g}s"
        reason = self._run.result()
        return None if reason is None else f"{self._name}: {reason}"

    async def _guarded(self) -> str | None:
        try:
            return await self._check()
        except Exception as exc:
            log.exception("health check %s failed", self._name)
            return f"the check failed ({type(exc).__name__})"


class HealthServer:
    """Serve ``registry`` at /metrics and the checks at /healthz on ``host``:``port`` (0: any free port)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        checks: Mapping[str, Check],
        *,
        lag_limit_s: float = LAG_LIMIT_S,
        check_timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._tasks = TaskGroup("health")
        self._sampler = TaskGroup("loop-lag")
        self._lag = LoopLag()
        self._lag_limit_s = lag_limit_s
        self._check_timeout_s = check_timeout_s
        self._probes = [_Probe(name, check, self._tasks) for name, check in checks.items()]
        self._runner: web.AppRunner | None = None
        Gauge(
            "easel_event_loop_lag_seconds",
            f"The worst event-loop lag of the last {LAG_INTERVAL_S * LAG_WINDOW:g} s.",
            registry=registry,
        ).set_function(lambda: self._lag.worst)

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, when asked for 0)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the health server is not running")
        return int(self._runner.addresses[0][1])

    @classmethod
    @asynccontextmanager
    async def serving(
        cls, host: str, port: int, registry: CollectorRegistry, checks: Mapping[str, Check]
    ) -> AsyncIterator[HealthServer]:
        """Run a server for the block."""
        server = cls(host, port, registry, checks)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    async def start(self) -> None:
        """Start the lag probe and listen."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except BaseException:
            await self.stop()
            raise
        self._sampler.spawn(self._lag.run(), name="sample")
        log.info("metrics at http://%s:%d/metrics, health at /healthz", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening and sampling, then let the checks still running end."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._sampler.cancel_all()
        await self._tasks.wait(STOP_WAIT_S)
        await self._tasks.cancel_all()

    async def _metrics(self, _request: web.Request) -> web.Response:
        # On the loop, not in a thread: the queue-depth gauge reads the fair queue, which only
        # the loop may touch; a scrape of a few dozen series takes well under a millisecond.
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        reasons = [
            r
            for r in await asyncio.gather(*(p.reason(self._check_timeout_s) for p in self._probes))
            if r is not None
        ]
        if (lag := self._lag.worst) > self._lag_limit_s:
            reasons.insert(
                0,
                f"event loop: lagged {lag:.1f}s (limit {self._lag_limit_s:g}s): something blocks it",
            )
        if reasons:
            return web.Response(status=503, text="\n".join(reasons) + "\n")
        return web.Response(text="ok\n")


def listen_error(listen: str, exc: OSError) -> ConfigError:
    """The config error for a ``[metrics] listen`` address Easel cannot listen on."""
    return ConfigError(
        f"metrics.listen = {listen!r}: cannot listen there ({exc.strerror}); "
        "choose a free port, or an address of this machine"
    )


def gateway_check(bot: discord.AutoShardedClient) -> Check:
    """Healthy while every shard's gateway socket is open and the bot has been ready."""

    async def check() -> str | None:
        if bot.is_closed():
            return "the Discord client is closed"
        if not bot.is_ready() or not bot.shards:
            return "not connected to the Discord gateway yet"
        # A resumed or re-identified shard reopens its socket; a shard is down between the two.
        down = sorted(shard_id for shard_id, shard in bot.shards.items() if shard.is_closed())
        if down:
            return f"disconnected from the Discord gateway (shard {', '.join(map(str, down))}); reconnecting"
        return None

    return check


def store_check(store: Store) -> Check:
    """Healthy while the store commits a write (not locked by another process, disk not full)."""

    async def check() -> str | None:
        try:
            await store.check_writable()
        except (sqlite3.Error, OSError) as exc:
            return f"the database refused a write: {exc}"
        return None

    return check


def backends_check(renderers: Mapping[str, Renderer], offline: Mapping[str, str]) -> Check:
    """Healthy while at least one backend can generate images."""

    async def check() -> str | None:
        if any(Operation.GENERATE in r.capabilities.operations for r in renderers.values()):
            return None
        why = "; ".join(f"{name}: {reason}" for name, reason in offline.items())
        return "no image backend is ready" + (
            f" ({why})" if why else ": set [openai] api_key or [local] model"
        )

    return check


def redis_check(client: Redis) -> Check:
    """Healthy while Redis answers a PING (reachable, and this client's user may log in)."""

    async def check() -> str | None:
        try:
            await client.ping()
        except RedisError as exc:
            # redis-py names the host and port, never the URL's password.
            return f"Redis does not answer: {exc}"
        return None

    return check
