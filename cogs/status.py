"""/status: the backends' health and load, for moderators."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot
from bot.delivery import NO_MENTIONS
from bot.errors import NotAllowed


class Status(commands.Cog):
    """Shows moderators what Easel runs on and how busy it is."""

    def __init__(self, bot: EaselBot) -> None:
        self.services = bot.services

    @app_commands.command(name="status", description="Easel's backends, models and queues (moderators).")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def status(self, interaction: discord.Interaction[EaselBot]) -> None:
        # Default permissions only hide the command; a role changed since sync is checked here.
        if not interaction.permissions.manage_guild:
            raise NotAllowed("Only moderators (Manage Server permission) can see /status.")
        embed = discord.Embed(title="Easel status", colour=discord.Colour.blurple())
        for backend in await self.services.generation.status():
            lines = [f"**{label}:** {value}" for label, value in backend.health]
            lines.append(f"**Queue:** {backend.queued} waiting, {backend.running} rendering (all servers)")
            embed.add_field(name=f"`{backend.name}`", value="\n".join(lines)[:1024], inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def setup(bot: EaselBot) -> None:
    """Add /status."""
    await bot.add_cog(Status(bot))
