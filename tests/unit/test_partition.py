"""PartitionEngine: exact under redelivery, batch splits and disorder; late events refused."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churnwatch.domain.alerts import AlertEvent
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import day_of, ring_days_needed
from churnwatch.domain.events import Heartbeat, UsageEvent
from churnwatch.domain.partition import BatchResult, ClosedPeriod, PartitionClock, PartitionEngine
from config.settings import RuleSettings

DAY = 86_400.0
START = 1_577_836_800.0
LATENESS = 3600.0
RULES = RuleSettings()
ENGINE = PartitionEngine(RULES, LATENESS, ring_days_needed(35, LATENESS))

Item = UsageEvent | Heartbeat


class DictStore:
    """CustomerStore over a dict; counts writes."""

    def __init__(self) -> None:
        self.states: dict[str, CustomerState] = {}

    def get(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    def put(self, state: CustomerState) -> None:
        self.states[state.customer_id] = state

    def in_partition(self, partition: int) -> Iterable[CustomerState]:
        return [s for s in self.states.values() if s.partition == partition]


def event(customer: str, at: float, quantity: float = 10.0) -> UsageEvent:
    return UsageEvent(f"{customer}@{at}", customer, at, "api_call", quantity)


def history(customers: int, days: int, silent_from: dict[str, int], seed: int) -> list[Item]:
    """A few events per customer per day, in event-time order; some customers fall silent."""
    rng = random.Random(seed)
    items: list[Item] = []
    for day in range(days):
        todays = []
        for number in range(customers):
            customer = f"c{number}"
            if day >= silent_from.get(customer, days):
                continue
            for _ in range(rng.randint(1, 3)):
                at = START + day * DAY + rng.uniform(0, DAY - 1)
                todays.append(event(customer, at, rng.uniform(8, 12)))
        items.extend(sorted(todays, key=lambda e: e.occurred_at))
    items.append(Heartbeat(START + days * DAY + LATENESS + 1))
    return items


class DecodingStore(DictStore):
    """Reads a partition as the worker's table store does: each record decoded afresh, and
    what the reader does not put back is forgotten."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def in_partition(self, partition: int) -> Iterable[CustomerState]:
        self.reads += 1
        for state in list(self.states.values()):
            if state.partition == partition:
                yield CustomerState.from_plain(state.to_plain())


def run(
    items: Sequence[Item],
    cuts: Sequence[int] = (),
    engine: PartitionEngine = ENGINE,
    store: DictStore | None = None,
    closed: list[ClosedPeriod] | None = None,
) -> tuple[DictStore, list[AlertEvent], PartitionClock]:
    """Process items (offset = position) in batches cut at the given positions."""
    store, clock, alerts = store or DictStore(), PartitionClock(0), []
    bounds = [0, *sorted(set(cuts)), len(items)]
    for first, last in itertools.pairwise(bounds):
        batch = [(offset, items[offset]) for offset in range(first, last)]
        result = engine.process(clock, batch, store)
        alerts.extend(result.alerts)
        if closed is not None:
            closed.extend(result.closed)
    return store, alerts, clock


def plain(store: DictStore, drop: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    return {
        cid: {k: v for k, v in s.to_plain().items() if k not in drop}
        for cid, s in store.states.items()
    }


def summary(alerts: Iterable[AlertEvent]) -> list[tuple[str, str, str, int]]:
    return sorted((a.customer_id, a.alert_id, a.status, a.as_of_day) for a in alerts)


SILENT = {"c1": 40, "c4": 45}
HISTORY = history(customers=6, days=60, silent_from=SILENT, seed=3)


def test_silent_customers_alert_and_steady_ones_do_not() -> None:
    _, alerts, _ = run(HISTORY)
    opened = {a.customer_id for a in alerts if a.status == "opened"}
    assert opened == set(SILENT)
    reasons = {r.code for a in alerts for r in a.reasons}
    assert reasons == {"usage_drop", "inactive"}


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(HISTORY) - 1), max_size=30))
def test_batch_boundaries_do_not_change_state_or_alerts(cuts: list[int]) -> None:
    whole_store, whole_alerts, _ = run(HISTORY)
    split_store, split_alerts, _ = run(HISTORY, cuts)
    assert plain(split_store) == plain(whole_store)
    assert summary(split_alerts) == summary(whole_alerts)


@pytest.mark.parametrize("decoded_max", [0, 2, 20_000])
def test_a_day_read_twice_gives_what_one_read_gives(decoded_max: int) -> None:
    """A partition bigger than `sweep_decoded_max` is read twice per day, one decoded record
    at a time (0: always): the same records, alerts and period figures as held decoded."""
    closed_held: list[ClosedPeriod] = []
    held_store, held_alerts, _ = run(HISTORY, closed=closed_held)
    closed_read: list[ClosedPeriod] = []
    engine = dataclasses.replace(ENGINE, sweep_decoded_max=decoded_max)
    read_store = DecodingStore()
    _, read_alerts, clock = run(HISTORY, (150, 400), engine, read_store, closed_read)
    assert clock.evaluated_day is not None
    days = clock.evaluated_day - day_of(START)  # the first day evaluated follows START's
    customers = len(read_store.states)
    assert read_store.reads == days * (1 if customers <= decoded_max else 2)
    assert len(held_alerts) > 4
    assert len(closed_held) == 2
    assert summary(read_alerts) == summary(held_alerts)
    assert closed_read == closed_held
    # Evaluated days of records the day did not change are written with their next change.
    assert plain(read_store, drop=("ed",)) == plain(held_store, drop=("ed",))


@settings(max_examples=10, deadline=None)
@given(cut=st.integers(min_value=1, max_value=len(HISTORY) - 1), seed=st.integers(0, 2**16))
def test_redelivered_messages_change_nothing(cut: int, seed: int) -> None:
    """A crash after some writes: the consumer re-reads from an earlier offset."""
    store, clock, alerts = DictStore(), PartitionClock(0), []
    rng = random.Random(seed)
    replay_from = rng.randint(0, cut)
    batches = [range(0, cut), range(replay_from, len(HISTORY))]
    redelivered = 0
    for offsets in batches:
        result = ENGINE.process(clock, [(o, HISTORY[o]) for o in offsets], store)
        alerts.extend(result.alerts)
        redelivered += len(result.redelivered)
    clean_store, clean_alerts, _ = run(HISTORY)
    assert plain(store) == plain(clean_store)
    assert summary(alerts) == summary(clean_alerts)
    usage_replayed = sum(isinstance(HISTORY[o], UsageEvent) for o in range(replay_from, cut))
    assert redelivered == usage_replayed


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_disorder_within_the_allowed_lateness_gives_the_in_order_result(seed: int) -> None:
    rng = random.Random(seed)
    jitter = {id(item): rng.uniform(0, LATENESS * 0.9) for item in HISTORY}
    shuffled = sorted(HISTORY, key=lambda item: item.occurred_at + jitter[id(item)])
    ordered_store, ordered_alerts, _ = run(HISTORY)
    shuffled_store, shuffled_alerts, _ = run(shuffled)
    # Offsets differ (messages sit elsewhere in the partition); everything else is equal.
    assert plain(shuffled_store, drop=("off",)) == plain(ordered_store, drop=("off",))
    assert summary(shuffled_alerts) == summary(ordered_alerts)


def test_events_older_than_the_watermark_are_refused_untouched() -> None:
    store, clock = DictStore(), PartitionClock(0)
    ENGINE.process(clock, [(0, event("a", START + 10 * DAY))], store)
    before = plain(store)
    result: BatchResult = ENGINE.process(
        clock, [(1, event("a", START + 10 * DAY - LATENESS - 1)), (2, event("b", START))], store
    )
    assert result.late == [0, 1]
    assert result.applied == 0
    assert plain(store) == before


def test_heartbeat_alone_finds_silence() -> None:
    store, clock = DictStore(), PartitionClock(0)
    for day in range(30):
        ENGINE.process(clock, [(day, event("a", START + day * DAY))], store)
    quiet = ENGINE.process(clock, [(-1, Heartbeat(START + 45 * DAY))], store)
    assert quiet.heartbeats == 1
    # Each skipped day is evaluated in turn: the drop shows first (info, then warning as it
    # deepens), the silence a few days later.
    assert [(a.status, a.severity) for a in quiet.alerts] == [
        ("opened", "info"),
        ("escalated", "warning"),
        ("escalated", "critical"),
    ]
    assert [r.code for r in quiet.alerts[0].reasons] == ["usage_drop"]
    assert [r.code for r in quiet.alerts[2].reasons] == ["usage_drop", "inactive"]
    assert quiet.alerts[2].as_of_day - (START // DAY) == 30 + RULES.inactive_days


def test_alert_ids_are_stable_across_runs() -> None:
    _, first, _ = run(HISTORY)
    _, second, _ = run(HISTORY, cuts=[100, len(HISTORY) // 2])
    assert [a.alert_id for a in first if a.status == "opened"] == [
        a.alert_id for a in second if a.status == "opened"
    ]
