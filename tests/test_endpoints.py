"""Pins the discord.py internals ``bot.endpoints.point_at`` relies on, so an upgrade fails here."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import discord.http
import discord.shard
import pytest
import yarl
from discord.gateway import DiscordWebSocket

from bot.config import DiscordSettings, Secret
from bot.endpoints import point_at


@pytest.fixture
def restored() -> Iterator[None]:
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


def test_every_rest_url_is_built_from_the_configured_base(restored: None) -> None:
    point_at(DiscordSettings(token=Secret("t"), api_base="http://127.0.0.1:9/api/v10"))
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=1)
    assert route.url == "http://127.0.0.1:9/api/v10/channels/1/messages"


def test_the_gateway_discord_py_connects_to_is_the_configured_one(restored: None) -> None:
    point_at(DiscordSettings(token=Secret("t"), gateway_url="ws://127.0.0.1:9/"))
    assert yarl.URL("ws://127.0.0.1:9/") == DiscordWebSocket.DEFAULT_GATEWAY
    # discord.py must still read the class attribute where a shard or a reconnect picks its URL.
    assert "DEFAULT_GATEWAY" in inspect.getsource(DiscordWebSocket.from_client)
    assert "DEFAULT_GATEWAY" in inspect.getsource(discord.shard.AutoShardedClient.launch_shards)


def test_without_a_gateway_url_discord_pys_default_is_left_alone(restored: None) -> None:
    before = DiscordWebSocket.DEFAULT_GATEWAY
    point_at(DiscordSettings(token=Secret("t")))
    assert before == DiscordWebSocket.DEFAULT_GATEWAY
