"""Remote transport: images/s with 1, 2 and 4 workers, and what going through Redis adds to a job.

A redis-server on a free loopback port; each worker is its own process (``python -m
bench.transport worker``) running the real ``RemoteWorker`` with a renderer that sleeps a fixed
time per batch, so the figures measure the transport and the hand-off between bot and workers,
not the CPU. The bot's side, the real ``RemoteRenderer`` and its live slots, runs in the bench's
process the way the bot's Worker drives it (take a slot, render a batch, give the slot back), so
this process's CPU is the bot side's alone; the workers' and redis-server's are read from /proc.
The fair queue in front of it is measured by the ``depth`` and ``e2e`` parts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.report import Row, rows
from bot.errors import RenderFailed
from bot.metrics import WorkerMetrics
from bot.remote.renderer import RemoteRenderer
from bot.remote.worker import RemoteWorker
from bot.renderers.base import (
    BatchRenderer,
    Capabilities,
    Operation,
    ProgressCallback,
    RenderRequest,
    RenderResult,
    Slots,
    render_one,
)
from bot.store import Store

ROOT = Path(__file__).resolve().parent.parent
MODEL = "sleep"
SIZE = 64
WORKER_COUNTS = (1, 2, 4)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
# Goals from the issue: the ratio to one worker, and what Redis may add to each job.
GOAL_RATIO = {2: 1.9, 4: 3.6}
GOAL_OVERHEAD_MS = 5.0


def png() -> bytes:
    """One small image, the same every time: the bot side checks each like a real result."""
    out = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (40, 90, 160)).save(out, "PNG")
    return out.getvalue()


class SleepRenderer:
    """A batch renderer whose every call takes ``sleep_s``, however many images: a GPU that is never the bottleneck."""

    def __init__(self, sleep_s: float, max_batch: int) -> None:
        self._sleep_s = sleep_s
        self._image = png()
        self._caps = Capabilities(sizes=((SIZE, SIZE),), max_batch=max_batch)

    @property
    def name(self) -> str:
        """The backend it stands in for."""
        return "local"

    @property
    def capabilities(self) -> Capabilities:
        """One size, batches of ``max_batch``."""
        return self._caps

    def health(self) -> tuple[tuple[str, str], ...]:
        """What a worker announces as its device."""
        return (("Device", "sleep"),)

    def cancel(self, job_id: int) -> None:
        """Nothing to stop: a sleep ends on its own."""

    async def render(self, request: RenderRequest, progress: ProgressCallback | None = None) -> RenderResult:
        """One request as a batch of one."""
        return await render_one(self, request, progress)

    async def render_batch(
        self, requests: Sequence[RenderRequest], progress: Mapping[int, ProgressCallback]
    ) -> list[RenderResult | RenderFailed]:
        """Sleep once for the whole batch, then return one image per request."""
        await asyncio.sleep(self._sleep_s)
        return [RenderResult((self._image,) * r.count, made_by=MODEL) for r in requests]


@dataclass
class Phase:
    """One measured run: images through the transport, its wall time and each side's CPU."""

    workers: int
    images: int = 0
    wanted: int = 0
    wall_s: float = 0.0
    bot_cpu_s: float = 0.0
    workers_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failure: str = ""

    @property
    def per_s(self) -> float:
        """Images per second, first batch sent to last result back."""
        return self.images / self.wall_s if self.wall_s else 0.0

    def per_image_ms(self, cpu_s: float) -> float:
        """CPU milliseconds per image that came back."""
        return cpu_s * 1000 / self.images if self.images else 0.0


@dataclass
class Transport:
    """Everything the part measured; ``failure`` says what stopped it early."""

    sleep_s: float
    batch: int
    jobs: int
    phases: list[Phase] = field(default_factory=list)
    in_process: Phase | None = None
    remote: Phase | None = None
    failure: str = ""


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system, every thread), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


class Servers:
    """The redis-server and the worker processes of one run; ``stop`` ends them all."""

    def __init__(self, directory: Path, sleep_s: float, batch: int) -> None:
        self.directory = directory
        self.sleep_s = sleep_s
        self.batch = batch
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis: asyncio.subprocess.Process | None = None
        self.workers: list[asyncio.subprocess.Process] = []

    async def start_redis(self) -> None:
        """Start redis-server with AOF on, as the tests and the compose example do, and wait until it answers."""
        self.redis = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--dir",
            str(self.directory),
            "--save",
            "",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.ping()
                    return
                except RedisError:
                    if time.monotonic() > deadline or self.redis.returncode is not None:
                        raise RuntimeError("redis-server did not start") from None
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def add_worker(self) -> None:
        """Start one more sleeping worker process."""
        name = f"w{len(self.workers) + 1}"
        with (self.directory / f"{name}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.transport",
                "worker",
                self.url,
                name,
                str(self.sleep_s),
                str(self.batch),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.workers.append(process)

    def cpu(self) -> tuple[float, float]:
        """CPU so far of the workers together, and of redis-server."""
        redis = cpu_s(self.redis.pid) if self.redis is not None else 0.0
        return sum(cpu_s(w.pid) for w in self.workers), redis

    def logs(self) -> str:
        """The end of the first worker log that says anything."""
        for log in sorted(self.directory.glob("w*.log")):
            if text := log.read_text(errors="replace").strip():
                return text[-400:]
        return "no worker logged anything"

    async def stop(self) -> None:
        """Stop the workers (each ends within a blocking read), then redis-server."""
        for worker in self.workers:
            if worker.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
                await worker.wait()
        if self.redis is not None and self.redis.returncode is None:
            self.redis.terminate()
            try:
                await asyncio.wait_for(self.redis.wait(), 5)
            except TimeoutError:
                self.redis.kill()
                await self.redis.wait()


async def until_live(renderer: RemoteRenderer, count: int, servers: Servers) -> None:
    """Wait until the bot side sees ``count`` live workers (its slots are sized from them)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while (
        sum(1 for label, row in renderer.health() if label.startswith("Worker ") and "gone" not in row)
        < count
    ):
        if any(w.returncode is not None for w in servers.workers):
            raise RuntimeError(f"a worker exited: {servers.logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} worker(s) not live within {START_TIMEOUT_S:.0f} s: {servers.logs()}")
        await asyncio.sleep(0.05)


def requests_for(first_job: int, count: int) -> list[RenderRequest]:
    """``count`` one-image jobs with ids from ``first_job``."""
    return [
        RenderRequest(job_id=first_job + i, operation=Operation.GENERATE, prompt="p", width=SIZE, height=SIZE)
        for i in range(count)
    ]


async def drive(
    renderer: BatchRenderer,
    slots: Slots | None,
    *,
    batches: int,
    batch: int,
    first_job: int,
    phase: Phase,
    limit_s: float,
    servers: Servers,
) -> None:
    """Send ``batches`` batches as the bot's Worker does, each once a slot is free (``None``: one at a time)."""
    phase.wanted = batches * batch
    cpu_bot, (cpu_workers, cpu_redis) = time.process_time(), servers.cpu()
    started = time.perf_counter()

    async def one(index: int) -> None:
        sent = time.perf_counter()
        outcomes = await renderer.render_batch(requests_for(first_job + index * batch, batch), {})
        phase.latencies_ms.append((time.perf_counter() - sent) * 1000)
        phase.images += sum(len(o.images) for o in outcomes if isinstance(o, RenderResult))

    async def slotted(index: int) -> None:
        assert slots is not None
        await slots.acquire()
        try:
            await one(index)
        finally:
            slots.release()

    async def in_turn() -> None:
        for index in range(batches):
            await one(index)

    tasks = (
        [asyncio.ensure_future(in_turn())]
        if slots is None
        else [asyncio.ensure_future(slotted(i)) for i in range(batches)]
    )
    done, pending = await asyncio.wait(tasks, timeout=limit_s)
    phase.wall_s = time.perf_counter() - started
    workers_now, redis_now = servers.cpu()
    phase.bot_cpu_s = time.process_time() - cpu_bot
    phase.workers_cpu_s = workers_now - cpu_workers
    phase.redis_cpu_s = redis_now - cpu_redis
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failed = [exc for t in done if (exc := t.exception()) is not None]
    if pending:
        phase.failure = f"{phase.images} of {phase.wanted} images back within {limit_s:.0f} s"
    elif failed:
        phase.failure = f"{len(failed)} batch(es) failed: {failed[0]!r}"


async def transport(*, sleep_s: float, batch: int, seconds: float, jobs: int, limit_s: float) -> Transport:
    """Run the part; a failure or a slow run is reported in the result, never raised."""
    result = Transport(sleep_s=sleep_s, batch=batch, jobs=jobs)
    if shutil.which("redis-server") is None:
        result.failure = "redis-server is not installed (apt-get install redis-server)"
        return result
    with tempfile.TemporaryDirectory(prefix="easel-bench-transport-") as tmp:
        servers = Servers(Path(tmp), sleep_s, batch)
        try:
            await measure(result, servers, seconds, limit_s)
        except Exception as exc:  # a bench reports what stopped it beside what it measured
            result.failure = f"{type(exc).__name__}: {exc}"
        finally:
            await servers.stop()
    return result


async def measure(result: Transport, servers: Servers, seconds: float, limit_s: float) -> None:
    """One job at a time in-process and through one worker, then batches through 1, 2 and 4 workers."""
    await servers.start_redis()
    baseline = Phase(workers=0)
    result.in_process = baseline
    sleeping = SleepRenderer(result.sleep_s, result.batch)
    await drive(
        sleeping,
        None,
        batches=result.jobs,
        batch=1,
        first_job=1,
        phase=baseline,
        limit_s=limit_s,
        servers=servers,
    )
    # The bot's side as open_app builds it: a client, the store it reads job states from, its loops.
    async with Redis.from_url(servers.url) as client, Store.open(servers.directory / "bot.sqlite3") as store:
        renderer = RemoteRenderer(client, store, max_pixels=SIZE * SIZE * 16)
        await renderer.start()
        try:
            next_job = 1_000_000
            await servers.add_worker()
            await until_live(renderer, 1, servers)
            remote = Phase(workers=1)
            result.remote = remote
            await drive(
                renderer,
                None,
                batches=result.jobs,
                batch=1,
                first_job=next_job,
                phase=remote,
                limit_s=limit_s,
                servers=servers,
            )
            next_job += result.jobs
            for count in WORKER_COUNTS:
                while len(servers.workers) < count:
                    await servers.add_worker()
                await until_live(renderer, count, servers)
                batches = max(1, round(seconds / result.sleep_s)) * count
                phase = Phase(workers=count)
                result.phases.append(phase)
                await drive(
                    renderer,
                    renderer.slots,
                    batches=batches,
                    batch=result.batch,
                    first_job=next_job,
                    phase=phase,
                    limit_s=limit_s,
                    servers=servers,
                )
                next_job += batches * result.batch
        finally:
            await renderer.close()


async def serve_sleeping(url: str, name: str, sleep_s: float, batch: int) -> None:
    """A worker process: the real RemoteWorker with the sleeping renderer, until SIGTERM."""
    async with Redis.from_url(url) as client:
        worker = RemoteWorker(
            client,
            SleepRenderer(sleep_s, batch),
            name=name,
            model=MODEL,
            lease_s=30,
            metrics=WorkerMetrics(CollectorRegistry(), name=name, model=MODEL),
        )
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()


def median(values: Sequence[float]) -> float:
    """The median, 0 for no values."""
    return statistics.median(values) if values else 0.0


def transport_rows(result: Transport) -> list[Row]:
    """Tabulate images/s per worker count with its ratio to one, and the per-job overhead."""
    out: list[tuple[str, str]] = []
    ideal = result.batch / result.sleep_s
    one = result.phases[0].per_s if result.phases else 0.0
    for phase in result.phases:
        cell = f"{phase.per_s:.1f} (ideal {ideal * phase.workers:.0f})"
        if phase.workers > 1 and one:
            ratio = phase.per_s / one
            goal = GOAL_RATIO.get(phase.workers, 0.0)
            cell += f" · {ratio:.2f}× one worker{' missed' if ratio < goal else ''}"
        if phase.failure:
            cell += f" · incomplete: {phase.failure} missed"
        label = f"{phase.workers} worker{'s' if phase.workers > 1 else ''}: images/s"
        if phase.workers in GOAL_RATIO:
            label += f" (goal ≥ {GOAL_RATIO[phase.workers]}× one)"
        out.append((label, cell))
    if result.phases:
        out.append(
            (
                "CPU ms per image at 1 · 2 · 4 workers: bot side (this process)",
                " · ".join(f"{p.per_image_ms(p.bot_cpu_s):.2f}" for p in result.phases),
            )
        )
        out.append(
            (
                "CPU ms per image at 1 · 2 · 4 workers: workers (all) / redis-server",
                " · ".join(
                    f"{p.per_image_ms(p.workers_cpu_s):.2f} / {p.per_image_ms(p.redis_cpu_s):.2f}"
                    for p in result.phases
                ),
            )
        )
    base, remote = result.in_process, result.remote
    if base is not None and base.latencies_ms:
        out.append(
            (
                f"one job at a time, in-process renderer: median ms per job ({len(base.latencies_ms)} jobs)",
                f"{median(base.latencies_ms):.2f}"
                + (f" · incomplete: {base.failure}" if base.failure else ""),
            )
        )
    if remote is not None and remote.latencies_ms:
        out.append(
            (
                f"one job at a time through Redis, one worker: median ms per job ({len(remote.latencies_ms)} jobs)",
                f"{median(remote.latencies_ms):.2f}"
                + (f" · incomplete: {remote.failure}" if remote.failure else ""),
            )
        )
        if base is not None and base.latencies_ms:
            overhead = median(remote.latencies_ms) - median(base.latencies_ms)
            out.append(
                (
                    f"transport overhead per job (goal < {GOAL_OVERHEAD_MS:g} ms)",
                    f"{overhead:.2f} ms{' missed' if overhead >= GOAL_OVERHEAD_MS else ''}",
                )
            )
        out.append(
            (
                "of which CPU per job: bot side / worker / redis-server",
                f"{remote.per_image_ms(remote.bot_cpu_s):.2f} / {remote.per_image_ms(remote.workers_cpu_s):.2f}"
                f" / {remote.per_image_ms(remote.redis_cpu_s):.2f} ms",
            )
        )
    if result.failure:
        out.append(("stopped early", f"{result.failure} missed"))
    name = (
        f"remote transport, one machine, workers that sleep {result.sleep_s * 1000:.0f} ms per batch "
        f"of {result.batch} one-image jobs, bot side in the bench's process"
    )
    return rows(name, out)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.transport worker URL NAME SLEEP_S BATCH``: one sleeping worker (the bench starts these)."""
    parser = argparse.ArgumentParser(prog="python -m bench.transport")
    parser.add_argument("command", choices=("worker",))
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("sleep_s", type=float)
    parser.add_argument("batch", type=int)
    args = parser.parse_args(argv)
    asyncio.run(serve_sleeping(args.url, args.name, args.sleep_s, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
