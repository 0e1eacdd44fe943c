"""Charges against quotas and budgets, guild settings, and ban notices."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.jobs import Job, utcnow
from bot.quotas import Admission, Usage, Window, Windows
from bot.store.connection import Database


class ChargeStore:
    """The ``charges``, ``guild_settings`` and ``ban_notices`` tables; each method is one transaction.

    A charge is settled or released by the job transition that ends it (``bot.store.jobs``).
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- charges ---------------------------------------------------------------------------------

    async def reserve(self, job: Job, admission: Admission) -> None:
        """Reserve the quota images and budget ``admission`` prices for ``job`` until it ends."""
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO charges (job_id, guild_id, user_id, backend, cost, images, usd, state, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'reserved', ?)",
                (
                    job.id,
                    job.guild_id,
                    job.user_id,
                    job.backend,
                    admission.cost,
                    admission.images,
                    admission.usd,
                    admission.now.isoformat(),
                ),
            )

    async def settled_usd(self, job_id: int) -> float:
        """Return the estimated USD a job's settled charge counts (0 when it has none)."""
        async with self._db.read() as db:
            row = await (
                await db.execute("SELECT usd FROM charges WHERE job_id = ? AND state = 'settled'", (job_id,))
            ).fetchone()
        return float(row[0]) if row else 0.0

    async def member_usage(self, guild_id: int, user_id: int, windows: Windows) -> Usage:
        """Return the quota a member used (reserved or settled) in the current day and week."""
        day, week = windows.day, windows.week
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT COALESCE(SUM(CASE WHEN created_at >= :ds AND created_at < :de THEN cost END), 0), "
                "COALESCE(SUM(CASE WHEN created_at >= :ws AND created_at < :we THEN cost END), 0) "
                "FROM charges WHERE guild_id = :g AND user_id = :u AND state != 'released' "
                "AND created_at >= MIN(:ds, :ws) AND created_at < MAX(:de, :we)",
                {
                    "g": guild_id,
                    "u": user_id,
                    "ds": day.start.isoformat(),
                    "de": day.end.isoformat(),
                    "ws": week.start.isoformat(),
                    "we": week.end.isoformat(),
                },
            )
        [row] = rows
        return Usage(day=int(row[0]), week=int(row[1]))

    async def guild_spent(self, guild_id: int, window: Window) -> tuple[int, float]:
        """Return the images and estimated USD a guild has charged (unreleased) within ``window``."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT COALESCE(SUM(images), 0), COALESCE(SUM(usd), 0) FROM charges "
                "WHERE guild_id = ? AND state != 'released' AND created_at >= ? AND created_at < ?",
                (guild_id, window.start.isoformat(), window.end.isoformat()),
            )
        [row] = rows
        return int(row[0]), float(row[1])

    async def charges_since(
        self, guild_id: int, since: datetime
    ) -> list[tuple[datetime, int, str, int, float]]:
        """Return (created at, member, backend, images, usd) of a guild's unreleased charges since ``since``."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT created_at, user_id, backend, images, usd FROM charges "
                "WHERE guild_id = ? AND state != 'released' AND created_at >= ? ORDER BY created_at",
                (guild_id, since.isoformat()),
            )
            return [
                (datetime.fromisoformat(r[0]), int(r[1]), str(r[2]), int(r[3]), float(r[4]))
                for r in await cur.fetchall()
            ]

    # -- guild settings --------------------------------------------------------------------------

    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        """Return the settings a guild changed from their defaults, key to value."""
        async with self._db.read() as db:
            cur = await db.execute("SELECT key, value FROM guild_settings WHERE guild_id = ?", (guild_id,))
            return {str(r[0]): json.loads(r[1]) for r in await cur.fetchall()}

    async def guild_setting(self, guild_id: int, key: str, default: Any) -> Any:
        """Return one setting of a guild, or ``default`` when it was never changed."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT value FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key)
            )
        row = next(iter(rows), None)
        return json.loads(row[0]) if row else default

    async def put_guild_setting(self, guild_id: int, key: str, value: Any, *, default: Any, by: int) -> None:
        """Store one setting; storing its default deletes the row, so the guild follows later defaults."""
        async with self._db.transaction() as db:
            if value == default:
                await db.execute("DELETE FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key))
                return
            await db.execute(
                """
                INSERT INTO guild_settings (guild_id, key, value, updated_at, updated_by)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (guild_id, key) DO UPDATE SET
                    value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by
                """,
                (guild_id, key, json.dumps(value), utcnow().isoformat(), by),
            )

    # -- ban notices -----------------------------------------------------------------------------

    async def first_ban_notice(self, guild_id: int, user_id: int) -> bool:
        """Record that a banned member was told; True the first time only."""
        async with self._db.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO ban_notices (guild_id, user_id) VALUES (?, ?)", (guild_id, user_id)
            )
            return cur.rowcount == 1

    async def forget_ban_notice(self, guild_id: int, user_id: int) -> None:
        """Forget that a member was told they are banned (they were unbanned)."""
        async with self._db.transaction() as db:
            await db.execute(
                "DELETE FROM ban_notices WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
