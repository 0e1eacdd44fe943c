"""The one aiosqlite connection (WAL mode), the one write lock, migrations and transactions."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)


@dataclass
class _Transaction:
    database: Database
    open: bool = True


# The transaction the current task (or a task it spawned) runs in. A spawned task copies this
# variable, so the ``open`` flag, not the variable alone, says whether that transaction still runs.
_CURRENT: ContextVar[_Transaction | None] = ContextVar("easel_store_transaction", default=None)


class Database:
    """One long-lived connection; every statement runs under its lock or inside its open transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # aiosqlite serialises statements, not transactions: without this lock a statement
        # from one coroutine could land inside another's BEGIN ... COMMIT.
        self._lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Database]:
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
            database = cls(conn)
            await database._migrate()
            yield database
        finally:
            await conn.close()

    def _joined(self) -> bool:
        current = _CURRENT.get()
        return current is not None and current.open and current.database is self

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run the block as one ``BEGIN IMMEDIATE`` transaction, or inside the one already open here.

        A joined block has no savepoint: it commits or rolls back with the transaction it joined.
        """
        if self._joined():
            yield self._conn
            return
        async with self._lock:
            current = _Transaction(self)
            token = _CURRENT.set(current)
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                try:
                    await self._conn.execute("COMMIT")
                except BaseException:
                    # A COMMIT that failed (disk full, busy) may leave the transaction open; the
                    # next one must not start inside it.
                    if self._conn.in_transaction:
                        await self._conn.execute("ROLLBACK")
                    raise
            finally:
                current.open = False
                _CURRENT.reset(token)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """Give the block the connection for reads: inside the open transaction, or under the lock."""
        if self._joined():
            yield self._conn
            return
        async with self._lock:
            yield self._conn

    async def check_writable(self) -> None:
        """Commit a write that changes nothing; raise what a real write would (locked, disk full, I/O error)."""
        async with self.transaction() as conn:
            row = await (await conn.execute("PRAGMA user_version")).fetchone()
            # Setting the schema version to itself still rewrites the header page, so the commit
            # appends a frame to the WAL like any write, without a table of its own.
            await conn.execute(f"PRAGMA user_version = {int(row[0]) if row else 0}")

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
