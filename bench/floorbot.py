"""The floor: the least a discord.py bot can do per /imagine, to compare Easel's CPU per job with.

It defers each /imagine publicly, as Easel does, and then puts one fixed small PNG on the
deferred response through the interaction webhook. Nothing is stored, queued or rendered, so its
CPU per job is what discord.py itself costs for an interaction and one upload.

Run as ``python -m bench.floorbot --api-base URL --gateway-url URL`` with the token in
``DISCORD_TOKEN``; it stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from PIL import Image


def small_png() -> bytes:
    """Make the fixed result: a 64×64 PNG of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


class FloorBot(discord.Client):
    """A client with one command, /imagine, answered with the same image every time."""

    def __init__(self) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none())
        self.tree = app_commands.CommandTree(self)
        self.png = small_png()
        self.tree.command(name="imagine", description="Generate images from a text prompt.")(self.imagine)

    async def imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        """Defer, then show the fixed image on the deferred response."""
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(
            attachments=[discord.File(io.BytesIO(self.png), filename="result.png")]
        )

    async def setup_hook(self) -> None:
        await self.tree.sync()


async def run(api_base: str, gateway_url: str, token: str) -> None:
    """Connect through ``api_base`` and ``gateway_url`` and serve until a stop signal arrives."""
    # As Easel's point_at does: discord.py reads both from class attributes (a plain Client
    # does not ask /gateway/bot for its gateway).
    discord.http.Route.BASE = api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    client = FloorBot()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with client:
        task = asyncio.create_task(client.start(token))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        await client.close()
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main() -> None:
    """Parse the command line and run the floor bot."""
    parser = argparse.ArgumentParser(prog="python -m bench.floorbot", description=__doc__.splitlines()[0])
    parser.add_argument("--api-base", required=True, help="Discord's REST base, e.g. the test server's")
    parser.add_argument("--gateway-url", required=True, help="Discord's gateway, e.g. the test server's")
    args = parser.parse_args()
    asyncio.run(run(args.api_base, args.gateway_url, os.environ["DISCORD_TOKEN"]))


if __name__ == "__main__":
    main()
