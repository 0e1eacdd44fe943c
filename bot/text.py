"""Member text as Easel shows it: literally (no markdown, no mentions) and cut to fit."""

from __future__ import annotations

import discord

from bot.i18n import N_, _
from bot.jobs import Job, JobKind, JobStatus

# Embed descriptions hold 4,096 characters; status and audit lines quote a shortened prompt.
STATUS_PROMPT_CHARS = 200
# How /queue and /history name a job's kind and state.
KINDS = {
    JobKind.IMAGINE: N_("imagine"),
    JobKind.REROLL: N_("reroll"),
    JobKind.VARIATION: N_("variation"),
    JobKind.UPSCALE: N_("upscale"),
    JobKind.PICK: N_("pick"),
}
STATUSES = {
    JobStatus.QUEUED: N_("queued"),
    JobStatus.RUNNING: N_("running"),
    JobStatus.RENDERED: N_("rendered"),
    JobStatus.POSTED: N_("posted"),
    JobStatus.FAILED: N_("failed"),
    JobStatus.CANCELLED: N_("cancelled"),
}


def escape(text: str) -> str:
    """Show member text literally: no markdown, no mentions (allowed mentions are off as well)."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def describe(job: Job) -> str:
    """Return a job's prompt as the result shows it (an uploaded image's variation may have none)."""
    parts = [escape(job.params.prompt)] if job.params.prompt else []
    if job.params.extra_prompt:
        parts.append(_("*Variation:* {prompt}", prompt=escape(job.params.extra_prompt)))
    return "\n".join(parts) or _("*Variation of an uploaded image*")


def short_prompt(job: Job) -> str:
    """Return the job's prompt cut to a status-line length, escaped."""
    text = job.params.prompt or job.params.extra_prompt or _("an uploaded image")
    cut = text if len(text) <= STATUS_PROMPT_CHARS else text[: STATUS_PROMPT_CHARS - 1] + "…"
    return escape(cut)
