"""Members' own defaults (/prefer) and their job history (/history). No Discord objects here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import InvalidInput, NotFound
from bot.jobs import Job

if TYPE_CHECKING:  # bot.store imports the Preferences value from here
    from bot.store import Store

HISTORY_PAGE = 10
SEARCH_MAX = 100


@dataclass(frozen=True)
class Preferences:
    """A member's defaults in one server; None (or empty) leaves the server's or backend's default."""

    aspect: str | None = None
    quality: str | None = None
    count: int | None = None
    negative: str = ""
    private: bool = False
    remix: bool = False

    @property
    def empty(self) -> bool:
        """Whether nothing is set."""
        return self == Preferences()


@dataclass(frozen=True)
class HistoryPage:
    """One page of a member's jobs, newest first, and the page rows its buttons lead to."""

    jobs: tuple[Job, ...]
    search: str
    page: int  # 0-based
    pages: int
    previous: int | None  # id of the stored page row behind Previous, None on the first page
    next: int | None


class MemberPreferences:
    """Reads and changes members' preferences, and pages through their jobs."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, guild_id: int, user_id: int) -> Preferences:
        """Return the member's preferences in this server (all unset when they have none)."""
        return await self._store.preferences.get(guild_id, user_id) or Preferences()

    async def update(
        self,
        guild_id: int,
        user_id: int,
        *,
        aspect: str | None = None,
        quality: str | None = None,
        count: int | None = None,
        negative: str | None = None,
        private: bool | None = None,
        remix: bool | None = None,
    ) -> Preferences:
        """Set the given preferences, leaving the others (those passed as None) as they were."""
        if count is not None and not 1 <= count <= 4:
            raise InvalidInput("count must be between 1 and 4.")
        async with self._store.transaction():
            prefs = await self.get(guild_id, user_id)
            prefs = Preferences(
                aspect=prefs.aspect if aspect is None else aspect,
                quality=prefs.quality if quality is None else quality,
                count=prefs.count if count is None else count,
                negative=prefs.negative if negative is None else " ".join(negative.split()),
                private=prefs.private if private is None else private,
                remix=prefs.remix if remix is None else remix,
            )
            await self._store.preferences.save(guild_id, user_id, prefs)
        return prefs

    async def clear(self, guild_id: int, user_id: int) -> None:
        """Forget the member's preferences in this server."""
        await self._store.preferences.clear(guild_id, user_id)

    async def history(self, guild_id: int, user_id: int, search: str = "") -> HistoryPage:
        """Return the first page of the member's jobs here whose prompt contains ``search``."""
        search = " ".join(search.split())
        if len(search) > SEARCH_MAX:
            raise InvalidInput(f"The search is {len(search)} characters long; shorten it to {SEARCH_MAX}.")
        return await self._page(guild_id, user_id, search, 0)

    async def history_page(self, guild_id: int, user_id: int, page_id: int) -> HistoryPage:
        """Return the page a Previous/Next button leads to; only its member may turn it."""
        row = await self._store.preferences.history_page(page_id)
        if row is None or row[:2] != (guild_id, user_id):
            raise NotFound("That history page is not yours. Run /history to see your own.")
        return await self._page(guild_id, user_id, row[2], row[3])

    async def _page(self, guild_id: int, user_id: int, search: str, page: int) -> HistoryPage:
        store = self._store.preferences
        async with self._store.transaction():
            total = await store.count_jobs(guild_id, user_id, search)
            pages = max(1, -(-total // HISTORY_PAGE))
            page = min(page, pages - 1)
            jobs = await store.jobs(guild_id, user_id, search, page * HISTORY_PAGE, HISTORY_PAGE)
            previous = await store.add_history_page(guild_id, user_id, search, page - 1) if page else None
            following = (
                await store.add_history_page(guild_id, user_id, search, page + 1)
                if page + 1 < pages
                else None
            )
        return HistoryPage(tuple(jobs), search, page, pages, previous, following)
