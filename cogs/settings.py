"""/settings: moderators set Easel up for their server (who generates what, where, how much, at what cost).

Every subcommand is hidden from members by default permissions, and the moderation service checks
Manage Server or the server's moderator role again on every call; so does every autocomplete that
shows settings' values, before it does any work.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import Choice, Range
from discord.ext import commands

from bot import guild_settings
from bot.app import EaselBot, requester
from bot.delivery import NO_MENTIONS
from bot.errors import InvalidInput
from bot.guild_settings import Kind
from bot.i18n import N_, _
from bot.jobs import Requester
from bot.moderation import Change, Moderation
from bot.policy import PATTERN_MAX, TERM_MAX
from cogs.mydata import deletion_summary

# Discord: at most 25 autocomplete choices, names and values 1–100 characters; an embed holds
# 25 fields of at most 1024 characters each, 6000 characters in all; a message 2000.
MAX_CHOICES = 25
CHOICE_MAX = 100
FIELD_MAX = 1024
SHOWN_VALUE_MAX = 120
REPLY_VALUE_MAX = 800

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Generation", ("default_backend", "allowed_backends", "default_count", "nsfw")),
    ("Channels", ("allowed_channels", "denied_channels")),
    (
        "Quotas",
        ("daily_images", "weekly_images", "role_limits", "exempt_roles", "cooldown_seconds", "timezone"),
    ),
    ("Costs", ("cost_imagine", "cost_variation", "cost_reroll", "cost_upscale")),
    ("Budget", ("monthly_images", "monthly_spend_usd")),
    ("Content", ("blocked_terms", "blocked_patterns", "moderation_check")),
    ("Moderation", ("moderator_role", "audit_channel", "banned")),
    (N_("Members' data"), ("retention_days",)),
)
# Lists with commands of their own, left out of /settings set's suggestions (it still takes a whole list).
OWN_COMMANDS = frozenset({"role_limits", "blocked_terms", "blocked_patterns", "banned"})
SWITCHES = ("on", "off")
LIMIT_EXAMPLES = ("unlimited", "5", "10", "20", "50", "100")
NUMBER_EXAMPLES = ("0", "1", "2", "3", "4", "5", "10", "30", "60")
DAYS_EXAMPLES = ("forever", "30", "90", "180", "365")
RULE_CHOICES = [
    Choice(name="allow: generation only in allowed channels", value="allow"),
    Choice(name="deny: no generation in this channel", value="deny"),
    Choice(name="clear: remove this channel's rule", value="clear"),
]
EXEMPT_CHOICES = [Choice(name="add", value="add"), Choice(name="remove", value="remove")]
POSITION = re.compile(r"#(\d+)")


class PostableChannel(app_commands.Transformer[EaselBot]):
    """A channel or thread members can post in, taken as Discord resolved it (no cache needed)."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        return [
            discord.ChannelType.text,
            discord.ChannelType.news,
            discord.ChannelType.voice,
            discord.ChannelType.stage_voice,
            discord.ChannelType.public_thread,
            discord.ChannelType.private_thread,
            discord.ChannelType.news_thread,
        ]

    async def transform(
        self, interaction: discord.Interaction[EaselBot], value: Any, /
    ) -> app_commands.AppCommandChannel | app_commands.AppCommandThread:
        if not isinstance(value, app_commands.AppCommandChannel | app_commands.AppCommandThread):
            raise app_commands.TransformerError(value, self.type, self)
        return value


Channel = app_commands.Transform[
    app_commands.AppCommandChannel | app_commands.AppCommandThread, PostableChannel
]


class Settings(commands.Cog):
    """The /settings group."""

    settings = app_commands.Group(
        name="settings",
        description="Set Easel up for this server (moderators).",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: EaselBot) -> None:
        self.moderation: Moderation = bot.services.moderation

    # -- show, set, reset ----------------------------------------------------------------------------

    @settings.command(name="show", description="Every setting with its value; ✏️ marks changed ones.")
    async def show(self, interaction: discord.Interaction[EaselBot]) -> None:
        who = requester(interaction)
        await self.moderation.require_moderator(who)
        stored = await self.moderation.stored(who.guild_id)
        embed = discord.Embed(
            title="Easel settings for this server",
            description="✏️ marks a setting changed from its default. Change one with `/settings set`, "
            "put it back with `/settings reset`.",
            colour=discord.Colour.blurple(),
        )
        for name, value in _fields(stored):
            embed.add_field(name=name, value=value, inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @settings.command(name="set", description="Change one setting.")
    @app_commands.describe(
        key="The setting to change", value="Its new value (suggestions appear as you type)"
    )
    async def set_(
        self, interaction: discord.Interaction[EaselBot], key: str, value: Range[str, 1, 2000]
    ) -> None:
        change = await self.moderation.change(requester(interaction), key, value)
        await _done(interaction, change)

    @settings.command(name="reset", description="Put one setting back to its default.")
    @app_commands.describe(key="The setting to reset")
    async def reset(self, interaction: discord.Interaction[EaselBot], key: str) -> None:
        change = await self.moderation.reset(requester(interaction), key)
        await _done(interaction, change)

    @set_.autocomplete("key")
    async def settable_keys(
        self, interaction: discord.Interaction[EaselBot], current: str
    ) -> list[Choice[str]]:
        """Offer the settings /settings set changes (lists with their own commands left out)."""
        return _key_choices(current, exclude=OWN_COMMANDS)

    @reset.autocomplete("key")
    async def all_keys(self, interaction: discord.Interaction[EaselBot], current: str) -> list[Choice[str]]:
        """Offer every setting."""
        return _key_choices(current, exclude=())

    @set_.autocomplete("value")
    async def values(self, interaction: discord.Interaction[EaselBot], current: str) -> list[Choice[str]]:
        """Offer moderators valid values for the key chosen so far: choices, backends, on/off, time zones…"""
        setting = guild_settings.BY_KEY.get(str(getattr(interaction.namespace, "key", "") or ""))
        if setting is None or not await self._is_moderator(requester(interaction)):
            return []
        typed = current.strip()
        candidates = [typed] if typed and len(typed) <= CHOICE_MAX else []
        candidates += _suggestions(setting, typed, self.moderation.backends)
        # Validating what was typed may compile and run a blocked pattern: off the event loop.
        valid = await asyncio.to_thread(_valid, setting.key, candidates, self.moderation.backends)
        return [Choice(name=c, value=c) for c in valid]

    # -- lists with commands of their own --------------------------------------------------------------

    @settings.command(name="role-quota", description="Give a role higher limits (the highest applies).")
    @app_commands.describe(
        role="The role",
        daily="Images per day for members with it (leave both empty to remove the override)",
        weekly="Images per week for members with it",
    )
    async def role_quota(
        self,
        interaction: discord.Interaction[EaselBot],
        role: discord.Role,
        daily: Range[int, 0, 1_000_000] | None = None,
        weekly: Range[int, 0, 1_000_000] | None = None,
    ) -> None:
        change = await self.moderation.set_role_limit(requester(interaction), role.id, daily, weekly)
        await _done(interaction, change)

    @settings.command(
        name="block", description="Refuse prompts with a word or phrase (*word* also inside words)."
    )
    @app_commands.describe(term="The word or phrase; look-alike letters and hidden characters are caught too")
    async def block(self, interaction: discord.Interaction[EaselBot], term: Range[str, 1, TERM_MAX]) -> None:
        change = await self.moderation.add_to_list(requester(interaction), "blocked_terms", term.strip())
        await _done(interaction, change)

    @settings.command(name="unblock", description="Allow a blocked word or phrase again.")
    @app_commands.describe(term="The blocked term (suggestions are shown only to you)")
    async def unblock(self, interaction: discord.Interaction[EaselBot], term: str) -> None:
        who = requester(interaction)
        item = _listed(term, (await self.moderation.stored(who.guild_id))["blocked_terms"])
        await _done(interaction, await self.moderation.remove_from_list(who, "blocked_terms", item))

    @settings.command(name="block-pattern", description="Refuse prompts matching a regular expression.")
    @app_commands.describe(pattern="A regular expression, matched ignoring case")
    async def block_pattern(
        self, interaction: discord.Interaction[EaselBot], pattern: Range[str, 1, PATTERN_MAX]
    ) -> None:
        change = await self.moderation.add_to_list(requester(interaction), "blocked_patterns", pattern)
        await _done(interaction, change)

    @settings.command(name="unblock-pattern", description="Remove a blocked pattern.")
    @app_commands.describe(pattern="The pattern (suggestions are shown only to you)")
    async def unblock_pattern(self, interaction: discord.Interaction[EaselBot], pattern: str) -> None:
        who = requester(interaction)
        item = _listed(pattern, (await self.moderation.stored(who.guild_id))["blocked_patterns"])
        await _done(interaction, await self.moderation.remove_from_list(who, "blocked_patterns", item))

    @unblock.autocomplete("term")
    async def blocked_terms(
        self, interaction: discord.Interaction[EaselBot], current: str
    ) -> list[Choice[str]]:
        """Offer the blocked terms, to moderators only."""
        return await self._list_choices(interaction, "blocked_terms", current)

    @unblock_pattern.autocomplete("pattern")
    async def blocked_patterns(
        self, interaction: discord.Interaction[EaselBot], current: str
    ) -> list[Choice[str]]:
        """Offer the blocked patterns, to moderators only."""
        return await self._list_choices(interaction, "blocked_patterns", current)

    @settings.command(name="ban", description="Stop a member from generating images here.")
    @app_commands.describe(member="The member")
    async def ban(self, interaction: discord.Interaction[EaselBot], member: discord.User) -> None:
        if member.bot:
            raise InvalidInput("Bots cannot use Easel anyway; choose a member.")
        change = await self.moderation.add_to_list(requester(interaction), "banned", member.id)
        await _done(interaction, change)

    @settings.command(name="unban", description="Let a banned member generate images again.")
    @app_commands.describe(member="The member")
    async def unban(self, interaction: discord.Interaction[EaselBot], member: discord.User) -> None:
        change = await self.moderation.remove_from_list(requester(interaction), "banned", member.id)
        await _done(interaction, change)

    @settings.command(name="purge", description="Delete a member's stored prompts, images and entries here.")
    @app_commands.describe(member="The member whose data Easel deletes (their posted results stay)")
    async def purge(self, interaction: discord.Interaction[EaselBot], member: discord.User) -> None:
        who = requester(interaction)
        await self.moderation.require_moderator(who)
        await interaction.response.defer(ephemeral=True, thinking=True)
        # The same removal as the member's own /mydata delete.
        deletion = await interaction.client.services.members.delete(who.guild_id, member.id)
        await self.moderation.purged(who, member.id, deletion.jobs, deletion.entries)
        await interaction.followup.send(
            deletion_summary(deletion, member=member.id), ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    # -- channels and roles, picked rather than typed -------------------------------------------------

    @settings.command(name="channel", description="Allow or deny image generation in a channel.")
    @app_commands.describe(channel="The channel or thread", rule="What to do with it")
    @app_commands.choices(rule=RULE_CHOICES)
    async def channel(
        self, interaction: discord.Interaction[EaselBot], channel: Channel, rule: Choice[str]
    ) -> None:
        who = requester(interaction)
        # Before reading the rule: "No change" would tell a member the channel's rule.
        await self.moderation.require_moderator(who)
        stored = await self.moderation.stored(who.guild_id)
        keep = {"allow": "allowed_channels", "deny": "denied_channels"}.get(rule.value)
        changes = []
        for key in ("allowed_channels", "denied_channels"):
            listed = channel.id in stored[key]
            if key == keep and not listed:
                changes.append(await self.moderation.add_to_list(who, key, channel.id))
            elif key != keep and listed:
                changes.append(await self.moderation.remove_from_list(who, key, channel.id))
        if not changes:
            await _reply(interaction, f"No change: {channel.mention} already has that rule.")
            return
        after = await self.moderation.stored(who.guild_id)
        note = ""
        if after["allowed_channels"]:
            note = "\nGeneration is now allowed only in the allowed channels."
        await _done(interaction, *changes, note=note)

    @settings.command(
        name="audit", description="Where Easel posts a line per generation and settings change."
    )
    @app_commands.describe(channel="The audit channel (leave empty to stop posting audit lines)")
    async def audit(self, interaction: discord.Interaction[EaselBot], channel: Channel | None = None) -> None:
        text = channel.mention if channel is not None else "none"
        change = await self.moderation.change(requester(interaction), "audit_channel", text)
        await _done(interaction, change)

    @settings.command(name="moderator-role", description="A role that may use the moderator commands.")
    @app_commands.describe(role="The role (leave empty: only members with Manage Server)")
    async def moderator_role(
        self, interaction: discord.Interaction[EaselBot], role: discord.Role | None = None
    ) -> None:
        if role is not None and role.is_default():
            raise InvalidInput("@everyone would make every member a moderator; choose another role.")
        text = role.mention if role is not None else "none"
        change = await self.moderation.change(requester(interaction), "moderator_role", text)
        await _done(interaction, change)

    @settings.command(
        name="exempt", description="Exempt a role from quotas and cooldowns, or stop exempting it."
    )
    @app_commands.describe(role="The role", action="Add it to the exempt roles, or remove it")
    @app_commands.choices(action=EXEMPT_CHOICES)
    async def exempt(
        self, interaction: discord.Interaction[EaselBot], role: discord.Role, action: Choice[str]
    ) -> None:
        who = requester(interaction)
        if action.value == "add":
            change = await self.moderation.add_to_list(who, "exempt_roles", role.id)
        else:
            change = await self.moderation.remove_from_list(who, "exempt_roles", role.id)
        await _done(interaction, change)

    async def _is_moderator(self, who: Requester) -> bool:
        return self.moderation.is_moderator(who, await self.moderation.settings(who.guild_id))

    async def _list_choices(
        self, interaction: discord.Interaction[EaselBot], key: str, current: str
    ) -> list[Choice[str]]:
        who = requester(interaction)
        # The lists may hold slurs: only moderators are shown them, even if a stale client offers the command.
        if not await self._is_moderator(who):
            return []
        wanted = current.casefold()
        choices = []
        for position, item in enumerate((await self.moderation.stored(who.guild_id))[key], start=1):
            if wanted in item.casefold():
                value = item if len(item) <= CHOICE_MAX else f"#{position}"
                choices.append(Choice(name=_cut(item, CHOICE_MAX), value=value))
        return choices[:MAX_CHOICES]


def _fields(stored: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings as (section, lines) embed fields, a long section split to fit a field."""
    placed = {key for _, keys in SECTIONS for key in keys}
    others = tuple(s.key for s in guild_settings.SETTINGS if s.key not in placed)
    fields = []
    for section, keys in (*SECTIONS, ("Other", others)):
        lines = []
        for key in keys:
            setting = guild_settings.BY_KEY[key]
            value = stored[key]
            mark = " ✏️" if value != setting.default else ""
            shown = _cut(guild_settings.show(key, value), SHOWN_VALUE_MAX)
            lines.append(f"`{key}`: **{shown}**{mark}\n{_(setting.help)}")
        name = _(section)
        while lines:
            chunk: list[str] = []
            while lines and len("\n".join([*chunk, lines[0]])) <= FIELD_MAX:
                chunk.append(lines.pop(0))
            fields.append((name, "\n".join(chunk)))
            name = f"{section} (more)"
    return fields


def _key_choices(current: str, *, exclude: Iterable[str]) -> list[Choice[str]]:
    wanted = current.casefold().replace(" ", "_")
    skip = set(exclude)
    return [
        Choice(name=_cut(f"{s.key}: {s.help}", CHOICE_MAX), value=s.key)
        for s in guild_settings.SETTINGS
        if s.key not in skip and (wanted in s.key or wanted in s.help.casefold())
    ][:MAX_CHOICES]


def _suggestions(setting: guild_settings.Setting, typed: str, backends: tuple[str, ...]) -> list[str]:
    """Values worth offering for a setting, narrowed by what the moderator typed (not yet validated)."""
    kind, wanted = setting.kind, typed.casefold()
    if kind is Kind.BACKENDS:
        # "openai, lo" completes the last name; earlier names stay as typed.
        done, _, last = typed.rpartition(",")
        chosen = [n.strip() for n in done.split(",") if n.strip()]
        combos = [", ".join([*chosen, b]) for b in backends if b not in chosen]
        return [c for c in ([] if chosen else ["all"]) + combos if last.strip().casefold() in c.casefold()]
    if kind is Kind.TIMEZONE:
        wanted = wanted.replace(" ", "_")
        zones = [z for z in _time_zones() if wanted in z.casefold()]
        # Exact and prefix matches first: "utc" offers UTC before Etc/UTC.
        zones.sort(key=lambda z: (z.casefold() != wanted, not z.casefold().startswith(wanted)))
        return ["UTC", *zones] if not wanted else zones
    options: tuple[str, ...] = {
        Kind.SWITCH: SWITCHES,
        Kind.CHOICE: setting.choices or backends,
        Kind.LIMIT: LIMIT_EXAMPLES,
        Kind.MONEY: LIMIT_EXAMPLES,
        Kind.NUMBER: (str(setting.default), *NUMBER_EXAMPLES),
        Kind.DAYS: DAYS_EXAMPLES,
        Kind.CHANNEL: ("none",),
        Kind.CHANNELS: ("none",),
        Kind.ROLE: ("none",),
        Kind.ROLES: ("none",),
        Kind.MEMBERS: ("none",),
    }.get(kind, ())
    return [o for o in options if wanted in o.casefold()]


@functools.cache
def _time_zones() -> tuple[str, ...]:
    # available_timezones() walks the tz database on disk each call (~10 ms): once per process.
    return tuple(sorted(zoneinfo.available_timezones()))


def _valid(key: str, candidates: list[str], backends: tuple[str, ...]) -> list[str]:
    """The first MAX_CHOICES distinct candidates that parse as values of ``key``."""
    valid = (c for c in dict.fromkeys(candidates) if _parses(key, c, backends))
    return list(itertools.islice(valid, MAX_CHOICES))


def _parses(key: str, text: str, backends: tuple[str, ...]) -> bool:
    try:
        guild_settings.parse(key, text, backends=backends)
    except InvalidInput:
        return False
    return True


def _listed(text: str, items: list[str]) -> str:
    """The list entry a moderator named: as typed, or "#3" (what autocomplete sends for a long one)."""
    if text in items:
        return text
    match = POSITION.fullmatch(text.strip())
    if match and 1 <= int(match[1]) <= len(items):
        return items[int(match[1]) - 1]
    return text


def _cut(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, a list at a comma so no mention is cut in half."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    return (head.rsplit(", ", 1)[0] + ", " if ", " in head else head) + "…"


async def _done(interaction: discord.Interaction[EaselBot], *changes: Change, note: str = "") -> None:
    lines = []
    for change in changes:
        before, after = _cut(change.before, REPLY_VALUE_MAX), _cut(change.after, REPLY_VALUE_MAX)
        if before == after:
            lines.append(f"**{change.key}** was already {after}.")
        else:
            lines.append(f"**{change.key}**: {before} → {after}")
    await _reply(interaction, "\n".join(lines) + note)


async def _reply(interaction: discord.Interaction[EaselBot], text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def setup(bot: EaselBot) -> None:
    """Add /settings."""
    await bot.add_cog(Settings(bot))
