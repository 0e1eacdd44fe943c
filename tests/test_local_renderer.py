"""The local renderer, driven directly: a tiny random Stable Diffusion model loaded like an operator's.

The images are noise (the weights are random), but sizes, seeds, batching, progress, cancelling and the
out-of-memory fallback run through the real diffusers pipelines on the renderer's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bot.config import LocalSettings
from bot.errors import ConfigError, RenderFailed
from bot.renderers.base import Operation, Progress, RenderRequest, RenderResult
from bot.renderers.diffusion import image2image_steps
from bot.renderers.local import LocalRenderer
from tests.tinymodels import build_latent_upscaler, build_safety_checker, build_x4_upscaler

# Batched and single renders run different matrix shapes, so float rounding may differ a little.
TOLERANCE = 2
OpenRenderer = Callable[..., Awaitable[LocalRenderer]]


@pytest.fixture
async def open_renderer(tiny_model: Path) -> AsyncIterator[OpenRenderer]:
    """Load renderers of the tiny model (4 steps unless overridden) and close them after the test."""
    opened: list[LocalRenderer] = []

    async def open_(**overrides: Any) -> LocalRenderer:
        settings = LocalSettings(**{"model": str(tiny_model), "steps": 4, **overrides})
        renderer, _ = await LocalRenderer.load(settings)
        opened.append(renderer)
        return renderer

    yield open_
    for renderer in opened:
        await renderer.close()


@pytest.fixture
async def renderer(open_renderer: OpenRenderer) -> LocalRenderer:
    return await open_renderer()


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny upscaler models laid out like the real checkpoints, by kind."""
    return {
        "latent": build_latent_upscaler(tmp_path_factory.mktemp("latent-upscaler")),
        "x4": build_x4_upscaler(tmp_path_factory.mktemp("x4-upscaler")),
    }


def request(job_id: int, **fields: Any) -> RenderRequest:
    """A 64x64 text-to-image request for one image, with ``fields`` overridden."""
    values: dict[str, Any] = {"operation": Operation.GENERATE, "prompt": f"job {job_id}", "width": 64}
    values |= {"height": 64, "seed": job_id, **fields}
    return RenderRequest(job_id=job_id, **values)


def decode(data: bytes, kind: str = "PNG") -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == kind
    return image


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode(data).convert("RGB"), dtype=np.int16)


def assert_same_images(got: Sequence[bytes], expected: Sequence[bytes]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert int(np.abs(pixels(a) - pixels(b)).max()) <= TOLERANCE


def source_png(width: int = 64, height: int = 64) -> bytes:
    """A PNG of smooth colour bands, not noise, so it cannot be confused with a render of the tiny model."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack(np.broadcast_arrays(x, y, (x + y) / 2), axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """Measure the event loop's stalls while the block runs: how late each wake-up of a 10 ms timer is."""
    lags: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            expected = time.monotonic() + 0.01
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - expected)

    ticking = asyncio.create_task(tick())
    try:
        yield lags
    finally:
        done.set()
        await ticking


def rendered(outcome: RenderResult | RenderFailed) -> RenderResult:
    assert isinstance(outcome, RenderResult), f"expected images, got {outcome!r}"
    return outcome


class PipelineSpy:
    """Stands in for a diffusers pipeline: records each call's prompts and may raise out-of-memory first."""

    def __init__(self, pipe: Any, out_of_memory: Callable[[list[str]], bool] = lambda prompts: False) -> None:
        self._pipe = pipe
        self._out_of_memory = out_of_memory
        self.calls: list[list[str]] = []
        self.refused = 0

    def __call__(self, **kwargs: Any) -> Any:
        prompts = list(kwargs["prompt"])
        self.calls.append(prompts)
        if self._out_of_memory(prompts):
            self.refused += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self._pipe(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


def spy_on_text2image(renderer: LocalRenderer, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> PipelineSpy:
    spy = PipelineSpy(renderer._engine.text2image, **kwargs)
    monkeypatch.setattr(renderer._engine, "text2image", spy)
    return spy


# -- text to image -----------------------------------------------------------------------------


async def test_every_offered_size_renders_the_requested_count_at_exactly_that_size(
    renderer: LocalRenderer, tiny_model: Path
) -> None:
    sizes = renderer.capabilities.sizes
    assert (64, 64) in sizes
    assert len(set(sizes)) == 3
    for width, height in sizes:
        result = await renderer.render(request(1, width=width, height=height, count=3))
        assert [decode(png).size for png in result.images] == [(width, height)] * 3
        assert tiny_model.name in result.made_by
        assert "4 steps" in result.made_by
        first, second, third = (pixels(png) for png in result.images)
        assert not np.array_equal(first, second)
        assert not np.array_equal(second, third)


async def test_the_seed_decides_the_image(renderer: LocalRenderer) -> None:
    once = await renderer.render(request(1, prompt="a cat", seed=1234))
    again = await renderer.render(request(2, prompt="a cat", seed=1234))
    other = await renderer.render(request(3, prompt="a cat", seed=98765))
    assert np.array_equal(pixels(once.images[0]), pixels(again.images[0]))
    assert np.abs(pixels(once.images[0]) - pixels(other.images[0])).mean() > 10


async def test_a_batch_is_one_pipeline_call_with_the_same_images_as_rendering_alone(
    renderer: LocalRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        request(1, prompt="a red fox", negative="blurry", seed=11),
        request(2, prompt="a lighthouse at dusk", negative="", seed=22, count=2),
        request(3, prompt="a bowl of soup", negative="text, watermark", seed=33),
    ]
    spy = spy_on_text2image(renderer, monkeypatch)

    batched = await renderer.render_batch(requests, {})

    assert len(spy.calls) == 1
    assert len(spy.calls[0]) == 4
    for req, outcome in zip(requests, batched, strict=True):
        alone = await renderer.render(req)
        assert_same_images(rendered(outcome).images, alone.images)


# -- variation and upscale ---------------------------------------------------------------------


async def test_a_variation_redraws_the_source_at_the_requested_size_reproducibly(
    renderer: LocalRenderer,
) -> None:
    source = source_png()
    vary = request(1, operation=Operation.VARY, source=source, strength=0.6, count=2, seed=5)

    result = await renderer.render(vary)
    again = await renderer.render(vary)

    assert [decode(png).size for png in result.images] == [(64, 64)] * 2
    for png in result.images:
        assert np.abs(pixels(png) - pixels(source)).mean() > 10
    assert_same_images(again.images, result.images)
    assert "4 steps" in result.made_by


async def test_a_variation_of_another_shape_is_cropped_to_the_requested_shape(
    renderer: LocalRenderer,
) -> None:
    width, height = renderer.capabilities.sizes[1]
    vary = request(1, operation=Operation.VARY, source=source_png(64, 64), width=width, height=height)
    result = await renderer.render(vary)
    assert [decode(png).size for png in result.images] == [(width, height)]


async def test_upscale_without_an_upscaler_is_a_hires_fix_at_twice_the_size(
    renderer: LocalRenderer,
) -> None:
    upscale = request(1, operation=Operation.UPSCALE, source=source_png(64, 64), width=128, height=128)
    result = await renderer.render(upscale)
    assert [decode(png).size for png in result.images] == [(128, 128)]
    assert "hires fix" in result.made_by


@pytest.mark.parametrize(("which", "named"), [("latent", "SD latent upscaler ×2"), ("x4", "SD ×4 upscaler")])
async def test_upscale_with_an_upscaler_model_doubles_the_size_and_names_it(
    open_renderer: OpenRenderer, upscalers: dict[str, Path], which: str, named: str
) -> None:
    renderer = await open_renderer(upscaler=str(upscalers[which]))
    upscale = request(1, operation=Operation.UPSCALE, source=source_png(64, 64), width=128, height=128)
    result = await renderer.render(upscale)
    assert [decode(png).size for png in result.images] == [(128, 128)]
    assert named in result.made_by
    assert dict(renderer.health())["Upscale"] == named


@pytest.mark.parametrize("strength", [0.05, 0.3, 0.35, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("steps", [1, 2, 4, 30])
def test_img2img_always_runs_at_least_one_step(steps: int, strength: float) -> None:
    asked = image2image_steps(steps, strength)
    # diffusers runs int(asked × strength) denoising steps and fails at zero.
    assert int(asked * strength) >= 1
    assert asked >= steps


async def test_a_one_step_model_varies_and_upscales_at_low_strength(open_renderer: OpenRenderer) -> None:
    renderer = await open_renderer(steps=1)
    source = source_png()
    vary = await renderer.render(request(1, operation=Operation.VARY, source=source, strength=0.3))
    upscale = await renderer.render(
        request(2, operation=Operation.UPSCALE, source=source, width=128, height=128)
    )
    assert decode(vary.images[0]).size == (64, 64)
    assert decode(upscale.images[0]).size == (128, 128)


# -- progress, responsiveness and cancelling ---------------------------------------------------


async def test_progress_reports_steps_with_previews_at_most_once_per_interval(
    open_renderer: OpenRenderer,
) -> None:
    interval = 0.25
    steps = 200
    renderer = await open_renderer(steps=steps, progress_interval_s=interval)
    reports: list[tuple[float, Progress]] = []

    async def progress(update: Progress) -> None:
        reports.append((time.monotonic(), update))

    started = time.monotonic()
    async with loop_lag() as lags:
        result = await renderer.render(request(1, width=256, height=256), progress)
    elapsed = time.monotonic() - started

    assert decode(result.images[0]).size == (256, 256)
    assert len(reports) >= 3
    # Reports are paced on the render thread: at most one per interval over the whole render...
    assert len(reports) * interval <= elapsed
    # ...and one that reaches the loop late, because the loop stalled (a garbage collection, other
    # processes on both cores), may be followed sooner by the next, by no more than that stall.
    times = [at for at, _ in reports]
    assert min(b - a for a, b in itertools.pairwise(times)) >= interval - max(lags) - 0.05
    reported = [update.step for _, update in reports]
    assert reported == sorted(set(reported))
    assert all(0 < step < steps for step in reported)
    assert {update.total for _, update in reports} == {steps}
    for _, update in reports:
        assert update.preview is not None
        assert decode(update.preview, "WEBP").size == (256, 256)


async def test_a_failing_progress_callback_does_not_fail_the_render(open_renderer: OpenRenderer) -> None:
    renderer = await open_renderer(steps=200, progress_interval_s=0.1)
    calls = 0

    async def broken(update: Progress) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("Discord said no")

    result = await renderer.render(request(1, width=256, height=256), broken)
    assert calls >= 2, "progress stopped after the first failure"
    assert decode(result.images[0]).size == (256, 256)


async def test_the_event_loop_stays_responsive_during_a_long_render(open_renderer: OpenRenderer) -> None:
    renderer = await open_renderer(steps=60, progress_interval_s=0.2)

    async def progress(update: Progress) -> None:
        pass

    started = time.monotonic()
    async with loop_lag() as lags:
        result = await renderer.render(request(1, width=512, height=512), progress)
    elapsed = time.monotonic() - started

    assert decode(result.images[0]).size == (512, 512)
    # Rendering on the loop would stall it for the whole render. The bound is loose on purpose: with no
    # renderer at fault, a gen-2 garbage collection in this process (torch, diffusers and the test suite
    # loaded) stalls the loop for up to ~0.25 s on a 2-core machine. Tight numbers belong to bench/.
    assert elapsed > 1.0, "the render was too short to show anything"
    assert len(lags) > 30
    assert max(lags) < 0.5


async def test_cancelling_the_only_job_stops_the_render_early(open_renderer: OpenRenderer) -> None:
    renderer = await open_renderer(steps=400, progress_interval_s=0.2)
    reports: list[tuple[float, Progress]] = []

    async def progress(update: Progress) -> None:
        reports.append((time.monotonic(), update))
        renderer.cancel(7)

    started = time.monotonic()
    [outcome] = await renderer.render_batch([request(7, width=256, height=256)], {7: progress})
    elapsed = time.monotonic() - started

    rendered(outcome)
    assert reports, "the render ended before its first progress report"
    first_at, first = reports[0]
    # The pace up to the first report tells how long all the steps would have taken.
    uncancelled = (first_at - started) * first.total / first.step
    assert elapsed < uncancelled / 2
    assert max(update.step for _, update in reports) < first.total / 2


async def test_cancelling_one_job_of_a_batch_lets_the_other_finish(open_renderer: OpenRenderer) -> None:
    renderer = await open_renderer(steps=100, progress_interval_s=0.2)
    pair = [request(1, width=256, height=256), request(2, width=256, height=256)]
    reference = await renderer.render_batch(pair, {})
    cancelled: list[int] = []

    async def cancel_first(update: Progress) -> None:
        if not cancelled:
            renderer.cancel(1)
            cancelled.append(update.step)

    async def watch(update: Progress) -> None:
        pass

    outcomes = await renderer.render_batch(pair, {1: cancel_first, 2: watch})

    assert cancelled, "the render ended before its first progress report"
    assert cancelled[0] < 100
    # Had the call stopped, both images would be half-denoised and differ from the full render.
    for outcome, expected in zip(outcomes, reference, strict=True):
        assert_same_images(rendered(outcome).images, rendered(expected).images)


# -- out of memory -----------------------------------------------------------------------------


async def test_out_of_memory_splits_the_batch_and_every_job_still_gets_its_images(
    renderer: LocalRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [request(1, seed=3), request(2, seed=40, count=2), request(3, seed=500)]
    alone = [await renderer.render(req) for req in requests]
    spy = spy_on_text2image(renderer, monkeypatch, out_of_memory=lambda prompts: len(prompts) > 1)

    outcomes = await renderer.render_batch(requests, {})

    assert spy.refused >= 1
    for outcome, expected in zip(outcomes, alone, strict=True):
        assert_same_images(rendered(outcome).images, expected.images)


async def test_a_job_too_big_for_memory_fails_alone(
    renderer: LocalRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy_on_text2image(
        renderer,
        monkeypatch,
        out_of_memory=lambda prompts: len(prompts) > 1 or "enormous" in prompts[0],
    )
    requests = [request(1), request(2, prompt="something enormous"), request(3, count=2)]

    first, second, third = await renderer.render_batch(requests, {})

    assert len(rendered(first).images) == 1
    assert isinstance(second, RenderFailed)
    assert "does not fit" in str(second)
    assert "smaller size or fewer images" in str(second)
    assert len(rendered(third).images) == 2


# -- loading, safety, health -------------------------------------------------------------------


async def test_a_missing_model_path_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="downloads are off") as caught:
        await LocalRenderer.load(LocalSettings(model=str(missing)))
    assert str(missing) in str(caught.value)


async def test_a_directory_that_is_no_model_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(ConfigError, match="downloads are off") as caught:
        await LocalRenderer.load(LocalSettings(model=str(tmp_path)))
    assert str(tmp_path) in str(caught.value)


@pytest.mark.parametrize("checker", ["flags everything", "flags nothing", None])
async def test_the_safety_checker_flags_results(
    open_renderer: OpenRenderer, tmp_path: Path, checker: str | None
) -> None:
    directory = ""
    if checker is not None:
        directory = str(build_safety_checker(tmp_path, flag_everything=checker == "flags everything"))
    renderer = await open_renderer(safety_checker=directory)
    result = await renderer.render(request(1, count=2))
    assert len(result.images) == 2
    assert result.flagged is (checker == "flags everything")


async def test_health_names_the_model_and_the_device_and_counts_renders(
    open_renderer: OpenRenderer, tiny_model: Path
) -> None:
    renderer = await open_renderer(steps=100, progress_interval_s=0.1)
    health = dict(renderer.health())
    assert health["Model"] == f"{tiny_model.name} (StableDiffusionPipeline)"  # never the folder
    assert "cpu" in health["Device"]
    assert "n/a" in health["GPU memory"]
    assert "hires fix" in health["Upscale"]
    # The warm-up at load is no member's render.
    assert health["Renders"] == "0 calls, 0 images; idle"
    during: list[str] = []

    async def progress(update: Progress) -> None:
        during.append(dict(renderer.health())["Renders"])

    await renderer.render(request(1, count=2, width=256, height=256), progress)

    assert during
    assert all("rendering for" in line for line in during)
    assert dict(renderer.health())["Renders"] == "1 calls, 2 images; idle"


async def test_the_latent_upscaler_hands_sizes_it_cannot_take_to_the_hires_fix(
    open_renderer: OpenRenderer, upscalers: dict[str, Path]
) -> None:
    renderer = await open_renderer(upscaler=str(upscalers["latent"]))
    # 80×56 is one of the tiny model's sizes; the latent upscaler needs sides divisible by 32.
    upscale = request(1, operation=Operation.UPSCALE, source=source_png(80, 56), width=160, height=112)
    result = await renderer.render(upscale)
    assert [decode(png).size for png in result.images] == [(160, 112)]
    assert "hires fix" in result.made_by
