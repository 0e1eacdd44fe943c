"""The only module that speaks SQL: one long-lived aiosqlite connection in WAL mode."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from bot import quotas
from bot.errors import LimitReached, NotAllowed, NotFound
from bot.fairness import fair_order
from bot.jobs import (
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
        path.parent.mkdir(parents=True, exist_ok=True)
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
            cur = await db.execute(
                "SELECT id, guild_id, user_id FROM jobs WHERE status = 'queued' AND backend = ? ORDER BY id",
                (backend,),
            )
            rows = [(int(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
            if not rows:
                return []
            turns = await _turns(db, backend)
            order = fair_order(rows, turns)
            taken = [await _get(db, order[0])]
            if joins is not None:
                # Only a batching backend needs the candidates' parameters.
                cur = await db.execute(
                    "SELECT * FROM jobs WHERE status = 'queued' AND backend = ?", (backend,)
                )
                queued = {job.id: job for job in map(_job_from_row, await cur.fetchall())}
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
                "message_id = ?, posted_channel_id = ?",
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
            await db.execute("UPDATE jobs SET message_id = ? WHERE id = ?", (message_id, job_id))

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
