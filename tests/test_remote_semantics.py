"""Remote render workers when things go wrong: a bot restart, a Redis that loses its data or goes
away, no worker online, workers with different models, a size nobody renders any more."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from redis.asyncio import Redis

from bot.errors import RenderFailed
from bot.remote import wire
from bot.remote.renderer import RemoteRenderer
from bot.remote.worker import ensure_group
from bot.renderers.base import Capabilities, Operation, RenderRequest, RenderResult
from bot.store import Store
from tests.conftest import RedisServer
from tests.harness import ALICE, BOB, GUILD_A, GUILD_B, command, running
from tests.remoteworkers import workers
from tests.test_remote import field, job_id, local, posts, shown

ERROR_ID = re.compile(r"\(error ([0-9a-f]{8})\)")
RENDERING = re.compile(r"jobs \[([\d, ]+)\]: rendering")


def renders(log: Path, job: int) -> int:
    """How many times a worker's log shows it started rendering ``job`` (alone or in a batch)."""
    return sum(job in map(int, m.group(1).split(", ")) for m in RENDERING.finditer(log.read_text()))


async def test_a_bot_restarted_while_a_worker_renders_waits_for_that_render(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    slow = local(tiny_model, steps=100, resolution=512, progress_interval_s=1.0)
    async with workers(redis_server, tmp_path) as pool:
        worker = await pool.start("gpu-1", slow)
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            first = await easel.imagine("a long night", user=ALICE, guild=GUILD_A, backend="local", seed=1)
            second = await easel.imagine("a long day", user=BOB, guild=GUILD_B, backend="local", seed=2)
            await pool.until(lambda: pool.holder(1), why="job 1 taken")
            await easel.restart_bot()
            results = [await easel.result_of(inter, timeout=90) for inter in (first, second)]
            assert [posts(easel, job_id(r)) for r in results] == [1, 1]
            await pool.until(pool.idle, why="every entry acknowledged")
            # Each job rendered once: the restarted bot sent neither again.
            assert [renders(worker.log, 1), renders(worker.log, 2)] == [1, 1], worker.log.read_text()
            await pool.until(
                lambda: _done_is(pool.client, "gpu-1", 2), why="the worker counted two jobs done"
            )
            assert not await pool.client.hlen(wire.INFLIGHT)


async def test_a_bot_killed_while_a_worker_renders_waits_for_that_render_after_restart(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    slow = local(tiny_model, steps=100, resolution=512, progress_interval_s=1.0)
    async with workers(redis_server, tmp_path) as pool:
        worker = await pool.start("gpu-1", slow)
        async with running(tmp_path, start=False, redis={"url": redis_server.url}) as easel:
            await easel.start_bot_process()
            inter = await easel.imagine("cut short", backend="local", seed=6)
            await pool.until(lambda: pool.holder(1), why="job 1 taken")
            await easel.kill_bot_process()
            await easel.start_bot()
            result = await easel.result_of(inter, timeout=90)
            assert posts(easel, job_id(result)) == 1
            await pool.until(pool.idle, why="every entry acknowledged")
            assert renders(worker.log, 1) == 1, worker.log.read_text()


async def _done_is(client: Redis, name: str, count: int) -> bool:
    return await client.hget(wire.announcement(name), "done") == str(count).encode()


async def test_a_batch_redis_lost_with_its_data_is_sent_again(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    slow = local(tiny_model, steps=100, resolution=512, progress_interval_s=1.0)
    async with workers(redis_server, tmp_path) as pool:
        worker = await pool.start("gpu-1", slow)
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            inter = await easel.imagine("written in water", backend="local", seed=4)
            await pool.until(lambda: pool.holder(1), why="job 1 taken")
            # A Redis without AOF restarts empty: no stream, no lease, no record of the batch.
            redis_server.kill()
            shutil.rmtree(redis_server.directory / "appendonlydir")
            redis_server.start()
            result = await easel.result_of(inter, timeout=90)
            assert posts(easel, job_id(result)) == 1
            assert any("is gone from Redis; sending it again" in r.getMessage() for r in caplog.records)
            await pool.until(pool.idle, why="every entry acknowledged")
            assert renders(worker.log, 1) == 2
            assert "lease lost" in worker.log.read_text()
            # The worker announced itself again to the empty Redis: the next job renders too.
            after = await easel.result_of(await easel.imagine("and again", backend="local"), timeout=90)
            assert posts(easel, job_id(after)) == 1


async def test_redis_down_when_a_batch_is_sent_fails_the_job_and_the_next_one_works(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with workers(redis_server, tmp_path) as pool:
        await pool.start("gpu-1", local(tiny_model))
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            redis_server.kill()
            failed = await easel.imagine("into the void", backend="local")
            await easel.discord.wait_for(
                lambda: "could not reach its render queue" in shown(failed), timeout=30
            )
            assert "Nothing was charged" in shown(failed)
            error = ERROR_ID.search(shown(failed))
            assert error is not None
            redis_server.start()
            result = await easel.result_of(await easel.imagine("back again", backend="local"), timeout=60)
            assert posts(easel, job_id(result)) == 1
            await pool.until(pool.idle, why="every entry acknowledged")
        outage = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
        assert len(outage) == 1
        assert error.group(1) in outage[0].getMessage()
        assert not [r for r in caplog.records if r.name.startswith("bot.remote") and r.exc_info]
        assert not easel.discord.result_requests(job_id_of(shown(failed)))


def job_id_of(text: str) -> int:
    match = re.search(r"Job #(\d+)", text)
    assert match is not None, text
    return int(match.group(1))


async def test_members_are_told_their_job_waits_for_a_worker_to_come_online(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with workers(redis_server, tmp_path) as pool:
        gone = await pool.start("gpu-1", local(tiny_model))
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            gone.process.terminate()
            await gone.process.wait()
            await easel.discord.wait_for(
                lambda: any("worker gpu-1 is gone" in r.getMessage() for r in caplog.records), timeout=30
            )
            inter = await easel.imagine("someone, anyone", backend="local")
            await easel.discord.wait_for(lambda: "No render worker is online" in shown(inter), timeout=20)
            assert "starts as soon as one is" in shown(inter)
            assert "Queued" in shown(inter)
            status = await command(easel, "status")
            assert status.callback is not None
            assert status.callback.data is not None
            assert "No render worker is online" in str(status.callback.data["embeds"][0])
            await pool.start("gpu-1", local(tiny_model))
            result = await easel.result_of(inter, timeout=60)
            assert posts(easel, job_id(result)) == 1


async def test_two_models_on_two_workers_each_job_goes_to_a_worker_with_its_model(
    tmp_path: Path, tiny_model: Path, redis_server: RedisServer
) -> None:
    # Square jobs come out at 128×128, which only model-a's worker renders; landscape ones at
    # 120×80, which only model-b's does.
    model_a = shutil.copytree(tiny_model, tmp_path / "model-a")
    model_b = shutil.copytree(tiny_model, tmp_path / "model-b")
    async with workers(redis_server, tmp_path) as pool:
        worker_a = await pool.start("gpu-a", local(model_a, resolution=128))
        worker_b = await pool.start("gpu-b", local(model_b, resolution=96))
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            square = await easel.imagine("a square", user=ALICE, guild=GUILD_A, backend="local")
            wide = await easel.imagine(
                "a wide one", user=BOB, guild=GUILD_B, backend="local", aspect="landscape"
            )
            results = [await easel.result_of(inter, timeout=60) for inter in (square, wide)]
            assert "model-a" in field(results[0], "Backend")
            assert "model-b" in field(results[1], "Backend")
            a, b = job_id(results[0]), job_id(results[1])
            assert f"jobs [{a}]: results published" in worker_a.log.read_text()
            assert f"jobs [{b}]: results published" in worker_b.log.read_text()
            assert [renders(worker_a.log, b), renders(worker_b.log, a)] == [0, 0]
            await pool.until(pool.idle, why="every entry acknowledged")


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(out, "PNG")
    return out.getvalue()


async def test_a_batch_whose_size_no_live_worker_renders_ends_with_the_sizes_that_exist(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # The test is the two workers here: "square" renders 64×64 only, "wide" 96×64 only.
    client = Redis.from_url(redis_server.url)
    for name, size in (("square", (64, 64)), ("wide", (96, 64))):
        caps = Capabilities(sizes=(size,), max_batch=1)
        mapping = {"model": name, "capabilities": wire.encode_capabilities(caps)}
        await client.hset(wire.announcement(name), mapping=mapping)  # type: ignore[arg-type]
        await client.sadd(wire.WORKERS, name)
        await client.set(wire.heartbeat(name), "1", ex=120)
        await ensure_group(client, wire.stream(name, *size), wire.WORKERS_GROUP)
    squares = wire.stream("square", 64, 64)
    try:
        async with running(tmp_path, redis={"url": redis_server.url}) as easel:
            # Two square jobs take both slots; the wide one waits in the fair queue meanwhile.
            held = [await easel.imagine(f"square {n}", user=ALICE, backend="local") for n in (1, 2)]
            taken: list[wire.Entry] = []
            while len(taken) < 2:
                read = await client.xreadgroup(
                    wire.WORKERS_GROUP, "square", {squares: ">"}, count=2, block=20_000
                )
                taken += wire.entries(read)
            wide = await easel.imagine("wide", user=BOB, guild=GUILD_B, backend="local", aspect="landscape")
            await easel.discord.wait_for(lambda: "Queued" in shown(wide), timeout=20)
            await client.delete(wire.heartbeat("wide"))
            await easel.discord.wait_for(
                lambda: any("worker wide is gone" in r.getMessage() for r in caplog.records), timeout=20
            )
            for entry in taken:
                batch_id, requests = wire.decode_batch(entry.fields)
                ids = [r.job_id for r in requests]
                fields = wire.encode_completion(batch_id, ids, [RenderResult((png(64, 64),))] * len(ids))
                await client.xadd(wire.COMPLETIONS, fields)  # type: ignore[arg-type]
            await easel.discord.wait_for(lambda: "failed" in shown(wide), timeout=20)
            text = shown(wide)
            assert "No render worker online renders 96×64" in text
            assert "the workers online render 64×64" in text
            assert "Nothing was charged" in text
            for inter in held:
                await easel.result_of(inter, timeout=20)
            assert not easel.discord.result_requests(job_id_of(text))
    finally:
        await client.aclose()


class Seen(logging.Handler):
    """Sets ``event`` once a log record containing ``text`` is emitted (on the event loop's thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_a_sent_batch_fails_with_an_error_id_once_redis_stays_away_too_long(
    redis_server: RedisServer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # The bot's renderer against a real Redis, with the outage bound shortened from 60 s to 1 s.
    client = Redis.from_url(redis_server.url)
    caps = Capabilities(sizes=((64, 64),), max_batch=1)
    mapping = {"model": "m", "capabilities": wire.encode_capabilities(caps)}
    await client.hset(wire.announcement("w"), mapping=mapping)  # type: ignore[arg-type]
    await client.sadd(wire.WORKERS, "w")
    await client.set(wire.heartbeat("w"), "1", ex=120)
    await ensure_group(client, wire.stream("m", 64, 64), wire.WORKERS_GROUP)
    renderer = RemoteRenderer(client, store, max_pixels=4096 * 4096, outage_s=1.0)
    await renderer.start()
    sent = Seen("as batch")
    caplog.set_level(logging.INFO, logger="bot.remote.renderer")
    logging.getLogger("bot.remote.renderer").addHandler(sent)
    try:
        request = RenderRequest(job_id=1, operation=Operation.GENERATE, prompt="x", width=64, height=64)
        render = asyncio.create_task(renderer.render_batch([request], {}))
        # The test is the worker: it takes the batch, then Redis goes away before any result.
        read = await client.xreadgroup(
            wire.WORKERS_GROUP, "w", {wire.stream("m", 64, 64): ">"}, count=1, block=20_000
        )
        assert len(wire.entries(read)) == 1
        await asyncio.wait_for(sent.event.wait(), 20)  # the bot has recorded the batch as sent
        redis_server.kill()
        [outcome] = await asyncio.wait_for(render, 30)
        assert isinstance(outcome, RenderFailed)
        error = ERROR_ID.search(str(outcome))
        assert error is not None
        assert "could not reach its render queue" in str(outcome)
        outage = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
        assert len(outage) == 1
        assert error.group(1) in outage[0].getMessage()
    finally:
        logging.getLogger("bot.remote.renderer").removeHandler(sent)
        await renderer.close()
        redis_server.start()
        await client.aclose()
