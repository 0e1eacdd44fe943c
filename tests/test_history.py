"""End to end: /history pages through a member's own jobs, across restarts, with Show buttons."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.store import Store
from tests.fakediscord import Interaction, Message
from tests.harness import ALICE, BOB, GUILD_B, NO_PINGS, Harness, command, running

LINE = re.compile(r"^`#(\d+)` <t:(\d+):f> · (\w+) · (.*)$", re.M)


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path) as harness:
        yield harness


async def make(easel: Harness, prompt: str, *, user: int = ALICE, guild: int | None = None) -> None:
    inter = await easel.imagine(prompt, user=user, **({"guild": guild} if guild else {}))
    await easel.result_of(inter)


async def history(easel: Harness, search: str | None = None, *, user: int = ALICE) -> Message:
    inter = await command(easel, "history", user=user, **({"search": search} if search else {}))
    assert inter.original is not None, easel.discord.dump()
    assert inter.original.ephemeral
    assert inter.original.allowed_mentions == NO_PINGS
    return replace(inter.original)


def listed(page: Message) -> list[str]:
    return [m[4] for m in LINE.finditer(page.content)]


def by_label(page: Message, label: str) -> str:
    found = [cid for lab, _, cid, _ in page.buttons() if lab == label and cid]
    assert len(found) == 1, page.buttons()
    return found[0]


async def turn(easel: Harness, page: Message, label: str) -> Message:
    """Click Previous or Next on a page; return the page as it reads afterwards (a copy)."""
    live = easel.discord.messages[page.id]
    before = live.edits
    click = await easel.discord.click(page, by_label(page, label), user_id=ALICE)
    await click.wait_callback()
    await easel.discord.wait_for(lambda: live.edits > before)
    return replace(live)


async def answer(easel: Harness, click: Interaction) -> Message:
    """Wait for a button's own answer (a private follow-up, or its edited deferred response)."""

    def said() -> Message | None:
        if click.followups:
            return click.followups[-1]
        original = click.original
        return original if original is not None and (original.content or original.embeds) else None

    await easel.discord.wait_for(lambda: said() is not None)
    message = said()
    assert message is not None
    return message


async def test_history_pages_ten_at_a_time_across_a_restart(easel: Harness) -> None:
    for n in range(1, 13):
        await make(easel, f"study number {n}")
    await make(easel, "bob's own secret sketch", user=BOB)
    await make(easel, "alice in another server", guild=GUILD_B)

    first = await history(easel)
    assert "page 1 of 2" in first.content
    assert listed(first) == [f"study number {n}" for n in range(12, 2, -1)]
    assert [lab for lab, *_ in first.buttons()][-1] == "Next"
    assert "Previous" not in [lab for lab, *_ in first.buttons()]
    # Each line's time is a Discord timestamp of when the job was asked for.
    async with Store.open(easel.settings.storage.path) as store:
        newest = await store.jobs.get(int(LINE.search(first.content)[1]))  # type: ignore[index]
    assert f"<t:{int(newest.created_at.timestamp())}:f>" in first.content

    await easel.restart_bot()
    second = await turn(easel, first, "Next")
    assert "page 2 of 2" in second.content
    assert listed(second) == ["study number 2", "study number 1"]
    assert "Next" not in [lab for lab, *_ in second.buttons()]

    await easel.restart_bot()
    back = await turn(easel, second, "Previous")
    assert listed(back) == listed(first)
    assert "bob" not in back.content + second.content
    assert "another server" not in back.content + second.content


async def test_history_search_filters_and_never_shows_another_members_jobs(easel: Harness) -> None:
    await make(easel, "a red fox")
    await make(easel, "a blue whale")
    await make(easel, "a red kite")
    await make(easel, "a red balloon for bob", user=BOB)
    await make(easel, "100% red_squares")

    red = await history(easel, "red")
    assert listed(red) == ["100% red\\_squares", "a red kite", "a red fox"]
    assert "page 1 of 1" in red.content
    assert "Next" not in [lab for lab, *_ in red.buttons()]
    # LIKE's wildcards in the search are taken literally.
    assert listed(await history(easel, "%")) == ["100% red\\_squares"]
    assert listed(await history(easel, "d_s")) == ["100% red\\_squares"]
    assert "no jobs matching" in (await history(easel, "zebra")).content
    assert listed(await history(easel, "red", user=BOB)) == ["a red balloon for bob"]


async def test_a_history_page_stays_on_its_search_when_turned(easel: Harness) -> None:
    for n in range(11):
        await make(easel, f"cat {n}")
    await make(easel, "a dog in between")
    page = await history(easel, "cat")
    assert "page 1 of 2" in page.content
    second = await turn(easel, page, "Next")
    assert listed(second) == ["cat 0"]


async def test_the_show_button_shows_the_members_own_job_privately(easel: Harness) -> None:
    await make(easel, "a lantern in fog")
    page = await history(easel)
    (job_id,) = [int(m[1]) for m in LINE.finditer(page.content)]
    shown = await answer(easel, await easel.discord.click(page, by_label(page, f"#{job_id}"), user_id=ALICE))
    assert shown.ephemeral
    assert "a lantern in fog" in shown.embeds[0]["description"]
    assert shown.attachments
    assert shown.allowed_mentions == NO_PINGS
    assert not shown.components  # shown privately, like /show private: no buttons

    # The same button pressed by another member does not show it (only one's own job ids work).
    refused = await answer(easel, await easel.discord.click(page, by_label(page, f"#{job_id}"), user_id=BOB))
    assert refused.ephemeral
    assert not refused.embeds
    assert "does not exist" in refused.content


async def test_a_history_page_turned_by_another_member_is_refused(easel: Harness) -> None:
    for n in range(11):
        await make(easel, f"tree {n}")
    page = await history(easel)
    click = await easel.discord.click(page, by_label(page, "Next"), user_id=BOB)
    refused = await answer(easel, click)
    assert refused.ephemeral
    assert "not yours" in refused.content
    assert "page 1 of 2" in easel.discord.messages[page.id].content
