"""The built-in upscaler: high-quality Lanczos resampling on the CPU, off the event loop."""

from __future__ import annotations

import asyncio

from bot import images
from bot.renderers.base import Capabilities, Operation, ProgressCallback, RenderRequest, RenderResult


class LanczosUpscaler:
    """Doubles an image's size with Lanczos resampling and a light sharpen."""

    def __init__(self, *, max_pixels: int) -> None:
        self._max_pixels = max_pixels
        self._capabilities = Capabilities(
            sizes=(), max_count=1, variation=False, operations=(Operation.UPSCALE,)
        )

    @property
    def name(self) -> str:
        """The backend's name as members see it."""
        return "lanczos"

    @property
    def capabilities(self) -> Capabilities:
        """Upscaling only."""
        return self._capabilities

    def health(self) -> tuple[tuple[str, str], ...]:
        """Where upscales run, for /status."""
        return (("Runs on", "CPU, one upscale at a time"),)

    async def render(self, request: RenderRequest, progress: ProgressCallback | None = None) -> RenderResult:
        """Return the source image enlarged 2×."""
        if request.source is None:
            raise ValueError("an upscale request needs a source image")
        png = await asyncio.to_thread(images.upscale_lanczos, request.source, 2, max_pixels=self._max_pixels)
        return RenderResult(images=(png,), made_by="Lanczos 2× (CPU)")
