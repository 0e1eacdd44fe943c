"""/queue: a member's waiting jobs with their places in line, each with a Cancel button."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot, requester
from bot.buttons import Action, ButtonRef, button
from bot.delivery import NO_MENTIONS
from bot.text import short_prompt

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
        lines = [f"**{view_data.guild_waiting}** job(s) are waiting in this server."]
        view = discord.ui.View(timeout=None)
        for job, place in view_data.mine:
            where = f"position {place}" if place is not None else "rendering now"
            lines.append(
                f"• Job #{job.id} ({job.kind.value}, `{job.backend}`) — {where}: {short_prompt(job)}"
            )
            if len(view.children) < MAX_BUTTONS:
                view.add_item(button(ButtonRef(Action.CANCEL, job.id), label=f"Cancel #{job.id}", emoji="✖️"))
        if not view_data.mine:
            lines.append("You have no jobs waiting. Start one with /imagine.")
        await interaction.response.send_message(
            "\n".join(lines), view=view, ephemeral=True, allowed_mentions=NO_MENTIONS
        )


async def setup(bot: EaselBot) -> None:
    """Add /queue."""
    await bot.add_cog(Queue(bot))
