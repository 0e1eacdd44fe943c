"""Prompt challenges: durations, phases, who may enter and vote, standings and announcements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.challenges import (
    MAX_DURATION,
    MIN_DURATION,
    Challenge,
    Entry,
    NewChallenge,
    Phase,
    Ranked,
    Standing,
    SubmittedImage,
    Vote,
    VoteAction,
    advance,
    check_cancel,
    check_disqualify,
    check_start,
    check_submission,
    check_vote,
    check_withdraw,
    describe_duration,
    due_transition,
    extend,
    gallery_order,
    leaderboard,
    new_challenge,
    next_wakeup,
    parse_duration,
    parse_message_link,
    phase_started,
    points,
    reminder_at,
    reminder_due,
    results_text,
    rules_text,
    status_text,
    tally,
    timestamp,
    vote_action,
    winner,
)
from bot.errors import EaselError, InvalidInput, LimitReached, NotAllowed

GUILD, OTHER_GUILD = 1, 2
CHANNEL, OTHER_CHANNEL = 100, 200
MOD, ALICE, BOB, CAROL, DAVE = 10, 20, 30, 40, 50
SEASON = 7
SECOND = timedelta(seconds=1)

# The fake clock: plain datetimes that tests move by hand.
START = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)
SUBMIT_UNTIL = START + timedelta(days=2)
VOTE_UNTIL = SUBMIT_UNTIL + timedelta(days=1)
DURING_SUBMISSIONS = START + timedelta(hours=5)
DURING_VOTING = SUBMIT_UNTIL + timedelta(hours=3)


def challenge(
    phase: Phase = Phase.SUBMISSIONS,
    *,
    entries_per_member: int = 1,
    votes_per_member: int | None = None,
    anonymous: bool = False,
    shuffle: bool = False,
) -> Challenge:
    return Challenge(
        id=5,
        guild_id=GUILD,
        channel_id=CHANNEL,
        theme="a lighthouse in a storm",
        phase=phase,
        created_by=MOD,
        created_at=START,
        submit_until=SUBMIT_UNTIL,
        vote_until=VOTE_UNTIL,
        season_id=SEASON,
        entries_per_member=entries_per_member,
        anonymous=anonymous,
        votes_per_member=votes_per_member,
        shuffle=shuffle,
    )


def entry(
    entry_id: int,
    user: int = ALICE,
    *,
    job: int | None = None,
    index: int = 1,
    at: datetime | None = None,
    withdrawn: bool = False,
    disqualified: bool = False,
) -> Entry:
    submitted = at if at is not None else START + timedelta(minutes=entry_id)
    return Entry(
        id=entry_id,
        challenge_id=5,
        user_id=user,
        job_id=job if job is not None else 1000 + entry_id,
        image_index=index,
        submitted_at=submitted,
        withdrawn_at=submitted + timedelta(minutes=1) if withdrawn else None,
        disqualified=disqualified,
    )


def image(
    *,
    job: int = 900,
    user: int = ALICE,
    guild: int = GUILD,
    channel: int = CHANNEL,
    posted: bool = True,
    count: int = 4,
    index: int = 2,
) -> SubmittedImage:
    return SubmittedImage(
        job_id=job,
        guild_id=guild,
        channel_id=channel,
        user_id=user,
        status_posted=posted,
        image_count=count,
        image_index=index,
    )


def vote(entry_id: int, voter: int) -> Vote:
    return Vote(entry_id=entry_id, voter_id=voter, at=DURING_VOTING)


def stamp(moment: datetime, style: str) -> str:
    """The Discord timestamp a member's client renders for ``moment``."""
    return f"<t:{int(moment.timestamp())}:{style}>"


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w", timedelta(weeks=1)),
        ("45 minutes", timedelta(minutes=45)),
        ("2 hours", timedelta(hours=2)),
        ("1 Day 12 Hours", timedelta(days=1, hours=12)),
        ("  2H 30M ", timedelta(hours=2, minutes=30)),
        ("1 hour, 5 min", timedelta(hours=1, minutes=5)),
        ("1m", MIN_DURATION),
        ("1 minute", MIN_DURATION),
        ("5m", timedelta(minutes=5)),
        ("60d", MAX_DURATION),
        ("8w 4d", MAX_DURATION),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0h",
        "0m",
        "-2h",
        "-1d",
        "61d",
        "9w",
        "99999999999999999999w",
        "2",
        "2x",
        "h",
        "1.5h",
        "2h30",
        "tomorrow",
        "1h 1h",
        "２h",
    ],
)
def test_parse_duration_refuses_zero_negative_garbage_and_absurd_values(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


def test_a_garbage_duration_names_the_accepted_forms() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_duration("next friday")
    assert '"90m", "2h", "3d", "1d12h", "1w"' in str(refused.value)
    assert "between 1 minute and 60 days" in str(refused.value)


def test_bounds_are_explained() -> None:
    with pytest.raises(InvalidInput, match="at least 1 minute"):
        parse_duration("0m")
    with pytest.raises(InvalidInput, match="at most 60 days"):
        parse_duration("61d")


def test_describe_duration_uses_words_largest_first() -> None:
    assert describe_duration(timedelta(days=1, hours=12)) == "1 day 12 hours"
    assert describe_duration(timedelta(minutes=90)) == "1 hour 30 minutes"
    assert describe_duration(timedelta(weeks=2)) == "2 weeks"
    assert describe_duration(timedelta(weeks=2, minutes=1)) == "14 days 1 minute"


# --------------------------------------------------------------------------- starting


def start(**overrides: Any) -> NewChallenge:
    arguments: dict[str, Any] = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "theme": "  a lighthouse in a storm ",
        "submit_for": "2d",
        "vote_for": "1d",
        "created_by": MOD,
        "season_id": SEASON,
        "now": START + timedelta(microseconds=250_000),
    }
    arguments.update(overrides)
    return new_challenge(**arguments)


def test_new_challenge_computes_whole_second_deadlines_from_now() -> None:
    made = new_challenge(
        guild_id=GUILD,
        channel_id=CHANNEL,
        theme="  a lighthouse in a storm ",
        submit_for="2d",
        vote_for=timedelta(days=1),
        created_by=MOD,
        season_id=SEASON,
        now=START + timedelta(microseconds=250_000),
        entries_per_member=3,
        votes_per_member=2,
        anonymous=True,
        shuffle=True,
    )
    assert made.theme == "a lighthouse in a storm"
    assert made.submit_until == SUBMIT_UNTIL
    assert made.vote_until == VOTE_UNTIL
    assert (made.entries_per_member, made.votes_per_member, made.anonymous, made.shuffle) == (
        3,
        2,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"theme": "   "}, "theme is empty"),
        ({"theme": "x" * 201}, "201 characters"),
        ({"submit_for": "soon"}, "`submit_for`"),
        ({"vote_for": "0m"}, "`vote_for`"),
        ({"vote_for": timedelta(seconds=30)}, "between 1 minute and 60 days"),
        ({"vote_for": timedelta(days=90)}, "`vote_for`"),
        ({"entries_per_member": 0}, "`entries_per_member`"),
        ({"entries_per_member": 11}, "`entries_per_member`"),
        ({"votes_per_member": 0}, "`votes_per_member`"),
        ({"votes_per_member": 26}, "`votes_per_member`"),
    ],
)
def test_new_challenge_refuses_bad_options_naming_them(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        start(**overrides)


def test_new_challenge_accepts_the_limits() -> None:
    start(theme="x" * 200, entries_per_member=10, votes_per_member=25)
    start(entries_per_member=1, votes_per_member=1)


def test_only_one_running_challenge_per_channel() -> None:
    running = challenge(Phase.VOTING)
    with pytest.raises(NotAllowed, match="already running in <#100>"):
        check_start(CHANNEL, [running])
    check_start(OTHER_CHANNEL, [running])
    check_start(CHANNEL, [challenge(Phase.FINISHED), challenge(Phase.CANCELLED)])


def test_a_challenge_refuses_impossible_deadlines() -> None:
    with pytest.raises(ValueError, match="submit_until < vote_until"):
        replace(challenge(), vote_until=SUBMIT_UNTIL)
    with pytest.raises(ValueError, match="aware"):
        replace(challenge(), created_at=START.replace(tzinfo=None))


# --------------------------------------------------------------------------- phases


def test_submissions_close_at_the_exact_deadline_instant() -> None:
    open_challenge = challenge()
    assert due_transition(open_challenge, SUBMIT_UNTIL - SECOND, valid_entries=2) is None
    assert due_transition(open_challenge, SUBMIT_UNTIL, valid_entries=2) is Phase.VOTING


def test_voting_closes_at_the_exact_deadline_instant() -> None:
    voting = challenge(Phase.VOTING)
    assert due_transition(voting, VOTE_UNTIL - SECOND, valid_entries=2) is None
    assert due_transition(voting, VOTE_UNTIL, valid_entries=2) is Phase.FINISHED


def test_after_long_downtime_a_challenge_moves_one_phase_per_call() -> None:
    much_later = VOTE_UNTIL + timedelta(days=30)
    current = challenge()
    seen = []
    while (due := due_transition(current, much_later, valid_entries=3)) is not None:
        current = advance(current, due)
        seen.append(current.phase)
    assert seen == [Phase.VOTING, Phase.FINISHED]


def test_a_challenge_without_entries_finishes_when_submissions_close() -> None:
    assert due_transition(challenge(), SUBMIT_UNTIL, valid_entries=0) is Phase.FINISHED


def test_a_challenge_with_one_entry_still_votes() -> None:
    assert due_transition(challenge(), SUBMIT_UNTIL, valid_entries=1) is Phase.VOTING


@pytest.mark.parametrize("phase", [Phase.FINISHED, Phase.CANCELLED])
def test_an_ended_challenge_has_nothing_due(phase: Phase) -> None:
    assert due_transition(challenge(phase), VOTE_UNTIL + timedelta(days=1), valid_entries=3) is None
    assert challenge(phase).deadline is None


def test_advance_refuses_reopening() -> None:
    with pytest.raises(ValueError, match="cannot go from finished to voting"):
        advance(challenge(Phase.FINISHED), Phase.VOTING)
    with pytest.raises(ValueError, match="cannot go from voting to submissions"):
        advance(challenge(Phase.VOTING), Phase.SUBMISSIONS)


def test_extending_submissions_moves_the_vote_deadline_too() -> None:
    extended = extend(challenge(), timedelta(hours=6), DURING_SUBMISSIONS)
    assert extended.submit_until == SUBMIT_UNTIL + timedelta(hours=6)
    assert extended.vote_until == VOTE_UNTIL + timedelta(hours=6)
    assert extended.deadline == extended.submit_until
    # The old deadline passes without a transition; the new one brings it.
    assert due_transition(extended, SUBMIT_UNTIL, valid_entries=1) is None
    assert due_transition(extended, extended.submit_until, valid_entries=1) is Phase.VOTING


def test_extending_voting_moves_only_the_vote_deadline() -> None:
    extended = extend(challenge(Phase.VOTING), timedelta(days=1), DURING_VOTING)
    assert extended.submit_until == SUBMIT_UNTIL
    assert extended.vote_until == VOTE_UNTIL + timedelta(days=1)
    assert extended.deadline == extended.vote_until


@pytest.mark.parametrize("phase", [Phase.FINISHED, Phase.CANCELLED])
def test_an_ended_challenge_cannot_be_extended(phase: Phase) -> None:
    with pytest.raises(NotAllowed, match="/challenge start"):
        extend(challenge(phase), timedelta(hours=1), DURING_VOTING)


def test_a_phase_whose_deadline_passed_cannot_be_extended() -> None:
    with pytest.raises(NotAllowed, match="Submissions already closed"):
        extend(challenge(), timedelta(hours=1), SUBMIT_UNTIL)
    with pytest.raises(NotAllowed, match="Voting already closed"):
        extend(challenge(Phase.VOTING), timedelta(hours=1), VOTE_UNTIL + SECOND)


def test_extensions_are_bounded() -> None:
    with pytest.raises(InvalidInput, match="An extension"):
        extend(challenge(), timedelta(seconds=59), DURING_SUBMISSIONS)
    with pytest.raises(InvalidInput, match="Extend by less"):
        extend(challenge(), timedelta(days=59), DURING_SUBMISSIONS)


def test_cancel_and_disqualify_refuse_once_over() -> None:
    check_cancel(challenge())
    check_cancel(challenge(Phase.VOTING))
    with pytest.raises(NotAllowed, match="already finished"):
        check_cancel(challenge(Phase.FINISHED))
    with pytest.raises(NotAllowed, match="results are final"):
        check_disqualify(challenge(Phase.FINISHED), entry(1))
    with pytest.raises(NotAllowed, match="already disqualified"):
        check_disqualify(challenge(Phase.VOTING), entry(1, disqualified=True))
    with pytest.raises(NotAllowed, match="withdrawn"):
        check_disqualify(challenge(), entry(1, withdrawn=True))
    check_disqualify(challenge(Phase.VOTING), entry(1))


# --------------------------------------------------------------------------- submissions


def submit(
    job: SubmittedImage, entries: list[Entry] | None = None, *, now: datetime = DURING_SUBMISSIONS, **kw: Any
) -> None:
    check_submission(challenge(**kw), entries or [], job=job, user_id=ALICE, now=now)


def test_a_member_enters_their_own_posted_image() -> None:
    submit(image())
    submit(image(count=1, index=1))


def test_another_members_result_is_refused() -> None:
    with pytest.raises(NotAllowed, match="You can only submit images you generated"):
        submit(image(user=BOB))


def test_an_image_not_posted_is_refused() -> None:
    with pytest.raises(NotAllowed, match="not been posted"):
        submit(image(posted=False))


def test_a_result_from_another_channel_is_refused() -> None:
    with pytest.raises(NotAllowed, match="posted in <#100>"):
        submit(image(channel=OTHER_CHANNEL))


def test_a_result_from_another_guild_says_no_more_than_another_channel() -> None:
    with pytest.raises(NotAllowed) as other_guild:
        submit(image(guild=OTHER_GUILD, user=BOB))
    with pytest.raises(NotAllowed) as other_channel:
        submit(image(channel=OTHER_CHANNEL))
    assert str(other_guild.value) == str(other_channel.value)


@pytest.mark.parametrize(("count", "index"), [(4, 0), (4, 5), (1, 2)])
def test_an_image_index_out_of_range_is_refused(count: int, index: int) -> None:
    with pytest.raises(InvalidInput, match=f"not {index}"):
        submit(image(count=count, index=index))


def test_the_same_image_cannot_be_entered_twice() -> None:
    mine = [entry(1, job=900, index=2)]
    with pytest.raises(InvalidInput, match="already your entry #1"):
        submit(image(), mine, entries_per_member=3)
    # Another image of the same grid is a different entry.
    submit(image(index=3), mine, entries_per_member=3)


def test_a_withdrawn_image_may_be_entered_again_but_a_disqualified_one_may_not() -> None:
    submit(image(), [entry(1, job=900, index=2, withdrawn=True)])
    with pytest.raises(NotAllowed, match="disqualified"):
        submit(image(), [entry(1, job=900, index=2, disqualified=True)])


def test_the_per_member_limit_counts_only_entries_that_stand() -> None:
    with pytest.raises(LimitReached, match="You already have 1 entry") as refused:
        submit(image(), [entry(1)])
    assert "Withdraw one" in str(refused.value)
    with pytest.raises(LimitReached, match="already have 2 entries"):
        submit(image(), [entry(1), entry(2)], entries_per_member=2)
    submit(image(), [entry(1, withdrawn=True), entry(2, disqualified=True), entry(3)], entries_per_member=2)


def test_submissions_close_at_the_deadline() -> None:
    submit(image(), now=SUBMIT_UNTIL - SECOND)
    with pytest.raises(NotAllowed, match="closed") as refused:
        submit(image(), now=SUBMIT_UNTIL)
    assert stamp(VOTE_UNTIL, "f") in str(refused.value)
    with pytest.raises(NotAllowed, match="closed"):
        submit(image(), phase=Phase.VOTING)
    with pytest.raises(NotAllowed, match="finished"):
        submit(image(), phase=Phase.FINISHED)
    with pytest.raises(NotAllowed, match="cancelled"):
        submit(image(), phase=Phase.CANCELLED)


def test_the_deadline_is_checked_before_provenance() -> None:
    with pytest.raises(NotAllowed, match="closed"):
        submit(image(user=BOB), now=SUBMIT_UNTIL)


def test_entries_of_another_member_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="not member"):
        submit(image(), [entry(1, user=BOB)])


def test_withdraw_own_entry_before_the_deadline() -> None:
    check_withdraw(challenge(), entry(1), ALICE, SUBMIT_UNTIL - SECOND)
    with pytest.raises(NotAllowed, match="closed"):
        check_withdraw(challenge(), entry(1), ALICE, SUBMIT_UNTIL)
    with pytest.raises(NotAllowed, match="closed"):
        check_withdraw(challenge(Phase.VOTING), entry(1), ALICE, DURING_VOTING)
    with pytest.raises(NotAllowed, match="your own entries"):
        check_withdraw(challenge(), entry(1), BOB, DURING_SUBMISSIONS)
    with pytest.raises(NotAllowed, match="already withdrew"):
        check_withdraw(challenge(), entry(1, withdrawn=True), ALICE, DURING_SUBMISSIONS)


# --------------------------------------------------------------------------- voting


def press(
    target: Entry, voter: int, votes: list[Vote], *, now: datetime = DURING_VOTING, **kw: Any
) -> VoteAction:
    return vote_action(challenge(Phase.VOTING, **kw), target, voter, votes, now)


def test_a_member_votes_for_someone_elses_entry() -> None:
    assert press(entry(1, ALICE), BOB, []) is VoteAction.ADD


def test_no_voting_for_your_own_entry() -> None:
    with pytest.raises(NotAllowed, match="your own entry"):
        press(entry(1, ALICE), ALICE, [])


def test_pressing_again_takes_the_vote_back() -> None:
    assert press(entry(1, ALICE), BOB, [vote(1, BOB)]) is VoteAction.REMOVE
    with pytest.raises(InvalidInput, match="already voted for this entry"):
        check_vote(challenge(Phase.VOTING), entry(1, ALICE), BOB, [vote(1, BOB)], DURING_VOTING)


def test_without_a_limit_a_member_votes_for_any_number_of_entries() -> None:
    votes = [vote(entry_id, BOB) for entry_id in range(1, 30)]
    assert press(entry(30, ALICE), BOB, votes) is VoteAction.ADD


def test_changing_a_vote_under_a_limit_means_taking_one_back_first() -> None:
    first, second = entry(1, ALICE), entry(2, CAROL)
    votes = [vote(first.id, BOB)]
    with pytest.raises(LimitReached, match="used your one vote; take it back"):
        press(second, BOB, votes, votes_per_member=1)
    assert press(first, BOB, votes, votes_per_member=1) is VoteAction.REMOVE
    assert press(second, BOB, [], votes_per_member=1) is VoteAction.ADD


def test_a_limit_of_several_votes() -> None:
    votes = [vote(1, BOB), vote(2, BOB)]
    assert press(entry(3, CAROL), BOB, votes[:1], votes_per_member=2) is VoteAction.ADD
    with pytest.raises(LimitReached, match="used all 2 votes; take one back"):
        press(entry(3, CAROL), BOB, votes, votes_per_member=2)


def test_votes_close_at_the_deadline() -> None:
    assert press(entry(1, ALICE), BOB, [], now=VOTE_UNTIL - SECOND) is VoteAction.ADD
    with pytest.raises(NotAllowed, match="Voting closed"):
        press(entry(1, ALICE), BOB, [], now=VOTE_UNTIL)
    # Taking a vote back is a change of vote too, and closes with the rest.
    with pytest.raises(NotAllowed, match="votes can no longer change"):
        press(entry(1, ALICE), BOB, [vote(1, BOB)], now=VOTE_UNTIL)
    with pytest.raises(NotAllowed, match="Voting closed"):
        vote_action(challenge(Phase.FINISHED), entry(1, ALICE), BOB, [], DURING_VOTING)
    with pytest.raises(NotAllowed, match="cancelled"):
        vote_action(challenge(Phase.CANCELLED), entry(1, ALICE), BOB, [], DURING_VOTING)


def test_no_votes_before_voting_opens() -> None:
    with pytest.raises(NotAllowed, match="has not started") as refused:
        vote_action(challenge(), entry(1, ALICE), BOB, [], DURING_SUBMISSIONS)
    assert stamp(SUBMIT_UNTIL, "R") in str(refused.value)


def test_no_votes_for_withdrawn_or_disqualified_entries() -> None:
    with pytest.raises(NotAllowed, match="withdrawn"):
        press(entry(1, ALICE, withdrawn=True), BOB, [])
    with pytest.raises(NotAllowed, match="disqualified"):
        press(entry(1, ALICE, disqualified=True), BOB, [])


@pytest.mark.parametrize(
    "refused_action",
    [
        lambda: press(entry(1, ALICE), ALICE, []),
        lambda: submit(image(user=BOB)),
        lambda: parse_duration("soon"),
    ],
)
def test_refusals_are_easel_errors_a_member_can_read(refused_action: Callable[[], object]) -> None:
    with pytest.raises(EaselError) as refused:
        refused_action()
    assert str(refused.value).endswith(".")


# --------------------------------------------------------------------------- results


def test_tally_ranks_by_votes_and_breaks_ties_by_the_earlier_submission() -> None:
    early, late, later, most = entry(1, ALICE), entry(2, BOB), entry(3, CAROL), entry(4, DAVE)
    votes = [vote(4, ALICE), vote(4, BOB), vote(2, DAVE), vote(1, CAROL), vote(3, ALICE)]
    ranked = tally([later, most, late, early], votes)
    assert [(row.place, row.entry.id, row.votes) for row in ranked] == [
        (1, 4, 2),
        (2, 1, 1),
        (3, 2, 1),
        (4, 3, 1),
    ]


def test_tally_breaks_a_tie_on_the_same_instant_by_entry_id() -> None:
    ranked = tally([entry(8, ALICE, at=START), entry(3, BOB, at=START)], [])
    assert [row.entry.id for row in ranked] == [3, 8]


def test_tally_ignores_invalid_entries_and_their_votes() -> None:
    entries = [entry(1, ALICE), entry(2, BOB, withdrawn=True), entry(3, CAROL, disqualified=True)]
    votes = [
        vote(2, DAVE),
        vote(3, DAVE),
        vote(3, BOB),
        vote(99, DAVE),
        vote(1, ALICE),
        vote(1, BOB),
        vote(1, BOB),
    ]
    assert tally(entries, votes) == [Ranked(1, entries[0], 1)]


def test_points_score_each_members_best_entry_once() -> None:
    entries = [entry(1, ALICE), entry(2, ALICE), entry(3, BOB), entry(4, CAROL), entry(5, DAVE)]
    votes = [vote(1, BOB), vote(1, CAROL), vote(1, DAVE), vote(2, BOB), vote(2, CAROL), vote(3, ALICE)]
    ranked = tally(entries, votes)
    assert [(row.place, row.entry.user_id) for row in ranked] == [
        (1, ALICE),
        (2, ALICE),
        (3, BOB),
        (4, CAROL),
        (5, DAVE),
    ]
    assert points(ranked) == {ALICE: 10, BOB: 3, CAROL: 1, DAVE: 1}
    assert winner(ranked) == ALICE


def test_a_place_without_votes_earns_participation_only() -> None:
    ranked = tally([entry(1, ALICE), entry(2, BOB), entry(3, CAROL)], [vote(2, ALICE)])
    assert points(ranked) == {BOB: 10, ALICE: 1, CAROL: 1}
    nobody_voted = tally([entry(1, ALICE), entry(2, BOB)], [])
    assert points(nobody_voted) == {ALICE: 1, BOB: 1}
    assert winner(nobody_voted) is None
    assert winner([]) is None


def test_leaderboard_orders_by_points_then_wins_then_fewer_challenges_then_id() -> None:
    rows = [
        (ALICE, 20, 1, 4),
        (BOB, 20, 2, 5),
        (CAROL, 20, 1, 3),
        (DAVE, 25, 0, 9),
        (60, 20, 1, 3),
        (70, 1, 0, 1),
    ]
    assert leaderboard(rows) == [
        Standing(1, DAVE, 25, 0, 9),
        Standing(2, BOB, 20, 2, 5),
        Standing(3, CAROL, 20, 1, 3),
        Standing(3, 60, 20, 1, 3),
        Standing(5, ALICE, 20, 1, 4),
        Standing(6, 70, 1, 0, 1),
    ]


def test_leaderboard_adds_up_per_challenge_rows() -> None:
    assert leaderboard([(ALICE, 10, 1, 1), (BOB, 6, 0, 1), (ALICE, 1, 0, 1)]) == [
        Standing(1, ALICE, 11, 1, 2),
        Standing(2, BOB, 6, 0, 1),
    ]
    assert leaderboard([]) == []


def test_gallery_order_is_submission_order_without_shuffle() -> None:
    entries = [
        entry(3, at=START + timedelta(hours=2)),
        entry(1, at=START + timedelta(hours=3)),
        entry(2, at=START),
    ]
    assert [e.id for e in gallery_order(entries, shuffle=False, seed=5)] == [2, 3, 1]


def test_gallery_shuffle_is_deterministic_and_skips_invalid_entries() -> None:
    entries = [entry(entry_id) for entry_id in range(1, 21)]
    first = [e.id for e in gallery_order(entries, shuffle=True, seed=5)]
    assert first == [e.id for e in gallery_order(list(reversed(entries)), shuffle=True, seed=5)]
    assert sorted(first) == list(range(1, 21))
    assert first != list(range(1, 21))
    assert first != [e.id for e in gallery_order(entries, shuffle=True, seed=6)]
    # Disqualifying one entry leaves the others where they were.
    entries[first[0] - 1] = replace(entries[first[0] - 1], disqualified=True)
    assert [e.id for e in gallery_order(entries, shuffle=True, seed=5)] == first[1:]


# --------------------------------------------------------------------------- text


def test_parse_message_link() -> None:
    assert parse_message_link("https://discord.com/channels/1/100/555") == (1, 100, 555)
    assert parse_message_link(" <https://canary.discordapp.com/channels/1/100/555> ") == (1, 100, 555)
    for text in ("https://discord.com/channels/@me/100/555", "https://evil.example/channels/1/2/3", "555"):
        with pytest.raises(InvalidInput, match="Copy Message Link"):
            parse_message_link(text)


def test_timestamps_are_discord_markup() -> None:
    assert timestamp(START) == f"<t:{int(START.timestamp())}:f>"
    assert timestamp(START + timedelta(microseconds=900_000), "R") == f"<t:{int(START.timestamp())}:R>"


def test_rules_text_states_theme_limits_deadlines_and_tiebreak() -> None:
    text = rules_text(challenge(entries_per_member=2, votes_per_member=3, anonymous=True, shuffle=True))
    assert "a lighthouse in a storm" in text
    assert "up to 2 images" in text
    assert "You have 3 votes" in text
    assert "not for your own entry" in text
    for moment in (SUBMIT_UNTIL, VOTE_UNTIL):
        assert stamp(moment, "f") in text
        assert stamp(moment, "R") in text
    assert "hidden until the results" in text
    assert "ties go to the earlier submission" in text
    plain = rules_text(challenge())
    assert "one image" in plain
    assert "as many entries as you like" in plain


def test_status_text_follows_the_phase() -> None:
    assert "Submissions are open" in status_text(challenge(), 3, 0, DURING_SUBMISSIONS)
    assert "Votes" not in status_text(challenge(), 3, 0, DURING_SUBMISSIONS)
    assert "being posted" in status_text(challenge(), 3, 0, SUBMIT_UNTIL)
    voting = status_text(challenge(Phase.VOTING), 3, 7, DURING_VOTING)
    assert "Voting is open" in voting
    assert "**Entries:** 3 · **Votes:** 7" in voting
    assert "being counted" in status_text(challenge(Phase.VOTING), 3, 7, VOTE_UNTIL)
    assert "Finished" in status_text(challenge(Phase.FINISHED), 3, 7, VOTE_UNTIL)
    assert "Cancelled" in status_text(challenge(Phase.CANCELLED), 0, 0, DURING_SUBMISSIONS)


def test_results_text_shows_places_ties_and_the_rule() -> None:
    ranked = tally([entry(1, ALICE), entry(2, BOB), entry(3, CAROL)], [vote(2, ALICE), vote(3, ALICE)])
    text = results_text(challenge(Phase.FINISHED), ranked, top=2)
    assert "1. <@30> · entry #2 · 1 vote" in text
    assert "2. <@40> · entry #3 · 1 vote (tie)" in text
    assert "…and 1 more." in text
    assert text.endswith("Ties go to the earlier submission.")
    assert "no winner" in results_text(challenge(Phase.FINISHED), [])


# -- reminders -------------------------------------------------------------------------------------


def timed(submit: timedelta, vote: timedelta, phase: Phase = Phase.SUBMISSIONS, **fields: Any) -> Challenge:
    """A challenge started at START (with the microseconds a real clock gives) lasting ``submit`` then ``vote``."""
    return replace(
        challenge(phase),
        created_at=START + timedelta(microseconds=417_000),
        submit_until=START + submit,
        vote_until=START + submit + vote,
        **fields,
    )


def test_the_reminder_is_due_with_a_tenth_of_the_phase_left() -> None:
    speed = timed(timedelta(minutes=10), timedelta(minutes=30))
    # Counted from the whole second the deadlines were counted from, not the exact start time.
    assert phase_started(speed) == START
    assert reminder_at(speed) == START + timedelta(minutes=9)
    assert not reminder_due(speed, START + timedelta(minutes=9) - SECOND)
    assert reminder_due(speed, START + timedelta(minutes=9))
    assert reminder_due(speed, START + timedelta(minutes=10) - SECOND)
    # At the deadline the phase is over: no reminder for a phase that closed (downtime).
    assert not reminder_due(speed, START + timedelta(minutes=10))

    voting = replace(speed, phase=Phase.VOTING)
    assert phase_started(voting) == START + timedelta(minutes=10)
    assert reminder_at(voting) == START + timedelta(minutes=37)


def test_a_phase_is_reminded_once_and_short_phases_never() -> None:
    five = timed(timedelta(minutes=5), timedelta(minutes=2))
    assert reminder_at(five) == START + timedelta(minutes=4, seconds=30)
    assert reminder_at(replace(five, phase=Phase.VOTING)) is None  # 2 minutes: under five
    assert reminder_at(timed(timedelta(minutes=4, seconds=59), timedelta(minutes=5))) is None
    assert reminder_at(replace(five, reminded=frozenset({Phase.SUBMISSIONS}))) is None
    # Submissions' reminder says nothing about voting's.
    voting = timed(
        timedelta(minutes=5), timedelta(minutes=10), Phase.VOTING, reminded=frozenset({Phase.SUBMISSIONS})
    )
    assert reminder_at(voting) == START + timedelta(minutes=14)
    assert reminder_at(challenge(Phase.FINISHED)) is None
    assert phase_started(challenge(Phase.CANCELLED)) is None


def test_an_extension_moves_a_pending_reminder_but_never_repeats_one() -> None:
    speed = timed(timedelta(minutes=10), timedelta(minutes=10))
    longer = extend(speed, timedelta(minutes=10), START + timedelta(minutes=5))
    assert reminder_at(longer) == START + timedelta(minutes=18)  # a tenth of 20 minutes
    assert reminder_at(replace(longer, reminded=frozenset({Phase.SUBMISSIONS}))) is None


def test_the_runner_wakes_for_the_next_reminder_or_deadline() -> None:
    speed = timed(timedelta(minutes=10), timedelta(minutes=2))
    minutes = [START + timedelta(minutes=m) for m in range(13)]
    assert next_wakeup(speed, START) == minutes[9]
    assert next_wakeup(replace(speed, reminded=frozenset({Phase.SUBMISSIONS})), START) == minutes[10]
    # A reminder due but not posted (Discord refused it) does not make the runner spin.
    assert next_wakeup(speed, minutes[9]) == minutes[10]
    assert next_wakeup(replace(speed, phase=Phase.VOTING), minutes[10]) == minutes[12]
    assert next_wakeup(speed, minutes[10]) is None
    assert next_wakeup(challenge(Phase.FINISHED), START) is None
