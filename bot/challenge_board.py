"""The Discord side of challenges: the announcement, the gallery of entries and the results.

Every post is a channel message with a stable nonce (Discord drops a repeat within minutes), and
the service stores each message id once posted, so a crash between the two never posts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import discord
from discord.utils import format_dt

from bot import challenges, images
from bot.buttons import vote_view
from bot.challenges import Challenge, Entry, Phase, Ranked
from bot.delivery import NO_MENTIONS
from bot.files import ImageFiles
from bot.i18n import _
from bot.store import Store
from bot.text import escape

log = logging.getLogger(__name__)

COLOUR = discord.Colour.gold()
THEME_TITLE_MAX = 200  # an embed title holds 256 characters
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's limit for servers without boosts


class DiscordBoard:
    """Posts challenge messages in the challenge's channel."""

    def __init__(
        self, client: discord.Client, store: Store, files: ImageFiles, *, output_format: str
    ) -> None:
        self._client = client
        self._store = store
        self._files = files
        self._format = output_format

    async def announce(self, challenge: Challenge) -> int:
        """Post the announcement and pin it when Easel may."""
        message = await self._send(challenge, f"easel-ca{challenge.id}", embed=_announcement(challenge))
        with contextlib.suppress(discord.HTTPException):
            # Pinning needs Manage Messages; without it the announcement simply stays unpinned.
            await message.pin(reason=f"Easel challenge #{challenge.id}")
        return message.id

    async def update_announcement(self, challenge: Challenge) -> None:
        """Show new deadlines or the end on the announcement, and unpin it once the challenge ended."""
        if challenge.announcement_message_id is None:
            return
        channel = self._client.get_partial_messageable(challenge.channel_id, guild_id=challenge.guild_id)
        message = channel.get_partial_message(challenge.announcement_message_id)
        await message.edit(embed=_announcement(challenge), allowed_mentions=NO_MENTIONS)
        if challenge.phase.ended:
            with contextlib.suppress(discord.HTTPException):
                await message.unpin(reason=f"Easel challenge #{challenge.id} ended")

    async def remind(self, challenge: Challenge) -> int:
        """Post, in the challenge's channel, that the current phase has a tenth of its time left."""
        deadline = challenge.deadline
        assert deadline is not None, "only a running phase is reminded of"
        when = {"relative": format_dt(deadline, "R"), "absolute": format_dt(deadline, "f")}
        theme = escape(challenge.theme)[:THEME_TITLE_MAX]
        if challenge.phase is Phase.SUBMISSIONS:
            text = _(
                "⏰ **{theme}**: submissions close {relative} ({absolute}). Enter your image with "
                "**Submit** under your result, or with `/challenge submit`.",
                theme=theme,
                **when,
            )
        else:
            text = _(
                "⏰ **{theme}**: voting closes {relative} ({absolute}). Press ⭐ **Vote** under the "
                "entries you like best.",
                theme=theme,
                **when,
            )
        # One nonce per phase: a repeat after a crash before the id was stored is dropped by Discord.
        message = await self._send(
            challenge, f"easel-cm{challenge.id}{challenge.phase.value[0]}", content=text
        )
        return message.id

    async def show_entry(self, challenge: Challenge, entry: Entry, number: int) -> int:
        """Post one entry of the gallery with its Vote button."""
        image = await self._image(entry)
        filename = f"entry-{entry.id}.{image.filename_ext}"
        author = "Anonymous" if challenge.anonymous else f"by <@{entry.user_id}>"
        embed = discord.Embed(title=f"Entry {number}", description=author, colour=COLOUR)
        embed.set_image(url=f"attachment://{filename}")
        embed.set_footer(text=f"Challenge #{challenge.id} · entry #{entry.id} · vote with the button")
        message = await self._send(
            challenge,
            f"easel-ce{entry.id}",
            embed=embed,
            file=discord.File(image.as_file(), filename=filename),
            view=vote_view(entry.id),
        )
        return message.id

    async def announce_results(self, challenge: Challenge, ranked: Sequence[Ranked]) -> int:
        """Post the winners: the top three side by side, the ranked list and the tiebreak rule."""
        embed = discord.Embed(
            title=f"🏆 Results: {escape(challenge.theme)[:THEME_TITLE_MAX]}",
            description=challenges.results_text(challenge, ranked),
            colour=COLOUR,
        )
        embed.set_footer(text=f"Challenge #{challenge.id} · /leaderboard for the season")
        podium = [r for r in ranked if r.votes > 0][:3]
        if not podium:
            message = await self._send(challenge, f"easel-cr{challenge.id}", embed=embed)
            return message.id
        blobs = [await self._read(r.entry) for r in podium]
        labels = [f"Entry #{r.entry.id}, {r.votes} vote{'s' if r.votes != 1 else ''}" for r in podium]
        picture = await asyncio.to_thread(
            images.podium, blobs, labels=labels, fmt=self._format, limit_bytes=DEFAULT_UPLOAD_LIMIT
        )
        filename = f"challenge-{challenge.id}-results.{picture.filename_ext}"
        embed.set_image(url=f"attachment://{filename}")
        message = await self._send(
            challenge,
            f"easel-cr{challenge.id}",
            embed=embed,
            file=discord.File(picture.as_file(), filename=filename),
        )
        return message.id

    async def _image(self, entry: Entry) -> images.Encoded:
        job = await self._store.jobs.get(entry.job_id)
        blob = await self._read(entry)
        return await asyncio.to_thread(images.compose_result, [blob], self._format, job.upload_limit)

    async def _read(self, entry: Entry) -> bytes:
        job = await self._store.jobs.get(entry.job_id)
        return await self._files.read(job.images[entry.image_index - 1])

    async def _send(self, challenge: Challenge, nonce: str, **fields: Any) -> discord.Message:
        channel = self._client.get_partial_messageable(challenge.channel_id, guild_id=challenge.guild_id)
        # The nonce makes Discord drop a repeat of this post, closing the window between a send
        # and the store recording it.
        return await channel.send(nonce=nonce, allowed_mentions=NO_MENTIONS, **fields)


def _announcement(challenge: Challenge) -> discord.Embed:
    ended = {Phase.FINISHED: " (finished)", Phase.CANCELLED: " (cancelled)"}.get(challenge.phase, "")
    embed = discord.Embed(
        title=f"🏆 Challenge: {escape(challenge.theme)[:THEME_TITLE_MAX]}{ended}",
        description=challenges.rules_text(challenge),
        colour=COLOUR if not challenge.phase.ended else discord.Colour.dark_grey(),
    )
    deadline = challenge.deadline
    if deadline is not None:
        # Discord's timestamps count down in every member's client and zone; the service edits
        # the announcement when the phase changes, so this always names the current phase's end.
        when = {"relative": format_dt(deadline, "R"), "absolute": format_dt(deadline, "f")}
        if challenge.phase is Phase.SUBMISSIONS:
            countdown = _("Submissions close {relative} ({absolute}).", **when)
        else:
            countdown = _("Voting closes {relative} ({absolute}).", **when)
        embed.add_field(name=_("⏳ Countdown"), value=countdown, inline=False)
    embed.set_footer(text=f"Challenge #{challenge.id} · /challenge status")
    return embed
