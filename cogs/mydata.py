"""/mydata: a member exports or deletes what Easel keeps about them here; the data sweep's Discord events."""

from __future__ import annotations

import io

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot, EaselButton, requester
from bot.buttons import Action, ButtonRef, button, template
from bot.delivery import NO_MENTIONS
from bot.errors import NotAllowed
from bot.i18n import _, ngettext
from bot.memberdata import Deletion, Export


def export_summary(export: Export) -> str:
    """What the export's first message says about the files it and the follow-ups carry."""
    lines = [
        _("Everything Easel keeps about you in this server is in the JSON file:"),
        ngettext(
            "• {count} job, with its prompt and parameters",
            "• {count} jobs, with their prompts and parameters",
            export.jobs,
        ),
        ngettext(
            "• {count} challenge entry, and your votes",
            "• {count} challenge entries, and your votes",
            export.entries,
        ),
        _("• your quota usage, challenge points and preferences"),
    ]
    if export.parts:
        lines.append(
            ngettext(
                "Your stored images follow in {count} zip file.",
                "Your stored images follow in {count} zip files (each fits this server's upload limit).",
                len(export.parts),
            )
        )
    else:
        lines.append(_("Easel keeps no images of yours here."))
    if export.too_large:
        lines.append(
            ngettext(
                "{count} image is larger than this server's upload limit on its own and was left out "
                "(the JSON file names it); /show it to get it.",
                "{count} images are larger than this server's upload limit on their own and were left out "
                "(the JSON file names them); /show them to get them.",
                len(export.too_large),
            )
        )
    return "\n".join(lines)


def deletion_summary(deletion: Deletion, *, member: int | None = None) -> str:
    """What a deletion did; ``member`` is the member a moderator purged (None: the member themself)."""
    if member is None:
        head = _("🧹 Your data in this server is deleted:")
    else:
        head = _("🧹 The stored data of <@{member}> in this server is deleted:", member=member)
    lines = [
        head,
        ngettext(
            "• the prompts and images of {count} job",
            "• the prompts and images of {count} jobs",
            deletion.jobs,
        ),
        ngettext(
            "• {count} challenge entry, and the votes",
            "• {count} challenge entries, and the votes",
            deletion.entries,
        ),
        _("• the preferences and /history pages"),
    ]
    if deletion.cancelled:
        lines.append(
            ngettext(
                "{count} job still waiting or rendering was cancelled first; nothing was charged for it.",
                "{count} jobs still waiting or rendering were cancelled first; nothing was charged for them.",
                deletion.cancelled,
            )
        )
    lines.append(
        _(
            "Results already posted in channels stay there ({count} now) until they are deleted with the "
            "🗑️ button under each: Easel no longer has their prompts or images.",
            count=deletion.posted,
        )
    )
    if deletion.in_flight:
        lines.append(
            ngettext(
                "{count} result was being posted at that moment and was kept: run /mydata delete again once it shows.",
                "{count} results were being posted at that moment and were kept: run /mydata delete again once they show.",
                deletion.in_flight,
            )
        )
    lines.append(
        _(
            "The counts the server's quotas and budgets need stay, without prompts; after a week they no "
            "longer name anyone."
        )
    )
    return "\n".join(lines)


class ForgetButton(EaselButton, template=template(Action.FORGET)):
    """The confirmation under /mydata delete: carries the id of the member who asked."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Delete the clicker's data here, if the button is theirs, and say what was removed."""
        who = requester(interaction)
        if self.target.target != who.user_id:
            raise NotAllowed(
                _("This button deletes another member's data. Run /mydata delete to delete yours.")
            )
        await interaction.response.defer()
        deletion = await interaction.client.services.members.delete(who.guild_id, who.user_id)
        await interaction.edit_original_response(
            content=deletion_summary(deletion), view=None, allowed_mentions=NO_MENTIONS
        )


BUTTONS = (ForgetButton,)


class MyData(commands.GroupCog, group_name="mydata", group_description="What Easel keeps about you here."):
    """Members' data, and the server events that decide when a departed server's data goes."""

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot
        self.services = bot.services
        self._sweeping = False
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*BUTTONS)
        await self.services.retention.stop()

    @app_commands.command(name="export", description="Get everything Easel keeps about you here, as files.")
    @app_commands.guild_only()
    async def export(self, interaction: discord.Interaction[EaselBot]) -> None:
        who = requester(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        members = self.services.members
        export = await members.export(who.guild_id, who.user_id, who.upload_limit)
        await interaction.edit_original_response(
            content=export_summary(export),
            attachments=[discord.File(io.BytesIO(export.document), filename=export.document_name)],
            allowed_mentions=NO_MENTIONS,
        )
        # One zip per message: each fits the upload limit, two together might not.
        for n, part in enumerate(export.parts, start=1):
            data = await members.zip_part(part)
            await interaction.followup.send(
                _("Your images, part {n} of {total}.", n=n, total=len(export.parts)),
                file=discord.File(io.BytesIO(data), filename=f"easel-images-{n}-of-{len(export.parts)}.zip"),
                ephemeral=True,
                allowed_mentions=NO_MENTIONS,
            )

    @app_commands.command(name="delete", description="Delete your prompts, images and entries here.")
    @app_commands.guild_only()
    async def delete(self, interaction: discord.Interaction[EaselBot]) -> None:
        who = requester(interaction)
        view = discord.ui.View(timeout=None)
        view.add_item(
            button(
                ButtonRef(Action.FORGET, who.user_id),
                label=_("Delete my data"),
                emoji="🧹",
                style=discord.ButtonStyle.danger,
            )
        )
        text = _(
            "This deletes your prompts, images, challenge entries and votes, and your preferences in this "
            "server, for good. Jobs still waiting or rendering are cancelled first. Results already posted "
            "stay in their channels: delete those with the 🗑️ button under each. Want a copy first? "
            "Run /mydata export.\nPress the button to delete."
        )
        await interaction.response.send_message(text, view=view, ephemeral=True, allowed_mentions=NO_MENTIONS)

    # -- servers that remove Easel ---------------------------------------------------------------

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Schedule the removal of servers Easel left while it was down; start the daily sweep."""
        await self.services.retention.present([guild.id for guild in self.bot.guilds])
        if not self._sweeping:
            # After the reconcile: a server that added Easel back while it was down is not purged.
            self.services.retention.start()
            self._sweeping = True

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """A server removed Easel: its data goes after [storage] purge_after_days."""
        await self.services.retention.left([guild.id])

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        """A server added Easel (back): keep its data."""
        await self.services.retention.returned([guild.id])

    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        """A server is there (again): keep its data (Discord may announce a return this way too)."""
        await self.services.retention.returned([guild.id])


async def setup(bot: EaselBot) -> None:
    """Add /mydata."""
    await bot.add_cog(MyData(bot))
