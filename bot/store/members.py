"""What Easel keeps about a member, and its removal: exports, deletions, retention and purges.

Bulk removals run in batches of ``BATCH`` rows, each its own short transaction, so a large server's
purge never holds the one write lock for long. Every removal returns the image files its rows
pointed at; the caller deletes them (in a thread) once the rows are gone.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from bot.challenges import Entry, Vote
from bot.jobs import Job
from bot.memberdata import Charge, Removed
from bot.store.challenges import RUNNING_PHASES, entry_from_row, vote_from_row
from bot.store.connection import Database
from bot.store.jobs import job_from_row

BATCH = 500
# The assignments that remove a job's content: prompts, images, uploads. The interaction token stays
# for its last minutes: the notice of a job cancelled by a deletion goes through it.
_SCRUB = (
    "params = json_set(params, '$.prompt', '', '$.negative', '', '$.extra_prompt', ''), "
    "images = '[]', source_path = NULL, scrubbed_at = COALESCE(scrubbed_at, :now)"
)
# A result still on Discord keeps its member, so that its 🗑️ Delete button still works for them.
_STILL_POSTED = "status = 'posted' AND message_id IS NOT NULL AND deleted_at IS NULL"
# Tables keyed by guild that hold nothing another table points at.
_GUILD_TABLES = (
    "season_points",
    "preferences",
    "history_pages",
    "guild_settings",
    "ban_notices",
    "turns",
    "forget_requests",
)


class MemberStore:
    """Reads everything about one member, and removes members' and servers' data."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- export ----------------------------------------------------------------------------------

    async def jobs(self, guild_id: int, user_id: int) -> list[Job]:
        """Return every job of the member in this guild, oldest first."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? ORDER BY id", (guild_id, user_id)
            )
        return [job_from_row(row) for row in rows]

    async def entries(self, guild_id: int, user_id: int) -> list[tuple[Entry, str]]:
        """Return the member's challenge entries in this guild, each with its challenge's theme."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT e.*, c.theme FROM entries e JOIN challenges c ON c.id = e.challenge_id "
                "WHERE c.guild_id = ? AND e.user_id = ? ORDER BY e.id",
                (guild_id, user_id),
            )
        return [(entry_from_row(row), str(row["theme"])) for row in rows]

    async def votes(self, guild_id: int, user_id: int) -> list[tuple[Vote, int]]:
        """Return the votes the member cast in this guild, each with its challenge's id."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT v.*, e.challenge_id FROM votes v JOIN entries e ON e.id = v.entry_id "
                "JOIN challenges c ON c.id = e.challenge_id WHERE c.guild_id = ? AND v.voter_id = ? "
                "ORDER BY v.at",
                (guild_id, user_id),
            )
        return [(vote_from_row(row), int(row["challenge_id"])) for row in rows]

    async def charges(self, guild_id: int, user_id: int) -> list[Charge]:
        """Return the member's charges against quotas and budgets in this guild, oldest first."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT job_id, backend, cost, images, usd, state, created_at FROM charges "
                "WHERE guild_id = ? AND user_id = ? ORDER BY created_at",
                (guild_id, user_id),
            )
        return [
            Charge(int(r[0]), str(r[1]), int(r[2]), int(r[3]), float(r[4]), str(r[5]), _when(r[6]))
            for r in rows
        ]

    async def season_points(self, guild_id: int, user_id: int) -> list[tuple[int, int, bool]]:
        """Return (challenge, points, won) of every challenge the member earned points in here."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT challenge_id, points, won FROM season_points WHERE guild_id = ? AND user_id = ? "
                "ORDER BY challenge_id",
                (guild_id, user_id),
            )
        return [(int(r[0]), int(r[1]), bool(r[2])) for r in rows]

    # -- one member's deletion -------------------------------------------------------------------

    async def forget_member(
        self, guild_id: int, user_id: int, now: datetime, hold_since: datetime
    ) -> Removed:
        """Remove the member's prompts, images, entries, votes, points and preferences in this guild.

        Their ended jobs keep a row without content (charges point at it); it keeps the member only
        while its result is still posted, or while it is newer than ``hold_since`` (the quota windows
        still count it). Charges keep their counts; those older than ``hold_since`` lose the member
        now, the rest when the forget request recorded here falls due (``finish_forgetting``).
        """
        args = {"g": guild_id, "u": user_id, "now": _iso(now), "hold": _iso(hold_since)}
        async with self._db.transaction() as db:
            paths = await _content_of(
                db,
                "guild_id = :g AND user_id = :u AND scrubbed_at IS NULL AND (status IN ('posted', 'failed', "
                "'cancelled') OR (status = 'running' AND cancel_requested = 1))",
                args,
            )
            await db.execute(
                f"UPDATE jobs SET {_SCRUB} WHERE guild_id = :g AND user_id = :u AND (status IN "
                "('posted', 'failed', 'cancelled') OR (status = 'running' AND cancel_requested = 1))",
                args,
            )
            await _drop_picks_of(db, paths.job_ids)
            await db.execute(
                f"UPDATE jobs SET user_id = 0 WHERE guild_id = :g AND user_id = :u AND scrubbed_at IS NOT NULL "
                f"AND created_at < :hold AND NOT ({_STILL_POSTED})",
                args,
            )
            await db.execute(
                "UPDATE charges SET user_id = 0 WHERE guild_id = :g AND user_id = :u AND created_at < :hold",
                args,
            )
            await db.execute(
                "INSERT INTO forget_requests (guild_id, user_id, asked_at) VALUES (:g, :u, :now) "
                "ON CONFLICT (guild_id, user_id) DO UPDATE SET asked_at = excluded.asked_at",
                args,
            )
            entries = [
                int(r[0])
                for r in await db.execute_fetchall(
                    "SELECT e.id FROM entries e JOIN challenges c ON c.id = e.challenge_id "
                    "WHERE c.guild_id = :g AND e.user_id = :u",
                    args,
                )
            ]
            await _delete_entries(db, entries)
            await db.execute(
                "DELETE FROM votes WHERE voter_id = :u AND entry_id IN (SELECT e.id FROM entries e "
                "JOIN challenges c ON c.id = e.challenge_id WHERE c.guild_id = :g)",
                args,
            )
            for table in ("season_points", "preferences", "history_pages"):
                await db.execute(f"DELETE FROM {table} WHERE guild_id = :g AND user_id = :u", args)
        return Removed(jobs=len(paths.job_ids), entries=len(entries), files=paths.files)

    async def leftovers(self, guild_id: int, user_id: int) -> tuple[int, int]:
        """Return how many of the member's results are still posted, and how many are on their way."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT COALESCE(SUM({_STILL_POSTED}), 0), COALESCE(SUM(status IN ('queued', 'rendered') "
                "OR (status = 'running' AND cancel_requested = 0)), 0) FROM jobs WHERE guild_id = ? AND user_id = ?",
                (guild_id, user_id),
            )
        [row] = rows
        return int(row[0]), int(row[1])

    async def due_forget_requests(self, before: datetime) -> list[tuple[int, int, datetime]]:
        """Return (guild, member, asked at) of the forget requests asked before ``before``."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT guild_id, user_id, asked_at FROM forget_requests WHERE asked_at < ?", (_iso(before),)
            )
        return [(int(r[0]), int(r[1]), _when(r[2])) for r in rows]

    async def finish_forgetting(self, guild_id: int, user_id: int, asked_at: datetime) -> None:
        """Drop the member from the charges and content-less jobs they had when they asked to be forgotten."""
        args = {"g": guild_id, "u": user_id, "at": _iso(asked_at)}
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE charges SET user_id = 0 WHERE guild_id = :g AND user_id = :u AND created_at <= :at",
                args,
            )
            await db.execute(
                f"UPDATE jobs SET user_id = 0 WHERE guild_id = :g AND user_id = :u AND created_at <= :at "
                f"AND scrubbed_at IS NOT NULL AND NOT ({_STILL_POSTED})",
                args,
            )
            await db.execute(
                "DELETE FROM forget_requests WHERE guild_id = :g AND user_id = :u AND asked_at = :at", args
            )

    # -- retention -------------------------------------------------------------------------------

    async def retention_days(self) -> list[tuple[int, int]]:
        """Return (guild, days) of every guild that set ``retention_days``."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT guild_id, value FROM guild_settings WHERE key = 'retention_days'"
            )
        return [(int(r[0]), int(json.loads(r[1]))) for r in rows if json.loads(r[1]) is not None]

    async def scrub_older(self, guild_id: int, before: datetime, now: datetime) -> Removed:
        """Remove the prompts and images of up to ``BATCH`` ended jobs of a guild made before ``before``.

        Images entered in a challenge still running are kept until it ends. Returns what one batch
        removed: call again while it removed a full batch.
        """
        args = {"g": guild_id, "before": _iso(before), "now": _iso(now), "n": BATCH}
        args.update({f"phase{i}": phase for i, phase in enumerate(RUNNING_PHASES)})
        running = ", ".join(f":phase{i}" for i in range(len(RUNNING_PHASES)))
        async with self._db.transaction() as db:
            ids = [
                int(r[0])
                for r in await db.execute_fetchall(
                    "SELECT j.id FROM jobs j WHERE j.guild_id = :g AND j.scrubbed_at IS NULL "
                    "AND j.created_at < :before AND j.status IN ('posted', 'failed', 'cancelled') "
                    "AND NOT EXISTS (SELECT 1 FROM entries e JOIN challenges c ON c.id = e.challenge_id "
                    f"WHERE e.job_id = j.id AND c.phase IN ({running})) ORDER BY j.created_at LIMIT :n",
                    args,
                )
            ]
            paths = await _content_of(db, f"id IN ({_marks(ids)})", ids)
            await db.execute(
                f"UPDATE jobs SET {_SCRUB.replace(':now', '?')} WHERE id IN ({_marks(ids)})",
                [_iso(now), *ids],
            )
            await _drop_picks_of(db, ids)
        return Removed(jobs=len(ids), entries=0, files=paths.files)

    # -- servers that removed Easel --------------------------------------------------------------

    async def guilds_with_data(self) -> set[int]:
        """Return every guild Easel keeps anything about."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT guild_id FROM jobs UNION SELECT guild_id FROM guild_settings "
                "UNION SELECT guild_id FROM challenges UNION SELECT guild_id FROM preferences"
            )
        return {int(r[0]) for r in rows}

    async def mark_departed(self, guild_ids: Iterable[int], when: datetime) -> list[int]:
        """Record that these guilds removed Easel at ``when``; return those not recorded before."""
        async with self._db.transaction() as db:
            added = []
            for guild_id in guild_ids:
                cur = await db.execute(
                    "INSERT OR IGNORE INTO departed_guilds (guild_id, left_at) VALUES (?, ?)",
                    (guild_id, _iso(when)),
                )
                if cur.rowcount == 1:
                    added.append(guild_id)
            return added

    async def mark_returned(self, guild_ids: Collection[int]) -> list[int]:
        """Forget that these guilds removed Easel (it was added back); return those that had."""
        ids, back = list(guild_ids), []
        async with self._db.transaction() as db:
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                rows = await db.execute_fetchall(
                    f"DELETE FROM departed_guilds WHERE guild_id IN ({_marks(chunk)}) RETURNING guild_id",
                    chunk,
                )
                back += [int(r[0]) for r in rows]
        return back

    async def departed(self) -> list[tuple[int, datetime]]:
        """Return (guild, left at) of every guild that removed Easel and was not purged yet."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall("SELECT guild_id, left_at FROM departed_guilds ORDER BY left_at")
        return [(int(r[0]), _when(r[1])) for r in rows]

    async def purge_guild_batch(self, guild_id: int) -> Removed:
        """Delete up to ``BATCH`` of a guild's jobs (newest first) with their charges and challenge rows.

        Returns what one batch removed: call again while it removed anything, then ``purge_guild_rest``.
        """
        async with self._db.transaction() as db:
            entries = [
                int(r[0])
                for r in await db.execute_fetchall(
                    "SELECT e.id FROM entries e JOIN challenges c ON c.id = e.challenge_id "
                    "WHERE c.guild_id = ? LIMIT ?",
                    (guild_id, BATCH),
                )
            ]
            if entries:
                await _delete_entries(db, entries)
                return Removed(jobs=0, entries=len(entries), files=())
            # Newest first: a job made from another (a pick, a variation) always has the higher id,
            # so no batch deletes a job that a job still stored points at.
            ids = [
                int(r[0])
                for r in await db.execute_fetchall(
                    "SELECT id FROM jobs WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, BATCH)
                )
            ]
            paths = await _content_of(db, f"id IN ({_marks(ids)})", ids)
            await db.execute(f"DELETE FROM charges WHERE job_id IN ({_marks(ids)})", ids)
            await db.execute(f"DELETE FROM jobs WHERE id IN ({_marks(ids)})", ids)
        return Removed(jobs=len(ids), entries=0, files=paths.files)

    async def purge_guild_rest(self, guild_id: int) -> None:
        """Delete a guild's remaining rows (settings, challenges, seasons…) once its jobs are gone."""
        async with self._db.transaction() as db:
            for table in _GUILD_TABLES:
                await db.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,))
            await db.execute("DELETE FROM charges WHERE guild_id = ?", (guild_id,))
            await db.execute("DELETE FROM challenges WHERE guild_id = ?", (guild_id,))
            await db.execute("DELETE FROM seasons WHERE guild_id = ?", (guild_id,))
            await db.execute("DELETE FROM departed_guilds WHERE guild_id = ?", (guild_id,))


class _Content:
    def __init__(self, job_ids: tuple[int, ...], files: tuple[str, ...]) -> None:
        self.job_ids = job_ids
        self.files = files


async def _content_of(db: aiosqlite.Connection, where: str, args: Iterable[Any]) -> _Content:
    """The ids of the jobs ``where`` selects and the image files only they own.

    A job's rendered images live in its own ``jobs/<id>/`` folder; a pick (U1–U4) points into its
    parent's folder, so a pick owns only its upload (it has none).
    """
    rows = await db.execute_fetchall(f"SELECT id, kind, images, source_path FROM jobs WHERE {where}", args)
    ids: list[int] = []
    files: list[str] = []
    for row in rows:
        ids.append(int(row[0]))
        if row[1] != "pick":
            files.extend(str(name) for name in json.loads(row[2]))
        if row[3]:
            files.append(str(row[3]))
    return _Content(tuple(ids), tuple(files))


async def _drop_picks_of(db: aiosqlite.Connection, job_ids: Collection[int]) -> None:
    """Forget the images of picks made from these jobs: they pointed at files that are removed."""
    if job_ids:
        await db.execute(
            f"UPDATE jobs SET images = '[]' WHERE kind = 'pick' AND parent_id IN ({_marks(job_ids)})",
            list(job_ids),
        )


async def _delete_entries(db: aiosqlite.Connection, entry_ids: Collection[int]) -> None:
    if entry_ids:
        marks = _marks(entry_ids)
        await db.execute(f"DELETE FROM votes WHERE entry_id IN ({marks})", list(entry_ids))
        await db.execute(f"DELETE FROM entries WHERE id IN ({marks})", list(entry_ids))


def _marks(items: Collection[object]) -> str:
    return ",".join("?" * len(items))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)
