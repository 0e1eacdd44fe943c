"""Queue cost by depth: claim, batch claim, submit and place in line with 100 to 50,000 jobs waiting.

For each spread (jobs over 1, 30 or 1,000 guilds, several members each) the queue is filled to
each depth in turn and measured in rounds that keep the depth where it is: submit a job, look
up that new job's place in line (what every /imagine shows), claim one job, claim a batch, then
submit as many jobs as the batch took. Every figure is compared with the same spread's figure at
100 jobs. A slow queue is measured for a bounded time per depth and for the part as a whole;
what was not measured is reported as such.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench import depth
from bot.jobs import NewJob

DEPTHS = (100, 1_000, 10_000, 50_000)
SPREADS = (1, 30, 1_000)
MEMBERS = 5  # per guild
OPERATIONS = ("claim", "batch claim", "submit", "place in line")
TARGET_RATIO = 1.5
BASE_GUILD = 600_000_000_000_000_000
BASE_USER = 800_000_000_000_000_000

T = TypeVar("T")


@dataclass
class Point:
    """What was measured at one depth of one spread: per operation, the call times in ms."""

    guilds: int
    depth: int
    times: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    skipped: str = ""

    def median(self, operation: str) -> float | None:
        """The median call time of ``operation`` in ms, or None when nothing was measured."""
        values = self.times[operation]
        return statistics.median(values) if values else None


def job_for(guilds: int, serial: int) -> NewJob:
    """The ``serial``-th job of a spread: guilds take turns sending, members of a guild too."""
    g = serial % guilds
    member = (serial // guilds) % MEMBERS
    return depth.new_job(BASE_GUILD + 10 * g, BASE_USER + MEMBERS * g + member, serial)


async def timed(samples: list[float], call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()`` and append its duration in ms to ``samples``."""
    started = time.perf_counter()
    result = await call()
    samples.append((time.perf_counter() - started) * 1000)
    return result


class Depth:
    """One database holding one spread's jobs at one depth, and what was measured on it."""

    def __init__(self, point: Point, queue: depth.Queue, jobs: Callable[[], NewJob]) -> None:
        self.point = point
        self.queue = queue
        self.next_job = jobs
        self.spent = 0.0

    async def round(self, measured: bool = True) -> None:
        """Submit, look up the new job's place, claim one, claim a batch, and refill what was taken."""
        started = time.monotonic()
        t = self.point.times if measured else Point(0, 0).times
        job = await timed(t["submit"], lambda: depth.submit(self.queue, self.next_job()))
        await timed(t["place in line"], lambda: depth.place(self.queue, depth.BACKEND, job.id))
        one = await timed(t["claim"], lambda: depth.claim_one(self.queue))
        batch = await timed(t["batch claim"], lambda: depth.claim_batch(self.queue))
        for _ in range(len(batch) + (one is None)):
            await timed(t["submit"], lambda: depth.submit(self.queue, self.next_job()))
        if measured:
            self.spent += time.monotonic() - started


async def spread_costs(
    tmp: Path, guilds: int, *, rounds: int, point_s: float, deadline: float, limit_s: float
) -> list[Point]:
    """Fill one database per depth, then measure them in interleaved rounds.

    Interleaving lets whatever the machine does meanwhile touch every depth alike, so the
    ratios compare like with like. A depth stops after ``rounds`` rounds or ``point_s``
    seconds of them; none starts after ``deadline``, but every depth gets at least one.
    """
    serial = 0

    def next_job() -> NewJob:
        nonlocal serial
        serial += 1
        return job_for(guilds, serial)

    async with contextlib.AsyncExitStack() as stack:
        depths: list[Depth] = []
        for at in DEPTHS:
            if time.monotonic() >= deadline:
                return [
                    Point(guilds, at, skipped=f"not measured: the part's {limit_s:.0f} s ran out")
                    for at in DEPTHS
                ]
            print(f"bench: depth, {guilds} guild(s), filling to {at} queued", file=sys.stderr)
            path = tmp / f"depth-{at}.sqlite3"
            await depth.create(path)
            depth.fill(path, [next_job() for _ in range(at)])
            queue = await stack.enter_async_context(depth.open_queue(path))
            depths.append(Depth(Point(guilds, at), queue, next_job))
        for d in depths:
            # One unmeasured round first: a cache or index built on first use is start-up, not per call.
            await d.round(measured=False)
            await d.round()
        while True:
            due = [
                d
                for d in depths
                if len(d.point.times["claim"]) < rounds and d.spent < point_s and time.monotonic() < deadline
            ]
            if not due:
                break
            for d in due:
                await d.round()
        return [d.point for d in depths]


async def depth_costs(*, rounds: int, point_s: float, limit_s: float) -> list[Point]:
    """Measure every spread at every depth: ``rounds`` rounds at most, ``point_s`` seconds per depth.

    Once ``limit_s`` seconds have passed, no new round starts; spreads not begun are not measured.
    """
    deadline = time.monotonic() + limit_s
    points: list[Point] = []
    for guilds in SPREADS:
        with tempfile.TemporaryDirectory(prefix="easel-bench-depth-") as tmp:
            points += await spread_costs(
                Path(tmp), guilds, rounds=rounds, point_s=point_s, deadline=deadline, limit_s=limit_s
            )
    return points
