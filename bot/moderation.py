"""The moderation service: guild settings, who may change them, and what a request is allowed to cost.

No Discord objects here: the cogs pass a Requester, audit lines go out through a callback, and
another callback says which channels are a guild's own.
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

from bot import admission, charts, guild_settings, quotas
from bot.errors import ContentRefused, InvalidInput, NotAllowed
from bot.guild_settings import GuildSettings, Kind
from bot.i18n import _
from bot.jobs import JobKind, JobParams, Requester, utcnow
from bot.policy import PATTERNS_MAX, TERMS_MAX, validate_pattern, validate_term
from bot.quotas import Admission, Limits, PriceTable, Windows
from bot.quotas import Usage as QuotaUsage
from bot.store import Store

log = logging.getLogger(__name__)

# Sends one line to a guild's audit channel (guild id, channel id, text); errors are the sender's.
AuditSink = Callable[[int, int, str], Awaitable[None]]
# Says whether Easel may post in a channel of a guild (guild id, channel id): None when the channel
# is not one of that guild's (another server's, deleted, or never seen by Easel).
ChannelAccess = Callable[[int, int], bool | None]
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
        # None: no Discord to ask (tests of the rules alone), so every channel id is taken as the guild's.
        channels: ChannelAccess | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._backends = tuple(backends)
        self._prices = prices
        self._priced_models = dict(priced_models)
        self._moderate = moderate
        self._audit = audit
        self._channels = channels
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
            stored = await self._store.charges.guild_settings(guild_id)
            # Compiling a few hundred blocked terms takes ~100 ms: not on the event loop.
            cached = await asyncio.to_thread(GuildSettings.from_stored, stored)
            self._cache[guild_id] = cached
        return cached

    async def stored(self, guild_id: int) -> dict[str, Any]:
        """Return every setting's stored value (defaults included), for /settings show."""
        stored = await self._store.charges.guild_settings(guild_id)
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
        # Parsing compiles and tries blocked patterns: off the event loop.
        value = await asyncio.to_thread(guild_settings.parse, key, text, backends=self._backends)
        self._check_channels(who.guild_id, key, value)
        return await self._write(who, key, lambda _current: value)

    async def reset(self, who: Requester, key: str) -> Change:
        """Put one setting back to its default."""
        await self.require_moderator(who)
        if key not in guild_settings.BY_KEY:
            raise InvalidInput(f"There is no setting {key!r}; /settings show lists them.")
        default = guild_settings.BY_KEY[key].default
        return await self._write(who, key, lambda _current: default)

    async def set_role_limit(
        self, who: Requester, role_id: int, daily: int | None, weekly: int | None
    ) -> Change:
        """Give a role its own daily and weekly limits (both None removes the override)."""
        await self.require_moderator(who)
        for value in (daily, weekly):
            if value is not None and value < 0:
                raise InvalidInput("Limits are 0 or more (leave one empty for unlimited).")

        def update(rows: list[list[int | None]]) -> list[list[int | None]]:
            kept = [row for row in rows if row[0] != role_id]
            return kept if daily is None and weekly is None else [*kept, [role_id, daily, weekly]]

        return await self._write(who, "role_limits", update)

    async def add_to_list(self, who: Requester, key: str, item: Any) -> Change:
        """Add one entry to a list setting (a blocked term or pattern, a banned member)."""
        await self.require_moderator(who)
        check = {"blocked_terms": validate_term, "blocked_patterns": validate_pattern}.get(key)
        if check is not None and (problem := await asyncio.to_thread(check, item)):
            raise InvalidInput(problem)
        self._check_channels(who.guild_id, key, [item])
        cap = {"blocked_terms": TERMS_MAX, "blocked_patterns": PATTERNS_MAX}.get(key, 10_000)

        def update(current: list[Any]) -> list[Any]:
            if item in current:
                raise InvalidInput("That is already on the list.")
            if len(current) >= cap:
                raise InvalidInput(f"That list holds at most {cap} entries; remove some first.")
            return [*current, item]

        if key == "banned":
            await self._store.charges.forget_ban_notice(who.guild_id, int(item))
        return await self._write(who, key, update)

    async def remove_from_list(self, who: Requester, key: str, item: Any) -> Change:
        """Remove one entry from a list setting."""
        await self.require_moderator(who)

        def update(current: list[Any]) -> list[Any]:
            if item not in current:
                raise InvalidInput("That is not on the list.")
            return [entry for entry in current if entry != item]

        return await self._write(who, key, update)

    def _check_channels(self, guild_id: int, key: str, value: Any) -> None:
        """Refuse another server's channel in a channel setting, and an audit channel Easel cannot post in."""
        kind = guild_settings.BY_KEY[key].kind
        if self._channels is None or kind not in (Kind.CHANNEL, Kind.CHANNELS) or value is None:
            return
        for channel_id in value if isinstance(value, list) else [value]:
            access = self._channels(guild_id, channel_id)
            if access is None:
                raise InvalidInput(
                    f"<#{channel_id}> is not a channel of this server that Easel can see; "
                    f"choose one of this server's channels for {key}."
                )
            # The one-channel setting is where Easel posts (the audit channel); rules need only the channel.
            if kind is Kind.CHANNEL and not access:
                raise InvalidInput(
                    f"Easel cannot post in <#{channel_id}>: give it View Channel and Send Messages there, "
                    f"or choose another channel for {key}."
                )

    async def _write(self, who: Requester, key: str, update: Callable[[Any], Any]) -> Change:
        default = guild_settings.BY_KEY[key].default
        # Read, change and write in one transaction: two moderators editing one list at once
        # both keep their edit. ``update`` raises to change nothing.
        async with self._store.transaction():
            before = await self._store.charges.guild_setting(who.guild_id, key, default)
            after = update(before)
            await self._store.charges.put_guild_setting(
                who.guild_id, key, after, default=default, by=who.user_id
            )
        self._cache.pop(who.guild_id, None)
        change = Change(key, guild_settings.show(key, before), guild_settings.show(key, after))
        log.info("guild %d: member %d set %s", who.guild_id, who.user_id, key)
        line = f"⚙️ <@{who.user_id}> set **{key}**: {change.before} → {change.after}"
        await self.audit(who.guild_id, line)
        if key == "audit_channel" and before is not None and before != after and self._audit is not None:
            # Moving or turning off the audit channel is itself on record, where it was.
            await self._post(who.guild_id, int(before), line)
        return change

    async def purged(self, who: Requester, user_id: int, jobs: int, entries: int) -> None:
        """Put a moderator's removal of a member's stored data on record (log and audit channel)."""
        log.info("guild %d: member %d removed member %d's stored data", who.guild_id, who.user_id, user_id)
        await self.audit(
            who.guild_id,
            _(
                "🧹 <@{moderator}> removed the stored data of <@{member}>: prompts and images of {jobs} jobs, "
                "{entries} challenge entries.",
                moderator=who.user_id,
                member=user_id,
                jobs=jobs,
                entries=entries,
            ),
        )

    # -- screening requests ------------------------------------------------------------------------

    async def screen(self, who: Requester) -> GuildSettings:
        """Refuse a banned member or a channel where generation is off; return the guild's settings."""
        settings = await self.settings(who.guild_id)
        refusal = _access_refusal(settings, who)
        if refusal is not None:
            if who.user_id in settings.banned and not await self._store.charges.first_ban_notice(
                who.guild_id, who.user_id
            ):
                raise NotAllowed("Image generation is off for you in this server.")
            raise NotAllowed(refusal)
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
        """Screen a request's words and price it; the queue checks the quota when it writes the job."""
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
        now = self._clock()
        windows = quotas.windows(now, settings.quota.timezone)
        limits = quotas.limits_for(settings.quota, who.role_ids)
        usage = await self._store.charges.member_usage(who.guild_id, who.user_id, windows)
        refusal = _access_refusal(settings, who)
        if refusal is None:
            # The same rule the queue applies to a real request: one image on the default backend.
            backend = self.backend_for(settings, None, self._backends) if self._backends else ""
            cost = settings.quota.costs.cost_of(JobKind.IMAGINE, 1)
            probe = Admission(limits, cost, 1, 0.0, now, windows, settings.quota.cooldown_s, settings.budget)
            found = await admission.refusal(self._store, who.guild_id, who.user_id, backend or "", probe)
            refusal = found.message if found is not None else None
        return QuotaView(limits, usage, windows, refusal)

    async def usage_report(self, who: Requester) -> UsageReport:
        """Images per day over the last 30 days in the guild's time zone, top members, totals, spend."""
        settings = await self.require_moderator(who)
        zone = ZoneInfo(settings.quota.timezone)
        today = self._clock().astimezone(zone).date()
        first = today - timedelta(days=USAGE_DAYS - 1)
        since = quotas.windows(
            self._clock() - timedelta(days=USAGE_DAYS - 1), settings.quota.timezone
        ).day.start
        rows = await self._store.charges.charges_since(who.guild_id, since)
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
        if settings.audit_channel is not None:
            await self._post(guild_id, settings.audit_channel, text)

    async def _post(self, guild_id: int, channel_id: int, text: str) -> None:
        if self._audit is None:
            return
        if self._channels is not None and self._channels(guild_id, channel_id) is None:
            # Stored before channels were checked, or the channel is gone: never another server's.
            log.warning(
                "guild %d: audit channel %d is not one of its channels; the line was not posted",
                guild_id,
                channel_id,
            )
            return
        try:
            await self._audit(guild_id, channel_id, text)
        except Exception:
            log.warning("guild %d: could not post to audit channel %d", guild_id, channel_id, exc_info=True)


def _allows(settings: GuildSettings, backend: str) -> bool:
    return not settings.allowed_backends or backend in settings.allowed_backends


def _access_refusal(settings: GuildSettings, who: Requester) -> str | None:
    """Why this member may not generate in this channel at all (ban, channel rules), or None."""
    if who.user_id in settings.banned:
        return (
            "A moderator has turned off image generation for you in this server. "
            "Ask the moderators if you think this is a mistake."
        )
    # A thread follows its channel's rule, unless the thread itself is listed.
    here = {who.channel_id} | ({who.parent_channel_id} if who.parent_channel_id else set())
    if settings.allowed_channels and not here & set(settings.allowed_channels):
        where = ", ".join(f"<#{c}>" for c in settings.allowed_channels[:10])
        return f"Image generation is not allowed in this channel. Try {where}."
    if here & set(settings.denied_channels):
        return "Image generation is not allowed in this channel; try another one."
    return None
