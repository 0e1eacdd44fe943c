"""Operating remote workers: their /metrics and /healthz, the bot's transport counters, the Redis ACL, TLS URLs.

Real ``python -m bot worker`` processes against the real redis-server, read over HTTP as
Prometheus and a load balancer would.
"""

from __future__ import annotations

import re
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis, SSLConnection
from redis.exceptions import NoPermissionError

from bot.config import parse_settings
from bot.remote import wire
from tests.conftest import RedisServer
from tests.harness import ALICE, BOB, GUILD_A, GUILD_B, REPO, running
from tests.remoteworkers import Workers, workers
from tests.test_metrics import Samples, easel_with_metrics, free_port, get, scrape, value
from tests.test_remote import job_id, local, posts, shown, took

# About 4 s a render on this machine: past a 1.5 s lease, renewed on the way, caught mid-way.
SLOW = {"steps": 100, "resolution": 512}


def with_metrics() -> tuple[dict[str, dict[str, Any]], str]:
    """A worker's [metrics] section on a free port, and the base URL it serves."""
    listen = f"127.0.0.1:{free_port()}"
    return {"metrics": {"listen": listen}}, f"http://{listen}"


async def scraped(pool: Workers, base: str, name: str, wanted: float, **labels: str) -> Samples:
    """Scrape ``base`` until sample ``name`` with ``labels`` is ``wanted``; return that scrape."""
    samples: Samples = {}

    async def reached() -> bool:
        nonlocal samples
        samples = await scrape(base)
        return value(samples, name, **labels) == wanted

    await pool.until(reached, why=f"{name}{labels} == {wanted} at {base}")
    return samples


def health(base: str, status: int, starts: str = "") -> Callable[[], Awaitable[bool]]:
    """A check for ``Workers.until``: /healthz answers ``status`` with a body starting ``starts``."""

    async def check() -> bool:
        got, body = await get(f"{base}/healthz")
        return got == status and body.startswith(starts)

    return check


async def test_a_worker_serves_metrics_of_its_batches_and_a_health_check_that_follows_redis(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    sections, worker = with_metrics()
    async with workers(redis_server, tmp_path) as pool:
        await pool.start("gpu-1", local(tiny_model, **SLOW), sections=sections)
        assert await get(f"{worker}/healthz") == (200, "ok\n")
        async with easel_with_metrics(tmp_path, redis={"url": redis_server.url}) as (easel, bot):
            await scraped(pool, bot, "easel_workers_live", 1, backend="local")
            inter = await easel.imagine("a lighthouse", backend="local", count=2)
            result = await easel.result_of(inter, timeout=90)
            assert posts(easel, job_id(result)) == 1
            samples = await scraped(pool, worker, "easel_worker_batches_total", 1, outcome="published")
            assert value(samples, "easel_worker_jobs_total", outcome="rendered") == 1
            assert value(samples, "easel_worker_jobs_total", outcome="failed") == 0
            assert value(samples, "easel_worker_render_seconds_count") == 1
            assert (value(samples, "easel_worker_render_seconds_sum") or 0) > 0.5
            assert value(samples, "easel_worker_batch_images_sum") == 2  # one job of two images
            assert (value(samples, "easel_worker_lease_renewals_total") or 0) >= 1
            assert value(samples, "easel_worker_leases_lost_total") == 0
            assert value(samples, "easel_worker_info", worker="gpu-1", model=tiny_model.name) == 1
            assert value(await scrape(bot), "easel_lease_reclaims_total", backend="local") == 0
        redis_server.kill()
        await pool.until(
            health(worker, 503, "redis: Redis does not answer"), why="/healthz failing without Redis"
        )
        redis_server.start()
        await pool.until(health(worker, 200, "ok"), why="/healthz healthy once Redis is back")


async def test_a_worker_that_cannot_listen_for_metrics_says_so_and_exits(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    sections, _ = with_metrics()
    async with workers(redis_server, tmp_path) as pool:
        holder = await pool.start("gpu-1", local(tiny_model), sections=sections)
        with pytest.raises(AssertionError, match="exited"):
            await pool.start("gpu-2", local(tiny_model), sections=sections)
        log = (tmp_path / "worker-gpu-2.log").read_text()
        assert f"metrics.listen = {sections['metrics']['listen']!r}: cannot listen there" in log
        assert holder.process.returncode is None


async def test_a_frozen_worker_counts_its_lost_lease_and_the_bot_the_reclaim(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    slow = local(tiny_model, steps=150, resolution=256, progress_interval_s=1.0)
    first_sections, first_url = with_metrics()
    second_sections, second_url = with_metrics()
    async with workers(redis_server, tmp_path) as pool:
        first = await pool.start("gpu-1", slow, sections=first_sections)
        second = await pool.start("gpu-2", slow, sections=second_sections)
        urls = {"gpu-1": first_url, "gpu-2": second_url}
        async with easel_with_metrics(tmp_path, redis={"url": redis_server.url}) as (easel, bot):
            await scraped(pool, bot, "easel_workers_live", 2, backend="local")
            inter = await easel.imagine("frozen in time", backend="local")
            await pool.until(lambda: pool.holder(1), timeout=30, why="a worker rendering job 1")
            frozen, other = (first, second) if await pool.holder(1) == "gpu-1" else (second, first)
            frozen.signal(signal.SIGSTOP)
            await pool.until(lambda: pool.held_by(1, other.name), timeout=30, why="the job reclaimed")
            # Its heartbeat stopped with it: the bot sees one live worker.
            await scraped(pool, bot, "easel_workers_live", 1, backend="local")
            frozen.signal(signal.SIGCONT)
            result = await easel.result_of(inter, timeout=90)
            assert posts(easel, job_id(result)) == 1
            samples = await scraped(pool, bot, "easel_lease_reclaims_total", 1, backend="local")
            assert value(samples, "easel_dead_lettered_jobs_total", backend="local") == 0
            taker = await scraped(pool, urls[other.name], "easel_worker_reclaims_total", 1)
            assert value(taker, "easel_worker_batches_total", outcome="published") == 1
            loser = await scraped(pool, urls[frozen.name], "easel_worker_leases_lost_total", 1)
            assert value(loser, "easel_worker_batches_total", outcome="lost") == 1
            assert value(loser, "easel_worker_jobs_total", outcome="lost") == 1
            assert value(loser, "easel_worker_batches_total", outcome="published") == 0
            await scraped(pool, bot, "easel_workers_live", 2, backend="local")


async def test_a_dead_lettered_job_is_counted_by_the_bot_and_the_worker_that_gave_up(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    slow = local(tiny_model, steps=200, resolution=256)
    async with workers(redis_server, tmp_path) as pool:
        worker = await pool.start("gpu-1", slow, lease_s=1.0)
        async with easel_with_metrics(tmp_path, redis={"url": redis_server.url}) as (easel, bot):
            poison = await easel.imagine("crashes the GPU", user=ALICE, guild=GUILD_A, backend="local")
            sections: dict[str, dict[str, Any]] = {}
            last = ""
            for delivery in range(1, wire.MAX_DELIVERIES + 1):
                log, wanted = worker.log, f"delivery {delivery})"
                await pool.until(
                    lambda log=log, wanted=wanted: took(log, 1, wanted), timeout=60, why=f"job 1 {wanted}"
                )
                if delivery == 1:
                    fine = await easel.imagine("a quiet lake", user=BOB, guild=GUILD_B, backend="local")
                worker.signal(signal.SIGKILL)
                await worker.process.wait()
                if delivery == wire.MAX_DELIVERIES:
                    sections, last = with_metrics()
                worker = await pool.start("gpu-1", slow, lease_s=1.0, sections=sections)
            await easel.discord.wait_for(lambda: "gave up on it" in shown(poison), timeout=60)
            samples = await scraped(pool, bot, "easel_dead_lettered_jobs_total", 1, backend="local")
            # Delivered four times: three times taken back from a killed worker.
            assert value(samples, "easel_lease_reclaims_total", backend="local") == wire.MAX_DELIVERIES
            result = await easel.result_of(fine, timeout=60)
            assert posts(easel, job_id(result)) == 1
            gave_up = await scraped(pool, last, "easel_worker_batches_total", 1, outcome="published")
            assert value(gave_up, "easel_worker_batches_total", outcome="dead_lettered") == 1
            assert value(gave_up, "easel_worker_jobs_total", outcome="dead_lettered") == 1
            assert value(gave_up, "easel_worker_reclaims_total") == 1
            assert value(await scrape(bot), "easel_dead_lettered_jobs_total", backend="local") == 1


def acl_rules(user: str) -> list[str]:
    """The ACL rules README.md gives ``user`` (its ``user NAME ...`` line), password placeholder included."""
    lines = [
        line.split()
        for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith(f"user {user} ")
    ]
    assert len(lines) == 1, f"README.md should show one ACL line for {user}"
    return lines[0][2:]


def compose_rules(user: str) -> list[str]:
    """The ACL rules compose.example.yaml's redis service gives ``user``."""
    text = (REPO / "compose.example.yaml").read_text(encoding="utf-8")
    command = re.search(r"^    command: >\n((?:      .*\n)+)", text, re.MULTILINE)
    assert command is not None
    users = " ".join(command.group(1).split()).split("--user ")
    [rules] = [u.split()[1:] for u in users if u.startswith(f"{user} ")]
    return rules


def with_password(rules: list[str], password: str) -> list[str]:
    """Rules with their ``>PASSWORD`` placeholder replaced."""
    return [f">{password}" if rule.startswith(">") else rule for rule in rules]


@asynccontextmanager
async def acl_user(server: RedisServer, user: str, rules: list[str]) -> AsyncIterator[str]:
    """Create ``user`` with ``rules`` on the test server; yield its URL; delete it at the end."""
    password = secrets.token_hex(16)
    admin = Redis.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", user, "reset", *with_password(rules, password))
    try:
        yield f"redis://{user}:{password}@127.0.0.1:{server.port}/0"
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_the_documented_acl_is_enough_for_a_worker_and_the_bot_to_render_a_job(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    worker_rules = acl_rules("easel-worker")
    assert compose_rules("easel-worker") == [
        ">${REDIS_WORKER_PASSWORD}" if r.startswith(">") else r for r in worker_rules
    ]
    assert "+@all" not in worker_rules
    assert "~easel:*" in worker_rules
    sections, metrics = with_metrics()
    async with (
        acl_user(redis_server, "easel-worker", worker_rules) as worker_url,
        acl_user(redis_server, "easel-bot", compose_rules("easel-bot")) as bot_url,
        workers(redis_server, tmp_path) as pool,
    ):
        worker = await pool.start(
            "gpu-1",
            local(tiny_model, **SLOW),
            sections={"redis": {"url": worker_url}, **sections},
        )
        assert await get(f"{metrics}/healthz") == (200, "ok\n")
        async with running(tmp_path, redis={"url": bot_url}) as easel:
            inter = await easel.imagine("a locked door", backend="local", count=2)
            result = await easel.result_of(inter, timeout=90)
            assert posts(easel, job_id(result)) == 1
            await pool.until(pool.idle, why="every entry acknowledged")
        # Stopping is allowed too: the worker leaves its pub/sub and connections cleanly.
        worker.signal(signal.SIGTERM)
        assert await worker.process.wait() == 0
        log = worker.log.read_text()
        assert "worker gpu-1 stopped" in log
        assert f"jobs [{job_id(result)}]: results published" in log
        # Every command either side sent was allowed: none was refused and retried past.
        assert "no permissions" not in log
        assert "no permissions" not in caplog.text
        # Outside Easel's keys the worker's user may do nothing.
        intruder = Redis.from_url(worker_url)
        try:
            with pytest.raises(NoPermissionError):
                await intruder.set("other-app:key", "1")
        finally:
            await intruder.aclose()


def test_a_rediss_url_is_accepted_and_makes_the_client_use_tls(tmp_path: Path) -> None:
    raw = {
        "redis": {"url": "rediss://easel-worker:s3cret@redis.example:6380/0"},
        "local": {"model": str(tmp_path)},
    }
    settings = parse_settings(raw, {}, base_dir=tmp_path, worker=True)
    assert settings.redis.enabled
    assert "s3cret" not in repr(settings.redis)
    client = Redis.from_url(settings.redis.url.reveal())
    assert client.connection_pool.connection_class is SSLConnection
    bot = parse_settings(
        {"discord": {"token": "x" * 60}}, {"REDIS_URL": "rediss://redis.example:6380/0"}, base_dir=tmp_path
    )
    assert bot.redis.url.reveal().startswith("rediss://")
