"""Small builders for test values."""

from __future__ import annotations

from datetime import UTC, datetime

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
