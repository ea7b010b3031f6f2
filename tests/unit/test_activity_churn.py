"""Activity churn of the streaming engine against the definition, over months of usage.

A customer is active at a period boundary t when it has a usage event in the
`activity_window_days` whole days before t's day (churn.py). For a period [a, b), the engine's
closed figures must count, among its customers, those active at a (`start_active_customers`)
and those of them not active at b (`churned_active_customers`). Monthly periods start further
back than the engine's ring of days reaches, so the answer at a comes from what the record
kept of it (`CustomerState.active_marks`); weekly ones from the ring itself. Customers fall
silent for weeks and come back, so rings jump over several period starts at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from churnwatch.domain.churn import ChurnPolicy
from churnwatch.domain.engagement import day_of, ring_days_needed
from churnwatch.domain.events import Heartbeat, UsageEvent
from churnwatch.domain.partition import PartitionClock, PartitionEngine
from churnwatch.domain.periods import Granularity, period_of
from config.settings import RuleSettings
from tests.unit.test_partition import DecodingStore, DictStore

DAY = 86_400.0
HOUR = 3_600.0
FIRST = datetime(2020, 12, 1, tzinfo=UTC).timestamp()
DAYS = 150  # to the end of April 2021
WINDOW = ChurnPolicy().activity_window_days

Item = UsageEvent | Heartbeat


def engine_for(granularity: Granularity) -> PartitionEngine:
    return PartitionEngine(
        thresholds=RuleSettings(),
        allowed_lateness=HOUR,
        ring_days=ring_days_needed(35, HOUR),
        granularity=granularity,
    )


def items_of(
    active_days: Sequence[frozenset[int]], hour: int, billing_from: int | None = None
) -> list[Item]:
    """One event per customer per active day (at `hour`), in event-time order, and a heartbeat
    that closes every period ending by the last day.

    With `billing_from`, a billing input is read too, its first heartbeat on that day and its
    next only at the end: until then the watermark waits for it while usage is read ahead, and
    rings grow to keep the days still to be evaluated (fitted back as they are)."""
    events = [
        UsageEvent(f"c{number}-{day}", f"c{number}", FIRST + day * DAY + hour * HOUR, "login")
        for number, days in enumerate(active_days)
        for day in days
    ]
    events.sort(key=lambda event: event.occurred_at)
    end = FIRST + (DAYS + 1) * DAY + 2 * HOUR
    if billing_from is None:
        return [*events, Heartbeat(end)]
    billing = Heartbeat(FIRST + billing_from * DAY, kind="billing")
    return [billing, *events, Heartbeat(end), Heartbeat(end, kind="billing")]


def closed_activity(
    items: Sequence[Item], granularity: Granularity, cuts: Sequence[int], store: DictStore
) -> dict[str, tuple[int, int]]:
    """Each closed period's (start active, churned active) customers, from the engine."""
    engine, clock = engine_for(granularity), PartitionClock(0)
    inputs = frozenset(item.kind if isinstance(item, Heartbeat) else "usage" for item in items)
    closed: dict[str, tuple[int, int]] = {}
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(items)}), len(items)]
    for first, last in itertools.pairwise(bounds):
        batch = [(offset, items[offset]) for offset in range(first, last)]
        backlog = inputs if last < len(items) else frozenset()  # each has more to read
        for period in engine.process(clock, batch, store, backlog).closed:
            assert period.period.label not in closed, f"{period.period.label} closed twice"
            figures = period.figures.values()
            closed[period.period.label] = (
                sum(f.start_active_customers for f in figures),
                sum(f.churned_active_customers for f in figures),
            )
    return closed


def expected_activity(
    active_days: Sequence[frozenset[int]], granularity: Granularity
) -> dict[str, tuple[int, int]]:
    """The definition, for every period the engine closes: those ending after the first
    event's day (the first day evaluated) and by the heartbeat's day."""
    first_day = day_of(FIRST) + min(min(days) for days in active_days if days)
    last_day = day_of(FIRST) + DAYS + 1

    def active_at(days: frozenset[int], boundary: float) -> bool:
        day = day_of(boundary) - day_of(FIRST)
        return any(day - WINDOW <= active < day for active in days)

    expected = {}
    period = period_of(first_day * DAY, granularity)
    while day_of(period.end) <= last_day:
        start = [days for days in active_days if active_at(days, period.start)]
        churned = [days for days in start if not active_at(days, period.end)]
        expected[period.label] = (len(start), len(churned))
        period = period.next()
    return expected


@st.composite
def customer_days(draw: st.DrawFn) -> frozenset[int]:
    """Stretches of daily use between stretches of silence: a customer gone for weeks jumps
    its ring over period starts when it comes back."""
    days: set[int] = set()
    day = draw(st.integers(0, 40))
    while day < DAYS:
        length = draw(st.integers(1, 20))
        days.update(d for d in range(day, min(day + length, DAYS)) if draw(st.booleans()))
        day += length + draw(st.integers(1, 60))
    return frozenset(days)


@settings(max_examples=60, deadline=None)
@given(
    active_days=st.lists(customer_days(), min_size=1, max_size=6).filter(
        lambda customers: any(customers)
    ),
    granularity=st.sampled_from(["week", "month", "quarter"]),
    hour=st.integers(0, 23),
    cuts=st.lists(st.integers(1, 400), max_size=4),
    decoding=st.booleans(),
    billing_from=st.none() | st.integers(0, 60),
)
def test_closed_periods_count_activity_churn_by_the_definition(
    active_days: list[frozenset[int]],
    granularity: Granularity,
    hour: int,
    cuts: list[int],
    decoding: bool,
    billing_from: int | None,
) -> None:
    items = items_of(active_days, hour, billing_from)
    store = DecodingStore() if decoding else DictStore()
    assert closed_activity(items, granularity, cuts, store) == expected_activity(
        active_days, granularity
    )
