"""End to end: private results (``/prefer private``) for jobs made by buttons, and after the token expires.

A button on a result makes a job as public as that result, unless the clicker prefers private
results. A private result still unfinished when its interaction token expires goes to the
channel, once, with a line saying why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakediscord import Interaction, Message
from tests.harness import ALICE, BOB, CHANNEL_A, Harness, running, said
from tests.test_e2e_challenges import button, job_of

WHY = "You asked for private results"


@pytest.fixture
async def easel(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path, queue={"max_per_member": 20}) as harness:
        yield harness


async def click(easel: Harness, message: Message, label: str, user: int) -> Message:
    """Click a result's button as ``user`` and return the new job's result."""
    inter = await easel.discord.click(message, button(message, label), user_id=user)
    return await easel.result_of(inter)


def in_channel(easel: Harness, text: str) -> bool:
    """Whether anything others see in the channel shows ``text`` (a prompt, in a result's embed)."""
    return any(text in str(m.embeds) + m.content for m in easel.discord.visible_messages(CHANNEL_A))


@pytest.mark.parametrize("label", ["Reroll", "Vary (Strong)", "Upscale 2×"])
async def test_a_button_job_is_as_public_as_its_result_unless_the_clicker_prefers_private(
    easel: Harness, label: str
) -> None:
    public = await easel.result_of(await easel.imagine("a public pier", user=BOB, count=1))
    assert not public.ephemeral
    # BOB prefers nothing: his job from his public result is public, like it.
    assert not (await click(easel, public, label, BOB)).ephemeral

    # ALICE prefers private results: her job from BOB's public result is hers alone.
    await said(easel, "prefer set", user=ALICE, private=True)
    before = len(easel.discord.visible_messages(CHANNEL_A))
    mine = await click(easel, public, label, ALICE)
    assert mine.ephemeral
    assert f"<@{ALICE}>" in str(mine.embeds)
    assert len(easel.discord.visible_messages(CHANNEL_A)) == before

    # A private result's buttons keep its jobs private, even once ALICE stops preferring it.
    secret = await easel.result_of(await easel.imagine("a secret pier", count=1))
    assert secret.ephemeral
    await said(easel, "prefer set", user=ALICE, private=False)
    child = await click(easel, secret, label, ALICE)
    assert child.ephemeral
    assert not in_channel(easel, "secret pier")


async def test_a_pick_from_a_private_grid_stays_private(easel: Harness) -> None:
    await said(easel, "prefer set", user=ALICE, private=True)
    grid = await easel.result_of(await easel.imagine("four secret doors", count=4))
    assert grid.ephemeral
    await said(easel, "prefer set", user=ALICE, private=False)
    picked = await click(easel, grid, "U2", ALICE)
    assert picked.ephemeral
    assert not in_channel(easel, "four secret doors")


async def late(easel: Harness, prompt: str, user: int) -> tuple[Interaction, Message]:
    """Ask for a job whose interaction token expires while it renders; return the channel post."""
    easel.openai.delay = 1.0
    inter = await easel.imagine(prompt, user=user, count=1)
    await easel.discord.wait_for(
        lambda: any(
            prompt in r.fields.get("prompt", "") for r in easel.openai.requests_to("/images/generations")
        )
    )
    # As if the queue had kept the job past Discord's 15 minutes.
    easel.discord.expire_token(inter.token)
    await easel.discord.wait_for(lambda: in_channel(easel, prompt), timeout=20)
    [posted] = [m for m in easel.discord.channel_messages(CHANNEL_A) if prompt in str(m.embeds)]
    return inter, posted


async def test_a_private_result_past_the_token_lifetime_goes_to_the_channel_once_saying_why(
    easel: Harness,
) -> None:
    await said(easel, "prefer set", user=ALICE, private=True)
    inter, posted = await late(easel, "a slow secret", ALICE)
    assert inter.ephemeral  # the place in line was private
    assert posted.content.startswith(f"<@{ALICE}>, your images are ready.")
    assert WHY in posted.content
    assert "15 minutes" in posted.content
    assert posted.allowed_mentions == {"parse": [], "users": [str(ALICE)]}
    assert posted.attachments
    assert "Delete" in [label for label, _e, _c, _d in posted.buttons()]
    job = job_of(posted)
    assert len(easel.discord.result_posts(job)) == 1
    tries = len(easel.discord.result_requests(job))  # the refused edit of the private answer, the post

    # A restart finds it posted: it is never sent again.
    await easel.restart_bot()
    assert len(easel.discord.result_requests(job)) == tries
    assert [m.id for m in easel.discord.channel_messages(CHANNEL_A) if "a slow secret" in str(m.embeds)] == [
        posted.id
    ]

    # A public job that ran late says nothing about privacy.
    _inter, public = await late(easel, "a slow public one", BOB)
    assert public.content == f"<@{BOB}>, your images are ready."
