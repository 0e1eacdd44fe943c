"""The moderation service: guild settings, who may change them, and what a request is allowed to cost.

No Discord objects here: the cogs pass a Requester, and audit lines go out through a callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot import charts, guild_settings, quotas
from bot.errors import ContentRefused, InvalidInput, NotAllowed
from bot.guild_settings import GuildSettings
from bot.jobs import JobKind, JobParams, Requester, utcnow
from bot.policy import ContentRules
from bot.quotas import Admission, Limits, PriceTable, Windows
from bot.quotas import Usage as QuotaUsage
from bot.store import Store

log = logging.getLogger(__name__)

# Sends one line to a guild's audit channel (guild id, channel id, text); errors are the sender's.
AuditSink = Callable[[int, int, str], Awaitable[None]]
# Returns True when a moderation model flags the text.
Moderate = Callable[[str], Awaitable[bool]]
USAGE_DAYS = 30
TOP_MEMBERS = 10


@dataclass(frozen=True)
class Change:
    """One settings change, as the audit channel and the moderator's reply show it."""

    key: str
    before: str
    after: str


@dataclass(frozen=True)
class QuotaView:
    """What /quota tells a member."""

    limits: Limits
    usage: QuotaUsage
    windows: Windows
    refusal: str | None  # why they cannot generate in this channel right now, if they cannot


@dataclass(frozen=True)
class UsageReport:
    """What /usage shows moderators: images per day, top members, totals and estimated spend."""

    days: tuple[tuple[date, int], ...]
    top: tuple[tuple[int, int], ...]  # (member id, images)
    total_images: int
    spend_usd: float
    by_backend: tuple[tuple[str, int], ...]


class Moderation:
    """Reads and changes guild settings, and screens and prices requests before they are queued."""

    def __init__(
        self,
        store: Store,
        *,
        backends: Sequence[str],
        prices: PriceTable,
        priced_models: Mapping[str, str],
        moderate: Moderate | None = None,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._backends = tuple(backends)
        self._prices = prices
        self._priced_models = dict(priced_models)
        self._moderate = moderate
        self._audit = audit
        self._clock = clock
        self._cache: dict[int, GuildSettings] = {}

    @property
    def backends(self) -> tuple[str, ...]:
        """The generation backends settings may name."""
        return self._backends

    async def settings(self, guild_id: int) -> GuildSettings:
        """Return a guild's settings (cached until they change)."""
        cached = self._cache.get(guild_id)
        if cached is None:
            stored = await self._store.guild_settings(guild_id)
            # Compiling a few hundred blocked terms takes ~100 ms: not on the event loop.
            cached = await asyncio.to_thread(GuildSettings.from_stored, stored)
            self._cache[guild_id] = cached
        return cached

    async def stored(self, guild_id: int) -> dict[str, Any]:
        """Return every setting's stored value (defaults included), for /settings show."""
        stored = await self._store.guild_settings(guild_id)
        return {s.key: stored.get(s.key, s.default) for s in guild_settings.SETTINGS}

    def is_moderator(self, who: Requester, settings: GuildSettings) -> bool:
        """Manage Server, or the guild's moderator role."""
        return who.manage_guild or (
            settings.moderator_role is not None and settings.moderator_role in who.role_ids
        )

    async def require_moderator(self, who: Requester) -> GuildSettings:
        """Return the guild's settings, or refuse a member who is not a moderator (checked on every call)."""
        settings = await self.settings(who.guild_id)
        if not self.is_moderator(who, settings):
            raise NotAllowed("Only moderators (Manage Server, or the server's moderator role) can do that.")
        return settings

    # -- changing settings -------------------------------------------------------------------------

    async def change(self, who: Requester, key: str, text: str) -> Change:
        """Set one setting from a moderator's text."""
        await self.require_moderator(who)
        value = guild_settings.parse(key, text, backends=self._backends)
        return await self._write(who, key, value)

    async def reset(self, who: Requester, key: str) -> Change:
        """Put one setting back to its default."""
        await self.require_moderator(who)
        if key not in guild_settings.BY_KEY:
            raise InvalidInput(f"There is no setting {key!r}; /settings show lists them.")
        return await self._write(who, key, None)

    async def set_role_limit(
        self, who: Requester, role_id: int, daily: int | None, weekly: int | None
    ) -> Change:
        """Give a role its own daily and weekly limits (both None removes the override)."""
        await self.require_moderator(who)
        for value in (daily, weekly):
            if value is not None and value < 0:
                raise InvalidInput("Limits are 0 or more (leave one empty for unlimited).")
        current = (await self.stored(who.guild_id))["role_limits"]
        rows = [row for row in current if int(row[0]) != role_id]
        if daily is not None or weekly is not None:
            rows.append([role_id, daily, weekly])
        return await self._write(who, "role_limits", rows or None)

    async def add_to_list(self, who: Requester, key: str, item: Any) -> Change:
        """Add one entry to a list setting (a blocked term or pattern, a banned member)."""
        await self.require_moderator(who)
        current = list((await self.stored(who.guild_id))[key])
        if item in current:
            raise InvalidInput("That is already on the list.")
        updated = [*current, item]
        if key in ("blocked_terms", "blocked_patterns"):
            field = "terms" if key == "blocked_terms" else "patterns"
            await asyncio.to_thread(lambda: ContentRules(**{field: tuple(updated)}))
        if key == "banned":
            await self._store.forget_ban_notice(who.guild_id, int(item))
        return await self._write(who, key, updated)

    async def remove_from_list(self, who: Requester, key: str, item: Any) -> Change:
        """Remove one entry from a list setting."""
        await self.require_moderator(who)
        current = list((await self.stored(who.guild_id))[key])
        if item not in current:
            raise InvalidInput("That is not on the list.")
        current.remove(item)
        return await self._write(who, key, current or None)

    async def _write(self, who: Requester, key: str, value: Any) -> Change:
        default = guild_settings.BY_KEY[key].default
        stored = None if value == default else value
        before = await self._store.set_guild_setting(who.guild_id, key, stored, who.user_id)
        self._cache.pop(who.guild_id, None)
        change = Change(
            key,
            guild_settings.show(key, default if before is None else before),
            guild_settings.show(key, default if stored is None else stored),
        )
        log.info("guild %d: member %d set %s", who.guild_id, who.user_id, key)
        await self.audit(who.guild_id, f"⚙️ <@{who.user_id}> set **{key}**: {change.before} → {change.after}")
        return change

    # -- screening requests ------------------------------------------------------------------------

    async def screen(self, who: Requester) -> GuildSettings:
        """Refuse a banned member or a channel where generation is off; return the guild's settings."""
        settings = await self.settings(who.guild_id)
        if who.user_id in settings.banned:
            if await self._store.first_ban_notice(who.guild_id, who.user_id):
                raise NotAllowed(
                    "A moderator has turned off image generation for you in this server. "
                    "Ask the moderators if you think this is a mistake."
                )
            raise NotAllowed("Image generation is off for you in this server.")
        if settings.allowed_channels and who.channel_id not in settings.allowed_channels:
            where = ", ".join(f"<#{c}>" for c in settings.allowed_channels[:10])
            raise NotAllowed(f"Image generation is not allowed in this channel. Try {where}.")
        if who.channel_id in settings.denied_channels:
            raise NotAllowed("Image generation is not allowed in this channel; try another one.")
        return settings

    def backend_for(self, settings: GuildSettings, requested: str | None, able: Sequence[str]) -> str | None:
        """The member's choice, else the guild's default, else the first backend the guild allows.

        ``able`` are the configured backends that can do the operation; a requested name that is not
        among them is returned as is, for the caller to refuse with the list of backends.
        """
        allowed = [b for b in able if _allows(settings, b)]
        if not allowed:
            raise NotAllowed("No image backend is turned on in this server; ask a moderator.")
        if requested is None:
            return settings.default_backend if settings.default_backend in allowed else allowed[0]
        if requested in able and requested not in allowed:
            raise NotAllowed(
                f"The {requested} backend is turned off in this server; use {', '.join(allowed)}."
            )
        return requested

    async def admit(self, who: Requester, kind: JobKind, backend: str, params: JobParams) -> Admission:
        """Screen a request's words and price it; the store checks the quota when it writes the job."""
        settings = await self.screen(who)
        if backend in self._backends and not _allows(settings, backend):
            raise NotAllowed(f"The {backend} backend is turned off in this server.")
        verdict = settings.rules.check(params.prompt + " " + params.extra_prompt, params.negative)
        if verdict is not None:
            log.info(
                "guild %d: member %d's prompt refused by blocked %s #%d%s",
                who.guild_id,
                who.user_id,
                verdict.kind.name.lower(),
                verdict.index + 1,
                " (timed out)" if verdict.timed_out else "",
            )
            raise InvalidInput(verdict.message)
        if settings.moderation_check and self._moderate is not None:
            text = " ".join(t for t in (params.prompt, params.extra_prompt, params.negative) if t)
            if text and await self._moderate(text):
                raise ContentRefused(
                    "OpenAI's moderation check flagged this prompt, so Easel did not queue it. "
                    "Nothing was charged; please rephrase it."
                )
        now = self._clock()
        count = 1 if kind is JobKind.UPSCALE else params.count
        return Admission(
            limits=quotas.limits_for(settings.quota, who.role_ids),
            cost=settings.quota.costs.cost_of(kind, count),
            images=count,
            usd=self.price(backend, params, count),
            now=now,
            windows=quotas.windows(now, settings.quota.timezone),
            cooldown_s=settings.quota.cooldown_s,
            budget=settings.budget,
        )

    def price(self, backend: str, params: JobParams, count: int) -> float:
        """Estimated USD of a job on a priced (OpenAI) backend; 0 elsewhere or when the table has no row."""
        model = self._priced_models.get(backend)
        if model is None:
            return 0.0
        each = self._prices.price(model, params.width, params.height, params.quality)
        return 0.0 if each is None else round(each * count, 6)

    # -- members' and moderators' views ----------------------------------------------------------------

    async def quota_view(self, who: Requester) -> QuotaView:
        """What a member has left today and this week, when it resets, and why they cannot generate here."""
        settings = await self.settings(who.guild_id)
        windows = quotas.windows(self._clock(), settings.quota.timezone)
        usage = await self._store.member_usage(who.guild_id, who.user_id, windows)
        refusal = None
        try:
            await self.screen(who)
        except NotAllowed as exc:
            refusal = str(exc)
        return QuotaView(quotas.limits_for(settings.quota, who.role_ids), usage, windows, refusal)

    async def usage_report(self, who: Requester) -> UsageReport:
        """Images per day over the last 30 days in the guild's time zone, top members, totals, spend."""
        settings = await self.require_moderator(who)
        zone = ZoneInfo(settings.quota.timezone)
        today = self._clock().astimezone(zone).date()
        first = today - timedelta(days=USAGE_DAYS - 1)
        since = quotas.windows(
            self._clock() - timedelta(days=USAGE_DAYS - 1), settings.quota.timezone
        ).day.start
        rows = await self._store.charges_since(who.guild_id, since)
        per_day: Counter[date] = Counter()
        per_member: Counter[int] = Counter()
        per_backend: Counter[str] = Counter()
        spend = 0.0
        for at, user, backend, images, usd in rows:
            per_day[at.astimezone(zone).date()] += images
            per_member[user] += images
            per_backend[backend] += images
            spend += usd
        days = tuple(
            (first + timedelta(days=i), per_day[first + timedelta(days=i)]) for i in range(USAGE_DAYS)
        )
        return UsageReport(
            days=days,
            top=tuple(per_member.most_common(TOP_MEMBERS)),
            total_images=sum(per_day.values()),
            spend_usd=round(spend, 2),
            by_backend=tuple(per_backend.most_common()),
        )

    async def usage_chart(self, report: UsageReport, names: Mapping[int, str], title: str) -> bytes:
        """Draw the report as a PNG, off the event loop."""
        top = [(names.get(user, str(user)), images) for user, images in report.top]
        return await asyncio.to_thread(charts.usage_chart, report.days, top, title=title)

    async def audit(self, guild_id: int, text: str) -> None:
        """Post a line to the guild's audit channel, if it has one; a failure is logged, never raised."""
        settings = await self.settings(guild_id)
        if settings.audit_channel is None or self._audit is None:
            return
        try:
            await self._audit(guild_id, settings.audit_channel, text)
        except Exception:
            log.warning("guild %d: could not post to the audit channel", guild_id, exc_info=True)


def _allows(settings: GuildSettings, backend: str) -> bool:
    return not settings.allowed_backends or backend in settings.allowed_backends
