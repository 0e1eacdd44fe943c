"""The members store on its own: deletions keep what budgets count, bulk removals go in batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.challenges import NewChallenge, Phase
from bot.files import ImageFiles
from bot.jobs import JobStatus
from bot.quotas import Admission, Budget, Limits, Window, windows
from bot.retention import Retention
from bot.store import Store
from bot.store.members import BATCH
from tests.factories import Clock, new_job

NOW = datetime.now(UTC)
ALL_TIME = Window(NOW - timedelta(days=3650), NOW + timedelta(days=3650))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "easel.sqlite3") as opened:
        yield opened


async def posted(store: Store, guild: int, user: int, prompt: str, n: int) -> int:
    """Write a job whose result was posted as message ``n``, charged one image; return its id."""
    job = await store.jobs.add_queued(new_job(guild, user, prompt=prompt))
    admission = Admission(Limits(None, None), 1, 1, 0.04, NOW, windows(NOW), 0, Budget())
    await store.charges.reserve(job, admission)
    await store.jobs.start("test", [job.id], [])
    await store.jobs.mark_rendered(job.id, (f"jobs/{job.id}/1.png",), "test", None)
    await store.jobs.mark_posted(job.id, n, guild * 100)
    return job.id


async def test_forgetting_keeps_the_budgets_counts_but_not_the_member(store: Store) -> None:
    mine = [await posted(store, 1, 10, f"mine {n}", n) for n in range(1, 3)]
    await posted(store, 1, 11, "theirs", 3)
    await store.jobs.mark_deleted(mine[1], NOW)  # its 🗑️ Delete was pressed: no longer posted
    before = await store.charges.guild_spent(1, ALL_TIME)

    # Asked after the quota hold: every charge is older than it, so none keeps the member.
    removed = await store.members.forget_member(1, 10, NOW, NOW + timedelta(days=1))
    assert removed.jobs == 2
    assert sorted(removed.files) == [f"jobs/{i}/1.png" for i in mine]
    assert await store.charges.guild_spent(1, ALL_TIME) == before
    assert await store.members.charges(1, 10) == []
    assert len(await store.members.charges(1, 11)) == 1
    # The result still posted keeps its member (its 🗑️ button), without prompt or images.
    [kept] = await store.members.jobs(1, 10)
    assert (kept.id, kept.params.prompt, kept.images) == (mine[0], "", ())
    assert (await store.jobs.get(mine[1])).user_id == 0
    assert (await store.members.jobs(1, 11))[0].params.prompt == "theirs"


async def test_a_purge_larger_than_a_batch_removes_every_row_of_the_server_only(store: Store) -> None:
    ids = [await posted(store, 1, 10 + n % 3, f"job {n}", n) for n in range(1, BATCH + 40)]
    other = await posted(store, 2, 10, "another server", 9999)
    await store.charges.put_guild_setting(1, "daily_images", 5, default=None, by=1)
    files = 0
    while True:
        removed = await store.members.purge_guild_batch(1)
        files += len(removed.files)
        if not removed.jobs and not removed.entries:
            break
    await store.members.purge_guild_rest(1)
    assert files == len(ids)
    assert await store.members.guilds_with_data() == {2}
    assert await store.charges.guild_spent(1, ALL_TIME) == (0, 0.0)
    assert (await store.jobs.get(other)).status is JobStatus.POSTED


async def test_retention_scrubs_in_batches_and_only_what_is_old_enough(store: Store) -> None:
    for n in range(1, BATCH + 11):
        await posted(store, 1, 10, f"job {n}", n)
    later = NOW + timedelta(days=1)
    first = await store.members.scrub_older(1, later, later)
    second = await store.members.scrub_older(1, later, later)
    third = await store.members.scrub_older(1, later, later)
    assert (first.jobs, second.jobs, third.jobs) == (BATCH, 10, 0)
    assert {job.params.prompt for job in await store.members.jobs(1, 10)} == {""}
    assert (await store.members.scrub_older(1, NOW - timedelta(days=1), later)).jobs == 0


async def test_retention_keeps_images_entered_in_a_running_challenge_until_it_ends(store: Store) -> None:
    entered = await posted(store, 1, 10, "an entry", 1)
    plain = await posted(store, 1, 10, "not entered", 2)
    season = await store.challenges.current_season(1, NOW)
    challenge = await store.challenges.add(
        NewChallenge(1, 100, "towers", 20, NOW, NOW + timedelta(hours=1), NOW + timedelta(hours=2), season)
    )
    await store.challenges.add_entry(challenge.id, 10, entered, 1, NOW)
    later = NOW + timedelta(days=1)
    assert (await store.members.scrub_older(1, later, later)).jobs == 1
    assert (await store.jobs.get(plain)).params.prompt == ""
    assert (await store.jobs.get(entered)).params.prompt == "an entry"
    await store.challenges.set_phase(challenge.id, Phase.FINISHED)
    assert (await store.members.scrub_older(1, later, later)).jobs == 1
    assert (await store.jobs.get(entered)).params.prompt == ""


async def test_the_sweep_purges_a_departed_server_past_a_batch(store: Store, tmp_path: Path) -> None:
    files = ImageFiles(tmp_path / "images")
    ids = [await posted(store, 1, 10, f"job {n}", n) for n in range(1, BATCH + 6)]
    await files.save_results(ids[-1], (b"png",), "png")
    await posted(store, 2, 10, "stays", 9999)
    clock = Clock(NOW)
    sweep = Retention(store, files, purge_after=timedelta(days=30), clock=clock)
    await sweep.present([2])
    clock.now += timedelta(days=30)
    await sweep.sweep()
    assert await store.members.guilds_with_data() == {2}
    assert not (tmp_path / "images" / "jobs" / str(ids[-1])).exists()


async def test_forgetting_removes_the_members_entries_and_votes_and_no_one_elses(store: Store) -> None:
    mine = await posted(store, 1, 10, "my entry", 1)
    theirs = await posted(store, 1, 11, "their entry", 2)
    season = await store.challenges.current_season(1, NOW)
    challenge = await store.challenges.add(
        NewChallenge(1, 100, "towers", 20, NOW, NOW + timedelta(hours=1), NOW + timedelta(hours=2), season)
    )
    my_entry = await store.challenges.add_entry(challenge.id, 10, mine, 1, NOW)
    their_entry = await store.challenges.add_entry(challenge.id, 11, theirs, 1, NOW)
    await store.challenges.add_vote(their_entry.id, 10, NOW)  # my vote
    await store.challenges.add_vote(my_entry.id, 11, NOW)  # a vote for my entry
    await store.challenges.add_vote(their_entry.id, 12, NOW)  # nothing to do with me
    assert [v.entry_id for v, _ in await store.members.votes(1, 10)] == [their_entry.id]

    removed = await store.members.forget_member(1, 10, NOW, NOW - timedelta(days=8))
    assert removed.entries == 1
    assert await store.members.entries(1, 10) == []
    assert await store.members.votes(1, 10) == []
    assert [e.id for e in await store.challenges.entries(challenge.id)] == [their_entry.id]
    assert [v.voter_id for v in await store.challenges.votes(challenge.id)] == [12]
