"""Benchmarks: `python -m bench` runs every part and prints one markdown table.

Parts (``--only`` picks some): ``ack`` (acknowledgement latency under a burst), ``throughput``
(queue throughput with an instant renderer), ``depth`` (queue cost per call at 100 to 50,000
queued jobs), ``e2e`` (the bot as its own process: jobs/s, its CPU per job, and the floor a bare
discord.py bot costs), ``batching`` (local renderer images/s, batched against one at a time), ``busy``
(acks and event-loop lag while the local renderer works) and ``transport`` (remote workers through
Redis: images/s with 1, 2 and 4 workers, and the per-job overhead against the in-process renderer).
The local parts use a tiny random model built offline in a temporary directory, or, with
``--model``, an operator's own diffusers model on ``--device``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.batching import Comparison, batching
from bench.busy import Busy, busy_renderer
from bench.depthcost import DEPTHS, MEMBERS, OPERATIONS, SPREADS, TARGET_RATIO, Point, depth_costs
from bench.e2e import CONCURRENCY as E2E_CONCURRENCY
from bench.e2e import GUILDS as E2E_GUILDS
from bench.e2e import Run, e2e
from bench.load import GUILDS, ack_latency, throughput
from bench.report import Row, local_device, machine, rows, table
from bench.transport import transport, transport_rows
from bot.config import DTYPES
from bot.errors import ConfigError

PARTS = ("ack", "throughput", "depth", "e2e", "batching", "busy", "transport")
TINY_SIZES = (64, 256, 512)
MODEL_SIZES = (512, 768, 1024)


def numbers(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of whole numbers, e.g. ``512,768,1024``."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers like 512,768") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one number, all greater than 0")
    return values


def parts(text: str) -> tuple[str, ...]:
    """Parse ``--only``: a comma-separated subset of PARTS."""
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(PARTS)}")
    return chosen


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; the default sizes depend on whether ``--model`` is given."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=parts, default=PARTS, help=f"parts to run (default {','.join(PARTS)})")
    parser.add_argument("--burst", type=int, default=300, help="ack: /imagine sent within one second")
    parser.add_argument("--jobs", type=int, default=200, help="throughput: jobs through the queue")
    parser.add_argument(
        "--throughput-limit", type=float, default=300.0, help="throughput: most seconds waiting for results"
    )
    parser.add_argument("--depth-rounds", type=int, default=50, help="depth: measured calls per depth")
    parser.add_argument(
        "--depth-seconds", type=float, default=5.0, help="depth: most seconds measured per depth"
    )
    parser.add_argument(
        "--depth-limit", type=float, default=150.0, help="depth: most seconds for the whole part"
    )
    parser.add_argument("--e2e-jobs", type=int, default=1000, help="e2e: /imagine per bot")
    parser.add_argument("--window", type=int, default=100, help="e2e: /imagine in flight at once")
    parser.add_argument("--e2e-limit", type=float, default=120.0, help="e2e: most seconds driving each bot")
    parser.add_argument(
        "--profile", type=Path, help="e2e: run Easel once more under py-spy, writing its samples to this file"
    )
    remote = parser.add_argument_group("remote transport")
    remote.add_argument(
        "--transport-sleep", type=float, default=0.25, help="transport: seconds each worker sleeps per batch"
    )
    remote.add_argument("--transport-batch", type=int, default=4, help="transport: one-image jobs per batch")
    remote.add_argument(
        "--transport-seconds",
        type=float,
        default=4.0,
        help="transport: ideal seconds of work per worker count",
    )
    remote.add_argument(
        "--transport-jobs", type=int, default=20, help="transport: jobs sent one at a time, each way"
    )
    remote.add_argument(
        "--transport-limit", type=float, default=60.0, help="transport: most seconds waiting on each phase"
    )
    local = parser.add_argument_group("local renderer (batching and busy)")
    local.add_argument("--model", help="a diffusers model directory (default: a tiny random model)")
    local.add_argument("--device", default="auto", help="as [local] device: auto, cpu, cuda, cuda:N, mps")
    local.add_argument("--dtype", default="auto", choices=DTYPES, help="as [local] dtype")
    local.add_argument(
        "--sizes",
        type=numbers,
        help="batching: square sizes, multiples of 8 (default 64,256,512; with --model 512,768,1024)",
    )
    local.add_argument("--steps", type=numbers, default=(4, 30), help="batching: step counts (default 4,30)")
    local.add_argument("--batch-jobs", type=int, default=8, help="batching: one-image jobs rendered each way")
    local.add_argument("--max-batch", type=int, default=4, help="batching: images per pipeline call")
    local.add_argument("--rounds", type=int, default=2, help="batching: timed rounds; the best one counts")
    local.add_argument("--busy-size", type=int, default=512, help="busy: [local] resolution")
    local.add_argument("--busy-steps", type=int, default=20, help="busy: [local] steps")
    local.add_argument("--busy-preload", type=int, default=8, help="busy: jobs queued before the burst")
    local.add_argument("--busy-burst", type=int, default=100, help="busy: /imagine sent within one second")
    local.add_argument(
        "--lag-seconds", type=float, default=3.0, help="busy: least time each lag window lasts"
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = MODEL_SIZES if args.model else TINY_SIZES
    if args.busy_preload < 1 or args.batch_jobs < 1 or args.max_batch < 1 or args.rounds < 1:
        parser.error("--busy-preload, --batch-jobs, --max-batch and --rounds must be at least 1")
    if args.transport_batch < 1 or args.transport_jobs < 1 or args.transport_sleep <= 0:
        parser.error("--transport-batch and --transport-jobs must be at least 1, --transport-sleep above 0")
    if args.lag_seconds < 0.5:
        parser.error("--lag-seconds must be at least 0.5")
    if bad := [size for size in (*args.sizes, args.busy_size) if size % 8]:
        parser.error(f"sizes must be multiples of 8 (latents are 1/8 of the image): {bad}")
    return args


@contextlib.contextmanager
def model_dir(model: str | None) -> Iterator[str]:
    """Yield the operator's model, or a tiny random one built offline for this run."""
    if model:
        yield model
        return
    from tests.tinymodels import build_text2image

    with tempfile.TemporaryDirectory(prefix="easel-bench-model-") as tmp:
        yield str(build_text2image(Path(tmp)))


def ack_rows(burst: int) -> list[Row]:
    """Measure acknowledgement latency while the (fake OpenAI) renderer is saturated."""
    ack, missed = asyncio.run(ack_latency(burst))
    return rows(
        f"ack latency, {burst} /imagine from {GUILDS} guilds in 1 s, renderer saturated",
        [
            ("p50", f"{ack['p50']:.1f} ms"),
            ("p99 (target ≤ 150 ms)", f"{ack['p99']:.1f} ms{' missed' if ack['p99'] > 150 else ''}"),
            ("max", f"{ack['max']:.1f} ms"),
            ("acks later than Discord's 3 s or missing", f"{missed} of {burst}{' missed' if missed else ''}"),
        ],
    )


def throughput_rows(jobs: int, limit_s: float) -> list[Row]:
    """Measure queue throughput with an instant renderer."""
    thr = asyncio.run(throughput(jobs, limit_s))
    metrics = [
        ("jobs/s end to end", f"{thr['jobs_per_s']:.1f}"),
        ("CPU ms per job (bot + test servers)", f"{thr['cpu_ms_per_job']:.1f}"),
        (
            "acks later than Discord's 3 s (those requests are lost)",
            f"{thr['late']:.0f} of {jobs}{' missed' if thr['late'] else ''}",
        ),
    ]
    if thr["failed"]:
        metrics.append(("jobs that failed with a message", f"{thr['failed']:.0f} missed"))
    if thr["unfinished"]:
        metrics.append((f"results not posted within {limit_s:.0f} s", f"{thr['unfinished']:.0f} missed"))
    return rows(f"queue throughput, {jobs} jobs, instant renderer", metrics)


def depth_rows(points: list[Point], rounds: int) -> list[Row]:
    """Tabulate each operation's median per depth, with its ratio to the same spread's 100-job figure."""
    out: list[Row] = []
    depths = " · ".join(f"{d:,}" for d in DEPTHS)
    for guilds in SPREADS:
        spread = {p.depth: p for p in points if p.guilds == guilds}
        name = (
            f"queue cost by depth, {guilds:,} guild(s) × {MEMBERS} members, median ms of up to {rounds} "
            f"calls (target ≤ {TARGET_RATIO}× the 100-job figure)"
        )
        metrics = []
        for op in OPERATIONS:
            base = spread[DEPTHS[0]].median(op) if DEPTHS[0] in spread else None
            cells = []
            for d in DEPTHS:
                point = spread.get(d)
                median = point.median(op) if point else None
                if point is None or median is None:
                    cells.append(point.skipped if point and point.skipped else "not measured")
                    continue
                cell = f"{median:.3g}"
                calls = len(point.times[op])
                if d != DEPTHS[0] and base:
                    ratio = median / base
                    cell += f" ({ratio:.1f}×{', missed' if ratio > TARGET_RATIO else ''})"
                if calls < rounds:
                    cell += f" [{calls} calls]"
                cells.append(cell)
            metrics.append((f"{op}, at {depths} queued", " · ".join(cells)))
        out += rows(name, metrics)
    return out


def e2e_rows(runs: list[Run], jobs: int, window: int) -> list[Row]:
    """Tabulate each bot's throughput, its own CPU and memory, and Easel's CPU over the floor's."""
    by_name = {run.name: run for run in runs}
    metrics: list[tuple[str, str]] = []
    for run in runs:
        if run.failure and not run.posted:
            metrics.append((f"{run.name}: failed", run.failure))
            continue
        easel = run.name == "easel"
        per_s, cpu = f"{run.jobs_per_s:.1f}", f"{run.cpu_ms_per_job:.2f}"
        if easel:
            per_s += " missed" if run.jobs_per_s < 200 else ""
            cpu += " missed" if run.cpu_ms_per_job > 5 else ""
        main = run.main_thread_cpu_s * 1000 / run.posted
        servers = run.servers_cpu_s * 1000 / run.posted
        metrics += [
            (f"{run.name}: jobs/s end to end{' (target ≥ 200)' if easel else ''}", per_s),
            (f"{run.name}: bot process CPU ms per job{' (target ≤ 5)' if easel else ''}", cpu),
            (
                f"{run.name}: of which the event-loop thread / other threads (SQLite, executors)",
                f"{main:.2f} / {max(run.cpu_ms_per_job - main, 0.0):.2f}",
            ),
            (f"{run.name}: bot process peak RSS", f"{run.peak_rss_bytes / 2**20:.0f} MiB"),
            (
                f"{run.name}: acks later than 3 s or missing",
                f"{run.late_acks} of {run.jobs}{' missed' if run.late_acks else ''}",
            ),
            (
                f"{run.name}: test servers' and driver's CPU ms per job (the bench's process, not the bot)",
                f"{servers:.2f} ({run.servers_cpu_s / max(run.wall_s, 1e-9):.0%} of a core)",
            ),
        ]
        if run.failure:
            metrics.append((f"{run.name}: incomplete", f"{run.failure} missed"))
        if run.profile:
            metrics.append((f"{run.name}: py-spy", run.profile))
    floor, easel = by_name.get("floor"), by_name.get("easel")
    if floor and easel and floor.posted and easel.posted and floor.cpu_s:
        ratio = easel.cpu_ms_per_job / floor.cpu_ms_per_job
        metrics.append(
            ("easel / floor, CPU per job (target ≤ 2×)", f"{ratio:.1f}×{' missed' if ratio > 2 else ''}")
        )
    hidden = by_name.get("easel, speed extra hidden")
    if hidden and easel and hidden.posted and easel.posted and hidden.cpu_s:
        saved = 1 - easel.cpu_ms_per_job / hidden.cpu_ms_per_job
        metrics.append(("bot CPU per job the speed extra saves Easel (one run each: noisy)", f"{saved:.1%}"))
    name = (
        f"end to end, {jobs} /imagine from {E2E_GUILDS} guilds, {window} in flight, instant renderer "
        f"({E2E_CONCURRENCY} render slots), each bot in its own process"
    )
    return rows(name, metrics)


def batching_rows(comparisons: list[Comparison], model: str) -> list[Row]:
    """Tabulate images/s each way and their ratio, per size and step count."""
    out: list[Row] = []
    for c in comparisons:
        name = f"batching, {model}, {c.size}×{c.size}, {c.steps} steps, {c.jobs} one-image jobs"
        if c.failure:
            out += rows(name, [("failed", c.failure)])
            continue
        out += rows(
            name,
            [
                ("images/s one at a time (`render`)", f"{c.single_per_s:.2f}"),
                (f"images/s in batches of {c.max_batch} (`render_batch`)", f"{c.batched_per_s:.2f}"),
                ("batched / one at a time", f"{c.ratio:.2f}×"),
                ("largest pixel difference, batched vs one at a time", f"{c.max_pixel_difference} of 255"),
            ],
        )
    return out


def busy_rows(busy: Busy, model: str, args: argparse.Namespace) -> list[Row]:
    """Tabulate acks and loop lag with the renderer busy, and loop lag with it idle."""
    setting = f"{model}, {args.busy_size}×{args.busy_size}, {args.busy_steps} steps"

    def lag(stats: dict[str, float], ticks: int) -> list[tuple[str, str]]:
        return [
            (f"event-loop lag p50 (10 ms sleep, {ticks} ticks)", f"{stats['p50']:.2f} ms"),
            ("event-loop lag p99", f"{stats['p99']:.2f} ms"),
            ("event-loop lag max", f"{stats['max']:.2f} ms"),
        ]

    busy_metrics = [
        ("ack p50", f"{busy.acks['p50']:.1f} ms"),
        ("ack p99 (target ≤ 150 ms)", f"{busy.acks['p99']:.1f} ms"),
        ("ack max", f"{busy.acks['max']:.1f} ms"),
        *lag(busy.busy_lag, busy.busy_ticks),
        (
            "renderer busy throughout (jobs done of those queued)",
            f"{'yes' if busy.done_at_end < busy.jobs and busy.done_at_burst < busy.preload else 'NO'}: "
            f"{busy.done_at_burst} of {busy.preload} when the burst began, "
            f"{busy.done_at_end} of {busy.jobs} at the end",
        ),
    ]
    return [
        *rows(
            f"event-loop lag, local renderer idle ({setting}), bot running",
            lag(busy.idle_lag, busy.idle_ticks),
        ),
        *rows(
            f"local renderer busy ({setting}, {args.busy_preload} jobs queued first), "
            f"{args.busy_burst} /imagine from {GUILDS} guilds in 1 s",
            busy_metrics,
        ),
    ]


def run(args: argparse.Namespace) -> tuple[list[Row], str]:
    """Run the chosen parts in order; return the table's rows and the device the local parts used."""
    out: list[Row] = []
    if "ack" in args.only:
        print("bench: ack", file=sys.stderr)
        out += ack_rows(args.burst)
    if "throughput" in args.only:
        print("bench: throughput", file=sys.stderr)
        out += throughput_rows(args.jobs, args.throughput_limit)
    if "depth" in args.only:
        points = asyncio.run(
            depth_costs(rounds=args.depth_rounds, point_s=args.depth_seconds, limit_s=args.depth_limit)
        )
        out += depth_rows(points, args.depth_rounds)
    if "e2e" in args.only:
        print("bench: e2e", file=sys.stderr)
        out += e2e_rows(
            asyncio.run(e2e(args.e2e_jobs, args.window, args.e2e_limit, args.profile)),
            args.e2e_jobs,
            args.window,
        )
    if "transport" in args.only:
        print("bench: transport", file=sys.stderr)
        out += transport_rows(
            asyncio.run(
                transport(
                    sleep_s=args.transport_sleep,
                    batch=args.transport_batch,
                    seconds=args.transport_seconds,
                    jobs=args.transport_jobs,
                    limit_s=args.transport_limit,
                )
            )
        )
    if not {"batching", "busy"} & set(args.only):
        return out, "n/a (no local model run)"
    label = Path(args.model).name if args.model else "tiny model"
    with model_dir(args.model) as model:
        if "batching" in args.only:
            comparisons = asyncio.run(
                batching(
                    model,
                    sizes=args.sizes,
                    steps=args.steps,
                    jobs=args.batch_jobs,
                    max_batch=args.max_batch,
                    rounds=args.rounds,
                    device=args.device,
                    dtype=args.dtype,
                )
            )
            out += batching_rows(comparisons, label)
        if "busy" in args.only:
            print("bench: busy", file=sys.stderr)
            busy = asyncio.run(
                busy_renderer(
                    model,
                    size=args.busy_size,
                    steps=args.busy_steps,
                    preload=args.busy_preload,
                    count=args.busy_burst,
                    seconds=args.lag_seconds,
                    device=args.device,
                    dtype=args.dtype,
                )
            )
            out += busy_rows(busy, label, args)
    return out, local_device(args.device, args.dtype)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the machine line and the table."""
    args = parse(argv)
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    load = os.getloadavg()[0]
    try:
        out, device = run(args)
    except ConfigError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    out += rows(
        "this run",
        [
            ("wall time, all parts", f"{time.monotonic() - started:.0f} s"),
            (
                "load average at start and at end (1 min; above 0 means other work shared the CPUs)",
                f"{load:.2f} · {os.getloadavg()[0]:.2f}",
            ),
        ],
    )
    print(machine(device))
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
