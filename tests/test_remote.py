"""Remote render workers: the bot with [redis], real worker processes, a real redis-server, real signals."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.errors import RenderFailed
from bot.remote import wire
from bot.remote.worker import ensure_group
from bot.renderers.base import Capabilities, RenderResult
from tests.conftest import RedisServer
from tests.fakediscord import Interaction, Message
from tests.harness import ALICE, BOB, GUILD_A, GUILD_B, Harness, image_of, running
from tests.remoteworkers import workers

STEP = re.compile(r"step (\d+)/(\d+)")


def local(model: Path, **extra: Any) -> dict[str, Any]:
    """A worker's [local] section for the tiny model."""
    return {"model": str(model), "steps": 4, **extra}


def job_id(message: Message) -> int:
    match = re.search(r"Job #(\d+)", message.embeds[0]["footer"]["text"])
    assert match is not None
    return int(match.group(1))


def field(message: Message, name: str) -> str:
    return str(next(f["value"] for f in message.embeds[0]["fields"] if f["name"] == name))


def shown(inter: Interaction) -> str:
    return inter.original.content if inter.original is not None else ""


def took(log: Path, job: int, delivery: str) -> bool:
    """Whether a worker's log shows it started rendering ``job`` on this delivery (e.g. "delivery 2)")."""
    return any(
        f"jobs [{job}]: rendering" in line and line.endswith(delivery)
        for line in log.read_text().splitlines()
    )


def posts(easel: Harness, job: int) -> int:
    return len(easel.discord.result_posts(job))


async def test_a_job_renders_on_a_remote_worker_and_is_posted_once(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    async with workers(redis_server, tmp_path) as pool:
        await pool.start("gpu-1", local(tiny_model))
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            inter = await easel.imagine("a lighthouse", backend="local", count=2, seed=1234)
            result = await easel.result_of(inter, timeout=60)
            assert "4 steps" in field(result, "Backend")
            assert field(result, "Seed") == "1234"
            assert [label for label, *_ in result.buttons()][:4] == ["U1", "U2", "V1", "V2"]
            assert image_of(result).size[1] == 64  # a grid of the two 64×64 images, side by side
            assert posts(easel, job_id(result)) == 1
            await pool.until(pool.idle, why="every entry acknowledged")
            log = pool.started[0].log.read_text()
            assert f"jobs [{job_id(result)}]: results published" in log


async def test_a_worker_killed_mid_render_leaves_its_job_to_the_other(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    # About 4 s a render here: long enough to be caught mid-way, and past the 1.5 s lease.
    slow = local(tiny_model, steps=100, resolution=512, progress_interval_s=1.0)
    async with workers(redis_server, tmp_path) as pool:
        first = await pool.start("gpu-1", slow)
        second = await pool.start("gpu-2", slow)
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            inters = [
                await easel.imagine("a slow sunrise", user=ALICE, guild=GUILD_A, backend="local", seed=1),
                await easel.imagine("a slow sunset", user=BOB, guild=GUILD_B, backend="local", seed=2),
            ]
            await pool.until(lambda: pool.holder(1), why="a worker rendering job 1")
            victim, survivor = (first, second) if await pool.holder(1) == "gpu-1" else (second, first)
            # Mid-render: its progress reached the member.
            await easel.discord.wait_for(lambda: STEP.search(shown(inters[0])) is not None, timeout=30)
            victim.signal(signal.SIGKILL)
            await victim.process.wait()
            results = [await easel.result_of(inter, timeout=90) for inter in inters]
            assert [posts(easel, job_id(r)) for r in results] == [1, 1]
            assert "reclaimed batch" in survivor.log.read_text()
            await pool.until(pool.idle, why="every entry acknowledged")


async def test_a_worker_frozen_past_its_lease_then_resumed_posts_nothing_twice(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    slow = local(tiny_model, steps=150, resolution=256, progress_interval_s=1.0)
    async with workers(redis_server, tmp_path) as pool:
        first = await pool.start("gpu-1", slow)
        second = await pool.start("gpu-2", slow)
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            inter = await easel.imagine("frozen in time", backend="local", seed=3)
            await pool.until(lambda: pool.holder(1), timeout=30, why="a worker rendering job 1")
            frozen, other = (first, second) if await pool.holder(1) == "gpu-1" else (second, first)
            frozen.signal(signal.SIGSTOP)
            await pool.until(lambda: pool.held_by(1, other.name), timeout=30, why="the job reclaimed")
            frozen.signal(signal.SIGCONT)
            result = await easel.result_of(inter, timeout=90)
            assert posts(easel, job_id(result)) == 1
            await pool.until(pool.idle, why="every entry acknowledged")
            await pool.until(lambda: "lease lost" in frozen.log.read_text(), why="the frozen worker gave up")
            assert posts(easel, job_id(result)) == 1


async def test_the_bot_posts_only_real_images_whatever_a_worker_sends(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The test is the worker here: it announces itself and answers with what no real worker sends.
    client = Redis.from_url(redis_server.url)
    caps = Capabilities(sizes=((64, 64),), max_batch=1, progress=True, cancellable=True)
    await client.hset(
        wire.announcement("liar"), mapping={"model": "m", "capabilities": wire.encode_capabilities(caps)}
    )
    await client.sadd(wire.WORKERS, "liar")
    await client.set(wire.heartbeat("liar"), "1", ex=60)
    await ensure_group(client, wire.stream("m", 64, 64), wire.WORKERS_GROUP)
    try:
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            answers = [
                RenderResult((b"<html>not an image</html>",)),
                RenderFailed("@everyone see <https://evil.example> **now**"),
            ]
            inters = []
            for answer in answers:
                inter = await easel.imagine("anything", backend="local")
                read = await client.xreadgroup(
                    wire.WORKERS_GROUP, "liar", {wire.stream("m", 64, 64): ">"}, count=1, block=20_000
                )
                [entry] = wire.entries(read)
                batch_id, requests = wire.decode_batch(entry.fields)
                fields = wire.encode_completion(batch_id, [requests[0].job_id], [answer])
                await client.xadd(wire.COMPLETIONS, fields)  # type: ignore[arg-type]
                inters.append(inter)
            bogus, rude = inters
            await easel.discord.wait_for(lambda: "not a valid image" in shown(bogus), timeout=20)
            await easel.discord.wait_for(lambda: "see" in shown(rude) and "evil" in shown(rude), timeout=20)
            assert "@everyone" not in shown(rude)
            assert "<https" not in shown(rude)
            assert "**" not in shown(rude)
            assert not [r for r in easel.discord.requests if r.result_job is not None]
    finally:
        await client.aclose()


async def test_a_job_that_crashes_every_worker_is_given_up_with_one_message(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    slow = local(tiny_model, steps=200, resolution=256)
    async with workers(redis_server, tmp_path) as pool:
        worker = await pool.start("gpu-1", slow, lease_s=1.0)
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            poison = await easel.imagine("crashes the GPU", user=ALICE, guild=GUILD_A, backend="local")
            # Each delivery kills the worker that took it, as a poison job would.
            for delivery in range(1, wire.MAX_DELIVERIES + 1):
                log, wanted = worker.log, f"delivery {delivery})"
                await pool.until(
                    lambda log=log, wanted=wanted: took(log, 1, wanted), timeout=60, why=f"job 1 {wanted}"
                )
                if delivery == 1:
                    # Waits in the fair queue while the poison job holds the only worker.
                    fine = await easel.imagine("a quiet lake", user=BOB, guild=GUILD_B, backend="local")
                worker.signal(signal.SIGKILL)
                await worker.process.wait()
                worker = await pool.start("gpu-1", slow, lease_s=1.0)
            await easel.discord.wait_for(lambda: "gave up on it" in shown(poison), timeout=60)
            result = await easel.result_of(fine, timeout=60)
            assert posts(easel, job_id(result)) == 1
            assert not easel.discord.result_requests(1)
            failures = [m for m in easel.discord.messages.values() if "gave up on it" in m.content]
            assert len(failures) == 1
            await pool.until(pool.idle, why="every entry acknowledged")


async def test_redis_killed_mid_render_and_restarted_from_its_aof_loses_nothing(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    slow = local(tiny_model, steps=100, resolution=512, progress_interval_s=1.0)
    async with workers(redis_server, tmp_path) as pool:
        await pool.start("gpu-1", slow)
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            inter = await easel.imagine("through the storm", backend="local", seed=7)
            await pool.until(lambda: pool.holder(1), why="job 1 taken")
            await easel.discord.wait_for(lambda: STEP.search(shown(inter)) is not None, timeout=30)
            redis_server.kill()
            redis_server.start()
            result = await easel.result_of(inter, timeout=90)
            assert posts(easel, job_id(result)) == 1
            await pool.until(pool.idle, why="every entry acknowledged")
