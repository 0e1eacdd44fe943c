"""Which channels are a guild's own and whether Easel may post in them, as Discord has told the bot."""

from __future__ import annotations

import discord


def can_post(client: discord.Client, guild_id: int, channel_id: int) -> bool | None:
    """Whether Easel may post in a channel or thread of a guild; None when it is not one of the guild's.

    Read from the gateway's cache (GUILD_CREATE, channel and thread events), so it costs no request;
    a channel the cache does not hold (another server's, deleted, an archived thread) is not the guild's.
    """
    guild = client.get_guild(guild_id)
    channel = guild.get_channel_or_thread(channel_id) if guild is not None else None
    if guild is None or channel is None:
        return None
    if not isinstance(channel, discord.abc.Messageable):
        return False  # a category or forum: messages go in its channels or threads
    allowed = channel.permissions_for(guild.me)
    send = allowed.send_messages_in_threads if isinstance(channel, discord.Thread) else allowed.send_messages
    return allowed.view_channel and send
