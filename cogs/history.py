"""/history: a member's recent jobs in this server, ten to a page, each with a Show button."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot, EaselButton, requester
from bot.buttons import Action, ButtonRef, button, template
from bot.delivery import NO_MENTIONS
from bot.preferences import SEARCH_MAX, HistoryPage
from bot.text import escape, short_prompt
from cogs.imagine import PRIVATE_NOTES


def page_message(page: HistoryPage) -> tuple[str, discord.ui.View]:
    """The page's text and its buttons: Show per job (rows 0–1), then Previous/Next (row 2)."""
    found = f" matching “{escape(page.search)}”" if page.search else ""
    if not page.jobs:
        return f"You have no jobs{found} in this server yet. Start one with /imagine.", discord.ui.View(
            timeout=None
        )
    lines = [f"**Your jobs{found}** — page {page.page + 1} of {page.pages}"]
    view = discord.ui.View(timeout=None)
    for n, job in enumerate(page.jobs):
        when = discord.utils.format_dt(job.created_at, "f")
        lines.append(f"`#{job.id}` {when} · {job.status.value} · {short_prompt(job)}")
        # Discord allows 5 buttons a row: ten Show buttons take rows 0 and 1.
        view.add_item(button(ButtonRef(Action.RECALL, job.id), label=f"#{job.id}", emoji="🖼️", row=n // 5))
    for ref, label in ((page.previous, "Previous"), (page.next, "Next")):
        if ref is not None:
            view.add_item(button(ButtonRef(Action.HISTORY, ref), label=label, row=2))
    return "\n".join(lines), view


class HistoryButton(EaselButton, template=template(Action.HISTORY)):
    """Previous/Next: turn to the stored page the button names."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Show that page in place of this one."""
        who = requester(interaction)
        page = await interaction.client.services.generation.preferences.history_page(
            who.guild_id, who.user_id, self.target.target
        )
        content, view = page_message(page)
        await interaction.response.edit_message(content=content, view=view, allowed_mentions=NO_MENTIONS)


class RecallButton(EaselButton, template=template(Action.RECALL)):
    """Show one of one's own jobs privately, as /show does."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Apply /show's rule for the member's own job id, then send the result only to them."""
        services = interaction.client.services
        shown = await services.generation.show(requester(interaction), str(self.target.target), private=True)
        await interaction.response.defer(thinking=True, ephemeral=True)
        result = await services.delivery.result_message(shown.job)
        await interaction.edit_original_response(
            content=PRIVATE_NOTES[shown.hidden] if shown.hidden else None,
            embed=result.embed,
            attachments=[result.file()],
            allowed_mentions=NO_MENTIONS,
        )


BUTTONS = (HistoryButton, RecallButton)


class History(commands.Cog):
    """/history and its buttons (registered so clicks on pages from an earlier run work)."""

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot
        self.services = bot.services

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*BUTTONS)

    @app_commands.command(name="history", description="Your recent jobs in this server, with Show buttons.")
    @app_commands.guild_only()
    @app_commands.describe(search="Only jobs whose prompt contains this")
    async def history(
        self,
        interaction: discord.Interaction[EaselBot],
        search: app_commands.Range[str, 1, SEARCH_MAX] | None = None,
    ) -> None:
        who = requester(interaction)
        page = await self.services.generation.preferences.history(who.guild_id, who.user_id, search or "")
        content, view = page_message(page)
        await interaction.response.send_message(
            content, view=view, ephemeral=True, allowed_mentions=NO_MENTIONS
        )


async def setup(bot: EaselBot) -> None:
    """Add /history."""
    await bot.add_cog(History(bot))
