"""Challenge rules in the service over a real store: real job rows for provenance, checks and writes atomic."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.challenges import Challenge, Entry, Phase, Standing, VoteAction
from bot.config import DEFAULT_PRICES
from bot.contests import ChallengeService
from bot.errors import EaselError, InvalidInput, LimitReached, NotAllowed, NotFound
from bot.jobs import Job, Requester
from bot.moderation import Moderation
from bot.quotas import PriceTable
from bot.store import Store
from tests.factories import Clock, SilentBoard, new_job

GUILD, OTHER_GUILD = 1, 2
CHANNEL, OTHER_CHANNEL = 100, 200  # new_job asks in channel guild * 100
MOD, ALICE, BOB, CAROL, DAVE = 10, 20, 30, 40, 50

START = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)
SUBMITTING = START + timedelta(hours=1)
SUBMIT_UNTIL = START + timedelta(days=2)
VOTING = SUBMIT_UNTIL + timedelta(hours=1)
VOTE_UNTIL = SUBMIT_UNTIL + timedelta(days=1)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def contests(store: Store, clock: Clock) -> ChallengeService:
    return service(store, clock)


def service(store: Store, clock: Clock) -> ChallengeService:
    moderation = Moderation(
        store, backends=("test",), prices=PriceTable(DEFAULT_PRICES), priced_models={}, clock=clock
    )
    return ChallengeService(store, moderation, SilentBoard(), clock=clock)


def who(user: int, *, guild: int = GUILD, channel: int = CHANNEL) -> Requester:
    return Requester(guild, channel, user, 10_000_000, manage_guild=user == MOD)


async def start(
    contests: ChallengeService,
    *,
    guild: int = GUILD,
    channel: int = CHANNEL,
    votes_per_member: int | None = None,
    entries_per_member: int = 1,
) -> Challenge:
    return await contests.start(
        who(MOD, guild=guild, channel=channel),
        theme="a lighthouse in a storm",
        submit_for="2d",
        vote_for="1d",
        entries_per_member=entries_per_member,
        votes_per_member=votes_per_member,
    )


async def result(
    store: Store, user: int, *, guild: int = GUILD, channel: int | None = CHANNEL, images: int = 1
) -> Job:
    """Render a job for ``user``; post it in ``channel`` (None: leave it rendered, not posted)."""
    job = await store.jobs.add_queued(new_job(guild=guild, user=user, count=images))
    assert [j.id for j in await store.jobs.start("test", [job.id], [])] == [job.id]
    rendered = await store.jobs.mark_rendered(job.id, tuple(f"{i}.png" for i in range(images)), "test", None)
    if channel is None:
        return rendered
    return await store.jobs.mark_posted(job.id, 9000 + job.id, channel)


async def enter(
    contests: ChallengeService,
    clock: Clock,
    user: int,
    job_id: int,
    image: int = 1,
    *,
    at: datetime = SUBMITTING,
) -> Entry:
    clock.now = at
    return await contests.submit(who(user), CHANNEL, job_id, image)


async def vote(
    contests: ChallengeService, clock: Clock, voter: int, entry_id: int, *, at: datetime = VOTING
) -> VoteAction:
    clock.now = at
    return await contests.vote(who(voter), entry_id)


async def to_voting(contests: ChallengeService, challenge: Challenge) -> None:
    await contests.move(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL)


async def test_one_running_challenge_per_channel_and_several_channels_at_once(
    store: Store, contests: ChallengeService
) -> None:
    first = await start(contests)
    assert first.phase is Phase.SUBMISSIONS
    with pytest.raises(NotAllowed, match="already running"):
        await start(contests)
    second = await start(contests, channel=OTHER_CHANNEL)
    assert await store.challenges.open_in(GUILD, CHANNEL) == first
    assert [c.id for c in await store.challenges.running()] == [first.id, second.id]

    await contests.cancel(who(MOD), first.id)
    assert await store.challenges.open_in(GUILD, CHANNEL) is None
    assert [c.id for c in await store.challenges.running(GUILD)] == [second.id]
    assert len(await store.challenges.in_guild(GUILD)) == 2
    await start(contests)  # the channel is free again


async def test_another_guilds_challenge_and_entries_look_missing(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    theirs = await start(contests, guild=OTHER_GUILD, channel=OTHER_CHANNEL)
    with pytest.raises(NotFound, match=f"Challenge #{theirs.id} does not exist"):
        await contests.status(who(ALICE), theirs.id)
    with pytest.raises(NotFound):
        await contests.cancel(who(MOD), theirs.id)
    job = await result(store, ALICE, guild=OTHER_GUILD, channel=OTHER_CHANNEL)
    clock.now = SUBMITTING
    entry = await contests.submit(who(ALICE, guild=OTHER_GUILD, channel=OTHER_CHANNEL), OTHER_CHANNEL, job.id)
    with pytest.raises(NotFound, match=f"Entry #{entry.id} does not exist"):
        await contests.disqualify(who(MOD), entry.id)
    with pytest.raises(NotFound, match=f"Entry #{entry.id} does not exist"):
        await vote(contests, clock, BOB, entry.id)
    with pytest.raises(NotFound, match="Entry #999999 does not exist"):
        await vote(contests, clock, BOB, 999_999)
    assert await store.challenges.in_guild(GUILD) == []


async def test_submission_provenance_comes_from_the_jobs_table(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests)
    own = await result(store, ALICE, images=2)
    entry = await enter(contests, clock, ALICE, own.id, 2)
    assert (entry.user_id, entry.job_id, entry.image_index, entry.submitted_at) == (
        ALICE,
        own.id,
        2,
        SUBMITTING,
    )

    bobs = await result(store, BOB)
    with pytest.raises(NotAllowed, match="only submit images you generated"):
        await enter(contests, clock, ALICE, bobs.id)
    elsewhere = await result(store, BOB, channel=OTHER_CHANNEL)
    with pytest.raises(NotAllowed, match="Only images Easel generated and posted"):
        await enter(contests, clock, BOB, elsewhere.id)
    unposted = await result(store, CAROL, channel=None)
    with pytest.raises(NotAllowed, match="not been posted"):
        await enter(contests, clock, CAROL, unposted.id)
    with pytest.raises(InvalidInput, match="one image"):
        await enter(contests, clock, BOB, bobs.id, 2)
    # A forged link to a missing job or another guild's job: the same answer, as NotFound.
    foreign = await result(store, DAVE, guild=OTHER_GUILD, channel=CHANNEL)
    with pytest.raises(NotFound, match="Only images Easel generated and posted") as missing:
        await enter(contests, clock, DAVE, 999_999)
    with pytest.raises(NotFound) as other_guild:
        await enter(contests, clock, DAVE, foreign.id)
    assert str(missing.value) == str(other_guild.value)

    with pytest.raises(InvalidInput, match=f"already your entry #{entry.id}"):
        await enter(contests, clock, ALICE, own.id, 2)
    withdrawn = await contests.withdraw(who(ALICE), entry.id)
    assert withdrawn.withdrawn_at == SUBMITTING
    assert not withdrawn.valid
    again = await enter(contests, clock, ALICE, own.id, 2, at=SUBMITTING + timedelta(minutes=1))
    assert again.id != entry.id
    assert again.valid
    assert [e.id for e in await store.challenges.entries(challenge.id)] == [entry.id, again.id]

    # Submissions close at the deadline instant (the channel's challenge still takes entries until
    # the runner moves it on, but the rule refuses them).
    with pytest.raises(NotAllowed, match="closed"):
        await enter(contests, clock, BOB, bobs.id, at=SUBMIT_UNTIL)


async def test_two_submissions_of_one_image_at_once_make_exactly_one_entry(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests, entries_per_member=5)
    job = await result(store, ALICE)

    async def submit() -> bool:
        try:
            await enter(contests, clock, ALICE, job.id)
        except EaselError:
            return False
        return True

    assert sorted(await asyncio.gather(submit(), submit(), submit())) == [False, False, True]
    assert len(await store.challenges.entries(challenge.id)) == 1


async def test_votes_toggle_and_self_votes_are_refused(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests)
    alice = await enter(contests, clock, ALICE, (await result(store, ALICE)).id)
    bob = await enter(contests, clock, BOB, (await result(store, BOB)).id)
    with pytest.raises(NotAllowed, match="not started"):
        await vote(contests, clock, BOB, alice.id, at=SUBMITTING)
    await to_voting(contests, challenge)

    with pytest.raises(NotAllowed, match="your own entry"):
        await vote(contests, clock, ALICE, alice.id)
    assert await vote(contests, clock, BOB, alice.id) is VoteAction.ADD
    assert await vote(contests, clock, CAROL, alice.id) is VoteAction.ADD
    assert await store.challenges.vote_counts(challenge.id) == {alice.id: 2, bob.id: 0}
    assert await vote(contests, clock, BOB, alice.id) is VoteAction.REMOVE
    assert await store.challenges.vote_counts(challenge.id) == {alice.id: 1, bob.id: 0}
    assert [(v.entry_id, v.voter_id) for v in await store.challenges.votes(challenge.id)] == [
        (alice.id, CAROL)
    ]

    # A disqualified entry's votes stop counting but are not deleted.
    await contests.disqualify(who(MOD), alice.id)
    assert await store.challenges.vote_counts(challenge.id) == {bob.id: 0}
    assert await store.challenges.votes(challenge.id) == []
    with pytest.raises(NotAllowed, match="closed"):
        await vote(contests, clock, CAROL, bob.id, at=VOTE_UNTIL)


async def test_the_vote_limit_holds_when_votes_arrive_at_once(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests, votes_per_member=2)
    entries = [
        await enter(contests, clock, user, (await result(store, user)).id) for user in (ALICE, BOB, CAROL)
    ]
    await to_voting(contests, challenge)

    async def try_vote(entry_id: int) -> bool:
        try:
            await vote(contests, clock, DAVE, entry_id)
        except LimitReached:
            return False
        return True

    assert sorted(await asyncio.gather(*(try_vote(e.id) for e in entries))) == [False, True, True]
    assert len(await store.challenges.votes(challenge.id)) == 2


async def test_phase_changes_are_idempotent_and_illegal_ones_refused(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests)
    await enter(contests, clock, ALICE, (await result(store, ALICE)).id)
    with pytest.raises(NotAllowed, match="not due"):
        await contests.move(challenge.id, Phase.VOTING, now=SUBMITTING)
    voting = await contests.move(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL)
    assert voting.phase is Phase.VOTING
    # The same deadline processed again after a crash changes nothing and does not fail.
    assert await contests.move(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL) == voting
    assert await store.challenges.get(challenge.id) == voting

    cancelled = await contests.cancel(who(MOD), challenge.id)
    assert cancelled.phase is Phase.CANCELLED
    with pytest.raises(NotAllowed, match="cannot become voting"):
        await contests.move(challenge.id, Phase.VOTING)
    with pytest.raises(NotAllowed, match="cancelled"):
        await contests.cancel(who(MOD), challenge.id)
    assert await store.challenges.running() == []


async def test_extending_moves_the_stored_deadlines(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests)
    clock.now = SUBMITTING
    extended = await contests.extend(who(MOD), challenge.id, "6h")
    assert extended.submit_until == SUBMIT_UNTIL + timedelta(hours=6)
    assert await store.challenges.get(challenge.id) == extended
    # A runner that read the old deadline cannot close submissions early.
    with pytest.raises(NotAllowed, match="not due"):
        await contests.move(challenge.id, Phase.VOTING, now=SUBMIT_UNTIL)


async def test_a_challenge_without_entries_finishes_with_no_points(
    contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests)
    finished = await contests.move(challenge.id, Phase.FINISHED, now=SUBMIT_UNTIL)
    assert finished.phase is Phase.FINISHED
    assert await contests.finish(challenge.id) == []
    assert (await contests.leaderboard(who(ALICE)))[1] == []


async def test_finishing_twice_awards_points_once(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    challenge = await start(contests)
    alice = await enter(contests, clock, ALICE, (await result(store, ALICE)).id)
    bob = await enter(contests, clock, BOB, (await result(store, BOB)).id)
    await to_voting(contests, challenge)
    await vote(contests, clock, CAROL, bob.id)
    with pytest.raises(NotAllowed, match="not due"):
        await contests.finish(challenge.id, VOTING)

    ranked = await contests.finish(challenge.id, VOTE_UNTIL)
    assert [(r.place, r.entry.id, r.votes) for r in ranked] == [(1, bob.id, 1), (2, alice.id, 0)]
    assert await contests.finish(challenge.id, VOTE_UNTIL) == ranked
    assert await contests.move(challenge.id, Phase.FINISHED) == await store.challenges.get(challenge.id)
    assert (await contests.leaderboard(who(ALICE)))[1] == [
        Standing(place=1, user_id=BOB, points=10, wins=1, entries=1),
        Standing(place=2, user_id=ALICE, points=1, wins=0, entries=1),
    ]
    await store.challenges.set_results_message(challenge.id, 777)
    assert await store.challenges.results_message(challenge.id) == 777


async def test_the_leaderboard_adds_up_a_season_and_a_new_season_starts_at_zero(
    store: Store, contests: ChallengeService, clock: Clock
) -> None:
    for voter, favourite in ((CAROL, ALICE), (DAVE, BOB)):
        clock.now = START
        challenge = await start(contests)
        alice = await enter(contests, clock, ALICE, (await result(store, ALICE)).id)
        bob = await enter(contests, clock, BOB, (await result(store, BOB)).id)
        await to_voting(contests, challenge)
        await vote(contests, clock, voter, alice.id if favourite == ALICE else bob.id)
        await contests.finish(challenge.id, VOTE_UNTIL)
    # 10 + 1 each, one win each: equal records share first place.
    assert await contests.leaderboard(who(ALICE)) == (
        1,
        [
            Standing(place=1, user_id=ALICE, points=11, wins=1, entries=2),
            Standing(place=1, user_id=BOB, points=11, wins=1, entries=2),
        ],
    )
    assert await contests.leaderboard(who(ALICE, guild=OTHER_GUILD)) == (1, [])

    clock.now = VOTE_UNTIL
    assert await contests.new_season(who(MOD)) == 2
    assert await contests.leaderboard(who(ALICE)) == (2, [])
    # Another guild's seasons are numbered on their own.
    assert (await contests.leaderboard(who(ALICE, guild=OTHER_GUILD)))[0] == 1


async def test_the_challenge_tables_are_added_to_a_database_created_by_v2(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "easel.sqlite3"
    migrations = Path(__file__).parent.parent / "bot" / "migrations"
    with closing(sqlite3.connect(path)) as db:
        for script in ("V1__jobs.sql", "V2__moderation.sql"):
            db.executescript((migrations / script).read_text(encoding="utf-8"))
        db.execute("PRAGMA user_version = 2")
    async with Store.open(path) as store:
        contests = service(store, clock)
        job = await result(store, ALICE)
        challenge = await start(contests)
        entry = await enter(contests, clock, ALICE, job.id)
    async with Store.open(path) as store:  # reopening applies nothing twice
        assert await store.challenges.entries(challenge.id) == [entry]
