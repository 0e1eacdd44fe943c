"""The torch side of the local renderer: loads a diffusers pipeline and runs it.

Importing this module imports torch and diffusers, so only ``bot.renderers.local`` imports
it, and only when a local backend is configured. Everything here runs on that renderer's one
thread: a diffusers pipeline used from two threads at once crashes or mixes images up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import diffusers.utils.logging
import numpy as np
import torch
import transformers.utils.logging
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DiffusionPipeline
from PIL import Image, ImageOps

from bot import images
from bot.config import LocalSettings
from bot.errors import ConfigError, RenderFailed
from bot.renderers.base import Operation

log = logging.getLogger(__name__)

# Linear maps from SD latents to RGB, fitted by the community (ComfyUI's latent_rgb_factors):
# a preview for the price of one small matrix product instead of a VAE decode.
SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD_LATENT_BIAS = (0.0, 0.0, 0.0)
SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_BIAS = (0.1084, -0.0175, -0.0011)
PREVIEW_SIDE = 256
FEW_STEP_MARKERS = ("turbo", "lightning", "lcm", "hyper")
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}
# diffusers schedulers by the names A1111's "parameters" text gives them, which other tools read.
SAMPLER_NAMES = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}
OUT_OF_MEMORY = (torch.cuda.OutOfMemoryError,)
HIRES_FIX = "hires fix (Lanczos 2× + img2img)"
TOO_BIG = "This image does not fit in the GPU's memory right now: try a smaller size or fewer images."


@dataclass(frozen=True)
class Work:
    """One job's share of a pipeline call: its prompts, one seed per image, and its source image."""

    job_id: int
    prompt: str
    negative: str
    seeds: tuple[int, ...]
    source: Image.Image | None = None


@dataclass(frozen=True)
class Call:
    """What every job of one pipeline call shares."""

    operation: Operation
    width: int
    height: int
    strength: float = 0.6
    guidance: float | None = None  # None: the model's default


# Called on the render thread after each denoising step with (step, total, latents, the job id
# of each latent row); returns True to interrupt the pipeline (every job in it was cancelled).
StepHook = Callable[[int, int, torch.Tensor, Sequence[int]], bool]


@dataclass(frozen=True)
class Rendered:
    """One job's images, and whether the safety checker flagged any of them."""

    images: tuple[Image.Image, ...]
    flagged: bool = False


class Engine:
    """A loaded pipeline (text-to-image, and image-to-image sharing its weights) plus optional helpers."""

    def __init__(self, settings: LocalSettings) -> None:
        started = time.perf_counter()
        # Progress bars are for notebooks; the bot shows progress in Discord.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        if self.device.type == "cpu":
            # Leave a core to the event loop: acknowledging members beats a slightly faster render.
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        self.text2image = _load(settings, self.dtype)
        self.image2image = AutoPipelineForImage2Image.from_pipe(self.text2image)
        self.upscaler = _load_upscaler(settings.upscaler, self.dtype) if settings.upscaler else None
        self.safety = _load_safety_checker(settings.safety_checker) if settings.safety_checker else None
        for pipe in (self.text2image, self.image2image, self.upscaler):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)
        self._configure(settings)
        self.native = settings.resolution or _native_resolution(self.text2image)
        name = settings.model.lower()
        few_step = any(marker in name for marker in FEW_STEP_MARKERS)
        self.steps = settings.steps or (4 if few_step else 30)
        xl = "XL" in type(self.text2image).__name__
        self.guidance = (
            settings.guidance if settings.guidance >= 0 else (0.0 if few_step else 6.0 if xl else 7.5)
        )
        latent_channels = int(getattr(self.text2image.vae.config, "latent_channels", 4))
        self._latent_rgb: tuple[torch.Tensor, torch.Tensor] | None = None
        if latent_channels == 4:
            factors, bias = (SDXL_LATENT_RGB, SDXL_LATENT_BIAS) if xl else (SD_LATENT_RGB, SD_LATENT_BIAS)
            self._latent_rgb = (torch.tensor(factors), torch.tensor(bias))
        self.pipeline_name = type(self.text2image).__name__
        self.load_seconds = time.perf_counter() - started
        self.renders = 0
        self.images_rendered = 0

    # -- description ---------------------------------------------------------------------------

    @property
    def sizes(self) -> tuple[tuple[int, int], ...]:
        """Square, landscape (3:2) and portrait (2:3) sizes of about the model's native area."""
        unit = 64 if self.native >= 512 else 8
        long = _round_to(self.native * math.sqrt(3 / 2), unit)
        short = _round_to(self.native * math.sqrt(2 / 3), unit)
        return ((self.native, self.native), (long, short), (short, long))

    @property
    def sampler(self) -> str:
        """The scheduler by the sampler name Stable Diffusion tools use ("Euler a"), else its class name."""
        name = type(self.text2image.scheduler).__name__
        return SAMPLER_NAMES.get(name, name)

    @property
    def upscaler_name(self) -> str:
        """How Upscale 2× is done, as /status says."""
        if self.upscaler is None:
            return HIRES_FIX
        return "SD latent upscaler ×2" if _is_latent_upscaler(self.upscaler) else "SD ×4 upscaler"

    def upscaled_by(self, width: int, height: int) -> str:
        """How an upscale to ``width``×``height`` is done, as its result message says."""
        if self.upscaler is None:
            return HIRES_FIX
        # The latent upscaler's UNet halves the latents three times: sources need sides divisible by 32.
        if _is_latent_upscaler(self.upscaler) and (width // 2 % 32 or height // 2 % 32):
            return HIRES_FIX
        return self.upscaler_name

    def memory(self) -> str:
        """GPU memory in use, for /status."""
        if self.device.type != "cuda":
            return f"n/a ({self.device.type})"
        used = torch.cuda.memory_allocated(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        total = torch.cuda.get_device_properties(self.device).total_memory
        return f"{used / 2**30:.1f} GiB in use, peak {peak / 2**30:.1f} of {total / 2**30:.1f} GiB"

    # -- rendering -----------------------------------------------------------------------------

    def warm_up(self) -> float:
        """Render one small image so the first member does not pay for lazy initialisation."""
        started = time.perf_counter()
        side = self.sizes[0]
        call = Call(Operation.GENERATE, side[0], side[1])
        self.run(call, [Work(0, "warm-up", "", (0,))], steps=min(self.steps, 2))
        # /status counts members' renders; the warm-up is not one.
        self.renders = self.images_rendered = 0
        return time.perf_counter() - started

    def run(
        self, call: Call, works: Sequence[Work], hook: StepHook | None = None, *, steps: int | None = None
    ) -> list[Rendered | RenderFailed]:
        """Render every work of one call; an out-of-memory error splits the call and tries again."""
        slots = [(index, seed) for index, work in enumerate(works) for seed in work.seeds]
        made: dict[tuple[int, int], Image.Image] = {}
        failed: set[int] = set()
        self._run_slots(call, works, slots, hook, steps or self.steps, made, failed)
        outcomes: list[Rendered | RenderFailed] = []
        for index, work in enumerate(works):
            if index in failed:
                outcomes.append(RenderFailed(TOO_BIG))
                continue
            pictures = tuple(made[(index, seed)] for seed in work.seeds)
            outcomes.append(Rendered(pictures, self._flagged(pictures)))
        self.renders += 1
        self.images_rendered += len(made)
        return outcomes

    def _run_slots(
        self,
        call: Call,
        works: Sequence[Work],
        slots: list[tuple[int, int]],
        hook: StepHook | None,
        steps: int,
        made: dict[tuple[int, int], Image.Image],
        failed: set[int],
    ) -> None:
        try:
            pictures = self._call(call, [(works[i], seed) for i, seed in slots], hook, steps)
        except OUT_OF_MEMORY:
            _free_memory()
            if len(slots) == 1:
                log.warning(
                    "job %d: one %dx%d image does not fit in memory",
                    works[slots[0][0]].job_id,
                    call.width,
                    call.height,
                )
                failed.add(slots[0][0])
                return
            half = len(slots) // 2
            log.warning(
                "out of memory with %d images at %dx%d; splitting the batch",
                len(slots),
                call.width,
                call.height,
            )
            self._run_slots(call, works, slots[:half], hook, steps, made, failed)
            self._run_slots(call, works, slots[half:], hook, steps, made, failed)
            return
        made.update(zip(slots, pictures, strict=True))

    def _call(
        self, call: Call, slots: Sequence[tuple[Work, int]], hook: StepHook | None, steps: int
    ) -> list[Image.Image]:
        """One pipeline call for ``slots`` (a work and one of its seeds each)."""
        prompts = [work.prompt for work, _ in slots]
        guidance = self.guidance if call.guidance is None else call.guidance
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            # CPU generators give the same noise on every device and at every batch size.
            "generator": [torch.Generator("cpu").manual_seed(seed) for _, seed in slots],
            "output_type": "pil",
        }
        if guidance > 1:
            kwargs["negative_prompt"] = [work.negative for work, _ in slots]
        if hook is not None:
            kwargs["callback_on_step_end"] = _step_callback(hook, [work.job_id for work, _ in slots])
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        if call.operation is Operation.GENERATE:
            result = self.text2image(height=call.height, width=call.width, **kwargs)
            return list(result.images)
        if call.operation is Operation.UPSCALE and self.upscaled_by(call.width, call.height) != HIRES_FIX:
            return self._upscale([_source(work) for work, _ in slots], kwargs)
        if call.operation is Operation.VARY:
            strength = call.strength
            sources = [_fit(_source(work), call.width, call.height) for work, _ in slots]
        else:
            # Hires fix: enlarge with Lanczos, then let the model redraw fine detail lightly.
            strength = self.settings.hires_strength
            sources = [
                _source(work).resize((call.width, call.height), Image.Resampling.LANCZOS) for work, _ in slots
            ]
        kwargs["num_inference_steps"] = image2image_steps(steps, strength)
        result = self.image2image(image=sources, strength=strength, **kwargs)
        return list(result.images)

    def _upscale(self, sources: list[Image.Image], kwargs: dict[str, Any]) -> list[Image.Image]:
        assert self.upscaler is not None
        # The upscalers predate step callbacks and take their own guidance.
        args = {k: kwargs[k] for k in ("prompt", "num_inference_steps", "generator", "output_type")}
        if _is_latent_upscaler(self.upscaler):
            return list(self.upscaler(image=sources, guidance_scale=0.0, **args).images)
        # The ×4 upscaler works on the half-size image: a 2× result for a quarter of the memory.
        halves = [s.resize((s.width // 2, s.height // 2), Image.Resampling.LANCZOS) for s in sources]
        return list(self.upscaler(image=halves, **args).images)

    def preview(self, latents: torch.Tensor, index: int) -> bytes | None:
        """A small WebP of image ``index`` of a batch, projected from its latents (no VAE decode)."""
        if self._latent_rgb is None or latents.ndim != 4 or latents.shape[1] != 4:
            return None
        factors, bias = self._latent_rgb
        latent = latents[index].detach().to("cpu", torch.float32)
        rgb = torch.einsum("chw,cr->hwr", latent, factors) + bias
        pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
        return images.preview(Image.fromarray(pixels), PREVIEW_SIDE)

    def _flagged(self, pictures: Sequence[Image.Image]) -> bool:
        if self.safety is None:
            return False
        checker, processor = self.safety
        clip_input = processor(list(pictures), return_tensors="pt").pixel_values.to(self.device, self.dtype)
        arrays = np.stack([np.asarray(p, dtype=np.float32) / 255 for p in pictures])
        with torch.no_grad():
            _, flags = checker(images=arrays, clip_input=clip_input)
        return any(bool(flag) for flag in flags)

    def _configure(self, settings: LocalSettings) -> None:
        pipe = self.text2image
        if settings.scheduler:
            class_name, extra = SCHEDULERS[settings.scheduler]
            scheduler_class = getattr(diffusers, class_name)
            pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **extra)
            self.image2image.scheduler = pipe.scheduler
        pipe.to(self.device)
        if self.upscaler is not None:
            self.upscaler.to(self.device)
        if self.safety is not None:
            self.safety[0].to(self.device, self.dtype)
        if settings.attention == "sliced":
            pipe.enable_attention_slicing()
        if settings.vae_tiling:
            pipe.vae.enable_tiling()
        if settings.vae_slicing:
            pipe.vae.enable_slicing()
        if settings.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
        if settings.compile:
            pipe.unet = torch.compile(pipe.unet)
            self.image2image.unet = pipe.unet


def image2image_steps(steps: int, strength: float) -> int:
    """Steps to ask img2img for so that it runs ``steps × strength`` of them, and at least one.

    diffusers runs ``int(steps × strength)`` denoising steps and fails obscurely at zero, which
    a few-step model (1 to 4 steps) at a low strength would hit.
    """
    return max(steps, math.ceil(1 / strength))


def resolve_device(name: str) -> torch.device:
    """The configured device, or the best available one for ``auto``."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"local.device = {name!r}, but torch sees no CUDA GPU (install a CUDA build of torch?)"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The configured dtype; ``auto`` is bfloat16 (or float16) on a GPU and float32 on the CPU."""
    if name != "auto":
        return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]
    if device.type == "cuda":
        # bfloat16 keeps SDXL's VAE from overflowing to black images, where the GPU has it.
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _load(settings: LocalSettings, dtype: torch.dtype) -> Any:
    model = settings.model
    local_only = not settings.allow_download
    try:
        if model.endswith((".safetensors", ".ckpt")):
            index = json.loads((Path(settings.model_config) / "model_index.json").read_text(encoding="utf-8"))
            pipeline_class = getattr(diffusers, index["_class_name"])
            extra = _no_builtin_safety(index)
            return pipeline_class.from_single_file(
                model, config=settings.model_config, local_files_only=True, dtype=dtype, **extra
            )
        index = DiffusionPipeline.load_config(model, local_files_only=local_only)
        return AutoPipelineForText2Image.from_pretrained(
            model, dtype=dtype, local_files_only=local_only, **_no_builtin_safety(index)
        )
    except Exception as exc:
        hint = "" if settings.allow_download else " (downloads are off: local.allow_download = false)"
        raise ConfigError(f"local.model {model!r} could not be loaded{hint}: {_cause(exc)}") from exc


def _no_builtin_safety(index: dict[str, Any]) -> dict[str, Any]:
    """Skip loading diffusers' built-in checker: Easel runs its own, when configured, per channel."""
    if "safety_checker" in index:
        return {"safety_checker": None, "requires_safety_checker": False}
    return {}


def _load_upscaler(directory: str, dtype: torch.dtype) -> Any:
    try:
        pipe = DiffusionPipeline.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"local.upscaler {directory!r} could not be loaded: {_cause(exc)}") from exc
    if type(pipe).__name__ not in ("StableDiffusionLatentUpscalePipeline", "StableDiffusionUpscalePipeline"):
        raise ConfigError(
            f"local.upscaler {directory!r} is a {type(pipe).__name__}; use the SD x2 latent upscaler "
            "or the SD x4 upscaler (stabilityai/sd-x2-latent-upscaler, stabilityai/stable-diffusion-x4-upscaler)"
        )
    return pipe


def _load_safety_checker(directory: str) -> tuple[Any, Any]:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import AutoImageProcessor

    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(directory, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"local.safety_checker {directory!r} could not be loaded: {_cause(exc)}") from exc
    return checker.eval(), processor


def _is_latent_upscaler(pipe: Any) -> bool:
    return type(pipe).__name__ == "StableDiffusionLatentUpscalePipeline"


def _step_callback(
    hook: StepHook, rows: Sequence[int]
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    def on_step_end(pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if hook(step + 1, int(pipe.num_timesteps), tensors["latents"], rows):
            pipe._interrupt = True  # diffusers' documented way to stop a running pipeline
        return tensors

    return on_step_end


def _source(work: Work) -> Image.Image:
    if work.source is None:
        raise RenderFailed("The source image of this job is missing.")
    return work.source


def _fit(source: Image.Image, width: int, height: int) -> Image.Image:
    if source.size == (width, height):
        return source
    # Crop to the target's shape around the centre, so nothing is stretched.
    return ImageOps.fit(source, (width, height), Image.Resampling.LANCZOS)


def _native_resolution(pipe: Any) -> int:
    sample = getattr(pipe.unet.config, "sample_size", 64)
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    return int(sample) * int(getattr(pipe, "vae_scale_factor", 8))


def _round_to(value: float, unit: int) -> int:
    return max(unit, round(value / unit) * unit)


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"
