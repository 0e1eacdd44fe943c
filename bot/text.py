"""Member text as Easel shows it: literally (no markdown, no mentions) and cut to fit."""

from __future__ import annotations

import discord

from bot.jobs import Job

# Embed descriptions hold 4,096 characters; status and audit lines quote a shortened prompt.
STATUS_PROMPT_CHARS = 200


def escape(text: str) -> str:
    """Show member text literally: no markdown, no mentions (allowed mentions are off as well)."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def describe(job: Job) -> str:
    """Return a job's prompt as the result shows it (an uploaded image's variation may have none)."""
    parts = [escape(job.params.prompt)] if job.params.prompt else []
    if job.params.extra_prompt:
        parts.append(f"*Variation:* {escape(job.params.extra_prompt)}")
    return "\n".join(parts) or "*Variation of an uploaded image*"


def short_prompt(job: Job) -> str:
    """Return the job's prompt cut to a status-line length, escaped."""
    text = job.params.prompt or job.params.extra_prompt or "an uploaded image"
    cut = text if len(text) <= STATUS_PROMPT_CHARS else text[: STATUS_PROMPT_CHARS - 1] + "…"
    return escape(cut)
