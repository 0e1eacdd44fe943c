"""End to end: moderators set Easel up with /settings, members read /quota, and every refusal says why."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakediscord import DEFAULT_MEMBER_PERMISSIONS, Interaction, Message
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL_A,
    GUILD_A,
    MANAGE_GUILD,
    MODERATOR,
    NO_PINGS,
    Harness,
    command,
    running,
    said,
)

RESET_TIME = re.compile(r"<t:\d+:R>")


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    # A member may have many jobs in flight, so only quotas and cooldowns refuse in these tests.
    async with running(tmp_path, queue={"max_per_member": 20}) as harness:
        yield harness


async def refusal(easel: Harness, inter: Interaction) -> str:
    """Wait for the private answer that replaced a refused command's public "thinking" message."""
    await easel.discord.wait_for(lambda: bool(inter.followups))
    [answer] = inter.followups
    assert answer.ephemeral
    assert inter.original is not None
    assert inter.original.deleted  # nothing public is left behind
    return answer.content


async def imagine(easel: Harness, prompt: str = "a lighthouse", **kwargs: Any) -> Interaction:
    """Send /imagine as ALICE (unless ``user`` says otherwise)."""
    user = kwargs.pop("user", ALICE)
    where = kwargs.pop("where", CHANNEL_A)
    return await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=where,
        user_id=user,
        name="imagine",
        options={"prompt": prompt, **kwargs},
    )


async def test_a_daily_quota_set_by_a_moderator_refuses_the_next_image_and_quota_shows_it(
    easel: Harness,
) -> None:
    assert await said(easel, "settings set", key="daily_images", value="2") == (
        "**daily_images**: unlimited → 2"
    )
    await easel.result_of(await imagine(easel, count=2))

    text = await refusal(easel, await imagine(easel, "one more"))
    assert "none left today" in text
    assert RESET_TIME.search(text)
    assert len(easel.openai.requests_to("/images/generations")) == 1

    quota = await said(easel, "quota", user=ALICE, permissions=DEFAULT_MEMBER_PERMISSIONS)
    assert "**Today:** **0** of 2" in quota
    assert RESET_TIME.search(quota)
    assert "**This week:** unlimited" in quota
    assert "cannot generate here right now" in quota  # and why: the same rule the next /imagine meets
    assert "none left today" in quota


async def test_a_failed_job_uses_no_quota(easel: Harness) -> None:
    await said(easel, "settings set", key="daily_images", value="1")
    easel.openai.fail_next(400)
    failed = await imagine(easel, "this one fails")
    await easel.discord.wait_for(lambda: failed.original is not None and "failed" in failed.original.content)

    quota = await said(easel, "quota", user=ALICE, permissions=DEFAULT_MEMBER_PERMISSIONS)
    assert "**Today:** **1** of 1" in quota
    await easel.result_of(await imagine(easel, "this one works"))


async def test_settings_are_checked_on_the_server_and_the_moderator_role_grants_them(
    easel: Harness,
) -> None:
    [group] = [c for c in easel.discord.commands[GUILD_A] if c["name"] == "settings"]
    assert int(group["default_member_permissions"]) == MANAGE_GUILD  # hidden from members

    # A member whose client still shows the command (a role changed since sync) reaches the bot.
    text = await said(
        easel, "settings set", user=BOB, permissions=DEFAULT_MEMBER_PERMISSIONS, key="daily_images", value="0"
    )
    assert "Only moderators" in text
    await easel.result_of(await imagine(easel, user=BOB))  # nothing changed

    helpers = await easel.discord.add_role(GUILD_A, "Helpers")
    assert "<@&" in await said(easel, "settings moderator-role", role=helpers)
    text = await said(
        easel,
        "settings set",
        user=BOB,
        permissions=DEFAULT_MEMBER_PERMISSIONS,
        roles=[helpers],
        key="cooldown_seconds",
        value="30",
    )
    assert text == "**cooldown_seconds**: 0 → 30"
    usage = await command(easel, "usage", user=ALICE, permissions=DEFAULT_MEMBER_PERMISSIONS)
    assert "Only moderators" in (await refusal(easel, usage))


async def test_settings_show_lists_every_value_and_marks_the_changed_ones(easel: Harness) -> None:
    await said(easel, "settings set", key="daily_images", value="5")
    await said(easel, "settings set", key="timezone", value="Europe/Berlin")
    await said(easel, "settings block", term="grimace")
    inter = await command(easel, "settings show")
    assert inter.original is not None
    assert inter.original.ephemeral
    [embed] = inter.original.embeds
    text = "\n".join(f"{f['name']}\n{f['value']}" for f in embed["fields"])
    for key in ("daily_images", "timezone", "blocked_terms", "cost_upscale", "audit_channel", "banned"):
        assert f"`{key}`" in text
    assert "`daily_images`: **5** ✏️" in text
    assert "`timezone`: **Europe/Berlin** ✏️" in text
    assert "`blocked_terms`: **1 set** ✏️" in text
    assert "`weekly_images`: **unlimited**\n" in text
    assert "grimace" not in text
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    assert len(text) + len(embed["title"]) + len(embed["description"]) <= 6000


async def test_a_blocked_term_refuses_look_alikes_without_repeating_the_term(easel: Harness) -> None:
    assert await said(easel, "settings block", term="grimace") == "**blocked_terms**: none → 1 set"
    # A Cyrillic і and a zero-width space inside the word.
    text = await refusal(easel, await imagine(easel, "a GR\u200bІMACE on a clown"))
    assert "blocked" in text
    assert "grimace" not in text.casefold()
    assert "clown" not in text
    assert not easel.openai.requests_to("/images/generations")

    # Only moderators are shown the list, in autocomplete.
    offered = await easel.discord.autocomplete(
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=CAROL,
        name="settings unblock",
        focused="term",
        options={"term": "gri"},
        permissions=MODERATOR,
    )
    assert (await offered.wait_callback()).data == {"choices": [{"name": "grimace", "value": "grimace"}]}
    snooped = await easel.discord.autocomplete(
        guild_id=GUILD_A, channel_id=CHANNEL_A, user_id=BOB, name="settings unblock", focused="term"
    )
    assert (await snooped.wait_callback()).data == {"choices": []}

    await said(easel, "settings unblock", term="grimace")
    await easel.result_of(await imagine(easel, "a grimace on a clown"))


async def test_a_banned_member_is_refused_and_told_once_in_full(easel: Harness) -> None:
    assert await said(easel, "settings ban", member=BOB) == f"**banned**: none → <@{BOB}>"
    first = await refusal(easel, await imagine(easel, user=BOB))
    assert "A moderator has turned off image generation for you" in first
    again = await refusal(easel, await imagine(easel, user=BOB))
    assert again == "Image generation is off for you in this server."
    assert not easel.openai.requests_to("/images/generations")

    await said(easel, "settings unban", member=BOB)
    await easel.result_of(await imagine(easel, user=BOB))


async def test_channel_rules_refuse_imagine_and_quota_says_why(easel: Harness) -> None:
    chat = await easel.discord.add_channel(GUILD_A, "chat")
    text = await said(easel, "settings channel", channel=chat, rule="deny")
    assert text == f"**denied_channels**: none → <#{chat}>"
    refused = await refusal(easel, await imagine(easel, where=chat))
    assert "not allowed in this channel" in refused
    quota = await said(easel, "quota", user=ALICE, permissions=DEFAULT_MEMBER_PERMISSIONS, where=chat)
    assert "⛔" in quota
    assert "not allowed in this channel" in quota

    # Allowing the art channel turns generation off everywhere else, with a pointer there.
    await said(easel, "settings channel", channel=CHANNEL_A, rule="allow")
    await said(easel, "settings channel", channel=chat, rule="clear")
    refused = await refusal(easel, await imagine(easel, where=chat))
    assert f"Try <#{CHANNEL_A}>" in refused
    await easel.result_of(await imagine(easel))


async def test_a_cooldown_refusal_says_how_long_to_wait(easel: Harness) -> None:
    await said(easel, "settings set", key="cooldown_seconds", value="120")
    await easel.result_of(await imagine(easel))
    text = await refusal(easel, await imagine(easel, "too soon"))
    assert "one request every 2 minutes" in text
    assert re.search(r"wait 1 minute( \d+ seconds?)?|wait 2 minutes", text), text
    assert RESET_TIME.search(text)


async def test_the_audit_channel_gets_a_line_per_generation_and_per_change(easel: Harness) -> None:
    audit = await easel.discord.add_channel(GUILD_A, "easel-audit")
    await said(easel, "settings audit", channel=audit)
    await said(easel, "settings set", key="weekly_images", value="40")
    result = await easel.result_of(await imagine(easel, "a red kite"))
    job_id = int(result.embeds[0]["footer"]["text"].split("#")[1].split()[0])

    def lines() -> list[Message]:
        return easel.discord.channel_messages(audit)

    await easel.discord.wait_for(lambda: len(lines()) >= 3)
    first, change, generation = (m.content for m in lines()[:3])
    assert first == f"⚙️ <@{CAROL}> set **audit_channel**: none → <#{audit}>"
    assert change == f"⚙️ <@{CAROL}> set **weekly_images**: unlimited → 40"
    assert f"<@{ALICE}>" in generation
    assert f"job #{job_id}" in generation
    assert "`openai`" in generation
    assert "cost 1" in generation
    assert all(m.allowed_mentions == NO_PINGS for m in lines())

    assert await said(easel, "settings audit") == f"**audit_channel**: <#{audit}> → none"  # empty: off
    # Turning the audit channel off is itself on record, in the channel that was turned off.
    assert lines()[-1].content == f"⚙️ <@{CAROL}> set **audit_channel**: <#{audit}> → none"
    await said(easel, "settings set", key="weekly_images", value="50")
    assert len(lines()) == 4


async def test_usage_posts_a_chart_with_totals(easel: Harness) -> None:
    await easel.result_of(await imagine(easel, count=2))
    await easel.result_of(await imagine(easel, user=BOB))
    inter = await command(easel, "usage")
    assert inter.callback is not None
    assert inter.callback.type == 5  # acknowledged before drawing
    await easel.discord.wait_for(lambda: inter.original is not None and bool(inter.original.attachments))
    assert inter.original is not None
    assert inter.original.ephemeral
    [chart] = inter.original.attachments
    assert chart.data.startswith(b"\x89PNG\r\n\x1a\n")
    text = inter.original.content
    assert "3 images" in text
    assert "`openai` 3" in text
    assert f"1. <@{ALICE}> 2 · 2. <@{BOB}> 1" in text
    assert "$" in text


async def test_ten_requests_at_once_with_one_image_left_let_exactly_one_through(easel: Harness) -> None:
    await said(easel, "settings set", key="daily_images", value="1")
    inters = await asyncio.gather(*(imagine(easel, f"at once {i}") for i in range(10)))

    def decided(inter: Interaction) -> bool:
        original = inter.original
        return bool(inter.followups) or (original is not None and bool(original.attachments))

    await easel.discord.wait_for(lambda: all(decided(i) for i in inters), timeout=30)
    accepted = [i for i in inters if not i.followups]
    refused = [i for i in inters if i.followups]
    assert len(accepted) == 1
    assert len(refused) == 9
    for inter in refused:
        assert "none left today" in await refusal(easel, inter)
    assert len(easel.openai.requests_to("/images/generations")) == 1


async def test_settings_autocomplete_offers_keys_and_valid_values(easel: Harness) -> None:
    async def offered(name: str, focused: str, **options: str) -> list[str]:
        inter = await easel.discord.autocomplete(
            guild_id=GUILD_A,
            channel_id=CHANNEL_A,
            user_id=CAROL,
            name=name,
            focused=focused,
            options=options,
            permissions=MODERATOR,
        )
        data = (await inter.wait_callback()).data or {}
        return [c["value"] for c in data["choices"]]

    keys = await offered("settings set", "key", key="")
    assert "daily_images" in keys
    assert "blocked_terms" not in keys  # it has /settings block
    assert "blocked_terms" in await offered("settings reset", "key", key="blocked")
    assert await offered("settings set", "value", key="moderation_check", value="") == ["on", "off"]
    assert await offered("settings set", "value", key="nsfw", value="") == ["never", "age_restricted"]
    assert "Europe/Berlin" in await offered("settings set", "value", key="timezone", value="berl")
    assert len(await offered("settings set", "value", key="timezone", value="")) == 25
    limits = await offered("settings set", "value", key="daily_images", value="7")
    assert limits[0] == "7"
    assert await offered("settings set", "value", key="default_count", value="9") == []  # at most 4
    assert await offered("settings set", "value", key="allowed_backends", value="") == ["all", "openai"]


async def test_the_moderation_check_asks_openai_before_queueing_and_charges_nothing(easel: Harness) -> None:
    await said(easel, "settings set", key="daily_images", value="1")
    await easel.result_of(await imagine(easel, "a quiet harbour", user=BOB))  # off: no check is made
    assert not easel.openai.requests_to("/moderations")

    await said(easel, "settings set", key="moderation_check", value="on")
    text = await refusal(easel, await imagine(easel, "something forbidden"))
    assert "moderation check flagged" in text
    assert "Nothing was charged" in text
    assert len(easel.openai.requests_to("/moderations")) == 1
    assert len(easel.openai.requests_to("/images/generations")) == 1
    # The refused request used none of the member's one image.
    await easel.result_of(await imagine(easel, "a calm sea"))


async def test_the_monthly_budget_pauses_generation_for_the_server(easel: Harness) -> None:
    await said(easel, "settings set", key="monthly_images", value="2")
    await easel.result_of(await imagine(easel, count=2))
    text = await refusal(easel, await imagine(easel, "one more", user=BOB))
    assert "paused" in text
    assert "moderator" in text
    assert RESET_TIME.search(text)
    quota = await said(easel, "quota", user=BOB, permissions=DEFAULT_MEMBER_PERMISSIONS)
    assert "paused" in quota  # /quota tells the member why before they try
