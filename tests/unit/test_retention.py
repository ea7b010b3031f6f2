"""Bounded state: idle customers forgotten after the retention, new ones over the cap refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from churnwatch.domain.billing import BillingEvent, BillingType
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import ring_days_needed
from churnwatch.domain.events import Heartbeat, UsageEvent
from churnwatch.domain.partition import Item, PartitionClock, PartitionEngine
from churnwatch.domain.retention import (
    StateBounds,
    is_expired,
    last_activity,
    minimum_retention_days,
)
from churnwatch.exceptions import ConfigError
from config import load_settings
from config.settings import RuleSettings, StateSettings
from streams.app import MemoryPeriodSink, Worker, create_worker
from streams.capacity import RefusalLog
from streams.codecs import decode_customer, encode_customer, is_customer
from streams.ingest import NoBacklog, NoRewind
from streams.state import PartitionIndex, TableChangelog, TableStore
from tests.unit.test_usage_agent import ListEmitter, drain, sample_sum

DAY = 86_400.0
START = 1_577_836_800.0  # 2020-01-01, a Wednesday
LATENESS = 3600.0
RING = ring_days_needed(35, LATENESS)


class BoundedStore:
    """CustomerStore over a dict, with the cap's count and the retention's delete."""

    def __init__(self) -> None:
        self.states: dict[str, CustomerState] = {}
        self.deleted: list[str] = []

    def get(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    def put(self, state: CustomerState) -> None:
        self.states[state.customer_id] = state

    def in_partition(self, partition: int) -> Iterable[CustomerState]:
        return [s for s in self.states.values() if s.partition == partition]

    def tracked(self, partition: int) -> int:
        return sum(1 for s in self.states.values() if s.partition == partition)

    def delete(self, state: CustomerState) -> None:
        del self.states[state.customer_id]
        self.deleted.append(state.customer_id)


def engine(bounds: StateBounds, granularity: Any = "week") -> PartitionEngine:
    return PartitionEngine(RuleSettings(), LATENESS, RING, granularity=granularity, bounds=bounds)


def usage(customer: str, at: float) -> UsageEvent:
    return UsageEvent(f"{customer}@{at}", customer, at, "api_call", 5.0)


def billing(customer: str, at: float, kind: BillingType, mrr: int | None = None) -> BillingEvent:
    return BillingEvent(f"{customer}:{kind}@{at}", customer, at, kind, mrr_cents=mrr)


def run(eng: PartitionEngine, items: Sequence[Item], store: BoundedStore) -> list[Any]:
    """Process items one batch each (offset = position); return the batch results."""
    clock = PartitionClock(0)
    return [eng.process(clock, [(offset, item)], store) for offset, item in enumerate(items)]


def state_with(last_seen: float | None) -> CustomerState:
    return CustomerState.new("c", 0, last_seen, RING)


def test_a_usage_only_customer_expires_the_day_after_the_retention() -> None:
    state = state_with(START + 10 * 3600)
    day0 = int(START // DAY)
    assert not is_expired(state, day0 + 30, 30)
    assert is_expired(state, day0 + 31, 30)


def test_a_subscribed_customer_never_expires_however_idle() -> None:
    state = state_with(None)
    from churnwatch.domain.billing import Timeline

    state.billing = Timeline()
    state.billing.insert(billing("c", START, "subscription.started", 1000))
    assert not is_expired(state, int(START // DAY) + 5000, 30)
    state.billing.insert(billing("c", START + 100 * DAY, "subscription.ended"))
    assert last_activity(state, int(START // DAY) + 101) == START + 100 * DAY
    assert last_activity(state, int(START // DAY) + 100) == START  # not yet ended
    assert not is_expired(state, int(START // DAY) + 130, 30)
    assert is_expired(state, int(START // DAY) + 131, 30)


def test_a_record_with_nothing_in_it_expires_and_a_snooze_keeps_one_until_it_ends() -> None:
    state = state_with(None)
    assert last_activity(state, 10**6) is None
    assert is_expired(state, 0, 30)
    state.snoozed_until = START + 5 * DAY
    assert not is_expired(state, int(START // DAY) + 35, 30)
    assert is_expired(state, int(START // DAY) + 36, 30)


def test_minimum_retention_covers_two_periods_and_the_activity_window() -> None:
    assert minimum_retention_days("week", 14, 3600) == 30
    assert minimum_retention_days("month", 14, 3600) == 78
    assert minimum_retention_days("quarter", 28, 7 * DAY) == 2 * 92 + 28 + 7 + 1


def test_settings_refuse_a_retention_shorter_than_the_figures_need() -> None:
    with pytest.raises(ConfigError, match="retention_days must be at least 78"):
        load_settings(state=StateSettings(retention_days=77))
    weekly = load_settings(state={"retention_days": 30}, churn={"period": "week"})
    assert weekly.state.retention_days == 30


def test_the_sweep_forgets_an_idle_customer_and_closes_its_alert_as_churned() -> None:
    store = BoundedStore()
    items: list[Item] = [usage("gone", START + 3600), usage("stays", START + 3600)]
    items += [usage("stays", START + day * DAY) for day in range(1, 60)]
    items.append(Heartbeat(START + 60 * DAY + LATENESS))
    results = run(engine(StateBounds(retention_days=30)), items, store)

    assert store.deleted == ["gone"]
    assert set(store.states) == {"stays"}
    expired_on = [n for n, result in enumerate(results) if result.expired]
    assert len(expired_on) == 1
    statuses = [a.status for r in results for a in r.alerts if a.customer_id == "gone"]
    assert statuses[0] == "opened"  # inactive after a week
    assert statuses[-1] == "churned"  # closed when forgotten
    assert results[expired_on[0]].expired == ["gone"]


def test_an_expired_customer_coming_back_starts_afresh() -> None:
    store = BoundedStore()
    items: list[Item] = [usage("c", START), usage("other", START + 40 * DAY)]
    items.append(usage("c", START + 41 * DAY))
    results = run(engine(StateBounds(retention_days=30)), items, store)
    assert results[1].expired == ["c"]
    assert store.states["c"].events == 1
    assert store.states["c"].first_seen == START + 41 * DAY


def test_without_a_retention_nobody_is_forgotten() -> None:
    store = BoundedStore()
    run(engine(StateBounds()), [usage("c", START), usage("d", START + 500 * DAY)], store)
    assert set(store.states) == {"c", "d"}


def test_the_cap_refuses_new_customers_and_changes_nothing_for_them() -> None:
    store = BoundedStore()
    eng = engine(StateBounds(max_customers=3))
    clock = PartitionClock(0)
    items = [(n, usage(f"c{n}", START + n)) for n in range(5)]
    result = eng.process(clock, items, store)
    assert result.rejected == [3, 4]
    assert set(store.states) == {"c0", "c1", "c2"}
    # Refused events move no clock; known customers still get through.
    late_new = eng.process(clock, [(5, usage("c9", START + 10 * DAY))], store)
    assert late_new.rejected == [0]
    assert clock.latest["usage"] == START + 2
    known = eng.process(clock, [(6, usage("c1", START + DAY))], store)
    assert known.rejected == []
    assert known.applied == 1


def test_expiry_makes_room_under_the_cap() -> None:
    store = BoundedStore()
    eng = engine(StateBounds(retention_days=30, max_customers=2))
    items: list[Item] = [usage("a", START), usage("b", START)]
    items += [usage("b", START + day * DAY) for day in range(1, 45)]
    items.append(usage("c", START + 45 * DAY))
    results = run(eng, items, store)
    assert results[-1].rejected == []
    assert set(store.states) == {"b", "c"}


# Period figures: the retention's minimum must leave every closed period's figures unchanged.
customer_plans = st.lists(
    st.tuples(
        st.integers(0, 120),  # first usage day
        st.integers(0, 60),  # days of usage
        st.one_of(st.none(), st.tuples(st.integers(0, 150), st.integers(1, 80))),  # sub
    ),
    min_size=1,
    max_size=8,
)


def history(plans: list[tuple[int, int, tuple[int, int] | None]]) -> list[Item]:
    events: list[UsageEvent | BillingEvent] = []
    for number, (first, days, subscription) in enumerate(plans):
        customer = f"c{number}"
        events += [usage(customer, START + (first + d) * DAY + 7200) for d in range(days)]
        if subscription is not None:
            begin, length = subscription
            events.append(billing(customer, START + begin * DAY + 600, "subscription.started", 900))
            end = START + (begin + length) * DAY + 900
            events.append(billing(customer, end, "subscription.ended"))
    events.sort(key=lambda e: e.occurred_at)
    return [*events, Heartbeat(START + 300 * DAY)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(customer_plans, st.sampled_from(["week", "month"]))
def test_forgetting_idle_customers_changes_no_period_figure(
    plans: list[tuple[int, int, tuple[int, int] | None]], granularity: str
) -> None:
    items = history(plans)
    minimum = minimum_retention_days(granularity, 14, LATENESS)  # type: ignore[arg-type]
    kept, forgotten = BoundedStore(), BoundedStore()
    closed_kept = [
        c for r in run(engine(StateBounds(), granularity), items, kept) for c in r.closed
    ]
    bounded = engine(StateBounds(retention_days=minimum), granularity)
    closed_forgotten = [c for r in run(bounded, items, forgotten) for c in r.closed]
    assert closed_forgotten == closed_kept
    assert set(forgotten.states) <= set(kept.states)


class FakeTable:
    """The parts of a Faust table TableStore uses; records changelog sends."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.changelog: list[tuple[int, str, Any, Any]] = []

    def send_changelog(
        self, partition: int, key: str, value: Any, value_serializer: Any = None
    ) -> None:
        self.changelog.append((partition, key, value, value_serializer))


def store_of_a_and_b() -> tuple[FakeTable, PartitionIndex, TableStore]:
    """Customers "a" and "b" of partition 2, encoded in the table as a worker holds them."""
    table = FakeTable()
    for customer_id in ("a", "b"):
        table.data[customer_id] = encode_customer(CustomerState.new(customer_id, 2, START, RING))
    index = PartitionIndex(table)
    return table, index, TableStore(table, index, TableChangelog(table))


def test_table_store_deletes_with_a_tombstone_and_drops_the_index_entry() -> None:
    table, _, store = store_of_a_and_b()
    assert store.tracked(2) == 2
    store.delete(decode_customer(table.data["a"]))
    assert store.get("a") is None
    assert store.tracked(2) == 1
    assert [s.customer_id for s in store.in_partition(2)] == ["b"]
    asyncio.run(store.flush())
    assert "a" not in table.data
    assert table.changelog == [(2, "a", None, "raw")]
    # Deleted, then back within one batch: written, not tombstoned.
    assert store.get("b") is not None
    store.delete(decode_customer(table.data["b"]))
    assert store.get("b") is None  # not the copy read before the delete
    back = CustomerState.new("b", 2, START + DAY, RING)
    store.put(back)
    assert store.get("b") is back
    assert store.tracked(2) == 1
    asyncio.run(store.flush())
    assert table.data["b"] == encode_customer(back)
    assert table.changelog[-1] == (2, "b", encode_customer(back), "raw")


def test_indexing_another_partition_does_not_bring_back_a_customer_deleted_in_the_batch() -> None:
    table, index, store = store_of_a_and_b()
    assert store.tracked(2) == 2
    store.delete(decode_customer(table.data["a"]))  # still in the table until the flush

    store.put(CustomerState.new("c", 3, START, RING))  # partition 3 indexed from the table now

    assert store.tracked(2) == 1
    asyncio.run(store.flush())
    assert index.customers(2) == {"b"}
    assert index.customers(3) == {"c"}


def test_a_sweep_sets_aside_what_the_batch_changed_and_keeps_every_change() -> None:
    """A sweep encodes the records changed before it (a batch closing a day on every partition
    must not hold them all decoded); they come back with their changes and are written once."""
    table, _, store = store_of_a_and_b()
    changed = store.get("a")
    assert changed is not None
    changed.events = 7
    store.put(changed)

    swept = {s.customer_id: s for s in store.in_partition(2)}

    assert swept["a"] is not changed  # decoded again from what was set aside
    assert swept["a"].events == 7
    swept["a"].last_seen = START + DAY
    store.put(swept["a"])
    store.put(CustomerState.new("c", 3, START, RING))
    assert next(iter(store.in_partition(3))).customer_id == "c"  # sets "a" aside again
    again = store.get("a")
    assert again is not None
    assert (again.events, again.last_seen) == (7, START + DAY)
    assert asyncio.run(store.flush()) == 2
    assert sorted((p, key) for p, key, _, _ in table.changelog) == [(2, "a"), (3, "c")]
    written = decode_customer(table.data["a"])
    assert (written.events, written.last_seen) == (7, START + DAY)


def test_a_sweep_sets_aside_what_its_reader_changed_when_the_reader_moves_on() -> None:
    """A day's evaluation of a big partition holds one decoded record at a time: a record the
    reader changed is encoded as soon as it asks for the next one, and written once."""
    table, _, store = store_of_a_and_b()
    sweep = iter(store.in_partition(2))
    first = next(sweep)
    first.events = 9
    store.put(first)
    second = next(sweep)
    assert second.customer_id != first.customer_id
    assert list(sweep) == []
    again = store.get(first.customer_id)
    assert again is not first  # set aside when the reader moved on, decoded again now
    assert again is not None
    assert again.events == 9
    assert asyncio.run(store.flush()) == 1
    assert [key for _, key, _, _ in table.changelog] == [first.customer_id]
    assert decode_customer(table.data[first.customer_id]).events == 9


def test_refusals_are_logged_once_per_thousand_never_per_event() -> None:
    refusals = RefusalLog(every=1000)
    with capture_logs() as logs:
        logged = [refusals.note(0, n, 10, 10) for n in (1, 1, 500, 497, 1, 2500, 0)]
    assert logged == [True, False, False, False, True, True, False]
    assert [line["refused_total"] for line in logs] == [1, 1000, 3500]
    assert {line["event"] for line in logs} == {"customers_capacity_reached"}


def agent_worker(tmp_path: Path, emitter: ListEmitter, **overrides: Any) -> Worker:
    """A worker for Faust's agent test seam, everything delivered on partition 0."""
    settings_ = load_settings(
        data_dir=tmp_path, batch_within_seconds=0.01, allowed_lateness_seconds=0, **overrides
    )
    worker = create_worker(
        settings_,
        CollectorRegistry(),
        emitter=emitter,
        periods=MemoryPeriodSink(),
        backlog=NoBacklog(),
        owned=lambda: {0},
        rewinder=NoRewind(),
    )
    worker.app.finalize()
    worker.app.flow_control.resume()
    return worker


def put_all(worker: Worker, messages: list[tuple[bytes | None, bytes]]) -> None:
    async def scenario() -> None:
        async with worker.agents["ingest"].test_context() as agent:
            for key, value in messages:
                await agent.put(value, key=key)
            await drain(worker, len(messages))

    asyncio.run(scenario())


def junk_event(n: int) -> tuple[bytes, bytes]:
    customer = f"junk-{n}"
    value = {"event_id": f"e{n}", "customer_id": customer, "occurred_at": START + n}
    return customer.encode(), orjson.dumps(value | {"event_type": "x"})


def test_the_worker_dead_letters_capacity_refusals_and_counts_every_message(
    tmp_path: Path,
) -> None:
    emitter = ListEmitter()
    worker = agent_worker(tmp_path, emitter, state={"max_customers_per_partition": 5})
    put_all(worker, [junk_event(n) for n in range(20)])
    dead = emitter.on(worker.settings.topics.dead_letters)
    assert len(dead) == 15
    assert {dict(headers or [])["churnwatch.reason"] for _, _, headers in dead} == {b"capacity"}
    assert sample_sum(worker, "churnwatch_events_processed_total") == 5
    assert sample_sum(worker, "churnwatch_events_dead_lettered_total") == 15
    assert len(customer_ids(worker)) == 5


def test_the_worker_dead_letters_unkeyed_events_but_takes_unkeyed_heartbeats(
    tmp_path: Path,
) -> None:
    emitter = ListEmitter()
    worker = agent_worker(tmp_path, emitter)
    _, value = junk_event(1)
    heartbeat = orjson.dumps({"control": "heartbeat", "occurred_at": START})
    put_all(worker, [(None, value), (None, heartbeat)])
    dead = emitter.on(worker.settings.topics.dead_letters)
    assert [dict(headers or [])["churnwatch.reason"] for _, _, headers in dead] == [b"key_mismatch"]
    assert sample_sum(worker, "churnwatch_heartbeats_total") == 1
    assert customer_ids(worker) == set()


def test_at_capacity_a_late_event_is_late_and_a_snooze_of_a_stranger_is_refused() -> None:
    from churnwatch.domain.events import Snooze

    store = BoundedStore()
    eng = engine(StateBounds(max_customers=1))
    clock = PartitionClock(0)
    eng.process(clock, [(0, usage("a", START + 5 * DAY))], store)
    result = eng.process(clock, [(1, usage("b", START)), (2, Snooze("c", START + 9 * DAY))], store)
    assert result.late == [0]
    assert result.rejected == [1]
    assert set(store.states) == {"a"}


def test_the_worker_counts_expired_customers_and_tombstones_their_health(
    tmp_path: Path,
) -> None:
    emitter = ListEmitter()
    worker = agent_worker(tmp_path, emitter, state={"retention_days": 80})
    old = orjson.dumps({"event_id": "a", "customer_id": "old", "occurred_at": START})
    new = orjson.dumps({"event_id": "b", "customer_id": "new", "occurred_at": START + 90 * DAY})
    put_all(
        worker,
        [(b"old", old[:-1] + b',"event_type":"x"}'), (b"new", new[:-1] + b',"event_type":"x"}')],
    )
    assert worker.registry.get_sample_value("churnwatch_customers_expired_total") == 1
    assert customer_ids(worker) == {"new"}
    health = emitter.on(worker.settings.topics.health)
    assert health[-1][:2] == (b"old", None)
    assert worker.registry.get_sample_value("churnwatch_customers_tracked_limit") == 0


def customer_ids(worker: Worker) -> set[str]:
    """Customers in the table (partition clocks share it, under NUL-led keys)."""
    return {key for key, value in worker.customers.data.items() if is_customer(value)}


def test_a_customer_holding_an_event_of_the_swept_day_is_kept() -> None:
    # An event up to the allowed lateness past midnight is applied before that day is swept,
    # however the batches fall: expiring the record then would drop an event already applied.
    state = state_with(START + 10 * 3600)
    day0 = int(START // DAY)
    state.ring.add(day0, 1.0)
    assert is_expired(state, day0 + 31, 30)
    state.ring.add(day0 + 31, 1.0)
    state.last_seen = (day0 + 31) * DAY + 1800

    assert not is_expired(state, day0 + 31, 30)
