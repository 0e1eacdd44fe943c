"""End to end: /prefer changes what the next /imagine asks OpenAI for; slash options still win."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ALICE, BOB, CHANNEL_A, GUILD_A, GUILD_B, NO_PINGS, Harness, running, said
from tests.test_e2e import png


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path) as harness:
        yield harness


async def generated(easel: Harness, prompt: str, **options: Any) -> dict[str, Any]:
    """Run /imagine as ALICE (or ``user``) until its result shows; return what OpenAI was asked."""
    inter = await easel.imagine(prompt, **options)
    await easel.result_of(inter)
    request = easel.openai.requests_to("/images/generations")[-1]
    assert request.fields["prompt"].startswith(prompt)
    return request.fields


async def test_preferences_fill_what_imagine_leaves_out(easel: Harness) -> None:
    before = await generated(easel, "a plain lighthouse")
    assert "Avoid" not in before["prompt"]
    assert before["size"] == "1024x1024"

    saved = await said(
        easel,
        "prefer set",
        user=ALICE,
        aspect="landscape",
        quality="low",
        count=2,
        negative="text, watermarks",
    )
    assert saved.startswith("✅ Saved.")

    after = await generated(easel, "a lighthouse at dusk")
    assert after["prompt"] == "a lighthouse at dusk\nAvoid: text, watermarks"
    assert after["quality"] == "low"
    assert int(after["n"]) == 2
    assert after["size"] == "1536x1024"


async def test_slash_options_win_and_the_negative_prompt_is_added(easel: Harness) -> None:
    await said(easel, "prefer set", user=ALICE, aspect="landscape", quality="low", count=2, negative="text")
    fields = await generated(
        easel, "a quiet harbour", aspect="portrait", quality="high", count=1, negative="boats"
    )
    assert fields["prompt"] == "a quiet harbour\nAvoid: boats, text"
    assert fields["quality"] == "high"
    assert int(fields["n"]) == 1
    assert fields["size"] == "1024x1536"


async def test_preferences_are_per_member_and_per_server(easel: Harness) -> None:
    await said(easel, "prefer set", user=ALICE, negative="clouds")
    bob = await generated(easel, "a sky for bob", user=BOB)
    assert "Avoid" not in bob["prompt"]
    elsewhere = await generated(easel, "a sky in another server", guild=GUILD_B)
    assert "Avoid" not in elsewhere["prompt"]
    mine = await generated(easel, "a sky for alice")
    assert mine["prompt"].endswith("Avoid: clouds")


async def test_private_results_are_sent_only_to_the_member(easel: Harness) -> None:
    public = await easel.imagine("a public garden")
    assert not (await easel.result_of(public)).ephemeral

    await said(easel, "prefer set", user=ALICE, private=True)
    private = await easel.imagine("a secret garden")
    result = await easel.result_of(private)
    assert result.ephemeral
    assert "a secret garden" in result.embeds[0]["description"]
    assert result.allowed_mentions == NO_PINGS
    # Nothing about it is in the channel for others to see.
    channel = easel.discord.visible_messages(private.channel_id)
    assert not any("secret garden" in str(m.embeds) for m in channel)

    await said(easel, "prefer set", user=ALICE, private=False)
    again = await easel.imagine("a public garden again")
    assert not (await easel.result_of(again)).ephemeral


async def test_prefer_show_lists_them_and_clear_forgets_them(easel: Harness) -> None:
    empty = await said(easel, "prefer show", user=ALICE)
    assert "no preferences" in empty

    await said(
        easel, "prefer set", user=ALICE, aspect="portrait", count=3, negative="@everyone *blur*", remix=True
    )
    await said(easel, "prefer set", user=ALICE, quality="medium")  # the others stay
    shown = await said(easel, "prefer show", user=ALICE)
    assert "Aspect: portrait" in shown
    assert "Quality: medium" in shown
    assert "Count: 3" in shown
    assert "Remix: on" in shown
    assert "Private results: off" in shown
    # Member text is shown literally: no markdown, no pings.
    assert "\\*blur\\*" in shown
    assert "@everyone" not in shown.replace("@\u200beveryone", "")
    assert "no preferences" in await said(easel, "prefer show", user=BOB)

    cleared = await said(easel, "prefer clear", user=ALICE)
    assert "cleared" in cleared
    assert "no preferences" in await said(easel, "prefer show", user=ALICE)
    fields = await generated(easel, "after clearing")
    assert "Avoid" not in fields["prompt"]
    assert fields["size"] == "1024x1024"


async def test_preferences_survive_a_restart(easel: Harness) -> None:
    await said(easel, "prefer set", user=ALICE, negative="rain")
    await easel.restart_bot()
    assert "Negative prompt added to every request: rain" in await said(easel, "prefer show", user=ALICE)
    fields = await generated(easel, "a dry street")
    assert fields["prompt"].endswith("Avoid: rain")


async def test_variations_take_the_count_negative_prompt_and_privacy(easel: Harness) -> None:
    await said(easel, "prefer set", user=ALICE, count=2, negative="frames", private=True)
    upload = easel.discord.attachment(png(), "cat.png", "image/png")
    inter = await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=ALICE,
        name="variation",
        options={"image": upload, "prompt": "in watercolour"},
    )
    result = await easel.result_of(inter)
    assert result.ephemeral
    edit = easel.openai.requests_to("/images/edits")[-1]
    assert edit.fields["prompt"].endswith("Avoid: frames")
    assert int(edit.fields["n"]) == 2
