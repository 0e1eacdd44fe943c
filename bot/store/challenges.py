"""Seasons, challenges, entries, votes and season points: rows in, values out.

The rules (who may enter or vote, which phase is due, standings and points) live in
``bot.challenges`` and run in ``bot.contests``, inside ``Store.transaction()``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime

import aiosqlite

from bot.challenges import Challenge, Entry, NewChallenge, Phase, Vote
from bot.store.connection import Database
from bot.store.errors import RowMissing

log = logging.getLogger(__name__)

RUNNING_PHASES = (Phase.SUBMISSIONS.value, Phase.VOTING.value)
# The column that records each running phase's reminder message.
REMINDER_COLUMNS = {Phase.SUBMISSIONS: "submit_reminder_message_id", Phase.VOTING: "vote_reminder_message_id"}
VALID_ENTRY = "e.withdrawn_at IS NULL AND e.disqualified = 0"  # on ``entries e``: the entry still competes


class ChallengeStore:
    """The challenge tables; each method is one transaction, or part of the one open."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- seasons ---------------------------------------------------------------------------------

    async def current_season(self, guild_id: int, now: datetime) -> int:
        """Return the id of the guild's current season, opening season 1 on first use."""
        async with self._db.transaction() as db:
            row = await (
                await db.execute(
                    "SELECT id FROM seasons WHERE guild_id = ? ORDER BY number DESC LIMIT 1", (guild_id,)
                )
            ).fetchone()
            if row is not None:
                return int(row[0])
            return await _insert_season(db, guild_id, 1, 0, now)

    async def start_season(self, guild_id: int, by: int, now: datetime) -> int:
        """Open the guild's next season and return its id."""
        async with self._db.transaction() as db:
            row = await (
                await db.execute(
                    "SELECT COALESCE(MAX(number), 0) FROM seasons WHERE guild_id = ?", (guild_id,)
                )
            ).fetchone()
            number = (int(row[0]) if row else 0) + 1
            season = await _insert_season(db, guild_id, number, by, now)
            log.info("guild %d -> season %d (id %d) by %d", guild_id, number, season, by)
            return season

    async def season_number(self, season_id: int) -> int:
        """Return a season's number within its guild (1, 2, ...)."""
        async with self._db.read() as db:
            row = await (await db.execute("SELECT number FROM seasons WHERE id = ?", (season_id,))).fetchone()
        if row is None:
            raise RowMissing("season", season_id)
        return int(row[0])

    async def season_points(self, guild_id: int, season_id: int) -> list[tuple[int, int, bool]]:
        """Return (member, points, won) for every challenge entered in a season, one row per challenge."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT user_id, points, won FROM season_points WHERE guild_id = ? AND season_id = ?",
                (guild_id, season_id),
            )
            return [(int(r[0]), int(r[1]), bool(r[2])) for r in await cur.fetchall()]

    async def award(self, challenge: Challenge, points: Mapping[int, int], winner: int | None) -> None:
        """Write a finished challenge's season points; a second award for it adds nothing."""
        async with self._db.transaction() as db:
            # OR IGNORE: keyed by (challenge, member), so a retry can never count anyone twice.
            await db.executemany(
                "INSERT OR IGNORE INTO season_points (season_id, guild_id, user_id, challenge_id, points, won) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        challenge.season_id,
                        challenge.guild_id,
                        user_id,
                        challenge.id,
                        gained,
                        int(user_id == winner),
                    )
                    for user_id, gained in points.items()
                ],
            )

    # -- challenges ------------------------------------------------------------------------------

    async def add(self, new: NewChallenge) -> Challenge:
        """Write a new challenge taking submissions."""
        async with self._db.transaction() as db:
            row = await (
                await db.execute("SELECT guild_id FROM seasons WHERE id = ?", (new.season_id,))
            ).fetchone()
            if row is None or int(row[0]) != new.guild_id:
                raise ValueError(f"season {new.season_id} is not a season of guild {new.guild_id}")
            cur = await db.execute(
                """
                INSERT INTO challenges (guild_id, channel_id, theme, phase, created_by, created_at, submit_until,
                                        vote_until, season_id, entries_per_member, anonymous, votes_per_member,
                                        shuffle)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    new.guild_id,
                    new.channel_id,
                    new.theme,
                    Phase.SUBMISSIONS.value,
                    new.created_by,
                    _iso(new.created_at),
                    _iso(new.submit_until),
                    _iso(new.vote_until),
                    new.season_id,
                    new.entries_per_member,
                    int(new.anonymous),
                    new.votes_per_member,
                    int(new.shuffle),
                ),
            )
            assert cur.lastrowid is not None
            log.info(
                "challenge %d -> submissions (guild %d, channel %d)",
                cur.lastrowid,
                new.guild_id,
                new.channel_id,
            )
            return await _get_challenge(db, cur.lastrowid)

    async def get(self, challenge_id: int) -> Challenge:
        """Return a challenge by id, or raise RowMissing."""
        async with self._db.read() as db:
            return await _get_challenge(db, challenge_id)

    async def running(self, guild_id: int | None = None, channel_id: int | None = None) -> list[Challenge]:
        """Return challenges not yet ended, oldest first: everywhere, in a guild, or in one of its channels."""
        where = "phase IN (?, ?)"
        args: list[int | str] = list(RUNNING_PHASES)
        if guild_id is not None:
            where += " AND guild_id = ?"
            args.append(guild_id)
        if channel_id is not None:
            where += " AND channel_id = ?"
            args.append(channel_id)
        async with self._db.read() as db:
            cur = await db.execute(f"SELECT * FROM challenges WHERE {where} ORDER BY id", args)
            return [challenge_from_row(r) for r in await cur.fetchall()]

    async def in_guild(self, guild_id: int) -> list[Challenge]:
        """Return all of a guild's challenges, ended ones included, oldest first."""
        async with self._db.read() as db:
            cur = await db.execute("SELECT * FROM challenges WHERE guild_id = ? ORDER BY id", (guild_id,))
            return [challenge_from_row(r) for r in await cur.fetchall()]

    async def open_in(self, guild_id: int, channel_id: int) -> Challenge | None:
        """Return the challenge taking submissions in this channel, if there is one."""
        async with self._db.read() as db:
            row = await (
                await db.execute(
                    "SELECT * FROM challenges WHERE guild_id = ? AND channel_id = ? AND phase = ?",
                    (guild_id, channel_id, Phase.SUBMISSIONS.value),
                )
            ).fetchone()
        return challenge_from_row(row) if row else None

    async def finished_without_results(self) -> list[Challenge]:
        """Return finished challenges whose results were not posted yet (a crash came in between)."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT * FROM challenges WHERE phase = ? AND results_message_id IS NULL ORDER BY id",
                (Phase.FINISHED.value,),
            )
            return [challenge_from_row(r) for r in await cur.fetchall()]

    async def set_phase(self, challenge_id: int, to: Phase) -> Challenge:
        """Store a challenge's new phase (the caller checked ``bot.challenges.advance``)."""
        async with self._db.transaction() as db:
            await db.execute("UPDATE challenges SET phase = ? WHERE id = ?", (to.value, challenge_id))
            log.info("challenge %d -> %s", challenge_id, to.value)
            return await _get_challenge(db, challenge_id)

    async def set_deadlines(self, challenge: Challenge) -> Challenge:
        """Store ``challenge``'s deadlines (after an extension)."""
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE challenges SET submit_until = ?, vote_until = ? WHERE id = ?",
                (_iso(challenge.submit_until), _iso(challenge.vote_until), challenge.id),
            )
            return await _get_challenge(db, challenge.id)

    async def set_announcement(self, challenge_id: int, message_id: int) -> None:
        """Record the message that announced a challenge: after this it is never announced again."""
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE challenges SET announcement_message_id = ? WHERE id = ?", (message_id, challenge_id)
            )

    async def set_results_message(self, challenge_id: int, message_id: int) -> None:
        """Record the message that shows a challenge's results: after this they are never posted again."""
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE challenges SET results_message_id = ? WHERE id = ?", (message_id, challenge_id)
            )

    async def set_reminder(self, challenge_id: int, phase: Phase, message_id: int) -> None:
        """Record the message that reminded members of a phase's end: after this it is never posted again."""
        column = REMINDER_COLUMNS[phase]
        async with self._db.transaction() as db:
            await db.execute(f"UPDATE challenges SET {column} = ? WHERE id = ?", (message_id, challenge_id))
        log.info("challenge %d: %s reminder posted", challenge_id, phase.value)

    async def results_message(self, challenge_id: int) -> int | None:
        """Return the message that shows a challenge's results, or None while they are unposted."""
        async with self._db.read() as db:
            row = await (
                await db.execute("SELECT results_message_id FROM challenges WHERE id = ?", (challenge_id,))
            ).fetchone()
        if row is None:
            raise RowMissing("challenge", challenge_id)
        return None if row[0] is None else int(row[0])

    # -- entries ---------------------------------------------------------------------------------

    async def add_entry(
        self, challenge_id: int, user_id: int, job_id: int, image_index: int, now: datetime
    ) -> Entry:
        """Write an entry of image ``image_index`` (1-based) of a job's result."""
        async with self._db.transaction() as db:
            cur = await db.execute(
                "INSERT INTO entries (challenge_id, user_id, job_id, image_index, submitted_at) VALUES (?, ?, ?, ?, ?)",
                (challenge_id, user_id, job_id, image_index, _iso(now)),
            )
            assert cur.lastrowid is not None
            log.info(
                "challenge %d: entry %d (job %d image %d) by %d",
                challenge_id,
                cur.lastrowid,
                job_id,
                image_index,
                user_id,
            )
            return await _get_entry(db, cur.lastrowid)

    async def entry(self, entry_id: int) -> Entry:
        """Return an entry by id, or raise RowMissing."""
        async with self._db.read() as db:
            return await _get_entry(db, entry_id)

    async def entries(self, challenge_id: int, user_id: int | None = None) -> list[Entry]:
        """Return a challenge's entries (one member's, if given), withdrawn and disqualified included."""
        query, args = "SELECT * FROM entries WHERE challenge_id = ?", [challenge_id]
        if user_id is not None:
            query, args = query + " AND user_id = ?", [*args, user_id]
        async with self._db.read() as db:
            cur = await db.execute(query + " ORDER BY id", args)
            return [entry_from_row(r) for r in await cur.fetchall()]

    async def valid_entry_count(self, challenge_id: int) -> int:
        """Return how many of a challenge's entries still compete."""
        async with self._db.read() as db:
            row = await (
                await db.execute(
                    f"SELECT COUNT(*) FROM entries e WHERE e.challenge_id = ? AND {VALID_ENTRY}",
                    (challenge_id,),
                )
            ).fetchone()
        return int(row[0]) if row else 0

    async def withdraw_entry(self, entry_id: int, now: datetime) -> Entry:
        """Mark an entry withdrawn at ``now``."""
        async with self._db.transaction() as db:
            await db.execute("UPDATE entries SET withdrawn_at = ? WHERE id = ?", (_iso(now), entry_id))
            entry = await _get_entry(db, entry_id)
            log.info("challenge %d: entry %d withdrawn", entry.challenge_id, entry_id)
            return entry

    async def disqualify_entry(self, entry_id: int) -> Entry:
        """Mark an entry disqualified: its votes stop counting, nothing is deleted."""
        async with self._db.transaction() as db:
            await db.execute("UPDATE entries SET disqualified = 1 WHERE id = ?", (entry_id,))
            entry = await _get_entry(db, entry_id)
            log.info("challenge %d: entry %d disqualified", entry.challenge_id, entry_id)
            return entry

    async def set_gallery_message(self, entry_id: int, message_id: int) -> None:
        """Record the gallery message that shows an entry: after this it is never posted again."""
        async with self._db.transaction() as db:
            await db.execute("UPDATE entries SET gallery_message_id = ? WHERE id = ?", (message_id, entry_id))

    # -- votes -----------------------------------------------------------------------------------

    async def votes(self, challenge_id: int, voter_id: int | None = None) -> list[Vote]:
        """Return the votes that count in a challenge (one member's, if given): on entries still competing."""
        query = (
            "SELECT v.* FROM votes v JOIN entries e ON e.id = v.entry_id "
            f"WHERE e.challenge_id = ? AND {VALID_ENTRY}"
        )
        args = [challenge_id]
        if voter_id is not None:
            query, args = query + " AND v.voter_id = ?", [*args, voter_id]
        async with self._db.read() as db:
            cur = await db.execute(query + " ORDER BY v.at, v.entry_id, v.voter_id", args)
            return [vote_from_row(r) for r in await cur.fetchall()]

    async def add_vote(self, entry_id: int, voter_id: int, now: datetime) -> None:
        """Write a member's vote for an entry."""
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO votes (entry_id, voter_id, at) VALUES (?, ?, ?)", (entry_id, voter_id, _iso(now))
            )

    async def remove_vote(self, entry_id: int, voter_id: int) -> None:
        """Delete a member's vote for an entry."""
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM votes WHERE entry_id = ? AND voter_id = ?", (entry_id, voter_id))

    async def vote_counts(self, challenge_id: int) -> dict[int, int]:
        """Return each valid entry's id and how many votes count for it (0 included)."""
        async with self._db.read() as db:
            cur = await db.execute(
                f"SELECT e.id, COUNT(v.voter_id) FROM entries e LEFT JOIN votes v ON v.entry_id = e.id "
                f"WHERE e.challenge_id = ? AND {VALID_ENTRY} GROUP BY e.id ORDER BY e.id",
                (challenge_id,),
            )
            return {int(r[0]): int(r[1]) for r in await cur.fetchall()}


def _iso(moment: datetime) -> str:
    # Stored in UTC, so the text sorts in time order whatever zone the caller used.
    return moment.astimezone(UTC).isoformat()


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def _insert_season(db: aiosqlite.Connection, guild_id: int, number: int, by: int, now: datetime) -> int:
    cur = await db.execute(
        "INSERT INTO seasons (guild_id, number, started_at, started_by) VALUES (?, ?, ?, ?)",
        (guild_id, number, _iso(now), by),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


async def _get_challenge(db: aiosqlite.Connection, challenge_id: int) -> Challenge:
    row = await (await db.execute("SELECT * FROM challenges WHERE id = ?", (challenge_id,))).fetchone()
    if row is None:
        raise RowMissing("challenge", challenge_id)
    return challenge_from_row(row)


async def _get_entry(db: aiosqlite.Connection, entry_id: int) -> Entry:
    row = await (await db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,))).fetchone()
    if row is None:
        raise RowMissing("entry", entry_id)
    return entry_from_row(row)


def challenge_from_row(row: sqlite3.Row | aiosqlite.Row) -> Challenge:
    """Turn a ``challenges`` row into a Challenge: the one place that knows the column layout."""
    return Challenge(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        channel_id=int(row["channel_id"]),
        theme=str(row["theme"]),
        phase=Phase(row["phase"]),
        created_by=int(row["created_by"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        submit_until=datetime.fromisoformat(row["submit_until"]),
        vote_until=datetime.fromisoformat(row["vote_until"]),
        season_id=int(row["season_id"]),
        entries_per_member=int(row["entries_per_member"]),
        anonymous=bool(row["anonymous"]),
        votes_per_member=row["votes_per_member"],
        shuffle=bool(row["shuffle"]),
        announcement_message_id=row["announcement_message_id"],
        reminded=frozenset(phase for phase, column in REMINDER_COLUMNS.items() if row[column] is not None),
    )


def entry_from_row(row: sqlite3.Row | aiosqlite.Row) -> Entry:
    """Turn an ``entries`` row into an Entry."""
    return Entry(
        id=int(row["id"]),
        challenge_id=int(row["challenge_id"]),
        user_id=int(row["user_id"]),
        job_id=int(row["job_id"]),
        image_index=int(row["image_index"]),
        submitted_at=datetime.fromisoformat(row["submitted_at"]),
        withdrawn_at=_when(row["withdrawn_at"]),
        disqualified=bool(row["disqualified"]),
        gallery_message_id=row["gallery_message_id"],
    )


def vote_from_row(row: sqlite3.Row | aiosqlite.Row) -> Vote:
    """Turn a ``votes`` row into a Vote."""
    return Vote(
        entry_id=int(row["entry_id"]), voter_id=int(row["voter_id"]), at=datetime.fromisoformat(row["at"])
    )
