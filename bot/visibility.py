"""What the member behind an interaction can see on Discord, as plain facts for the services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord

from bot.delivery import AGE_RESTRICTABLE


def channel_viewer(interaction: discord.Interaction[Any]) -> Callable[[int], bool]:
    """Return whether the interaction's member can see a channel (by id) and read its history.

    The interaction's own channel is answered from the permissions Discord sent with it; any
    other channel from the cached guild's roles and overwrites. A channel Easel does not know
    (deleted, or a thread it never saw) counts as unseen.
    """
    here, here_permissions = interaction.channel_id, interaction.permissions
    guild, member = interaction.guild, interaction.user

    def can_view(channel_id: int) -> bool:
        if channel_id == here:
            return _reads(here_permissions)
        if guild is None or not isinstance(member, discord.Member):
            return False
        channel = guild.get_channel_or_thread(channel_id)
        if channel is None or isinstance(channel, discord.CategoryChannel):
            return False
        try:
            permissions = channel.permissions_for(member)
        except discord.ClientException:  # a thread whose parent channel is not cached
            return False
        if isinstance(channel, discord.Thread) and channel.is_private() and not permissions.manage_threads:
            # Membership of a private thread is not in the cache: only those who see them all count.
            return False
        return _reads(permissions)

    return can_view


def age_restricted(interaction: discord.Interaction[Any]) -> bool:
    """Whether the interaction's channel (or a thread's parent) is marked age-restricted."""
    channel = interaction.channel
    return isinstance(channel, AGE_RESTRICTABLE) and channel.is_nsfw()


def _reads(permissions: discord.Permissions) -> bool:
    # Read Message History too: without it a member sees only what is posted while they watch.
    return permissions.view_channel and permissions.read_message_history


def answered_privately(interaction: discord.Interaction[Any], *, prefers_private: bool) -> bool:
    """Whether a job a member asks for through this interaction is answered to them alone.

    Their own ``/prefer private`` decides for commands. A button on a result makes a job as
    public as that result, unless the clicker prefers private results: a private result's
    buttons (only its owner sees them) never publish what it kept private, and a member who
    prefers private results gets their own reroll of a public one privately.
    """
    message = interaction.message
    return prefers_private or (message is not None and message.flags.ephemeral)
