"""Quota, cooldown and budget arithmetic: pure functions of the policy, the usage and ``now``.

Nothing here reads a clock, touches SQLite or talks to Discord. Every function that needs the
time takes ``now`` (an aware datetime); the store counts usage between the UTC bounds that
``windows`` returns, and the cogs turn a ``Refusal`` into the member's ephemeral reply.

Decisions, so the settings UI and the tests agree:

- A member's limit per window is the *maximum* of the base limit and every matching role's
  limit; ``None`` (unlimited) beats any number. A role override can therefore only raise a
  limit, never lower it: roles are perks ("boosters get more"), and a member must not lose
  quota by gaining a role. To restrict most members, lower the base limit and raise it for
  roles. A role value below the base (e.g. 0) thus means "no override for this window".
- Exempt members skip both the quota and the cooldown (exempt roles are for staff testing the
  bot; the queue's per-member limit still bounds how much they can have in flight). The guild
  budget applies to everyone, exempt or not: it is the server's money.
- A request that costs 0 (a free pick or upscale) is never refused for quota, even by a member
  already over a limit that a moderator lowered.
- Windows are half-open, ``[start, end)``: the last second of a day belongs to that day, the
  next instant to the next day.
"""

from __future__ import annotations

import enum
import math
import zoneinfo
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Final

from bot.errors import LimitReached
from bot.jobs import JobKind

__all__ = [
    "AUTO_QUALITY_AS",
    "DEFAULT_TIMEZONE",
    "Budget",
    "Costs",
    "Limits",
    "PriceKey",
    "PriceTable",
    "QuotaPolicy",
    "Refusal",
    "RefusalReason",
    "RoleLimit",
    "Usage",
    "Window",
    "Windows",
    "check",
    "check_budget",
    "limits_for",
    "relative_time",
    "remaining",
    "validate_timezone",
    "windows",
]

DEFAULT_TIMEZONE: Final = "UTC"
_TIMEZONE_EXAMPLE: Final = "Europe/Berlin"
# Present in the tz database but meaningless for a guild: "localtime" is the host's own zone,
# "Factory" is a placeholder, "posixrules" a template for POSIX TZ strings.
_UNSUITABLE_ZONES: Final = frozenset({"localtime", "Factory", "posixrules"})


# --------------------------------------------------------------------------- policy


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be 0 or more (or None for unlimited), got {value}")


@dataclass(frozen=True)
class RoleLimit:
    """A per-role quota override; ``None`` in a window means unlimited for members with the role."""

    role_id: int
    daily: int | None
    weekly: int | None

    def __post_init__(self) -> None:
        _check_limit("daily", self.daily)
        _check_limit("weekly", self.weekly)


@dataclass(frozen=True)
class Costs:
    """How many quota images each kind of job costs, per image it produces (0 makes it free)."""

    imagine_per_image: int = 1
    variation_per_image: int = 1
    reroll_per_image: int = 1
    upscale: int = 1
    pick: int = 0

    def __post_init__(self) -> None:
        for name in ("imagine_per_image", "variation_per_image", "reroll_per_image", "upscale", "pick"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")

    def cost_of(self, kind: JobKind, count: int) -> int:
        """Return the quota cost of a ``kind`` job producing ``count`` images."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        # Upscales and picks always produce one image today; multiplying keeps the rule
        # uniform ("per image") should that change.
        per_image = {
            JobKind.IMAGINE: self.imagine_per_image,
            JobKind.VARIATION: self.variation_per_image,
            JobKind.REROLL: self.reroll_per_image,
            JobKind.UPSCALE: self.upscale,
            JobKind.PICK: self.pick,
        }[kind]
        return per_image * count


@dataclass(frozen=True)
class QuotaPolicy:
    """A guild's quota settings; ``None`` as a limit means unlimited."""

    daily: int | None
    weekly: int | None
    role_limits: tuple[RoleLimit, ...] = ()
    exempt_roles: tuple[int, ...] = ()
    costs: Costs = field(default_factory=Costs)
    cooldown_s: int = 0
    timezone: str = DEFAULT_TIMEZONE

    def __post_init__(self) -> None:
        _check_limit("daily", self.daily)
        _check_limit("weekly", self.weekly)
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be 0 or more, got {self.cooldown_s}")
        problem = validate_timezone(self.timezone)
        if problem is not None:
            raise ValueError(problem)


def validate_timezone(name: str) -> str | None:
    """Return why ``name`` is not a usable IANA time zone, or None if it is."""
    hint = f'Use an IANA time zone name such as "{_TIMEZONE_EXAMPLE}", "America/New_York" or "UTC".'
    if not name.strip():
        return f"The time zone is empty. {hint}"
    if name in _UNSUITABLE_ZONES:
        return f'"{name}" is not a real place\'s time zone. {hint}'
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: absolute or "../" paths; OSError: a directory such as "Europe" on some systems.
        suggestion = _suggest_timezone(name)
        if suggestion is not None:
            return f'"{name}" is not a time zone; did you mean "{suggestion}"? {hint}'
        return f'"{name}" is not a time zone Easel knows. {hint}'
    return None


def _suggest_timezone(name: str) -> str | None:
    folded = name.strip().casefold().replace(" ", "_")
    for candidate in sorted(zoneinfo.available_timezones() - _UNSUITABLE_ZONES):
        if candidate.casefold() == folded:
            return candidate
    return None


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one member; ``None`` means unlimited."""

    daily: int | None
    weekly: int | None
    exempt: bool = False


def limits_for(policy: QuotaPolicy, role_ids: Collection[int]) -> Limits:
    """Return the limits for a member with ``role_ids``: the highest of base and role overrides."""
    roles = set(role_ids)
    if roles.intersection(policy.exempt_roles):
        return Limits(daily=None, weekly=None, exempt=True)
    matching = [override for override in policy.role_limits if override.role_id in roles]
    return Limits(
        daily=_highest(policy.daily, (override.daily for override in matching)),
        weekly=_highest(policy.weekly, (override.weekly for override in matching)),
    )


def _highest(base: int | None, overrides: Iterable[int | None]) -> int | None:
    best = base
    for value in overrides:
        if best is None or value is None:
            return None
        best = max(best, value)
    return best


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """A half-open span of time ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end

    @property
    def duration(self) -> timedelta:
        """Return the window's real length (a local day can be 23 or 25 hours around DST)."""
        return self.end - self.start


@dataclass(frozen=True)
class Windows:
    """The day, ISO week (Monday first) and calendar month containing a moment, in a guild's zone."""

    day: Window
    week: Window
    month: Window
    timezone: str = DEFAULT_TIMEZONE


def windows(now: datetime, timezone: str = DEFAULT_TIMEZONE) -> Windows:
    """Return the current day, week and month in ``timezone`` as UTC bounds for counting usage."""
    zone = _zone(timezone)
    today = _as_utc(now).astimezone(zone).date()
    monday = today - timedelta(days=today.weekday())
    first = today.replace(day=1)
    next_first = (first + timedelta(days=31)).replace(day=1)
    return Windows(
        day=Window(_midnight(today, zone), _midnight(today + timedelta(days=1), zone)),
        week=Window(_midnight(monday, zone), _midnight(monday + timedelta(days=7), zone)),
        month=Window(_midnight(first, zone), _midnight(next_first, zone)),
        timezone=timezone,
    )


def _zone(name: str) -> zoneinfo.ZoneInfo:
    problem = validate_timezone(name)
    if problem is not None:
        raise ValueError(problem)
    return zoneinfo.ZoneInfo(name)


def _midnight(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    # Wall-clock arithmetic on dates, then one conversion: adding timedelta(days=1) to an aware
    # datetime would be 24 real hours, wrong on DST change days. Where midnight itself does not
    # exist (e.g. America/Santiago springs forward at 00:00), fold=0 reads it with the offset
    # before the change, which is exactly the day's first real instant.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected an aware datetime (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- checks


class RefusalReason(enum.StrEnum):
    """Why a request was refused before it was queued."""

    QUOTA_DAY = "quota_day"
    QUOTA_WEEK = "quota_week"
    COOLDOWN = "cooldown"
    BUDGET_IMAGES = "budget_images"
    BUDGET_SPEND = "budget_spend"


@dataclass(frozen=True)
class Refusal:
    """A refused request: why, what the member reads, and when trying again can succeed."""

    reason: RefusalReason
    message: str
    retry_at: datetime

    def error(self) -> LimitReached:
        """Return the refusal as the error the command tree shows the member."""
        return LimitReached(self.message)


@dataclass(frozen=True)
class Usage:
    """Quota images a member has used (or reserved) in the current day and week."""

    day: int
    week: int

    def __post_init__(self) -> None:
        if self.day < 0 or self.week < 0:
            raise ValueError(f"usage must be 0 or more, got day={self.day} week={self.week}")


def relative_time(moment: datetime) -> str:
    """Return a Discord timestamp that each member's client shows as "in 3 hours"."""
    # Rounded up so a reset is never announced as earlier than it happens.
    return f"<t:{math.ceil(_as_utc(moment).timestamp())}:R>"


def remaining(limits: Limits, usage: Usage) -> tuple[int | None, int | None]:
    """Return the images left today and this week; ``None`` means unlimited."""
    if limits.exempt:
        return None, None
    return _left(limits.daily, usage.day), _left(limits.weekly, usage.week)


def _left(limit: int | None, used: int) -> int | None:
    # Usage can exceed a limit a moderator has just lowered; "none left" is still the truth.
    return None if limit is None else max(0, limit - used)


def check(
    limits: Limits,
    usage: Usage,
    cost: int,
    *,
    now: datetime,
    windows: Windows,
    last_request_at: datetime | None,
    cooldown_s: int,
) -> Refusal | None:
    """Return why a request costing ``cost`` quota images must be refused now, or None to allow it.

    The week is checked before the day: its reset is never earlier, so a member out of both is
    told the date that actually helps. Cooldown comes last, since waiting out a cooldown is
    pointless while a quota refuses. ``last_request_at=None`` skips the cooldown.
    """
    if cost < 0:
        raise ValueError(f"cost must be 0 or more, got {cost}")
    if cooldown_s < 0:
        raise ValueError(f"cooldown_s must be 0 or more, got {cooldown_s}")
    now = _as_utc(now)
    if limits.exempt:
        return None
    if cost > 0:
        week_left = _left(limits.weekly, usage.week)
        if limits.weekly is not None and week_left is not None and cost > week_left:
            return _quota_refusal(
                RefusalReason.QUOTA_WEEK,
                cost,
                week_left,
                limits.weekly,
                windows.week.end,
                "this week",
                "weekly",
            )
        day_left = _left(limits.daily, usage.day)
        if limits.daily is not None and day_left is not None and cost > day_left:
            return _quota_refusal(
                RefusalReason.QUOTA_DAY, cost, day_left, limits.daily, windows.day.end, "today", "daily"
            )
    if last_request_at is not None and cooldown_s > 0:
        # A last request stamped in the future (clock skew between hosts) cannot lock a member
        # out for longer than one cooldown.
        retry_at = min(_as_utc(last_request_at), now) + timedelta(seconds=cooldown_s)
        if now < retry_at:
            wait_s = math.ceil((retry_at - now).total_seconds())
            return Refusal(
                RefusalReason.COOLDOWN,
                f"Easel allows one request every {_duration(cooldown_s)} here. Please wait "
                f"{_duration(wait_s)} and try again {relative_time(retry_at)}.",
                retry_at,
            )
    return None


def _quota_refusal(
    reason: RefusalReason, cost: int, left: int, limit: int, resets: datetime, period: str, adjective: str
) -> Refusal:
    have = "none" if left == 0 else str(left)
    message = (
        f"This needs {_images(cost)} but you have {have} left {period}; it resets {relative_time(resets)}."
    )
    if cost > limit:
        message += f" Your {adjective} limit is {_images(limit)}, so ask for less at a time."
    elif left > 0:
        message += " You can make a smaller request now, or wait until then."
    return Refusal(reason, message, resets)


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{value} {unit}{'' if value == 1 else 's'}"
        for value, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second"))
        if value
    ]
    return " ".join(parts) if parts else "0 seconds"


# --------------------------------------------------------------------------- guild budget


@dataclass(frozen=True)
class Budget:
    """A guild's monthly budget for one backend; ``None`` means no cap."""

    images_per_month: int | None = None
    spend_per_month_usd: float | None = None

    def __post_init__(self) -> None:
        _check_limit("images_per_month", self.images_per_month)
        spend = self.spend_per_month_usd
        if spend is not None and not (math.isfinite(spend) and spend >= 0):
            raise ValueError(f"spend_per_month_usd must be 0 or more (or None for no cap), got {spend}")


# Estimated spend is a sum of floats; a request landing exactly on the cap must not be refused
# because 0.1 + 0.2 > 0.3.
_SPEND_TOLERANCE: Final = 1e-9


def check_budget(
    budget: Budget,
    month_images: int,
    month_spend: float,
    cost_images: int,
    cost_usd: float,
    *,
    windows: Windows,
    backend: str | None = None,
) -> Refusal | None:
    """Return why the guild's monthly budget refuses this request, or None to allow it.

    Applies to every member, exempt or not. A request that costs nothing is never refused.
    """
    if cost_images < 0 or cost_usd < 0:
        raise ValueError(f"costs must be 0 or more, got {cost_images} images and ${cost_usd}")
    on = f"with {backend}" if backend else "on this backend"
    resets = windows.month.end
    limit = budget.images_per_month
    if limit is not None and cost_images > 0 and month_images + cost_images > limit:
        left = max(0, limit - month_images)
        if left == 0:
            message = (
                f"Generation {on} is paused for this server: it has used all {_images(limit)} of its "
                f"monthly budget. It resumes {relative_time(resets)}; ask a moderator if you need it sooner."
            )
        else:
            message = (
                f"This needs {_images(cost_images)} but this server has only {left} left in its monthly "
                f"budget {on}. Make a smaller request, or ask a moderator; the budget resets {relative_time(resets)}."
            )
        return Refusal(RefusalReason.BUDGET_IMAGES, message, resets)
    cap = budget.spend_per_month_usd
    if cap is not None and cost_usd > 0 and month_spend + cost_usd > cap + _SPEND_TOLERANCE:
        left_usd = max(0.0, cap - month_spend)
        if left_usd < _SPEND_TOLERANCE:
            message = (
                f"Generation {on} is paused for this server: it has reached its estimated monthly spend "
                f"of {_usd(cap)}. It resumes {relative_time(resets)}; ask a moderator if you need it sooner."
            )
        else:
            message = (
                f"This is estimated at {_usd(cost_usd)} but this server has only {_usd(left_usd)} left of "
                f"its monthly budget {on}. Make a smaller or lower-quality request, or ask a moderator; "
                f"the budget resets {relative_time(resets)}."
            )
        return Refusal(RefusalReason.BUDGET_SPEND, message, resets)
    return None


def _usd(amount: float) -> str:
    # Single images cost fractions of a cent on cheap models, where two decimals would say
    # "$0.00"; a third decimal is shown only when it carries information.
    if 0 < amount < 0.1:
        text = f"{amount:.3f}"
        return "$" + (text[:-1] if text.endswith("0") else text)
    return f"${amount:,.2f}"


# --------------------------------------------------------------------------- prices

PriceKey = tuple[str, str, str]
"""(model, size "WxH", quality) as written in the config's price table."""

# What "auto" quality is estimated as when the table has no "auto" row: OpenAI chooses the
# quality per request, and medium is the middle of what it can choose.
AUTO_QUALITY_AS: Final = "medium"
_SNAPSHOT_SUFFIX_LEN: Final = len("-2026-04-21")


@dataclass(frozen=True)
class PriceTable:
    """USD per image for OpenAI estimates, keyed by (model, "WxH", quality).

    Lookups fall back in this order: a dated snapshot ("gpt-image-2-2026-04-21") uses its base
    model's rows ("gpt-image-2") when it has none; quality "auto" or "" uses the "auto" row,
    else ``AUTO_QUALITY_AS``; a size not in the table is priced from the same model and
    quality's row nearest in pixel area, scaled by area (OpenAI bills image output by tokens,
    which grow with area). An unknown model or quality has no estimate (None).
    """

    prices: Mapping[PriceKey, float] = field(default_factory=dict)
    # (model, quality) -> {(width, height): usd}, built once from ``prices``.
    _rows: Mapping[tuple[str, str], Mapping[tuple[int, int], float]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        rows: dict[tuple[str, str], dict[tuple[int, int], float]] = {}
        for key, usd in self.prices.items():
            model, size, quality = key
            parsed = _parse_size(size)
            if not model.strip() or not quality.strip() or parsed is None:
                raise ValueError(
                    f"price table entry {key!r} needs a model, a size like '1024x1024' and a quality"
                )
            if not (math.isfinite(usd) and usd >= 0):
                raise ValueError(f"price table entry {key!r} must be 0 or more USD, got {usd}")
            rows.setdefault((model.strip(), quality.strip().lower()), {})[parsed] = float(usd)
        # Frozen: copies, so a caller mutating its dict later cannot change the estimates.
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))
        object.__setattr__(self, "_rows", MappingProxyType(rows))

    def price(self, model: str, width: int, height: int, quality: str) -> float | None:
        """Return the estimated USD for one ``width``×``height`` image, or None if unknown."""
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        rows = self._rows
        model = model.strip()
        if not any(known == model for known, _ in rows) and _is_snapshot(model):
            model = model[:-_SNAPSHOT_SUFFIX_LEN]
        quality = quality.strip().lower() or "auto"
        sizes = rows.get((model, quality))
        if sizes is None and quality == "auto":
            sizes = rows.get((model, AUTO_QUALITY_AS))
        if not sizes:
            return None
        if (width, height) in sizes:
            return sizes[(width, height)]
        area = width * height
        # Nearest area wins; on a tie the larger row, so the estimate errs high.
        (near_w, near_h), usd = min(
            sizes.items(), key=lambda row: (abs(row[0][0] * row[0][1] - area), -row[0][0] * row[0][1])
        )
        return usd * area / (near_w * near_h)


def _parse_size(size: str) -> tuple[int, int] | None:
    width, sep, height = size.strip().lower().partition("x")
    if not sep or not (width + height).isascii() or not width.isdigit() or not height.isdigit():
        return None
    parsed = int(width), int(height)
    return parsed if parsed[0] > 0 and parsed[1] > 0 else None


def _is_snapshot(model: str) -> bool:
    suffix = model[-_SNAPSHOT_SUFFIX_LEN:]
    if len(model) <= _SNAPSHOT_SUFFIX_LEN or suffix[0] != "-":
        return False
    try:
        date.fromisoformat(suffix[1:])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Admission:
    """What accepting one job asks of its member's quota and its guild's budget; the queue checks it atomically."""

    limits: Limits
    cost: int
    images: int
    usd: float
    now: datetime
    windows: Windows
    cooldown_s: int = 0
    budget: Budget = field(default_factory=Budget)
