"""Small builders for test values."""

from __future__ import annotations

from datetime import UTC, datetime

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
