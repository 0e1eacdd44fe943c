"""/queue: a member's waiting jobs with their places in line, each with a Cancel button."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot, requester
from bot.buttons import Action, ButtonRef, button
from bot.delivery import NO_MENTIONS
from bot.i18n import _, ngettext
from bot.text import KINDS, short_prompt

# Discord allows 25 buttons on a message (5 rows of 5).
MAX_BUTTONS = 25


class Queue(commands.Cog):
    """Shows the queue."""

    def __init__(self, bot: EaselBot) -> None:
        self.services = bot.services

    @app_commands.command(name="queue", description="See your waiting jobs and cancel them.")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction[EaselBot]) -> None:
        view_data = await self.services.generation.queue_view(requester(interaction))
        lines = [
            ngettext(
                "**{count}** job is waiting in this server.",
                "**{count}** jobs are waiting in this server.",
                view_data.guild_waiting,
            )
        ]
        view = discord.ui.View(timeout=None)
        for job, place in view_data.mine:
            where = _("position {place}", place=place) if place is not None else _("rendering now")
            kind = _(KINDS[job.kind])
            line = _(
                "• Job #{id} ({kind}, `{backend}`) — {where}:",
                id=job.id,
                kind=kind,
                backend=job.backend,
                where=where,
            )
            lines.append(f"{line} {short_prompt(job)}")
            if len(view.children) < MAX_BUTTONS:
                view.add_item(
                    button(ButtonRef(Action.CANCEL, job.id), label=_("Cancel #{id}", id=job.id), emoji="✖️")
                )
        if not view_data.mine:
            lines.append(_("You have no jobs waiting. Start one with /imagine."))
        await interaction.response.send_message(
            "\n".join(lines), view=view, ephemeral=True, allowed_mentions=NO_MENTIONS
        )


async def setup(bot: EaselBot) -> None:
    """Add /queue."""
    await bot.add_cog(Queue(bot))
