"""Small builders for test values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bot.challenges import Challenge, Entry, Ranked
from bot.jobs import Interaction, Job, JobKind, JobParams, NewJob
from bot.lifecycle import LocalLifecycle
from bot.renderers.base import Capabilities


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


ONE_AT_A_TIME = Capabilities(sizes=((64, 64),))


async def claim_one(lifecycle: LocalLifecycle, backend: str = "test") -> Job | None:
    """Claim the next job for a backend that renders one job per call."""
    jobs = await lifecycle.claim(backend, ONE_AT_A_TIME)
    return jobs[0] if jobs else None


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
