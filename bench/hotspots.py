"""Summarise a py-spy raw profile (``python -m bench --only e2e --profile FILE``) as CPU hot spots.

Prints, as shares of all samples, the functions of Easel (``bot/``, ``cogs/``) with the time
spent in them and everything they call, then the functions of any package that spent the time
themselves. The samples are of whichever thread held the GIL: Python's work in every thread,
not SQLite's own C code. With ``--ms-per-job`` (e.g. the bot's CPU per job from the e2e table)
each share is also given in ms per job, a rough split of that figure.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

EASEL = re.compile(r"\((?:bot|cogs)/")
LINE = re.compile(r":\d+\)$")


def read(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Return the sample count, samples per function with its callees, and samples per function alone."""
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [
            LINE.sub(")", f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))
        ]
        if not frames or not count.isdigit():
            continue
        n = int(count)
        total += n
        for frame in set(frames):  # recursion counts once
            inclusive[frame] += n
        own[frames[-1]] += n
    return total, inclusive, own


def main(argv: list[str] | None = None) -> int:
    """Print the summary of one profile."""
    parser = argparse.ArgumentParser(prog="python -m bench.hotspots", description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="a py-spy --format raw file")
    parser.add_argument("--top", type=int, default=30, help="functions per list")
    parser.add_argument("--ms-per-job", type=float, help="CPU per job the samples stand for")
    args = parser.parse_args(argv)
    total, inclusive, own = read(args.profile)
    if not total:
        print(f"{args.profile}: no samples", file=sys.stderr)
        return 1

    def show(title: str, counts: list[tuple[str, int]]) -> None:
        print(f"{title} ({total} samples)")
        for frame, n in counts[: args.top]:
            ms = f" {n / total * args.ms_per_job:6.2f} ms/job" if args.ms_per_job else ""
            print(f"{n / total:7.1%}{ms}  {frame}")

    show(
        "Easel's functions, with what they call",
        [(f, n) for f, n in inclusive.most_common() if EASEL.search(f)],
    )
    show("Any function, alone", own.most_common())
    return 0


if __name__ == "__main__":
    sys.exit(main())
