"""/help: what Easel does and every command, short."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot
from bot.delivery import NO_MENTIONS

HELP = """\
**Easel** draws images from your prompts. Requests wait in a fair queue: servers take turns, \
and so do members within a server.

**/imagine** `prompt` — generate 1–4 images (options: negative, aspect, count, seed, quality).
**/variation** `image` — variations of an image you upload (PNG, JPEG, WebP or GIF).
**/queue** — your waiting jobs, with Cancel buttons.
**/show** `job` — post a job's result again, with working buttons.
**/prefer** `set` / `show` / `clear` — your own defaults here: aspect, quality, count, a negative prompt \
added to every request, private results (only you see them), remix. Options you give a command still win.
**/history** `[search]` — your recent jobs here, ten to a page, each with a button that shows it to you.
**/quota** — images you have left today and this week, and when they reset.
**/challenge** `submit` / `withdraw` / `status` — prompt challenges: enter a result (or press its 🏆 Submit \
button), vote with ⭐ in the gallery; moderators `start`, `extend`, `cancel`, `disqualify`, `new-season`.
**/leaderboard** — this season's challenge standings.
**/status** — backends, models and queues (moderators).
**/settings** — set Easel up for this server: `show`, `set`, `reset`, `channel`, `role-quota`, \
`exempt`, `block`, `ban`, `audit`, `moderator-role` (moderators).
**/usage** — images made here over 30 days as a chart, with spend (moderators).
**/help** — this message.

Under a result: **U1–U4** posts one image alone at full size, **V1–V4** / **Vary** makes variations, \
**🔄 Reroll** runs the request again with a new seed, **🔍 Upscale 2×** enlarges one image, and \
**🗑️ Delete** removes the result (its requester or a moderator). Anyone may use U, V, Reroll and \
Upscale on a public result: the new job is theirs. The job id is in every result's footer."""


class Help(commands.Cog):
    """Explains Easel."""

    @app_commands.command(name="help", description="What Easel does and how to use it.")
    async def help(self, interaction: discord.Interaction[EaselBot]) -> None:
        await interaction.response.send_message(HELP, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def setup(bot: EaselBot) -> None:
    """Add /help."""
    await bot.add_cog(Help())
