"""The buttons under results and queued jobs: U/V, Reroll, Upscale, Delete, Cancel."""

from __future__ import annotations

import discord
from discord.ext import commands

from bot.app import EaselBot, defer_public, reply, report_error, requester, within_rate_limit
from bot.buttons import STALE, Action, ButtonRef
from bot.delivery import NO_MENTIONS
from bot.jobs import JobStatus


class Results(commands.Cog):
    """Handles every Easel button click; each click is checked against the store."""

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot
        self.services = bot.services

    @commands.Cog.listener()
    async def on_easel_button(
        self, interaction: discord.Interaction[EaselBot], ref: ButtonRef | None
    ) -> None:
        """Run the clicked action, answering any refusal ephemerally."""
        try:
            if ref is not None and ref.action.for_challenges:
                return  # the challenges cog answers these
            if not await within_rate_limit(interaction):
                return
            if ref is None:
                await reply(interaction, STALE)
            elif ref.action is Action.DELETE:
                await self._delete(interaction, ref)
            elif ref.action is Action.CANCEL:
                await self._cancel(interaction, ref)
            else:
                await self._new_job(interaction, ref)
        except Exception as exc:
            await report_error(interaction, exc)

    async def _new_job(self, interaction: discord.Interaction[EaselBot], ref: ButtonRef) -> None:
        gen = self.services.generation
        # Check the job before acknowledging publicly, so a refusal gets a private answer only.
        await gen.usable(requester(interaction), ref.target)
        who = requester(interaction, await defer_public(interaction))
        if ref.action is Action.PICK:
            assert ref.index is not None
            job = await gen.pick(who, ref.target, ref.index)
            await self.services.delivery.deliver(job)
            return
        if ref.action is Action.VARY:
            assert ref.index is not None
            job = await gen.vary(who, ref.target, ref.index)
        elif ref.action is Action.REROLL:
            job = await gen.reroll(who, ref.target)
        else:
            job = await gen.upscale(who, ref.target)
        await self.services.worker.announce(job)

    async def _delete(self, interaction: discord.Interaction[EaselBot], ref: ButtonRef) -> None:
        # Recorded before the message goes: no copy can be shown again even if deleting it fails.
        await self.services.generation.delete(requester(interaction), ref.target)
        await interaction.response.defer()
        if interaction.message is not None:
            await interaction.message.delete()

    async def _cancel(self, interaction: discord.Interaction[EaselBot], ref: ButtonRef) -> None:
        job = await self.services.generation.cancel(requester(interaction), ref.target)
        if job.status is JobStatus.RUNNING and not self.services.worker.cancel_running(job.id):
            text = f"✖️ Job #{job.id} is already rendering: its result will be discarded. Nothing will be charged."
        else:
            text = f"✖️ Job #{job.id} was cancelled. Nothing was charged."
        if interaction.message is not None and interaction.message.id == (
            job.interaction.message_id if job.interaction else None
        ):
            await interaction.response.edit_message(content=text, view=None, allowed_mentions=NO_MENTIONS)
        else:
            await reply(interaction, text)


async def setup(bot: EaselBot) -> None:
    """Add the button handler."""
    await bot.add_cog(Results(bot))
