"""End to end: the real discord.py and openai clients, the whole bot, and local Discord/OpenAI servers."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.files import ImageFiles
from bot.jobs import Interaction as JobInteraction
from bot.jobs import Job, JobStatus, utcnow
from bot.store import Store
from tests.factories import new_job
from tests.fakeopenai import moderation_blocked_body
from tests.harness import (
    ALICE,
    BOB,
    CHANNEL_A,
    GUILD_A,
    GUILD_B,
    Harness,
    image_of,
    running,
)

NO_PINGS = {"parse": []}


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path) as harness:
        yield harness


async def running_without_interaction(store: Store) -> Job:
    """Write ALICE's job in channel A as a crash leaves it: rendering, its interaction long gone."""
    job = await store.jobs.add_queued(
        replace(new_job(guild=GUILD_A, user=ALICE, backend="openai"), channel_id=CHANNEL_A, interaction=None)
    )
    await store.jobs.start("openai", [job.id], [])
    return job


def png(size: tuple[int, int] = (300, 200), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_the_bot_asks_for_no_privileged_intents(easel: Harness) -> None:
    members, presences, message_content = 1 << 1, 1 << 8, 1 << 15
    assert easel.discord.identify_intents, "the bot never identified"
    assert easel.discord.identify_intents[-1] & (members | presences | message_content) == 0


async def test_imagine_grid_then_u2_and_reroll(easel: Harness) -> None:
    inter = await easel.imagine("a red fox in the snow", count=4)
    callback = await inter.wait_callback()
    assert callback.type == 5  # deferred: "Easel is thinking…"
    assert callback.received_at - inter.sent_at < 3.0

    result = await easel.result_of(inter)
    embed = result.embeds[0]
    assert "a red fox in the snow" in embed["description"]
    assert f"<@{ALICE}>" in str(embed["fields"])
    assert "Job #" in embed["footer"]["text"]
    assert result.allowed_mentions == NO_PINGS
    grid = image_of(result)
    assert grid.size[0] > 1024
    assert grid.size[1] > 1024
    labels = [label for label, _emoji, _cid, _disabled in result.buttons()]
    assert labels == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "Reroll", "Parameters", "Delete"]

    u2 = await easel.discord.click(result, result.custom_ids()[1], user_id=BOB)
    single = await easel.result_of(u2)
    assert image_of(single).size == (1024, 1024)
    assert [b[0] for b in single.buttons()] == [
        "Vary (Subtle)",
        "Vary (Strong)",
        "Upscale 2×",
        "Parameters",
        "Delete",
    ]
    assert f"<@{BOB}>" in str(single.embeds[0]["fields"])  # the new job is the clicker's

    reroll_id = next(cid for label, _e, cid, _d in result.buttons() if label == "Reroll")
    assert reroll_id is not None
    reroll = await easel.discord.click(result, reroll_id, user_id=ALICE)
    again = await easel.result_of(reroll)
    assert again.embeds[0]["title"] == "Reroll"
    assert len(easel.openai.requests_to("/images/generations")) == 2


async def test_upscale_is_a_real_2x_enlargement(easel: Harness) -> None:
    result = await easel.result_of(await easel.imagine("a castle"))
    up_id = next(cid for label, _e, cid, _d in result.buttons() if label == "Upscale 2×")
    assert up_id is not None
    upscaled = await easel.result_of(await easel.discord.click(result, up_id, user_id=ALICE))
    assert image_of(upscaled).size == (2048, 2048)
    assert "Lanczos" in str(upscaled.embeds[0]["fields"])

    # Varying the 2048² upscale asks OpenAI for a size it accepts, not 2048².
    vary_id = next(cid for label, _e, cid, _d in upscaled.buttons() if label == "Vary (Subtle)")
    assert vary_id is not None
    varied = await easel.result_of(await easel.discord.click(upscaled, vary_id, user_id=ALICE))
    assert image_of(varied).size == (1024, 1024)


async def test_a_prompt_with_everyone_pings_nobody(easel: Harness) -> None:
    inter = await easel.imagine(f"@everyone look at <@{BOB}> and @here")
    result = await easel.result_of(inter)
    for message in easel.discord.messages.values():
        assert message.allowed_mentions == NO_PINGS, message
    assert "@\u200beveryone" in result.embeds[0]["description"]


async def test_variation_of_an_upload_and_a_refused_fake_image(easel: Harness) -> None:
    good = easel.discord.attachment(png(mode="RGBA"), "cat.png", "image/png")
    inter = await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=ALICE,
        name="variation",
        options={"image": good, "prompt": "in watercolour"},
    )
    result = await easel.result_of(inter)
    assert result.embeds[0]["title"] == "Variation"
    edit = easel.openai.requests_to("/images/edits")[-1]
    assert edit.files[0].content_type == "image/png"

    bad = easel.discord.attachment(b"this is not an image at all", "cat.png", "image/png")
    refused = await easel.discord.slash(
        guild_id=GUILD_A, channel_id=CHANNEL_A, user_id=ALICE, name="variation", options={"image": bad}
    )
    await easel.discord.wait_for(lambda: any(m.ephemeral for m in refused.followups))
    text = refused.followups[-1].content
    assert "PNG" in text
    assert "JPEG" in text
    assert len(easel.openai.requests_to("/images/edits")) == 1


async def test_stale_forged_and_foreign_buttons_get_a_clear_private_answer(easel: Harness) -> None:
    result = await easel.result_of(await easel.imagine("a boat"))
    job_id = int(result.embeds[0]["footer"]["text"].split("#")[1].split()[0])
    cases = {
        "easel:reroll:999999": "does not exist",
        "easel:u:1": "not one Easel recognises",
    }
    for custom_id, expected in cases.items():
        # Discord only sends custom ids that are on the message: put the stale id on it, as an
        # old Easel version (or a job since purged) would have left it.
        result.components.append(
            {
                "type": 1,
                "id": 90,
                "components": [{"type": 2, "id": 91, "style": 2, "label": "old", "custom_id": custom_id}],
            }
        )
        click = await easel.discord.click(result, custom_id, user_id=BOB)
        await easel.discord.wait_for(lambda c=click: c.callback is not None)
        await easel.discord.wait_for(lambda c=click: bool(c.followups) or c.callback.data is not None)
        answer = (click.callback.data or {}).get("content") or click.followups[-1].content
        assert expected in answer
    # A member of another guild clicking a copy of this guild's button sees "does not exist" too.
    foreign = await easel.discord.slash(
        guild_id=GUILD_B,
        channel_id=222_000_000_000_000_202,
        user_id=BOB,
        name="show",
        options={"job": job_id},
    )
    await easel.discord.wait_for(lambda: foreign.callback is not None)
    assert "does not exist" in str(foreign.callback.data)


async def test_results_are_reduced_to_fit_the_guild_upload_limit(tmp_path: Path) -> None:
    async with running(tmp_path) as easel:
        easel.discord.guilds[GUILD_A].filesize_limit = 300 * 1024
        easel.openai.noisy = True
        result = await easel.result_of(await easel.imagine("static noise", count=2))
        assert result.attachments[0].size <= 300 * 1024
        assert "fit" in str(result.embeds[0]["fields"])


async def test_a_safety_refusal_tells_the_member_and_nothing_else(easel: Harness) -> None:
    easel.openai.fail_next(400, moderation_blocked_body())
    inter = await easel.imagine("something refused")
    await easel.discord.wait_for(lambda: inter.original is not None and "failed" in inter.original.content)
    assert inter.original is not None
    assert "safety" in inter.original.content
    assert "moderation_blocked" not in inter.original.content


async def test_queue_shows_position_and_cancel_works(easel: Harness) -> None:
    easel.openai.delay = 2.0
    first = await easel.imagine_in_turn("first", user=ALICE)
    second = await easel.imagine_in_turn("second", user=ALICE)
    third = await easel.imagine_in_turn("third", user=ALICE)
    await easel.discord.wait_for(lambda: third.original is not None and "position" in third.original.content)
    q = await easel.discord.slash(guild_id=GUILD_A, channel_id=CHANNEL_A, user_id=ALICE, name="queue")
    await easel.discord.wait_for(lambda: q.callback is not None)
    assert q.ephemeral
    listing = q.callback.data["content"]  # type: ignore[union-attr]
    assert "position 1" in listing
    assert third.original is not None
    cancel_id = third.original.custom_ids()[0]
    click = await easel.discord.click(third.original, cancel_id, user_id=ALICE)
    await easel.discord.wait_for(lambda: click.callback is not None)
    await easel.result_of(first, timeout=30)
    await easel.result_of(second, timeout=30)
    assert third.original is not None
    assert "cancelled" in third.original.content
    assert len(easel.openai.requests_to("/images/generations")) == 2


async def test_restart_with_jobs_queued_delivers_every_result_exactly_once(tmp_path: Path) -> None:
    async with running(tmp_path, openai={"concurrency": 1}) as easel:
        easel.openai.delay = 1.5
        inters = [await easel.imagine(f"job {i}", user=ALICE + i) for i in range(4)]
        for inter in inters:
            await inter.wait_callback()
        await easel.discord.wait_for(lambda: len(easel.openai.requests) >= 1)
        await easel.stop_bot()  # one job was rendering, three were waiting

        easel.openai.delay = 0
        await easel.start_bot()
        for inter in inters:
            await easel.result_of(inter, timeout=30)
        results = [m for m in easel.discord.messages.values() if m.embeds and m.attachments]
        assert len(results) == 4
        assert all(inter.original is not None and inter.original.edits >= 1 for inter in inters)
        assert not easel.discord.channel_messages(CHANNEL_A)  # all went through the interaction


async def test_after_the_token_expires_the_result_goes_to_the_channel_pinging_only_the_requester(
    easel: Harness,
) -> None:
    old = datetime.now(UTC) - timedelta(minutes=16)
    inter = await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=ALICE,
        name="imagine",
        options={"prompt": "late"},
        created_at=old,
    )
    # Discord would have refused a late acknowledgement; the fake lets it through so the
    # rest of the path (an expired webhook token at delivery time) can be exercised.
    await easel.discord.wait_for(lambda: bool(easel.discord.channel_messages(CHANNEL_A)), timeout=20)
    [posted] = easel.discord.channel_messages(CHANNEL_A)
    assert posted.content.startswith(f"<@{ALICE}>")
    assert posted.allowed_mentions == {"parse": [], "users": [str(ALICE)]}
    assert posted.nonce is not None
    assert inter.callback is not None


async def test_delete_is_for_the_requester_or_a_moderator(easel: Harness) -> None:
    result = await easel.result_of(await easel.imagine("a lamp"))
    delete_id = next(cid for label, _e, cid, _d in result.buttons() if label == "Delete")
    assert delete_id is not None
    refused = await easel.discord.click(result, delete_id, user_id=BOB)
    await easel.discord.wait_for(lambda: refused.callback is not None)
    assert refused.ephemeral
    assert "Only the member who asked" in str(refused.callback.data)  # type: ignore[union-attr]
    assert not result.deleted

    manage_messages = 1 << 13
    await easel.discord.click(result, delete_id, user_id=BOB, permissions=manage_messages)
    await easel.discord.wait_for(lambda: result.deleted)


async def test_every_job_transition_is_one_log_line_with_the_job_id(
    easel: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="bot.store")
    result = await easel.result_of(await easel.imagine("a kite"))
    job_id = int(result.embeds[0]["footer"]["text"].split("#")[1].split()[0])
    await easel.discord.wait_for(lambda: f"job {job_id} -> posted" in caplog.text)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.store.jobs" and f"job {job_id} " in r.getMessage()
    ]
    assert [line.split(" (")[0] for line in lines] == [
        f"job {job_id} -> {state}" for state in ("queued", "running", "rendered", "posted")
    ]
    assert "a kite" not in caplog.text  # prompts stay out of the log at INFO


async def test_a_result_rendered_before_a_crash_is_posted_once_after_restart(tmp_path: Path) -> None:

    async with running(tmp_path) as easel:
        await easel.stop_bot()
        # The crash came after the render was stored and before anything was posted; the
        # job's interaction is long gone, so the result must go to the channel.
        settings = easel.settings
        async with Store.open(settings.storage.path) as store:
            job = await running_without_interaction(store)
            paths = await ImageFiles(settings.storage.images_dir).save_results(job.id, (png(),), "png")
            await store.jobs.mark_rendered(job.id, paths, "OpenAI gpt-image-1-mini", None)

        await easel.start_bot()
        await easel.discord.wait_for(lambda: bool(easel.discord.channel_messages(job.channel_id)))
        await easel.restart_bot()  # a second restart must not post it again (waits for its recovery)
        [posted] = easel.discord.channel_messages(job.channel_id)
        assert len(easel.discord.result_posts(job.id)) == 1
        assert posted.content.startswith(f"<@{ALICE}>")
        assert f"Job #{job.id}" in posted.embeds[0]["footer"]["text"]

        # Its buttons, made by an earlier process, still work.
        vary_id = next(cid for label, _e, cid, _d in posted.buttons() if label == "Vary (Strong)")
        assert vary_id is not None
        varied = await easel.result_of(await easel.discord.click(posted, vary_id, user_id=BOB))
        assert varied.embeds[0]["title"] == "Variation"


async def test_commands_are_registered_once_each_with_descriptions(easel: Harness) -> None:
    commands = easel.discord.commands[GUILD_A]
    names = [c["name"] for c in commands]
    assert sorted(names) == [
        "Parameters",  # the message context menu
        "challenge",
        "help",
        "history",
        "imagine",
        "leaderboard",
        "mydata",
        "prefer",
        "queue",
        "quota",
        "settings",
        "show",
        "status",
        "usage",
        "variation",
    ]
    assert all(c["description"] for c in commands if c.get("type", 1) == 1)
    imagine = next(c for c in commands if c["name"] == "imagine")
    # One generation backend is configured, so members are not offered a choice of one.
    assert "backend" not in [o["name"] for o in imagine["options"]]


async def test_the_position_message_follows_the_queue(tmp_path: Path) -> None:
    async with running(tmp_path, openai={"concurrency": 1}) as easel:
        easel.openai.delay = 1.0
        for i in range(4):
            last = await easel.imagine_in_turn(f"job {i}", user=ALICE + i)

        def shows(text: str) -> bool:
            return last.original is not None and text in last.original.content

        await easel.discord.wait_for(lambda: shows("position **3** of 3"))
        await easel.discord.wait_for(lambda: shows("position **2** of 2"), timeout=15)
        await easel.discord.wait_for(lambda: shows("position **1** of 1"), timeout=15)
        await easel.result_of(last, timeout=30)


async def test_a_result_that_cannot_be_posted_ends_with_a_message_instead_of_retrying_forever(
    tmp_path: Path,
) -> None:

    async with running(tmp_path) as easel:
        await easel.stop_bot()
        async with Store.open(easel.settings.storage.path) as store:
            job = await running_without_interaction(store)
            # The image file was lost (a disk cleaned by hand): delivery can never succeed.
            await store.jobs.mark_rendered(job.id, ("jobs/404/1.png",), "OpenAI gpt-image-1-mini", None)
        await easel.start_bot()
        await easel.discord.wait_for(lambda: bool(easel.discord.channel_messages(CHANNEL_A)), timeout=20)
        [notice] = easel.discord.channel_messages(CHANNEL_A)
        assert f"Job #{job.id} failed" in notice.content
        assert "could not post them" in notice.content


async def test_a_quick_job_goes_from_thinking_to_its_result_and_a_late_status_edit_never_covers_it(
    easel: Harness,
) -> None:
    inter = await easel.imagine("a quick one")
    result = await easel.result_of(inter)
    # Rendered before either status edit was due: the member saw "thinking…", then the result.
    assert [
        edit.content for edit in result.history if "Queued" in edit.content or "Rendering" in edit.content
    ] == []
    assert easel.bot is not None
    delivery = easel.bot.services.delivery
    async with Store.open(easel.settings.storage.path) as store:
        [job] = await store.jobs.jobs_with_status(JobStatus.POSTED)
    edits = len(result.history)
    # A status edit scheduled while the job still had its token arrives now: it changes nothing.
    it = JobInteraction(easel.discord.application_id, inter.token, utcnow(), result.id)
    await delivery.show_running(replace(job, interaction=it))
    await delivery.show_position(replace(job, interaction=it), 1, 1)
    assert len(result.history) == edits
    assert result.embeds
    assert result.embeds[0]["footer"]["text"].startswith(f"Job #{job.id}")
