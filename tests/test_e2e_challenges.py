"""End to end: a prompt challenge through the Discord test server, with a clock the test moves.

Start, submissions (the 🏆 Submit button and /challenge submit), the gallery and its votes, the
results with their podium, /leaderboard and a new season; restarts in every phase; guild
isolation; moderators' /challenge extend, disqualify and cancel.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fakediscord import DEFAULT_MEMBER_PERMISSIONS, Interaction, Message
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL_A,
    CHANNEL_B,
    GUILD_A,
    GUILD_B,
    NO_PINGS,
    Harness,
    command,
    running,
    said,
)

DAVE = 900_000_000_000_000_004
MANAGE_MESSAGES = 1 << 13
MEMBER = DEFAULT_MEMBER_PERMISSIONS
STARTED = re.compile(r"Challenge #(\d+) started")


class Clock:
    """The time Easel's quotas and challenge deadlines see; only the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def move(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def easel(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    async with running(tmp_path, clock=clock, queue={"max_per_member": 20}) as harness:
        # Pinning needs Manage Messages (or Pin Messages); the fake grants neither by default.
        harness.discord.bot_permissions |= MANAGE_MESSAGES
        yield harness


# -- helpers -------------------------------------------------------------------------------------


def advance(easel: Harness, clock: Clock, **delta: float) -> None:
    """Move the clock and wake the deadline runner (it would otherwise look within a minute)."""
    clock.move(**delta)
    assert easel.bot is not None
    easel.bot.services.contests.poke()


async def settle(easel: Harness) -> None:
    """Run one pass of the deadline runner's work and wait for it.

    A restart's own pass leaves no trace when there is nothing to do, so a test cannot wait for
    it; this pass reads the same stored state, so anything the restart would post again, it posts.
    Only used when nothing is due, so it cannot race the runner into a double post.
    """
    assert easel.bot is not None
    await easel.bot.services.contests.process_due()


async def start(easel: Harness, theme: str = "a lighthouse in a storm", **options: Any) -> int:
    """Start a challenge as the moderator CAROL and return its id."""
    text = await said(
        easel, "challenge start", theme=theme, **{"submit_for": "1h", "vote_for": "1h", **options}
    )
    match = STARTED.search(text)
    assert match is not None, text
    return int(match[1])


async def result(easel: Harness, user: int, prompt: str, guild: int = GUILD_A) -> Message:
    """Have ``user`` /imagine one image in the guild's art channel; return the posted result."""
    return await easel.result_of(await easel.imagine(prompt, user=user, guild=guild, count=1))


def job_of(message: Message) -> int:
    """The job id a result shows in its footer ("Job #12 · /show job:12")."""
    return int(message.embeds[0]["footer"]["text"].split("#")[1].split()[0])


def link(message: Message) -> str:
    """The link Discord's Copy Message Link gives for a message."""
    return f"https://discord.com/channels/{message.guild_id}/{message.channel_id}/{message.id}"


def button(message: Message, label: str) -> str:
    """The custom id of the button with this label."""
    found = [cid for text, _emoji, cid, _disabled in message.buttons() if text == label]
    assert len(found) == 1, message.buttons()
    assert found[0] is not None
    return found[0]


async def press(easel: Harness, message: Message, label: str, user: int) -> Interaction:
    """Click a button as ``user``; the answer must be private."""
    inter = await easel.discord.click(message, button(message, label), user_id=user)
    await inter.wait_callback()
    assert inter.ephemeral, inter.callback
    return inter


async def answer(easel: Harness, message: Message, label: str, user: int) -> str:
    """Click a button and return the private answer's text."""
    inter = await press(easel, message, label, user)
    assert inter.callback is not None
    assert inter.callback.data is not None
    return str(inter.callback.data["content"])


def posts(easel: Harness, kind: str, channel: int = CHANNEL_A) -> list[Message]:
    """Easel's challenge posts in a channel: "announcement", "gallery" or "results"."""
    prefix = {"announcement": "🏆 Challenge:", "gallery": "Entry ", "results": "🏆 Results:"}[kind]
    return [
        m
        for m in easel.discord.channel_messages(channel)
        if m.embeds and str(m.embeds[0].get("title", "")).startswith(prefix)
    ]


async def wait_posts(easel: Harness, kind: str, count: int, channel: int = CHANNEL_A) -> list[Message]:
    """Wait until exactly ``count`` posts of a kind are in the channel (the runner may be mid-pass)."""
    await easel.discord.wait_for(lambda: len(posts(easel, kind, channel)) >= count)
    found = posts(easel, kind, channel)
    assert len(found) == count, [m.embeds[0]["title"] for m in found]
    return found


def sent(easel: Harness) -> Counter[str]:
    """How many times Easel sent each challenge post (by nonce), accepted or not.

    Discord (and the fake) answer a repeated nonce with the earlier message, so a repost would
    not show as a second message; counting the sends catches one all the same. (The fake forgets
    nonces after five real minutes while the test's clock jumps hours, so only sends tell.)
    """
    return Counter(
        str(r.json["nonce"])
        for r in easel.discord.find_requests("POST", r"^/channels/\d+/messages$")
        if isinstance(r.json, dict) and str(r.json.get("nonce", "")).startswith("easel-c")
    )


def entry_of(message: Message) -> int:
    """The entry id a gallery message shows in its footer ("Challenge #1 · entry #4 · …")."""
    return int(message.embeds[0]["footer"]["text"].split("entry #")[1].split()[0])


def entry_in(text: str) -> int:
    """The entry id a confirmation names ("Entered as entry #4. …")."""
    match = re.search(r"entry #(\d+)", text)
    assert match is not None, text
    return int(match[1])


def timestamp(moment: datetime) -> str:
    """A deadline as the announcement shows it: a Discord timestamp in the member's own zone."""
    return f"<t:{int(moment.timestamp())}:f>"


# -- a whole challenge -----------------------------------------------------------------------------


async def test_a_whole_challenge_from_start_to_leaderboard(easel: Harness, clock: Clock) -> None:
    opened = clock.now
    challenge = await start(easel)
    [announcement] = await wait_posts(easel, "announcement", 1)
    embed = announcement.embeds[0]
    assert "a lighthouse in a storm" in embed["title"]
    assert timestamp(opened + timedelta(hours=1)) in embed["description"]  # submissions close
    assert timestamp(opened + timedelta(hours=2)) in embed["description"]  # voting closes
    assert "ties go to the earlier submission" in embed["description"]
    assert announcement.allowed_mentions == NO_PINGS
    await easel.discord.wait_for(lambda: announcement.pinned)

    alice, bob, dave = [await result(easel, user, f"storm {user}") for user in (ALICE, BOB, DAVE)]
    for shown in (alice, bob, dave):
        assert ("Submit", "🏆") in [(label, emoji) for label, emoji, _cid, _d in shown.buttons()]

    # The button enters one's own result, privately, with a way back.
    entered = await press(easel, alice, "Submit", ALICE)
    assert entered.original is not None
    assert "Entered as entry #" in entered.original.content
    alice_entry = entry_in(entered.original.content)
    assert [label for label, _e, _c, _d in entered.original.buttons()] == ["Withdraw"]
    assert "already your entry" in await answer(easel, alice, "Submit", ALICE)

    # Nobody enters another member's result, whatever button or link they use.
    assert "only submit images you generated" in await answer(easel, alice, "Submit", BOB)
    taken = await said(easel, "challenge submit", user=BOB, permissions=MEMBER, link=link(alice))
    assert "only submit images you generated" in taken
    # A message that is not a result (the announcement) is refused: provenance comes from the database.
    forged = await said(easel, "challenge submit", user=BOB, permissions=MEMBER, link=link(announcement))
    assert "not an Easel result" in forged

    text = await said(easel, "challenge submit", user=BOB, permissions=MEMBER, link=link(bob))
    assert "Entered as entry #" in text
    bob_entry = entry_in(text)

    # Dave enters, withdraws with the confirmation's button, and enters again (a new entry).
    first = await press(easel, dave, "Submit", DAVE)
    assert first.original is not None
    assert "was withdrawn" in await answer(easel, first.original, "Withdraw", DAVE)
    dave_entry = entry_in(await answer(easel, dave, "Submit", DAVE))
    assert dave_entry != entry_in(first.original.content)

    status = await said(easel, "challenge status", user=DAVE, permissions=MEMBER)
    assert "Submissions are open" in status
    assert "**Entries:** 3" in status

    # Submissions close: one gallery message per standing entry, in submission order.
    advance(easel, clock, hours=1)
    gallery = await wait_posts(easel, "gallery", 3)
    assert [entry_of(m) for m in gallery] == [alice_entry, bob_entry, dave_entry]
    assert [m.embeds[0]["title"] for m in gallery] == ["Entry 1", "Entry 2", "Entry 3"]
    assert f"<@{ALICE}>" in gallery[0].embeds[0]["description"]
    for message in gallery:
        assert len(message.attachments) == 1
        assert [(label, emoji) for label, emoji, _c, _d in message.buttons()] == [("Vote", "⭐")]
        assert message.allowed_mentions == NO_PINGS
    assert "No challenge is taking entries" in await answer(easel, alice, "Submit", ALICE)  # too late
    by_user = dict(zip((ALICE, BOB, DAVE), gallery, strict=True))

    assert "cannot vote for your own entry" in await answer(easel, by_user[ALICE], "Vote", ALICE)
    assert "Your vote is counted" in await answer(easel, by_user[ALICE], "Vote", CAROL)
    assert "taken back" in await answer(easel, by_user[ALICE], "Vote", CAROL)  # a change of mind
    assert "Your vote is counted" in await answer(easel, by_user[ALICE], "Vote", CAROL)
    assert "Your vote is counted" in await answer(easel, by_user[ALICE], "Vote", BOB)
    assert "Your vote is counted" in await answer(easel, by_user[BOB], "Vote", ALICE)
    assert "**Votes:** 3" in await said(easel, "challenge status", challenge=challenge)

    # Voting closes: the results, with the podium of voted entries, the ranking and the tiebreak rule.
    advance(easel, clock, hours=1)
    [results] = await wait_posts(easel, "results", 1)
    text = results.embeds[0]["description"]
    assert f"1. <@{ALICE}> · entry #{alice_entry} · 2 votes" in text
    assert f"2. <@{BOB}> · entry #{bob_entry} · 1 vote" in text
    assert f"3. <@{DAVE}> · entry #{dave_entry} · 0 votes" in text
    assert "Ties go to the earlier submission." in text
    assert results.allowed_mentions == NO_PINGS
    [podium] = results.attachments
    assert podium.filename == f"challenge-{challenge}-results.png"
    picture = Image.open(io.BytesIO(podium.data))
    assert picture.width > picture.height  # two entries on the podium, side by side

    assert "Voting closed" in await answer(easel, by_user[BOB], "Vote", CAROL)
    assert "Finished" in await said(easel, "challenge status", challenge=challenge)
    # The announcement says the challenge ended and leaves the pins.
    await easel.discord.wait_for(lambda: not announcement.pinned)
    assert announcement.embeds[0]["title"].endswith("(finished)")

    board = await command(easel, "leaderboard", user=DAVE, permissions=MEMBER)
    assert board.original is not None
    assert not board.original.ephemeral
    standings = board.original.embeds[0]["description"]
    assert f"1. <@{ALICE}> — **10** points" in standings
    assert f"2. <@{BOB}> — **6** points" in standings
    assert f"3. <@{DAVE}> — **1** points" in standings  # taking part
    assert board.original.allowed_mentions == NO_PINGS

    # Everything was posted once: announcement, three entries, results.
    assert len(easel.discord.channel_messages(CHANNEL_A)) == 5
    assert sorted(sent(easel).values()) == [1] * 5, sent(easel)

    # A new season starts everyone at zero.
    assert "Only moderators" in await said(easel, "challenge new-season", user=BOB, permissions=MEMBER)
    assert "Season 2 has begun" in await said(easel, "challenge new-season")
    board = await command(easel, "leaderboard", user=DAVE, permissions=MEMBER)
    assert board.original is not None
    assert board.original.embeds[0]["title"] == "🏆 Season 2 leaderboard"
    assert "No challenge has finished this season yet." in board.original.embeds[0]["description"]


# -- restarts ----------------------------------------------------------------------------------------


async def test_a_restart_in_every_phase_posts_everything_once_and_old_buttons_still_work(
    tmp_path: Path, clock: Clock
) -> None:
    async with running(tmp_path, clock=clock) as easel:
        # Without Manage Messages the announcement is posted all the same, just not pinned.
        await start(easel, "fog")
        [announcement] = await wait_posts(easel, "announcement", 1)
        assert not announcement.pinned
        alice, bob = await result(easel, ALICE, "fog at sea"), await result(easel, BOB, "fog in a wood")
        await press(easel, alice, "Submit", ALICE)

        # Submissions, nothing due: the restart posts nothing, and a button of the old process works.
        await easel.stop_bot()
        await easel.start_bot()
        assert "Entered" in await answer(easel, bob, "Submit", BOB)
        await settle(easel)
        await wait_posts(easel, "announcement", 1)

        # Down while submissions close: the gallery is posted on start, once.
        await easel.stop_bot()
        clock.move(hours=1, minutes=5)
        await easel.start_bot()
        gallery = await wait_posts(easel, "gallery", 2)
        assert "Your vote is counted" in await answer(easel, gallery[0], "Vote", BOB)

        # Voting, nothing due: no second gallery; the gallery posted by the previous process takes votes.
        await easel.stop_bot()
        await easel.start_bot()
        await settle(easel)
        assert "Your vote is counted" in await answer(easel, gallery[1], "Vote", ALICE)
        assert "taken back" in await answer(easel, gallery[0], "Vote", BOB)  # the vote survived
        assert "Your vote is counted" in await answer(easel, gallery[0], "Vote", BOB)
        await wait_posts(easel, "gallery", 2)

        # Finished, results not posted yet: Discord refuses the post, then Easel stops.
        pattern = rf"^/channels/{CHANNEL_A}/messages$"
        easel.discord.fail_next("POST", pattern, 403)
        advance(easel, clock, hours=1)
        await easel.discord.wait_for(
            lambda: [r.status for r in easel.discord.find_requests("POST", pattern)][-1:] == [403]
        )
        await easel.stop_bot()
        assert not posts(easel, "results")
        await easel.start_bot()
        [results] = await wait_posts(easel, "results", 1)
        # One vote each: the earlier submission (ALICE's) wins, and the list says so.
        text = results.embeds[0]["description"]
        assert f"1. <@{ALICE}>" in text
        assert f"2. <@{BOB}>" in text
        assert "1 vote (tie)" in text
        assert "Ties go to the earlier submission." in text

        # One more restart: nothing is posted again, and the points were awarded once.
        await easel.stop_bot()
        await easel.start_bot()
        await settle(easel)
        board = await command(easel, "leaderboard", user=BOB, permissions=MEMBER)
        assert board.original is not None
        standings = board.original.embeds[0]["description"]
        assert f"1. <@{ALICE}> — **10** points (1 win, 1 challenge)" in standings
        assert f"2. <@{BOB}> — **6** points (0 wins, 1 challenge)" in standings
        assert [len(posts(easel, kind)) for kind in ("announcement", "gallery", "results")] == [1, 2, 1]
        assert len(easel.discord.channel_messages(CHANNEL_A)) == 4
        # Each post was sent once; the results twice: refused, then accepted after the restart.
        assert sent(easel) == {"easel-ca1": 1, "easel-ce1": 1, "easel-ce2": 1, "easel-cr1": 2}


# -- guild isolation -------------------------------------------------------------------------------


async def test_guilds_never_see_each_others_challenges_or_results(easel: Harness) -> None:
    challenge = await start(easel)
    await wait_posts(easel, "announcement", 1)

    elsewhere = await said(
        easel, "challenge status", user=BOB, guild=GUILD_B, where=CHANNEL_B, challenge=challenge
    )
    assert f"Challenge #{challenge} does not exist" in elsewhere
    assert "No challenge is running" in await said(
        easel, "challenge status", user=BOB, guild=GUILD_B, where=CHANNEL_B
    )
    assert "does not exist" in await said(
        easel, "challenge cancel", user=BOB, guild=GUILD_B, where=CHANNEL_B, challenge=challenge
    )

    # BOB's result in guild B has no Submit button and cannot be entered in guild A's challenge.
    foreign = await result(easel, BOB, "a lighthouse elsewhere", guild=GUILD_B)
    assert "Submit" not in [label for label, _e, _c, _d in foreign.buttons()]
    refused = await said(easel, "challenge submit", user=BOB, permissions=MEMBER, link=link(foreign))
    assert "not an Easel result in this server" in refused
    # A link edited to name guild A's channel still points at guild B's message.
    edited = f"https://discord.com/channels/{GUILD_A}/{CHANNEL_A}/{foreign.id}"
    assert "not an Easel result in this server" in await said(
        easel, "challenge submit", user=BOB, permissions=MEMBER, link=edited
    )
    # A forged button naming guild B's job, on a guild A result, is refused too.
    mine = await result(easel, BOB, "a lighthouse here")
    forged = f"easel:submit:{job_of(foreign)}"
    mine.components.append(
        {
            "type": 1,
            "id": 90,
            "components": [{"type": 2, "id": 91, "style": 3, "label": "x", "custom_id": forged}],
        }
    )
    click = await easel.discord.click(mine, forged, user_id=BOB)
    await click.wait_callback()
    assert click.ephemeral
    assert click.callback is not None
    assert click.callback.data is not None
    assert f"Only images Easel generated and posted in <#{CHANNEL_A}>" in click.callback.data["content"]
    assert "**Entries:** 0" in await said(easel, "challenge status", challenge=challenge)


# -- moderators ------------------------------------------------------------------------------------


async def test_moderators_extend_disqualify_and_cancel_and_members_cannot_start(
    easel: Harness, clock: Clock
) -> None:
    [group] = [c for c in easel.discord.commands[GUILD_A] if c["name"] == "challenge"]
    # Members use /challenge submit and status, so the group is visible; the service checks moderators.
    assert group.get("default_member_permissions") is None
    refused = await said(
        easel, "challenge start", user=ALICE, permissions=MEMBER, theme="mine", submit_for="1h", vote_for="1h"
    )
    assert "Only moderators" in refused
    assert not easel.discord.channel_messages(CHANNEL_A)

    opened = clock.now
    challenge = await start(easel, "harbour lights")
    await wait_posts(easel, "announcement", 1)
    assert "Only moderators" in await said(
        easel, "challenge extend", user=ALICE, permissions=MEMBER, challenge=challenge, duration="1h"
    )
    extended = await said(easel, "challenge extend", challenge=challenge, duration="2h")
    assert f"<t:{int((opened + timedelta(hours=3)).timestamp())}:R>" in extended
    # The announcement shows the new deadline too.
    [announced] = posts(easel, "announcement")
    assert f"<t:{int((opened + timedelta(hours=3)).timestamp())}:" in announced.embeds[0]["description"]

    # Past the first deadline, submissions are still open: the extension counts.
    advance(easel, clock, hours=1, minutes=30)
    alice = await result(easel, ALICE, "harbour at night")
    assert "Entered" in await answer(easel, alice, "Submit", ALICE)
    assert "Submissions are open" in await said(easel, "challenge status", challenge=challenge)
    bob = await result(easel, BOB, "harbour at dawn")
    assert "Entered" in await answer(easel, bob, "Submit", BOB)
    advance(easel, clock, hours=1, minutes=30)
    gallery = await wait_posts(easel, "gallery", 2)

    # A disqualified entry takes no votes, and the votes it had stop counting.
    assert "Your vote is counted" in await answer(easel, gallery[0], "Vote", CAROL)
    disqualified = entry_of(gallery[0])
    assert "Only moderators" in await said(
        easel, "challenge disqualify", user=BOB, permissions=MEMBER, entry=disqualified
    )
    assert f"Entry #{disqualified} was disqualified" in await said(
        easel, "challenge disqualify", entry=disqualified
    )
    assert "was disqualified" in await answer(easel, gallery[0], "Vote", BOB)
    assert "**Entries:** 1 · **Votes:** 0" in await said(easel, "challenge status", challenge=challenge)

    # A second challenge runs at once in another channel, with options of every kind.
    contest = await easel.discord.add_channel(GUILD_A, "contest")
    other = await start(easel, "rivers", channel=contest, entries_per_member=2, anonymous=True)
    [announced] = await wait_posts(easel, "announcement", 1, channel=contest)
    assert "up to 2 images" in announced.embeds[0]["description"]
    assert "without their authors" in announced.embeds[0]["description"]

    assert "Only moderators" in await said(
        easel, "challenge cancel", user=ALICE, permissions=MEMBER, challenge=challenge
    )
    assert "cancelled" in await said(easel, "challenge cancel", challenge=challenge)
    assert "cancelled" in await answer(easel, gallery[0], "Vote", BOB)
    assert "Cancelled" in await said(easel, "challenge status", challenge=challenge)
    assert await said(easel, "challenge cancel", challenge=challenge) == "This challenge was cancelled."

    # Past the cancelled challenge's voting deadline a new one starts in its channel; the pass that
    # announces it has seen the old deadline and posted no results for it.
    advance(easel, clock, hours=2)
    await start(easel, "harbour lights, again")
    await wait_posts(easel, "announcement", 2)
    assert not posts(easel, "results")
    # The other channel's challenge ran out without entries: finished, with nothing to vote on.
    await wait_posts(easel, "results", 1, channel=contest)
    assert "Finished" in await said(easel, "challenge status", challenge=other, where=contest)

    board = await command(easel, "leaderboard", user=ALICE, permissions=MEMBER)
    assert board.original is not None
    assert "No challenge has finished" in board.original.embeds[0]["description"]
