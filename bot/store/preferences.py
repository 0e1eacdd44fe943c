"""Members' preferences, their history pages, and the job lists /history reads."""

from __future__ import annotations

from bot.jobs import Job
from bot.preferences import Preferences
from bot.store.connection import Database
from bot.store.jobs import job_from_row

_SEARCH = "guild_id = ? AND user_id = ? AND json_extract(params, '$.prompt') LIKE ? ESCAPE '\\'"


def _like(search: str) -> str:
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class PreferenceStore:
    """The ``preferences`` and ``history_pages`` tables; each method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, guild_id: int, user_id: int) -> Preferences | None:
        """Return the member's stored preferences, or None."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT aspect, quality, count, negative, private, remix FROM preferences"
                " WHERE guild_id = ? AND user_id = ?",
                (guild_id, user_id),
            )
        for aspect, quality, count, negative, private, remix in rows:
            return Preferences(aspect, quality, count, str(negative), bool(private), bool(remix))
        return None

    async def save(self, guild_id: int, user_id: int, prefs: Preferences) -> None:
        """Store the member's preferences, replacing any earlier ones."""
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO preferences"
                " (guild_id, user_id, aspect, quality, count, negative, private, remix)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    guild_id,
                    user_id,
                    prefs.aspect,
                    prefs.quality,
                    prefs.count,
                    prefs.negative,
                    int(prefs.private),
                    int(prefs.remix),
                ),
            )

    async def clear(self, guild_id: int, user_id: int) -> None:
        """Remove the member's preferences."""
        async with self._db.transaction() as db:
            await db.execute(
                "DELETE FROM preferences WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )

    async def count_jobs(self, guild_id: int, user_id: int, search: str) -> int:
        """Count the member's jobs in this guild whose prompt contains ``search``."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT COUNT(*) FROM jobs WHERE {_SEARCH}", (guild_id, user_id, _like(search))
            )
        return int(next(iter(rows))[0])

    async def jobs(self, guild_id: int, user_id: int, search: str, offset: int, limit: int) -> list[Job]:
        """Return ``limit`` of the member's matching jobs, newest first, after the first ``offset``."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT * FROM jobs WHERE {_SEARCH} ORDER BY id DESC LIMIT ? OFFSET ?",
                (guild_id, user_id, _like(search), limit, offset),
            )
        return [job_from_row(row) for row in rows]

    async def add_history_page(self, guild_id: int, user_id: int, search: str, page: int) -> int:
        """Return the id of the row for a page a button leads to, recording it the first time."""
        key = (guild_id, user_id, search, page)
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO history_pages (guild_id, user_id, search, page) VALUES (?, ?, ?, ?)",
                key,
            )
            rows = await db.execute_fetchall(
                "SELECT id FROM history_pages WHERE guild_id = ? AND user_id = ? AND search = ? AND page = ?",
                key,
            )
        return int(next(iter(rows))[0])

    async def history_page(self, page_id: int) -> tuple[int, int, str, int] | None:
        """Return (guild, member, search, page) of a recorded page, or None."""
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT guild_id, user_id, search, page FROM history_pages WHERE id = ?", (page_id,)
            )
        for guild_id, user_id, search, page in rows:
            return int(guild_id), int(user_id), str(search), int(page)
        return None
