"""The Renderer protocol and the plain values that cross it."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from bot.errors import RenderFailed


class Operation(enum.StrEnum):
    """What a renderer is asked to do."""

    GENERATE = "generate"
    VARY = "vary"
    UPSCALE = "upscale"


@dataclass(frozen=True)
class Usage:
    """Token usage a backend reported for one request (OpenAI's ``usage`` block)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class RenderRequest:
    """Everything a renderer needs for one job; plain data, no Discord objects.

    ``source`` is the encoded input image (PNG) for VARY and UPSCALE.
    ``width``/``height`` are already one of the sizes in the renderer's capabilities.
    """

    job_id: int
    operation: Operation
    prompt: str
    width: int
    height: int
    count: int = 1
    negative: str = ""
    seed: int = 0
    quality: str = ""
    strength: float = 0.6
    source: bytes | None = None
    extra_prompt: str = ""  # the member's own words for a variation, beside the original prompt
    guidance: float | None = None  # CFG scale; None: the renderer's own
    chaos: int = 0  # 0-100: spread the images of this request apart (guidance or strength jitter)


@dataclass(frozen=True)
class RenderResult:
    """Encoded images (PNG, JPEG or WebP bytes), plus what the result message should say."""

    images: tuple[bytes, ...]
    usage: Usage | None = None
    made_by: str = ""
    flagged: bool = False  # a safety checker found adult content: post only in age-restricted channels


@dataclass(frozen=True)
class Progress:
    """One progress report from a renderer: step ``step`` of ``total``, with an optional preview."""

    step: int
    total: int
    preview: bytes | None = None


ProgressCallback = Callable[[Progress], Awaitable[None]]


@dataclass(frozen=True)
class Capabilities:
    """What a renderer can do; the service maps member requests onto these."""

    sizes: tuple[tuple[int, int], ...]
    max_count: int = 4
    variation: bool = True
    negative_prompt: bool = False
    seeded: bool = False
    qualities: tuple[str, ...] = ()
    max_batch: int = 1
    batch_by_size: tuple[tuple[tuple[int, int], int], ...] = ()
    progress: bool = False
    cancellable: bool = False
    operations: tuple[Operation, ...] = field(default=(Operation.GENERATE, Operation.VARY))
    # Sizes beyond ``sizes`` for an --ar ratio: any multiple of ``size_step`` (0: only ``sizes``),
    # at most ``target_pixels`` in area and ``max_ratio`` long to short.
    size_step: int = 0
    target_pixels: int = 1024 * 1024
    max_ratio: float = 3.0
    guidance: float | None = None  # default CFG scale; None or at most 1: --s cannot change anything
    steps: int = 0  # denoising steps per image (0: not a setting of this backend)
    chaos: bool = False  # whether the renderer spreads a request's images apart by ``RenderRequest.chaos``
    strength: bool = False  # whether variation strength is a number it takes (not words in a prompt)

    def batch_limit(self, width: int, height: int) -> int:
        """The most images one call renders at this size (large sizes may take fewer)."""
        return dict(self.batch_by_size).get((width, height), self.max_batch)


class Renderer(Protocol):
    """A backend that renders images. Implementations must never block the event loop."""

    @property
    def name(self) -> str:
        """The backend's name as members see it (``openai``, ``local``, ``lanczos``)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this renderer accepts."""
        ...

    async def render(self, request: RenderRequest, progress: ProgressCallback | None = None) -> RenderResult:
        """Render one request; raise RenderFailed (or a subclass) with a member-safe message on failure."""
        ...

    def health(self) -> tuple[tuple[str, str], ...]:
        """What moderators see in /status: (label, value) pairs such as model, device, memory."""
        ...


@runtime_checkable
class BatchRenderer(Renderer, Protocol):
    """A renderer that renders several compatible requests in one call (``capabilities.max_batch``)."""

    async def render_batch(
        self, requests: Sequence[RenderRequest], progress: Mapping[int, ProgressCallback]
    ) -> list[RenderResult | RenderFailed]:
        """Render requests that share operation, size and strength; one result or failure per request.

        ``progress`` maps a job id to its callback. A failure of one request never fails the others.
        """
        ...

    def cancel(self, job_id: int) -> None:
        """Stop a running job's part of its call (the call stops once all its jobs are cancelled)."""
        ...


async def render_one(
    renderer: BatchRenderer, request: RenderRequest, progress: ProgressCallback | None = None
) -> RenderResult:
    """Render one request as a batch of one: ``render`` for a renderer whose unit is the batch."""
    [outcome] = await renderer.render_batch([request], {request.job_id: progress} if progress else {})
    if isinstance(outcome, RenderFailed):
        raise outcome
    return outcome


class Slots(Protocol):
    """Render slots: ``acquire`` waits for a free one (``asyncio.Semaphore`` is one)."""

    async def acquire(self) -> object:
        """Wait for a free slot and take it."""
        ...

    def release(self) -> None:
        """Give a slot back."""
        ...


@runtime_checkable
class Paced(Protocol):
    """A renderer whose capacity changes while the bot runs (remote workers come and go).

    The bot's Worker takes its render slots from ``slots`` instead of a fixed count, and reads
    ``capabilities`` again before each claim.
    """

    @property
    def slots(self) -> Slots:
        """The slots of this backend; one per batch it may render at once."""
        ...

    def paused(self) -> str | None:
        """Why its queued jobs wait although it has no slot (no worker online), for members; else None."""
        ...
