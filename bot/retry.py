"""The one retry policy of the project: exponential backoff with full jitter.

Renders retry a few times through ``with_retries``; the start-up (``bot/startup.py``) waits for
Discord without end, with the same ``backoff`` between attempts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.errors import RenderFailed

T = TypeVar("T")

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[object]]


def backoff(attempt: int, *, base_delay: float, max_delay: float, jitter: Callable[[], float]) -> float:
    """Return the wait before retry ``attempt`` (1-based): ``jitter()`` times a doubling, capped ceiling.

    "Full jitter": many clients that failed together do not all come back in lockstep. The
    exponent stops growing long before a float would overflow (a day of retries is ~3000 attempts).
    """
    return jitter() * min(max_delay, base_delay * 2.0 ** min(attempt - 1, 60))


async def with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    base_delay: float,
    max_delay: float,
    sleep: Sleep = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Run ``op``, retrying only ``RenderFailed(retryable=True)`` up to ``attempts`` calls in all.

    The wait before retry ``k`` (1-based) is ``jitter() * min(max_delay, base_delay * 2**(k-1))``
    ("full jitter", so many bots hitting one limit do not retry in lockstep), or the
    backend's ``retry_after`` when it gave one, capped at ``max_delay`` either way.
    Anything else (non-retryable failures, cancellation, bugs) propagates at once.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if base_delay < 0 or max_delay < 0:
        raise ValueError("delays must not be negative")
    attempt = 1
    while True:
        try:
            return await op()
        except RenderFailed as err:
            if not err.retryable or attempt >= attempts:
                raise
            if err.retry_after is not None:
                delay = min(max(err.retry_after, 0.0), max_delay)
            else:
                delay = backoff(attempt, base_delay=base_delay, max_delay=max_delay, jitter=jitter)
            log.warning("attempt %d/%d failed (%s); retrying in %.2fs", attempt, attempts, err, delay)
            await sleep(delay)
            attempt += 1


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a retryable render failure."""

    attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    async def run(
        self,
        op: Callable[[], Awaitable[T]],
        *,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> T:
        """Run ``op`` under this policy (see ``with_retries``)."""
        return await with_retries(
            op,
            attempts=self.attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            sleep=sleep,
            jitter=jitter,
        )
