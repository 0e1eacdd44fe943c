"""Batching: images per second for the same jobs rendered one call each and in batches of ``max_batch``.

Both ways go through the real LocalRenderer (``render`` and ``render_batch``), so the numbers
include what the bot pays per job besides the pipeline: prompt encoding, the VAE decode and the
PNG encode. Batching changes no result: every image keeps its own seed's noise (CPU
generators), so a batched image differs from the one-at-a-time image only by float rounding,
which the table shows as the largest pixel difference.
"""

from __future__ import annotations

import functools
import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import ImageChops

from bot import images
from bot.config import LocalSettings
from bot.errors import RenderFailed
from bot.renderers.base import Operation, RenderRequest, RenderResult
from bot.renderers.local import LocalRenderer

SUBJECTS = ("a lighthouse at dusk", "a red fox in snow", "a bowl of ramen", "a city in the rain")


@dataclass(frozen=True)
class Comparison:
    """One size and step count: images per second each way, and how far apart the images are."""

    size: int
    steps: int
    jobs: int
    max_batch: int
    single_per_s: float
    batched_per_s: float
    max_pixel_difference: int
    failure: str = ""

    @property
    def ratio(self) -> float:
        """Batched throughput over one-at-a-time throughput."""
        return self.batched_per_s / self.single_per_s if self.single_per_s else 0.0


def requests(size: int, jobs: int) -> list[RenderRequest]:
    """Make ``jobs`` one-image jobs at ``size``, each with its own prompt and seed."""
    return [
        RenderRequest(
            job_id=i + 1,
            operation=Operation.GENERATE,
            prompt=f"{SUBJECTS[i % len(SUBJECTS)]}, study {i + 1}",
            width=size,
            height=size,
            seed=1000 + i,
        )
        for i in range(jobs)
    ]


async def one_at_a_time(renderer: LocalRenderer, batch: Sequence[RenderRequest]) -> list[RenderResult]:
    """Render each request in its own pipeline call."""
    return [await renderer.render(request) for request in batch]


async def in_batches(
    renderer: LocalRenderer, batch: Sequence[RenderRequest], max_batch: int
) -> list[RenderResult]:
    """Render the requests ``max_batch`` to a pipeline call; raise the first failure."""
    results: list[RenderResult] = []
    for start in range(0, len(batch), max_batch):
        for outcome in await renderer.render_batch(batch[start : start + max_batch], {}):
            if isinstance(outcome, RenderFailed):
                raise outcome
            results.append(outcome)
    return results


async def compare(renderer: LocalRenderer, size: int, steps: int, jobs: int, rounds: int) -> Comparison:
    """Warm up at ``size``, then time both ways ``rounds`` times (alternating which goes first); keep the best."""
    max_batch = renderer.capabilities.batch_limit(size, size)
    work = requests(size, jobs)
    # The first call at a new shape pays for allocations and kernel selection: not what is measured.
    await in_batches(renderer, work[:max_batch], max_batch)
    await one_at_a_time(renderer, work[:1])
    ways = {
        "single": functools.partial(one_at_a_time, renderer, work),
        "batched": functools.partial(in_batches, renderer, work, max_batch),
    }
    best = dict.fromkeys(ways, float("inf"))
    outputs: dict[str, list[RenderResult]] = {}
    for round_ in range(rounds):
        # Alternate which way goes first, so neither always inherits the other's leftovers.
        for name in list(ways) if round_ % 2 == 0 else reversed(ways):
            started = time.perf_counter()
            outputs[name] = await ways[name]()
            best[name] = min(best[name], time.perf_counter() - started)
    return Comparison(
        size=size,
        steps=steps,
        jobs=jobs,
        max_batch=max_batch,
        single_per_s=jobs / best["single"],
        batched_per_s=jobs / best["batched"],
        max_pixel_difference=max(
            _difference(a, b) for a, b in zip(outputs["single"], outputs["batched"], strict=True)
        ),
    )


async def batching(
    model: str,
    *,
    sizes: Sequence[int],
    steps: Sequence[int],
    jobs: int,
    max_batch: int,
    rounds: int,
    device: str,
    dtype: str,
) -> list[Comparison]:
    """Compare batched and one-at-a-time rendering for every step count and size."""
    comparisons: list[Comparison] = []
    for count in steps:
        settings = LocalSettings(
            model=model, steps=count, device=device, dtype=dtype, max_batch=max_batch, warmup=False
        )
        renderer, _ = await LocalRenderer.load(settings)
        try:
            for size in sizes:
                print(f"bench: batching {size}×{size}, {count} steps", file=sys.stderr)
                try:
                    comparisons.append(await compare(renderer, size, count, jobs, rounds))
                except RenderFailed as exc:
                    comparisons.append(Comparison(size, count, jobs, max_batch, 0.0, 0.0, 0, str(exc)))
        finally:
            await renderer.close()
            del renderer
            _release_memory()
    return comparisons


def _difference(a: RenderResult, b: RenderResult) -> int:
    """Return the largest difference of any channel of any pixel between two results' images (0-255)."""
    largest = 0
    for left, right in zip(a.images, b.images, strict=True):
        extrema = ImageChops.difference(images.open_rgb(left), images.open_rgb(right)).getextrema()
        largest = max(largest, *(int(high) for _, high in extrema))
    return largest


def _release_memory() -> None:
    """Free the last model before loading the next: two big models at once may not fit on a GPU."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
