"""The buttons under results and queued jobs: U/V, Vary (Subtle/Strong), Reroll, Upscale, Parameters,
Delete, Cancel; and the Remix modal that Vary and Reroll open for members who turned remix on."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot, EaselButton, acknowledge, reply, report_error, requester
from bot.buttons import Action, template
from bot.delivery import NO_MENTIONS
from bot.i18n import _
from bot.jobs import Job, JobStatus, Requester
from bot.prompt_params import parse_prompt
from bot.result_info import parameters_text, remix_text

# Discord caps a text input at 4,000 characters; a prompt (1,000) with its parameters fits well within.
REMIX_MAX = 1800
# A modal lives only in this process: one left open past this is answered as failed by Discord.
REMIX_TIMEOUT_S = 900.0


class _NewJobButton(EaselButton, template=r"(?!)"):
    """A button that makes a job from a result; the result is checked before acknowledging."""

    remixable = False  # whether a member with remix on edits the prompt first

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Check the result privately, acknowledge (or open Remix), then queue (or, for U, post) the new job."""
        gen = interaction.client.services.generation
        # Check the job before acknowledging publicly, so a refusal gets a private answer only.
        who = requester(interaction)
        parent = await gen.usable(who, self.target.target)
        if self.remixable and (await gen.preferences.get(who.guild_id, who.user_id)).remix:
            await interaction.response.send_modal(RemixModal(self, parent))
            return
        await self.queue(interaction, None)

    async def queue(self, interaction: discord.Interaction[EaselBot], remix: str | None) -> None:
        """Acknowledge and queue the new job (``remix``: the member's edited prompt)."""
        who = await acknowledge(interaction)
        job = await self.make(interaction.client, who, remix)
        if job.status is JobStatus.RENDERED:
            await interaction.client.services.delivery.deliver(job)
        else:
            await interaction.client.services.worker.announce(job)

    async def make(self, client: EaselBot, who: Requester, remix: str | None) -> Job:
        """Make the new job."""
        raise NotImplementedError


class RemixModal(discord.ui.Modal):
    """The prompt of a result, filled in, to edit before its Vary or Reroll runs."""

    def __init__(self, button: _NewJobButton, parent: Job) -> None:
        super().__init__(title=_("Remix"), timeout=REMIX_TIMEOUT_S)
        self.button = button
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=_("Prompt"),
            style=discord.TextStyle.paragraph,
            default=remix_text(parent)[:REMIX_MAX],
            max_length=REMIX_MAX,
            required=False,
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        """Queue the job with the edited prompt (a malformed parameter in it is answered privately first)."""
        parse_prompt(self.prompt.value)
        await self.button.queue(interaction, self.prompt.value)

    # discord.py's Modal calls this without the item its BaseView signature names.
    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await report_error(interaction, error)


class PickButton(_NewJobButton, template=template(Action.PICK)):
    """U1–U4: one image of a grid as its own result (no rendering)."""

    async def make(self, client: EaselBot, who: Requester, remix: str | None) -> Job:
        """Make the pick."""
        assert self.target.index is not None
        return await client.services.generation.pick(who, self.target.target, self.target.index)


class VaryButton(_NewJobButton, template=template(Action.VARY)):
    """V1–V4, and the single Vary of results posted before Subtle and Strong: variations of one image."""

    remixable = True

    async def make(self, client: EaselBot, who: Requester, remix: str | None) -> Job:
        """Queue the variations at the configured strength."""
        assert self.target.index is not None
        return await client.services.generation.vary(who, self.target.target, self.target.index, remix=remix)


class SubtleVaryButton(_NewJobButton, template=template(Action.SUBTLE)):
    """Vary (Subtle): variations that stay close to a single image."""

    remixable = True

    async def make(self, client: EaselBot, who: Requester, remix: str | None) -> Job:
        """Queue the variations at the subtle strength."""
        gen = client.services.generation
        return await gen.vary(who, self.target.target, 1, strength=gen.vary_strengths[0], remix=remix)


class StrongVaryButton(_NewJobButton, template=template(Action.STRONG)):
    """Vary (Strong): variations that move freely away from a single image."""

    remixable = True

    async def make(self, client: EaselBot, who: Requester, remix: str | None) -> Job:
        """Queue the variations at the strong strength."""
        gen = client.services.generation
        return await gen.vary(who, self.target.target, 1, strength=gen.vary_strengths[1], remix=remix)


class RerollButton(_NewJobButton, template=template(Action.REROLL)):
    """The same request with a new seed."""

    remixable = True

    async def make(self, client: EaselBot, who: Requester, remix: str | None) -> Job:
        """Queue the reroll."""
        return await client.services.generation.reroll(who, self.target.target, remix=remix)


class UpscaleButton(_NewJobButton, template=template(Action.UPSCALE)):
    """A 2× upscale of a single image."""

    async def make(self, client: EaselBot, who: Requester, remix: str | None) -> Job:
        """Queue the upscale."""
        return await client.services.generation.upscale(who, self.target.target)


async def show_parameters(interaction: discord.Interaction[EaselBot], job: Job) -> None:
    """Answer privately with how ``job`` was made and the /imagine line that makes it again."""
    embed = discord.Embed(description=parameters_text(job), colour=discord.Colour.blurple())
    await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)


class ParametersButton(EaselButton, template=template(Action.PARAMETERS)):
    """Parameters: prompt, negative, seed, size, model, steps and guidance of a result, privately."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Show the parameters to the clicker alone, if the result is one they may use here."""
        gen = interaction.client.services.generation
        await show_parameters(interaction, await gen.usable(requester(interaction), self.target.target))


async def parameters_menu(interaction: discord.Interaction[EaselBot], message: discord.Message) -> None:
    """The message context menu "Parameters" on an Easel result."""
    gen = interaction.client.services.generation
    await show_parameters(interaction, await gen.usable_message(requester(interaction), message.id))


class DeleteButton(EaselButton, template=template(Action.DELETE)):
    """Delete a result (its requester or a moderator)."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Record the deletion, then remove the message."""
        # Recorded before the message goes: no copy can be shown again even if deleting it fails.
        await interaction.client.services.generation.delete(requester(interaction), self.target.target)
        await interaction.response.defer()
        if interaction.message is not None:
            await interaction.message.delete()


class CancelButton(EaselButton, template=template(Action.CANCEL)):
    """Cancel one's own queued or running job."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Cancel, and say what happened on the job's status message (or privately)."""
        services = interaction.client.services
        job = await services.generation.cancel(requester(interaction), self.target.target)
        if job.status is JobStatus.RUNNING and not services.worker.cancel_running(job.id):
            text = f"✖️ Job #{job.id} is already rendering: its result will be discarded. Nothing will be charged."
        else:
            text = f"✖️ Job #{job.id} was cancelled. Nothing was charged."
        if interaction.message is not None and interaction.message.id == (
            job.interaction.message_id if job.interaction else None
        ):
            await interaction.response.edit_message(content=text, view=None, allowed_mentions=NO_MENTIONS)
        else:
            await reply(interaction, text)


BUTTONS = (
    PickButton,
    VaryButton,
    SubtleVaryButton,
    StrongVaryButton,
    RerollButton,
    UpscaleButton,
    ParametersButton,
    DeleteButton,
    CancelButton,
)


class Results(commands.Cog):
    """Registers the result and queue buttons, so clicks on messages from any earlier run work."""

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Parameters", callback=parameters_menu)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*BUTTONS)
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
        self.bot.remove_dynamic_items(*BUTTONS)


async def setup(bot: EaselBot) -> None:
    """Add the result buttons."""
    await bot.add_cog(Results(bot))
