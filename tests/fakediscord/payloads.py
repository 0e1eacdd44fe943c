"""Discord JSON payloads as the real API shapes them, and the checks Discord applies to message bodies."""

from __future__ import annotations

import io
from typing import Any

from .records import (
    COMPONENTS_V2,
    Attachment,
    File,
    Guild,
    Interaction,
    Message,
    discord,
    iso,
)

_P = discord.Permissions
# What @everyone gets in a new server, minus manage_messages (Discord never grants it by default).
DEFAULT_MEMBER_PERMISSIONS: int = _P(
    create_instant_invite=True,
    add_reactions=True,
    stream=True,
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    mention_everyone=True,
    external_emojis=True,
    connect=True,
    speak=True,
    use_voice_activation=True,
    change_nickname=True,
    use_application_commands=True,
    request_to_speak=True,
    create_public_threads=True,
    create_private_threads=True,
    external_stickers=True,
    send_messages_in_threads=True,
    use_embedded_activities=True,
    send_voice_messages=True,
    send_polls=True,
    use_external_apps=True,
).value
# What an invite link asking for the usual image-bot scopes grants the bot's managed role.
DEFAULT_BOT_PERMISSIONS: int = _P(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_application_commands=True,
).value
# GUILD_MEMBERS and GUILD_PRESENCES: Discord closes the gateway with 4014 unless the app enabled them.
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8)
GUILD_MESSAGES_INTENT = 1 << 9
PREMIUM_BOOSTS = {0: 0, 1: 2, 2: 7, 3: 14}


class ApiError(Exception):
    """An HTTP error answer in Discord's JSON error format."""

    def __init__(
        self, status: int, message: str, code: int = 0, *, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {message} (code {code})")
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


def unknown(what: str, code: int) -> ApiError:
    """Return Discord's 404 for an unknown object."""
    return ApiError(404, f"Unknown {what}", code)


def user_payload(user_id: int, *, name: str | None = None, bot: bool = False) -> dict[str, Any]:
    """Return a user object."""
    username = name or f"user{user_id % 100000}"
    data: dict[str, Any] = {
        "id": str(user_id),
        "username": username,
        "global_name": None if bot else username.title(),
        "discriminator": "0",
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "primary_guild": None,
        "avatar_decoration_data": None,
        "collectibles": None,
    }
    if bot:
        data.update(bot=True, verified=True, mfa_enabled=False, locale="en-US", email=None)
    return data


def member_payload(
    user: dict[str, Any], *, roles: list[int], joined_at: str | None, permissions: int | None = None
) -> dict[str, Any]:
    """Return a guild member object (with ``permissions`` as interactions carry it)."""
    data: dict[str, Any] = {
        "user": user,
        "roles": [str(r) for r in roles],
        "joined_at": joined_at,
        "nick": None,
        "avatar": None,
        "banner": None,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def role_payload(role_id: int, name: str, permissions: int, position: int, **extra: Any) -> dict[str, Any]:
    """Return a role object."""
    return {
        "id": str(role_id),
        "name": name,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "managed": False,
        "mentionable": False,
        "flags": 0,
        **extra,
    }


def channel_payload(guild: Guild, channel_id: int) -> dict[str, Any]:
    """Return a guild text channel object."""
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild.id),
        "name": guild.channels[channel_id],
        "position": list(guild.channels).index(channel_id),
        "permission_overwrites": guild.overwrites.get(channel_id, []),
        "nsfw": channel_id in guild.nsfw_channels,
        "parent_id": None,
        "topic": None,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
    }


def guild_payload(
    guild: Guild, *, bot_user: dict[str, Any], owner_id: int, bot_permissions: int, gateway: bool
) -> dict[str, Any]:
    """Return a guild object: the REST shape, or the GUILD_CREATE shape when ``gateway``."""
    channels = list(guild.channels)
    data: dict[str, Any] = {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 1,
        "default_message_notifications": 1,
        "explicit_content_filter": 2,
        "roles": [
            # @everyone shares the guild's id: discord.py relies on that to find the default role.
            role_payload(guild.id, "@everyone", DEFAULT_MEMBER_PERMISSIONS, 0),
            role_payload(
                guild.bot_role_id,
                bot_user["username"],
                bot_permissions,
                1,
                managed=True,
                tags={"bot_id": bot_user["id"]},
            ),
            *(
                role_payload(role_id, name, 0, position)
                for position, (role_id, name) in enumerate(guild.roles.items(), start=2)
            ),
        ],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": str(channels[0]) if channels else None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_presences": None,
        "max_members": 500000,
        "vanity_url_code": None,
        "premium_tier": guild.premium_tier,
        "premium_subscription_count": PREMIUM_BOOSTS.get(guild.premium_tier, 14),
        "preferred_locale": "en-US",
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "incidents_data": None,
    }
    if gateway:
        data.update(
            joined_at=iso(guild.joined_at),
            large=guild.member_count >= 250,
            unavailable=False,
            member_count=guild.member_count,
            lazy=True,
            channels=[channel_payload(guild, c) for c in channels],
            members=[member_payload(bot_user, roles=[guild.bot_role_id], joined_at=iso(guild.joined_at))],
            voice_states=[],
            presences=[],
            threads=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
            embedded_activities=[],
            application_command_counts={},
        )
    return data


def attachment_payload(item: File | Attachment) -> dict[str, Any]:
    """Return an attachment object, with image dimensions when Pillow can read them."""
    data: dict[str, Any] = {
        "id": str(item.id),
        "filename": item.filename,
        "size": item.size,
        "url": item.url,
        "proxy_url": item.proxy_url,
        "content_type": item.content_type,
    }
    if isinstance(item, File) and item.description is not None:
        data["description"] = item.description
    size = _image_size(item.data)
    if size is not None:
        data["width"], data["height"] = size
    return data


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


def resolve_embeds(embeds: list[dict[str, Any]], files: list[File]) -> list[dict[str, Any]]:
    """Return embeds as Discord echoes them: typed "rich", attachment:// urls pointing at the uploads."""
    by_name = {f.filename: f for f in files}
    out = []
    for embed in embeds:
        embed = {"type": "rich", **embed}
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            url = media.get("url", "") if isinstance(media, dict) else ""
            if url.startswith("attachment://") and url[13:] in by_name:
                target = by_name[url[13:]]
                embed[key] = {**media, "url": target.url, "proxy_url": target.proxy_url}
        out.append(embed)
    return out


def message_payload(
    msg: Message, *, bot_user: dict[str, Any], application_id: int, interaction: Interaction | None
) -> dict[str, Any]:
    """Return a message object complete enough for discord.py's Message and InteractionMessage."""
    data: dict[str, Any] = {
        "id": str(msg.id),
        "channel_id": str(msg.channel_id),
        "type": msg.type,
        "content": msg.content,
        "author": bot_user,
        "timestamp": iso(msg.created_at),
        "edited_timestamp": iso(msg.edited_at),
        "tts": msg.tts,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [attachment_payload(f) for f in msg.attachments],
        "embeds": resolve_embeds(msg.embeds, msg.attachments),
        "components": msg.components,
        "pinned": msg.pinned,
        "flags": msg.flags,
    }
    if msg.guild_id is not None:
        data["guild_id"] = str(msg.guild_id)
    if msg.nonce is not None:
        data["nonce"] = msg.nonce
    if msg.reference is not None:
        data["message_reference"] = msg.reference
    if msg.webhook_id is not None:
        # Interaction responses are posted by the application's webhook.
        data["webhook_id"] = str(msg.webhook_id)
        data["application_id"] = str(application_id)
    if interaction is not None:
        meta: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": interaction.payload["member"]["user"],
            "authorizing_integration_owners": interaction.payload.get("authorizing_integration_owners", {}),
        }
        if interaction.type == 2:
            meta.update(name=interaction.name, command_type=1)
            data["interaction"] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "name": interaction.name,
                "user": meta["user"],
            }
        if interaction.message_id is not None:
            meta["interacted_message_id"] = str(interaction.message_id)
        if msg.created_via == "followup" and interaction.original is not None:
            meta["original_response_message_id"] = str(interaction.original.id)
        data["interaction_metadata"] = meta
    return data


def _field_error(errors: dict[str, Any], path: str, code: str, message: str) -> None:
    errors[path] = {"_errors": [{"code": code, "message": message}]}


def validate_message(
    content: str,
    embeds: list[dict[str, Any]],
    components: list[dict[str, Any]],
    files: list[File],
    flags: int,
) -> None:
    """Raise the ApiError Discord answers for a message body it refuses."""
    errors: dict[str, Any] = {}
    if len(content) > 2000:
        _field_error(errors, "content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    if flags & COMPONENTS_V2 and (content or embeds):
        _field_error(
            errors,
            "content",
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "Legacy fields forbidden.",
        )
    if len(embeds) > 10:
        _field_error(errors, "embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        for key, limit in (("title", 256), ("description", 4096)):
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > limit:
                _field_error(
                    errors,
                    f"embeds.{i}.{key}",
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {limit} or fewer in length.",
                )
        for field in embed.get("fields") or []:
            total += len(field.get("name", "")) + len(field.get("value", ""))
        if len(embed.get("fields") or []) > 25:
            _field_error(
                errors, f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
    if total > 6000:
        _field_error(errors, "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    if len(files) > 10:
        _field_error(errors, "attachments", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if not flags & COMPONENTS_V2 and len(components) > 5:
        _field_error(errors, "components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    seen: set[str] = set()
    probe = Message(id=0, channel_id=0, guild_id=None, author_id=0, components=components)
    for i, row in enumerate(components):
        if row.get("type") == 1 and len(row.get("components") or []) > 5:
            _field_error(
                errors, f"components.{i}.components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
            )
    for component in probe.walk_components():
        custom_id = component.get("custom_id")
        if custom_id is not None:
            if len(custom_id) > 100:
                _field_error(
                    errors, "components.custom_id", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."
                )
            if custom_id in seen:
                _field_error(
                    errors,
                    "components.custom_id",
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Custom id is duplicated",
                )
            seen.add(custom_id)
        if len(component.get("label") or "") > 80:
            _field_error(errors, "components.label", "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
    if errors:
        raise ApiError(400, "Invalid Form Body", 50035, errors=errors)
    if not (content or embeds or components or files):
        raise ApiError(400, "Cannot send an empty message", 50006)


def number_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return a copy of ``components`` with the numeric ids Discord assigns to each component."""
    counter = 0

    def walk(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal counter
        out = []
        for item in items:
            counter += 1
            item = {**item}
            item.setdefault("id", counter)
            if "components" in item:
                item["components"] = walk(item["components"])
            if isinstance(item.get("accessory"), dict):
                item["accessory"] = walk([item["accessory"]])[0]
            out.append(item)
        return out

    return walk(components)


def command_payload(
    body: dict[str, Any], *, command_id: int, application_id: int, guild_id: int | None
) -> dict[str, Any]:
    """Return a registered application command as Discord stores it."""
    data: dict[str, Any] = {
        "type": 1,
        "description": "",
        "options": [],
        "default_member_permissions": None,
        "nsfw": False,
        "contexts": None,
        "integration_types": [0],
        **body,
        "id": str(command_id),
        "application_id": str(application_id),
        "version": str(command_id),
    }
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
    return data
