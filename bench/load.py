"""The bot under load: acknowledgement latency under a burst of /imagine, and queue throughput.

Both run the real bot through its composition root against the local Discord and OpenAI test
servers, in this one process: the numbers include the test servers' own work, so they are an
upper bound on what the bot alone costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import summary
from tests.fakediscord import Interaction
from tests.harness import Harness, running

GUILDS = 30
BASE_GUILD = 500_000_000_000_000_000
BASE_USER = 700_000_000_000_000_000
ACK_DEADLINE_S = 3.0


def easel(data_dir: Path, **overrides: Any) -> contextlib.AbstractAsyncContextManager[Harness]:
    """Run the bot with GUILDS guilds, global commands (one sync instead of thirty) and no queue limits."""
    overrides.setdefault("discord", {})["dev_guild_ids"] = []
    overrides.setdefault("queue", {}).update(max_per_member=1000, max_per_guild=1000, max_total=100_000)
    guilds = [(BASE_GUILD + g, BASE_GUILD + g + 1) for g in range(GUILDS)]
    return running(data_dir, guilds=guilds, **overrides)


async def send(harness: Harness, i: int, **options: Any) -> Interaction:
    """Send /imagine as member ``i`` of guild ``i % GUILDS``; ``options`` join the prompt."""
    guild = BASE_GUILD + i % GUILDS
    return await harness.discord.slash(
        guild_id=guild,
        channel_id=guild + 1,
        user_id=BASE_USER + i,
        name="imagine",
        options={"prompt": "a fox", **options},
    )


async def send_burst(harness: Harness, count: int, first: int = 0, **options: Any) -> list[Interaction]:
    """Send ``count`` /imagine evenly over one second and wait until each is acknowledged (or too late)."""
    start = time.monotonic()
    sends = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / count - time.monotonic()))
        sends.append(asyncio.create_task(send(harness, first + i, **options)))
    interactions = await asyncio.gather(*sends)
    for inter in interactions:
        # Discord drops an answer later than 3 s, so waiting longer than that shows nothing more.
        with contextlib.suppress(TimeoutError):
            await inter.wait_callback(timeout=max(0.0, inter.sent_at + ACK_DEADLINE_S + 1 - time.monotonic()))
    return interactions


def ack_ms(interactions: Sequence[Interaction]) -> list[float]:
    """Return each acknowledgement's latency in ms, from the interaction's send to the bot's callback."""
    return [
        (inter.callback.received_at - inter.sent_at) * 1000
        for inter in interactions
        if inter.callback is not None
    ]


async def ack_latency(burst: int) -> tuple[dict[str, float], int]:
    """Send ``burst`` /imagine within one second while every render takes 1 s; time the acknowledgements.

    Returns the latencies' summary and how many acknowledgements were missing or later than 3 s.
    """
    with tempfile.TemporaryDirectory() as tmp:
        async with easel(Path(tmp)) as harness:
            harness.openai.delay = 1.0
            interactions = await send_burst(harness, burst)
    return summary(ack_ms(interactions) or [float("nan")]), sum(map(late, interactions))


def finished(interaction: Interaction) -> bool:
    """Tell whether the job's result (an embed with an image) has been posted."""
    message = interaction.original
    return message is not None and bool(message.embeds) and bool(message.attachments)


def ended(interaction: Interaction, now: float) -> bool:
    """Tell whether the job is over without a result: unacknowledged past Discord's 3 s, or failed."""
    if interaction.callback is None:
        return now - interaction.sent_at > ACK_DEADLINE_S + 1
    message = interaction.original
    return message is not None and message.content.startswith("❌")


def late(interaction: Interaction) -> bool:
    """Tell whether the bot missed Discord's 3 s deadline (Discord then drops the request)."""
    callback = interaction.callback
    return callback is None or callback.received_at - interaction.sent_at > ACK_DEADLINE_S


async def throughput(jobs: int, limit_s: float) -> dict[str, float]:
    """Run ``jobs`` /imagine through an instant renderer; time them from first send to last result posted.

    Waits at most ``limit_s`` for the results, then reports what was posted by then.
    """
    with tempfile.TemporaryDirectory() as tmp:
        async with easel(Path(tmp), openai={"concurrency": 4}) as harness:
            cpu0, t0 = time.process_time(), time.monotonic()
            interactions = [await send(harness, i) for i in range(jobs)]
            pending, last, posted = list(interactions), t0, 0
            while pending and time.monotonic() < t0 + limit_s:
                # Polling keeps the wait cheap: a predicate over thousands of jobs on every request is not.
                await asyncio.sleep(0.05)
                now = time.monotonic()
                if (done := sum(map(finished, interactions))) > posted:
                    posted, last = done, now
                pending = [i for i in pending if not (finished(i) or ended(i, now))]
            cpu = time.process_time() - cpu0
    return {
        "jobs_per_s": posted / (last - t0) if posted else 0.0,
        "cpu_ms_per_job": cpu * 1000 / max(posted, 1),
        "posted": posted,
        "late": sum(map(late, interactions)),
        "failed": sum(
            1 for i in interactions if not finished(i) and not late(i) and ended(i, time.monotonic())
        ),
        "unfinished": len(pending),
    }
