"""Remote render workers for tests: real ``python -m bot worker`` processes on a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.remote import wire
from tests.conftest import RedisServer
from tests.harness import REPO, toml_text


@dataclass
class WorkerProcess:
    """One worker process and where it logs."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    def signal(self, signum: int) -> None:
        """Send the worker a signal (SIGKILL, SIGSTOP, SIGCONT...)."""
        self.process.send_signal(signum)


@dataclass
class Workers:
    """Starts workers against ``redis`` and watches the server's state for the test."""

    redis: RedisServer
    directory: Path
    client: Redis
    started: list[WorkerProcess] = field(default_factory=list)

    async def start(
        self,
        name: str,
        local: dict[str, Any],
        *,
        lease_s: float = 1.5,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> WorkerProcess:
        """Start a worker and wait until it has announced itself live; ``sections`` add or replace config sections."""
        config = {
            "redis": {"url": self.redis.url},
            "local": local,
            "worker": {"name": name, "lease_s": lease_s},
            **(sections or {}),
        }
        path = self.directory / f"worker-{name}.toml"
        path.write_text(toml_text(config), encoding="utf-8")
        log = self.directory / f"worker-{name}.log"
        since = await self.client.hget(wire.announcement(name), "started")  # type: ignore[misc]
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "worker",
                "--config",
                str(path),
                cwd=REPO,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
                stderr=out,
            )
        worker = WorkerProcess(name, process, log)
        self.started.append(worker)
        await self.until(
            lambda: self.announced(name, since), timeout=90, why=f"worker {name} live", worker=worker
        )
        return worker

    async def announced(self, name: str, since: bytes | None) -> bool:
        """Whether a worker started after ``since`` (a killed one's heartbeat outlives it) is live."""
        started = await self.client.hget(wire.announcement(name), "started")  # type: ignore[misc]
        return started != since and await self.live(name)

    async def live(self, name: str) -> bool:
        """Whether the worker's heartbeat key is present."""
        return bool(await self.client.exists(wire.heartbeat(name)))

    async def holder(self, job_id: int) -> str | None:
        """The worker whose lease covers the batch holding ``job_id`` now, if any."""
        async for raw in self.client.scan_iter(match=f"{wire.PREFIX}:lease:*"):
            key = wire.text(raw)
            stream, _, entry_id = key.removeprefix(f"{wire.PREFIX}:lease:").rpartition(":")
            owner = await self.client.get(key)
            for _id, fields in await self.client.xrange(stream, entry_id, entry_id):
                _batch, requests = wire.decode_batch(fields)
                if owner is not None and job_id in [r.job_id for r in requests]:
                    return wire.text(owner)
        return None

    async def pending(self) -> int:
        """Entries some consumer group has read but not acknowledged, on every Easel stream."""
        total = 0
        async for key in self.client.scan_iter(match=f"{wire.PREFIX}:*", _type="stream"):
            for group in await self.client.xinfo_groups(key):
                total += int(group["pending"])
        return total

    async def idle(self) -> bool:
        """Whether every entry every group read has been acknowledged."""
        return await self.pending() == 0

    async def held_by(self, job_id: int, name: str) -> bool:
        """Whether worker ``name`` holds the lease on ``job_id``'s batch."""
        return await self.holder(job_id) == name

    async def until(
        self,
        check: Callable[[], Any],
        *,
        timeout: float = 30,
        why: str = "",
        worker: WorkerProcess | None = None,
    ) -> None:
        """Wait until ``check()`` (sync or async) is true, polling the servers' state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                result = check()
                if asyncio.iscoroutine(result):
                    result = await result
            except RedisConnectionError:
                result = False  # the server was restarted under the client: its next try reconnects
            if result:
                return
            if worker is not None and worker.process.returncode is not None:
                raise AssertionError(f"worker {worker.name} exited:\n{worker.log.read_text()}")
            if loop.time() > deadline:
                logs = "\n".join(f"--- {w.name}\n{w.log.read_text()[-3000:]}" for w in self.started)
                raise AssertionError(f"timed out waiting for {why}\n{logs}")
            await asyncio.sleep(0.05)

    async def stop_all(self) -> None:
        """Kill every worker still running (SIGCONT first, so a stopped one can die)."""
        for worker in self.started:
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.signal(signal.SIGCONT)
                    worker.process.kill()
                await worker.process.wait()


@contextlib.asynccontextmanager
async def workers(redis: RedisServer, directory: Path) -> AsyncIterator[Workers]:
    """A pool of worker processes for one test, killed at its end."""
    client = Redis.from_url(redis.url)
    pool = Workers(redis, directory, client)
    try:
        yield pool
    finally:
        await pool.stop_all()
        await client.aclose()
