"""Operators' metrics (/metrics) and health check (/healthz), read over HTTP from the running bot."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.__main__ import main
from bot.config import parse_settings
from bot.errors import ConfigError
from tests.harness import ALICE, Harness, running, toml_text

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A port nothing listens on now (the system picks it), for the bot's [metrics] listen."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def easel_with_metrics(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Harness, str]]:
    """The bot with [metrics] on; yields it and the base URL of its metrics server."""
    listen = f"127.0.0.1:{free_port()}"
    async with running(tmp_path, metrics={"listen": listen}, **overrides) as easel:
        assert easel.bot is not None
        # READY comes a little after the commands are synced, once discord.py has its guilds.
        await asyncio.wait_for(easel.bot.wait_until_ready(), 30)
        yield easel, f"http://{listen}"


async def get(url: str) -> tuple[int, str]:
    """GET ``url`` as Prometheus or a load balancer would; return the status and the body."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def scrape(base: str) -> Samples:
    """Every sample of /metrics, keyed by (name, labels)."""
    status, text = await get(f"{base}/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``, or None when there is none."""
    return samples.get((name, frozenset(labels.items())))


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Wait until ``check()`` holds, asking again every 50 ms."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{check.__qualname__} still false after {timeout}s")
        await asyncio.sleep(0.05)


async def health(base: str) -> tuple[int, str]:
    """GET /healthz."""
    return await get(f"{base}/healthz")


async def healthy(base: str) -> bool:
    return (await health(base))[0] == 200


async def unhealthy(base: str) -> bool:
    return (await health(base))[0] == 503


# -- metrics ------------------------------------------------------------------------------------


async def test_a_posted_job_is_counted_with_its_wait_render_batch_and_spend(tmp_path: Path) -> None:
    async with easel_with_metrics(tmp_path) as (easel, base):
        before = await scrape(base)
        assert value(before, "easel_jobs_total", backend="openai", outcome="posted") == 0
        assert value(before, "easel_jobs_total", backend="openai", outcome="failed") == 0

        await easel.result_of(await easel.imagine("a red fox"))

        async def posted() -> bool:
            return value(await scrape(base), "easel_jobs_total", backend="openai", outcome="posted") == 1

        await until(posted)
        samples = await scrape(base)
        assert value(samples, "easel_jobs_total", backend="openai", outcome="failed") == 0
        assert value(samples, "easel_job_wait_seconds_count", backend="openai") == 1
        assert value(samples, "easel_job_render_seconds_count", backend="openai") == 1
        assert (value(samples, "easel_job_render_seconds_sum", backend="openai") or 0) > 0
        assert value(samples, "easel_batch_images_count", backend="openai") == 1
        assert value(samples, "easel_batch_images_sum", backend="openai") == 1
        assert value(samples, "easel_queue_depth", backend="openai") == 0
        with contextlib.closing(sqlite3.connect(easel.settings.storage.path)) as db:
            [(usd,)] = db.execute("SELECT usd FROM charges WHERE state = 'settled'").fetchall()
        assert usd > 0
        assert value(samples, "easel_spend_usd_total", backend="openai") == pytest.approx(usd)


async def test_a_failed_and_a_cancelled_job_are_counted_as_such(tmp_path: Path) -> None:
    async with easel_with_metrics(tmp_path, openai={"concurrency": 1}) as (easel, base):
        easel.openai.fail_next(400)
        failed = await easel.imagine("a fox that fails")
        await easel.discord.wait_for(
            lambda: failed.original is not None and "failed" in failed.original.content
        )

        easel.openai.delay = 2.0
        first = await easel.imagine_in_turn("a slow fox", user=ALICE)
        second = await easel.imagine_in_turn("a fox that waits", user=ALICE)
        await easel.discord.wait_for(
            lambda: second.original is not None and "position" in second.original.content
        )
        # The first job is rendering (its request reached OpenAI, after the failed one's).
        await easel.discord.wait_for(lambda: len(easel.openai.requests_to("/images/generations")) == 2)
        assert value(await scrape(base), "easel_queue_depth", backend="openai") == 1
        click = await easel.discord.click(second.original, second.original.custom_ids()[0], user_id=ALICE)
        await easel.discord.wait_for(lambda: click.callback is not None)
        await easel.result_of(first, timeout=30)

        async def ended() -> bool:
            samples = await scrape(base)
            return value(samples, "easel_jobs_total", backend="openai", outcome="posted") == 1

        await until(ended)
        samples = await scrape(base)
        assert value(samples, "easel_jobs_total", backend="openai", outcome="failed") == 1
        assert value(samples, "easel_jobs_total", backend="openai", outcome="cancelled") == 1
        # The failed job waited and was claimed; only the posted one rendered.
        assert value(samples, "easel_job_wait_seconds_count", backend="openai") == 2
        assert value(samples, "easel_job_render_seconds_count", backend="openai") == 1
        assert value(samples, "easel_queue_depth", backend="openai") == 0


async def test_an_app_started_again_in_the_same_process_counts_afresh(tmp_path: Path) -> None:
    # Each app has its own registry: a second one in the process (a restart here, a test, a worker
    # beside the bot) neither collides with the first's metric names nor inherits its counts.
    async with easel_with_metrics(tmp_path) as (easel, base):
        await easel.result_of(await easel.imagine("a red fox"))

        async def posted() -> bool:
            return value(await scrape(base), "easel_jobs_total", backend="openai", outcome="posted") == 1

        await until(posted)
        await easel.restart_bot()
        samples = await scrape(base)
        assert value(samples, "easel_jobs_total", backend="openai", outcome="posted") == 0
        assert value(samples, "easel_job_wait_seconds_count", backend="openai") is None


# -- health ---------------------------------------------------------------------------------------


async def test_healthz_is_ok_while_the_bot_runs(tmp_path: Path) -> None:
    async with easel_with_metrics(tmp_path) as (_easel, base):
        assert await health(base) == (200, "ok\n")


@contextlib.asynccontextmanager
async def write_lock_held(path: Path) -> AsyncIterator[None]:
    """Hold the database's write lock from another connection, as a backup tool or sqlite3 shell can."""
    # In a thread: the bot shares this event loop, and may need it to finish a transaction first.
    other = await asyncio.to_thread(
        sqlite3.connect, path, isolation_level=None, timeout=10, check_same_thread=False
    )
    try:
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_healthz_fails_while_the_store_cannot_write(tmp_path: Path) -> None:
    async with easel_with_metrics(tmp_path) as (easel, base):
        assert await healthy(base)
        answers: list[tuple[int, str]] = []
        async with write_lock_held(easel.settings.storage.path):
            # The probe waits for the lock; SQLite gives up after its busy timeout (5 s) and the
            # reason becomes SQLite's own.
            async def refused() -> bool:
                answers.append(await health(base))
                return "locked" in answers[-1][1]

            await until(refused)
        assert answers[0] == (503, "store: no answer within 2s\n")
        assert answers[-1] == (503, "store: the database refused a write: database is locked\n")
        await until(lambda: healthy(base))


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit (Linux)")
async def test_healthz_fails_while_the_disk_refuses_writes(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    async with running(tmp_path, start=False, metrics={"listen": listen}) as easel:
        base = f"http://{listen}"
        process = await easel.start_bot_process()
        await until(lambda: healthy(base), timeout=30)
        # A file-size limit of one byte on the bot's process: every write past the first byte of
        # any file fails as on a full disk (CPython ignores SIGXFSZ, so write() returns EFBIG).
        unlimited = resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        try:
            await until(lambda: unhealthy(base))
            answer = await health(base)
        finally:
            resource.prlimit(process.pid, resource.RLIMIT_FSIZE, unlimited)
        assert answer == (503, "store: the database refused a write: disk I/O error\n")
        await until(lambda: healthy(base))


async def test_healthz_fails_while_the_gateway_is_disconnected(tmp_path: Path) -> None:
    async with easel_with_metrics(tmp_path) as (easel, base):
        assert await healthy(base)
        easel.discord.pause_gateway()
        try:
            await easel.discord.disconnect_bot()
            await until(lambda: unhealthy(base))
            assert await health(base) == (
                503,
                "gateway: disconnected from the Discord gateway (shard 0); reconnecting\n",
            )
        finally:
            easel.discord.resume_gateway()
        await easel.discord.wait_connected()
        await until(lambda: healthy(base))


async def test_healthz_fails_when_no_backend_can_generate(tmp_path: Path) -> None:
    async with easel_with_metrics(tmp_path, openai={"api_key": ""}) as (_easel, base):
        status, text = await health(base)
        assert status == 503
        assert text == "backends: no image backend is ready: set [openai] api_key or [local] model\n"


def block_the_loop(seconds: float) -> None:
    """Do synchronous work on the event loop, as a blocking call by mistake would."""
    time.sleep(seconds)


async def test_healthz_fails_after_the_event_loop_was_blocked(tmp_path: Path) -> None:
    async with easel_with_metrics(tmp_path) as (_easel, base):
        assert await healthy(base)
        block_the_loop(1.5)
        await asyncio.sleep(0.3)  # one lag sample (every 0.25 s) after the block
        status, text = await health(base)
        assert status == 503
        assert text.startswith("event loop: lagged 1.")
        assert (value(await scrape(base), "easel_event_loop_lag_seconds") or 0) > 1


# -- config ----------------------------------------------------------------------------------------


def listen(value: str) -> str:
    return parse_settings(
        {"discord": {"token": "t"}, "metrics": {"listen": value}}, {}, base_dir=Path(".")
    ).metrics.listen


def test_metrics_are_off_unless_listen_is_set() -> None:
    settings = parse_settings({"discord": {"token": "t"}}, {}, base_dir=Path("."))
    assert not settings.metrics.enabled


@pytest.mark.parametrize(
    ("given", "address"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("[::1]:9108", ("::1", 9108)),
        ("metrics.lan:80", ("metrics.lan", 80)),
    ],
)
def test_a_listen_address_is_host_and_port(given: str, address: tuple[str, int]) -> None:
    settings = parse_settings(
        {"discord": {"token": "t"}, "metrics": {"listen": given}}, {}, base_dir=Path(".")
    )
    assert settings.metrics.address == address


@pytest.mark.parametrize("given", ["9108", "127.0.0.1", "127.0.0.1:99999", "::1:9108", ":9108", "host:port"])
def test_a_bad_listen_address_names_the_key_and_an_example(given: str) -> None:
    with pytest.raises(ConfigError, match=r'metrics\.listen = .*e\.g\. "127\.0\.0\.1:9108"'):
        listen(given)


def test_a_listen_address_in_use_stops_the_bot_with_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(
            toml_text(
                {
                    "discord": {"token": "t", "api_base": "http://127.0.0.1:9/api/v10"},
                    "storage": {"path": str(tmp_path / "easel.sqlite3")},
                    "metrics": {"listen": f"127.0.0.1:{port}"},
                }
            ),
            encoding="utf-8",
        )
        assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"easel: config error: metrics.listen = '127.0.0.1:{port}': cannot listen there" in err
