"""The one place Easel changes discord.py's process-wide state: where its REST and gateway go.

discord.py has no per-client setting for either, so operators' proxies (and the tests' local
Discord server) are reached by setting two class attributes before the client starts. Each is a
documented-by-use internal; ``tests/test_endpoints.py`` pins them, so a discord.py upgrade that
renames or stops reading one fails loudly there instead of silently talking to discord.com.
"""

from __future__ import annotations

import discord.http
import yarl
from discord.gateway import DiscordWebSocket

from bot.config import DiscordSettings


def point_at(discord_settings: DiscordSettings) -> None:
    """Send discord.py's REST (and, if set, gateway) traffic to the configured endpoints.

    discord.py builds every REST URL from ``Route.BASE`` and, for a bot that does not ask
    ``/gateway/bot``, connects to ``DiscordWebSocket.DEFAULT_GATEWAY``.
    """
    discord.http.Route.BASE = discord_settings.api_base
    if discord_settings.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(discord_settings.gateway_url)
