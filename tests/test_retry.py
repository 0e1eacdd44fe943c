"""The one retry policy: what it retries, how long it waits, and what it logs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from bot.errors import ContentRefused, RenderFailed
from bot.retry import RetryPolicy, with_retries


class FakeSleep:
    """Records requested sleeps instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def failing(
    errors: list[BaseException], result: str = "ok"
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """Return an op that raises ``errors`` in turn, then returns ``result``; and its call counter."""
    calls = [0]

    async def op() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return result

    return op, calls


def busy(retry_after: float | None = None) -> RenderFailed:
    return RenderFailed("busy", retryable=True, retry_after=retry_after)


async def test_success_first_time_does_not_sleep() -> None:
    sleep = FakeSleep()
    op, calls = failing([])
    assert await with_retries(op, attempts=3, base_delay=1, max_delay=10, sleep=sleep) == "ok"
    assert calls[0] == 1
    assert sleep.delays == []


async def test_retryable_failure_is_retried_until_success() -> None:
    sleep = FakeSleep()
    op, calls = failing([busy(), busy()])
    assert await with_retries(op, attempts=3, base_delay=1, max_delay=10, sleep=sleep) == "ok"
    assert calls[0] == 3
    assert len(sleep.delays) == 2


async def test_delays_grow_exponentially_and_are_capped() -> None:
    sleep = FakeSleep()
    op, _ = failing([busy() for _ in range(5)])
    await with_retries(op, attempts=6, base_delay=1, max_delay=5, sleep=sleep, jitter=lambda: 1.0)
    assert sleep.delays == [1, 2, 4, 5, 5]


async def test_full_jitter_scales_the_backoff() -> None:
    sleep = FakeSleep()
    op, _ = failing([busy(), busy(), busy()])
    await with_retries(op, attempts=4, base_delay=2, max_delay=100, sleep=sleep, jitter=lambda: 0.25)
    assert sleep.delays == [0.5, 1.0, 2.0]


async def test_random_jitter_stays_within_the_cap() -> None:
    sleep = FakeSleep()
    op, _ = failing([busy() for _ in range(8)])
    await with_retries(op, attempts=9, base_delay=1, max_delay=3, sleep=sleep)
    caps = [min(3, 2**k) for k in range(8)]
    assert all(0 <= d <= cap for d, cap in zip(sleep.delays, caps, strict=True))


@pytest.mark.parametrize(("retry_after", "expected"), [(0.0, 0.0), (7.0, 7.0), (100.0, 10.0)])
async def test_retry_after_is_honoured_and_capped(retry_after: float, expected: float) -> None:
    sleep = FakeSleep()
    op, _ = failing([busy(retry_after)])
    await with_retries(op, attempts=2, base_delay=1, max_delay=10, sleep=sleep, jitter=lambda: 1.0)
    assert sleep.delays == [expected]


@pytest.mark.parametrize(
    "error",
    [RenderFailed("bad prompt"), ContentRefused("refused"), ValueError("bug")],
    ids=["not-retryable", "content-refused", "other-exception"],
)
async def test_non_retryable_errors_raise_at_once(error: Exception) -> None:
    sleep = FakeSleep()
    op, calls = failing([error])
    with pytest.raises(type(error)) as caught:
        await with_retries(op, attempts=5, base_delay=1, max_delay=10, sleep=sleep)
    assert caught.value is error
    assert calls[0] == 1
    assert sleep.delays == []


async def test_exhausted_attempts_raise_the_last_error() -> None:
    sleep = FakeSleep()
    last = busy()
    op, calls = failing([busy(), busy(), last])
    with pytest.raises(RenderFailed) as caught:
        await with_retries(op, attempts=3, base_delay=1, max_delay=10, sleep=sleep)
    assert caught.value is last
    assert calls[0] == 3
    assert len(sleep.delays) == 2


async def test_one_log_line_per_retry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.retry")
    op, _ = failing([busy(), busy()])
    await with_retries(op, attempts=3, base_delay=0, max_delay=0, sleep=FakeSleep())
    records = [r for r in caplog.records if r.name == "bot.retry"]
    assert len(records) == 2
    assert all(r.args for r in records), "log arguments must be passed lazily"
    assert "attempt 1/3" in records[0].getMessage()
    assert "busy" in records[0].getMessage()


async def test_policy_run_uses_its_settings() -> None:
    sleep = FakeSleep()
    policy = RetryPolicy(attempts=2, base_delay=3, max_delay=4)
    op, calls = failing([busy(), busy()])
    with pytest.raises(RenderFailed):
        await policy.run(op, sleep=sleep, jitter=lambda: 1.0)
    assert calls[0] == 2
    assert sleep.delays == [3]


async def test_default_sleep_is_real_but_short() -> None:
    op, calls = failing([busy()])
    assert await RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001).run(op) == "ok"
    assert calls[0] == 2


@pytest.mark.parametrize("attempts", [0, -1])
async def test_attempts_must_be_positive(attempts: int) -> None:
    op, _ = failing([])
    with pytest.raises(ValueError, match="attempts"):
        await with_retries(op, attempts=attempts, base_delay=1, max_delay=1)
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=attempts)
