"""Usage per UTC day in a fixed ring: the one engagement record each customer keeps.

Rolling sums ("last 7 days", "28 days before that") come from the ring in O(days), with one
record per customer instead of one key per window; a window is at most two slices of it.
Days are whole UTC days since the epoch.
"""

from __future__ import annotations

import math
import zlib
from array import array
from dataclasses import dataclass, field
from functools import reduce
from operator import or_
from typing import Final

SECONDS_PER_DAY: Final = 86_400
# Volume is kept in integer thousandths: sums are then exact and independent of event order
# (float sums are not), so a replay or a redelivery yields bit-identical state.
UNITS_PER_QUANTITY: Final = 1000
# Breadth: per day, a 64-bit word of hashed user ids and one of hashed event types, read by
# linear counting: exact enough for the handful to dozens of users a customer account has.
BREADTH_BITS: Final = 64


_BITS: dict[str, int] = {}  # user ids and event types repeat: hash each once
_BITS_KEPT: Final = 100_000


def breadth_bit(value: str | None) -> int:
    """The bit a user id or an event type sets in its day word (0 for none)."""
    if value is None:
        return 0
    bit = _BITS.get(value)
    if bit is None:
        if len(_BITS) >= _BITS_KEPT:
            _BITS.clear()
        bit = _BITS[value] = 1 << (zlib.crc32(value.encode()) % BREADTH_BITS)
    return bit


def distinct_estimate(bitmap: int) -> float:
    """Linear-counting estimate of the distinct values hashed into a 64-bit word."""
    zeros = BREADTH_BITS - bitmap.bit_count()
    if zeros == 0:
        zeros = 1  # saturated: the estimate's ceiling (~266 distinct values)
    return 0.0 - BREADTH_BITS * math.log(zeros / BREADTH_BITS)


def day_of(timestamp: float) -> int:
    """UTC day number of an epoch-seconds timestamp."""
    return math.floor(timestamp / SECONDS_PER_DAY)


def last_closed_day(watermark: float) -> int:
    """The latest day X whose start is strictly before the watermark: "as of X" is complete.

    An event exactly at X's first instant is not late yet (it is not older than the
    watermark) and belongs to day X; so X closes only once the watermark is past it.
    """
    return math.ceil(watermark / SECONDS_PER_DAY) - 1


def ring_days_needed(longest_window_days: int, allowed_lateness_seconds: float) -> int:
    """Ring length that still holds a full window when evaluated behind the newest event.

    Evaluation "as of day X" reads days before X, while events up to the allowed lateness past
    the watermark may already be in the ring; both must fit.
    """
    return longest_window_days + math.ceil(allowed_lateness_seconds / SECONDS_PER_DAY) + 2


def active_slots(active: int) -> list[int]:
    """The slots a ring's `active` bits mark, lowest first: the days with any event. Every
    other slot holds zeros (`DailyRing` clears a slot's values with its bit)."""
    slots = []
    while active:
        lowest = active & -active
        slots.append(lowest.bit_length() - 1)
        active ^= lowest
    return slots


@dataclass(slots=True)
class DailyRing:
    """Usage volume and an activity bit per day, for the `size` days ending at `head_day`.

    A ring forgets its oldest days as newer ones arrive, unless told to keep them (`keep_from`):
    usage can be read days ahead of the partition's watermark while another input lags, and a
    day still to be evaluated must not depend on how far ahead that was. It then grows, and
    `fit` shrinks it back once the evaluation has moved on.
    """

    size: int
    head_day: int
    volume: array[int] = field(default_factory=lambda: array("q"))  # thousandths of quantity
    active: int = 0  # bit (day % size) set when any event, even of zero volume, fell on that day
    users: array[int] = field(default_factory=lambda: array("Q"))  # per day: see breadth_bit
    kinds: array[int] = field(default_factory=lambda: array("Q"))  # event types, likewise
    gone: int | None = None  # the latest active day the ring has forgotten

    def __post_init__(self) -> None:
        for name, code in (("volume", "q"), ("users", "Q"), ("kinds", "Q")):
            if not getattr(self, name):
                setattr(self, name, array(code, bytes(8 * self.size)))
            if len(getattr(self, name)) != self.size:
                raise ValueError(f"ring {name} has the wrong number of slots, not {self.size}")

    @property
    def oldest_day(self) -> int:
        return self.head_day - self.size + 1

    def add(
        self,
        day: int,
        amount: float,
        user_bit: int = 0,
        kind_bit: int = 0,
        keep_from: int | None = None,
    ) -> bool:
        """Add usage on `day`; False (and no change) when the day has left the ring.

        Days from `keep_from` on that the ring holds are kept: it grows rather than forget them.
        """
        if day > self.head_day:
            needed = day - self.oldest_after_add(day, keep_from) + 1
            if needed > self.size:
                self._resize(needed)
            self._advance(day)
        elif day < self.oldest_day:
            return False
        slot = day % self.size
        self.volume[slot] += round(amount * UNITS_PER_QUANTITY)
        self.active |= 1 << slot
        self.users[slot] |= user_bit
        self.kinds[slot] |= kind_bit
        return True

    def oldest_after_add(self, day: int, keep_from: int | None = None) -> int:
        """The oldest day the ring holds once `add` moved its head to `day` (a later day):
        what it forgets is every day before this one."""
        oldest = day - self.size + 1
        if keep_from is None:
            return oldest
        return min(oldest, max(keep_from, self.oldest_day))

    def breadth_between(self, first_day: int, last_day: int) -> tuple[float, float]:
        """Estimated distinct (users, event types) over days first_day..last_day inclusive."""
        users = kinds = 0
        for start, stop in self._runs(first_day, last_day):
            users = reduce(or_, self.users[start:stop], users)
            kinds = reduce(or_, self.kinds[start:stop], kinds)
        return distinct_estimate(users), distinct_estimate(kinds)

    def active_days(self, first_day: int, last_day: int) -> int:
        """Days with any event among first_day..last_day inclusive."""
        return self._active_bits(first_day, last_day).bit_count()

    def total(self, first_day: int, last_day: int) -> float:
        """Sum of usage over days first_day..last_day inclusive (days outside the ring count 0)."""
        units = 0
        for start, stop in self._runs(first_day, last_day):
            units += sum(self.volume[start:stop])
        return units / UNITS_PER_QUANTITY

    def active_between(self, first_day: int, last_day: int) -> bool:
        """Any event on days first_day..last_day inclusive (days the ring no longer holds: no)."""
        return self._active_bits(first_day, last_day) != 0

    def last_active_day(self, before_day: int) -> int | None:
        """Latest day before `before_day` with any event (None: none, or none the ring knows:
        it remembers only the latest of the days it forgot)."""
        last = min(before_day - 1, self.head_day)
        if last >= self.oldest_day:
            slot = last % self.size
            if self.active >> slot & 1:  # the usual answer: the latest day asked about
                return last
            for start, stop in reversed(self._runs(self.oldest_day, last)):
                bits = self.active >> start & (1 << stop - start) - 1
                if bits:
                    found = start + bits.bit_length() - 1  # the run's highest active slot
                    return last - (slot - found) % self.size  # the held day in that slot
        if self.gone is not None and self.gone < before_day:
            return self.gone
        return None

    def fit(self, size: int, keep_from: int) -> bool:
        """Shrink a grown ring back towards `size`, keeping days from `keep_from` on; True
        when it shrank."""
        oldest = self.oldest_after_fit(size, keep_from)
        if oldest <= self.oldest_day:
            return False
        self._resize(self.head_day - oldest + 1)
        return True

    def oldest_after_fit(self, size: int, keep_from: int) -> int:
        """The oldest day the ring holds once `fit(size, keep_from)` shrank it (its oldest
        day now when it would not shrink)."""
        wanted = max(size, self.head_day - keep_from + 1)
        return max(self.oldest_day, self.head_day - wanted + 1)

    def _runs(self, first_day: int, last_day: int) -> tuple[tuple[int, int], ...]:
        """The slots of the days first_day..last_day the ring holds, in day order, as at most
        two [start, stop) runs: a window's sum or union is then a slice or two, read in C."""
        first, last = max(first_day, self.oldest_day), min(last_day, self.head_day)
        if first > last:
            return ()
        start, stop = first % self.size, last % self.size + 1
        if start < stop:
            return ((start, stop),)
        return ((start, self.size), (0, stop))

    def _active_bits(self, first_day: int, last_day: int) -> int:
        """The `active` bits of the days first_day..last_day the ring holds."""
        bits = 0
        for start, stop in self._runs(first_day, last_day):
            bits |= self.active & ((1 << stop - start) - 1) << start
        return bits

    def _advance(self, day: int) -> None:
        for stale in range(self.head_day + 1, min(day, self.head_day + self.size) + 1):
            slot = stale % self.size
            if self.active >> slot & 1:
                self.gone = stale - self.size  # the day whose slot this was
            self.volume[slot] = 0
            self.users[slot] = self.kinds[slot] = 0
            self.active &= ~(1 << slot)
        self.head_day = day

    def _resize(self, size: int) -> None:
        """Hold the `size` days ending at the head (slots move: a day's slot is day % size)."""
        kept = range(max(self.oldest_day, self.head_day - size + 1), self.head_day + 1)
        for day in range(self.oldest_day, kept.start):
            if self.active >> (day % self.size) & 1:
                self.gone = day
        volume, users, kinds = (array(code, bytes(8 * size)) for code in ("q", "Q", "Q"))
        active = 0
        for day in kept:
            old, new = day % self.size, day % size
            volume[new], users[new], kinds[new] = self.volume[old], self.users[old], self.kinds[old]
            active |= (self.active >> old & 1) << new
        self.size, self.volume, self.users, self.kinds, self.active = (
            size,
            volume,
            users,
            kinds,
            active,
        )
