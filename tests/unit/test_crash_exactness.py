"""A partition's result does not depend on how its inputs were read, nor on where it crashed.

The engine folds a simulated history (usage and billing, every planted risk) read in batches of
random sizes per input, as a consumer may deliver them: one input can run days ahead of the
other. At random batches the worker "crashes" mid-write: every earlier batch is on the
changelog, but only some of this batch's customer records and not its partition clock; the
restored worker reads again from before the clock. Records, alert transitions and closed
period figures must equal a clean run's. (The fault tests do the same with real processes.)
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from churnwatch import simulation
from churnwatch.domain.billing import billing_from_payload
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.events import Heartbeat, usage_from_payload
from churnwatch.domain.partition import Item, PartitionClock, PartitionEngine
from config import load_settings
from streams.app import partition_engine

PARTITIONS = 2
PLAN = simulation.Plan(
    customers=120, days=60, seed=23, decay_fraction=0.05, stop_fraction=0.05,
    churn_fraction=0.05, new_fraction=0.06, dunning_fraction=0.05, downgrade_fraction=0.05,
    recover_fraction=0.05,
)  # fmt: skip
KINDS = ("usage", "billing")
# Written with a record's next change, so its stored value depends on when that came: the
# behaviour it drives is what the transitions and figures compare.
PROGRESS = frozenset({"ed"})
USAGE_SIZES = (0, 1, 40, 300, 1500)
BILLING_SIZES = (0, 1, 5, 60)


@dataclass(frozen=True)
class History:
    """Each input's items per partition, in offset order, ending in a heartbeat past the end."""

    inputs: dict[str, list[list[Item]]]


def make_history() -> History:
    customers = simulation.customers_for(PLAN)
    limits = load_settings().limits
    inputs: dict[str, list[list[Item]]] = {kind: [[] for _ in range(PARTITIONS)] for kind in KINDS}
    now = PLAN.end + 86_400
    for payload in simulation.events(PLAN, customers):
        key = payload["customer_id"].encode()
        item = usage_from_payload(payload, key, now=now, limits=limits)
        inputs["usage"][zlib.crc32(key) % PARTITIONS].append(item)
    for payload in simulation.billing_events(PLAN, customers):
        key = payload["customer_id"].encode()
        inputs["billing"][zlib.crc32(key) % PARTITIONS].append(
            billing_from_payload(payload, key, now=now, limits=limits)
        )
    for kind in KINDS:
        for items in inputs[kind]:
            items.append(Heartbeat(PLAN.end + 3 * 3600, kind))
    return History(inputs)


class DictStore:
    """The customers table of one partition; knows which records a batch wrote (`put`)."""

    def __init__(self, states: dict[str, CustomerState] | None = None) -> None:
        self.states = states or {}
        self.written: set[str] = set()

    def get(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    def put(self, state: CustomerState) -> None:
        self.states[state.customer_id] = state
        self.written.add(state.customer_id)

    def in_partition(self, partition: int) -> list[CustomerState]:
        return list(self.states.values())

    def tracked(self, partition: int) -> int:
        return len(self.states)

    def delete(self, state: CustomerState) -> None:
        self.states.pop(state.customer_id, None)
        self.written.add(state.customer_id)

    def changelog(self, before: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """What the changelog holds after this batch: `before`, then the records it wrote."""
        after = dict(before)
        for customer_id in self.written:
            state = self.states.get(customer_id)
            if state is None:
                after.pop(customer_id, None)
            else:
                after[customer_id] = _copy(state)
        self.written = set()
        return after


def _copy(state: CustomerState) -> dict[str, Any]:
    """A record as the changelog keeps it (nothing shared with the live state)."""
    plain: dict[str, Any] = orjson.loads(orjson.dumps(state.to_plain()))
    return plain


@dataclass
class Outcome:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    transitions: set[tuple[str, str, int, int, tuple[str, ...]]] = field(default_factory=set)
    periods: dict[tuple[int, str], Any] = field(default_factory=dict)


def run(engine: PartitionEngine, history: History, rng: random.Random | None) -> Outcome:
    """Fold every partition; with `rng`, random batch sizes and crashes (None: a clean run)."""
    outcome = Outcome()
    for partition in range(PARTITIONS):
        inputs = {kind: history.inputs[kind][partition] for kind in KINDS}
        store, clock = DictStore(), PartitionClock(partition)
        read = dict.fromkeys(KINDS, 0)
        # What the changelog holds: records, and the clock with the offsets it expects next.
        saved: tuple[dict[str, dict[str, Any]], PartitionClock, dict[str, int]] = (
            {},
            clock.copy(),
            dict(read),
        )
        while any(read[kind] < len(inputs[kind]) for kind in KINDS):
            batch: list[tuple[int, Item]] = []
            for kind, sizes in (("usage", USAGE_SIZES), ("billing", BILLING_SIZES)):
                size = (1000 if kind == "usage" else 50) if rng is None else rng.choice(sizes)
                offsets = range(read[kind], min(len(inputs[kind]), read[kind] + size))
                batch.extend((offset, inputs[kind][offset]) for offset in offsets)
                read[kind] = max(read[kind], offsets.stop)
            unread = frozenset(kind for kind in KINDS if read[kind] < len(inputs[kind]))
            result = engine.process(clock, batch, store, unread)
            outcome.transitions.update(
                (a.alert_id, a.status, a.as_of_day, a.risk_score, tuple(r.code for r in a.reasons))
                for a in result.alerts
            )
            for closed in result.closed:
                outcome.periods[partition, closed.period.label] = closed.figures
            records, clock_saved, offsets_saved = saved
            written = store.changelog(records)
            if rng is None or rng.random() > 0.08:
                saved = (written, clock.copy(), dict(read))
                continue
            # Crash mid-write: some of this batch's records reached the changelog, its clock
            # did not. Restore, and read again from a little before the saved clock.
            changed = [cid for cid in written if records.get(cid) != written[cid]]
            records = records | {
                cid: written[cid] for cid in rng.sample(changed, rng.randint(0, len(changed)))
            }
            store = DictStore({cid: CustomerState.from_plain(p) for cid, p in records.items()})
            clock = PartitionClock.from_plain(orjson.loads(orjson.dumps(clock_saved.to_plain())))
            read = {kind: max(0, offsets_saved[kind] - rng.randint(0, 500)) for kind in KINDS}
            saved = (records, clock_saved, offsets_saved)
        outcome.records |= {
            cid: {k: v for k, v in plain.items() if k not in PROGRESS}
            for cid, plain in store.changelog(saved[0]).items()
        }
    return outcome


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[PartitionEngine, History, Outcome]:
    engine = partition_engine(load_settings(data_dir=tmp_path_factory.mktemp("engine")))
    history = make_history()
    return engine, history, run(engine, history, None)


def test_the_clean_run_alerts_and_closes_periods(
    world: tuple[PartitionEngine, History, Outcome],
) -> None:
    _, _, clean = world
    opened = {t for t in clean.transitions if t[1] == "opened"}
    assert len(opened) >= 10
    assert {t[1] for t in clean.transitions} >= {"opened", "resolved", "churned"}
    assert len(clean.records) == PLAN.customers
    assert {label for _, label in clean.periods} >= {"2020-01"}


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1))
@example(seed=56043813)  # a crashed batch closed two periods: it had folded billing history
def test_any_reading_pace_and_any_crash_give_the_clean_result(
    world: tuple[PartitionEngine, History, Outcome], seed: int
) -> None:
    engine, history, clean = world

    faulty = run(engine, history, random.Random(seed))

    differing = {
        cid: sorted(
            k
            for k in set(r) | set(faulty.records.get(cid, {}))
            if r.get(k) != faulty.records[cid].get(k)
        )
        for cid, r in clean.records.items()
        if faulty.records.get(cid) != r
    }
    assert not differing, f"records differ: {differing}"
    assert set(faulty.records) == set(clean.records)
    assert faulty.transitions == clean.transitions
    assert faulty.periods == clean.periods
