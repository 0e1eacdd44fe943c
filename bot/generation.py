"""The generation service: turns member requests and button clicks into jobs. No Discord objects here."""

from __future__ import annotations

import contextlib
import enum
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from bot.config import ImageSettings
from bot.errors import InvalidInput, NotAllowed, NotFound
from bot.files import ImageFiles
from bot.guild_settings import GuildSettings
from bot.i18n import _
from bot.images import SourceImage
from bot.jobs import Job, JobKind, JobParams, JobStatus, NewJob, Requester, utcnow
from bot.lifecycle import JobLifecycle
from bot.moderation import Moderation
from bot.preferences import MemberPreferences
from bot.prompt_params import STYLIZE_DEFAULT, PromptParams, parse_prompt
from bot.quotas import Admission
from bot.renderers.base import Capabilities, Operation, Renderer
from bot.store import RowMissing, Store
from bot.text import short_prompt

PROMPT_MAX = 1000
NEGATIVE_MAX = 500
SEED_MAX = 2**32 - 1
ASPECTS = {"square": 1.0, "portrait": 2 / 3, "landscape": 3 / 2}
# What /show takes: a public id (new ones are 10 base32 characters, those of jobs made before
# public ids existed 16 hex digits), or a member's own integer job id.
PUBLIC_ID = re.compile(r"[0-9a-z]{10,16}")
OWN_JOB_ID = re.compile(r"#?([0-9]{1,18})")
NO_SUCH_RESULT = (
    "That result does not exist, or is not one you can see. "
    "Copy the id after `/show job:` in a result's footer."
)
DELETED = "This result was deleted, so it cannot be shown or used again."
FLAGGED = "The safety checker flagged this image, so it can only be shown or used in age-restricted channels."


class Hidden(enum.Enum):
    """Why a result may not be shown or used here, though its requester may still see it privately."""

    UNSEEN = "unseen"  # the member cannot see the channel it was made or posted in
    DELETED = "deleted"
    FLAGGED = "flagged"  # and this channel is not age-restricted


@dataclass(frozen=True)
class Shown:
    """How /show may show a result: publicly here, or only to the member who asks (and why)."""

    job: Job
    private: bool
    hidden: Hidden | None = None


@dataclass(frozen=True)
class BackendStatus:
    """One backend as /status shows it to moderators."""

    name: str
    health: tuple[tuple[str, str], ...]
    queued: int
    running: int


@dataclass(frozen=True)
class QueueView:
    """What /queue shows a member."""

    mine: tuple[tuple[Job, int | None], ...]  # (job, place in line; None while rendering)
    guild_waiting: int


def pick_size(caps: Capabilities, aspect: str) -> tuple[int, int]:
    """Map an aspect name to the backend size whose shape is nearest (then whose area is nearest 1 MP)."""
    target = math.log(ASPECTS[aspect])
    return min(
        caps.sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - target), abs(s[0] * s[1] - 1024 * 1024))
    )


def size_for_ratio(caps: Capabilities, width: int, height: int) -> tuple[int, int]:
    """Map an ``--ar`` ratio to the nearest size the backend makes.

    A listed size of exactly that shape wins; a backend with flexible sizes (``size_step``) then
    gets the largest multiples of its step within its pixel area, the shape clamped to its
    ``max_ratio``; any other backend its listed size of the nearest shape.
    """
    exact = [s for s in caps.sizes if s[0] * height == s[1] * width]
    if exact:
        return min(exact, key=lambda s: abs(s[0] * s[1] - caps.target_pixels))
    if not caps.size_step:
        target = math.log(width / height)
        return min(
            caps.sizes,
            key=lambda s: (abs(math.log(s[0] / s[1]) - target), abs(s[0] * s[1] - caps.target_pixels)),
        )
    ratio = min(max(width / height, 1 / caps.max_ratio), caps.max_ratio)
    step = caps.size_step
    return (
        max(step, int(math.sqrt(caps.target_pixels * ratio)) // step * step),
        max(step, int(math.sqrt(caps.target_pixels / ratio)) // step * step),
    )


def reshape(caps: Capabilities, width: int, height: int) -> tuple[int, int]:
    """The size for a new job from an image of ``width``×``height``: the same when the backend makes it."""
    if (width, height) in caps.sizes:
        return width, height
    step = caps.size_step
    if (
        step
        and not width % step
        and not height % step
        and width * height <= caps.target_pixels
        and max(width / height, height / width) <= caps.max_ratio
    ):
        return width, height
    return pick_size(caps, _nearest_aspect(width, height))


def guidance_for(stylize: int, default: float) -> float:
    """Map Midjourney's --s (0-1000, 100 by default) onto a CFG scale around the model's default.

    The square root keeps the usual range (50-400) within half to twice the default; 1 (no
    guidance) to 20 bounds what diffusion models render sensibly.
    """
    return round(min(max(default * math.sqrt(stylize / STYLIZE_DEFAULT), 1.0), 20.0), 2)


class Generation:
    """Accepts /imagine, /variation and result-button requests as durable jobs."""

    def __init__(
        self,
        store: Store,
        lifecycle: JobLifecycle,
        files: ImageFiles,
        renderers: Mapping[str, Renderer],
        *,
        upscaler: str,
        images: ImageSettings,
        moderation: Moderation,
        offline: Mapping[str, str] | None = None,
    ) -> None:
        self._moderation = moderation
        self._store = store
        self._offline = dict(offline or {})
        self._lifecycle = lifecycle
        self._files = files
        self._renderers = renderers
        self._upscaler = upscaler
        self._images = images
        self.preferences = MemberPreferences(store)

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends members can generate with, default first."""
        return tuple(
            name for name, r in self._renderers.items() if Operation.GENERATE in r.capabilities.operations
        )

    async def imagine(
        self,
        who: Requester,
        prompt: str,
        *,
        negative: str = "",
        aspect: str | None = None,
        count: int | None = None,
        seed: int | None = None,
        quality: str = "",
        backend: str | None = None,
    ) -> Job:
        """Queue a text-to-image job; the member's preferences fill the options they left out.

        Inline parameters in ``prompt`` (``--ar 16:9 --no text``) count as options; a slash
        option given as well wins. A malformed one is refused before anything is written.
        """
        inline = parse_prompt(prompt)
        # The guild's defaults pick the backend; admit() screens the member when the job is priced.
        settings = await self._moderation.settings(who.guild_id)
        prefs = await self.preferences.get(who.guild_id, who.user_id)
        name, caps = self._backend(backend, Operation.GENERATE, settings)
        negative = negative or inline.negative
        params = JobParams(
            prompt=_clean(inline.prompt, "prompt", PROMPT_MAX, required=True),
            # The preferred negative prompt is added to every request, not replaced by its own.
            negative=_clean(", ".join(n for n in (negative, prefs.negative) if n), "negative", NEGATIVE_MAX),
            count=self._count(count or prefs.count or settings.default_count or None, caps),
            seed=_seed(inline.seed if seed is None else seed, caps),
            quality=_quality(quality or inline.quality or prefs.quality or "", caps, name),
            width=0,
            height=0,
        )
        params = _creative(params, inline, caps, seed_given=seed is not None or inline.seed is not None)
        if aspect is None and inline.ratio is not None:
            width, height = size_for_ratio(caps, *inline.ratio)
            ratio = f"{inline.ratio[0]}:{inline.ratio[1]}"
            params = replace(
                params, ratio=ratio, unhonoured=_plus(params.unhonoured, _ratio_note(ratio, width, height))
            )
        else:
            aspect = aspect or prefs.aspect or "square"
            if aspect not in ASPECTS:
                raise InvalidInput(f"aspect must be one of {', '.join(ASPECTS)}.")
            width, height = pick_size(caps, aspect)
        return await self._submit(who, JobKind.IMAGINE, name, replace(params, width=width, height=height))

    async def variation(
        self,
        who: Requester,
        upload: Callable[[], Awaitable[SourceImage]],
        *,
        prompt: str = "",
        strength: float | None = None,
        count: int | None = None,
        backend: str | None = None,
    ) -> Job:
        """Queue variations of an upload; ``upload`` fetches and validates it once every cheap check passed."""
        inline = parse_prompt(prompt)
        if inline.ratio is not None:
            raise InvalidInput(_("A variation keeps the shape of its image: remove --ar from the prompt."))
        settings = await self._moderation.settings(who.guild_id)
        prefs = await self.preferences.get(who.guild_id, who.user_id)
        name, caps = self._backend(backend, Operation.VARY, settings)
        params = JobParams(
            prompt="",
            extra_prompt=_clean(inline.prompt, "prompt", PROMPT_MAX),
            negative=_clean(
                ", ".join(n for n in (inline.negative, prefs.negative) if n), "negative", NEGATIVE_MAX
            ),
            count=self._count(count or prefs.count or settings.default_count or None, caps),
            seed=_seed(inline.seed, caps),
            quality=_quality(inline.quality, caps, name),
            strength=_strength(strength, self._images.variation_strength),
            width=0,
            height=0,
        )
        params = _creative(params, inline, caps, seed_given=inline.seed is not None)
        if strength is not None and not caps.strength:
            params = replace(params, unhonoured=_plus(params.unhonoured, "strength"))
        # Screening, prompt rules, quota, cooldown and queue limits first, writing nothing: a
        # refused request never downloads or decodes the upload. Its size, and so its price, is
        # not known yet: priced as square until then, and the store checks again when it writes.
        width, height = pick_size(caps, "square")
        admission = await self._moderation.admit(
            who, JobKind.VARIATION, name, replace(params, width=width, height=height)
        )
        await self._lifecycle.check(self._new(who, JobKind.VARIATION, name, params, None, None), admission)
        source = await upload()
        width, height = pick_size(caps, _nearest_aspect(source.width, source.height))
        params = replace(params, width=width, height=height)
        admission = replace(admission, usd=self._moderation.price(name, params, params.count))
        return await self._submit(
            who, JobKind.VARIATION, name, params, source=source.png, admission=admission
        )

    async def reroll(self, who: Requester, job_id: int, *, remix: str | None = None) -> Job:
        """Queue the same request as job ``job_id`` with a new seed (and, remixed, the member's edited prompt)."""
        parent = await self._result(who, job_id)
        if parent.kind not in (JobKind.IMAGINE, JobKind.REROLL, JobKind.VARIATION):
            raise InvalidInput("Only generated results can be rerolled.")
        caps = self._caps(parent.backend)
        # The backend's sizes may have changed since (another model configured): keep the shape.
        width, height = reshape(caps, parent.params.width, parent.params.height)
        params = replace(parent.params, seed=_seed(None, caps), width=width, height=height)
        if remix is not None:
            required = parent.kind is not JobKind.VARIATION
            params = _remixed(params, remix, caps, parent.backend, reshaped=True, required=required)
        kind = JobKind.VARIATION if parent.kind is JobKind.VARIATION else JobKind.REROLL
        source = parent.source_path if kind is JobKind.VARIATION else None
        return await self._submit(who, kind, parent.backend, params, parent=parent, source_path=source)

    async def vary(
        self,
        who: Requester,
        job_id: int,
        index: int,
        *,
        strength: float | None = None,
        remix: str | None = None,
    ) -> Job:
        """Queue variations of image ``index`` (1-based) of a result.

        ``strength`` defaults to the configured one; ``remix`` is the member's edited prompt.
        """
        parent = await self._result(who, job_id, index)
        settings = await self._moderation.settings(who.guild_id)
        name, caps = self._backend(
            parent.backend if parent.backend in self.backends else None, Operation.VARY, settings
        )
        # The source may be an upscale or come from another backend: take its shape, not its size.
        width, height = reshape(caps, parent.params.width, parent.params.height)
        params = replace(
            parent.params,
            seed=_seed(None, caps),
            count=min(parent.params.count, caps.max_count),
            strength=self._images.variation_strength if strength is None else strength,
            width=width,
            height=height,
            # A Vary button's strength is a choice of words on a backend without the number.
            unhonoured=_minus(parent.params.unhonoured, "strength", "ar"),
        )
        if remix is not None:
            params = _remixed(params, remix, caps, name, reshaped=False, required=False)
        return await self._submit(who, JobKind.VARIATION, name, params, parent=parent, index=index)

    @property
    def vary_strengths(self) -> tuple[float, float]:
        """The strengths of Vary (Subtle) and Vary (Strong)."""
        return self._images.vary_subtle_strength, self._images.vary_strong_strength

    async def upscale(self, who: Requester, job_id: int) -> Job:
        """Queue a 2× upscale of a single-image result."""
        parent = await self._result(who, job_id, 1)
        if parent.is_grid:
            raise InvalidInput("Pick one image first (U1–U4), then upscale it.")
        if parent.params.width * parent.params.height * 4 > self._images.upscale_max_pixels:
            raise InvalidInput("This image is already as large as Easel upscales to.")
        params = replace(
            parent.params, count=1, width=parent.params.width * 2, height=parent.params.height * 2
        )
        # A backend that upscales (the local model's upscaler or hires fix) redraws its own
        # results; everything else is enlarged by the built-in upscaler.
        renderer = self._renderers.get(parent.backend)
        backend = self._upscaler
        if renderer is not None and Operation.UPSCALE in renderer.capabilities.operations:
            backend = parent.backend
        return await self._submit(who, JobKind.UPSCALE, backend, params, parent=parent, index=1)

    async def pick(self, who: Requester, job_id: int, index: int) -> Job:
        """Make image ``index`` of a grid its own result (no rendering needed, so free of quota)."""
        parent = await self._result(who, job_id, index)
        await self._moderation.screen(who)
        new = self._new(who, JobKind.PICK, parent.backend, replace(parent.params, count=1), parent, index)
        return await self._lifecycle.add_rendered(new, (parent.images[index - 1],), parent.made_by)

    async def cancel(self, who: Requester, job_id: int) -> Job:
        """Cancel a member's queued job, or ask their running job to stop."""
        return await self._lifecycle.cancel(job_id, who.guild_id, who.user_id)

    async def delete(self, who: Requester, job_id: int) -> Job:
        """Record that this member deletes a result (its requester or a moderator): never shown again."""
        job = await self._find(job_id, who.guild_id)
        if job.user_id != who.user_id and not who.manage_messages:
            raise NotAllowed("Only the member who asked for this image, or a moderator, can delete it.")
        return await self._store.jobs.mark_deleted(job.id, utcnow())

    async def usable(self, who: Requester, job_id: int) -> Job:
        """Return a result this member may show or build on in this channel (the buttons' rule)."""
        job = await self._find(job_id, who.guild_id)
        hidden = _hidden(who, job)
        if hidden is Hidden.UNSEEN:
            # Reported exactly like a missing job: the answer tells nothing about other channels.
            raise NotFound(f"Job #{job_id} does not exist.")
        _require_result(job)
        if hidden is Hidden.DELETED:
            raise NotAllowed(DELETED)
        if hidden is Hidden.FLAGGED:
            raise NotAllowed(FLAGGED)
        return job

    async def show(self, who: Requester, ref: str, *, private: bool = False) -> Shown:
        """Decide how /show shows a result: publicly here, only to the member, or not at all (raises).

        A result's requester may always see it privately; anyone else only what ``usable`` allows.
        """
        job = await self._lookup(who, ref)
        mine = job.user_id == who.user_id
        hidden = _hidden(who, job)
        if hidden is Hidden.UNSEEN and not mine:
            raise NotFound(NO_SUCH_RESULT)
        _require_result(job)
        if hidden is None:
            return Shown(job, private=private)
        if mine:
            return Shown(job, private=True, hidden=hidden)
        raise NotAllowed(DELETED if hidden is Hidden.DELETED else FLAGGED)

    async def usable_message(self, who: Requester, message_id: int) -> Job:
        """Return the result posted as ``message_id`` if this member may build on it here."""
        job = await self._store.jobs.by_message(who.guild_id, message_id)
        if job is None:
            raise NotFound("That message is not an Easel result in this server. Copy the link of a result.")
        return await self.usable(who, job.id)

    async def queue_view(self, who: Requester) -> QueueView:
        """Return the member's active jobs with their places in line, and the guild's queue length."""
        active = await self._store.jobs.active_jobs(who.guild_id)
        mine = [job for job in active if job.user_id == who.user_id]
        waiting = sum(1 for job in active if job.status is JobStatus.QUEUED)
        return QueueView(tuple((job, _first(self._lifecycle.place(job.id))) for job in mine), waiting)

    async def status(self) -> list[BackendStatus]:
        """Every configured backend's health and load, plus the ones that failed to start."""
        load = await self._store.jobs.backend_load()
        report = [
            BackendStatus(name, renderer.health(), *load.get(name, (0, 0)))
            for name, renderer in self._renderers.items()
        ]
        report += [
            BackendStatus(name, (("State", f"not available: {why}"),), *load.get(name, (0, 0)))
            for name, why in self._offline.items()
        ]
        return report

    async def _submit(
        self,
        who: Requester,
        kind: JobKind,
        backend: str,
        params: JobParams,
        *,
        parent: Job | None = None,
        index: int | None = None,
        source: bytes | None = None,
        source_path: str | None = None,
        admission: Admission | None = None,
    ) -> Job:
        if admission is None:
            admission = await self._moderation.admit(who, kind, backend, params)
        if source is None and source_path is not None:
            source = await self._files.read(source_path)
        new = replace(self._new(who, kind, backend, params, parent, index), source_image=source)
        job = await self._lifecycle.submit(new, admission)
        price = f" · ~${admission.usd:.3f}" if admission.usd else ""
        await self._moderation.audit(
            who.guild_id,
            f"🎨 <@{who.user_id}> · job #{job.id} · {kind.value} on `{backend}` · cost {admission.cost}{price}"
            f" · {short_prompt(job)}",
        )
        return job

    def _new(
        self,
        who: Requester,
        kind: JobKind,
        backend: str,
        params: JobParams,
        parent: Job | None,
        index: int | None,
    ) -> NewJob:
        return NewJob(
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            kind=kind,
            backend=backend,
            params=params,
            interaction=who.interaction,
            parent_id=parent.id if parent else None,
            parent_index=index,
            upload_limit=who.upload_limit,
            # Made from a flagged image (an upscale, a variation, a pick): restricted the same way.
            flagged=parent.flagged if parent else False,
            private=who.private,
        )

    async def _find(self, job_id: int, guild_id: int) -> Job:
        try:
            return await self._store.jobs.find(job_id, guild_id)
        except RowMissing as missing:
            raise NotFound.row(missing.kind, missing.id) from None

    async def _result(self, who: Requester, job_id: int, index: int | None = None) -> Job:
        job = await self.usable(who, job_id)
        if index is not None and not 1 <= index <= len(job.images):
            raise NotFound(f"Job #{job_id} has no image {index}.")
        return job

    async def _lookup(self, who: Requester, ref: str) -> Job:
        text = ref.strip().lower()
        job: Job | None = None
        with contextlib.suppress(NotFound):
            if own := OWN_JOB_ID.fullmatch(text):
                # Integer ids count up from 1: taken for the member's own jobs only, so that nobody
                # can walk through the server's results by counting.
                found = await self._find(int(own[1]), who.guild_id)
                job = found if found.user_id == who.user_id else None
            elif PUBLIC_ID.fullmatch(text):
                job = await self._store.jobs.by_public_id(who.guild_id, text)
        if job is None:
            raise NotFound(NO_SUCH_RESULT)
        return job

    def _backend(
        self, name: str | None, operation: Operation, settings: GuildSettings
    ) -> tuple[str, Capabilities]:
        able = [n for n, r in self._renderers.items() if operation in r.capabilities.operations]
        if not able:
            raise InvalidInput("No configured backend can do that yet.")
        name = self._moderation.backend_for(settings, name, able)
        if name not in able:
            raise InvalidInput(f"Backend {name!r} is not available here; choose one of {', '.join(able)}.")
        return name, self._renderers[name].capabilities

    def _caps(self, backend: str) -> Capabilities:
        renderer = self._renderers.get(backend)
        if renderer is None:
            raise InvalidInput(f"The {backend} backend is not configured any more.")
        return renderer.capabilities

    def _count(self, count: int | None, caps: Capabilities) -> int:
        count = self._images.default_count if count is None else count
        if not 1 <= count <= min(4, caps.max_count):
            raise InvalidInput(f"count must be between 1 and {min(4, caps.max_count)}.")
        return count


def _first(place: tuple[int, int] | None) -> int | None:
    return None if place is None else place[0]


def _hidden(who: Requester, job: Job) -> Hidden | None:
    """Why ``who`` may not show or use ``job``'s result in the channel they ask in, or None."""
    if not all(who.can_view(channel) for channel in {job.channel_id, job.posted_in}):
        return Hidden.UNSEEN
    if job.deleted_at is not None:
        return Hidden.DELETED
    if job.flagged and not who.age_restricted:
        return Hidden.FLAGGED
    return None


def _require_result(job: Job) -> None:
    if job.status not in (JobStatus.RENDERED, JobStatus.POSTED) or not job.images:
        raise NotFound(f"Job #{job.id} has no result to show ({job.status.value}).")


def _clean(text: str, field: str, limit: int, *, required: bool = False) -> str:
    text = " ".join(text.split())
    if required and not text:
        raise InvalidInput(f"The {field} is empty: describe the image you want.")
    if len(text) > limit:
        raise InvalidInput(f"The {field} is {len(text)} characters long; shorten it to {limit} or fewer.")
    return text


def _seed(seed: int | None, caps: Capabilities) -> int | None:
    if not caps.seeded:
        return None
    if seed is None:
        return secrets.randbelow(SEED_MAX + 1)
    if not 0 <= seed <= SEED_MAX:
        raise InvalidInput(f"seed must be between 0 and {SEED_MAX}.")
    return seed


def _quality(quality: str, caps: Capabilities, backend: str) -> str:
    if quality and not caps.qualities:
        raise InvalidInput(
            _(
                "The {backend} backend has no quality setting: remove --q (or the quality option), "
                "or choose another backend.",
                backend=backend,
            )
        )
    if quality and quality not in caps.qualities:
        raise InvalidInput(f"quality must be one of {', '.join(caps.qualities) or 'the backend default'}.")
    return quality


def _creative(params: JobParams, inline: PromptParams, caps: Capabilities, *, seed_given: bool) -> JobParams:
    """Add what the backend does with --s, --chaos and --iw, and note every option it cannot honour."""
    default = caps.guidance if caps.guidance is not None and caps.guidance > 1 else None
    unhonoured = []
    if seed_given and not caps.seeded:
        unhonoured.append("seed")
    if params.negative and not caps.negative_prompt:
        unhonoured.append("negative")
    guidance = caps.guidance
    if inline.stylize is not None:
        if default is None:
            unhonoured.append("stylize")
        else:
            guidance = guidance_for(inline.stylize, default)
    chaos = inline.chaos or 0
    if chaos and not caps.chaos:
        unhonoured.append("chaos")
        chaos = 0
    if inline.image_weight is not None:
        unhonoured.append("iw")  # image prompts arrive in a later release
    return replace(
        params,
        guidance=guidance,
        steps=caps.steps,
        stylize=inline.stylize,
        chaos=chaos,
        image_weight=inline.image_weight,
        unhonoured=",".join(unhonoured),
    )


def _remixed(
    params: JobParams, text: str, caps: Capabilities, backend: str, *, reshaped: bool, required: bool
) -> JobParams:
    """``params`` with a remixed prompt and the inline parameters in it (a variation keeps its shape)."""
    inline = parse_prompt(text)
    prompt = _clean(inline.prompt, "prompt", PROMPT_MAX, required=required)
    new = replace(
        params,
        prompt=prompt,
        extra_prompt="",
        negative=_clean(inline.negative, "negative", NEGATIVE_MAX),
        quality=_quality(inline.quality, caps, backend),
    )
    new = _creative(new, inline, caps, seed_given=inline.seed is not None)
    if inline.seed is not None:
        new = replace(new, seed=_seed(inline.seed, caps))
    if inline.ratio is not None:
        width, height = size_for_ratio(caps, *inline.ratio)
        same = abs(math.log((width / height) / (params.width / params.height))) <= 0.02
        if not reshaped and not same:
            raise InvalidInput(_("A variation keeps the shape of its image: remove --ar from the prompt."))
        if reshaped and not same:
            ratio = f"{inline.ratio[0]}:{inline.ratio[1]}"
            new = replace(
                new,
                width=width,
                height=height,
                ratio=ratio,
                unhonoured=_plus(new.unhonoured, _ratio_note(ratio, width, height)),
            )
    return new


def _ratio_note(ratio: str, width: int, height: int) -> str:
    """``ar`` when the size made is more than 2 % off the shape asked for (the result says so)."""
    w, h = (int(side) for side in ratio.split(":"))
    return "ar" if abs(math.log((width / height) / (w / h))) > 0.02 else ""


def _plus(unhonoured: str, *names: str) -> str:
    return ",".join(n for n in (*unhonoured.split(","), *names) if n)


def _minus(unhonoured: str, *names: str) -> str:
    return ",".join(n for n in unhonoured.split(",") if n and n not in names)


def _strength(strength: float | None, default: float) -> float:
    strength = default if strength is None else strength
    if not 0.05 <= strength <= 1.0:
        raise InvalidInput("strength must be between 0.05 (close to the original) and 1.0 (free).")
    return strength


def _nearest_aspect(width: int, height: int) -> str:
    ratio = math.log(width / height)
    return min(ASPECTS, key=lambda name: abs(math.log(ASPECTS[name]) - ratio))
