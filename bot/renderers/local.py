"""The local renderer: a diffusers pipeline on this machine's GPU (or CPU), owned by one thread.

The event loop never waits on torch: every call into the pipeline runs on the renderer's
single worker thread, and progress comes back with ``call_soon_threadsafe``. torch and
diffusers are imported on that thread when the model loads, so an install without the
``local`` extra never needs them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePath
from typing import TYPE_CHECKING

from bot import images
from bot.config import LocalSettings
from bot.errors import ConfigError, RenderFailed
from bot.renderers.base import (
    Capabilities,
    Operation,
    Progress,
    ProgressCallback,
    RenderRequest,
    RenderResult,
    render_one,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from bot.renderers.diffusion import Call, Engine, Rendered, StepHook, Work

log = logging.getLogger(__name__)

MAX_COUNT = 4
# How far --chaos 100 spreads a request's images: variation strength by ±0.25, guidance by ±50 %.
CHAOS_STRENGTH = 0.25
CHAOS_GUIDANCE = 0.5


class LocalRenderer:
    """Renders GENERATE, VARY and UPSCALE requests with a local diffusers model, in batches."""

    def __init__(self, engine: Engine, executor: ThreadPoolExecutor, settings: LocalSettings) -> None:
        self._engine = engine
        self._executor = executor
        self._settings = settings
        self._cancelled: set[int] = set()
        self._cancel_lock = threading.Lock()
        self._reporting: dict[int, asyncio.Task[None]] = {}
        self._live: set[int] = set()  # jobs whose call is running: only they may show progress
        self._closing = False
        self._busy_since: float | None = None
        self._capabilities = Capabilities(
            sizes=engine.sizes,
            max_count=MAX_COUNT,
            variation=True,
            negative_prompt=True,
            seeded=True,
            max_batch=settings.max_batch,
            batch_by_size=settings.max_batch_by_size,
            progress=True,
            cancellable=True,
            operations=(Operation.GENERATE, Operation.VARY, Operation.UPSCALE),
            # diffusers takes any multiple of 8; --ar stays within the model's native area.
            size_step=8,
            target_pixels=engine.native * engine.native,
            max_ratio=4.0,
            guidance=engine.guidance,
            steps=engine.steps,
            # Chaos spreads variations by strength, and text-to-image by guidance (which a
            # model distilled to run without guidance does not have).
            chaos=engine.guidance > 1,
            strength=True,
        )

    @classmethod
    async def load(cls, settings: LocalSettings) -> tuple[LocalRenderer, dict[str, float]]:
        """Load the model (and warm it up) on a new render thread; return the renderer and stage timings.

        Raises ConfigError naming the model and the cause when it cannot be loaded.
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-render")
        loop = asyncio.get_running_loop()
        try:
            engine = await loop.run_in_executor(executor, _load_engine, settings)
            timings = {"load": engine.load_seconds}
            if settings.warmup:
                timings["warm-up"] = await loop.run_in_executor(executor, engine.warm_up)
        except ConfigError:
            executor.shutdown(wait=False)
            raise
        except Exception as exc:
            # A device that does not exist, out of memory at warm-up, a broken model file...
            executor.shutdown(wait=False)
            detail = str(exc).strip().splitlines()
            raise ConfigError(
                f"local.model {settings.model!r} failed to start on device {settings.device!r}: "
                f"{type(exc).__name__}: {detail[0] if detail else 'no detail'}"
            ) from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        log.info(
            "local model %s loaded as %s on %s (%s) in %.1fs",
            settings.model,
            engine.pipeline_name,
            engine.device,
            str(engine.dtype).removeprefix("torch."),
            engine.load_seconds,
        )
        return cls(engine, executor, settings), timings

    @property
    def name(self) -> str:
        """The backend's name as members see it."""
        return "local"

    @property
    def capabilities(self) -> Capabilities:
        """Sizes around the model's native resolution, seeds, negative prompts, batches, progress."""
        return self._capabilities

    def health(self) -> tuple[tuple[str, str], ...]:
        """Model, device, memory and activity for /status."""
        engine = self._engine
        busy = "idle"
        if self._busy_since is not None:
            busy = f"rendering for {time.monotonic() - self._busy_since:.0f}s"
        return (
            ("Model", f"{_model_name(self._settings.model)} ({engine.pipeline_name})"),
            ("Device", f"{engine.device} · {str(engine.dtype).removeprefix('torch.')}"),
            ("GPU memory", engine.memory()),
            ("Steps · guidance", f"{engine.steps} · {engine.guidance:g}"),
            ("Upscale", engine.upscaler_name),
            ("Renders", f"{engine.renders} calls, {engine.images_rendered} images; {busy}"),
        )

    def cancel(self, job_id: int) -> None:
        """Ask a running job to stop; its pipeline call stops once every job in it is cancelled."""
        with self._cancel_lock:
            self._cancelled.add(job_id)

    async def render(self, request: RenderRequest, progress: ProgressCallback | None = None) -> RenderResult:
        """Render one request."""
        return await render_one(self, request, progress)

    async def render_batch(
        self, requests: Sequence[RenderRequest], progress: Mapping[int, ProgressCallback]
    ) -> list[RenderResult | RenderFailed]:
        """Render compatible requests in one pipeline call; one result or failure per request."""
        from bot.renderers.diffusion import Work

        # Jobs of one batch share size and strength; guidance (--s) and the spread of --chaos may
        # differ, and one pipeline call takes one of each: a call per distinct value.
        calls: dict[Call, list[Work]] = {}
        pieces: list[list[tuple[Call, Work]]] = []  # per request, its works in image order
        for request in requests:
            source = await asyncio.to_thread(images.open_rgb, request.source) if request.source else None
            seeds = tuple((request.seed + i) % 2**32 for i in range(request.count))
            mine = []
            for call, part in self._calls(request, seeds):
                work = Work(request.job_id, _prompt(request), request.negative, part, source)
                calls.setdefault(call, []).append(work)
                mine.append((call, work))
            pieces.append(mine)
        loop = asyncio.get_running_loop()
        hook = self._hook(loop, progress)
        job_ids = {request.job_id for request in requests}
        self._live |= job_ids
        try:
            outcomes = await loop.run_in_executor(self._executor, self._run, calls, hook)
        finally:
            self._live -= job_ids
            with self._cancel_lock:
                self._cancelled -= job_ids
        # A progress edit still in flight could land after the result and hide it: let it finish.
        await asyncio.gather(*(task for j in job_ids if (task := self._reporting.get(j)) is not None))
        results: list[RenderResult | RenderFailed] = []
        for request, mine in zip(requests, pieces, strict=True):
            parts = [outcomes[id(work)] for _, work in mine]
            failure = next((part for part in parts if isinstance(part, RenderFailed)), None)
            if failure is not None:
                results.append(failure)
                continue
            rendered = [part for part in parts if not isinstance(part, RenderFailed)]
            texts = [self._parameters(request, call, seed) for call, work in mine for seed in work.seeds]
            pictures = [picture for part in rendered for picture in part.images]
            encoded = await asyncio.to_thread(_encode, pictures, texts)
            flagged = any(part.flagged for part in rendered)
            results.append(RenderResult(encoded, made_by=self._made_by(mine[0][0]), flagged=flagged))
        return results

    def _calls(self, request: RenderRequest, seeds: tuple[int, ...]) -> list[tuple[Call, tuple[int, ...]]]:
        """The pipeline calls of one request with their seeds: one, or one per image under --chaos."""
        from bot.renderers.diffusion import Call

        call = Call(request.operation, request.width, request.height, request.strength, request.guidance)
        if not request.chaos or len(seeds) < 2 or request.operation is Operation.UPSCALE:
            return [(call, seeds)]
        spread = request.chaos / 100
        guidance = self._engine.guidance if request.guidance is None else request.guidance
        out: list[tuple[Call, tuple[int, ...]]] = []
        for i, seed in enumerate(seeds):
            # Evenly from -1 to 1 across the images: the first the most restrained, the last the freest.
            offset = -1 + 2 * i / (len(seeds) - 1)
            if request.operation is Operation.VARY:
                strength = round(min(max(request.strength + CHAOS_STRENGTH * spread * offset, 0.05), 1.0), 3)
                out.append((Call(call.operation, call.width, call.height, strength, call.guidance), (seed,)))
            else:
                jittered = round(max(guidance * (1 + CHAOS_GUIDANCE * spread * offset), 1.0), 2)
                out.append((Call(call.operation, call.width, call.height, call.strength, jittered), (seed,)))
        return out

    def _parameters(self, request: RenderRequest, call: Call, seed: int) -> str:
        """The A1111 "parameters" text of one image, which Stable Diffusion tools read from the PNG."""
        engine = self._engine
        lines = [_prompt(request)]
        if request.negative:
            lines.append(f"Negative prompt: {request.negative}")
        guidance = engine.guidance if call.guidance is None else call.guidance
        settings = [
            f"Steps: {engine.steps}",
            f"Sampler: {engine.sampler}",
            f"CFG scale: {guidance:g}",
            f"Seed: {seed}",
            f"Size: {call.width}x{call.height}",
            f"Model: {_model_name(self._settings.model)}",
        ]
        if call.operation is Operation.VARY:
            settings.append(f"Denoising strength: {call.strength:g}")
        lines.append(", ".join(settings))
        return "\n".join(lines)

    async def close(self) -> None:
        """Interrupt a running pipeline call (its jobs are rendered again on the next start), end the thread."""
        self._closing = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _run(self, calls: Mapping[Call, list[Work]], hook: StepHook) -> dict[int, Rendered | RenderFailed]:
        """Run each call in turn; return every work's outcome by the work's ``id()``."""
        self._busy_since = time.monotonic()
        outcomes: dict[int, Rendered | RenderFailed] = {}
        try:
            for call, works in calls.items():
                outcomes.update(zip(map(id, works), self._engine.run(call, works, hook), strict=True))
            return outcomes
        finally:
            self._busy_since = None

    def _made_by(self, call: Call) -> str:
        model = self._settings.model.rstrip("/").rsplit("/", 1)[-1]
        if call.operation is Operation.UPSCALE:
            return f"{model} · Upscale 2× by {self._engine.upscaled_by(call.width, call.height)}"
        return f"{model} · {self._engine.steps} steps"

    def _hook(self, loop: asyncio.AbstractEventLoop, progress: Mapping[int, ProgressCallback]) -> StepHook:
        """Build the hook the render thread calls after each step: progress at most every interval, and cancels."""
        interval = self._settings.progress_interval_s
        last = time.monotonic()
        engine = self._engine

        def hook(step: int, total: int, latents: torch.Tensor, rows: Sequence[int]) -> bool:
            nonlocal last
            now = time.monotonic()
            if progress and now - last >= interval and step < total:
                last = now
                for job_id in dict.fromkeys(rows):
                    if job_id in progress:
                        update = Progress(step, total, engine.preview(latents, rows.index(job_id)))
                        loop.call_soon_threadsafe(self._report, job_id, progress[job_id], update)
            with self._cancel_lock:
                return self._closing or self._cancelled.issuperset(rows)

        return hook

    def _report(self, job_id: int, callback: ProgressCallback, update: Progress) -> None:
        """Show progress on the loop; an edit still in flight makes this one skip, not queue up."""
        running = self._reporting.get(job_id)
        if job_id not in self._live or (running is not None and not running.done()):
            return
        task = asyncio.get_running_loop().create_task(self._deliver_progress(callback, update))
        self._reporting[job_id] = task
        task.add_done_callback(functools.partial(self._reported, job_id))

    def _reported(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self._reporting.get(job_id) is task:
            del self._reporting[job_id]

    @staticmethod
    async def _deliver_progress(callback: ProgressCallback, update: Progress) -> None:
        try:
            await callback(update)
        except Exception:
            log.warning("progress update failed", exc_info=True)


def _load_engine(settings: LocalSettings) -> Engine:
    try:
        from bot.renderers.diffusion import Engine
    except ImportError as exc:
        raise ConfigError(
            f"the local backend needs torch and diffusers ({exc}): install Easel with the local extra, "
            "pip install '.[local]' (on a GPU, install the CUDA build of torch first)"
        ) from None
    return Engine(settings)


def _encode(pictures: Sequence[Image.Image], texts: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(images.encode_png(p, parameters=t) for p, t in zip(pictures, texts, strict=True))


def _model_name(model: str) -> str:
    """The model as /status shows it: a Hugging Face id as is, a local path by its last part only.

    Every Manage Server member of every server reads /status: the operator's folders are not theirs.
    """
    path = PurePath(model)
    return path.name if path.is_absolute() else model


def _prompt(request: RenderRequest) -> str:
    if request.prompt and request.extra_prompt:
        return f"{request.prompt}, {request.extra_prompt}"
    return request.prompt or request.extra_prompt
