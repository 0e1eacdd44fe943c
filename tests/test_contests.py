"""The challenge service with a fake clock: phases, posts made once, restarts in every phase."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bot.challenges import Challenge, Entry, Phase, Ranked, VoteAction
from bot.config import DEFAULT_PRICES
from bot.contests import ChallengeService
from bot.errors import NotAllowed
from bot.jobs import Job, Requester
from bot.moderation import Moderation
from bot.quotas import PriceTable
from bot.store import Store
from tests.factories import new_job

GUILD, CHANNEL = 1, 100
MOD, ALICE, BOB, CAROL = 10, 20, 30, 40


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def move(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Board:
    """Records what would be posted; can be told to fail."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, int, int | None]] = []
        self.failing = False
        self.results: list[list[tuple[int, int]]] = []
        self.updates: list[tuple[int, Phase, datetime | None]] = []

    def _post(self, kind: str, challenge: Challenge, entry: int | None = None) -> int:
        if self.failing:
            raise ConnectionError("Discord is down")
        self.posts.append((kind, challenge.id, entry))
        return 1000 + len(self.posts)

    async def announce(self, challenge: Challenge) -> int:
        return self._post("announce", challenge)

    async def show_entry(self, challenge: Challenge, entry: Entry, number: int) -> int:
        return self._post("entry", challenge, entry.id)

    async def announce_results(self, challenge: Challenge, ranked: Sequence[Ranked]) -> int:
        self.results.append([(r.entry.user_id, r.votes) for r in ranked])
        return self._post("results", challenge)

    async def update_announcement(self, challenge: Challenge) -> None:
        self.updates.append((challenge.id, challenge.phase, challenge.deadline))


def who(user: int, *, mod: bool = False) -> Requester:
    return Requester(GUILD, CHANNEL, user, 10_000_000, manage_guild=mod)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board() -> Board:
    return Board()


def service(store: Store, board: Board, clock: Clock) -> ChallengeService:
    moderation = Moderation(
        store, backends=("openai",), prices=PriceTable(DEFAULT_PRICES), priced_models={}, clock=clock
    )
    return ChallengeService(store, moderation, board, clock=clock)


async def posted_result(store: Store, user: int) -> Job:
    job = await store.jobs.add_queued(new_job(GUILD, user))
    await store.jobs.start("test", [job.id], [])
    await store.jobs.mark_rendered(job.id, ("a.png",), "test", None)
    return await store.jobs.mark_posted(job.id, 5000 + job.id, CHANNEL)


async def test_a_whole_challenge_runs_on_its_deadlines(store: Store, board: Board, clock: Clock) -> None:
    contests = service(store, board, clock)
    with pytest.raises(NotAllowed):
        await contests.start(who(ALICE), theme="lighthouses", submit_for="2h", vote_for="1h")
    challenge = await contests.start(who(MOD, mod=True), theme="lighthouses", submit_for="2h", vote_for="1h")
    await contests.process_due()
    assert board.posts == [("announce", challenge.id, None)]

    entries = [
        await contests.submit(who(u), CHANNEL, (await posted_result(store, u)).id) for u in (ALICE, BOB)
    ]
    clock.move(hours=2)
    await contests.process_due()
    assert (await store.challenges.get(challenge.id)).phase is Phase.VOTING
    assert [p for p in board.posts if p[0] == "entry"] == [("entry", challenge.id, e.id) for e in entries]

    assert await contests.vote(who(CAROL), entries[1].id) is VoteAction.ADD
    assert await contests.vote(who(ALICE), entries[1].id) is VoteAction.ADD
    clock.move(hours=1)
    await contests.process_due()
    assert board.results == [[(BOB, 2), (ALICE, 0)]]
    assert board.updates[-1][:2] == (challenge.id, Phase.FINISHED)  # the announcement says it ended
    assert (await store.challenges.get(challenge.id)).phase is Phase.FINISHED
    season, standings = await contests.leaderboard(who(ALICE))
    assert season == 1
    assert [(s.user_id, s.points) for s in standings] == [(BOB, 10), (ALICE, 1)]


@pytest.mark.parametrize("phase", ["submissions", "voting", "results"])
async def test_a_restart_in_each_phase_posts_everything_once(
    store: Store, board: Board, clock: Clock, phase: str
) -> None:
    first = service(store, board, clock)
    challenge = await first.start(who(MOD, mod=True), theme="fog", submit_for="1h", vote_for="1h")
    await first.process_due()
    entry = await first.submit(who(ALICE), CHANNEL, (await posted_result(store, ALICE)).id)
    if phase in ("voting", "results"):
        clock.move(hours=1)
        await first.process_due()
    if phase == "results":
        await first.vote(who(BOB), entry.id)
        clock.move(hours=1)
        board.failing = True  # crash before the results reach Discord
        await first.process_due()
        board.failing = False
    # Easel restarts: a new service over the same database, and some time passes.
    again = service(store, board, clock)
    clock.move(hours=3)
    await again.process_due()
    await again.process_due()
    kinds = [kind for kind, _, _ in board.posts]
    assert kinds.count("announce") == 1
    # Down through both deadlines: voting was missed entirely, so no gallery is posted late.
    assert kinds.count("entry") == (0 if phase == "submissions" else 1)
    assert kinds.count("results") == 1
    assert (await store.challenges.get(challenge.id)).phase is Phase.FINISHED
    _, standings = await again.leaderboard(who(ALICE))
    assert [(s.user_id, s.points) for s in standings] == [(ALICE, 10 if phase == "results" else 1)]


async def test_a_deadline_missed_while_down_is_processed_once_on_start(
    store: Store, board: Board, clock: Clock
) -> None:
    contests = service(store, board, clock)
    challenge = await contests.start(who(MOD, mod=True), theme="rain", submit_for="1h", vote_for="1h")
    await contests.submit(who(ALICE), CHANNEL, (await posted_result(store, ALICE)).id)
    clock.move(hours=1, minutes=30)  # submissions closed while Easel was down; voting still open
    await contests.process_due()
    await contests.process_due()
    assert [kind for kind, _, _ in board.posts] == ["announce", "entry"]
    assert (await store.challenges.get(challenge.id)).phase is Phase.VOTING


async def test_an_extension_moves_the_deadline_and_a_cancel_posts_no_results(
    store: Store, board: Board, clock: Clock
) -> None:
    contests = service(store, board, clock)
    challenge = await contests.start(who(MOD, mod=True), theme="snow", submit_for="1h", vote_for="1h")
    await contests.submit(who(ALICE), CHANNEL, (await posted_result(store, ALICE)).id)
    await contests.extend(who(MOD, mod=True), challenge.id, "2h")
    # The announcement shows the new deadline.
    assert board.updates == [(challenge.id, Phase.SUBMISSIONS, challenge.submit_until + timedelta(hours=2))]
    clock.move(hours=1, minutes=30)
    await contests.process_due()
    assert (await store.challenges.get(challenge.id)).phase is Phase.SUBMISSIONS
    await contests.cancel(who(MOD, mod=True), challenge.id)
    assert board.updates[-1][:2] == (challenge.id, Phase.CANCELLED)
    clock.move(days=1)
    await contests.process_due()
    assert [kind for kind, _, _ in board.posts] == ["announce"]
    assert "No challenge is running" in await contests.status(who(ALICE))


async def test_a_failing_board_is_retried_without_duplicates(
    store: Store, board: Board, clock: Clock
) -> None:
    contests = service(store, board, clock)
    await contests.start(who(MOD, mod=True), theme="dusk", submit_for="1h", vote_for="1h")
    board.failing = True
    await contests.process_due()
    board.failing = False
    await contests.process_due()
    await contests.process_due()
    assert [kind for kind, _, _ in board.posts] == ["announce"]
