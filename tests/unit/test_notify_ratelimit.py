"""The per-route token bucket, and the retry policy's backoff and Retry-After reading."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.notify.ratelimit import TokenBucket
from churnwatch.notify.retry import backoff_delay, retry_after_seconds, verdict

T0 = 1_700_000_000.0


def test_a_full_bucket_grants_the_burst_at_once_then_makes_callers_wait() -> None:
    bucket = TokenBucket.per_minute(60, burst=3, now=T0)  # one token a second

    waits = [bucket.reserve(T0, max_wait=10) for _ in range(5)]

    assert waits == [0.0, 0.0, 0.0, pytest.approx(1.0), pytest.approx(2.0)]


def test_a_wait_beyond_the_bound_takes_nothing() -> None:
    bucket = TokenBucket.per_minute(60, burst=1, now=T0)

    assert bucket.reserve(T0, max_wait=0) == 0.0
    assert bucket.reserve(T0, max_wait=0.5) is None
    assert bucket.reserve(T0, max_wait=0.5) is None  # the refusals did not queue anything
    assert bucket.reserve(T0 + 0.75, max_wait=0.5) == pytest.approx(0.25)


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket.per_minute(30, burst=2, now=T0)  # one token per two seconds
    bucket.reserve(T0, 0)
    bucket.reserve(T0, 0)

    assert bucket.available(T0 + 1) == pytest.approx(0.5)
    assert bucket.available(T0 + 3600) == 2.0


def test_a_clock_stepping_back_adds_no_tokens() -> None:
    bucket = TokenBucket.per_minute(60, burst=1, now=T0)
    bucket.reserve(T0, 0)

    assert bucket.reserve(T0 - 100, max_wait=0) is None
    assert bucket.available(T0) == pytest.approx(0.0)


def test_invalid_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(0, 1, T0)
    with pytest.raises(ValueError, match="burst of at least 1"):
        TokenBucket(1, 0, T0)


@given(
    per_minute=st.floats(0.5, 600),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 30), min_size=1, max_size=200),
    max_wait=st.floats(0, 60),
)
def test_no_more_than_burst_plus_rate_times_elapsed_are_ever_sent(
    per_minute: float, burst: int, gaps: list[float], max_wait: float
) -> None:
    """Sends happen at `now + wait`; in any span from the start they stay within the budget."""
    bucket = TokenBucket.per_minute(per_minute, burst, T0)
    now = T0
    sends: list[float] = []
    for gap in gaps:
        now += gap
        wait = bucket.reserve(now, max_wait)
        if wait is not None:
            assert 0 <= wait <= max_wait
            sends.append(now + wait)
    rate = per_minute / 60
    for n, at in enumerate(sorted(sends), start=1):
        assert n <= burst + rate * (at - T0) + 1e-6


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "sent"),
        (202, "sent"),
        (204, "sent"),
        (None, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (301, "final"),
        (400, "final"),
        (403, "final"),
        (404, "final"),
        (410, "final"),
    ],
)
def test_verdict(status: int | None, expected: str) -> None:
    assert verdict(status) == expected


@given(
    retry=st.integers(1, 40),
    base=st.floats(0.001, 10),
    cap=st.floats(0.001, 300),
    jitter=st.floats(0, 1, exclude_max=True),
)
def test_backoff_doubles_within_the_cap_and_keeps_half_its_step(
    retry: int, base: float, cap: float, jitter: float
) -> None:
    step = min(cap, base * 2 ** (retry - 1))

    delay = backoff_delay(retry, base, cap, jitter)

    assert step / 2 <= delay <= step
    assert delay <= cap
    assert math.isfinite(delay)


def test_backoff_grows_per_retry() -> None:
    assert [backoff_delay(n, 1.0, 30.0, 0.0) for n in range(1, 8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        15.0,
        15.0,
    ]


NOW = datetime(2024, 3, 12, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Tue, 12 Mar 2024 10:00:30 GMT", 30.0),
        ("Tue, 12 Mar 2024 09:00:00 GMT", 0.0),  # in the past: no wait
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds
