"""The daily data sweep: per-server retention, finished deletions, and servers that removed Easel.

Everything is removed in batches inside the store (short transactions) and the image files in a
thread, so a large sweep neither stalls the event loop nor holds the write lock for long. The
clock is injected: tests move it rather than wait days.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta

from bot.files import ImageFiles
from bot.jobs import utcnow
from bot.memberdata import QUOTA_HOLD
from bot.store import Store
from bot.store.members import BATCH
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

SWEEP_EVERY = timedelta(days=1)


class Retention:
    """Runs the sweep once a day from ``start()`` until ``stop()``; ``sweep()`` runs one pass now."""

    def __init__(
        self,
        store: Store,
        files: ImageFiles,
        *,
        purge_after: timedelta,
        clock: Callable[[], datetime] = utcnow,
        every: timedelta = SWEEP_EVERY,
    ) -> None:
        self._store = store
        self._files = files
        self._purge_after = purge_after
        self._clock = clock
        self._every = every
        self._tasks = TaskGroup("retention")
        # One pass at a time: the daily one and one asked for (a test, a restart) never interleave.
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Sweep now, then once every day (call it once Discord has said which servers Easel is in)."""
        self._tasks.spawn(self._loop(), name="sweep")

    async def stop(self) -> None:
        """Stop sweeping (a pass under way is cancelled; its finished batches stay done)."""
        await self._tasks.cancel_all()

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("the data sweep failed; it runs again in %s", self._every)
            await asyncio.sleep(self._every.total_seconds())

    async def sweep(self) -> None:
        """Remove what retention, finished deletions and departed servers say is due at the clock's time."""
        async with self._lock:
            now = self._clock()
            members = self._store.members
            for guild_id, days in await members.retention_days():
                await self._retain(guild_id, now - timedelta(days=days), now, days)
            for guild_id, user_id, asked_at in await members.due_forget_requests(now - QUOTA_HOLD):
                await members.finish_forgetting(guild_id, user_id, asked_at)
            for guild_id, left_at in await members.departed():
                if left_at + self._purge_after <= now:
                    await self._purge(guild_id, left_at)

    async def _retain(self, guild_id: int, before: datetime, now: datetime, days: int) -> None:
        jobs = files = 0
        while True:
            removed = await self._store.members.scrub_older(guild_id, before, now)
            await self._files.remove_all(removed.files)
            jobs, files = jobs + removed.jobs, files + len(removed.files)
            if removed.jobs < BATCH:
                break
        if jobs:
            log.info(
                "guild %d: retention (%d days) removed the prompts and images of %d jobs (%d files)",
                guild_id,
                days,
                jobs,
                files,
            )

    async def _purge(self, guild_id: int, left_at: datetime) -> None:
        jobs = files = 0
        while True:
            removed = await self._store.members.purge_guild_batch(guild_id)
            await self._files.remove_all(removed.files)
            jobs, files = jobs + removed.jobs, files + len(removed.files)
            if not removed.jobs and not removed.entries:
                break
        await self._store.members.purge_guild_rest(guild_id)
        log.warning(
            "guild %d: removed all its data (%d jobs, %d image files): it removed Easel on %s, "
            "more than %d days ago",
            guild_id,
            jobs,
            files,
            left_at.date().isoformat(),
            self._purge_after.days,
        )

    # -- servers leaving and coming back -----------------------------------------------------------

    async def left(self, guild_ids: Iterable[int]) -> None:
        """Record that these servers removed Easel: their data goes ``purge_after`` from now."""
        now = self._clock()
        for guild_id in await self._store.members.mark_departed(guild_ids, now):
            log.warning(
                "guild %d removed Easel: its data will be removed after %s (in %d days) unless Easel "
                "is added back before",
                guild_id,
                (now + self._purge_after).date().isoformat(),
                self._purge_after.days,
            )

    async def returned(self, guild_ids: Collection[int]) -> None:
        """Keep the data of these servers: Easel is in them (again)."""
        for guild_id in await self._store.members.mark_returned(guild_ids):
            log.info("guild %d has Easel again: its data is kept", guild_id)

    async def present(self, guild_ids: Collection[int]) -> None:
        """Reconcile with the servers Easel is in now: keep theirs, schedule the others' removal."""
        await self.returned(guild_ids)
        gone = await self._store.members.guilds_with_data() - set(guild_ids)
        await self.left(sorted(gone))
