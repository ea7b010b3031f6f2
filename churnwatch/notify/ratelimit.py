"""A token bucket that reserves: the caller learns how long to wait for its token, or that the
wait would be too long (and nothing is taken). Time is passed in, in seconds.

Reserving ahead lets several callers share one bucket without waking in a race: each is given
its own slot, later than the previous one's.
"""

from __future__ import annotations


class TokenBucket:
    """`burst` tokens at most, refilled at `rate_per_second`; starts full."""

    def __init__(self, rate_per_second: float, burst: int, now: float) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self._rate = rate_per_second
        self._burst = float(burst)
        self._tokens = float(burst)  # negative: tokens promised to waiting callers
        self._updated = now

    @classmethod
    def per_minute(cls, per_minute: float, burst: int, now: float) -> TokenBucket:
        return cls(per_minute / 60.0, burst, now)

    def reserve(self, now: float, max_wait: float) -> float | None:
        """Take a token: seconds to wait before using it, or None if that exceeds `max_wait`."""
        self._refill(now)
        wait = max(0.0, (1.0 - self._tokens) / self._rate)
        if wait > max_wait:
            return None
        self._tokens -= 1.0
        return wait

    def available(self, now: float) -> float:
        """Tokens available at `now` (negative while reservations wait)."""
        self._refill(now)
        return self._tokens

    def _refill(self, now: float) -> None:
        if now > self._updated:  # a clock that steps back neither adds nor removes tokens
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
