"""Delivery: turns a job into Discord messages, idempotently, without touching renderers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import discord

from bot import images
from bot.buttons import cancel_view, result_view
from bot.files import ImageFiles
from bot.i18n import _
from bot.jobs import Job, JobKind, JobStatus, utcnow
from bot.lifecycle import JobLifecycle
from bot.renderers.base import Progress
from bot.result_info import option_notes
from bot.store import Store
from bot.text import describe, short_prompt

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
PROGRESS_BAR = 10
AGE_RESTRICTABLE = (
    discord.TextChannel,
    discord.VoiceChannel,
    discord.StageChannel,
    discord.ForumChannel,
    discord.Thread,
)
TITLES = {
    JobKind.IMAGINE: "Imagine",
    JobKind.REROLL: "Reroll",
    JobKind.VARIATION: "Variation",
    JobKind.UPSCALE: "Upscale 2×",
    JobKind.PICK: "Single image",
}


@dataclass(frozen=True)
class ResultMessage:
    """A job's result as Discord will show it."""

    embed: discord.Embed
    image: images.Encoded
    filename: str
    view: discord.ui.View

    def file(self) -> discord.File:
        """Return the image as a fresh upload (a discord.File is consumed by one request)."""
        return discord.File(self.image.as_file(), filename=self.filename)


@dataclass
class _JobLock:
    """One job's delivery lock and how many callers hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Delivery:
    """Posts results, failures and queue positions; a job's result is posted exactly once."""

    def __init__(
        self,
        client: discord.Client,
        store: Store,
        lifecycle: JobLifecycle,
        files: ImageFiles,
        *,
        output_format: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._client = client
        self._store = store
        self._lifecycle = lifecycle
        self._files = files
        self._format = output_format
        self._clock = clock
        # Serialises deliveries of one job, so a recovery sweep never races a live delivery.
        self._locks: dict[int, _JobLock] = {}
        # Results this process posted but could not record (the store failed): the next attempt
        # records these messages instead of posting again.
        self._unrecorded: dict[int, discord.Message] = {}
        # Jobs already rendered when this process started: an earlier one may have posted them.
        self._inherited: set[int] = set()

    async def result_message(self, job: Job) -> ResultMessage:
        """Build the result message of a rendered or posted job (also used by /show)."""
        blobs = [await self._files.read(name) for name in job.images]
        encoded = await asyncio.to_thread(images.compose_result, blobs, self._format, job.upload_limit)
        filename = f"easel-{job.id}.{encoded.filename_ext}"
        embed = discord.Embed(
            title=TITLES[job.kind], description=describe(job), colour=discord.Colour.blurple()
        )
        embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
        embed.add_field(name="Backend", value=job.made_by or job.backend)
        if job.params.seed is not None:
            embed.add_field(name="Seed", value=str(job.params.seed))
        if job.parent_id is not None:
            what = f"image {job.parent_index} of " if job.parent_index else ""
            embed.add_field(name="From", value=f"{what}job #{job.parent_id}")
        if encoded.reduced:
            embed.add_field(name="Note", value=encoded.note, inline=False)
        if notes := option_notes(job):
            embed.add_field(name=_("Options"), value="\n".join(notes), inline=False)
        embed.set_image(url=f"attachment://{filename}")
        embed.set_footer(text=f"Job #{job.id} · /show job:{job.public_id}")
        open_here = (
            not job.is_grid and await self._store.challenges.open_in(job.guild_id, job.posted_in) is not None
        )
        return ResultMessage(embed, encoded, filename, result_view(job, submit=open_here))

    def inherit(self, job_ids: Iterable[int]) -> None:
        """Note jobs rendered by an earlier process, which may have posted them without recording it."""
        self._inherited.update(job_ids)

    async def deliver(self, job: Job) -> Job:
        """Post a rendered job's result once: by interaction webhook while the token lives, else to the channel."""
        async with self._job_lock(job.id):
            job = await self._store.jobs.get(job.id)
            if job.status is not JobStatus.RENDERED:
                self._unrecorded.pop(job.id, None)
                self._inherited.discard(job.id)
                return job
            message = self._unrecorded.get(job.id) or await self._posted_earlier(job)
            if message is None:
                result = await self.result_message(job)
                message = await self._edit_status(
                    job, content="", embed=result.embed, attachments=[result.file()], view=result.view
                )
                if message is None:
                    message = await self._send_to_channel(
                        job,
                        _late_private(job) if job.private else f"<@{job.user_id}>, your images are ready.",
                        embed=result.embed,
                        file=result.file(),
                        view=result.view,
                        nonce=f"easel-r{job.id}",
                    )
                if message is None:
                    return await self._lifecycle.fail(
                        job.id, "Easel could not post the result in that channel (missing permissions?)."
                    )
                self._unrecorded[job.id] = message
            posted = await self._lifecycle.posted(job.id, message.id, message.channel.id)
            self._unrecorded.pop(job.id, None)
            self._inherited.discard(job.id)
            return posted

    @contextlib.asynccontextmanager
    async def _job_lock(self, job_id: int) -> AsyncIterator[None]:
        """Hold the job's lock; it is forgotten only when nobody holds or awaits it any more."""
        entry = self._locks.setdefault(job_id, _JobLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[job_id]

    async def _posted_earlier(self, job: Job) -> discord.Message | None:
        """The job's status message if an earlier process already made it show the result.

        That process may have died between the edit and recording it. Channel posts need no
        such check: their nonce makes Discord return the earlier message instead of a new one.
        """
        if job.id not in self._inherited:
            return None
        # Another error than "gone" leaves it unknown whether it was posted: the job waits for
        # the next attempt.
        message = await self._on_status_message(job, lambda hook, message_id: hook.fetch_message(message_id))
        prefix = f"easel-{job.id}."
        if message is None or not any(a.filename.startswith(prefix) for a in message.attachments):
            return None
        return message

    async def notify_ended(self, job: Job) -> None:
        """Tell the member their job failed or was cancelled, once."""
        if job.message_id is not None:
            return
        if job.status is JobStatus.CANCELLED:
            text = f"✖️ Job #{job.id} was cancelled. Nothing was charged."
        else:
            text = f"❌ Job #{job.id} failed: {job.error} Nothing was charged."
        message = await self._edit_status(job, content=text, embed=None, attachments=[], view=None)
        if message is None and job.status is JobStatus.FAILED:
            message = await self._send_to_channel(job, f"<@{job.user_id}> {text}", nonce=f"easel-f{job.id}")
        await self._lifecycle.notified(job.id, message.id if message else 0)

    async def show_position(self, job: Job, position: int, total: int, note: str | None = None) -> None:
        """Show a queued job's place in line (and ``note``: why it waits) while it is still queued."""
        text = (
            f"⏳ **Queued** — position **{position}** of {total} for `{job.backend}`. Job #{job.id}\n"
            + (f"{note}\n" if note else "")
            + f"> {short_prompt(job)}"
        )
        await self._show_status(job, JobStatus.QUEUED, text)

    async def show_running(self, job: Job) -> None:
        """Show that a job is rendering (only while it still is)."""
        text = f"🎨 **Rendering** on `{job.backend}`… Job #{job.id}\n> {short_prompt(job)}"
        await self._show_status(job, JobStatus.RUNNING, text)

    async def _show_status(self, job: Job, status: JobStatus, text: str) -> None:
        # Under the job's lock and after reading its state: a status edit sent late (they wait
        # a moment, see bot.worker) can then never land on top of the result.
        async with self._job_lock(job.id):
            if (await self._store.jobs.get(job.id)).status is status:
                await self._edit_status(
                    job, content=text, embed=None, attachments=[], view=cancel_view(job.id)
                )

    async def show_progress(self, job: Job, progress: Progress) -> None:
        """Show a rendering job's step, a progress bar and, when the renderer sent one, a preview."""
        done = round(PROGRESS_BAR * progress.step / max(1, progress.total))
        bar = "▰" * done + "▱" * (PROGRESS_BAR - done)
        text = (
            f"🎨 **Rendering** on `{job.backend}` — step {progress.step}/{progress.total} {bar} Job #{job.id}\n"
            f"> {short_prompt(job)}"
        )
        files = []
        if progress.preview:
            files.append(discord.File(io.BytesIO(progress.preview), filename=f"preview-{job.id}.webp"))
        await self._edit_status(job, content=text, embed=None, attachments=files, view=cancel_view(job.id))

    async def audit(self, guild_id: int, channel_id: int, text: str) -> None:
        """Post one line to a guild's audit channel, pinging nobody."""
        channel = self._client.get_partial_messageable(channel_id, guild_id=guild_id)
        await channel.send(text, allowed_mentions=NO_MENTIONS)

    def age_restricted(self, job: Job) -> bool:
        """Whether the job's channel (or a thread's parent) is marked age-restricted on Discord."""
        channel = self._client.get_channel(job.channel_id)
        return isinstance(channel, AGE_RESTRICTABLE) and channel.is_nsfw()

    async def _edit_status(self, job: Job, **fields: Any) -> discord.Message | None:
        """Edit the job's interaction response; None when the token expired or the message is gone."""
        return await self._on_status_message(
            job,
            lambda hook, message_id: hook.edit_message(message_id, allowed_mentions=NO_MENTIONS, **fields),
        )

    async def _on_status_message(
        self, job: Job, call: Callable[[discord.Webhook, int], Awaitable[discord.Message]]
    ) -> discord.Message | None:
        """Run ``call`` on the job's interaction response; None when its token or the message is gone."""
        it = job.interaction
        if it is None or it.message_id is None or not it.token_valid(self._clock()):
            return None
        try:
            return await call(
                discord.Webhook.partial(it.application_id, it.token, client=self._client), it.message_id
            )
        except (discord.NotFound, discord.Forbidden) as exc:
            # 404: the member deleted the message; 401/403: the token expired early. Fall back.
            log.info("job %d: interaction message unavailable (%s); using the channel", job.id, exc.status)
            return None
        except discord.HTTPException as exc:
            if exc.status == 401:
                return None
            raise

    async def _send_to_channel(
        self, job: Job, content: str, *, nonce: str, **fields: Any
    ) -> discord.Message | None:
        """Post in the job's channel, pinging only the requester; None when Easel may not post there."""
        channel = self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            # The nonce makes Discord drop a repeat of this post for a few minutes, which closes
            # the window between "sent" and "recorded" if Easel crashes in between.
            return await channel.send(
                content,
                nonce=nonce,
                allowed_mentions=discord.AllowedMentions(
                    everyone=False, roles=False, users=[discord.Object(job.user_id)]
                ),
                **fields,
            )
        except (discord.Forbidden, discord.NotFound) as exc:
            log.warning("job %d: cannot post in channel %d (%s)", job.id, job.channel_id, exc.status)
            return None


def _late_private(job: Job) -> str:
    """The line above a private result that had to go to the channel, saying why it is there."""
    # Discord accepts the interaction's webhook for 15 minutes; after that (a long queue, or a
    # restart) an ephemeral answer cannot be sent at all. A DM could be refused (many members
    # close them), and buttons do not work there, so the result is posted where it was asked for.
    return _(
        "<@{user}>, your images are ready. You asked for private results, but Discord lets Easel "
        "answer you privately only for 15 minutes after your command, and this one took longer, "
        "so it is posted here. You can remove it with 🗑️ Delete.",
        user=job.user_id,
    )
