"""End to end: /mydata export and delete, /settings purge member, retention and the purge of departed servers."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_settings
from bot.errors import ConfigError
from bot.jobs import Job
from bot.memberdata import ZIP_FIXED, ZIP_PER_FILE
from bot.quotas import Window
from bot.store import Store
from tests.factories import Clock
from tests.fakediscord import DEFAULT_MEMBER_PERMISSIONS, Interaction, Message
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    GUILD_A,
    GUILD_B,
    NO_PINGS,
    Harness,
    command,
    running,
    said,
)

PARTS = re.compile(r"follow in (\d+) zip file")
MONTH = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture
async def easel(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    async with running(tmp_path, clock=clock, queue={"max_per_member": 20}) as harness:
        yield harness


async def make(
    easel: Harness, prompt: str, *, user: int = ALICE, guild: int = GUILD_A, **options: Any
) -> Job:
    """Run /imagine until its result is posted; return the job as stored."""
    result = await easel.result_of(await easel.imagine(prompt, user=user, guild=guild, **options))
    job_id = int(result.embeds[0]["footer"]["text"].split("#")[1].split()[0])
    return await stored(easel, job_id)


async def stored(easel: Harness, job_id: int) -> Job:
    async with Store.open(easel.settings.storage.path) as store:
        return await store.jobs.get(job_id)


def image_files(easel: Harness, job: Job) -> list[Path]:
    return [easel.settings.storage.images_dir / name for name in job.images]


async def export(easel: Harness, *, user: int = ALICE) -> tuple[Interaction, dict[str, Any], list[Message]]:
    """Run /mydata export; return the interaction, the JSON document and the zip follow-ups."""
    inter = await command(easel, "mydata export", user=user, permissions=DEFAULT_MEMBER_PERMISSIONS)
    await easel.discord.wait_for(lambda: inter.original is not None and bool(inter.original.attachments))
    original = inter.original
    assert original is not None
    assert original.ephemeral
    assert original.allowed_mentions == NO_PINGS
    found = PARTS.search(original.content)
    parts = int(found[1]) if found else 0
    await easel.discord.wait_for(lambda: len(inter.followups) >= parts)
    assert len(inter.followups) == parts
    assert all(m.ephemeral and m.allowed_mentions == NO_PINGS for m in inter.followups)
    (document,) = original.attachments
    assert document.filename == "easel-data.json"
    return inter, json.loads(document.data), list(inter.followups)


def zipped(messages: list[Message]) -> dict[str, bytes]:
    """Every file in the zips the messages carry, name to bytes."""
    files: dict[str, bytes] = {}
    for message in messages:
        (attachment,) = message.attachments
        with zipfile.ZipFile(io.BytesIO(attachment.data)) as archive:
            for name in archive.namelist():
                assert name not in files
                files[name] = archive.read(name)
    return files


def prompts(document: dict[str, Any]) -> list[str]:
    return [job["parameters"]["prompt"] for job in document["jobs"]]


async def test_export_holds_the_members_data_and_images_and_nobody_elses(easel: Harness) -> None:
    fox = await make(easel, "a fox in snow", count=2)
    heron = await make(easel, "a heron at dawn")
    await make(easel, "bob's secret boat", user=BOB)
    await make(easel, "alice in another server", guild=GUILD_B)
    await said(easel, "prefer set", user=ALICE, negative="blur")

    inter, document, zips = await export(easel)
    assert prompts(document) == ["a fox in snow", "a heron at dawn"]
    assert "2 jobs" in (inter.original.content if inter.original else "")
    text = json.dumps(document)
    assert "bob" not in text
    assert "another server" not in text
    assert document["member_id"] == str(ALICE)
    assert document["server_id"] == str(GUILD_A)
    assert document["preferences"]["negative"] == "blur"
    assert [c["job_id"] for c in document["quota_usage"]] == [fox.id, heron.id]
    assert all(c["state"] == "settled" for c in document["quota_usage"])
    assert document["jobs"][0]["parameters"]["count"] == 2

    # The zips hold exactly the stored images the JSON names, byte for byte.
    files = zipped(zips)
    named = [name for job in document["jobs"] for name in job["images"]]
    assert sorted(files) == sorted(named)
    assert len(files) == 3
    for job in (fox, heron):
        for n, path in enumerate(image_files(easel, job), start=1):
            assert files[f"job-{job.id}-{n}{path.suffix}"] == path.read_bytes()

    # Bob's export is his alone.
    _, bobs, bob_zips = await export(easel, user=BOB)
    assert prompts(bobs) == ["bob's secret boat"]
    assert len(zipped(bob_zips)) == 1


async def test_an_export_over_the_upload_limit_comes_in_several_zips(easel: Harness) -> None:
    jobs = [await make(easel, f"tiled study {n}") for n in range(3)]
    sizes = [path.stat().st_size for job in jobs for path in image_files(easel, job)]
    # Room for one image per zip, not two.
    limit = ZIP_FIXED + ZIP_PER_FILE + 64 + max(sizes) + min(sizes) // 2
    easel.discord.guilds[GUILD_A].filesize_limit = limit

    _, document, zips = await export(easel)
    assert len(zips) == 3
    assert all(len(m.attachments[0].data) <= limit for m in zips)
    assert [m.content for m in zips] == [f"Your images, part {n} of 3." for n in (1, 2, 3)]
    assert sorted(zipped(zips)) == sorted(name for job in document["jobs"] for name in job["images"])
    assert [m.attachments[0].filename for m in zips] == [f"easel-images-{n}-of-3.zip" for n in (1, 2, 3)]


async def confirm_button(easel: Harness, *, user: int = ALICE) -> Message:
    inter = await command(easel, "mydata delete", user=user, permissions=DEFAULT_MEMBER_PERMISSIONS)
    message = inter.original
    assert message is not None
    assert message.ephemeral
    assert "Results already posted stay" in message.content
    return message


async def click_confirm(
    easel: Harness, message: Message, *, user: int = ALICE, edits: bool = True
) -> Interaction:
    live = easel.discord.messages[message.id]
    before = live.edits
    [custom_id] = [cid for label, _, cid, _ in live.buttons() if label == "Delete my data"]
    click = await easel.discord.click(live, custom_id, user_id=user)
    await click.wait_callback()
    if edits:
        await easel.discord.wait_for(lambda: live.edits > before)
    return click


async def test_delete_asks_first_then_removes_the_members_data_and_keeps_budgets(
    easel: Harness, clock: Clock
) -> None:
    mine = [await make(easel, "a lighthouse at night"), await make(easel, "a lighthouse by day")]
    bobs = await make(easel, "bob's own harbour", user=BOB)
    await said(easel, "prefer set", user=ALICE, negative="fog")
    async with Store.open(easel.settings.storage.path) as store:
        spent = await store.charges.guild_spent(GUILD_A, MONTH)
    assert spent[0] == 3

    message = await confirm_button(easel)
    # Nothing is deleted before the button is pressed.
    assert all(path.exists() for job in mine for path in image_files(easel, job))
    _, document, _ = await export(easel)
    assert prompts(document) == ["a lighthouse at night", "a lighthouse by day"]

    # Only the member who asked can press it.
    refused = await click_confirm(easel, message, user=BOB, edits=False)
    assert refused.followups or refused.original
    assert any("another member's data" in m.content for m in [*refused.followups, refused.original] if m)
    assert all(path.exists() for job in mine for path in image_files(easel, job))

    await click_confirm(easel, message)
    done = easel.discord.messages[message.id]
    assert "Your data in this server is deleted" in done.content
    assert "Results already posted in channels stay there (2 now)" in done.content
    assert "🗑️" in done.content
    assert not done.buttons()
    assert done.allowed_mentions == NO_PINGS

    # Prompts and images are gone; so are the preferences.
    assert not any(path.exists() for job in mine for path in image_files(easel, job))
    for job in mine:
        after = await stored(easel, job.id)
        assert (after.params.prompt, after.images) == ("", ())
    _, document, zips = await export(easel)
    assert set(prompts(document)) == {""}
    assert not zips
    assert document["preferences"] is None
    # Bob's are untouched.
    assert (await stored(easel, bobs.id)).params.prompt == "bob's own harbour"
    assert all(path.exists() for path in image_files(easel, bobs))
    # The budget still counts every image; the member's quota still counts theirs for a week.
    async with Store.open(easel.settings.storage.path) as store:
        assert await store.charges.guild_spent(GUILD_A, MONTH) == spent
        assert len(await store.members.charges(GUILD_A, ALICE)) == 2
    clock.now += timedelta(days=9)
    await easel.bot.services.retention.sweep()  # type: ignore[union-attr]
    async with Store.open(easel.settings.storage.path) as store:
        assert await store.charges.guild_spent(GUILD_A, MONTH) == spent
        assert await store.members.charges(GUILD_A, ALICE) == []
        assert len(await store.members.charges(GUILD_A, BOB)) == 1

    # The posted results stay, and their 🗑️ Delete still works for their member.
    result = easel.discord.messages[mine[0].message_id]  # type: ignore[index]
    [delete_id] = [cid for label, _, cid, _ in result.buttons() if label == "Delete"]
    click = await easel.discord.click(result, delete_id, user_id=ALICE)
    await click.wait_callback()
    await easel.discord.wait_for(lambda: easel.discord.messages[result.id].deleted)


async def test_settings_purge_member_is_for_moderators_and_audited(easel: Harness) -> None:
    audit = await easel.discord.add_channel(GUILD_A, "easel-audit")
    await said(easel, "settings audit", channel=audit)
    job = await make(easel, "alice's moonlit garden")

    refused = await said(
        easel, "settings purge", user=BOB, permissions=DEFAULT_MEMBER_PERMISSIONS, member=ALICE
    )
    assert "Only moderators" in refused
    assert (await stored(easel, job.id)).params.prompt == "alice's moonlit garden"

    inter = await command(easel, "settings purge", member=ALICE)
    await easel.discord.wait_for(
        lambda: bool(inter.followups) or "deleted" in (inter.original.content if inter.original else "")
    )
    answer = inter.followups[-1] if inter.followups else inter.original
    assert answer is not None
    assert answer.ephemeral
    assert f"The stored data of <@{ALICE}> in this server is deleted" in answer.content
    assert (await stored(easel, job.id)).params.prompt == ""
    assert not any(path.exists() for path in image_files(easel, job))

    def audited() -> list[str]:
        return [m.content for m in easel.discord.channel_messages(audit) if "🧹" in m.content]

    await easel.discord.wait_for(lambda: bool(audited()))
    assert audited() == [
        f"🧹 <@{CAROL}> removed the stored data of <@{ALICE}>: prompts and images of 1 jobs, 0 challenge entries."
    ]


async def test_retention_days_removes_old_prompts_and_images_in_the_sweep(
    easel: Harness, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    assert "retention_days" in await said(easel, "settings set", key="retention_days", value="7")
    old = await make(easel, "an old windmill")
    new = await make(easel, "a new windmill")
    bobs_old = await make(easel, "bob's old mill", user=BOB)
    assert old.created_at < bobs_old.created_at
    # A week after a moment between the two: the first job is older than seven days, the second not.
    clock.now = old.created_at + (new.created_at - old.created_at) / 2 + timedelta(days=7)
    with caplog.at_level(logging.INFO, logger="bot.retention"):
        await easel.bot.services.retention.sweep()  # type: ignore[union-attr]

    gone = await stored(easel, old.id)
    assert (gone.params.prompt, gone.images) == ("", ())
    assert not any(path.exists() for path in image_files(easel, old))
    kept = await stored(easel, new.id)
    assert kept.params.prompt == "a new windmill"
    assert all(path.exists() for path in image_files(easel, kept))
    assert (await stored(easel, bobs_old.id)).params.prompt == "bob's old mill"
    assert f"guild {GUILD_A}: retention (7 days) removed the prompts and images of 1 jobs" in caplog.text
    # /show of the old job says it has no result any more.
    shown = await said(easel, "show", user=ALICE, permissions=DEFAULT_MEMBER_PERMISSIONS, job=str(old.id))
    assert "has no result to show" in shown

    # The default keeps everything, whatever the clock says.
    await said(easel, "settings reset", key="retention_days")
    clock.now += timedelta(days=3650)
    await easel.bot.services.retention.sweep()  # type: ignore[union-attr]
    assert (await stored(easel, new.id)).params.prompt == "a new windmill"


async def test_a_server_that_removes_easel_loses_its_data_after_purge_after_days(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.retention")
    async with running(tmp_path, clock=clock, storage={"purge_after_days": 30}) as easel:
        here = await make(easel, "a tower in server A")
        there = await make(easel, "a tower in server B", guild=GUILD_B)
        await said(easel, "settings set", guild=GUILD_B, key="daily_images", value="40")

        easel.discord.remove_guild(GUILD_B)
        await easel.discord.wait_for(lambda: f"guild {GUILD_B} removed Easel" in caplog.text)
        assert "in 30 days" in caplog.text

        clock.now += timedelta(days=29)
        await easel.bot.services.retention.sweep()  # type: ignore[union-attr]
        assert (await stored(easel, there.id)).params.prompt == "a tower in server B"

        clock.now += timedelta(days=2)
        await easel.bot.services.retention.sweep()  # type: ignore[union-attr]
        assert f"guild {GUILD_B}: removed all its data (1 jobs" in caplog.text
        async with Store.open(easel.settings.storage.path) as store:
            assert await store.members.guilds_with_data() == {GUILD_A}
            assert await store.charges.guild_settings(GUILD_B) == {}
        assert not any(path.exists() for path in image_files(easel, there))
        assert (await stored(easel, here.id)).params.prompt == "a tower in server A"
        assert all(path.exists() for path in image_files(easel, here))


async def test_servers_left_while_easel_was_down_are_found_at_start_and_kept_when_it_comes_back(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.retention")
    # Global commands: syncing to a server Easel is no longer in would be refused.
    async with running(tmp_path, clock=clock, discord={"dev_guild_ids": []}) as easel:
        there = await make(easel, "a bridge in server B", guild=GUILD_B)
        await easel.stop_bot()
        easel.discord.remove_guild(GUILD_B)
        await easel.start_bot()
        await easel.discord.wait_for(lambda: f"guild {GUILD_B} removed Easel" in caplog.text)

        easel.discord.add_guild(GUILD_B, channels=[(222_000_000_000_000_202, "art")])
        await easel.discord.wait_for(lambda: f"guild {GUILD_B} has Easel again" in caplog.text)

        # Removed while running, added back while down: the start finds it back.
        caplog.clear()
        easel.discord.remove_guild(GUILD_B)
        await easel.discord.wait_for(lambda: f"guild {GUILD_B} removed Easel" in caplog.text)
        await easel.stop_bot()
        easel.discord.add_guild(GUILD_B, channels=[(222_000_000_000_000_202, "art")])
        await easel.start_bot()
        await easel.discord.wait_for(lambda: f"guild {GUILD_B} has Easel again" in caplog.text)
        clock.now += timedelta(days=31)
        await easel.bot.services.retention.sweep()  # type: ignore[union-attr]
        assert (await stored(easel, there.id)).params.prompt == "a bridge in server B"
        assert "removed all its data" not in caplog.text


async def test_delete_cancels_the_members_waiting_and_rendering_jobs_first(easel: Harness) -> None:
    await make(easel, "a finished kite")
    easel.openai.delay = 2.0
    waiting = [await easel.imagine(f"a waiting kite {n}") for n in range(3)]
    # Each shows its place in line or that it renders: all three are stored.
    await easel.discord.wait_for(lambda: all(w.original is not None and w.original.content for w in waiting))
    bobs = await easel.imagine("bob's kite", user=BOB)

    message = await confirm_button(easel)
    await click_confirm(easel, message)
    done = easel.discord.messages[message.id].content
    assert "3 jobs still waiting or rendering were cancelled first; nothing was charged for them." in done

    # Each job's status message says it was cancelled, as a Cancel button would have.
    await easel.discord.wait_for(
        lambda: all("was cancelled" in (w.original.content if w.original else "") for w in waiting),
        timeout=30,
    )
    async with Store.open(easel.settings.storage.path) as store:
        jobs = await store.members.jobs(GUILD_A, ALICE)
        assert [job.status.value for job in jobs] == ["posted", "cancelled", "cancelled", "cancelled"]
        assert {job.params.prompt for job in jobs} == {""}
        assert [c.state for c in await store.members.charges(GUILD_A, ALICE)] == [
            "settled",
            "released",
            "released",
            "released",
        ]
    # Bob's job goes on.
    result = await easel.result_of(bobs, timeout=30)
    assert "bob's kite" in result.embeds[0]["description"]


@pytest.mark.parametrize("value", [0, -3, 4000, "30", True])
def test_purge_after_days_is_checked_when_the_config_loads(tmp_path: Path, value: object) -> None:
    raw = {"discord": {"token": "t"}, "storage": {"purge_after_days": value}}
    with pytest.raises(ConfigError, match=r"storage\.purge_after_days"):
        parse_settings(raw, {}, base_dir=tmp_path)
    assert parse_settings({"discord": {"token": "t"}}, {}, base_dir=tmp_path).storage.purge_after_days == 30
