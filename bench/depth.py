"""The one place the depth benchmark touches the queue: open it, fill it, and the four measured calls.

When the job-lifecycle interface is renamed or reshaped, only this module changes; the
measuring code (bench/depthcost.py) sees nothing but these functions.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bot.config import QueueSettings
from bot.files import ImageFiles
from bot.jobs import Interaction, Job, JobKind, JobParams, NewJob, new_public_id
from bot.lifecycle import LocalLifecycle
from bot.renderers.base import Capabilities
from bot.store import Store

BACKEND = "local"
APP_ID = 1
# Limits the depth benchmark never reaches: it measures cost, not refusals.
UNLIMITED = QueueSettings(max_per_member=10**9, max_per_guild=10**9, max_total=10**9)
# A batching backend of up to 4 images at this size; other sizes cannot join its batches.
BATCH_SIZE = (512, 512)
OTHER_SIZE = (768, 512)
BATCHING = Capabilities(sizes=(BATCH_SIZE, OTHER_SIZE), max_batch=4)
ONE_AT_A_TIME = Capabilities(sizes=(BATCH_SIZE, OTHER_SIZE), max_batch=1)

Queue = LocalLifecycle


def new_job(guild_id: int, user_id: int, serial: int) -> NewJob:
    """Make the job a member asks for; every third one has a size that cannot join a 512×512 batch."""
    width, height = OTHER_SIZE if serial % 3 == 2 else BATCH_SIZE
    return NewJob(
        guild_id=guild_id,
        channel_id=guild_id + 1,
        user_id=user_id,
        kind=JobKind.IMAGINE,
        backend=BACKEND,
        params=JobParams(prompt=f"a fox, study {serial}", width=width, height=height, seed=serial),
        interaction=Interaction(
            application_id=APP_ID,
            token=f"token-{serial}",
            created_at=datetime.now(UTC),
            message_id=10**12 + serial,
        ),
    )


async def create(path: Path) -> None:
    """Create an empty database with today's schema (the store applies its migrations)."""
    async with Store.open(path):
        pass


def fill(path: Path, jobs: Sequence[NewJob]) -> list[int]:
    """SETUP, not measured: write ``jobs`` as queued rows in one executemany; return their ids.

    Submitting tens of thousands of jobs one transaction at a time takes minutes on today's
    store, so the rows are written directly, while no store has the file open; the queue is
    opened afterwards and finds them as it finds the jobs of a restart.
    """
    now = datetime.now(UTC).isoformat()
    rows = [
        (
            new.guild_id,
            new.channel_id,
            new.user_id,
            new.kind.value,
            new.backend,
            "queued",
            json.dumps(asdict(new.params)),
            now,
            now,
            new.interaction.application_id if new.interaction else None,
            new.interaction.token if new.interaction else None,
            new.interaction.created_at.isoformat() if new.interaction else None,
            new.interaction.message_id if new.interaction else None,
            new.upload_limit,
            new_public_id(),
        )
        for new in jobs
    ]
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        (first,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()
        db.executemany(
            """
            INSERT INTO jobs (guild_id, channel_id, user_id, kind, backend, status, params, created_at,
                              updated_at, app_id, token, token_created_at, status_message_id, upload_limit,
                              public_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            rows,
        )
        (last,) = db.execute("SELECT MAX(id) FROM jobs").fetchone()
    return list(range(int(first) + 1, int(last) + 1))


@contextlib.asynccontextmanager
async def open_queue(path: Path) -> AsyncIterator[Queue]:
    """Open the store at ``path`` and the job lifecycle over it, recovered as at the bot's start."""
    async with Store.open(path) as store:
        lifecycle = LocalLifecycle(store, ImageFiles(path.parent / "images"), UNLIMITED)
        await lifecycle.recover()  # rebuilds the in-memory fair order: start-up, not measured
        yield lifecycle


async def claim_one(queue: Queue) -> Job | None:
    """Claim the next job in fair order (a backend that renders one job at a time)."""
    jobs = await queue.claim(BACKEND, ONE_AT_A_TIME)
    return jobs[0] if jobs else None


async def claim_batch(queue: Queue) -> list[Job]:
    """Claim the next job and the compatible ones after it in fair order, up to 4 images."""
    return await queue.claim(BACKEND, BATCHING)


async def submit(queue: Queue, new: NewJob) -> Job:
    """Accept one job into the queue (no quota admission: the queue's own cost)."""
    return await queue.submit(new)


async def place(queue: Queue, backend: str, job_id: int) -> int | None:
    """Return one shown job's 1-based place in line, or None when it is no longer queued."""
    found = queue.place(job_id)
    return found[0] if found else None
