"""The moderation service: settings changes, who may make them, and screening and pricing requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot import guild_settings
from bot.config import DEFAULT_PRICES
from bot.errors import ContentRefused, InvalidInput, NotAllowed
from bot.jobs import JobKind, JobParams, Requester
from bot.lifecycle import LocalLifecycle
from bot.moderation import Moderation
from bot.quotas import Admission, PriceTable
from bot.store import Store
from tests.factories import new_job

GUILD, CHANNEL, OTHER_CHANNEL = 1, 100, 200
MOD, MEMBER = 10, 20
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def who(
    user: int = MEMBER, *, channel: int = CHANNEL, mod: bool = False, roles: tuple[int, ...] = ()
) -> Requester:
    return Requester(GUILD, channel, user, 10_000_000, manage_guild=mod, role_ids=roles)


def params(
    prompt: str = "a lighthouse", *, count: int = 1, width: int = 1024, quality: str = "high"
) -> JobParams:
    return JobParams(prompt=prompt, width=width, height=1024, count=count, quality=quality)


class Audit:
    def __init__(self) -> None:
        self.lines: list[tuple[int, int, str]] = []

    async def __call__(self, guild: int, channel: int, text: str) -> None:
        self.lines.append((guild, channel, text))


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def moderation(store: Store, audit: Audit) -> Moderation:
    flagged_words = {"gore"}

    async def moderate(text: str) -> bool:
        return any(word in text for word in flagged_words)

    return Moderation(
        store,
        backends=("openai", "local"),
        prices=PriceTable(DEFAULT_PRICES),
        priced_models={"openai": "gpt-image-1-mini"},
        moderate=moderate,
        audit=audit,
        clock=lambda: NOW,
    )


async def test_only_moderators_change_settings_and_the_moderator_role_counts(moderation: Moderation) -> None:
    with pytest.raises(NotAllowed, match="Only moderators"):
        await moderation.change(who(), "daily_images", "5")
    await moderation.change(who(MOD, mod=True), "moderator_role", "<@&777>")
    change = await moderation.change(who(MEMBER, roles=(777,)), "daily_images", "5")
    assert (change.before, change.after) == ("unlimited", "5")
    # Losing the role takes the right away at once: nothing is remembered from before.
    with pytest.raises(NotAllowed):
        await moderation.change(who(MEMBER), "daily_images", "6")


async def test_every_change_posts_before_and_after_to_the_audit_channel(
    moderation: Moderation, audit: Audit
) -> None:
    await moderation.change(who(MOD, mod=True), "audit_channel", "<#555>")
    await moderation.change(who(MOD, mod=True), "cooldown_seconds", "30")
    await moderation.reset(who(MOD, mod=True), "cooldown_seconds")
    texts = [text for _, channel, text in audit.lines if channel == 555]
    assert texts == [
        f"⚙️ <@{MOD}> set **audit_channel**: none → <#555>",
        f"⚙️ <@{MOD}> set **cooldown_seconds**: 0 → 30",
        f"⚙️ <@{MOD}> set **cooldown_seconds**: 30 → 0",
    ]


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("daily_images", "lots", "daily_images takes a whole number, or unlimited"),
        ("default_count", "9", "default_count must be between 0 and 4"),
        ("nsfw", "sometimes", "nsfw must be one of: never, age_restricted"),
        ("allowed_backends", "openai, midjourney", "Unknown backend(s) midjourney"),
        ("timezone", "Mars/Olympus", "Europe/Berlin"),
        ("monthly_spend_usd", "a lot", "monthly_spend_usd takes an amount in US dollars"),
        ("moderation_check", "maybe", "moderation_check takes on or off"),
        ("audit_channel", "general", "audit_channel takes a channel"),
        ("blocked_patterns", "(unclosed", "Blocked pattern 1"),
        ("nonsense", "1", "There is no setting 'nonsense'"),
    ],
)
def test_bad_setting_text_names_the_setting_and_what_to_type(key: str, text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        guild_settings.parse(key, text, backends=("openai", "local"))
    assert message in str(refused.value)


def test_setting_text_is_read_into_values() -> None:
    parse = guild_settings.parse
    assert parse("weekly_images", "unlimited", backends=()) is None
    assert parse("monthly_spend_usd", "$12.50", backends=()) == 12.5
    assert parse("exempt_roles", "<@&1234567890123456> <@&2234567890123456>", backends=()) == [
        1234567890123456,
        2234567890123456,
    ]
    assert parse("allowed_backends", "all", backends=("openai",)) == []
    assert parse("timezone", "Europe/Berlin", backends=()) == "Europe/Berlin"
    assert guild_settings.show("exempt_roles", [5]) == "<@&5>"
    assert guild_settings.show("blocked_terms", ["x", "y"]) == "2 set"  # never echoes the terms


async def test_a_banned_member_is_told_once_in_full(moderation: Moderation) -> None:
    await moderation.add_to_list(who(MOD, mod=True), "banned", MEMBER)
    with pytest.raises(NotAllowed, match="A moderator has turned off"):
        await moderation.screen(who())
    with pytest.raises(NotAllowed, match=r"^Image generation is off for you"):
        await moderation.screen(who())
    await moderation.remove_from_list(who(MOD, mod=True), "banned", MEMBER)
    await moderation.screen(who())


async def test_channel_rules_refuse_generation_where_it_is_off(moderation: Moderation) -> None:
    await moderation.change(who(MOD, mod=True), "allowed_channels", f"<#{CHANNEL}>")
    await moderation.screen(who())
    with pytest.raises(NotAllowed, match=f"Try <#{CHANNEL}>"):
        await moderation.screen(who(channel=OTHER_CHANNEL))
    await moderation.reset(who(MOD, mod=True), "allowed_channels")
    await moderation.change(who(MOD, mod=True), "denied_channels", f"<#{OTHER_CHANNEL}>")
    with pytest.raises(NotAllowed, match="not allowed in this channel"):
        await moderation.screen(who(channel=OTHER_CHANNEL))


async def test_the_guild_default_backend_and_allowed_backends_apply(moderation: Moderation) -> None:
    settings = await moderation.settings(GUILD)
    assert moderation.backend_for(settings, None, ("openai", "local")) == "openai"
    await moderation.change(who(MOD, mod=True), "default_backend", "local")
    settings = await moderation.settings(GUILD)
    assert moderation.backend_for(settings, None, ("openai", "local")) == "local"
    await moderation.change(who(MOD, mod=True), "allowed_backends", "local")
    settings = await moderation.settings(GUILD)
    with pytest.raises(NotAllowed, match="openai backend is turned off"):
        moderation.backend_for(settings, "openai", ("openai", "local"))
    with pytest.raises(NotAllowed, match="turned off"):
        await moderation.admit(who(), JobKind.REROLL, "openai", params())


async def test_blocked_terms_refuse_without_echoing_the_term(moderation: Moderation) -> None:
    await moderation.add_to_list(who(MOD, mod=True), "blocked_terms", "crimson")
    with pytest.raises(InvalidInput) as refused:
        await moderation.admit(who(), JobKind.IMAGINE, "openai", params("a CRIМSON sky"))  # Cyrillic М
    assert "crimson" not in str(refused.value).lower()
    await moderation.admit(who(), JobKind.IMAGINE, "openai", params("a red sky"))


async def test_the_moderation_endpoint_check_runs_only_when_turned_on(moderation: Moderation) -> None:
    await moderation.admit(who(), JobKind.IMAGINE, "openai", params("gore"))
    await moderation.change(who(MOD, mod=True), "moderation_check", "on")
    with pytest.raises(ContentRefused, match="Nothing was charged"):
        await moderation.admit(who(), JobKind.IMAGINE, "openai", params("gore"))


async def test_admission_prices_the_job_by_role_cost_and_model(moderation: Moderation) -> None:
    await moderation.change(who(MOD, mod=True), "daily_images", "5")
    await moderation.set_role_limit(who(MOD, mod=True), 42, 50, None)
    await moderation.change(who(MOD, mod=True), "cost_upscale", "0")
    booster = await moderation.admit(who(roles=(42,)), JobKind.IMAGINE, "openai", params(count=3))
    assert (booster.limits.daily, booster.limits.weekly) == (50, None)
    assert booster.cost == 3
    assert booster.usd == pytest.approx(3 * 0.036)
    plain = await moderation.admit(who(), JobKind.UPSCALE, "lanczos", params())
    assert (plain.limits.daily, plain.cost, plain.usd) == (5, 0, 0.0)
    local = await moderation.admit(who(), JobKind.IMAGINE, "local", params(count=2))
    assert local.usd == 0.0


async def test_usage_report_counts_posted_and_pending_images_per_day_and_member(
    queue: LocalLifecycle, moderation: Moderation
) -> None:
    limits = (await moderation.admit(who(), JobKind.IMAGINE, "openai", params())).limits
    for day, user, count in ((0, MEMBER, 2), (0, MOD, 1), (3, MEMBER, 4)):
        at = NOW - timedelta(days=day)
        admission = Admission(
            limits,
            count,
            count,
            0.01 * count,
            at,
            (await moderation.admit(who(), JobKind.IMAGINE, "openai", params())).windows,
        )
        await queue.submit(new_job(GUILD, user, count=count), admission)
    with pytest.raises(NotAllowed):
        await moderation.usage_report(who())
    report = await moderation.usage_report(who(MOD, mod=True))
    assert report.total_images == 7
    assert dict(report.top) == {MEMBER: 6, MOD: 1}
    assert report.days[-1] == (NOW.date(), 3)
    assert report.days[-4] == ((NOW - timedelta(days=3)).date(), 4)
    assert report.spend_usd == 0.07
    chart = await moderation.usage_chart(report, {MEMBER: "alice"}, title="Usage")
    assert chart.startswith(b"\x89PNG")


async def test_a_thread_follows_its_channels_rule(moderation: Moderation) -> None:
    thread = 300
    await moderation.change(who(MOD, mod=True), "allowed_channels", f"<#{CHANNEL}>")
    in_thread = Requester(GUILD, thread, MEMBER, 10_000_000, parent_channel_id=CHANNEL)
    await moderation.screen(in_thread)
    await moderation.change(who(MOD, mod=True), "denied_channels", f"<#{CHANNEL}>")
    with pytest.raises(NotAllowed):
        await moderation.screen(in_thread)


async def test_two_moderators_adding_terms_at_once_both_keep_their_term(moderation: Moderation) -> None:
    terms = [f"term{i}" for i in range(8)]
    await asyncio.gather(*(moderation.add_to_list(who(MOD, mod=True), "blocked_terms", t) for t in terms))
    assert sorted((await moderation.stored(GUILD))["blocked_terms"]) == sorted(terms)


async def test_quota_view_explains_a_cooldown_without_using_the_ban_notice(
    moderation: Moderation, store: Store
) -> None:
    await moderation.change(who(MOD, mod=True), "cooldown_seconds", "600")
    await store.jobs.add_queued(new_job(GUILD, MEMBER))
    view = await moderation.quota_view(who())
    assert view.refusal is not None
    assert "wait" in view.refusal
    await moderation.add_to_list(who(MOD, mod=True), "banned", MEMBER)
    assert "turned off image generation for you" in ((await moderation.quota_view(who())).refusal or "")
    with pytest.raises(NotAllowed, match="A moderator has turned off"):  # still the first, full notice
        await moderation.screen(who())
