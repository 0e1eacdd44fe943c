"""Prompt challenges: themed contests as plain values and the rules that govern them.

Nothing here reads a clock, touches SQLite or talks to Discord. Every function that needs the
time takes ``now`` (an aware datetime); the store turns rows into these values and the cog
turns a raised ``EaselError`` into the member's ephemeral reply.

Decisions, so the store, the cog and the tests agree:

- Deadlines are half-open: submissions are open while ``now < submit_until`` and voting while
  ``now < vote_until``. At the deadline instant itself the phase is over and its transition due.
  Deadlines are whole seconds, so the Discord timestamps members see are exact.
- Downtime never moves a deadline. On start, call ``due_transition`` and apply its answer with
  ``advance`` until it returns None, one transition at a time. A challenge whose both deadlines
  passed while the bot was down goes SUBMISSIONS → VOTING → FINISHED in one catch-up: no gallery
  is posted for a vote that can no longer happen, and the results list every entry. Votes cast
  before the downtime count; none could be cast during it.
- Phases last from 1 minute (speed rounds) to 60 days. A phase of at least 5 minutes gets one
  reminder when a tenth of its time is left (``reminder_at``), only while the phase still runs:
  after downtime past the deadline the phase just ends. An extension moves a pending reminder
  and never repeats a posted one. Submissions are counted from the start's whole second, voting
  from the close of submissions.
- A challenge that closes submissions with no valid entry goes straight to FINISHED ("no
  entries"): there is nothing to vote on. With one entry voting still runs; others may vote for
  it, and it wins if it gets a vote.
- One active challenge per channel (``check_start``), so a result's Submit button is never
  ambiguous; several channels of a guild may each run one.
- A result can be entered only into a challenge of the channel it was *posted* in (the jobs
  table's ``posted_channel_id``), by the member who requested it, and only once while the entry
  stands. A withdrawn image may be entered again (as a new entry with a new submission time, so
  withdrawing cannot be used to keep an early tiebreak); a disqualified one may not. Provenance
  always comes from the jobs table, never from the message a member points at.
- Voting toggles: pressing an entry's vote button adds the member's vote, pressing it again
  takes it back (``vote_action``). With ``votes_per_member`` set, changing a vote means taking
  one back first. The service passes a voter's *counting* votes (on entries neither withdrawn nor
  disqualified), so disqualifying an entry gives its voters their votes back without deleting
  anything; ``tally`` ignores votes on such entries anyway.
- Standings: most votes first; ties go to the earlier submission, then the lower entry id, so
  every entry has a distinct place and the results say why.
- Season points (``points``): 10, 6 and 3 for 1st, 2nd and 3rd place, 1 for any other valid
  entry. A member scores their best entry only, so extra entries improve the odds but never
  add up. A podium place needs at least one vote: a challenge nobody voted in (or voted in
  while the bot was down) awards participation only, never a win by submission time.
- Season standings (``leaderboard``): most points, then most wins, then fewer challenges
  entered (the same points from fewer tries is the better record), then user id for a stable
  display order. Members equal in points, wins and challenges share a place.
- Gallery order is submission order, or a shuffle derived from a hash of the seed and each
  entry id: the same on every restart and every Python version, and removing one entry does
  not reorder the rest.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from bot.errors import InvalidInput, LimitReached, NotAllowed
from bot.text import escape

__all__ = [
    "ENTRIES_PER_MEMBER_MAX",
    "MAX_DURATION",
    "MIN_DURATION",
    "PARTICIPATION_POINTS",
    "PLACE_POINTS",
    "REMINDER_MIN_PHASE",
    "REMINDER_SHARE",
    "THEME_MAX",
    "TRANSITIONS",
    "VOTES_PER_MEMBER_MAX",
    "Challenge",
    "Entry",
    "NewChallenge",
    "Phase",
    "Ranked",
    "Standing",
    "SubmittedImage",
    "Vote",
    "VoteAction",
    "advance",
    "check_cancel",
    "check_disqualify",
    "check_start",
    "check_submission",
    "check_vote",
    "check_withdraw",
    "describe_duration",
    "due_transition",
    "extend",
    "gallery_order",
    "leaderboard",
    "new_challenge",
    "next_wakeup",
    "parse_duration",
    "parse_message_link",
    "phase_started",
    "points",
    "reminder_at",
    "reminder_due",
    "results_text",
    "rules_text",
    "status_text",
    "tally",
    "timestamp",
    "vote_action",
    "winner",
]

# One minute: speed rounds (live prompt battles) run phases that short.
MIN_DURATION: Final = timedelta(minutes=1)
MAX_DURATION: Final = timedelta(days=60)
# An embed title holds 256 characters; the theme is shown in one with a short prefix.
THEME_MAX: Final = 200
ENTRIES_PER_MEMBER_MAX: Final = 10
VOTES_PER_MEMBER_MAX: Final = 25
PLACE_POINTS: Final[Mapping[int, int]] = {1: 10, 2: 6, 3: 3}
PARTICIPATION_POINTS: Final = 1
# A reminder goes out when a phase has a tenth of its time left, once per phase; a phase shorter
# than five minutes gets none (its whole length is already a countdown members are watching).
REMINDER_SHARE: Final = 10
REMINDER_MIN_PHASE: Final = timedelta(minutes=5)

# --------------------------------------------------------------------------- durations

_MINUTES_PER_UNIT: Final[Mapping[str, int]] = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 1),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 60),
    **dict.fromkeys(("d", "day", "days"), 24 * 60),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 24 * 60),
}
# ASCII digits only: int() would also accept "٣" and friends, which nobody means here.
_DURATION_PART: Final = re.compile(r"\s*([0-9]+)\s*([a-z]+)\s*,?", re.ASCII)
_DURATION_FORMS: Final = '"90m", "2h", "3d", "1d12h", "1w" or "45 minutes"'
_ECHO_MAX: Final = 40


def _bounds_hint() -> str:
    return f"between {describe_duration(MIN_DURATION)} and {describe_duration(MAX_DURATION)}"


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as "90m", "2h", "1d12h" or "2 hours"; refuse anything else."""
    cleaned = text.strip().lower()
    shown = cleaned if len(cleaned) <= _ECHO_MAX else cleaned[: _ECHO_MAX - 1] + "…"
    if not cleaned:
        raise InvalidInput(f"The duration is empty. Write one like {_DURATION_FORMS} ({_bounds_hint()}).")
    if cleaned.startswith("-"):
        raise InvalidInput(f'"{shown}" is negative. Write a duration like {_DURATION_FORMS}.')
    minutes = 0
    seen: set[int] = set()
    position = 0
    while position < len(cleaned):
        match = _DURATION_PART.match(cleaned, position)
        if match is None or match.end() == position:
            raise InvalidInput(
                f'"{shown}" is not a duration Easel understands. Write one like {_DURATION_FORMS} '
                f"({_bounds_hint()})."
            )
        number, unit = match.groups()
        per_unit = _MINUTES_PER_UNIT.get(unit)
        if per_unit is None:
            raise InvalidInput(
                f'"{unit}" in "{shown}" is not a unit Easel knows. Use minutes (m), hours (h), days (d) '
                f"or weeks (w), like {_DURATION_FORMS}."
            )
        if per_unit in seen:
            raise InvalidInput(f'"{shown}" gives the same unit twice. Write each unit once, like "1d12h".')
        seen.add(per_unit)
        # Seven digits of minutes already exceed the maximum; refusing here keeps the arithmetic small.
        if len(number.lstrip("0")) > 7:
            raise InvalidInput(_too_long(shown))
        minutes += int(number) * per_unit
        position = match.end()
    if minutes < MIN_DURATION / timedelta(minutes=1):
        raise InvalidInput(
            f'"{shown}" is too short: a challenge phase lasts at least {describe_duration(MIN_DURATION)}.'
        )
    if minutes > MAX_DURATION / timedelta(minutes=1):
        raise InvalidInput(_too_long(shown))
    return timedelta(minutes=minutes)


def _too_long(shown: str) -> str:
    return f'"{shown}" is too long: a challenge phase lasts at most {describe_duration(MAX_DURATION)}.'


def describe_duration(duration: timedelta) -> str:
    """Return a duration in words, largest units first: "1 day 12 hours"."""
    total = int(duration.total_seconds())
    if total < 60:
        return f"{total} second{'' if total == 1 else 's'}"
    minutes = total // 60
    week = 7 * 24 * 60
    # Weeks only when whole: "60 days" reads better than "8 weeks 4 days".
    if minutes % week == 0:
        return f"{minutes // week} week{'' if minutes == week else 's'}"
    parts: list[str] = []
    rest = minutes
    for size, unit in ((24 * 60, "day"), (60, "hour"), (1, "minute")):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts)


def _check_duration(what: str, duration: timedelta) -> None:
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise InvalidInput(f"{what} must be {_bounds_hint()}, not {describe_duration(duration)}.")


# --------------------------------------------------------------------------- values


class Phase(enum.StrEnum):
    """Where a challenge is: taking entries, taking votes, or over."""

    SUBMISSIONS = "submissions"
    VOTING = "voting"
    FINISHED = "finished"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether nothing more will happen to a challenge in this phase."""
        return self in (Phase.FINISHED, Phase.CANCELLED)


# Every allowed change of phase; ``advance`` refuses anything else, so a bug cannot reopen a
# finished challenge. SUBMISSIONS → FINISHED is the "no entries" shortcut.
TRANSITIONS: Final[Mapping[Phase, frozenset[Phase]]] = {
    Phase.SUBMISSIONS: frozenset({Phase.VOTING, Phase.FINISHED, Phase.CANCELLED}),
    Phase.VOTING: frozenset({Phase.FINISHED, Phase.CANCELLED}),
    Phase.FINISHED: frozenset(),
    Phase.CANCELLED: frozenset(),
}


def _utc(moment: datetime, name: str = "now") -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _check_settings(entries_per_member: int, votes_per_member: int | None) -> None:
    if entries_per_member < 1:
        raise ValueError(f"entries_per_member must be at least 1, got {entries_per_member}")
    if votes_per_member is not None and votes_per_member < 1:
        raise ValueError(f"votes_per_member must be None or at least 1, got {votes_per_member}")


@dataclass(frozen=True)
class NewChallenge:
    """A validated challenge as ``new_challenge`` hands it to the store, which gives it an id."""

    guild_id: int
    channel_id: int
    theme: str
    created_by: int
    created_at: datetime
    submit_until: datetime
    vote_until: datetime
    season_id: int
    entries_per_member: int = 1
    anonymous: bool = False
    votes_per_member: int | None = None
    shuffle: bool = False


@dataclass(frozen=True)
class Challenge:
    """A challenge as stored: the one Python shape of a ``challenges`` row.

    ``votes_per_member=None`` allows one vote per entry on any number of entries; a number caps
    a member's votes in total.
    """

    id: int
    guild_id: int
    channel_id: int
    theme: str
    phase: Phase
    created_by: int
    created_at: datetime
    submit_until: datetime
    vote_until: datetime
    season_id: int
    entries_per_member: int = 1
    anonymous: bool = False
    votes_per_member: int | None = None
    shuffle: bool = False
    announcement_message_id: int | None = None
    # The phases whose "a tenth of the time left" reminder was posted.
    reminded: frozenset[Phase] = frozenset()

    def __post_init__(self) -> None:
        created = _utc(self.created_at, "created_at")
        submit_until = _utc(self.submit_until, "submit_until")
        vote_until = _utc(self.vote_until, "vote_until")
        if not created <= submit_until < vote_until:
            raise ValueError(
                f"challenge {self.id} needs created_at <= submit_until < vote_until, got "
                f"{created.isoformat()}, {submit_until.isoformat()}, {vote_until.isoformat()}"
            )
        _check_settings(self.entries_per_member, self.votes_per_member)

    @property
    def deadline(self) -> datetime | None:
        """Return when the current phase ends, or None once the challenge is over."""
        if self.phase is Phase.SUBMISSIONS:
            return self.submit_until
        if self.phase is Phase.VOTING:
            return self.vote_until
        return None


@dataclass(frozen=True)
class Entry:
    """One image entered into a challenge; ``image_index`` is 1-based within its job's result."""

    id: int
    challenge_id: int
    user_id: int
    job_id: int
    image_index: int
    submitted_at: datetime
    withdrawn_at: datetime | None = None
    disqualified: bool = False
    gallery_message_id: int | None = None

    @property
    def valid(self) -> bool:
        """Whether the entry still competes: neither withdrawn nor disqualified."""
        return self.withdrawn_at is None and not self.disqualified


@dataclass(frozen=True)
class Vote:
    """One member's vote for one entry."""

    entry_id: int
    voter_id: int
    at: datetime


@dataclass(frozen=True)
class SubmittedImage:
    """The provenance of an image a member wants to enter, as the store reads it from the jobs table.

    ``channel_id`` is where the result was posted (``posted_channel_id``; the requesting channel
    while it is not posted yet) and ``image_count`` the number of images the result shows.
    """

    job_id: int
    guild_id: int
    channel_id: int
    user_id: int
    status_posted: bool
    image_count: int
    image_index: int


class VoteAction(enum.StrEnum):
    """What pressing an entry's vote button does."""

    ADD = "add"
    REMOVE = "remove"


# --------------------------------------------------------------------------- Discord text


def timestamp(moment: datetime, style: str = "f") -> str:
    """Return a Discord timestamp each member's client shows in their own zone ("f" date, "R" relative)."""
    # Floored, so a deadline is never shown as later than it is (deadlines are whole seconds anyway).
    return f"<t:{math.floor(_utc(moment, 'moment').timestamp())}:{style}>"


def _when(moment: datetime) -> str:
    return f"{timestamp(moment, 'f')} ({timestamp(moment, 'R')})"


def _channel(channel_id: int) -> str:
    return f"<#{channel_id}>"


# --------------------------------------------------------------------------- starting


def new_challenge(
    *,
    guild_id: int,
    channel_id: int,
    theme: str,
    submit_for: str | timedelta,
    vote_for: str | timedelta,
    created_by: int,
    season_id: int,
    now: datetime,
    entries_per_member: int = 1,
    anonymous: bool = False,
    votes_per_member: int | None = None,
    shuffle: bool = False,
) -> NewChallenge:
    """Validate a moderator's /challenge start and compute its deadlines from ``now``."""
    now = _utc(now)
    theme = theme.strip()
    if not theme:
        raise InvalidInput(
            "The theme is empty. Give the challenge a theme, such as `a lighthouse in a storm`."
        )
    if len(theme) > THEME_MAX:
        raise InvalidInput(
            f"The theme is {len(theme)} characters long; keep it to {THEME_MAX} so it fits the announcement."
        )
    submit = _option_duration("submit_for", submit_for)
    vote = _option_duration("vote_for", vote_for)
    if not 1 <= entries_per_member <= ENTRIES_PER_MEMBER_MAX:
        raise InvalidInput(
            f"`entries_per_member` must be between 1 and {ENTRIES_PER_MEMBER_MAX}, not {entries_per_member}."
        )
    if votes_per_member is not None and not 1 <= votes_per_member <= VOTES_PER_MEMBER_MAX:
        raise InvalidInput(
            f"`votes_per_member` must be between 1 and {VOTES_PER_MEMBER_MAX} (or left out for one vote "
            f"per entry), not {votes_per_member}."
        )
    # Whole seconds, so the Discord timestamps in the announcement are the exact deadlines.
    start = now.replace(microsecond=0)
    return NewChallenge(
        guild_id=guild_id,
        channel_id=channel_id,
        theme=theme,
        created_by=created_by,
        created_at=now,
        submit_until=start + submit,
        vote_until=start + submit + vote,
        season_id=season_id,
        entries_per_member=entries_per_member,
        anonymous=anonymous,
        votes_per_member=votes_per_member,
        shuffle=shuffle,
    )


def _option_duration(option: str, value: str | timedelta) -> timedelta:
    if isinstance(value, timedelta):
        _check_duration(f"`{option}`", value)
        return value
    try:
        return parse_duration(value)
    except InvalidInput as error:
        raise InvalidInput(f"`{option}`: {error}") from None


def check_start(channel_id: int, active: Iterable[Challenge]) -> None:
    """Refuse a new challenge in a channel where another one is still running."""
    for running in active:
        if running.channel_id == channel_id and not running.phase.ended:
            raise NotAllowed(
                f"A challenge is already running in {_channel(channel_id)} (theme: {escape(running.theme)}). "
                "Wait for it to finish, cancel it with `/challenge cancel`, or start this one in another channel."
            )


# --------------------------------------------------------------------------- submissions


def _submissions_closed(challenge: Challenge, now: datetime) -> str | None:
    if challenge.phase is Phase.CANCELLED:
        return "This challenge was cancelled, so it takes no more entries."
    if challenge.phase is Phase.FINISHED:
        return "This challenge has finished, so it takes no more entries."
    if challenge.phase is Phase.VOTING or now >= challenge.submit_until:
        return (
            f"Submissions for this challenge closed {timestamp(challenge.submit_until, 'R')}; "
            f"voting runs until {_when(challenge.vote_until)}."
        )
    return None


def not_made_here(challenge: Challenge) -> str:
    """The answer for an image that was not generated and posted in the challenge's channel."""
    return (
        f"Only images Easel generated and posted in {_channel(challenge.channel_id)} can be entered in "
        "this challenge. Generate one there with `/imagine`, then submit it."
    )


def check_submission(
    challenge: Challenge,
    entries_of_member: Sequence[Entry],
    *,
    job: SubmittedImage,
    user_id: int,
    now: datetime,
) -> None:
    """Refuse entering ``job``'s image unless the rules and its provenance allow it.

    ``entries_of_member`` are all of the member's entries in this challenge, withdrawn and
    disqualified ones included. Since only a result's requester may enter it, they are also every
    entry that could hold the same image.
    """
    now = _utc(now)
    for entry in entries_of_member:
        if entry.challenge_id != challenge.id or entry.user_id != user_id:
            raise ValueError(f"entry {entry.id} is not member {user_id}'s entry in challenge {challenge.id}")
    closed = _submissions_closed(challenge, now)
    if closed is not None:
        raise NotAllowed(closed)
    only_here = not_made_here(challenge)
    # Another guild's result gets the same answer as another channel's: nothing about it leaks.
    if job.guild_id != challenge.guild_id:
        raise NotAllowed(only_here)
    if job.user_id != user_id:
        raise NotAllowed("You can only submit images you generated. Generate your own with `/imagine`.")
    if not job.status_posted:
        raise NotAllowed("That result has not been posted yet. Wait until it appears, then submit it.")
    if job.channel_id != challenge.channel_id:
        raise NotAllowed(only_here)
    if not 1 <= job.image_index <= job.image_count:
        if job.image_count == 1:
            raise InvalidInput(f"That result has one image; submit image 1, not {job.image_index}.")
        raise InvalidInput(
            f"That result has {job.image_count} images; choose one from 1 to {job.image_count}, "
            f"not {job.image_index}."
        )
    for entry in entries_of_member:
        if entry.job_id != job.job_id or entry.image_index != job.image_index:
            continue
        if entry.disqualified:
            raise NotAllowed("That image was disqualified from this challenge. Submit a different one.")
        if entry.withdrawn_at is None:
            raise InvalidInput(f"That image is already your entry #{entry.id} in this challenge.")
    active = sum(1 for entry in entries_of_member if entry.valid)
    if active >= challenge.entries_per_member:
        allowed = challenge.entries_per_member
        raise LimitReached(
            f"You already have {active} {'entry' if active == 1 else 'entries'} in this challenge, and each "
            f"member may enter {allowed}. Withdraw one before submitting another."
        )


def check_withdraw(challenge: Challenge, entry: Entry, user_id: int, now: datetime) -> None:
    """Refuse withdrawing ``entry`` unless it is the member's own and submissions are still open."""
    now = _utc(now)
    if entry.challenge_id != challenge.id:
        raise ValueError(f"entry {entry.id} is not in challenge {challenge.id}")
    if entry.user_id != user_id:
        raise NotAllowed("You can only withdraw your own entries.")
    if entry.withdrawn_at is not None:
        raise NotAllowed("You already withdrew that entry.")
    if entry.disqualified:
        raise NotAllowed("That entry was disqualified, so there is nothing to withdraw.")
    if challenge.phase is not Phase.SUBMISSIONS or now >= challenge.submit_until:
        raise NotAllowed(
            "Entries can only be withdrawn while submissions are open, and they closed "
            f"{timestamp(challenge.submit_until, 'R')}."
        )


# --------------------------------------------------------------------------- voting


def _check_voting_open(challenge: Challenge, now: datetime) -> None:
    if challenge.phase is Phase.CANCELLED:
        raise NotAllowed("This challenge was cancelled, so there is nothing to vote on.")
    if challenge.phase is Phase.SUBMISSIONS and now < challenge.submit_until:
        raise NotAllowed(f"Voting has not started yet; it opens {_when(challenge.submit_until)}.")
    if challenge.phase is not Phase.VOTING or now >= challenge.vote_until:
        raise NotAllowed(
            f"Voting closed {timestamp(challenge.vote_until, 'R')}; votes can no longer change. "
            "The results are posted in the challenge's channel."
        )


def _check_voter_votes(challenge: Challenge, voter_id: int, votes_of_voter: Sequence[Vote]) -> None:
    for vote in votes_of_voter:
        if vote.voter_id != voter_id:
            raise ValueError(f"a vote by {vote.voter_id} was passed as member {voter_id}'s in {challenge.id}")


def check_vote(
    challenge: Challenge, entry: Entry, voter_id: int, votes_of_voter: Sequence[Vote], now: datetime
) -> None:
    """Refuse adding a vote for ``entry`` unless voting is open and the member may vote for it.

    ``votes_of_voter`` are the member's votes in this challenge that count: on entries neither
    withdrawn nor disqualified.
    """
    now = _utc(now)
    if entry.challenge_id != challenge.id:
        raise ValueError(f"entry {entry.id} is not in challenge {challenge.id}")
    _check_voter_votes(challenge, voter_id, votes_of_voter)
    _check_voting_open(challenge, now)
    if entry.disqualified:
        raise NotAllowed("That entry was disqualified, so it cannot receive votes.")
    if entry.withdrawn_at is not None:
        raise NotAllowed("That entry was withdrawn, so it cannot receive votes.")
    if entry.user_id == voter_id:
        raise NotAllowed("You cannot vote for your own entry. Vote for the entries you like best.")
    if any(vote.entry_id == entry.id for vote in votes_of_voter):
        raise InvalidInput(
            "You already voted for this entry; press its vote button again to take the vote back."
        )
    allowed = challenge.votes_per_member
    if allowed is not None and len(votes_of_voter) >= allowed:
        if allowed == 1:
            raise LimitReached(
                "You have used your one vote; take it back (press the vote button of the entry you voted "
                "for again) to vote for this one."
            )
        raise LimitReached(
            f"You have used all {allowed} votes; take one back (press the vote button of an entry you voted "
            "for again) to vote for this one."
        )


def vote_action(
    challenge: Challenge, entry: Entry, voter_id: int, votes_of_voter: Sequence[Vote], now: datetime
) -> VoteAction:
    """Return what the member's press of ``entry``'s vote button does: add a vote or take it back."""
    now = _utc(now)
    if entry.challenge_id != challenge.id:
        raise ValueError(f"entry {entry.id} is not in challenge {challenge.id}")
    _check_voter_votes(challenge, voter_id, votes_of_voter)
    _check_voting_open(challenge, now)
    if any(vote.entry_id == entry.id for vote in votes_of_voter):
        return VoteAction.REMOVE
    check_vote(challenge, entry, voter_id, votes_of_voter, now)
    return VoteAction.ADD


# --------------------------------------------------------------------------- phases


def due_transition(challenge: Challenge, now: datetime, *, valid_entries: int) -> Phase | None:
    """Return the phase ``challenge`` must move to at ``now``, or None if none is due.

    ``valid_entries`` counts entries neither withdrawn nor disqualified. Call again after applying
    the answer: after long downtime a challenge moves one phase per call.
    """
    now = _utc(now)
    if valid_entries < 0:
        raise ValueError(f"valid_entries must be 0 or more, got {valid_entries}")
    if challenge.phase is Phase.SUBMISSIONS and now >= challenge.submit_until:
        return Phase.VOTING if valid_entries else Phase.FINISHED
    if challenge.phase is Phase.VOTING and now >= challenge.vote_until:
        return Phase.FINISHED
    return None


def advance(challenge: Challenge, to: Phase) -> Challenge:
    """Return ``challenge`` in phase ``to``; raise ValueError for a change ``TRANSITIONS`` forbids."""
    if to not in TRANSITIONS[challenge.phase]:
        raise ValueError(f"challenge {challenge.id} cannot go from {challenge.phase} to {to}")
    return replace(challenge, phase=to)


def phase_started(challenge: Challenge) -> datetime | None:
    """Return when the current phase began (as its deadlines count it), or None once the challenge is over.

    Submissions began at the start, on the whole second ``new_challenge`` counted the deadlines
    from; voting began when submissions closed. Extensions move the deadlines, not the starts.
    """
    if challenge.phase is Phase.SUBMISSIONS:
        return _utc(challenge.created_at, "created_at").replace(microsecond=0)
    if challenge.phase is Phase.VOTING:
        return challenge.submit_until
    return None


def reminder_at(challenge: Challenge) -> datetime | None:
    """Return when the current phase's reminder is due: with a tenth of its time left.

    None when the challenge is over, the phase lasts under ``REMINDER_MIN_PHASE`` or its reminder
    was already posted: at most one reminder per phase, even after an extension.
    """
    started, deadline = phase_started(challenge), challenge.deadline
    if started is None or deadline is None or challenge.phase in challenge.reminded:
        return None
    length = deadline - started
    if length < REMINDER_MIN_PHASE:
        return None
    return deadline - length / REMINDER_SHARE


def reminder_due(challenge: Challenge, now: datetime) -> bool:
    """Whether the current phase's reminder should be posted at ``now``.

    Only while the phase still runs: after downtime past the deadline the phase simply ends, and
    a reminder for a closed phase would mislead.
    """
    now = _utc(now)
    at, deadline = reminder_at(challenge), challenge.deadline
    return at is not None and deadline is not None and at <= now < deadline


def next_wakeup(challenge: Challenge, now: datetime) -> datetime | None:
    """Return the next moment after ``now`` something is due for ``challenge`` (its reminder or deadline).

    A moment already past was just tried and failed (Discord refused the post): it is retried at
    the runner's regular wake-up, not in a tight loop.
    """
    now = _utc(now)
    moments = [m for m in (reminder_at(challenge), challenge.deadline) if m is not None and m > now]
    return min(moments, default=None)


def _ended_message(challenge: Challenge) -> str:
    if challenge.phase is Phase.CANCELLED:
        return "This challenge was cancelled."
    return "This challenge has already finished; its results are final."


def extend(challenge: Challenge, extra: timedelta, now: datetime) -> Challenge:
    """Return ``challenge`` with its current phase's deadline moved ``extra`` later.

    Extending submissions moves the vote deadline too, so voting keeps its announced length.
    """
    now = _utc(now)
    if challenge.phase.ended:
        raise NotAllowed(f"{_ended_message(challenge)} Start a new one with `/challenge start`.")
    _check_duration("An extension", extra)
    deadline = challenge.submit_until if challenge.phase is Phase.SUBMISSIONS else challenge.vote_until
    name = "Submissions" if challenge.phase is Phase.SUBMISSIONS else "Voting"
    if now >= deadline:
        # The transition is due and about to be processed; reopening a closed phase is not an extension.
        raise NotAllowed(
            f"{name} already closed {timestamp(deadline, 'R')}, so it can no longer be extended."
        )
    if deadline + extra - now > MAX_DURATION:
        raise InvalidInput(
            f"{name} would then close more than {describe_duration(MAX_DURATION)} from now. Extend by less."
        )
    if challenge.phase is Phase.SUBMISSIONS:
        return replace(
            challenge, submit_until=challenge.submit_until + extra, vote_until=challenge.vote_until + extra
        )
    return replace(challenge, vote_until=challenge.vote_until + extra)


def check_cancel(challenge: Challenge) -> None:
    """Refuse cancelling a challenge that is already over."""
    if challenge.phase.ended:
        raise NotAllowed(_ended_message(challenge))


def check_disqualify(challenge: Challenge, entry: Entry) -> None:
    """Refuse disqualifying ``entry`` once results are final, or when it no longer competes."""
    if entry.challenge_id != challenge.id:
        raise ValueError(f"entry {entry.id} is not in challenge {challenge.id}")
    if challenge.phase.ended:
        raise NotAllowed(_ended_message(challenge))
    if entry.disqualified:
        raise NotAllowed(f"Entry #{entry.id} is already disqualified.")
    if entry.withdrawn_at is not None:
        raise NotAllowed(f"Entry #{entry.id} was withdrawn by its author, so there is nothing to disqualify.")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Ranked:
    """An entry's place in the final standings and the votes it received."""

    place: int
    entry: Entry
    votes: int


def tally(entries: Iterable[Entry], votes: Iterable[Vote]) -> list[Ranked]:
    """Rank the valid entries by votes; ties go to the earlier submission, then the lower entry id."""
    valid = {entry.id: entry for entry in entries if entry.valid}
    voters: dict[int, set[int]] = defaultdict(set)
    for vote in votes:
        entry = valid.get(vote.entry_id)
        # A self-vote cannot pass check_vote; ignoring one keeps a bad row from deciding a result.
        if entry is not None and vote.voter_id != entry.user_id:
            voters[entry.id].add(vote.voter_id)
    ordered = sorted(
        valid.values(),
        key=lambda entry: (-len(voters[entry.id]), _utc(entry.submitted_at, "submitted_at"), entry.id),
    )
    return [Ranked(place, entry, len(voters[entry.id])) for place, entry in enumerate(ordered, start=1)]


def _entry_points(ranked: Ranked) -> int:
    if ranked.votes == 0:
        return PARTICIPATION_POINTS
    return PLACE_POINTS.get(ranked.place, PARTICIPATION_POINTS)


def points(ranked: Iterable[Ranked]) -> dict[int, int]:
    """Return each entrant's season points for one challenge: their best entry's, counted once."""
    scores: dict[int, int] = {}
    for row in ranked:
        user = row.entry.user_id
        scores[user] = max(scores.get(user, 0), _entry_points(row))
    return scores


def winner(ranked: Sequence[Ranked]) -> int | None:
    """Return the user id of the challenge's winner, or None when no entry received a vote."""
    if ranked and ranked[0].votes > 0:
        return ranked[0].entry.user_id
    return None


@dataclass(frozen=True)
class Standing:
    """A member's season record and place on the leaderboard."""

    place: int
    user_id: int
    points: int
    wins: int
    entries: int  # challenges entered this season


def leaderboard(rows: Iterable[tuple[int, int, int, int]]) -> list[Standing]:
    """Rank ``(user_id, points, wins, entries)`` rows; rows of the same member are added up."""
    totals: dict[int, tuple[int, int, int]] = {}
    for user_id, gained, wins, entries in rows:
        if gained < 0 or wins < 0 or entries < 0:
            raise ValueError(f"season row for {user_id} must not be negative: {gained}, {wins}, {entries}")
        before = totals.get(user_id, (0, 0, 0))
        totals[user_id] = (before[0] + gained, before[1] + wins, before[2] + entries)
    ordered = sorted(totals.items(), key=lambda item: (-item[1][0], -item[1][1], item[1][2], item[0]))
    standings: list[Standing] = []
    for index, (user_id, (total, wins, entries)) in enumerate(ordered, start=1):
        previous = standings[-1] if standings else None
        # Equal records share a place (1, 2, 2, 4); the user id only fixes the display order.
        same = previous is not None and (previous.points, previous.wins, previous.entries) == (
            total,
            wins,
            entries,
        )
        place = previous.place if same and previous is not None else index
        standings.append(Standing(place, user_id, total, wins, entries))
    return standings


def gallery_order(entries: Iterable[Entry], shuffle: bool, seed: int) -> list[Entry]:
    """Return the valid entries in the order the gallery shows them: submitted, or a stable shuffle."""
    valid = sorted(
        (entry for entry in entries if entry.valid),
        key=lambda entry: (_utc(entry.submitted_at, "submitted_at"), entry.id),
    )
    if not shuffle:
        return valid

    # A hash rather than random.shuffle: random's shuffle may change between Python versions,
    # and each entry's key depends only on itself, so dropping one entry keeps the others' order.
    def key(entry: Entry) -> bytes:
        return hashlib.sha256(f"easel-gallery:{seed}:{entry.id}".encode()).digest()

    return sorted(valid, key=key)


# --------------------------------------------------------------------------- message links

_MESSAGE_LINK: Final = re.compile(
    r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/([0-9]+)/([0-9]+)/([0-9]+)/?", re.ASCII
)


def parse_message_link(text: str) -> tuple[int, int, int]:
    """Return ``(guild_id, channel_id, message_id)`` from a Discord message link."""
    match = _MESSAGE_LINK.fullmatch(text.strip().strip("<>"))
    if match is None:
        raise InvalidInput(
            "That is not a message link. Right-click (or long-press) the result, choose **Copy Message Link**, "
            "and paste it here."
        )
    guild_id, channel_id, message_id = (int(part) for part in match.groups())
    return guild_id, channel_id, message_id


# --------------------------------------------------------------------------- announcements


def rules_text(challenge: Challenge) -> str:
    """Return the announcement's rules: theme, what may be entered, how voting works, the deadlines."""
    allowed = challenge.entries_per_member
    entries = "one image" if allowed == 1 else f"up to {allowed} images"
    if challenge.votes_per_member is None:
        votes = "Vote for as many entries as you like, once each"
    elif challenge.votes_per_member == 1:
        votes = "You have one vote"
    else:
        votes = f"You have {challenge.votes_per_member} votes, at most one per entry"
    shown = (
        "Entries are shown without their authors, and vote counts stay hidden until the results."
        if challenge.anonymous
        else "Entries are shown with their authors."
    )
    order = "in a shuffled order" if challenge.shuffle else "in the order they were submitted"
    lines = [
        f"**Theme:** {escape(challenge.theme)}",
        "",
        f"• Enter {entries} you generated with Easel in {_channel(challenge.channel_id)}: press **Submit** "
        "under your result, or use `/challenge submit` with its message link.",
        f"• Submissions close {_when(challenge.submit_until)}. Until then you can withdraw an entry.",
        f"• Then the entries are posted {order} for voting. {votes}; not for your own entry. Press a vote "
        "button again to take the vote back.",
        f"• Voting closes {_when(challenge.vote_until)}. {shown}",
        "• Most votes wins; ties go to the earlier submission.",
    ]
    return "\n".join(lines)


def status_text(challenge: Challenge, entry_count: int, vote_count: int, now: datetime) -> str:
    """Return what /challenge status shows: phase, deadlines and counts."""
    now = _utc(now)
    if challenge.phase is Phase.SUBMISSIONS and now < challenge.submit_until:
        phase = (
            f"Submissions are open until {_when(challenge.submit_until)}; "
            f"voting follows until {timestamp(challenge.vote_until, 'f')}."
        )
    elif challenge.phase is Phase.SUBMISSIONS:
        phase = f"Submissions closed {timestamp(challenge.submit_until, 'R')}; the entries are being posted."
    elif challenge.phase is Phase.VOTING and now < challenge.vote_until:
        phase = f"Voting is open until {_when(challenge.vote_until)}."
    elif challenge.phase is Phase.VOTING:
        phase = f"Voting closed {timestamp(challenge.vote_until, 'R')}; the results are being counted."
    elif challenge.phase is Phase.FINISHED:
        phase = f"Finished; voting closed {timestamp(challenge.vote_until, 'f')}."
    else:
        phase = "Cancelled."
    counts = f"**Entries:** {entry_count}"
    if challenge.phase is not Phase.SUBMISSIONS:
        counts += f" · **Votes:** {vote_count}"
    return "\n".join(
        [
            f"**Theme:** {escape(challenge.theme)}",
            f"**Channel:** {_channel(challenge.channel_id)}",
            phase,
            counts,
        ]
    )


def results_text(challenge: Challenge, ranked: Sequence[Ranked], *, top: int = 10) -> str:
    """Return the results announcement: the ranked list and the tiebreak rule."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    title = f"**Results: {escape(challenge.theme)}**"
    if not ranked:
        return f"{title}\nNo entries were submitted, so there is no winner."
    lines = [title]
    previous: Ranked | None = None
    for row in ranked[:top]:
        tie = " (tie)" if previous is not None and previous.votes == row.votes else ""
        votes = f"{row.votes} vote{'' if row.votes == 1 else 's'}"
        lines.append(f"{row.place}. <@{row.entry.user_id}> · entry #{row.entry.id} · {votes}{tie}")
        previous = row
    if len(ranked) > top:
        lines.append(f"…and {len(ranked) - top} more.")
    if winner(ranked) is None:
        lines.append("Nobody voted, so no one wins this time; every entry earns participation points.")
    lines.append("Ties go to the earlier submission.")
    return "\n".join(lines)
