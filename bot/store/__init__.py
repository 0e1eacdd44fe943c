"""The only package that speaks SQL: one aiosqlite connection, split by feature.

``connection`` owns the connection, its write lock, migrations and transactions; ``jobs``,
``charges``, ``challenges`` and ``preferences`` each own their tables and turn rows into values;
``members`` reads and removes what Easel keeps about a member or a server across them. The store
holds no domain rules and no member-facing text: services load, decide and write inside
``Store.transaction()``, and turn the store's typed errors (``bot.store.errors``) into the
``EaselError`` a member reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.store.challenges import ChallengeStore
from bot.store.charges import ChargeStore
from bot.store.connection import Database
from bot.store.errors import RowMissing, StoreError, TransitionRefused
from bot.store.jobs import JobStore
from bot.store.members import MemberStore
from bot.store.preferences import PreferenceStore

__all__ = [
    "ChallengeStore",
    "ChargeStore",
    "JobStore",
    "MemberStore",
    "PreferenceStore",
    "RowMissing",
    "Store",
    "StoreError",
    "TransitionRefused",
]


class Store:
    """Durable state of Easel: ``jobs``, ``charges``, ``challenges``, ``preferences``, ``members``; one connection, one lock."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self.jobs = JobStore(database)
        self.charges = ChargeStore(database)
        self.challenges = ChallengeStore(database)
        self.preferences = PreferenceStore(database)
        self.members = MemberStore(database)

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Store]:
        """Open (creating if needed) the database at ``path``, apply migrations, and close it on exit."""
        async with Database.open(path) as database:
            yield cls(database)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Run the block as one transaction: every store call in it joins, a raise rolls all of it back.

        Services load, apply their rule and write inside one, so requests racing each other
        cannot both pass a check. Keep the block to store calls and pure rules: it holds the
        one write lock, so awaiting Discord or a renderer inside it stalls every writer.
        """
        async with self._db.transaction():
            yield

    async def check_writable(self) -> None:
        """Commit a write that changes nothing, raising what a real write would: the health check."""
        await self._db.check_writable()
