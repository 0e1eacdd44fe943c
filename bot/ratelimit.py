"""A per-member rate limit on actions: a token bucket per member, in memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Allow each key ``burst`` actions at once, then one more every ``refill_s`` seconds.

    State lives in memory: a restart forgets it, which costs at most one extra burst per member.
    """

    def __init__(self, burst: int, refill_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or refill_s <= 0:
            raise ValueError("burst must be at least 1 and refill_s greater than 0")
        self._burst = burst
        self._refill_s = refill_s
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._pruned_at = clock()

    def take(self, key: int) -> float:
        """Spend one action of ``key``; return 0 when allowed, else the seconds until one is allowed."""
        now = self._clock()
        self._prune(now)
        bucket = self._buckets.get(key)
        tokens = self._burst if bucket is None else self._level(bucket, now)
        if tokens < 1:
            return (1 - tokens) * self._refill_s
        self._buckets[key] = _Bucket(tokens - 1, now)
        return 0.0

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(float(self._burst), bucket.tokens + (now - bucket.at) / self._refill_s)

    def _prune(self, now: float) -> None:
        # A full bucket is the same as none: forgetting those keeps memory to the members active
        # within one refill of the whole burst, checked at most that often.
        if now - self._pruned_at < self._burst * self._refill_s:
            return
        self._pruned_at = now
        self._buckets = {k: b for k, b in self._buckets.items() if self._level(b, now) < self._burst}
