"""Security: who may see a result again (/show and the buttons), how fast members may act, and
what /variation does before it downloads anything. Every case here was a hole once (issue 10)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.config import parse_settings
from bot.errors import ConfigError
from bot.jobs import PUBLIC_ID_ALPHABET, PUBLIC_ID_LENGTH
from bot.ratelimit import RateLimiter
from tests.fakediscord import DEFAULT_MEMBER_PERMISSIONS, Interaction, Message
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL_A,
    GUILD_A,
    MODERATOR,
    Harness,
    command,
    running,
)
from tests.tinymodels import build_safety_checker

VIEW_CHANNEL = 1 << 10
MANAGE_MESSAGES = 1 << 13
SHOW_ID = re.compile(r"/show job:(\S+)")
JOB_NUMBER = re.compile(r"Job #(\d+)")
NO_SUCH_RESULT = "That result does not exist, or is not one you can see."


# -- helpers -------------------------------------------------------------------------------------


def show_id(message: Message) -> str:
    """The id a result's footer gives for /show."""
    match = SHOW_ID.search(message.embeds[0]["footer"]["text"])
    assert match is not None, message.embeds[0]["footer"]
    return match[1]


def job_number(message: Message) -> int:
    """The job's integer id, as its footer shows it ("Job #12")."""
    match = JOB_NUMBER.search(message.embeds[0]["footer"]["text"])
    assert match is not None
    return int(match[1])


def button(message: Message, label: str) -> str:
    custom_id = next(cid for text, _emoji, cid, _disabled in message.buttons() if text == label)
    assert custom_id is not None
    return custom_id


async def private_answer(inter: Interaction) -> str:
    """Wait for an answer given at once and privately (a refusal); return its text."""
    callback = await inter.wait_callback()
    assert inter.ephemeral, callback
    assert callback.type == 4, callback
    assert callback.data is not None
    return str(callback.data["content"])


async def show(
    easel: Harness,
    user: int,
    job: str,
    *,
    where: int = CHANNEL_A,
    roles: list[int] | None = None,
    permissions: int = DEFAULT_MEMBER_PERMISSIONS,
) -> Interaction:
    """Send /show as ``user`` in channel ``where``; wait for its answer (the result, if shown)."""
    inter = await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=where,
        user_id=user,
        name="show",
        options={"job": job},
        roles=roles,
        permissions=permissions,
    )
    if (await inter.wait_callback()).type == 5:  # deferred: the result follows
        await easel.discord.wait_for(lambda: inter.original is not None and bool(inter.original.attachments))
    return inter


async def imagine_in(
    easel: Harness, channel: int, user: int = ALICE, *, roles: list[int] | None = None, **options: Any
) -> Message:
    """/imagine as ``user`` in ``channel``; return the posted result."""
    inter = await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=channel,
        user_id=user,
        name="imagine",
        options={"prompt": "the staff party plans", **options},
        roles=roles,
    )
    return await easel.result_of(inter, timeout=60)


def results_in(easel: Harness, channel: int) -> list[Message]:
    """Every result anyone can see in a channel (a message with an image)."""
    return [m for m in easel.discord.visible_messages(channel) if m.embeds and m.attachments]


def png(size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


# -- who may see a result again ------------------------------------------------------------------


async def test_a_staff_only_result_deleted_by_its_maker_never_reaches_the_main_channel(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as easel:
        staff = await easel.discord.add_role(GUILD_A, "staff")
        staff_room = await easel.discord.add_channel(
            GUILD_A,
            "staff",
            overwrites=[
                {"id": GUILD_A, "type": 0, "deny": VIEW_CHANNEL},  # @everyone shares the guild's id
                {"id": staff, "type": 0, "allow": VIEW_CHANNEL},
            ],
        )
        original = await imagine_in(easel, staff_room, roles=[staff], count=2)
        public_id = show_id(original)
        assert len(public_id) == PUBLIC_ID_LENGTH
        assert set(public_id) <= set(PUBLIC_ID_ALPHABET)

        # Bob cannot see the staff channel: neither its public id nor its number finds the result.
        for ref in (public_id, str(job_number(original)), f"#{job_number(original)}"):
            assert NO_SUCH_RESULT in await private_answer(await show(easel, BOB, ref))
        assert results_in(easel, CHANNEL_A) == []

        # Alice may post her own result where everyone sees it; Bob may not act on that copy.
        copy = (await show(easel, ALICE, public_id, roles=[staff])).original
        assert copy is not None
        assert not copy.ephemeral
        assert copy.attachments
        requests = len(easel.openai.requests)
        for label in ("U1", "U2", "V1", "V2", "Reroll"):
            refused = await easel.discord.click(copy, button(copy, label), user_id=BOB)
            assert f"Job #{job_number(original)} does not exist" in await private_answer(refused)
        assert results_in(easel, CHANNEL_A) == [copy]
        assert len(easel.openai.requests) == requests

        # Alice deletes it: nobody, not even a moderator who sees the staff room, shows or uses it again.
        await easel.discord.click(original, button(original, "Delete"), user_id=ALICE)
        await easel.discord.wait_for(lambda: easel.discord.messages[original.id].deleted)
        refused_show = await show(easel, CAROL, public_id, roles=[staff], permissions=MODERATOR)
        assert "was deleted" in await private_answer(refused_show)
        clicked = await easel.discord.click(copy, button(copy, "U1"), user_id=CAROL, roles=[staff])
        assert "was deleted" in await private_answer(clicked)
        assert results_in(easel, CHANNEL_A) == [copy]

        # Alice herself still sees it, privately and without buttons, by either id.
        for ref in (public_id, str(job_number(original))):
            mine = await show(easel, ALICE, ref, roles=[staff])
            assert mine.original is not None
            assert mine.original.ephemeral
            assert "Only you can see this: the result was deleted" in mine.original.content
            assert mine.original.custom_ids() == []
        assert results_in(easel, CHANNEL_A) == [copy]


async def test_integer_job_ids_cannot_be_walked_and_only_the_footer_id_shows_a_result(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as easel:
        first = await imagine_in(easel, CHANNEL_A, count=1)
        second = await imagine_in(easel, CHANNEL_A, count=1)
        ids = {show_id(first), show_id(second)}
        assert len(ids) == 2
        assert not any(i.isdigit() for i in ids)

        # Counting finds nothing: every number, existing or not, gets the same answer.
        for number in ("1", "2", "3", "999999"):
            assert NO_SUCH_RESULT in await private_answer(await show(easel, BOB, number))
        assert NO_SUCH_RESULT in await private_answer(await show(easel, BOB, "0123456789"))
        assert len(results_in(easel, CHANNEL_A)) == 2

        # The id in the footer is what is meant to be shared: with it Bob reposts the public result.
        shown = await show(easel, BOB, show_id(second))
        assert shown.original is not None
        assert not shown.original.ephemeral
        assert job_number(shown.original) == job_number(second)
        # Alice's own numbers keep working for her.
        own = await show(easel, ALICE, str(job_number(first)))
        assert own.original is not None
        assert job_number(own.original) == job_number(first)


async def test_a_deleted_result_cannot_be_entered_in_a_challenge_by_button_or_link(tmp_path: Path) -> None:
    async with running(tmp_path) as easel:
        easel.discord.bot_permissions |= MANAGE_MESSAGES  # to pin the announcement
        await command(easel, "challenge start", theme="lighthouses", submit_for="1d", vote_for="1d")
        original = await imagine_in(easel, CHANNEL_A, count=1)
        copy = (await show(easel, ALICE, show_id(original))).original
        assert copy is not None
        assert "Submit" in [label for label, *_ in copy.buttons()]
        link = f"https://discord.com/channels/{GUILD_A}/{CHANNEL_A}/{original.id}"

        await easel.discord.click(original, button(original, "Delete"), user_id=ALICE)
        await easel.discord.wait_for(lambda: easel.discord.messages[original.id].deleted)
        submitted = await easel.discord.click(copy, button(copy, "Submit"), user_id=ALICE)
        assert "was deleted" in await private_answer(submitted)
        by_link = await easel.discord.slash(
            guild_id=GUILD_A,
            channel_id=CHANNEL_A,
            user_id=ALICE,
            name="challenge submit",
            options={"link": link},
        )
        assert "was deleted" in await private_answer(by_link)


async def test_a_flagged_result_is_shown_only_in_age_restricted_channels(
    tmp_path: Path, tiny_model: Path
) -> None:
    checker = build_safety_checker(tmp_path / "checker", flag_everything=True)
    local = {"model": str(tiny_model), "steps": 4, "safety_checker": str(checker)}
    async with running(tmp_path, local=local) as easel:
        after_dark = await easel.discord.add_channel(GUILD_A, "after-dark", nsfw=True)
        grid = await imagine_in(easel, after_dark, backend="local", count=2)
        # Where it was posted, others may build on it; what they make from it is flagged too.
        picked = await easel.result_of(await easel.discord.click(grid, button(grid, "U1"), user_id=BOB))
        assert show_id(picked) != show_id(grid)
        here = await show(easel, BOB, show_id(grid), where=after_dark)
        assert here.original is not None
        assert not here.original.ephemeral

        for result in (grid, picked):
            refused = await show(easel, CAROL, show_id(result))
            assert "can only be shown or used in age-restricted channels" in await private_answer(refused)
        assert results_in(easel, CHANNEL_A) == []

        mine = await show(easel, ALICE, show_id(grid))
        assert mine.original is not None
        assert mine.original.ephemeral
        assert "Only you can see this: the safety checker flagged it" in mine.original.content
        assert results_in(easel, CHANNEL_A) == []


# -- how fast members may act --------------------------------------------------------------------


async def test_six_quick_u1_clicks_hit_the_rate_limit_and_so_does_show(tmp_path: Path) -> None:
    async with running(tmp_path, limits={"burst": 5, "refill_s": 600}) as easel:
        grid = await imagine_in(easel, CHANNEL_A, count=2)
        clicks = [await easel.discord.click(grid, button(grid, "U1"), user_id=BOB) for _ in range(6)]
        for click in clicks[:5]:
            await easel.result_of(click)
        text = await private_answer(clicks[5])
        assert re.fullmatch(r"You're clicking fast: try again in \d+ s\.", text), text
        assert len(results_in(easel, CHANNEL_A)) == 6  # the grid and five picks

        # Commands count too; another member is not affected.
        assert "You're clicking fast" in await private_answer(await show(easel, BOB, show_id(grid)))
        shown = await show(easel, CAROL, show_id(grid))
        assert shown.original is not None
        assert not shown.original.ephemeral


def test_the_rate_limiter_allows_a_burst_then_one_action_per_refill() -> None:
    now = [1000.0]
    limiter = RateLimiter(3, 2.0, clock=lambda: now[0])
    assert [limiter.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(1) == pytest.approx(2.0)
    assert limiter.take(2) == 0.0  # each member has their own bucket
    now[0] += 1.5
    assert limiter.take(1) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take(1) == 0.0
    assert limiter.take(1) == pytest.approx(2.0)
    # After a long pause the burst is back, but never more than the burst.
    now[0] += 3600
    assert [limiter.take(1) for _ in range(4)][-1] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("limits", "error"),
    [({"burst": 0}, r"limits\.burst = 0: must be 1 to 100"), ({"refill_s": -1}, r"limits\.refill_s = -1\.0")],
)
def test_limits_in_the_config_are_validated(limits: dict[str, Any], error: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_settings({"discord": {"token": "x"}, "limits": limits}, {}, base_dir=tmp_path)


# -- /variation checks before it downloads -------------------------------------------------------


async def test_variation_refuses_banned_members_denied_channels_and_non_images_without_downloading(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as easel:
        await command(easel, "settings ban", member=BOB)
        await command(easel, "settings channel", where=CHANNEL_A, channel=CHANNEL_A, rule="deny")
        downloads = len(easel.discord.cdn_requests)

        async def refused(user: int, data: bytes, filename: str, content_type: str) -> str:
            upload = easel.discord.attachment(data, filename, content_type)
            inter = await easel.discord.slash(
                guild_id=GUILD_A,
                channel_id=CHANNEL_A,
                user_id=user,
                name="variation",
                options={"image": upload},
            )
            # Refused either at once or after the public "thinking" message, which then goes.
            await easel.discord.wait_for(lambda: inter.callback is not None)
            if inter.ephemeral:
                return await private_answer(inter)
            await easel.discord.wait_for(lambda: bool(inter.followups))
            assert inter.original is not None
            assert inter.original.deleted
            return inter.followups[-1].content

        assert "turned off image generation for you" in await refused(BOB, png(), "cat.png", "image/png")
        assert len(easel.discord.cdn_requests) == downloads
        assert "not allowed in this channel" in await refused(ALICE, png(), "cat.png", "image/png")
        assert len(easel.discord.cdn_requests) == downloads
        # The type the payload declares is enough to refuse a file that is no image at all.
        assert "not an image" in await refused(CAROL, b"%PDF-1.7", "cat.pdf", "application/pdf")
        assert len(easel.discord.cdn_requests) == downloads
        assert easel.openai.requests_to("/images/edits") == []
