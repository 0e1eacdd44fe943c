"""/prefer: a member's own defaults in this server (show, set, clear)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot, requester
from bot.delivery import NO_MENTIONS
from bot.generation import NEGATIVE_MAX
from bot.preferences import Preferences
from bot.text import escape
from cogs.imagine import ASPECT_CHOICES, QUALITY_CHOICES


def describe(prefs: Preferences) -> str:
    """The member's preferences as /prefer show lists them."""
    if prefs.empty:
        return "You have no preferences here: /imagine uses the server's defaults. Set some with /prefer set."
    unset = "*not set*"
    return "\n".join(
        (
            "**Your preferences in this server** (options you give a command still win):",
            f"• Aspect: {prefs.aspect or unset}",
            f"• Quality: {prefs.quality or unset}",
            f"• Count: {prefs.count or unset}",
            f"• Negative prompt added to every request: {escape(prefs.negative) if prefs.negative else unset}",
            f"• Private results: {'on (only you see them)' if prefs.private else 'off'}",
            f"• Remix: {'on' if prefs.remix else 'off'}",
        )
    )


class Prefer(commands.GroupCog, group_name="prefer", group_description="Your own defaults in this server."):
    """Members' preferences."""

    def __init__(self, bot: EaselBot) -> None:
        self.services = bot.services
        super().__init__()

    @app_commands.command(name="show", description="List your preferences in this server.")
    @app_commands.guild_only()
    async def show(self, interaction: discord.Interaction[EaselBot]) -> None:
        who = requester(interaction)
        prefs = await self.services.generation.preferences.get(who.guild_id, who.user_id)
        await interaction.response.send_message(describe(prefs), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(
        name="set", description="Set your defaults; options you leave out stay as they are."
    )
    @app_commands.guild_only()
    @app_commands.describe(
        aspect="Image shape when /imagine does not say",
        quality="Render quality when /imagine does not say",
        count="How many images when a command does not say, 1 to 4",
        negative="What to keep out of every image (added to each request's own)",
        private="Send your results only to you",
        remix="Let the creative tools remix your images",
    )
    @app_commands.choices(aspect=ASPECT_CHOICES, quality=QUALITY_CHOICES)
    async def set(
        self,
        interaction: discord.Interaction[EaselBot],
        aspect: app_commands.Choice[str] | None = None,
        quality: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        negative: app_commands.Range[str, 0, NEGATIVE_MAX] | None = None,
        private: bool | None = None,
        remix: bool | None = None,
    ) -> None:
        who = requester(interaction)
        prefs = await self.services.generation.preferences.update(
            who.guild_id,
            who.user_id,
            aspect=aspect.value if aspect else None,
            quality=quality.value if quality else None,
            count=count,
            negative=negative,
            private=private,
            remix=remix,
        )
        await interaction.response.send_message(
            "✅ Saved.\n" + describe(prefs), ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="clear", description="Forget all your preferences in this server.")
    @app_commands.guild_only()
    async def clear(self, interaction: discord.Interaction[EaselBot]) -> None:
        who = requester(interaction)
        await self.services.generation.preferences.clear(who.guild_id, who.user_id)
        await interaction.response.send_message(
            "Your preferences here are cleared: /imagine uses the server's defaults again.",
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: EaselBot) -> None:
    """Add /prefer."""
    await bot.add_cog(Prefer(bot))
