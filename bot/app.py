"""The Discord client: one AutoShardedBot that loads the cogs and routes every error one way."""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import STALE, STALE_TEMPLATE, ButtonRef, parse_custom_id
from bot.config import Settings
from bot.contests import ChallengeService
from bot.delivery import NO_MENTIONS, Delivery
from bot.errors import EaselError
from bot.generation import Generation
from bot.jobs import Interaction, Requester
from bot.memberdata import MemberData
from bot.moderation import Moderation
from bot.ratelimit import RateLimiter
from bot.retention import Retention
from bot.visibility import age_restricted, answered_privately, channel_viewer
from bot.worker import Worker

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.imagine",
    "cogs.results",
    "cogs.queue",
    "cogs.status",
    "cogs.settings",
    "cogs.quota",
    "cogs.challenges",
    "cogs.prefer",
    "cogs.history",
    "cogs.mydata",
    "cogs.help",
)


@dataclass(frozen=True)
class Services:
    """What the cogs use, built by the composition root."""

    settings: Settings
    generation: Generation
    delivery: Delivery
    worker: Worker
    moderation: Moderation
    contests: ChallengeService
    actions: RateLimiter  # every command and button press of a member takes one
    members: MemberData
    retention: Retention


async def reply(interaction: discord.Interaction[Any], text: str) -> None:
    """Answer ephemerally, whether or not the interaction was already acknowledged."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        # A public "thinking" message would stay forever: replace it with the private answer.
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.debug("deferred response of interaction %s already gone", interaction.id)
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def report_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Show an EaselError's text, or an error id for anything unexpected (logged with that id)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, EaselError):
        text = str(error)
    elif isinstance(error, app_commands.CheckFailure):
        text = str(error) or "You can't use this command here."
    else:
        error_id = uuid.uuid4().hex[:8]
        log.error("interaction %s failed (error %s)", interaction.id, error_id, exc_info=error)
        text = (
            f"Something went wrong on Easel's side (error {error_id}). The operator can find it in the log."
        )
    try:
        await reply(interaction, text)
    except discord.HTTPException:
        log.warning("could not tell the member about an error in interaction %s", interaction.id)


def requester(
    interaction: discord.Interaction[Any], message_id: int | None = None, *, private: bool = False
) -> Requester:
    """Describe who is asking, from a guild interaction; ``message_id`` is the deferred response to edit.

    ``private``: that response was deferred ephemerally (see ``bot.visibility``).
    """
    if interaction.guild_id is None or interaction.channel_id is None:
        raise EaselError("Easel works in servers, not in direct messages.")
    return Requester(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        upload_limit=interaction.filesize_limit,
        interaction=Interaction(
            application_id=interaction.application_id,
            token=interaction.token,
            created_at=interaction.created_at,
            message_id=message_id,
        ),
        manage_messages=interaction.permissions.manage_messages,
        manage_guild=interaction.permissions.manage_guild,
        role_ids=tuple(role.id for role in getattr(interaction.user, "roles", ())),
        parent_channel_id=getattr(interaction.channel, "parent_id", None),
        can_view=channel_viewer(interaction),
        age_restricted=age_restricted(interaction),
        private=private,
    )


async def within_rate_limit(interaction: discord.Interaction[EaselBot]) -> bool:
    """Count one action of the member; over their limit, tell them how long to wait and return False."""
    wait = interaction.client.services.actions.take(interaction.user.id)
    if not wait:
        return True
    log.debug("member %d is over the action rate limit (%.1fs to wait)", interaction.user.id, wait)
    await reply(interaction, f"You're clicking fast: try again in {max(1, math.ceil(wait))} s.")
    return False


async def acknowledge(interaction: discord.Interaction[EaselBot]) -> Requester:
    """Acknowledge a request for a job at once with a "thinking" message; return who asks, with its id.

    The message is ephemeral when ``bot.visibility.answered_privately`` says so; the job's place
    in line and its result are edits of it.
    """
    who = requester(interaction)
    prefs = await interaction.client.services.generation.preferences.get(who.guild_id, who.user_id)
    private = answered_privately(interaction, prefers_private=prefs.private)
    response = await interaction.response.defer(thinking=True, ephemeral=private)
    return requester(interaction, response.message_id if response is not None else None, private=private)


class EaselButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)"):
    """The base of every Easel button: rate-limited, and every error answered by ``report_error``.

    Each action subclasses it with the template from ``bot.buttons.template`` and its own ``run``,
    in the cog of the feature it belongs to. discord.py only logs what a dynamic item's callback
    raises, so this callback is where a click's errors reach the member.
    """

    def __init__(self, ref: ButtonRef | None, custom_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id))
        self.ref = ref

    @property
    def target(self) -> ButtonRef:
        """What the click refers to (only the catch-all for stale ids has none)."""
        assert self.ref is not None
        return self.ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        """Rebuild the button from a click's custom id; state comes from the store when it runs."""
        return cls(parse_custom_id(match.string), match.string)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Count the click against the member's rate limit, run the action, answer any error privately."""
        try:
            if await within_rate_limit(interaction):
                await self.run(interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Do what the button asks."""
        raise NotImplementedError


class StaleButton(EaselButton, template=STALE_TEMPLATE):
    """Any Easel id no action takes (forged, or from an old version): a clear answer, not silence."""

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        """Keep the id as it came; it parses as nothing."""
        return cls(None, match.string)

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Say the button is not one Easel knows."""
        await reply(interaction, STALE)


class EaselTree(app_commands.CommandTree["EaselBot"]):
    """Routes every application-command error to one ephemeral message; rate-limits commands."""

    async def interaction_check(self, interaction: discord.Interaction[EaselBot], /) -> bool:
        # Autocomplete fires on every keystroke and posts nothing: it does not count as an action.
        if interaction.type is discord.InteractionType.autocomplete:
            return True
        return await within_rate_limit(interaction)

    async def on_error(
        self, interaction: discord.Interaction[EaselBot], error: app_commands.AppCommandError
    ) -> None:
        await report_error(interaction, error)


class EaselBot(commands.AutoShardedBot):
    """Easel's Discord client. It owns no resources: the composition root opens and closes them."""

    def __init__(self, services: Callable[[EaselBot], Services]) -> None:
        # Everything arrives through interactions: no privileged intents (no message content, no members).
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=EaselTree,
            allowed_mentions=NO_MENTIONS,
            help_command=None,
        )
        self.services = services(self)

    async def setup_hook(self) -> None:
        if self.services.settings.discord.gateway_url and self.shard_count is None:
            # With a shard count set, AutoShardedBot connects to the configured gateway
            # instead of the URL that /gateway/bot announces.
            self.shard_count, _, _ = await self.http.get_bot_gateway()
        self.add_dynamic_items(StaleButton)
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self._sync_commands()
        await self.services.worker.start()
        self.services.contests.run()

    async def _sync_commands(self) -> None:
        guild_ids = self.services.settings.discord.dev_guild_ids
        if guild_ids:
            for guild_id in guild_ids:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d commands to guild %d", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands (they can take up to an hour to appear)", len(synced))

    async def close(self) -> None:
        # Stop taking and rendering work before the connection the cogs use goes away.
        await self.services.contests.stop()
        await self.services.worker.stop()
        for name in list(self.extensions):
            await self.unload_extension(name)
        await super().close()
