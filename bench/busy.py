"""A busy local renderer: acknowledgement latency and event-loop lag while it renders without pause.

The bot runs with the local backend (``[openai]`` is configured too, as the harness always does,
so /imagine has a ``backend`` option and every job here names ``local``). Jobs queued first keep
the render thread working; a burst of /imagine then arrives and queues behind them. The loop lag
is how late a 10 ms ``asyncio.sleep`` wakes up in a task on the bot's own loop, measured over the
same window, and with the renderer idle (model loaded, nothing queued) for comparison. The test
servers share that loop, so their work is in the numbers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load import ack_ms, easel, finished, send, send_burst
from bench.report import summary
from bot.errors import ConfigError
from tests.fakediscord import Interaction

TICK_S = 0.01


@dataclass(frozen=True)
class Busy:
    """What the busy-renderer run measured."""

    idle_lag: dict[str, float]
    idle_ticks: int
    busy_lag: dict[str, float]
    busy_ticks: int
    acks: dict[str, float]
    preload: int
    done_at_burst: int
    jobs: int
    done_at_end: int


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """Record, in ms, how late each 10 ms sleep of a task in the running loop wakes, until the block ends."""
    lags: list[float] = []

    async def tick() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append((time.perf_counter() - started - TICK_S) * 1000)

    task = asyncio.create_task(tick(), name="bench-loop-lag")
    try:
        yield lags
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def rendering(interactions: Sequence[Interaction]) -> bool:
    """Tell whether one of these jobs is on the render thread, or already done."""
    return any(
        finished(inter) or (inter.original is not None and "Rendering" in inter.original.content)
        for inter in interactions
    )


async def busy_renderer(
    model: str,
    *,
    size: int,
    steps: int,
    preload: int,
    count: int,
    seconds: float,
    device: str,
    dtype: str,
) -> Busy:
    """Measure loop lag idle, then acks and loop lag for a burst of ``count`` while ``preload`` jobs render."""
    local = {"model": model, "steps": steps, "resolution": size, "device": device, "dtype": dtype}
    with tempfile.TemporaryDirectory() as tmp:
        async with easel(Path(tmp), local=local) as harness:
            backends = harness.bot.services.generation.backends if harness.bot else ()
            if "local" not in backends:
                raise ConfigError(f"the local backend did not start with the model {model!r} (see the log)")
            async with loop_lag() as idle:
                await asyncio.sleep(seconds)
            queued = [
                await send(harness, i, prompt=f"keeps the renderer busy, {i}", backend="local")
                for i in range(preload)
            ]
            await harness.discord.wait_for(lambda: rendering(queued), timeout=120)
            async with loop_lag() as busy:
                started = time.monotonic()
                done_at_burst = sum(map(finished, queued))
                arrived = await send_burst(harness, count, first=preload, backend="local")
                await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
            done_at_end = sum(map(finished, [*queued, *arrived]))
    return Busy(
        idle_lag=summary(idle),
        idle_ticks=len(idle),
        busy_lag=summary(busy),
        busy_ticks=len(busy),
        acks=summary(ack_ms(arrived)),
        preload=preload,
        done_at_burst=done_at_burst,
        jobs=preload + count,
        done_at_end=done_at_end,
    )
