"""End to end on the local backend: the whole bot, a tiny real diffusers model, and the Discord test server."""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.jobs import Interaction as JobInteraction
from bot.jobs import Requester
from bot.store import Store
from tests.factories import new_job
from tests.fakediscord import Interaction, Message
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL_A,
    CHANNEL_B,
    GUILD_A,
    GUILD_B,
    Harness,
    image_of,
    running,
)
from tests.tinymodels import build_safety_checker

MANAGE_GUILD = 1 << 5
STEP = re.compile(r"step (\d+)/(\d+)")


def local(model: Path, **extra: Any) -> dict[str, Any]:
    """A [local] section for the tiny model, fast enough for tests."""
    return {"model": str(model), "steps": 4, **extra}


def command(easel: Harness, name: str) -> dict[str, Any]:
    return next(c for c in easel.discord.commands[GUILD_A] if c["name"] == name)


def button(message: Message, label: str) -> str:
    custom_id = next(cid for text, _emoji, cid, _disabled in message.buttons() if text == label)
    assert custom_id is not None
    return custom_id


def field(message: Message, name: str) -> str:
    return str(next(f["value"] for f in message.embeds[0]["fields"] if f["name"] == name))


async def test_imagine_on_the_local_backend_then_pick_upscale_and_vary(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with running(tmp_path, local=local(tiny_model)) as easel:
        imagine = command(easel, "imagine")
        backend_option = next(o for o in imagine["options"] if o["name"] == "backend")
        assert backend_option["autocomplete"]

        inter = await easel.imagine("a lighthouse", backend="local", count=2, seed=1234)
        result = await easel.result_of(inter)
        assert "4 steps" in field(result, "Backend")
        assert field(result, "Seed") == "1234"
        assert [label for label, *_ in result.buttons()][:4] == ["U1", "U2", "V1", "V2"]
        assert easel.openai.requests_to("/images/generations") == []

        single = await easel.result_of(await easel.discord.click(result, button(result, "U2"), user_id=ALICE))
        assert image_of(single).size == (64, 64)

        upscale = await easel.discord.click(single, button(single, "Upscale 2×"), user_id=ALICE)
        upscaled = await easel.result_of(upscale)
        assert image_of(upscaled).size == (128, 128)
        assert "hires fix" in field(upscaled, "Backend")

        varied = await easel.result_of(
            await easel.discord.click(upscaled, button(upscaled, "Vary (Strong)"), user_id=BOB)
        )
        assert image_of(varied).size == (64, 64)  # back at the model's own size, not the upscale's
        assert varied.embeds[0]["title"] == "Variation"


async def test_progress_shows_the_step_a_bar_and_a_preview_then_the_result(
    tmp_path: Path, tiny_model: Path
) -> None:
    # ~40 ms a step at 512 px here: the render goes on for several seconds.
    slow = local(tiny_model, steps=120, resolution=512, progress_interval_s=1.0)
    async with running(tmp_path, local=slow) as easel:
        inter = await easel.imagine("a slow sunrise", backend="local")
        result = await easel.result_of(inter, timeout=60)
        progress = [edit for edit in result.history if STEP.search(edit.content)]
        assert len(progress) >= 2, [edit.content for edit in result.history]
        steps = [int(STEP.search(edit.content).group(1)) for edit in progress]  # type: ignore[union-attr]
        assert steps == sorted(steps)
        assert all(0 < s < 120 for s in steps)
        assert all(
            "▰" in edit.content and edit.filenames == [f"preview-{_job_id(result)}.webp"] for edit in progress
        )
        gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
        assert min(gaps) >= 0.9, gaps  # at most one edit per interval, so Discord's rate limit holds
        assert result.history[-1].content == ""  # the final message replaced the preview
        assert result.history[-1].filenames == [f"easel-{_job_id(result)}.png"]


async def test_compatible_jobs_render_together_and_each_member_gets_their_own_result(
    tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="bot.worker")
    async with running(tmp_path, local=local(tiny_model, steps=200, resolution=128)) as easel:
        busy = await easel.imagine("keeps the renderer busy", backend="local")
        await easel.discord.wait_for(
            lambda: busy.original is not None and "Rendering" in busy.original.content
        )
        members = [(ALICE, GUILD_A, 1), (BOB, GUILD_B, 2), (CAROL, GUILD_A, 3)]
        inters = [
            await easel.imagine(f"prompt {seed}", user=user, guild=guild, backend="local", seed=seed)
            for user, guild, seed in members
        ]
        results = [await easel.result_of(inter, timeout=60) for inter in inters]
        alice, bob, carol = (_job_id(r) for r in results)
        # One call, in fair order: guild B has not been served yet; in guild A, Carol has not either.
        assert f"jobs {bob}, {carol}, {alice} render together on local" in caplog.text
        for (user, _guild, seed), message in zip(members, results, strict=True):
            assert field(message, "Seed") == str(seed)
            assert f"<@{user}>" in field(message, "Requested by")
        await easel.result_of(busy)


async def test_cancelling_a_running_local_job_stops_it(tmp_path: Path, tiny_model: Path) -> None:
    slow = local(tiny_model, steps=200, resolution=512, progress_interval_s=1.0)
    async with running(tmp_path, local=slow) as easel:
        inter = await easel.imagine("never finished", backend="local")
        await easel.discord.wait_for(
            lambda: inter.original is not None and STEP.search(inter.original.content) is not None, timeout=30
        )
        assert inter.original is not None
        click = await easel.discord.click(inter.original, inter.original.custom_ids()[0], user_id=ALICE)
        await easel.discord.wait_for(lambda: click.callback is not None)
        clicked = time.monotonic()
        await easel.discord.wait_for(lambda: "cancelled" in inter.original.content, timeout=20)  # type: ignore[union-attr]
        # 200 steps take about 8 s here; the interrupt ends the render within a step or two.
        assert time.monotonic() - clicked < 4
        steps_shown = [int(m.group(1)) for e in inter.original.history if (m := STEP.search(e.content))]
        assert max(steps_shown) < 150


async def test_a_model_that_fails_to_load_leaves_the_other_backends_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-model"
    async with Store.open(tmp_path / "easel.sqlite3") as store:
        # A job accepted for the local backend before this restart.
        await store.jobs.add_queued(
            replace(new_job(GUILD_A, ALICE, backend="local", interaction=_expired()), channel_id=CHANNEL_A)
        )
    async with running(tmp_path, local={"model": str(missing)}) as easel:
        assert f"local.model {str(missing)!r} could not be loaded" in caplog.text
        assert "downloads are off" in caplog.text
        imagine = command(easel, "imagine")
        assert "backend" not in [o["name"] for o in imagine["options"]]
        result = await easel.result_of(await easel.imagine("served by openai"))
        assert image_of(result).size == (1024, 1024)

        def told() -> bool:
            return any(
                "not available any more" in m.content for m in easel.discord.channel_messages(CHANNEL_A)
            )

        await easel.discord.wait_for(told)

        # Moderators see in /status that the local backend is down, without the operator's paths.
        shown = str((await _status(easel, MANAGE_GUILD)).callback.data["embeds"][0])  # type: ignore[union-attr]
        assert "`local`" in shown
        assert "not available" in shown
        assert str(missing) not in shown


async def test_flagged_images_are_posted_only_in_age_restricted_channels(
    tmp_path: Path, tiny_model: Path
) -> None:
    checker = build_safety_checker(tmp_path / "checker", flag_everything=True)
    settings = local(tiny_model, safety_checker=str(checker))
    async with running(tmp_path, age_restricted=[CHANNEL_B], local=settings) as easel:
        refused = await easel.imagine("anything", backend="local", guild=GUILD_A)
        await easel.discord.wait_for(
            lambda: refused.original is not None and "safety checker" in refused.original.content, timeout=30
        )
        assert refused.original is not None
        assert "Nothing was charged" in refused.original.content
        assert refused.original.attachments == []

        posted = await easel.result_of(await easel.imagine("anything", backend="local", guild=GUILD_B))
        assert image_of(posted).size == (64, 64)

        # A server that allows no such images at all refuses them in age-restricted channels too.
        assert easel.bot is not None
        moderator = Requester(GUILD_B, CHANNEL_B, BOB, 10_000_000, manage_guild=True)
        await easel.bot.services.moderation.change(moderator, "nsfw", "never")
        never = await easel.imagine("anything", backend="local", guild=GUILD_B)
        await easel.discord.wait_for(
            lambda: never.original is not None and "does not allow" in never.original.content, timeout=30
        )


async def test_status_shows_moderators_the_model_device_and_queue(tmp_path: Path, tiny_model: Path) -> None:
    async with running(tmp_path, local=local(tiny_model)) as easel:
        status = command(easel, "status")
        assert int(status["default_member_permissions"]) == MANAGE_GUILD

        asked = await _status(easel, MANAGE_GUILD)
        embed = asked.callback.data["embeds"][0]  # type: ignore[union-attr]
        text = str(embed)
        assert asked.ephemeral
        for shown in (tiny_model.name, "StableDiffusionPipeline", "cpu", "GPU memory", "waiting"):
            assert shown in text
        assert [f["name"] for f in embed["fields"]] == ["`local`", "`openai`", "`lanczos`"]

        # A member whose role lost Manage Server after the commands were synced is still refused.
        refused = await _status(easel, 0)
        assert refused.ephemeral
        assert "Only moderators" in refused.callback.data["content"]  # type: ignore[union-attr]


async def _status(easel: Harness, permissions: int) -> Interaction:
    inter = await easel.discord.slash(
        guild_id=GUILD_A, channel_id=CHANNEL_A, user_id=ALICE, name="status", permissions=permissions
    )
    await easel.discord.wait_for(lambda: inter.callback is not None)
    return inter


def _job_id(message: Message) -> int:
    match = re.search(r"Job #(\d+)", message.embeds[0]["footer"]["text"])
    assert match is not None
    return int(match.group(1))


def _expired() -> JobInteraction:
    return JobInteraction(
        application_id=1, token="expired", created_at=datetime.now(UTC) - timedelta(hours=1), message_id=None
    )


async def test_a_local_render_interrupted_by_a_restart_is_rendered_again_and_posted_once(
    tmp_path: Path, tiny_model: Path
) -> None:
    slow = local(tiny_model, steps=100, resolution=512, progress_interval_s=1.0)
    async with running(tmp_path, local=slow) as easel:
        inter = await easel.imagine("survives a restart", backend="local", seed=7)
        await easel.discord.wait_for(
            lambda: inter.original is not None and STEP.search(inter.original.content) is not None, timeout=30
        )
        stopping = time.monotonic()
        await easel.stop_bot()
        assert time.monotonic() - stopping < 5  # the render thread was interrupted, not waited for
        await easel.start_bot()
        result = await easel.result_of(inter, timeout=60)
        assert field(result, "Seed") == "7"
        finals = [
            edit for edit in result.history if edit.filenames and edit.filenames[0].startswith("easel-")
        ]
        assert len(finals) == 1
        assert easel.discord.channel_messages(CHANNEL_A) == []
