"""Shared fixtures: real SQLite stores in temporary directories, a real redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.config import QueueSettings
from bot.files import ImageFiles
from bot.lifecycle import LocalLifecycle
from bot.store import Store

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real store on a fresh SQLite file."""
    async with Store.open(tmp_path / "easel.sqlite3") as opened:
        yield opened


@pytest.fixture
def files(tmp_path: Path) -> ImageFiles:
    """Image files under the test's temporary directory."""
    return ImageFiles(tmp_path / "images")


@pytest.fixture
def queue(store: Store, files: ImageFiles) -> LocalLifecycle:
    """The embedded fair queue with generous limits."""
    return LocalLifecycle(store, files, QueueSettings(max_per_member=100, max_per_guild=100, max_total=1000))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline in diffusers format, built once per test session.

    The local backend loads it through the same path as an operator's model directory.
    """
    from tests.tinymodels import build_text2image

    return build_text2image(tmp_path_factory.mktemp("tiny-model"))


class RedisServer:
    """A real ``redis-server`` on a free loopback port, appending every write to its AOF.

    ``kill`` stops it at once (SIGKILL, as a crash would); ``start`` brings it back on the same
    port, from the same AOF.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL Easel's bot and workers connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--save",
                "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server did not start: {(self.directory / 'redis.log').read_text()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """Kill the server outright (SIGKILL): only what reached its AOF survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def flush(self) -> None:
        """Empty every database, so each test starts with a bare server."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            assert conn.recv(64).startswith(b"+OK")


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; skipped where it is not installed, except in CI (scripts/test installs it)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail(
                "redis-server is not installed: scripts/test installs it (apt-get install redis-server)"
            )
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> RedisServer:
    """The session's redis-server, empty, running again if a test killed it."""
    if redis_session.process is None:
        redis_session.start()
    redis_session.flush()
    return redis_session
