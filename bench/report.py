"""The benchmarks' one output: a line describing the machine, then one markdown table of rows."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One table row; rows after the first of a benchmark leave ``benchmark`` empty."""

    benchmark: str
    metric: str
    value: str


def rows(benchmark: str, metrics: Iterable[tuple[str, str]]) -> list[Row]:
    """Make the rows of one benchmark, named on its first row only."""
    return [Row(benchmark if i == 0 else "", metric, value) for i, (metric, value) in enumerate(metrics)]


def table(all_rows: Sequence[Row]) -> str:
    """Format rows as the markdown table: benchmark | metric | value."""
    lines = ["| benchmark | metric | value |", "|---|---|---|"]
    lines += [f"|{f' {r.benchmark} ' if r.benchmark else ' '}| {r.metric} | {r.value} |" for r in all_rows]
    return "\n".join(lines)


def summary(values: Iterable[float]) -> dict[str, float]:
    """Return p50, p99 and max of ``values`` (p99: the value 1% from the top, as the ack benchmark always had)."""
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[int(len(ordered) * 0.99) - 1],
        "max": ordered[-1],
    }


def machine(device: str) -> str:
    """Describe the machine: CPU model, cores, Python, torch version and the local benchmarks' device."""
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = "not installed"
    return (
        f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch}, device {device}"
    )


def cpu_model() -> str:
    """Return the CPU's marketing name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        info = ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or "unknown CPU"


def local_device(device: str, dtype: str) -> str:
    """Name the device and dtype that ``[local] device`` and ``dtype`` resolve to on this machine."""
    from bot.renderers.diffusion import resolve_device, resolve_dtype

    resolved = resolve_device(device)
    return f"{resolved} · {str(resolve_dtype(dtype, resolved)).removeprefix('torch.')}"
