"""The only module that speaks SQL: one long-lived aiosqlite connection in WAL mode."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from bot import quotas
from bot.challenges import (
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
    check_withdraw,
    due_transition,
    extend,
    leaderboard,
    not_made_here,
    points,
    tally,
    vote_action,
    winner,
)
from bot.errors import LimitReached, NotAllowed, NotFound
from bot.fairness import fair_order
from bot.jobs import (
    INTERACTION_TOKEN_TTL,
    TRANSITIONS,
    Interaction,
    Job,
    JobKind,
    JobParams,
    JobStatus,
    NewJob,
    utcnow,
)
from bot.quotas import Admission, Windows
from bot.quotas import Usage as QuotaUsage
from bot.renderers.base import Usage

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
CANCEL_NOTE = "error = 'Cancelled by the member.'"  # the assignment every cancellation makes


class Store:
    """Durable state of Easel. Every method is one transaction; SQL lives beside the method that runs it."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # aiosqlite serialises statements, not transactions: without this lock a
        # statement from one coroutine could land inside another's BEGIN ... COMMIT.
        self._lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Store]:
        """Open (creating if needed) the database at ``path``, apply migrations, and close it on exit."""
        await asyncio.to_thread(_make_private, path)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode loses no committed transaction on an application crash,
            # only on power loss, and saves an fsync per commit.
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA busy_timeout = 5000")
            store = cls(conn)
            await store._migrate()
            yield store
        finally:
            await conn.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def _migrate(self) -> None:
        folder = resources.files("bot") / "migrations"
        scripts = sorted(
            (int(f.name[1:].split("__", 1)[0]), f) for f in folder.iterdir() if f.name.endswith(".sql")
        )
        async with self._lock:
            row = await (await self._conn.execute("PRAGMA user_version")).fetchone()
            current = int(row[0]) if row else 0
            for version, script in scripts:
                if version <= current:
                    continue
                # executescript commits first; the version bump is inside the script's own transaction
                await self._conn.executescript(
                    f"BEGIN;\n{script.read_text(encoding='utf-8')}\nPRAGMA user_version = {version};\nCOMMIT;"
                )
                log.info("applied migration %s", script.name)

    # -- jobs: accepting -------------------------------------------------------------------------

    async def enqueue(
        self,
        new: NewJob,
        *,
        max_per_member: int,
        max_per_guild: int,
        max_total: int,
        source_path: str | None = None,
        admission: Admission | None = None,
    ) -> Job:
        """Write a queued job and reserve its charge, unless a limit refuses it (then nothing is written).

        Queue limits, the member's quota and cooldown, and the guild's budget are checked in the
        transaction that writes the job, so requests sent at once cannot slip past a limit together.
        """
        async with self._tx() as db:
            member, guild, total = await _fetch_counts(db, new.guild_id, new.user_id)
            if member >= max_per_member:
                raise LimitReached(
                    f"You already have {member} job(s) waiting or rendering (the limit is {max_per_member}). "
                    "Wait for one to finish, or cancel one with /queue."
                )
            if guild >= max_per_guild:
                raise LimitReached(
                    f"This server already has {guild} jobs waiting (the limit is {max_per_guild}). "
                    "Try again in a minute."
                )
            if total >= max_total:
                raise LimitReached("Easel is at capacity right now. Try again in a few minutes.")
            if admission is not None:
                refusal = await _refusal(db, new.guild_id, new.user_id, new.backend, admission)
                if refusal is not None:
                    raise refusal.error()
            job_id = await _insert_job(db, new, JobStatus.QUEUED, source_path=source_path, images=())
            if admission is not None:
                await db.execute(
                    "INSERT INTO charges (job_id, guild_id, user_id, backend, cost, images, usd, state, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'reserved', ?)",
                    (
                        job_id,
                        new.guild_id,
                        new.user_id,
                        new.backend,
                        admission.cost,
                        admission.images,
                        admission.usd,
                        admission.now.isoformat(),
                    ),
                )
            log.info(
                "job %d -> queued (%s on %s, guild %d)", job_id, new.kind.value, new.backend, new.guild_id
            )
            return await _get(db, job_id)

    async def add_rendered(self, new: NewJob, images: tuple[str, ...], made_by: str) -> Job:
        """Write a job that needs no rendering (a U-pick of an existing image), ready to deliver."""
        async with self._tx() as db:
            job_id = await _insert_job(db, new, JobStatus.RENDERED, source_path=None, images=images)
            await db.execute("UPDATE jobs SET made_by = ? WHERE id = ?", (made_by, job_id))
            log.info(
                "job %d -> rendered (%s of job %s, guild %d)",
                job_id,
                new.kind.value,
                new.parent_id,
                new.guild_id,
            )
            return await _get(db, job_id)

    # -- guild settings and usage ---------------------------------------------------------------

    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        """Return the settings a guild changed from their defaults, key to value."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT key, value FROM guild_settings WHERE guild_id = ?", (guild_id,)
            )
            return {str(r[0]): json.loads(r[1]) for r in await cur.fetchall()}

    async def member_usage(self, guild_id: int, user_id: int, windows: Windows) -> QuotaUsage:
        """Return the quota a member used (reserved or settled) in the current day and week."""
        async with self._lock:
            return await _usage(self._conn, guild_id, user_id, windows)

    async def refusal(
        self, guild_id: int, user_id: int, backend: str, admission: Admission
    ) -> quotas.Refusal | None:
        """Why a job with ``admission`` would be refused now (quota, cooldown, budget), without writing."""
        async with self._lock:
            return await _refusal(self._conn, guild_id, user_id, backend, admission)

    async def update_guild_setting(
        self, guild_id: int, key: str, default: Any, update: Callable[[Any], Any], by: int
    ) -> tuple[Any, Any]:
        """Change one setting from its current value in one transaction; return (before, after).

        ``update`` gets the current value (``default`` when unset) and returns the new one, or raises
        to change nothing. Storing the default deletes the row, so two moderators editing one list
        at once both keep their edit.
        """
        async with self._tx() as db:
            row = await (
                await db.execute(
                    "SELECT value FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key)
                )
            ).fetchone()
            before = json.loads(row[0]) if row else default
            after = update(before)
            if after == default:
                await db.execute("DELETE FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key))
            else:
                await db.execute(
                    """
                    INSERT INTO guild_settings (guild_id, key, value, updated_at, updated_by)
                    VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (guild_id, key) DO UPDATE SET
                        value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by
                    """,
                    (guild_id, key, json.dumps(after), utcnow().isoformat(), by),
                )
            return before, after

    async def charges_since(
        self, guild_id: int, since: datetime
    ) -> list[tuple[datetime, int, str, int, float]]:
        """Return (created at, member, backend, images, usd) of a guild's unreleased charges since ``since``."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT created_at, user_id, backend, images, usd FROM charges "
                "WHERE guild_id = ? AND state != 'released' AND created_at >= ? ORDER BY created_at",
                (guild_id, since.isoformat()),
            )
            return [
                (datetime.fromisoformat(r[0]), int(r[1]), str(r[2]), int(r[3]), float(r[4]))
                for r in await cur.fetchall()
            ]

    async def first_ban_notice(self, guild_id: int, user_id: int) -> bool:
        """Record that a banned member was told; True the first time only."""
        async with self._tx() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO ban_notices (guild_id, user_id) VALUES (?, ?)", (guild_id, user_id)
            )
            return cur.rowcount == 1

    async def forget_ban_notice(self, guild_id: int, user_id: int) -> None:
        """Forget that a member was told they are banned (they were unbanned)."""
        async with self._tx() as db:
            await db.execute(
                "DELETE FROM ban_notices WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )

    # -- jobs: scheduling ------------------------------------------------------------------------

    async def claim(
        self, backend: str, joins: Callable[[Sequence[Job], Job], bool] | None = None
    ) -> list[Job]:
        """Move the next job in fair order to running, with the further jobs ``joins`` admits.

        Candidates are offered in fair order, so a batch only ever pulls compatible jobs ahead
        by one batch; each taken job counts as a turn for its guild and member, so the guilds
        passed over are first in line next time.
        """
        async with self._tx() as db:
            # Only a batching backend needs every candidate's parameters; others read three columns.
            columns = "*" if joins is not None else "id, guild_id, user_id"
            cur = await db.execute(
                f"SELECT {columns} FROM jobs WHERE status = 'queued' AND backend = ? ORDER BY id", (backend,)
            )
            rows = await cur.fetchall()
            if not rows:
                return []
            turns = await _turns(db, backend)
            order = fair_order(((int(r["id"]), int(r["guild_id"]), int(r["user_id"])) for r in rows), turns)
            if joins is None:
                taken = [await _get(db, order[0])]
            else:
                queued = {job.id: job for job in map(_job_from_row, rows)}
                taken = [queued[order[0]]]
                for job_id in order[1:]:
                    if joins(taken, queued[job_id]):
                        taken.append(queued[job_id])
            turn = max(turns.values(), default=0)
            for job in taken:
                turn += 1
                await db.executemany(
                    """
                    INSERT INTO turns (backend, guild_id, user_id, last_turn) VALUES (?, ?, ?, ?)
                    ON CONFLICT (backend, guild_id, user_id) DO UPDATE SET last_turn = excluded.last_turn
                    """,
                    [(backend, job.guild_id, 0, turn), (backend, job.guild_id, job.user_id, turn)],
                )
                await _transition(db, job.id, JobStatus.RUNNING, "attempts = attempts + 1")
            return [await _get(db, job.id) for job in taken]

    async def queue_snapshot(
        self, backend: str
    ) -> tuple[list[tuple[int, int, int]], dict[tuple[int, int], int]]:
        """Return the queued (job id, guild, member) triples of a backend and its turn table."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT id, guild_id, user_id FROM jobs WHERE status = 'queued' AND backend = ? ORDER BY id",
                (backend,),
            )
            jobs = [(int(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
            turns = await _turns(self._conn, backend)
        return jobs, turns

    # -- jobs: finishing -------------------------------------------------------------------------

    async def mark_rendered(
        self, job_id: int, images: tuple[str, ...], made_by: str, usage: Usage | None
    ) -> Job:
        """Record a finished render and where its images are; a job cancelled meanwhile becomes cancelled."""
        async with self._tx() as db:
            job = await _get(db, job_id)
            if job.cancel_requested:
                await _transition(db, job_id, JobStatus.CANCELLED, CANCEL_NOTE)
            else:
                await _transition(
                    db,
                    job_id,
                    JobStatus.RENDERED,
                    "images = ?, made_by = ?, usage = ?",
                    (json.dumps(images), made_by, json.dumps(asdict(usage)) if usage else None),
                )
            return await _get(db, job_id)

    async def mark_posted(self, job_id: int, message_id: int, channel_id: int) -> Job:
        """Record the message that shows a job's result: after this it is never posted again."""
        async with self._tx() as db:
            await _transition(
                db,
                job_id,
                JobStatus.POSTED,
                "message_id = ?, posted_channel_id = ?, token = NULL",
                (message_id, channel_id),
            )
            return await _get(db, job_id)

    async def mark_failed(self, job_id: int, error: str) -> Job:
        """End a job with a member-readable reason; nothing is charged for it."""
        async with self._tx() as db:
            await _transition(db, job_id, JobStatus.FAILED, "error = ?", (error,))
            return await _get(db, job_id)

    async def mark_cancelled(self, job_id: int) -> Job:
        """End a job the member cancelled; nothing is charged for it."""
        async with self._tx() as db:
            await _transition(db, job_id, JobStatus.CANCELLED, CANCEL_NOTE)
            return await _get(db, job_id)

    async def set_message(self, job_id: int, message_id: int) -> None:
        """Record the message that told the member how a job ended (0: it could not be posted)."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET message_id = ?, token = NULL WHERE id = ?", (message_id, job_id)
            )

    async def cancel(self, job_id: int, guild_id: int, user_id: int) -> Job:
        """Cancel a queued job now, or ask a running one to stop (its result is then discarded)."""
        async with self._tx() as db:
            job = await _find(db, job_id, guild_id)
            if job.user_id != user_id:
                raise NotAllowed("Only the member who asked for this job can cancel it.")
            if job.status is JobStatus.QUEUED:
                await _transition(db, job_id, JobStatus.CANCELLED, CANCEL_NOTE)
            elif job.status is JobStatus.RUNNING:
                await db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise NotAllowed(
                    f"Job #{job_id} has already finished ({job.status.value}); nothing to cancel."
                )
            return await _get(db, job_id)

    # -- jobs: reading ---------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return a job by id, or raise NotFound."""
        async with self._lock:
            return await _get(self._conn, job_id)

    async def find(self, job_id: int, guild_id: int) -> Job:
        """Return a job of this guild; another guild's job is reported as not found."""
        async with self._lock:
            return await _find(self._conn, job_id, guild_id)

    async def jobs_with_status(self, *statuses: JobStatus) -> list[Job]:
        """Return jobs in any of these states, oldest first."""
        marks = ",".join("?" * len(statuses))
        async with self._lock:
            cur = await self._conn.execute(
                f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY id", [s.value for s in statuses]
            )
            return [_job_from_row(r) for r in await cur.fetchall()]

    async def active_jobs(self, guild_id: int) -> list[Job]:
        """Return a guild's queued and running jobs, oldest first."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT * FROM jobs WHERE guild_id = ? AND status IN (?, ?) ORDER BY id", (guild_id, *ACTIVE)
            )
            return [_job_from_row(r) for r in await cur.fetchall()]

    async def backend_load(self) -> dict[str, tuple[int, int]]:
        """Return (queued, running) job counts per backend, across all guilds."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT backend, SUM(status = 'queued'), SUM(status = 'running') FROM jobs "
                "WHERE status IN (?, ?) GROUP BY backend",
                ACTIVE,
            )
            return {str(r[0]): (int(r[1]), int(r[2])) for r in await cur.fetchall()}

    async def requeue_interrupted(self) -> None:
        """Return renders a restart interrupted to the queue (or end them, if their member cancelled)."""
        async with self._tx() as db:
            cur = await db.execute("SELECT * FROM jobs WHERE status = 'running' ORDER BY id")
            for job in [_job_from_row(r) for r in await cur.fetchall()]:
                if job.cancel_requested:
                    await _transition(db, job.id, JobStatus.CANCELLED, CANCEL_NOTE)
                else:
                    await _transition(db, job.id, JobStatus.QUEUED)

    async def undelivered(self) -> list[Job]:
        """Return jobs whose result, failure or cancellation has not been posted yet."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT * FROM jobs WHERE status = 'rendered' "
                "OR (status IN ('failed', 'cancelled') AND message_id IS NULL) ORDER BY id"
            )
            return [_job_from_row(r) for r in await cur.fetchall()]

    # -- challenges ------------------------------------------------------------------------------
    # The rules live in bot.challenges; each method below loads what a rule needs, asks it and
    # writes the answer in one transaction, so two requests at once cannot both pass a check.

    async def current_season(self, guild_id: int, now: datetime | None = None) -> int:
        """Return the id of the guild's current season, opening season 1 on first use."""
        async with self._tx() as db:
            season = await _latest_season(db, guild_id)
            if season is None:
                season = await _insert_season(db, guild_id, 1, 0, now or utcnow())
            return season

    async def start_season(self, guild_id: int, by: int, now: datetime | None = None) -> int:
        """Open the guild's next season (everyone starts at zero) and return its id."""
        async with self._tx() as db:
            row = await (
                await db.execute(
                    "SELECT COALESCE(MAX(number), 0) FROM seasons WHERE guild_id = ?", (guild_id,)
                )
            ).fetchone()
            number = (int(row[0]) if row else 0) + 1
            season = await _insert_season(db, guild_id, number, by, now or utcnow())
            log.info("guild %d -> season %d (id %d) by %d", guild_id, number, season, by)
            return season

    async def season_number(self, season_id: int) -> int:
        """Return a season's number within its guild (1, 2, ...) for display."""
        async with self._lock:
            row = await (
                await self._conn.execute("SELECT number FROM seasons WHERE id = ?", (season_id,))
            ).fetchone()
            if row is None:
                raise NotFound(f"Season #{season_id} does not exist.")
            return int(row[0])

    async def start_challenge(self, new: NewChallenge) -> Challenge:
        """Write a new challenge taking submissions, unless one already runs in its channel."""
        async with self._tx() as db:
            row = await (
                await db.execute("SELECT guild_id FROM seasons WHERE id = ?", (new.season_id,))
            ).fetchone()
            if row is None or int(row[0]) != new.guild_id:
                raise ValueError(f"season {new.season_id} is not a season of guild {new.guild_id}")
            cur = await db.execute(
                "SELECT * FROM challenges WHERE guild_id = ? AND channel_id = ? AND phase IN (?, ?)",
                (new.guild_id, new.channel_id, *RUNNING_PHASES),
            )
            check_start(new.channel_id, [_challenge_from_row(r) for r in await cur.fetchall()])
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

    async def challenge(self, challenge_id: int, guild_id: int) -> Challenge:
        """Return a challenge of this guild; another guild's challenge is reported as not found."""
        async with self._lock:
            return await _find_challenge(self._conn, challenge_id, guild_id)

    async def running_challenges(self) -> list[Challenge]:
        """Return every challenge not yet ended, in all guilds, oldest first (for the deadline runner)."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT * FROM challenges WHERE phase IN (?, ?) ORDER BY id", RUNNING_PHASES
            )
            return [_challenge_from_row(r) for r in await cur.fetchall()]

    async def job_by_message(self, guild_id: int, message_id: int) -> Job:
        """Return the job whose result is the message ``message_id`` in this guild (NotFound otherwise)."""
        async with self._lock:
            row = await (
                await self._conn.execute(
                    "SELECT * FROM jobs WHERE guild_id = ? AND message_id = ?", (guild_id, message_id)
                )
            ).fetchone()
        if row is None:
            raise NotFound("That message is not an Easel result in this server. Copy the link of a result.")
        return _job_from_row(row)

    async def finished_without_results(self) -> list[Challenge]:
        """Return finished challenges whose results were not posted yet (a crash came in between)."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT * FROM challenges WHERE phase = ? AND results_message_id IS NULL ORDER BY id",
                (Phase.FINISHED.value,),
            )
            return [_challenge_from_row(r) for r in await cur.fetchall()]

    async def open_challenge_in(self, guild_id: int, channel_id: int) -> Challenge | None:
        """Return the challenge taking submissions in this channel, if there is one."""
        async with self._lock:
            row = await (
                await self._conn.execute(
                    "SELECT * FROM challenges WHERE guild_id = ? AND channel_id = ? AND phase = ?",
                    (guild_id, channel_id, Phase.SUBMISSIONS.value),
                )
            ).fetchone()
            return _challenge_from_row(row) if row else None

    async def guild_challenges(self, guild_id: int, *, running_only: bool = False) -> list[Challenge]:
        """Return a guild's challenges (only those not yet ended, if asked), oldest first."""
        phases = RUNNING_PHASES if running_only else tuple(p.value for p in Phase)
        async with self._lock:
            cur = await self._conn.execute(
                f"SELECT * FROM challenges WHERE guild_id = ? AND phase IN ({','.join('?' * len(phases))}) "
                "ORDER BY id",
                (guild_id, *phases),
            )
            return [_challenge_from_row(r) for r in await cur.fetchall()]

    async def set_challenge_phase(
        self, challenge_id: int, to: Phase, *, now: datetime | None = None
    ) -> Challenge:
        """Move a challenge to ``to``; a challenge already there is returned unchanged.

        With ``now``, the move must be the one ``due_transition`` says is due, so a deadline runner
        acting on a stale read (a moderator extended or cancelled meanwhile) changes nothing.
        Finishing awards season points, exactly as ``finish_challenge`` does.
        """
        async with self._tx() as db:
            challenge = await _get_challenge(db, challenge_id)
            if challenge.phase is to:
                return challenge
            if now is not None:
                due = due_transition(challenge, now, valid_entries=await _valid_entry_count(db, challenge_id))
                if due is not to:
                    raise NotAllowed(
                        f"Challenge #{challenge_id} is {challenge.phase.value} and not due to become {to.value}."
                    )
            if to is Phase.FINISHED:
                await _finish(db, challenge)
                return await _get_challenge(db, challenge_id)
            return await _set_phase(db, challenge, to)

    async def extend_challenge(
        self, challenge_id: int, guild_id: int, extra: timedelta, now: datetime
    ) -> Challenge:
        """Move the current phase's deadline ``extra`` later (submissions move voting along)."""
        async with self._tx() as db:
            extended = extend(await _find_challenge(db, challenge_id, guild_id), extra, now)
            await db.execute(
                "UPDATE challenges SET submit_until = ?, vote_until = ? WHERE id = ?",
                (_iso(extended.submit_until), _iso(extended.vote_until), challenge_id),
            )
            log.info("challenge %d extended by %s", challenge_id, extra)
            return extended

    async def cancel_challenge(self, challenge_id: int, guild_id: int) -> Challenge:
        """End a running challenge without results or points."""
        async with self._tx() as db:
            challenge = await _find_challenge(db, challenge_id, guild_id)
            check_cancel(challenge)
            return await _set_phase(db, challenge, Phase.CANCELLED)

    async def set_announcement(self, challenge_id: int, message_id: int) -> None:
        """Record the message that announced a challenge: after this it is never announced again."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE challenges SET announcement_message_id = ? WHERE id = ?", (message_id, challenge_id)
            )

    async def set_results_message(self, challenge_id: int, message_id: int) -> None:
        """Record the message that shows a challenge's results: after this they are never posted again."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE challenges SET results_message_id = ? WHERE id = ?", (message_id, challenge_id)
            )

    async def results_message(self, challenge_id: int) -> int | None:
        """Return the message that shows a challenge's results, or None while they are unposted."""
        async with self._lock:
            row = await (
                await self._conn.execute(
                    "SELECT results_message_id FROM challenges WHERE id = ?", (challenge_id,)
                )
            ).fetchone()
            if row is None:
                raise NotFound(f"Challenge #{challenge_id} does not exist.")
            return None if row[0] is None else int(row[0])

    async def set_gallery_message(self, entry_id: int, message_id: int) -> None:
        """Record the gallery message that shows an entry: after this it is never posted again."""
        async with self._tx() as db:
            await db.execute("UPDATE entries SET gallery_message_id = ? WHERE id = ?", (message_id, entry_id))

    async def submit_entry(
        self, challenge_id: int, guild_id: int, user_id: int, job_id: int, image_index: int, now: datetime
    ) -> Entry:
        """Enter image ``image_index`` (1-based) of a job's result, if its provenance and the rules allow."""
        async with self._tx() as db:
            challenge = await _find_challenge(db, challenge_id, guild_id)
            cur = await db.execute(
                "SELECT * FROM entries WHERE challenge_id = ? AND user_id = ? ORDER BY id",
                (challenge_id, user_id),
            )
            mine = [_entry_from_row(r) for r in await cur.fetchall()]
            image = await _submitted_image(db, job_id, image_index, guild_id)
            if image is None:
                # A missing job and another guild's job get the answer for an image not made here,
                # as NotFound: ids reveal nothing across guilds.
                raise NotFound(not_made_here(challenge))
            check_submission(challenge, mine, job=image, user_id=user_id, now=now)
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

    async def withdraw_entry(self, entry_id: int, guild_id: int, user_id: int, now: datetime) -> Entry:
        """Take back a member's own entry while submissions are open."""
        async with self._tx() as db:
            entry, challenge = await _find_entry(db, entry_id, guild_id)
            check_withdraw(challenge, entry, user_id, now)
            await db.execute("UPDATE entries SET withdrawn_at = ? WHERE id = ?", (_iso(now), entry_id))
            log.info("challenge %d: entry %d withdrawn", challenge.id, entry_id)
            return await _get_entry(db, entry_id)

    async def disqualify_entry(self, entry_id: int, guild_id: int) -> Entry:
        """Remove an entry from the competition; its voters get their votes back."""
        async with self._tx() as db:
            entry, challenge = await _find_entry(db, entry_id, guild_id)
            check_disqualify(challenge, entry)
            await db.execute("UPDATE entries SET disqualified = 1 WHERE id = ?", (entry_id,))
            log.info("challenge %d: entry %d disqualified", challenge.id, entry_id)
            return await _get_entry(db, entry_id)

    async def toggle_vote(self, entry_id: int, guild_id: int, voter_id: int, now: datetime) -> VoteAction:
        """Add the member's vote for an entry, or take it back if they had voted for it; return which."""
        async with self._tx() as db:
            entry, challenge = await _find_entry(db, entry_id, guild_id)
            cur = await db.execute(
                f"SELECT v.* FROM votes v JOIN entries e ON e.id = v.entry_id "
                f"WHERE e.challenge_id = ? AND v.voter_id = ? AND {VALID_ENTRY} ORDER BY v.at, v.entry_id",
                (challenge.id, voter_id),
            )
            mine = [_vote_from_row(r) for r in await cur.fetchall()]
            action = vote_action(challenge, entry, voter_id, mine, now)
            if action is VoteAction.ADD:
                await db.execute(
                    "INSERT INTO votes (entry_id, voter_id, at) VALUES (?, ?, ?)",
                    (entry_id, voter_id, _iso(now)),
                )
            else:
                await db.execute(
                    "DELETE FROM votes WHERE entry_id = ? AND voter_id = ?", (entry_id, voter_id)
                )
            return action

    async def entries(self, challenge_id: int) -> list[Entry]:
        """Return all of a challenge's entries, withdrawn and disqualified included, in submission order."""
        async with self._lock:
            return await _entries(self._conn, challenge_id)

    async def votes(self, challenge_id: int) -> list[Vote]:
        """Return the votes that count in a challenge: those on entries neither withdrawn nor disqualified."""
        async with self._lock:
            return await _counting_votes(self._conn, challenge_id)

    async def vote_counts(self, challenge_id: int) -> dict[int, int]:
        """Return each valid entry's id and how many votes count for it (0 included)."""
        async with self._lock:
            cur = await self._conn.execute(
                f"SELECT e.id, COUNT(v.voter_id) FROM entries e LEFT JOIN votes v ON v.entry_id = e.id "
                f"WHERE e.challenge_id = ? AND {VALID_ENTRY} GROUP BY e.id ORDER BY e.id",
                (challenge_id,),
            )
            return {int(r[0]): int(r[1]) for r in await cur.fetchall()}

    async def finish_challenge(self, challenge_id: int, now: datetime | None = None) -> list[Ranked]:
        """End voting, award season points and return the final standings.

        Finishing a finished challenge again (a crash between this and posting the results)
        returns the same standings and awards nothing more. With ``now``, voting must be over.
        """
        async with self._tx() as db:
            challenge = await _get_challenge(db, challenge_id)
            if challenge.phase is Phase.FINISHED:
                return tally(await _entries(db, challenge_id), await _counting_votes(db, challenge_id))
            if now is not None:
                due = due_transition(challenge, now, valid_entries=await _valid_entry_count(db, challenge_id))
                if due is not Phase.FINISHED:
                    raise NotAllowed(
                        f"Challenge #{challenge_id} is {challenge.phase.value} and not due to finish."
                    )
            return await _finish(db, challenge)

    async def season_leaderboard(self, guild_id: int, season_id: int) -> list[Standing]:
        """Return a season's standings in a guild: points, wins and challenges entered per member."""
        async with self._lock:
            cur = await self._conn.execute(
                "SELECT user_id, points, won FROM season_points WHERE guild_id = ? AND season_id = ?",
                (guild_id, season_id),
            )
            return leaderboard((int(r[0]), int(r[1]), int(r[2]), 1) for r in await cur.fetchall())

    # -- security: interaction tokens ------------------------------------------------------------
    # A token lets its holder post as Easel in the job's channel for 15 minutes. mark_posted and
    # set_message drop it once the job's outcome is shown; this sweeps the rest at start.

    async def clear_expired_tokens(self, now: datetime) -> int:
        """Forget interaction tokens past Discord's 15 minutes or of jobs already answered; return how many."""
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE jobs SET token = NULL WHERE token IS NOT NULL AND "
                "(julianday(token_created_at) <= julianday(?) OR status = 'posted' OR message_id IS NOT NULL)",
                ((now - INTERACTION_TOKEN_TTL).isoformat(),),
            )
            return cur.rowcount


def _make_private(path: Path) -> None:
    """Create the database (and its folder, if missing) readable by Easel's user only; tighten an existing one.

    SQLite gives the -wal and -shm files the database file's mode, so the file must exist with
    0600 before the connection opens. An existing folder is left as it is: it may be shared.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        if file.exists():
            file.chmod(0o600)


async def _fetch_counts(db: aiosqlite.Connection, guild_id: int, user_id: int) -> tuple[int, int, int]:
    cur = await db.execute(
        """
        SELECT
            COALESCE(SUM(guild_id = :g AND user_id = :u), 0),
            COALESCE(SUM(guild_id = :g), 0),
            COUNT(*)
        FROM jobs WHERE status IN ('queued', 'running')
        """,
        {"g": guild_id, "u": user_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def _insert_job(
    db: aiosqlite.Connection,
    new: NewJob,
    status: JobStatus,
    *,
    source_path: str | None,
    images: Iterable[str],
) -> int:
    now = utcnow().isoformat()
    it = new.interaction
    cur = await db.execute(
        """
        INSERT INTO jobs (guild_id, channel_id, user_id, kind, backend, status, params, created_at, updated_at,
                          app_id, token, token_created_at, status_message_id, parent_id, parent_index,
                          upload_limit, images, source_path)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        (
            new.guild_id,
            new.channel_id,
            new.user_id,
            new.kind.value,
            new.backend,
            status.value,
            json.dumps(asdict(new.params)),
            now,
            now,
            it.application_id if it else None,
            it.token if it else None,
            it.created_at.isoformat() if it else None,
            it.message_id if it else None,
            new.parent_id,
            new.parent_index,
            new.upload_limit,
            json.dumps(list(images)),
            source_path,
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


async def _refusal(
    db: aiosqlite.Connection, guild_id: int, user_id: int, backend: str, admission: Admission
) -> quotas.Refusal | None:
    """Why the member's quota or cooldown, or the guild's budget, refuses a job; None to accept it."""
    usage = await _usage(db, guild_id, user_id, admission.windows)
    row = await (
        await db.execute(
            "SELECT MAX(created_at) FROM jobs WHERE guild_id = ? AND user_id = ? AND kind != 'pick'",
            (guild_id, user_id),
        )
    ).fetchone()
    last = datetime.fromisoformat(row[0]) if row and row[0] else None
    refusal = quotas.check(
        admission.limits,
        usage,
        admission.cost,
        now=admission.now,
        windows=admission.windows,
        last_request_at=last,
        cooldown_s=admission.cooldown_s,
    )
    if refusal is not None:
        return refusal
    month = admission.windows.month
    row = await (
        await db.execute(
            "SELECT COALESCE(SUM(images), 0), COALESCE(SUM(usd), 0) FROM charges "
            "WHERE guild_id = ? AND state != 'released' AND created_at >= ? AND created_at < ?",
            (guild_id, month.start.isoformat(), month.end.isoformat()),
        )
    ).fetchone()
    images, spend = (int(row[0]), float(row[1])) if row else (0, 0.0)
    return quotas.check_budget(
        admission.budget,
        images,
        spend,
        admission.images,
        admission.usd,
        windows=admission.windows,
        backend=backend,
    )


async def _usage(db: aiosqlite.Connection, guild_id: int, user_id: int, windows: Windows) -> QuotaUsage:
    totals = []
    for window in (windows.day, windows.week):
        row = await (
            await db.execute(
                "SELECT COALESCE(SUM(cost), 0) FROM charges WHERE guild_id = ? AND user_id = ? "
                "AND state != 'released' AND created_at >= ? AND created_at < ?",
                (guild_id, user_id, window.start.isoformat(), window.end.isoformat()),
            )
        ).fetchone()
        totals.append(int(row[0]) if row else 0)
    return QuotaUsage(day=totals[0], week=totals[1])


async def _turns(db: aiosqlite.Connection, backend: str) -> dict[tuple[int, int], int]:
    cur = await db.execute("SELECT guild_id, user_id, last_turn FROM turns WHERE backend = ?", (backend,))
    return {(int(r[0]), int(r[1])): int(r[2]) for r in await cur.fetchall()}


async def _transition(
    db: aiosqlite.Connection, job_id: int, to: JobStatus, assignments: str = "", args: tuple[Any, ...] = ()
) -> None:
    allowed = [s.value for s, targets in TRANSITIONS.items() if to in targets]
    sets = f"status = ?, updated_at = ?{', ' + assignments if assignments else ''}"
    cur = await db.execute(
        f"UPDATE jobs SET {sets} WHERE id = ? AND status IN ({','.join('?' * len(allowed))})",
        (to.value, utcnow().isoformat(), *args, job_id, *allowed),
    )
    if cur.rowcount != 1:
        current = await _get(db, job_id)
        raise NotAllowed(f"Job #{job_id} is {current.status.value} and cannot become {to.value}.")
    # Charged on success only: a posted result settles the reservation, an ending releases it.
    if to is JobStatus.POSTED:
        await db.execute("UPDATE charges SET state = 'settled' WHERE job_id = ?", (job_id,))
    elif to in (JobStatus.FAILED, JobStatus.CANCELLED):
        await db.execute("UPDATE charges SET state = 'released' WHERE job_id = ?", (job_id,))
    log.info("job %d -> %s", job_id, to.value)


async def _get(db: aiosqlite.Connection, job_id: int) -> Job:
    row = await (await db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))).fetchone()
    if row is None:
        raise NotFound(f"Job #{job_id} does not exist.")
    return _job_from_row(row)


async def _find(db: aiosqlite.Connection, job_id: int, guild_id: int) -> Job:
    job = await _get(db, job_id)
    if job.guild_id != guild_id:
        # Another guild's job is reported exactly like a missing one: ids reveal nothing.
        raise NotFound(f"Job #{job_id} does not exist.")
    return job


def _job_from_row(row: sqlite3.Row | aiosqlite.Row) -> Job:
    """Turn a ``jobs`` row into a Job: the one place that knows the column layout."""
    interaction = None
    if row["token"] is not None:
        interaction = Interaction(
            application_id=int(row["app_id"]),
            token=str(row["token"]),
            created_at=datetime.fromisoformat(row["token_created_at"]),
            message_id=row["status_message_id"],
        )
    usage = Usage(**json.loads(row["usage"])) if row["usage"] else None
    return Job(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        channel_id=int(row["channel_id"]),
        user_id=int(row["user_id"]),
        kind=JobKind(row["kind"]),
        backend=str(row["backend"]),
        status=JobStatus(row["status"]),
        params=JobParams(**json.loads(row["params"])),
        created_at=datetime.fromisoformat(row["created_at"]),
        interaction=interaction,
        parent_id=row["parent_id"],
        parent_index=row["parent_index"],
        upload_limit=int(row["upload_limit"]),
        images=tuple(json.loads(row["images"])),
        source_path=row["source_path"],
        made_by=str(row["made_by"]),
        usage=usage,
        error=str(row["error"]),
        message_id=row["message_id"],
        posted_channel_id=row["posted_channel_id"],
        cancel_requested=bool(row["cancel_requested"]),
        attempts=int(row["attempts"]),
    )


# -- challenges: helpers -------------------------------------------------------------------------

RUNNING_PHASES = (Phase.SUBMISSIONS.value, Phase.VOTING.value)
VALID_ENTRY = "e.withdrawn_at IS NULL AND e.disqualified = 0"  # on ``entries e``: the entry still competes


def _iso(moment: datetime) -> str:
    # Stored in UTC, so the text sorts in time order whatever zone the caller used.
    return moment.astimezone(UTC).isoformat()


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def _latest_season(db: aiosqlite.Connection, guild_id: int) -> int | None:
    row = await (
        await db.execute(
            "SELECT id FROM seasons WHERE guild_id = ? ORDER BY number DESC LIMIT 1", (guild_id,)
        )
    ).fetchone()
    return None if row is None else int(row[0])


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
        raise NotFound(f"Challenge #{challenge_id} does not exist.")
    return _challenge_from_row(row)


async def _find_challenge(db: aiosqlite.Connection, challenge_id: int, guild_id: int) -> Challenge:
    challenge = await _get_challenge(db, challenge_id)
    if challenge.guild_id != guild_id:
        # Another guild's challenge is reported exactly like a missing one.
        raise NotFound(f"Challenge #{challenge_id} does not exist.")
    return challenge


async def _set_phase(db: aiosqlite.Connection, challenge: Challenge, to: Phase) -> Challenge:
    try:
        moved = advance(challenge, to)
    except ValueError:
        raise NotAllowed(
            f"Challenge #{challenge.id} is {challenge.phase.value} and cannot become {to.value}."
        ) from None
    await db.execute("UPDATE challenges SET phase = ? WHERE id = ?", (to.value, challenge.id))
    log.info("challenge %d -> %s", challenge.id, to.value)
    return moved


async def _finish(db: aiosqlite.Connection, challenge: Challenge) -> list[Ranked]:
    """Move ``challenge`` to finished and write its season points; return the standings."""
    await _set_phase(db, challenge, Phase.FINISHED)
    ranked = tally(await _entries(db, challenge.id), await _counting_votes(db, challenge.id))
    won = winner(ranked)
    # OR IGNORE: keyed by (challenge, member), so a retry can never count anyone twice.
    await db.executemany(
        "INSERT OR IGNORE INTO season_points (season_id, guild_id, user_id, challenge_id, points, won) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (challenge.season_id, challenge.guild_id, user_id, challenge.id, gained, int(user_id == won))
            for user_id, gained in points(ranked).items()
        ],
    )
    log.info("challenge %d: %d entries ranked, winner %s", challenge.id, len(ranked), won)
    return ranked


async def _valid_entry_count(db: aiosqlite.Connection, challenge_id: int) -> int:
    row = await (
        await db.execute(
            f"SELECT COUNT(*) FROM entries e WHERE e.challenge_id = ? AND {VALID_ENTRY}", (challenge_id,)
        )
    ).fetchone()
    return int(row[0]) if row else 0


async def _submitted_image(
    db: aiosqlite.Connection, job_id: int, image_index: int, guild_id: int
) -> SubmittedImage | None:
    """Read an image's provenance from the jobs table; None for a missing job or another guild's."""
    row = await (await db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))).fetchone()
    if row is None:
        return None
    job = _job_from_row(row)
    if job.guild_id != guild_id:
        return None
    return SubmittedImage(
        job_id=job.id,
        guild_id=job.guild_id,
        channel_id=job.posted_in,
        user_id=job.user_id,
        status_posted=job.status is JobStatus.POSTED,
        image_count=len(job.images),
        image_index=image_index,
    )


async def _get_entry(db: aiosqlite.Connection, entry_id: int) -> Entry:
    row = await (await db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,))).fetchone()
    if row is None:
        raise NotFound(f"Entry #{entry_id} does not exist.")
    return _entry_from_row(row)


async def _find_entry(db: aiosqlite.Connection, entry_id: int, guild_id: int) -> tuple[Entry, Challenge]:
    entry = await _get_entry(db, entry_id)
    challenge = await _get_challenge(db, entry.challenge_id)
    if challenge.guild_id != guild_id:
        raise NotFound(f"Entry #{entry_id} does not exist.")
    return entry, challenge


async def _entries(db: aiosqlite.Connection, challenge_id: int) -> list[Entry]:
    cur = await db.execute("SELECT * FROM entries WHERE challenge_id = ? ORDER BY id", (challenge_id,))
    return [_entry_from_row(r) for r in await cur.fetchall()]


async def _counting_votes(db: aiosqlite.Connection, challenge_id: int) -> list[Vote]:
    cur = await db.execute(
        f"SELECT v.* FROM votes v JOIN entries e ON e.id = v.entry_id "
        f"WHERE e.challenge_id = ? AND {VALID_ENTRY} ORDER BY v.at, v.entry_id, v.voter_id",
        (challenge_id,),
    )
    return [_vote_from_row(r) for r in await cur.fetchall()]


def _challenge_from_row(row: sqlite3.Row | aiosqlite.Row) -> Challenge:
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
    )


def _entry_from_row(row: sqlite3.Row | aiosqlite.Row) -> Entry:
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


def _vote_from_row(row: sqlite3.Row | aiosqlite.Row) -> Vote:
    """Turn a ``votes`` row into a Vote."""
    return Vote(
        entry_id=int(row["entry_id"]), voter_id=int(row["voter_id"]), at=datetime.fromisoformat(row["at"])
    )
