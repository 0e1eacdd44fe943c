"""Challenges in the store: real job rows for provenance, checks and writes in one transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.challenges import Challenge, Phase, Standing, VoteAction, new_challenge
from bot.errors import EaselError, InvalidInput, LimitReached, NotAllowed, NotFound
from bot.jobs import Job
from bot.store import Store
from tests.factories import new_job

GUILD, OTHER_GUILD = 1, 2
CHANNEL, OTHER_CHANNEL = 100, 200  # new_job asks in channel guild * 100
MOD, ALICE, BOB, CAROL, DAVE = 10, 20, 30, 40, 50

START = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)
SUBMITTING = START + timedelta(hours=1)
SUBMIT_UNTIL = START + timedelta(days=2)
VOTING = SUBMIT_UNTIL + timedelta(hours=1)
VOTE_UNTIL = SUBMIT_UNTIL + timedelta(days=1)


async def start(
    store: Store,
    *,
    guild: int = GUILD,
    channel: int = CHANNEL,
    votes_per_member: int | None = None,
    entries_per_member: int = 1,
    at: datetime = START,
) -> Challenge:
    season = await store.current_season(guild, at)
    return await store.start_challenge(
        new_challenge(
            guild_id=guild,
            channel_id=channel,
            theme="a lighthouse in a storm",
            submit_for=timedelta(days=2),
            vote_for=timedelta(days=1),
            created_by=MOD,
            season_id=season,
            now=at,
            entries_per_member=entries_per_member,
            votes_per_member=votes_per_member,
        )
    )


async def result(
    store: Store, user: int, *, guild: int = GUILD, channel: int | None = CHANNEL, images: int = 1
) -> Job:
    """Render a job for ``user``; post it in ``channel`` (None: leave it rendered, not posted)."""
    job = await store.enqueue(
        new_job(guild=guild, user=user, count=images), max_per_member=100, max_per_guild=100, max_total=100
    )
    assert [j.id for j in await store.claim("test")] == [job.id]
    rendered = await store.mark_rendered(job.id, tuple(f"{i}.png" for i in range(images)), "test", None)
    if channel is None:
        return rendered
    return await store.mark_posted(job.id, 9000 + job.id, channel)


async def to_voting(store: Store, challenge: Challenge) -> None:
    await store.set_challenge_phase(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL)


async def test_one_running_challenge_per_channel_and_several_channels_at_once(store: Store) -> None:
    first = await start(store)
    assert first.phase is Phase.SUBMISSIONS
    with pytest.raises(NotAllowed, match="already running"):
        await start(store)
    second = await start(store, channel=OTHER_CHANNEL)
    assert await store.open_challenge_in(GUILD, CHANNEL) == first
    assert [c.id for c in await store.running_challenges()] == [first.id, second.id]

    await store.cancel_challenge(first.id, GUILD)
    assert await store.open_challenge_in(GUILD, CHANNEL) is None
    assert [c.id for c in await store.guild_challenges(GUILD, running_only=True)] == [second.id]
    assert len(await store.guild_challenges(GUILD)) == 2
    await start(store)  # the channel is free again


async def test_another_guilds_challenge_and_entries_look_missing(store: Store) -> None:
    theirs = await start(store, guild=OTHER_GUILD, channel=OTHER_CHANNEL)
    with pytest.raises(NotFound, match=f"Challenge #{theirs.id} does not exist"):
        await store.challenge(theirs.id, GUILD)
    with pytest.raises(NotFound):
        await store.cancel_challenge(theirs.id, GUILD)
    job = await result(store, ALICE, guild=OTHER_GUILD, channel=OTHER_CHANNEL)
    entry = await store.submit_entry(theirs.id, OTHER_GUILD, ALICE, job.id, 1, SUBMITTING)
    with pytest.raises(NotFound, match=f"Entry #{entry.id} does not exist"):
        await store.disqualify_entry(entry.id, GUILD)
    assert await store.guild_challenges(GUILD) == []


async def test_submission_provenance_comes_from_the_jobs_table(store: Store) -> None:
    challenge = await start(store)
    own = await result(store, ALICE, images=2)
    entry = await store.submit_entry(challenge.id, GUILD, ALICE, own.id, 2, SUBMITTING)
    assert (entry.user_id, entry.job_id, entry.image_index, entry.submitted_at) == (
        ALICE,
        own.id,
        2,
        SUBMITTING,
    )

    bobs = await result(store, BOB)
    with pytest.raises(NotAllowed, match="only submit images you generated"):
        await store.submit_entry(challenge.id, GUILD, ALICE, bobs.id, 1, SUBMITTING)
    elsewhere = await result(store, BOB, channel=OTHER_CHANNEL)
    with pytest.raises(NotAllowed, match="Only images Easel generated and posted"):
        await store.submit_entry(challenge.id, GUILD, BOB, elsewhere.id, 1, SUBMITTING)
    unposted = await result(store, CAROL, channel=None)
    with pytest.raises(NotAllowed, match="not been posted"):
        await store.submit_entry(challenge.id, GUILD, CAROL, unposted.id, 1, SUBMITTING)
    with pytest.raises(InvalidInput, match="one image"):
        await store.submit_entry(challenge.id, GUILD, BOB, bobs.id, 2, SUBMITTING)
    # A forged link to a missing job or another guild's job: the same answer, as NotFound.
    foreign = await result(store, DAVE, guild=OTHER_GUILD, channel=CHANNEL)
    with pytest.raises(NotFound, match="Only images Easel generated and posted") as missing:
        await store.submit_entry(challenge.id, GUILD, DAVE, 999_999, 1, SUBMITTING)
    with pytest.raises(NotFound) as other_guild:
        await store.submit_entry(challenge.id, GUILD, DAVE, foreign.id, 1, SUBMITTING)
    assert str(missing.value) == str(other_guild.value)

    with pytest.raises(InvalidInput, match=f"already your entry #{entry.id}"):
        await store.submit_entry(challenge.id, GUILD, ALICE, own.id, 2, SUBMITTING)
    withdrawn = await store.withdraw_entry(entry.id, GUILD, ALICE, SUBMITTING)
    assert withdrawn.withdrawn_at == SUBMITTING
    assert not withdrawn.valid
    again = await store.submit_entry(challenge.id, GUILD, ALICE, own.id, 2, SUBMITTING + timedelta(minutes=1))
    assert again.id != entry.id
    assert again.valid
    assert [e.id for e in await store.entries(challenge.id)] == [entry.id, again.id]

    # Submissions close at the deadline instant.
    with pytest.raises(NotAllowed, match="closed"):
        await store.submit_entry(challenge.id, GUILD, BOB, bobs.id, 1, SUBMIT_UNTIL)


async def test_two_submissions_of_one_image_at_once_make_exactly_one_entry(store: Store) -> None:
    challenge = await start(store, entries_per_member=5)
    job = await result(store, ALICE)

    async def submit() -> bool:
        try:
            await store.submit_entry(challenge.id, GUILD, ALICE, job.id, 1, SUBMITTING)
        except EaselError:
            return False
        return True

    assert sorted(await asyncio.gather(submit(), submit(), submit())) == [False, False, True]
    assert len(await store.entries(challenge.id)) == 1


async def test_votes_toggle_and_self_votes_are_refused(store: Store) -> None:
    challenge = await start(store)
    alice = await store.submit_entry(
        challenge.id, GUILD, ALICE, (await result(store, ALICE)).id, 1, SUBMITTING
    )
    bob = await store.submit_entry(challenge.id, GUILD, BOB, (await result(store, BOB)).id, 1, SUBMITTING)
    with pytest.raises(NotAllowed, match="not started"):
        await store.toggle_vote(alice.id, GUILD, BOB, SUBMITTING)
    await to_voting(store, challenge)

    with pytest.raises(NotAllowed, match="your own entry"):
        await store.toggle_vote(alice.id, GUILD, ALICE, VOTING)
    assert await store.toggle_vote(alice.id, GUILD, BOB, VOTING) is VoteAction.ADD
    assert await store.toggle_vote(alice.id, GUILD, CAROL, VOTING) is VoteAction.ADD
    assert await store.vote_counts(challenge.id) == {alice.id: 2, bob.id: 0}
    assert await store.toggle_vote(alice.id, GUILD, BOB, VOTING) is VoteAction.REMOVE
    assert await store.vote_counts(challenge.id) == {alice.id: 1, bob.id: 0}
    assert [(v.entry_id, v.voter_id) for v in await store.votes(challenge.id)] == [(alice.id, CAROL)]

    # A disqualified entry's votes stop counting but are not deleted.
    await store.disqualify_entry(alice.id, GUILD)
    assert await store.vote_counts(challenge.id) == {bob.id: 0}
    assert await store.votes(challenge.id) == []
    with pytest.raises(NotAllowed, match="closed"):
        await store.toggle_vote(bob.id, GUILD, CAROL, VOTE_UNTIL)


async def test_the_vote_limit_holds_when_votes_arrive_at_once(store: Store) -> None:
    challenge = await start(store, votes_per_member=2)
    entries = [
        await store.submit_entry(challenge.id, GUILD, user, (await result(store, user)).id, 1, SUBMITTING)
        for user in (ALICE, BOB, CAROL)
    ]
    await to_voting(store, challenge)

    async def vote(entry_id: int) -> bool:
        try:
            await store.toggle_vote(entry_id, GUILD, DAVE, VOTING)
        except LimitReached:
            return False
        return True

    assert sorted(await asyncio.gather(*(vote(e.id) for e in entries))) == [False, True, True]
    assert len(await store.votes(challenge.id)) == 2


async def test_phase_changes_are_idempotent_and_illegal_ones_refused(store: Store) -> None:
    challenge = await start(store)
    await store.submit_entry(challenge.id, GUILD, ALICE, (await result(store, ALICE)).id, 1, SUBMITTING)
    with pytest.raises(NotAllowed, match="not due"):
        await store.set_challenge_phase(challenge.id, Phase.VOTING, now=SUBMITTING)
    voting = await store.set_challenge_phase(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL)
    assert voting.phase is Phase.VOTING
    # The same deadline processed again after a crash changes nothing and does not fail.
    assert await store.set_challenge_phase(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL) == voting
    assert await store.challenge(challenge.id, GUILD) == voting

    cancelled = await store.cancel_challenge(challenge.id, GUILD)
    assert cancelled.phase is Phase.CANCELLED
    with pytest.raises(NotAllowed, match="cannot become voting"):
        await store.set_challenge_phase(challenge.id, Phase.VOTING)
    with pytest.raises(NotAllowed, match="cancelled"):
        await store.cancel_challenge(challenge.id, GUILD)
    assert await store.running_challenges() == []


async def test_extending_moves_the_stored_deadlines(store: Store) -> None:
    challenge = await start(store)
    extended = await store.extend_challenge(challenge.id, GUILD, timedelta(hours=6), SUBMITTING)
    assert extended.submit_until == SUBMIT_UNTIL + timedelta(hours=6)
    assert await store.challenge(challenge.id, GUILD) == extended
    # A runner that read the old deadline cannot close submissions early.
    with pytest.raises(NotAllowed, match="not due"):
        await store.set_challenge_phase(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL)


async def test_a_challenge_without_entries_finishes_with_no_points(store: Store) -> None:
    challenge = await start(store)
    finished = await store.set_challenge_phase(challenge.id, Phase.FINISHED, now=SUBMIT_UNTIL)
    assert finished.phase is Phase.FINISHED
    assert await store.finish_challenge(challenge.id) == []
    assert await store.season_leaderboard(GUILD, challenge.season_id) == []


async def test_finishing_twice_awards_points_once(store: Store) -> None:
    challenge = await start(store)
    alice = await store.submit_entry(
        challenge.id, GUILD, ALICE, (await result(store, ALICE)).id, 1, SUBMITTING
    )
    bob = await store.submit_entry(challenge.id, GUILD, BOB, (await result(store, BOB)).id, 1, SUBMITTING)
    await to_voting(store, challenge)
    await store.toggle_vote(bob.id, GUILD, CAROL, VOTING)
    with pytest.raises(NotAllowed, match="not due"):
        await store.finish_challenge(challenge.id, VOTING)

    ranked = await store.finish_challenge(challenge.id, VOTE_UNTIL)
    assert [(r.place, r.entry.id, r.votes) for r in ranked] == [(1, bob.id, 1), (2, alice.id, 0)]
    assert await store.finish_challenge(challenge.id, VOTE_UNTIL) == ranked
    assert await store.set_challenge_phase(challenge.id, Phase.FINISHED) == await store.challenge(
        challenge.id, GUILD
    )
    assert await store.season_leaderboard(GUILD, challenge.season_id) == [
        Standing(place=1, user_id=BOB, points=10, wins=1, entries=1),
        Standing(place=2, user_id=ALICE, points=1, wins=0, entries=1),
    ]
    await store.set_results_message(challenge.id, 777)
    assert await store.results_message(challenge.id) == 777


async def test_the_leaderboard_adds_up_a_season_and_a_new_season_starts_at_zero(store: Store) -> None:
    for voter, favourite in ((CAROL, ALICE), (DAVE, BOB)):
        challenge = await start(store)
        alice = await store.submit_entry(
            challenge.id, GUILD, ALICE, (await result(store, ALICE)).id, 1, SUBMITTING
        )
        bob = await store.submit_entry(challenge.id, GUILD, BOB, (await result(store, BOB)).id, 1, SUBMITTING)
        await to_voting(store, challenge)
        await store.toggle_vote(alice.id if favourite == ALICE else bob.id, GUILD, voter, VOTING)
        await store.finish_challenge(challenge.id, VOTE_UNTIL)
    season = await store.current_season(GUILD)
    assert await store.season_number(season) == 1
    # 10 + 1 each, one win each: equal records share first place.
    assert await store.season_leaderboard(GUILD, season) == [
        Standing(place=1, user_id=ALICE, points=11, wins=1, entries=2),
        Standing(place=1, user_id=BOB, points=11, wins=1, entries=2),
    ]
    assert await store.season_leaderboard(OTHER_GUILD, season) == []

    fresh = await store.start_season(GUILD, MOD, VOTE_UNTIL)
    assert fresh != season
    assert await store.current_season(GUILD) == fresh
    assert await store.season_number(fresh) == 2
    assert await store.season_leaderboard(GUILD, fresh) == []
    # Another guild's seasons are numbered on their own.
    assert await store.season_number(await store.current_season(OTHER_GUILD)) == 1


async def test_the_challenge_tables_are_added_to_a_database_created_by_v2(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    migrations = Path(__file__).parent.parent / "bot" / "migrations"
    with closing(sqlite3.connect(path)) as db:
        for script in ("V1__jobs.sql", "V2__moderation.sql"):
            db.executescript((migrations / script).read_text(encoding="utf-8"))
        db.execute("PRAGMA user_version = 2")
    async with Store.open(path) as store:
        job = await result(store, ALICE)
        challenge = await start(store)
        entry = await store.submit_entry(challenge.id, GUILD, ALICE, job.id, 1, SUBMITTING)
    async with Store.open(path) as store:  # reopening applies nothing twice
        assert await store.entries(challenge.id) == [entry]
