"""Small builders for test values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bot.challenges import Challenge, Entry, Ranked
from bot.jobs import Interaction, JobKind, JobParams, NewJob


def new_job(
    guild: int = 1,
    user: int = 10,
    *,
    prompt: str = "a lighthouse at dusk",
    backend: str = "test",
    count: int = 1,
    interaction: Interaction | None = None,
) -> NewJob:
    """Return an /imagine job for ``user`` in ``guild``."""
    return NewJob(
        guild_id=guild,
        channel_id=guild * 100,
        user_id=user,
        kind=JobKind.IMAGINE,
        backend=backend,
        params=JobParams(prompt=prompt, width=64, height=64, count=count),
        interaction=interaction
        or Interaction(
            application_id=5, token=f"tok-{guild}-{user}", created_at=datetime.now(UTC), message_id=None
        ),
    )


class Clock:
    """A clock tests set by hand, for services that take ``clock=``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class SilentBoard:
    """A challenge board that posts nothing, for tests that drive the phases themselves."""

    async def announce(self, challenge: Challenge) -> int:
        return 1

    async def show_entry(self, challenge: Challenge, entry: Entry, number: int) -> int:
        return 1

    async def announce_results(self, challenge: Challenge, ranked: Sequence[Ranked]) -> int:
        return 1

    async def update_announcement(self, challenge: Challenge) -> None:
        return None
