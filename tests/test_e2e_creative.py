"""Creative tools end to end: inline parameters, Vary (Subtle/Strong), Parameters and Remix, on both backends."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.jobs import JobStatus
from bot.store import Store
from tests.fakediscord import Interaction, Message
from tests.harness import ALICE, BOB, CHANNEL_A, GUILD_A, NO_PINGS, Harness, image_of, running, said

FLEXIBLE = {"model": "gpt-image-2"}


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path) as harness:
        yield harness


def button(message: Message, label: str) -> str:
    custom_id = next(cid for text, _emoji, cid, _disabled in message.buttons() if text == label)
    assert custom_id is not None, message.buttons()
    return custom_id


def field(message: Message, name: str) -> str:
    return str(next((f["value"] for f in message.embeds[0]["fields"] if f["name"] == name), ""))


def sent(easel: Harness, path: str = "/images/generations") -> dict[str, Any]:
    return easel.openai.requests_to(path)[-1].fields


async def refusal(easel: Harness, inter: Interaction, *, at_once: bool = True) -> str:
    """The private answer to a refused interaction: at once, or (``at_once=False``) after "thinking…"."""
    callback = await inter.wait_callback()
    if at_once:
        assert callback.type == 4, "answered after a public acknowledgement, not at once"
        message = inter.original
    else:
        await easel.discord.wait_for(lambda: bool(inter.followups))
        message = inter.followups[-1]
    assert message.ephemeral
    assert message.allowed_mentions == NO_PINGS
    return message.content


async def private_embed(inter: Interaction) -> str:
    callback = await inter.wait_callback()
    assert callback.type == 4
    data = callback.data or {}
    assert data["flags"] & 64  # ephemeral
    assert data["allowed_mentions"] == NO_PINGS
    return str(data["embeds"][0]["description"])


async def jobs_stored(easel: Harness) -> int:
    async with Store.open(easel.settings.storage.path) as store:
        return sum([len(await store.jobs.jobs_with_status(status)) for status in JobStatus])


def png_parameters(message: Message) -> str:
    [attachment] = message.attachments
    return str(Image.open(io.BytesIO(attachment.data)).info["parameters"])


# ----------------------------------------------------------------------------------- OpenAI


async def test_inline_parameters_reach_openai_and_the_result_names_what_openai_cannot_do(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, openai=FLEXIBLE) as easel:
        result = await easel.result_of(await easel.imagine("a fox --ar 16:9 --no text --seed 7"))
        request = sent(easel)
        assert request["size"] == "1536x864"  # gpt-image-2's own 16:9 size
        assert request["prompt"] == "a fox\nAvoid: text"
        assert image_of(result).size == (1536, 864)
        assert "a fox" in result.embeds[0]["description"]
        assert "--ar" not in result.embeds[0]["description"]
        options = field(result, "Options")
        assert "takes no seed" in options
        assert "no negative prompt" in options

        # A shape it has no listed size for: flexible multiples of 16 of about 1 MP.
        await easel.result_of(await easel.imagine("a wide valley --ar 21:9"))
        assert sent(easel)["size"] == "1552x656"


async def test_slash_options_win_over_inline_ones(tmp_path: Path) -> None:
    async with running(tmp_path, openai=FLEXIBLE) as easel:
        await easel.result_of(
            await easel.imagine("a fox --no text --ar 16:9", negative="people", aspect="portrait")
        )
        request = sent(easel)
        assert request["prompt"] == "a fox\nAvoid: people"
        assert request["size"] == "1024x1536"


async def test_on_a_model_with_three_sizes_ar_takes_the_nearest_and_says_so(easel: Harness) -> None:
    result = await easel.result_of(await easel.imagine("a fox --ar 16:9"))
    assert sent(easel)["size"] == "1536x1024"
    assert "--ar 16:9 became 1536×1024" in field(result, "Options")
    # A result without a seed, negative or mapped shape has no Options line.
    plain = await easel.result_of(await easel.imagine("a fox"))
    assert field(plain, "Options") == ""


async def test_a_bad_inline_parameter_is_refused_privately_before_anything_is_queued(easel: Harness) -> None:
    text = await refusal(easel, await easel.imagine("a fox --ar 16x9 --tile --seed 7"))
    assert "--ar 16x9" in text
    assert "--tile" in text
    assert "--ar W:H" in text  # what is accepted
    assert "--seed 7" not in text  # that one was fine
    assert easel.openai.requests_to("/images/generations") == []
    assert await jobs_stored(easel) == 0


async def test_variation_strength_on_openai_is_asked_in_words_and_the_result_says_so(easel: Harness) -> None:
    upload = io.BytesIO()
    Image.new("RGB", (300, 300), (20, 120, 40)).save(upload, "PNG")
    inter = await easel.discord.slash(
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=ALICE,
        name="variation",
        options={"image": easel.discord.attachment(upload.getvalue(), "a.png", "image/png"), "strength": 0.2},
    )
    result = await easel.result_of(inter)
    assert "close variation" in sent(easel, "/images/edits")["prompt"]
    assert "no strength number" in field(result, "Options")


async def test_vary_subtle_and_strong_on_openai_ask_for_a_close_and_a_free_variation(easel: Harness) -> None:
    single = await easel.result_of(await easel.imagine("a castle"))
    subtle = await easel.result_of(
        await easel.discord.click(single, button(single, "Vary (Subtle)"), user_id=BOB)
    )
    assert "close variation" in sent(easel, "/images/edits")["prompt"]
    assert subtle.embeds[0]["title"] == "Variation"
    assert field(subtle, "Options") == ""  # the button's words are what it asked for: nothing to note
    await easel.result_of(await easel.discord.click(single, button(single, "Vary (Strong)"), user_id=BOB))
    assert "free variation" in sent(easel, "/images/edits")["prompt"]
    assert len(easel.openai.requests_to("/images/edits")) == 2


async def test_the_vary_button_of_a_message_posted_before_subtle_and_strong_still_works(
    easel: Harness,
) -> None:
    single = await easel.result_of(await easel.imagine("a castle"))
    new_id = button(single, "Vary (Subtle)")
    old_id = new_id.replace(":subtle:", ":v:") + ":1"
    for component in easel.discord.messages[single.id].walk_components():
        if component.get("custom_id") == new_id:
            component["custom_id"], component["label"] = old_id, "Vary"
    varied = await easel.result_of(await easel.discord.click(single, old_id, user_id=ALICE))
    assert varied.embeds[0]["title"] == "Variation"
    assert len(easel.openai.requests_to("/images/edits")) == 1


async def test_parameters_shows_privately_how_a_result_was_made_and_the_line_that_makes_it_again(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, openai=FLEXIBLE) as easel:
        result = await easel.result_of(await easel.imagine("a fox --ar 16:9 --no text"))
        text = await private_embed(
            await easel.discord.click(result, button(result, "Parameters"), user_id=BOB)
        )
        assert "Prompt: a fox" in text
        assert "Negative prompt: text" in text
        assert "Size: 1536×864" in text
        assert "Model: OpenAI gpt-image-2" in text
        assert "Seed: not a setting of this backend" in text
        line = '/imagine prompt:"a fox --ar 16:9 --no text"'
        assert line in text
        # The same from the message's context menu (right-click, Apps, Parameters).
        menu = await easel.discord.message_command(result, "Parameters", user_id=BOB)
        assert await private_embed(menu) == text
        # The line is one the parser reads back to the same request.
        await easel.result_of(await easel.imagine(line.removeprefix('/imagine prompt:"').removesuffix('"')))
        assert sent(easel)["size"] == "1536x864"
        assert sent(easel)["prompt"] == "a fox\nAvoid: text"


async def test_remix_opens_the_prompt_to_edit_before_reroll_and_vary_run(easel: Harness) -> None:
    await said(easel, "prefer set", user=ALICE, remix=True)
    single = await easel.result_of(await easel.imagine("a fox --ar 3:2 --no snow"))
    generations = len(easel.openai.requests_to("/images/generations"))

    opened = await easel.discord.click(single, button(single, "Reroll"), user_id=ALICE)
    modal = await opened.wait_callback()
    assert modal.type == 9
    [row] = (modal.data or {})["components"]
    text_input = row["components"][0] if row["type"] == 1 else row["component"]
    assert text_input["value"] == "a fox --ar 3:2 --no snow"
    assert len(easel.openai.requests_to("/images/generations")) == generations  # nothing runs yet

    rerolled = await easel.result_of(
        await easel.discord.submit_modal(opened, single, {"Prompt": "a wolf --ar 3:2 --no rain"})
    )
    assert rerolled.embeds[0]["title"] == "Reroll"
    assert "a wolf" in rerolled.embeds[0]["description"]
    assert sent(easel)["prompt"] == "a wolf\nAvoid: rain"

    opened = await easel.discord.click(single, button(single, "Vary (Strong)"), user_id=ALICE)
    assert (await opened.wait_callback()).type == 9
    varied = await easel.result_of(await easel.discord.submit_modal(opened, single, {"Prompt": "a red wolf"}))
    assert varied.embeds[0]["title"] == "Variation"
    assert "a red wolf" in sent(easel, "/images/edits")["prompt"]

    # A remixed prompt is checked like any other: a bad parameter is refused, nothing queued.
    opened = await easel.discord.click(single, button(single, "Reroll"), user_id=ALICE)
    await opened.wait_callback()
    edits = len(easel.openai.requests_to("/images/edits"))
    bad = await easel.discord.submit_modal(opened, single, {"Prompt": "a wolf --chaos lots"})
    assert "--chaos lots" in await refusal(easel, bad)
    assert len(easel.openai.requests_to("/images/edits")) == edits

    # And moderated like any other: a blocked word in the edited prompt queues nothing.
    await said(easel, "settings block", term="grimace")
    opened = await easel.discord.click(single, button(single, "Reroll"), user_id=ALICE)
    await opened.wait_callback()
    generations = len(easel.openai.requests_to("/images/generations"))
    jobs = await jobs_stored(easel)
    blocked = await easel.discord.submit_modal(opened, single, {"Prompt": "a grimace"})
    assert "blocked" in (await refusal(easel, blocked, at_once=False)).lower()
    assert len(easel.openai.requests_to("/images/generations")) == generations
    assert await jobs_stored(easel) == jobs

    # Another member without remix on gets no modal.
    plain = await easel.discord.click(single, button(single, "Reroll"), user_id=BOB)
    assert (await plain.wait_callback()).type == 5


# ----------------------------------------------------------------------------------- local


def local(model: Path, **extra: Any) -> dict[str, Any]:
    return {"model": str(model), "steps": 4, **extra}


async def test_inline_parameters_reach_the_local_renderer_and_its_png_says_how_it_was_made(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with running(tmp_path, local=local(tiny_model)) as easel:
        inter = await easel.imagine("a lighthouse --ar 16:9 --no fog --seed 7 --s 400", backend="local")
        result = await easel.result_of(inter)
        # The tiny model's native area is 64×64: 16:9 in multiples of 8 within it.
        assert image_of(result).size == (80, 48)
        assert field(result, "Seed") == "7"
        # The nearest shape in multiples of 8 within 64×64 is 5:3, and the result says so.
        assert field(result, "Options") == "--ar 16:9 became 80×48, the nearest size this backend makes."
        # --s 400 is twice the default guidance (7.5 for this model): sqrt(400 / 100) = 2.
        assert png_parameters(result).splitlines() == [
            "a lighthouse",
            "Negative prompt: fog",
            f"Steps: 4, Sampler: DDIM, CFG scale: 15, Seed: 7, Size: 80x48, Model: {tiny_model.name}",
        ]
        text = await private_embed(
            await easel.discord.click(result, button(result, "Parameters"), user_id=BOB)
        )
        assert "Steps: 4" in text
        assert "Guidance: 15" in text
        assert "Seed: 7" in text
        assert '/imagine prompt:"a lighthouse --ar 16:9 --no fog --seed 7 --s 400"' in text

        refused = await refusal(
            easel, await easel.imagine("a lighthouse --q high", backend="local"), at_once=False
        )
        assert "no quality setting" in refused
        assert easel.openai.requests_to("/images/generations") == []


async def test_chaos_spreads_the_local_images_guidance_and_vary_uses_the_configured_strengths(
    tmp_path: Path, tiny_model: Path
) -> None:
    images = {"vary_subtle_strength": 0.2, "vary_strong_strength": 0.9}
    async with running(tmp_path, local=local(tiny_model), images=images) as easel:
        grid = await easel.result_of(
            await easel.imagine("a barn --chaos 100 --seed 5", backend="local", count=2)
        )
        cfg = []
        for label in ("U1", "U2"):
            single = await easel.result_of(
                await easel.discord.click(grid, button(grid, label), user_id=ALICE)
            )
            cfg.append(next(p for p in png_parameters(single).split(", ") if p.startswith("CFG scale")))
        # ±50 % of 7.5 at chaos 100: the first image the most restrained, the last the freest.
        assert cfg == ["CFG scale: 3.75", "CFG scale: 11.25"]

        for label, strength in (("Vary (Subtle)", "0.2"), ("Vary (Strong)", "0.9")):
            varied = await easel.result_of(
                await easel.discord.click(single, button(single, label), user_id=ALICE)
            )
            assert png_parameters(varied).endswith(f"Denoising strength: {strength}")
