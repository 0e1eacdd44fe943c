"""Quota, cooldown and budget arithmetic: what a member is allowed, and what a refusal tells them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.errors import LimitReached
from bot.jobs import JobKind
from bot.quotas import (
    Budget,
    Costs,
    Limits,
    PriceTable,
    QuotaPolicy,
    Refusal,
    RefusalReason,
    RoleLimit,
    Usage,
    check,
    check_budget,
    limits_for,
    relative_time,
    remaining,
    validate_timezone,
    windows,
)

BERLIN = "Europe/Berlin"
BOOSTER, ARTIST, MOD, OTHER = 101, 102, 103, 999
SECOND = timedelta(seconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


NOON = utc(2026, 3, 11, 12)  # a Wednesday
DAY_END = utc(2026, 3, 12)
WEEK_END = utc(2026, 3, 16)


def stamp(moment: datetime) -> str:
    """The Discord relative timestamp a member's client renders for ``moment``."""
    return f"<t:{int(moment.timestamp())}:R>"


def ask(
    limits: Limits,
    usage: Usage,
    cost: int,
    *,
    now: datetime = NOON,
    last_request_at: datetime | None = None,
    cooldown_s: int = 0,
    timezone: str = "UTC",
) -> Refusal | None:
    return check(
        limits,
        usage,
        cost,
        now=now,
        windows=windows(now, timezone),
        last_request_at=last_request_at,
        cooldown_s=cooldown_s,
    )


# --------------------------------------------------------------------------- windows


def test_the_last_second_of_a_utc_day_belongs_to_it_and_the_next_instant_does_not() -> None:
    last = windows(utc(2026, 3, 11, 23, 59, 59), "UTC")
    first = windows(utc(2026, 3, 12), "UTC")

    assert last.day.start == utc(2026, 3, 11)
    assert last.day.end == utc(2026, 3, 12) == first.day.start
    assert first.day.end == utc(2026, 3, 13)
    assert utc(2026, 3, 11, 23, 59, 59) in last.day
    assert utc(2026, 3, 12) not in last.day
    assert utc(2026, 3, 12) in first.day


def test_the_week_runs_monday_to_monday() -> None:
    sunday_night = windows(utc(2026, 3, 15, 23, 59, 59), "UTC")
    monday = windows(utc(2026, 3, 16), "UTC")

    assert sunday_night.week.start == utc(2026, 3, 9)
    assert sunday_night.week.end == utc(2026, 3, 16) == monday.week.start
    assert monday.week.end == utc(2026, 3, 23)


def test_an_iso_week_spans_new_year() -> None:
    # 2025-12-29 is a Monday; ISO week 1 of 2026 runs to Sunday 2026-01-04.
    for moment in (
        utc(2025, 12, 29),
        utc(2025, 12, 31, 23, 59, 59),
        utc(2026, 1, 1),
        utc(2026, 1, 4, 23, 59, 59),
    ):
        week = windows(moment, "UTC").week
        assert (week.start, week.end) == (utc(2025, 12, 29), utc(2026, 1, 5)), moment
    assert windows(utc(2026, 1, 5), "UTC").week.start == utc(2026, 1, 5)


def test_months_end_at_the_first_of_the_next_month_including_december_and_february() -> None:
    assert windows(utc(2026, 1, 31, 23, 59, 59), "UTC").month.end == utc(2026, 2, 1)
    assert windows(utc(2026, 2, 1), "UTC").month.start == utc(2026, 2, 1)
    assert windows(utc(2028, 2, 29, 12), "UTC").month.end == utc(2028, 3, 1)
    december = windows(utc(2025, 12, 31, 23, 59, 59), "UTC").month
    assert (december.start, december.end) == (utc(2025, 12, 1), utc(2026, 1, 1))
    assert windows(utc(2026, 1, 1), "UTC").month.start == utc(2026, 1, 1)


def test_a_berlin_day_is_23_hours_when_clocks_spring_forward() -> None:
    # 2025-03-30: 02:00 CET becomes 03:00 CEST. Local midnight is 23:00 UTC the evening before.
    day = windows(utc(2025, 3, 30, 12), BERLIN).day

    assert day.start == utc(2025, 3, 29, 23)
    assert day.end == utc(2025, 3, 30, 22)
    assert day.duration == timedelta(hours=23)
    assert windows(utc(2025, 3, 30, 21, 59, 59), BERLIN).day == day
    assert windows(utc(2025, 3, 30, 22), BERLIN).day.start == utc(2025, 3, 30, 22)


def test_a_berlin_day_is_25_hours_when_clocks_fall_back() -> None:
    # 2025-10-26: 03:00 CEST becomes 02:00 CET.
    day = windows(utc(2025, 10, 26, 1, 30), BERLIN).day

    assert day.start == utc(2025, 10, 25, 22)
    assert day.end == utc(2025, 10, 26, 23)
    assert day.duration == timedelta(hours=25)
    assert windows(utc(2025, 10, 26, 22, 59, 59), BERLIN).day == day
    assert windows(utc(2025, 10, 26, 23), BERLIN).day.start == day.end


def test_a_berlin_week_and_month_around_the_change_have_their_real_length() -> None:
    week = windows(utc(2025, 3, 27), BERLIN).week
    assert (week.start, week.end) == (utc(2025, 3, 23, 23), utc(2025, 3, 30, 22))
    assert week.duration == timedelta(days=7, hours=-1)

    march = windows(utc(2025, 3, 31, 21, 59, 59), BERLIN).month
    assert (march.start, march.end) == (utc(2025, 2, 28, 23), utc(2025, 3, 31, 22))
    assert windows(utc(2025, 3, 31, 22), BERLIN).month.start == utc(2025, 3, 31, 22)


def test_the_guilds_zone_decides_which_local_day_it_is() -> None:
    # 22:30 UTC on 30 June is already 1 July in Berlin (CEST, UTC+2).
    moment = utc(2025, 6, 30, 22, 30)
    berlin = windows(moment, BERLIN)

    assert berlin.day.start == utc(2025, 6, 30, 22)
    assert berlin.month.start == utc(2025, 6, 30, 22)
    assert windows(moment, "UTC").month.start == utc(2025, 6, 1)


def test_a_day_whose_midnight_does_not_exist_starts_at_its_first_real_instant() -> None:
    # America/Santiago springs forward at 00:00 (to 01:00) on 2024-09-08.
    day = windows(utc(2024, 9, 8, 12), "America/Santiago").day

    assert day.start == utc(2024, 9, 8, 4)
    assert day.start.astimezone(ZoneInfo("America/Santiago")).hour == 1
    assert day.duration == timedelta(hours=23)


def test_windows_need_an_aware_now_and_a_real_zone() -> None:
    with pytest.raises(ValueError, match="aware"):
        windows(datetime(2026, 3, 11, 12), "UTC")  # a naive datetime is the point
    with pytest.raises(ValueError, match="Europe/Berlin"):
        windows(utc(2026, 3, 11), "Mars/Olympus_Mons")


def test_windows_accept_any_aware_now() -> None:
    tokyo = datetime(2026, 3, 12, 8, 30, tzinfo=ZoneInfo("Asia/Tokyo"))  # 23:30 UTC on the 11th
    assert windows(tokyo, "UTC").day.start == utc(2026, 3, 11)


# --------------------------------------------------------------------------- time zones


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_real_zones_are_accepted(name: str) -> None:
    assert validate_timezone(name) is None


@pytest.mark.parametrize(
    "name", ["", "  ", "Mars/Olympus_Mons", "Europe", "../etc/passwd", "/etc/localtime", "localtime"]
)
def test_other_names_are_refused_with_an_example(name: str) -> None:
    message = validate_timezone(name)
    assert message is not None
    assert "Europe/Berlin" in message


def test_a_miscapitalised_zone_gets_a_suggestion() -> None:
    message = validate_timezone("europe/berlin")
    assert message is not None
    assert 'did you mean "Europe/Berlin"' in message


def test_a_policy_refuses_a_bad_zone() -> None:
    with pytest.raises(ValueError, match="Europe/Berlin"):
        QuotaPolicy(daily=10, weekly=50, timezone="Berlin")


# --------------------------------------------------------------------------- limits and roles


POLICY = QuotaPolicy(
    daily=10,
    weekly=40,
    role_limits=(
        RoleLimit(BOOSTER, daily=25, weekly=60),
        RoleLimit(ARTIST, daily=15, weekly=100),
        RoleLimit(OTHER + 1, daily=5, weekly=5),
    ),
    exempt_roles=(MOD,),
)


def policy(**changes: Any) -> QuotaPolicy:
    return replace(POLICY, **changes)


def test_a_member_without_matching_roles_gets_the_base_limits() -> None:
    assert limits_for(policy(), [OTHER]) == Limits(daily=10, weekly=40, exempt=False)
    assert limits_for(policy(), []) == Limits(daily=10, weekly=40)


def test_a_role_override_raises_the_limit() -> None:
    assert limits_for(policy(), [BOOSTER]) == Limits(daily=25, weekly=60)


def test_the_highest_override_applies_per_window() -> None:
    # The booster role is best for the day, the artist role for the week.
    assert limits_for(policy(), [OTHER, BOOSTER, ARTIST]) == Limits(daily=25, weekly=100)


def test_a_role_override_never_lowers_the_base() -> None:
    assert limits_for(policy(), [OTHER + 1]) == Limits(daily=10, weekly=40)
    assert limits_for(policy(), [OTHER + 1, ARTIST]) == Limits(daily=15, weekly=100)


def test_unlimited_beats_any_number() -> None:
    unlimited_day = policy(
        role_limits=(RoleLimit(BOOSTER, daily=None, weekly=60), RoleLimit(ARTIST, 500, 500))
    )
    assert limits_for(unlimited_day, [BOOSTER, ARTIST]) == Limits(daily=None, weekly=500)

    unlimited_base = policy(daily=None, weekly=None)
    assert limits_for(unlimited_base, [BOOSTER]) == Limits(daily=None, weekly=None)


def test_an_exempt_role_makes_the_member_exempt_whatever_else_they_have() -> None:
    assert limits_for(policy(), [BOOSTER, MOD]) == Limits(daily=None, weekly=None, exempt=True)


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="daily"):
        QuotaPolicy(daily=-1, weekly=None)
    with pytest.raises(ValueError, match="weekly"):
        RoleLimit(BOOSTER, daily=1, weekly=-5)
    with pytest.raises(ValueError, match="cooldown"):
        QuotaPolicy(daily=1, weekly=1, cooldown_s=-1)


# --------------------------------------------------------------------------- costs


@pytest.mark.parametrize(
    ("kind", "count", "expected"),
    [
        (JobKind.IMAGINE, 4, 4),
        (JobKind.VARIATION, 4, 4),
        (JobKind.REROLL, 2, 2),
        (JobKind.UPSCALE, 1, 1),
        (JobKind.PICK, 1, 0),
    ],
)
def test_default_costs(kind: JobKind, count: int, expected: int) -> None:
    assert Costs().cost_of(kind, count) == expected


def test_moderators_set_each_kinds_cost() -> None:
    costs = Costs(imagine_per_image=2, variation_per_image=3, reroll_per_image=1, upscale=0, pick=1)

    assert costs.cost_of(JobKind.IMAGINE, 4) == 8
    assert costs.cost_of(JobKind.VARIATION, 2) == 6
    assert costs.cost_of(JobKind.REROLL, 4) == 4
    assert costs.cost_of(JobKind.UPSCALE, 1) == 0
    assert costs.cost_of(JobKind.PICK, 1) == 1


@pytest.mark.parametrize("kind", list(JobKind))
def test_every_kind_has_a_cost(kind: JobKind) -> None:
    assert Costs().cost_of(kind, 1) >= 0


def test_costs_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="upscale"):
        Costs(upscale=-1)
    with pytest.raises(ValueError, match="count"):
        Costs().cost_of(JobKind.IMAGINE, 0)


# --------------------------------------------------------------------------- quota checks

TEN_A_DAY = Limits(daily=10, weekly=40)


def test_a_request_that_fits_exactly_is_allowed_and_one_more_is_not() -> None:
    assert ask(TEN_A_DAY, Usage(day=6, week=6), 4) is None
    assert ask(TEN_A_DAY, Usage(day=6, week=6), 5) is not None


def test_the_daily_refusal_says_what_is_left_what_it_costs_and_when_it_resets() -> None:
    refusal = ask(TEN_A_DAY, Usage(day=9, week=9), 4, now=NOON)

    assert refusal is not None
    assert refusal.reason is RefusalReason.QUOTA_DAY
    assert refusal.retry_at == DAY_END
    assert refusal.message.startswith(
        f"This needs 4 images but you have 1 left today; it resets {stamp(DAY_END)}."
    )
    assert "smaller request" in refusal.message


def test_a_member_with_nothing_left_is_told_so() -> None:
    refusal = ask(TEN_A_DAY, Usage(day=10, week=10), 1)

    assert refusal is not None
    assert "This needs 1 image but you have none left today" in refusal.message
    assert "smaller request" not in refusal.message


def test_the_weekly_refusal_resets_on_monday() -> None:
    refusal = ask(TEN_A_DAY, Usage(day=0, week=38), 4, now=NOON)

    assert refusal is not None
    assert refusal.reason is RefusalReason.QUOTA_WEEK
    assert refusal.retry_at == WEEK_END
    assert "you have 2 left this week" in refusal.message
    assert stamp(WEEK_END) in refusal.message


def test_when_both_windows_refuse_the_week_is_reported() -> None:
    # Waiting for tomorrow would not help: the week is still used up.
    refusal = ask(TEN_A_DAY, Usage(day=10, week=40), 1)

    assert refusal is not None
    assert refusal.reason is RefusalReason.QUOTA_WEEK


def test_a_request_bigger_than_the_limit_itself_says_so() -> None:
    refusal = ask(Limits(daily=2, weekly=None), Usage(day=0, week=0), 4)

    assert refusal is not None
    assert refusal.reason is RefusalReason.QUOTA_DAY
    assert "Your daily limit is 2 images" in refusal.message


def test_the_last_second_of_the_day_counts_against_today_and_the_next_is_fresh() -> None:
    limits = Limits(daily=1, weekly=None)
    last_second = utc(2026, 3, 11, 23, 59, 59)

    refusal = ask(limits, Usage(day=1, week=1), 1, now=last_second)
    assert refusal is not None
    assert refusal.retry_at == last_second + SECOND
    assert stamp(last_second + SECOND) in refusal.message
    # The store counts usage inside the new window, which is empty at its first instant.
    assert ask(limits, Usage(day=0, week=1), 1, now=last_second + SECOND) is None


def test_a_berlin_quota_resets_at_local_midnight_on_the_change_day() -> None:
    refusal = ask(
        Limits(daily=3, weekly=None), Usage(day=3, week=3), 1, now=utc(2025, 3, 30, 12), timezone=BERLIN
    )

    assert refusal is not None
    assert refusal.retry_at == utc(2025, 3, 30, 22)
    assert stamp(utc(2025, 3, 30, 22)) in refusal.message


def test_unlimited_windows_never_refuse() -> None:
    assert ask(Limits(daily=None, weekly=None), Usage(day=10_000, week=10_000), 4) is None
    assert ask(Limits(daily=None, weekly=40), Usage(day=39, week=39), 1) is None


def test_exempt_members_skip_quota_and_cooldown() -> None:
    exempt = Limits(daily=None, weekly=None, exempt=True)
    assert ask(exempt, Usage(day=500, week=500), 4, last_request_at=NOON - SECOND, cooldown_s=60) is None


def test_a_free_request_is_allowed_even_over_a_lowered_limit() -> None:
    assert ask(TEN_A_DAY, Usage(day=15, week=15), 0) is None


def test_remaining_is_what_a_quota_command_shows() -> None:
    assert remaining(TEN_A_DAY, Usage(day=3, week=12)) == (7, 28)
    assert remaining(Limits(daily=None, weekly=40), Usage(day=3, week=12)) == (None, 28)
    assert remaining(Limits(None, None, exempt=True), Usage(day=3, week=12)) == (None, None)
    # A moderator lowered the limit below what the member already used.
    assert remaining(Limits(daily=5, weekly=5), Usage(day=8, week=8)) == (0, 0)


def test_a_refusal_becomes_the_error_the_member_reads() -> None:
    refusal = ask(TEN_A_DAY, Usage(day=10, week=10), 1)
    assert refusal is not None

    error = refusal.error()
    assert isinstance(error, LimitReached)
    assert str(error) == refusal.message


def test_relative_time_never_announces_a_reset_early() -> None:
    assert relative_time(utc(2026, 3, 12)) == f"<t:{int(utc(2026, 3, 12).timestamp())}:R>"
    half_past = utc(2026, 3, 12) + timedelta(milliseconds=500)
    assert relative_time(half_past) == f"<t:{int(utc(2026, 3, 12).timestamp()) + 1}:R>"


# --------------------------------------------------------------------------- cooldown


def test_a_request_inside_the_cooldown_is_told_how_long_to_wait() -> None:
    refusal = ask(
        TEN_A_DAY, Usage(0, 0), 1, now=NOON, last_request_at=NOON - timedelta(seconds=10), cooldown_s=30
    )

    assert refusal is not None
    assert refusal.reason is RefusalReason.COOLDOWN
    assert refusal.retry_at == NOON + timedelta(seconds=20)
    assert "one request every 30 seconds" in refusal.message
    assert "wait 20 seconds" in refusal.message
    assert stamp(NOON + timedelta(seconds=20)) in refusal.message


def test_the_cooldown_ends_exactly_on_time() -> None:
    last = NOON - timedelta(seconds=30)
    assert ask(TEN_A_DAY, Usage(0, 0), 1, now=NOON - SECOND, last_request_at=last, cooldown_s=30) is not None
    assert ask(TEN_A_DAY, Usage(0, 0), 1, now=NOON, last_request_at=last, cooldown_s=30) is None


def test_long_cooldowns_read_naturally() -> None:
    refusal = ask(
        TEN_A_DAY, Usage(0, 0), 1, now=NOON, last_request_at=NOON - timedelta(seconds=1), cooldown_s=3661
    )

    assert refusal is not None
    assert "one request every 1 hour 1 minute 1 second" in refusal.message
    assert "wait 1 hour 1 minute" in refusal.message


def test_no_cooldown_without_a_previous_request_or_a_setting() -> None:
    assert ask(TEN_A_DAY, Usage(0, 0), 1, last_request_at=None, cooldown_s=30) is None
    assert ask(TEN_A_DAY, Usage(0, 0), 1, last_request_at=NOON - SECOND, cooldown_s=0) is None


def test_a_future_last_request_cannot_lock_a_member_out_for_longer_than_one_cooldown() -> None:
    refusal = ask(
        TEN_A_DAY, Usage(0, 0), 1, now=NOON, last_request_at=NOON + timedelta(hours=5), cooldown_s=30
    )

    assert refusal is not None
    assert refusal.retry_at == NOON + timedelta(seconds=30)


def test_a_quota_refusal_comes_before_the_cooldown() -> None:
    refusal = ask(TEN_A_DAY, Usage(10, 10), 1, now=NOON, last_request_at=NOON - SECOND, cooldown_s=30)

    assert refusal is not None
    assert refusal.reason is RefusalReason.QUOTA_DAY


# --------------------------------------------------------------------------- guild budget

MARCH = windows(NOON, "UTC")
APRIL_1 = utc(2026, 4, 1)


def test_a_request_within_the_budget_is_allowed_up_to_the_last_image() -> None:
    budget = Budget(images_per_month=100, spend_per_month_usd=5.0)
    assert check_budget(budget, 96, 4.0, 4, 1.0, windows=MARCH) is None


def test_an_exhausted_image_budget_pauses_the_backend_until_next_month() -> None:
    refusal = check_budget(Budget(images_per_month=100), 100, 0.0, 1, 0.0, windows=MARCH, backend="OpenAI")

    assert refusal is not None
    assert refusal.reason is RefusalReason.BUDGET_IMAGES
    assert refusal.retry_at == APRIL_1
    assert "Generation with OpenAI is paused for this server" in refusal.message
    assert f"resumes {stamp(APRIL_1)}" in refusal.message
    assert "moderator" in refusal.message


def test_a_request_bigger_than_what_is_left_of_the_budget_says_what_is_left() -> None:
    refusal = check_budget(Budget(images_per_month=100), 98, 0.0, 4, 0.0, windows=MARCH)

    assert refusal is not None
    assert refusal.reason is RefusalReason.BUDGET_IMAGES
    assert "This needs 4 images but this server has only 2 left" in refusal.message
    assert "on this backend" in refusal.message
    assert stamp(APRIL_1) in refusal.message


def test_the_estimated_spend_cap_refuses_what_would_exceed_it() -> None:
    refusal = check_budget(Budget(spend_per_month_usd=5.0), 0, 4.9, 1, 0.17, windows=MARCH)

    assert refusal is not None
    assert refusal.reason is RefusalReason.BUDGET_SPEND
    assert "estimated at $0.17" in refusal.message
    assert "only $0.10 left" in refusal.message
    assert refusal.retry_at == APRIL_1


def test_a_spent_budget_pauses_generation() -> None:
    refusal = check_budget(Budget(spend_per_month_usd=5.0), 0, 5.0, 1, 0.011, windows=MARCH)

    assert refusal is not None
    assert "paused" in refusal.message
    assert "$5.00" in refusal.message


def test_landing_exactly_on_the_spend_cap_is_allowed_despite_float_rounding() -> None:
    assert 0.1 + 0.2 > 0.3
    assert check_budget(Budget(spend_per_month_usd=0.3), 0, 0.1 + 0.2 - 0.2, 0, 0.2, windows=MARCH) is None
    assert check_budget(Budget(spend_per_month_usd=0.3), 0, 0.1, 1, 0.2, windows=MARCH) is None


def test_the_month_end_follows_the_guilds_zone() -> None:
    berlin_march = windows(utc(2025, 3, 15), BERLIN)
    refusal = check_budget(Budget(images_per_month=0), 0, 0.0, 1, 0.0, windows=berlin_march)

    assert refusal is not None
    assert refusal.retry_at == utc(2025, 3, 31, 22)


def test_free_requests_and_uncapped_budgets_are_never_refused() -> None:
    assert (
        check_budget(Budget(images_per_month=0, spend_per_month_usd=0.0), 50, 9.0, 0, 0.0, windows=MARCH)
        is None
    )
    assert check_budget(Budget(), 10**6, 10.0**6, 4, 1.0, windows=MARCH) is None


def test_budgets_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="images_per_month"):
        Budget(images_per_month=-1)
    with pytest.raises(ValueError, match="spend_per_month_usd"):
        Budget(spend_per_month_usd=float("nan"))


# --------------------------------------------------------------------------- prices

PRICES = PriceTable(
    {
        ("gpt-image-1-mini", "1024x1024", "low"): 0.005,
        ("gpt-image-1-mini", "1024x1024", "medium"): 0.011,
        ("gpt-image-1-mini", "1024x1024", "high"): 0.036,
        ("gpt-image-1-mini", "1536x1024", "medium"): 0.015,
        ("gpt-image-1-mini", "1024x1536", "medium"): 0.015,
        ("gpt-image-2", "1024x1024", "medium"): 0.05,
        ("gpt-image-2", "1024x1024", "auto"): 0.04,
    }
)


def test_an_exact_entry_is_its_price() -> None:
    assert PRICES.price("gpt-image-1-mini", 1024, 1024, "high") == 0.036
    assert PRICES.price("gpt-image-1-mini", 1536, 1024, "medium") == 0.015


def test_auto_quality_is_estimated_at_medium_unless_the_table_prices_auto() -> None:
    assert PRICES.price("gpt-image-1-mini", 1024, 1024, "auto") == 0.011
    assert PRICES.price("gpt-image-1-mini", 1024, 1024, "") == 0.011
    assert PRICES.price("gpt-image-2", 1024, 1024, "auto") == 0.04


def test_quality_is_case_insensitive() -> None:
    assert PRICES.price("gpt-image-1-mini", 1024, 1024, "HIGH") == 0.036


def test_an_unlisted_size_is_scaled_from_the_nearest_by_area() -> None:
    # 1536x864 is 1.27x the pixels of 1024x1024, the nearest listed area.
    price = PRICES.price("gpt-image-1-mini", 1536, 864, "low")
    assert price == pytest.approx(0.005 * 1536 * 864 / (1024 * 1024))
    # 2048x1152 is nearest to 1536x1024.
    assert PRICES.price("gpt-image-1-mini", 2048, 1152, "medium") == pytest.approx(0.015 * 1.5)


def test_a_dated_snapshot_uses_its_models_prices() -> None:
    assert PRICES.price("gpt-image-2-2026-04-21", 1024, 1024, "medium") == 0.05


def test_unknown_models_and_qualities_have_no_estimate() -> None:
    assert PRICES.price("some-other-model", 1024, 1024, "medium") is None
    assert PRICES.price("gpt-image-1-mini", 1024, 1024, "max") is None
    assert PRICES.price("gpt-image-2", 1024, 1024, "low") is None
    assert PriceTable().price("gpt-image-1-mini", 1024, 1024, "auto") is None


def test_the_table_is_a_copy_of_its_source() -> None:
    source = {("m", "1024x1024", "medium"): 0.01}
    table = PriceTable(source)
    source[("m", "1024x1024", "medium")] = 99.0

    assert table.price("m", 1024, 1024, "medium") == 0.01


@pytest.mark.parametrize(
    "key",
    [
        ("", "1024x1024", "low"),
        ("m", "1024", "low"),
        ("m", "0x1024", "low"),
        ("m", "1024x1024", " "),
        ("m", "1²x1", "low"),
    ],
)
def test_malformed_entries_are_refused(key: tuple[str, str, str]) -> None:
    with pytest.raises(ValueError, match="1024x1024"):
        PriceTable({key: 0.01})


def test_negative_prices_are_refused() -> None:
    with pytest.raises(ValueError, match="USD"):
        PriceTable({("m", "1024x1024", "low"): -0.01})
