"""When to retry a webhook call and how long to wait first (pure: time and jitter passed in)."""

from __future__ import annotations

import math
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Final, Literal

Verdict = Literal["sent", "retry", "final"]

RETRYABLE_STATUSES: Final = frozenset({429})


def verdict(status: int | None) -> Verdict:
    """2xx sent; 429, 5xx and no answer (timeout, connection) retry; anything else is final."""
    if status is None or status in RETRYABLE_STATUSES or status >= 500:
        return "retry"
    if 200 <= status < 300:
        return "sent"
    return "final"


def backoff_delay(retry: int, base: float, cap: float, jitter: float) -> float:
    """Seconds before retry number `retry` (1 for the first): doubling, capped, jittered.

    `jitter` in [0, 1) picks a point in the upper half of the step ("equal jitter"): callers
    that failed together spread out, and none retries at once.
    """
    step = min(cap, base * math.pow(2.0, max(0, retry - 1)))
    return step / 2.0 + step / 2.0 * min(max(jitter, 0.0), 1.0)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header as seconds from `now` (delta-seconds or an HTTP date); None if
    absent or unreadable. A date in the past means no wait."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
