"""A fake Discord (REST, CDN and gateway) for end-to-end tests of the bot with the real discord.py client."""

from .payloads import DEFAULT_BOT_PERMISSIONS, DEFAULT_MEMBER_PERMISSIONS
from .records import Attachment, Callback, File, GatewayEvent, Guild, Interaction, Message, Request, snowflake
from .server import FakeDiscord, Hold

__all__ = [
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_MEMBER_PERMISSIONS",
    "Attachment",
    "Callback",
    "FakeDiscord",
    "File",
    "GatewayEvent",
    "Guild",
    "Hold",
    "Interaction",
    "Message",
    "Request",
    "snowflake",
]
