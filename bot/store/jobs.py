"""Job rows: writing, moving through the state machine, claiming in fair order, recovering."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from bot.jobs import (
    INTERACTION_TOKEN_TTL,
    TRANSITIONS,
    Interaction,
    Job,
    JobKind,
    JobParams,
    JobStatus,
    NewJob,
    new_public_id,
    utcnow,
)
from bot.renderers.base import Usage
from bot.store.connection import Database
from bot.store.errors import RowMissing, TransitionRefused

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
CANCEL_NOTE = "error = 'Cancelled by the member.'"  # the assignment every cancellation makes


class JobStore:
    """The ``jobs`` table (and the ``turns`` of the fair order); each method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- accepting -------------------------------------------------------------------------------

    async def add_queued(self, new: NewJob, *, source_path: str | None = None) -> Job:
        """Write a job waiting to be rendered."""
        async with self._db.transaction() as db:
            job = await _insert_job(db, new, JobStatus.QUEUED, source_path=source_path, images=())
            log.info(
                "job %d -> queued (%s on %s, guild %d)", job.id, new.kind.value, new.backend, new.guild_id
            )
            return job

    async def add_rendered(self, new: NewJob, images: tuple[str, ...], made_by: str) -> Job:
        """Write a job that needs no rendering (a U-pick of an existing image), ready to deliver."""
        async with self._db.transaction() as db:
            job = await _insert_job(
                db, new, JobStatus.RENDERED, source_path=None, images=images, made_by=made_by
            )
            log.info(
                "job %d -> rendered (%s of job %s, guild %d)",
                job.id,
                new.kind.value,
                new.parent_id,
                new.guild_id,
            )
            return job

    async def last_request_at(self, guild_id: int, user_id: int) -> datetime | None:
        """When the member last asked for a render in this guild (picks render nothing and do not count)."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT MAX(created_at) FROM jobs WHERE guild_id = ? AND user_id = ? AND kind != 'pick'",
                (guild_id, user_id),
            )
        row = next(iter(rows), None)
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    # -- scheduling ------------------------------------------------------------------------------

    async def start(
        self, backend: str, job_ids: Sequence[int], turns: Iterable[tuple[int, int, int]]
    ) -> list[Job]:
        """Move the jobs the scheduler picked to running and record the turns they took.

        ``turns`` are (guild, member, turn) rows, member 0 being the guild's own turn.
        """
        async with self._db.transaction() as db:
            await db.executemany(
                """
                INSERT INTO turns (backend, guild_id, user_id, last_turn) VALUES (?, ?, ?, ?)
                ON CONFLICT (backend, guild_id, user_id) DO UPDATE SET last_turn = excluded.last_turn
                """,
                [(backend, guild, member, turn) for guild, member, turn in turns],
            )
            return [
                await _transition(db, job_id, JobStatus.RUNNING, "attempts = attempts + 1")
                for job_id in job_ids
            ]

    async def turns(self) -> dict[str, dict[tuple[int, int], int]]:
        """Return every backend's turns: (guild, 0) and (guild, member) to the turn last served."""
        async with self._db.read() as db:
            cur = await db.execute("SELECT backend, guild_id, user_id, last_turn FROM turns")
            turns: dict[str, dict[tuple[int, int], int]] = {}
            for r in await cur.fetchall():
                turns.setdefault(str(r[0]), {})[(int(r[1]), int(r[2]))] = int(r[3])
            return turns

    # -- finishing -------------------------------------------------------------------------------

    async def mark_rendered(
        self,
        job_id: int,
        images: tuple[str, ...],
        made_by: str,
        usage: Usage | None,
        *,
        flagged: bool = False,
    ) -> Job:
        """Record a finished render and where its images are; a job cancelled meanwhile becomes cancelled.

        ``flagged`` (the safety checker's verdict) is stored in the same step as the images, so no
        restart can leave them shown without it; a job made from a flagged image stays flagged.
        """
        async with self._db.transaction() as db:
            job = await _get(db, job_id)
            if job.cancel_requested:
                return await _transition(db, job_id, JobStatus.CANCELLED, CANCEL_NOTE)
            return await _transition(
                db,
                job_id,
                JobStatus.RENDERED,
                "images = ?, made_by = ?, usage = ?, flagged = MAX(flagged, ?)",
                (json.dumps(images), made_by, json.dumps(asdict(usage)) if usage else None, int(flagged)),
            )

    async def mark_posted(self, job_id: int, message_id: int, channel_id: int) -> Job:
        """Record the message that shows a job's result: after this it is never posted again."""
        async with self._db.transaction() as db:
            return await _transition(
                db,
                job_id,
                JobStatus.POSTED,
                "message_id = ?, posted_channel_id = ?, token = NULL",
                (message_id, channel_id),
            )

    async def mark_failed(self, job_id: int, error: str) -> Job:
        """End a job with a member-readable reason; nothing is charged for it."""
        async with self._db.transaction() as db:
            return await _transition(db, job_id, JobStatus.FAILED, "error = ?", (error,))

    async def mark_cancelled(self, job_id: int) -> Job:
        """End a job the member cancelled; nothing is charged for it."""
        async with self._db.transaction() as db:
            return await _transition(db, job_id, JobStatus.CANCELLED, CANCEL_NOTE)

    async def request_cancel(self, job_id: int) -> Job:
        """Ask a running job to stop: its result is discarded when it comes (see ``mark_rendered``)."""
        async with self._db.transaction() as db:
            cur = await db.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,)
            )
            if cur.rowcount != 1:
                current = await _get(db, job_id)
                raise TransitionRefused(job_id, current.status.value, "cancel-requested")
            return await _get(db, job_id)

    async def set_message(self, job_id: int, message_id: int) -> None:
        """Record the message that told the member how a job ended (0: it could not be posted)."""
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE jobs SET message_id = ?, token = NULL WHERE id = ?", (message_id, job_id)
            )

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return a job by id, or raise RowMissing."""
        async with self._db.read() as db:
            return await _get(db, job_id)

    async def find(self, job_id: int, guild_id: int) -> Job:
        """Return a job of this guild; another guild's job raises RowMissing exactly like a missing one."""
        async with self._db.read() as db:
            job = await _get(db, job_id)
        if job.guild_id != guild_id:
            raise RowMissing("job", job_id)
        return job

    async def by_message(self, guild_id: int, message_id: int) -> Job | None:
        """Return the job whose result is the message ``message_id`` in this guild, if there is one."""
        async with self._db.read() as db:
            row = await (
                await db.execute(
                    "SELECT * FROM jobs WHERE guild_id = ? AND message_id = ?", (guild_id, message_id)
                )
            ).fetchone()
        return None if row is None else job_from_row(row)

    async def jobs_with_status(self, *statuses: JobStatus) -> list[Job]:
        """Return jobs in any of these states, oldest first."""
        marks = ",".join("?" * len(statuses))
        async with self._db.read() as db:
            cur = await db.execute(
                f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY id", [s.value for s in statuses]
            )
            return [job_from_row(r) for r in await cur.fetchall()]

    async def active_jobs(self, guild_id: int) -> list[Job]:
        """Return a guild's queued and running jobs, oldest first."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT * FROM jobs WHERE guild_id = ? AND status IN (?, ?) ORDER BY id", (guild_id, *ACTIVE)
            )
            return [job_from_row(r) for r in await cur.fetchall()]

    async def backend_load(self) -> dict[str, tuple[int, int]]:
        """Return (queued, running) job counts per backend, across all guilds."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT backend, SUM(status = 'queued'), SUM(status = 'running') FROM jobs "
                "WHERE status IN (?, ?) GROUP BY backend",
                ACTIVE,
            )
            return {str(r[0]): (int(r[1]), int(r[2])) for r in await cur.fetchall()}

    # -- privacy: public ids, deletions, flags ---------------------------------------------------

    async def by_public_id(self, guild_id: int, public_id: str) -> Job | None:
        """Return the job of this guild with this public id, if there is one (another guild's is not)."""
        async with self._db.read() as db:
            row = await (
                await db.execute(
                    "SELECT * FROM jobs WHERE public_id = ? AND guild_id = ?", (public_id, guild_id)
                )
            ).fetchone()
        return None if row is None else job_from_row(row)

    async def mark_deleted(self, job_id: int, when: datetime) -> Job:
        """Record that a job's result was deleted on Discord (the first deletion's time stays)."""
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE jobs SET deleted_at = COALESCE(deleted_at, ?) WHERE id = ?",
                (when.astimezone(UTC).isoformat(), job_id),
            )
            log.info("job %d: result deleted", job_id)
            return await _get(db, job_id)

    # -- security: interaction tokens ------------------------------------------------------------
    # A token lets its holder post as Easel in the job's channel for 15 minutes. mark_posted and
    # set_message drop it once the job's outcome is shown; this sweeps the rest at start.

    async def clear_expired_tokens(self, now: datetime) -> int:
        """Forget interaction tokens past Discord's 15 minutes or of jobs already answered; return how many."""
        async with self._db.transaction() as db:
            cur = await db.execute(
                "UPDATE jobs SET token = NULL WHERE token IS NOT NULL AND "
                "(julianday(token_created_at) <= julianday(?) OR status = 'posted' OR message_id IS NOT NULL)",
                ((now - INTERACTION_TOKEN_TTL).isoformat(),),
            )
            return cur.rowcount

    # -- recovering ------------------------------------------------------------------------------

    async def requeue_interrupted(self) -> None:
        """Return renders a restart interrupted to the queue (or end them, if their member cancelled)."""
        async with self._db.transaction() as db:
            cur = await db.execute(
                "SELECT id, cancel_requested FROM jobs WHERE status = 'running' ORDER BY id"
            )
            for row in await cur.fetchall():
                if row[1]:
                    await _transition(db, int(row[0]), JobStatus.CANCELLED, CANCEL_NOTE)
                else:
                    await _transition(db, int(row[0]), JobStatus.QUEUED)

    async def undelivered(self) -> list[Job]:
        """Return jobs whose result, failure or cancellation has not been posted yet."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT * FROM jobs WHERE status = 'rendered' "
                "OR (status IN ('failed', 'cancelled') AND message_id IS NULL) ORDER BY id"
            )
            return [job_from_row(r) for r in await cur.fetchall()]


async def _insert_job(
    db: aiosqlite.Connection,
    new: NewJob,
    status: JobStatus,
    *,
    source_path: str | None,
    images: Iterable[str],
    made_by: str = "",
) -> Job:
    now = utcnow().isoformat()
    it = new.interaction
    rows = await db.execute_fetchall(
        """
        INSERT INTO jobs (guild_id, channel_id, user_id, kind, backend, status, params, created_at, updated_at,
                          app_id, token, token_created_at, status_message_id, parent_id, parent_index,
                          upload_limit, images, source_path, public_id, flagged, made_by, private)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        RETURNING *
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
            new_public_id(),
            int(new.flagged),
            made_by,
            int(new.private),
        ),
    )
    [row] = rows
    return job_from_row(row)


async def _transition(
    db: aiosqlite.Connection, job_id: int, to: JobStatus, assignments: str = "", args: tuple[Any, ...] = ()
) -> Job:
    """Move a job to ``to`` if the state machine allows it, settling or releasing its charge; return it."""
    allowed = [s.value for s, targets in TRANSITIONS.items() if to in targets]
    sets = f"status = ?, updated_at = ?{', ' + assignments if assignments else ''}"
    # RETURNING gives the changed row in the same round trip: each trip through aiosqlite's
    # thread costs about 30 µs of CPU, and a job makes a dozen transitions and reads.
    rows = await db.execute_fetchall(
        f"UPDATE jobs SET {sets} WHERE id = ? AND status IN ({','.join('?' * len(allowed))}) RETURNING *",
        (to.value, utcnow().isoformat(), *args, job_id, *allowed),
    )
    row = next(iter(rows), None)
    if row is None:
        current = await _get(db, job_id)
        raise TransitionRefused(job_id, current.status.value, to.value)
    # Charged on success only: a posted result settles the reservation, an ending releases it.
    if to is JobStatus.POSTED:
        await db.execute("UPDATE charges SET state = 'settled' WHERE job_id = ?", (job_id,))
    elif to in (JobStatus.FAILED, JobStatus.CANCELLED):
        await db.execute("UPDATE charges SET state = 'released' WHERE job_id = ?", (job_id,))
    log.info("job %d -> %s", job_id, to.value)
    return job_from_row(row)


async def _get(db: aiosqlite.Connection, job_id: int) -> Job:
    row = next(iter(await db.execute_fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,))), None)
    if row is None:
        raise RowMissing("job", job_id)
    return job_from_row(row)


def job_from_row(row: sqlite3.Row | aiosqlite.Row) -> Job:
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
        public_id=str(row["public_id"]),
        deleted_at=None if row["deleted_at"] is None else datetime.fromisoformat(row["deleted_at"]),
        flagged=bool(row["flagged"]),
        private=bool(row["private"]),
    )
