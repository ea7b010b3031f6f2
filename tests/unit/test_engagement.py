"""DailyRing keeps exactly the usage of the days it spans; day_of floors to whole UTC days."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.engagement import (
    SECONDS_PER_DAY,
    DailyRing,
    active_slots,
    breadth_bit,
    day_of,
    distinct_estimate,
    ring_days_needed,
)

# Amounts in whole thousandths, so the ring's own arithmetic cannot round them.
amounts = st.integers(0, 10**7).map(lambda thousandths: thousandths / 1000)


def _snapshot(ring: DailyRing) -> tuple[int, int, list[float], int]:
    return ring.size, ring.head_day, list(ring.volume), ring.active


def _bit(ring: DailyRing, day: int) -> int:
    return ring.active >> (day % ring.size) & 1


def test_add_sums_per_day_and_marks_activity() -> None:
    ring = DailyRing(size=7, head_day=10)

    assert ring.add(10, 2.5)
    assert ring.add(10, 1.5)
    assert ring.add(8, 3.0)

    assert ring.total(10, 10) == pytest.approx(4.0)
    assert ring.total(8, 8) == pytest.approx(3.0)
    assert ring.total(9, 9) == 0
    assert ring.total(4, 10) == pytest.approx(7.0)
    assert ring.last_active_day(before_day=11) == 10
    assert ring.last_active_day(before_day=10) == 8
    assert ring.last_active_day(before_day=8) is None


def test_zero_volume_event_still_counts_as_activity() -> None:
    ring = DailyRing(size=7, head_day=10)

    ring.add(9, 0.0)

    assert ring.total(4, 10) == 0
    assert ring.last_active_day(before_day=11) == 9


def test_total_ignores_days_outside_the_ring() -> None:
    ring = DailyRing(size=5, head_day=10)  # holds days 6..10
    for day in range(6, 11):
        ring.add(day, 1.0)

    assert ring.total(-100, 100) == pytest.approx(5.0)
    assert ring.total(0, 5) == 0
    assert ring.total(11, 20) == 0
    assert ring.total(9, 7) == 0  # an empty range


def test_advancing_the_head_clears_recycled_slots() -> None:
    ring = DailyRing(size=7, head_day=6)  # holds days 0..6
    ring.add(0, 5.0)
    ring.add(1, 3.0)
    ring.add(4, 2.0)

    ring.add(9, 1.0)  # now holds days 3..9; days 7 and 8 reuse the slots of days 0 and 1

    assert ring.head_day == 9
    assert ring.oldest_day == 3
    for recycled in (7, 8):
        assert ring.volume[recycled % ring.size] == 0
        assert _bit(ring, recycled) == 0
        assert ring.total(recycled, recycled) == 0
    assert ring.total(3, 9) == pytest.approx(3.0)
    assert ring.last_active_day(before_day=9) == 4


def test_jumping_past_the_whole_ring_clears_every_slot() -> None:
    ring = DailyRing(size=7, head_day=6)
    for day in range(7):
        ring.add(day, 1.0)

    assert ring.add(100, 2.0)

    assert ring.total(-1000, 1000) == pytest.approx(2.0)
    assert ring.active == 1 << (100 % 7)
    assert ring.last_active_day(before_day=100) == 6  # forgotten, but remembered as `gone`
    assert ring.last_active_day(before_day=101) == 100


def test_a_day_older_than_the_ring_is_refused_and_changes_nothing() -> None:
    ring = DailyRing(size=7, head_day=20)  # holds days 14..20
    ring.add(14, 1.0)
    ring.add(20, 2.0)
    before = _snapshot(ring)

    assert ring.add(13, 5.0) is False

    assert _snapshot(ring) == before


def test_the_oldest_day_of_the_ring_is_still_accepted() -> None:
    ring = DailyRing(size=7, head_day=20)

    assert ring.add(14, 1.0)
    assert ring.total(14, 14) == pytest.approx(1.0)


def test_volume_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="volume has the wrong number of slots, not 7"):
        DailyRing(size=7, head_day=0, volume=DailyRing(size=3, head_day=0).volume)


def assert_inactive_slots_hold_zeros(ring: DailyRing) -> None:
    """What lets a record keep a ring's active days only (streams/codecs.py)."""
    active = set(active_slots(ring.active))
    assert active == {slot for slot in range(ring.size) if ring.active >> slot & 1}
    for slot in set(range(ring.size)) - active:
        assert (ring.volume[slot], ring.users[slot], ring.kinds[slot]) == (0, 0, 0)


@given(st.integers(0, 2**130))
def test_active_slots_are_the_set_bits_lowest_first(active: int) -> None:
    assert active_slots(active) == [bit for bit in range(131) if active >> bit & 1]


@given(
    size=st.integers(1, 40),
    start_head=st.integers(-20, 20),
    additions=st.lists(
        st.tuples(st.integers(-60, 150), amounts, st.integers(0, 63), st.integers(0, 63)),
        max_size=60,
    ),
    first=st.integers(-70, 160),
    last=st.integers(-70, 160),
)
def test_ring_agrees_with_a_brute_force_model(
    size: int,
    start_head: int,
    additions: list[tuple[int, float, int, int]],
    first: int,
    last: int,
) -> None:
    ring = DailyRing(size=size, head_day=start_head)
    head = start_head
    accepted: list[tuple[int, float]] = []
    bits: list[tuple[int, int, int]] = []  # day, user bit, event-type bit
    for day, amount, user, kind in additions:
        fits = day > head - size
        assert ring.add(day, amount, 1 << user, 1 << kind) is fits
        if fits:
            head = max(head, day)
            accepted.append((day, amount))
            bits.append((day, 1 << user, 1 << kind))
    assert ring.head_day == head

    def held(day: int) -> bool:
        return head - size < day <= head

    def expected_total(a: int, b: int) -> float:
        return math.fsum(amount for day, amount in accepted if held(day) and a <= day <= b)

    def expected_last_active(before: int) -> int | None:
        days = [day for day, _ in accepted if held(day) and day < before]
        forgotten = max((day for day, _ in accepted if not held(day)), default=None)
        if not days and forgotten is not None and forgotten < before:
            return forgotten
        return max(days, default=None)

    def expected_window(a: int, b: int) -> tuple[int, int, int]:
        """Active days, and the union of user and of event-type bits, over days a..b held."""
        days = {day for day, _ in accepted if held(day) and a <= day <= b}
        users = kinds = 0
        for day, user, kind in bits:
            if held(day) and a <= day <= b:
                users, kinds = users | user, kinds | kind
        return len(days), users, kinds

    def assert_window(a: int, b: int) -> None:
        assert math.isclose(ring.total(a, b), expected_total(a, b), abs_tol=1e-6)
        active, users, kinds = expected_window(a, b)
        assert ring.active_days(a, b) == active
        assert ring.active_between(a, b) is (active > 0)
        assert ring.breadth_between(a, b) == (distinct_estimate(users), distinct_estimate(kinds))

    assert_inactive_slots_hold_zeros(ring)
    assert_window(first, last)
    for b in range(head - size - 1, head + 2):  # windows that wrap around the ring's end
        for a in (b - size, b - 3, b):
            assert_window(a, b)
    for day in range(-70, 161):
        assert math.isclose(ring.total(day, day), expected_total(day, day), abs_tol=1e-6)
        assert ring.last_active_day(day) == expected_last_active(day)


@pytest.mark.parametrize(
    ("timestamp", "day"),
    [
        (0.0, 0),
        (86_399.999, 0),
        (86_400.0, 1),
        (-0.001, -1),
        (-86_400.0, -1),
        (-86_400.001, -2),
        (math.nextafter(86_400.0, 0.0), 0),
        (datetime(2024, 3, 9, 23, 59, 59, 999_999, tzinfo=UTC).timestamp(), 19_791),
        (datetime(2024, 3, 10, tzinfo=UTC).timestamp(), 19_792),
    ],
)
def test_day_of_floors_to_the_utc_day(timestamp: float, day: int) -> None:
    assert day_of(timestamp) == day


def test_day_of_matches_the_calendar() -> None:
    midnight = datetime(2024, 3, 10, tzinfo=UTC)

    assert day_of(midnight.timestamp()) == (date(2024, 3, 10) - date(1970, 1, 1)).days


# Subnormal negatives (|t| < ~4e-319) underflow to -0.0 when divided and land on day 0.
@given(st.floats(-1e11, 1e11, allow_subnormal=False))
def test_day_of_is_the_exact_floor(timestamp: float) -> None:
    day = day_of(timestamp)

    assert day * SECONDS_PER_DAY <= Fraction(timestamp) < (day + 1) * SECONDS_PER_DAY


@pytest.mark.parametrize(
    ("window", "lateness", "needed"),
    [(35, 0, 37), (35, 1, 38), (35, 3600, 38), (35, 86_400, 38), (35, 86_401, 39)],
)
def test_ring_days_needed(window: int, lateness: float, needed: int) -> None:
    assert ring_days_needed(window, lateness) == needed


@given(
    window=st.integers(1, 120),
    lateness=st.floats(0, 7 * SECONDS_PER_DAY),
    newest=st.floats(-1e10, 1e10),
)
def test_ring_of_the_needed_size_holds_the_window_behind_the_newest_event(
    window: int, lateness: float, newest: float
) -> None:
    ring = DailyRing(size=ring_days_needed(window, lateness), head_day=day_of(newest))
    as_of_day = day_of(newest - lateness)  # the day the watermark is in

    assert ring.oldest_day <= as_of_day - window


@given(
    size=st.integers(3, 20),
    steps=st.lists(
        st.tuples(st.integers(0, 80), st.integers(0, 80), st.booleans()), min_size=1, max_size=60
    ),
)
def test_a_ring_told_what_to_keep_grows_and_fits_back_as_foretold_changing_no_answer(
    size: int, steps: list[tuple[int, int, bool]]
) -> None:
    # A reference ring large enough never to forget, and one that grows only when told to
    # keep days and is fitted back to `size`: both answer alike for every kept day.
    reference = DailyRing(size=200, head_day=0)
    ring = DailyRing(size=size, head_day=0)
    keep_from = 0
    for day, keep_shift, fit in steps:
        # What an engine keeps moves forward only, and never asks for a day already gone.
        keep_from = max(keep_from, ring.oldest_day, min(day, ring.head_day) - keep_shift // 10)
        if day < ring.oldest_day:
            continue
        oldest = ring.oldest_after_add(day, keep_from) if day > ring.head_day else ring.oldest_day
        assert ring.add(day, 1.0 + day, breadth_bit(str(day)), 0, keep_from)
        reference.add(day, 1.0 + day, breadth_bit(str(day)))
        assert ring.oldest_day == oldest  # as foretold: what it forgot is every day before
        assert ring.oldest_day <= keep_from
        if fit:
            oldest = ring.oldest_after_fit(size, keep_from)
            ring.fit(size, keep_from)
            assert ring.oldest_day == oldest
            assert ring.size >= size
        assert_inactive_slots_hold_zeros(ring)
        for first in range(keep_from, ring.head_day + 1):
            assert ring.total(first, first) == reference.total(first, first)
            assert ring.breadth_between(first, first) == reference.breadth_between(first, first)
        for before in range(keep_from, ring.head_day + 2):
            assert ring.last_active_day(before) == reference.last_active_day(before)


def test_a_grown_ring_keeps_the_days_asked_for_and_fits_back() -> None:
    ring = DailyRing(size=7, head_day=10)  # holds days 4..10
    ring.add(5, 1.0)

    assert ring.add(20, 2.0, keep_from=5)

    assert ring.size == 16
    assert ring.oldest_day == 5
    assert ring.total(5, 20) == pytest.approx(3.0)
    assert ring.fit(7, keep_from=12)
    assert (ring.size, ring.oldest_day, ring.gone) == (9, 12, 5)
    assert ring.last_active_day(before_day=20) == 5
    assert not ring.fit(7, keep_from=12)
