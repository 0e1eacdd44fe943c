"""Per-guild settings: what moderators can set with /settings, how their text is read, how it is shown.

Stored values are JSON (``Store.guild_settings``); a key missing from the store has its default.
Every parse error is an InvalidInput that names the setting and what to type instead.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import InvalidInput
from bot.i18n import N_, _, ngettext
from bot.policy import ContentRules
from bot.quotas import Budget, Costs, QuotaPolicy, RoleLimit, validate_timezone

UNLIMITED = ("unlimited", "none", "off", "no limit", "-")
FOREVER = ("forever", "off", "none", "unlimited", "-")
MENTION = re.compile(r"<[@#]&?!?(\d+)>|(\d{15,20})")


class Kind(enum.StrEnum):
    """How a setting's text is read."""

    LIMIT = "a whole number, or unlimited"
    NUMBER = "a whole number"
    MONEY = "an amount in US dollars, or unlimited"
    SWITCH = "on or off"
    CHOICE = "one of the choices"
    BACKENDS = "backend names separated by commas, or all"
    CHANNELS = "channels (#mentions), or none"
    CHANNEL = "a channel (#mention), or none"
    ROLES = "roles (@mentions), or none"
    ROLE = "a role (@mention), or none"
    MEMBERS = "members (@mentions), or none"
    TIMEZONE = "a time zone such as Europe/Berlin"
    TERMS = "terms separated by commas"
    PATTERNS = "regular expressions, one per line"
    ROLE_LIMITS = "set with /settings role-quota"
    DAYS = N_("a number of days, or forever")


@dataclass(frozen=True)
class Setting:
    """One setting: its key, how it is read, its default and what it does."""

    key: str
    kind: Kind
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int = 10**9


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "default_backend", Kind.CHOICE, "", "Backend used when a member does not pick one (empty: the first)."
    ),
    Setting("allowed_backends", Kind.BACKENDS, [], "Backends members may use here (empty: all)."),
    Setting(
        "default_count",
        Kind.NUMBER,
        0,
        "Images per /imagine when not chosen (0: Easel's default).",
        maximum=4,
    ),
    Setting("allowed_channels", Kind.CHANNELS, [], "Generation only in these channels (empty: everywhere)."),
    Setting("denied_channels", Kind.CHANNELS, [], "No generation in these channels."),
    Setting(
        "nsfw",
        Kind.CHOICE,
        "age_restricted",
        "Images a safety checker flags: posted only in age-restricted channels, or never.",
        choices=("never", "age_restricted"),
    ),
    Setting("daily_images", Kind.LIMIT, None, "Images a member may make per day (roles can raise it)."),
    Setting("weekly_images", Kind.LIMIT, None, "Images a member may make per week (roles can raise it)."),
    Setting(
        "role_limits", Kind.ROLE_LIMITS, [], "Higher daily/weekly limits for roles (the highest applies)."
    ),
    Setting("exempt_roles", Kind.ROLES, [], "Roles with no quota and no cooldown."),
    Setting("cost_imagine", Kind.NUMBER, 1, "Quota cost of each image from /imagine.", maximum=100),
    Setting("cost_variation", Kind.NUMBER, 1, "Quota cost of each variation image.", maximum=100),
    Setting("cost_reroll", Kind.NUMBER, 1, "Quota cost of each rerolled image.", maximum=100),
    Setting("cost_upscale", Kind.NUMBER, 1, "Quota cost of an upscale.", maximum=100),
    Setting("cooldown_seconds", Kind.NUMBER, 0, "Seconds a member waits between requests.", maximum=86_400),
    Setting("monthly_images", Kind.LIMIT, None, "Images the whole server may make per month."),
    Setting("monthly_spend_usd", Kind.MONEY, None, "Estimated OpenAI spend the server may reach per month."),
    Setting(
        "blocked_terms", Kind.TERMS, [], "Words and phrases refused in prompts (*word* matches inside words)."
    ),
    Setting("blocked_patterns", Kind.PATTERNS, [], "Regular expressions refused in prompts."),
    Setting("moderation_check", Kind.SWITCH, False, "Check every prompt with OpenAI's moderation endpoint."),
    Setting("banned", Kind.MEMBERS, [], "Members who may not generate here."),
    Setting(
        "audit_channel", Kind.CHANNEL, None, "Channel for a line per generation and per settings change."
    ),
    Setting("timezone", Kind.TIMEZONE, "UTC", "Time zone of the daily, weekly and monthly resets."),
    Setting("moderator_role", Kind.ROLE, None, "Role that may use moderator commands besides Manage Server."),
    Setting(
        "retention_days",
        Kind.DAYS,
        None,
        N_("Days Easel keeps prompts and images (forever: it keeps everything)."),
        minimum=1,
        maximum=3650,
    ),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class GuildSettings:
    """A guild's settings as values; defaults where the guild changed nothing."""

    default_backend: str
    allowed_backends: tuple[str, ...]
    default_count: int
    allowed_channels: tuple[int, ...]
    denied_channels: tuple[int, ...]
    nsfw: str
    quota: QuotaPolicy
    budget: Budget
    rules: ContentRules
    moderation_check: bool
    banned: tuple[int, ...]
    audit_channel: int | None
    moderator_role: int | None
    retention_days: int | None  # None: prompts and images are kept for good

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> GuildSettings:
        """Build the values from what the store holds, with defaults for the rest."""
        v = {s.key: stored.get(s.key, s.default) for s in SETTINGS}
        return cls(
            default_backend=v["default_backend"],
            allowed_backends=tuple(v["allowed_backends"]),
            default_count=v["default_count"],
            allowed_channels=tuple(v["allowed_channels"]),
            denied_channels=tuple(v["denied_channels"]),
            nsfw=v["nsfw"],
            quota=QuotaPolicy(
                daily=v["daily_images"],
                weekly=v["weekly_images"],
                role_limits=tuple(RoleLimit(int(r), d, w) for r, d, w in v["role_limits"]),
                exempt_roles=tuple(v["exempt_roles"]),
                costs=Costs(
                    imagine_per_image=v["cost_imagine"],
                    variation_per_image=v["cost_variation"],
                    reroll_per_image=v["cost_reroll"],
                    upscale=v["cost_upscale"],
                ),
                cooldown_s=v["cooldown_seconds"],
                timezone=v["timezone"],
            ),
            budget=Budget(images_per_month=v["monthly_images"], spend_per_month_usd=v["monthly_spend_usd"]),
            rules=ContentRules(
                terms=tuple(v["blocked_terms"]), patterns=tuple(v["blocked_patterns"]), stored=True
            ),
            moderation_check=v["moderation_check"],
            banned=tuple(v["banned"]),
            audit_channel=v["audit_channel"],
            moderator_role=v["moderator_role"],
            retention_days=v["retention_days"],
        )


def parse(key: str, text: str, *, backends: Sequence[str]) -> Any:
    """Read a moderator's text for ``key`` as the value to store; InvalidInput names what to type.

    Blocked patterns are compiled and tried, and blocked terms compiled: call it off the event loop.
    """
    setting = BY_KEY.get(key)
    if setting is None:
        raise InvalidInput(f"There is no setting {key!r}; /settings show lists them.")
    text = text.strip()
    kind = setting.kind
    if kind is Kind.ROLE_LIMITS:
        raise InvalidInput("Set role limits with /settings role-quota.")
    if kind is Kind.LIMIT:
        return None if text.lower() in UNLIMITED else _number(setting, text)
    if kind is Kind.NUMBER:
        return _number(setting, text)
    if kind is Kind.DAYS:
        return None if text.lower() in FOREVER else _number(setting, text)
    if kind is Kind.MONEY:
        if text.lower() in UNLIMITED:
            return None
        try:
            amount = float(text.removeprefix("$"))
        except ValueError:
            raise _wrong(setting, text) from None
        if not 0 <= amount <= 1_000_000:
            raise _wrong(setting, text)
        return round(amount, 2)
    if kind is Kind.SWITCH:
        if text.lower() in ("on", "true", "yes", "1"):
            return True
        if text.lower() in ("off", "false", "no", "0"):
            return False
        raise _wrong(setting, text)
    if kind is Kind.CHOICE:
        choices = setting.choices or ("", *backends)
        if text not in choices:
            raise InvalidInput(f"{key} must be one of: {', '.join(c or '(empty)' for c in choices)}.")
        return text
    if kind is Kind.BACKENDS:
        names = [] if text.lower() in ("all", "") else [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in backends]
        if unknown:
            raise InvalidInput(f"Unknown backend(s) {', '.join(unknown)}; choose from {', '.join(backends)}.")
        return names
    if kind in (Kind.CHANNELS, Kind.ROLES, Kind.MEMBERS):
        return [] if text.lower() in ("none", "") else _ids(setting, text)
    if kind in (Kind.CHANNEL, Kind.ROLE):
        if text.lower() in ("none", ""):
            return None
        ids = _ids(setting, text)
        if len(ids) != 1:
            raise _wrong(setting, text)
        return ids[0]
    if kind is Kind.TIMEZONE:
        problem = validate_timezone(text)
        if problem:
            raise InvalidInput(problem)
        return text
    if kind is Kind.TERMS:
        terms = [t.strip() for t in text.split(",") if t.strip()]
        ContentRules(terms=tuple(terms))  # raises InvalidInput naming the bad term
        return terms
    patterns = [p for p in text.splitlines() if p.strip()]
    ContentRules(patterns=tuple(patterns))
    return patterns


def show(key: str, value: Any) -> str:
    """Show a stored value the way /settings lists it (lists of ids as mentions)."""
    kind = BY_KEY[key].kind
    if value is None and kind is Kind.DAYS:
        return _("forever")
    if value is None:
        return "unlimited" if kind in (Kind.LIMIT, Kind.MONEY) else "none"
    if kind is Kind.SWITCH:
        return "on" if value else "off"
    if kind is Kind.MONEY:
        return f"${value:,.2f}"
    if kind is Kind.DAYS:
        return ngettext("{count} day", "{count} days", value)
    if kind in (Kind.CHANNELS, Kind.CHANNEL):
        return _join(f"<#{i}>" for i in _listed(value)) or "none"
    if kind in (Kind.ROLES, Kind.ROLE):
        return _join(f"<@&{i}>" for i in _listed(value)) or "none"
    if kind is Kind.MEMBERS:
        return _join(f"<@{i}>" for i in _listed(value)) or "none"
    if kind is Kind.ROLE_LIMITS:
        return _join(f"<@&{r}>: {_limit(d)}/day, {_limit(w)}/week" for r, d, w in value) or "none"
    if kind in (Kind.TERMS, Kind.PATTERNS):
        return f"{len(value)} set" if value else "none"
    if kind is Kind.BACKENDS:
        return ", ".join(value) or "all"
    return str(value) if value != "" else "(default)"


def _number(setting: Setting, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _wrong(setting, text) from None
    if not setting.minimum <= value <= setting.maximum:
        raise InvalidInput(f"{setting.key} must be between {setting.minimum} and {setting.maximum}.")
    return value


def _ids(setting: Setting, text: str) -> list[int]:
    ids = [int(a or b) for a, b in MENTION.findall(text)]
    if not ids:
        raise _wrong(setting, text)
    return list(dict.fromkeys(ids))


def _wrong(setting: Setting, text: str) -> InvalidInput:
    shown = text if len(text) <= 40 else text[:39] + "…"
    return InvalidInput(f"{setting.key} takes {setting.kind.value}, not {shown!r}.")


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _join(parts: Any) -> str:
    return ", ".join(parts)


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)
