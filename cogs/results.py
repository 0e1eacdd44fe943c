"""The buttons under results and queued jobs: U/V, Reroll, Upscale, Delete, Cancel."""

from __future__ import annotations

import discord
from discord.ext import commands

from bot.app import EaselBot, EaselButton, acknowledge, reply, requester
from bot.buttons import Action, template
from bot.delivery import NO_MENTIONS
from bot.jobs import Job, JobStatus, Requester


class _NewJobButton(EaselButton, template=r"(?!)"):
    """A button that makes a job from a result; the result is checked before acknowledging."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Check the result privately, acknowledge, then queue (or, for U, post) the new job."""
        gen = interaction.client.services.generation
        # Check the job before acknowledging, so a refusal gets a private answer only.
        await gen.usable(requester(interaction), self.target.target)
        who = await acknowledge(interaction)
        job = await self.make(interaction.client, who)
        if job.status is JobStatus.RENDERED:
            await interaction.client.services.delivery.deliver(job)
        else:
            await interaction.client.services.worker.announce(job)

    async def make(self, client: EaselBot, who: Requester) -> Job:
        """Make the new job."""
        raise NotImplementedError


class PickButton(_NewJobButton, template=template(Action.PICK)):
    """U1–U4: one image of a grid as its own result (no rendering)."""

    async def make(self, client: EaselBot, who: Requester) -> Job:
        """Make the pick."""
        assert self.target.index is not None
        return await client.services.generation.pick(who, self.target.target, self.target.index)


class VaryButton(_NewJobButton, template=template(Action.VARY)):
    """V1–V4 and Vary: variations of one image."""

    async def make(self, client: EaselBot, who: Requester) -> Job:
        """Queue the variations."""
        assert self.target.index is not None
        return await client.services.generation.vary(who, self.target.target, self.target.index)


class RerollButton(_NewJobButton, template=template(Action.REROLL)):
    """The same request with a new seed."""

    async def make(self, client: EaselBot, who: Requester) -> Job:
        """Queue the reroll."""
        return await client.services.generation.reroll(who, self.target.target)


class UpscaleButton(_NewJobButton, template=template(Action.UPSCALE)):
    """A 2× upscale of a single image."""

    async def make(self, client: EaselBot, who: Requester) -> Job:
        """Queue the upscale."""
        return await client.services.generation.upscale(who, self.target.target)


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


BUTTONS = (PickButton, VaryButton, RerollButton, UpscaleButton, DeleteButton, CancelButton)


class Results(commands.Cog):
    """Registers the result and queue buttons, so clicks on messages from any earlier run work."""

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*BUTTONS)


async def setup(bot: EaselBot) -> None:
    """Add the result buttons."""
    await bot.add_cog(Results(bot))
