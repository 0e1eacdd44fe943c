"""Benchmarks: `python -m bench` prints acknowledgement latency under a burst and queue throughput.

Both run the real bot through its composition root against the local Discord and OpenAI test
servers, in this one process: the numbers include the test servers' own work, so they are an
upper bound on what the bot alone costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fakediscord import Interaction
from tests.harness import Harness, running

GUILDS = 30
BASE_GUILD = 500_000_000_000_000_000
BASE_USER = 700_000_000_000_000_000


def easel(data_dir: Path, **overrides: Any) -> contextlib.AbstractAsyncContextManager[Harness]:
    """Run the bot with GUILDS guilds, global commands (one sync instead of thirty) and no queue limits."""
    overrides.setdefault("discord", {})["dev_guild_ids"] = []
    overrides.setdefault("queue", {}).update(max_per_member=1000, max_per_guild=1000, max_total=100_000)
    guilds = [(BASE_GUILD + g, BASE_GUILD + g + 1) for g in range(GUILDS)]
    return running(data_dir, guilds=guilds, **overrides)


async def send(harness: Harness, i: int) -> Interaction:
    guild = BASE_GUILD + i % GUILDS
    return await harness.discord.slash(
        guild_id=guild,
        channel_id=guild + 1,
        user_id=BASE_USER + i,
        name="imagine",
        options={"prompt": "a fox"},
    )


async def ack_latency(burst: int) -> dict[str, float]:
    """Send ``burst`` /imagine within one second while every render takes 1 s; time the acknowledgements."""
    with tempfile.TemporaryDirectory() as tmp:
        async with easel(Path(tmp)) as harness:
            harness.openai.delay = 1.0
            start = time.monotonic()
            sends = []
            for i in range(burst):
                await asyncio.sleep(max(0.0, start + i / burst - time.monotonic()))
                sends.append(asyncio.create_task(send(harness, i)))
            interactions = await asyncio.gather(*sends)
            callbacks = [await inter.wait_callback(timeout=30) for inter in interactions]
            lat = sorted(
                (cb.received_at - inter.sent_at) * 1000
                for cb, inter in zip(callbacks, interactions, strict=False)
            )
    return {
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[int(len(lat) * 0.99) - 1],
        "max_ms": lat[-1],
    }


async def throughput(jobs: int) -> dict[str, float]:
    """Run ``jobs`` /imagine through an instant renderer; time them from first send to last result posted."""
    with tempfile.TemporaryDirectory() as tmp:
        async with easel(Path(tmp), openai={"concurrency": 4}) as harness:
            cpu0, t0 = time.process_time(), time.monotonic()
            interactions = [await send(harness, i) for i in range(jobs)]
            for inter in interactions:
                await harness.result_of(inter, timeout=120)
            wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {"jobs_per_s": jobs / wall, "cpu_ms_per_job": cpu * 1000 / jobs}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    ack = asyncio.run(ack_latency(args.burst))
    thr = asyncio.run(throughput(args.jobs))
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}"
    )
    print("| benchmark | metric | value |\n|---|---|---|")
    print(
        f"| ack latency, {args.burst} /imagine from {GUILDS} guilds in 1 s, renderer saturated | p50 | {ack['p50_ms']:.1f} ms |"
    )
    print(f"| | p99 (target ≤ 150 ms) | {ack['p99_ms']:.1f} ms |")
    print(f"| | max | {ack['max_ms']:.1f} ms |")
    print(
        f"| queue throughput, {args.jobs} jobs, instant renderer | jobs/s end to end | {thr['jobs_per_s']:.1f} |"
    )
    print(f"| | CPU ms per job (bot + test servers) | {thr['cpu_ms_per_job']:.1f} |")


if __name__ == "__main__":
    main()
