"""Customer records kept decoded between batches (streams/state.py `DecodedRecords`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

import streams.state
from churnwatch.domain.customer import CustomerState
from churnwatch.metrics import WorkerMetrics
from config import load_settings
from streams.app import partition_engine
from streams.codecs import decode_customer, encode_customer
from streams.ingest import IngestBatch, NoBacklog, Topics
from streams.state import (
    ClockBook,
    DecodedRecords,
    PartitionIndex,
    TableChangelog,
    TableStore,
    stored_customers,
)
from tests.unit.test_retention import RING, START, FakeTable

DAY = 86_400.0


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the records the store decodes from the table."""
    made: list[str] = []

    def counting(value: bytes) -> CustomerState:
        state = decode_customer(value)
        made.append(state.customer_id)
        return state

    monkeypatch.setattr(streams.state, "decode_customer", counting)
    return made


def table_of(*customer_ids: str) -> tuple[FakeTable, PartitionIndex]:
    table = FakeTable()
    for customer_id in customer_ids:
        table.data[customer_id] = encode_customer(CustomerState.new(customer_id, 2, START, RING))
    return table, PartitionIndex(table)


def batch(table: FakeTable, index: PartitionIndex, decoded: DecodedRecords) -> TableStore:
    return TableStore(table, index, TableChangelog(table), decoded)


def test_a_record_written_by_one_batch_is_not_decoded_again_by_the_next(
    decodes: list[str],
) -> None:
    table, index = table_of("a")
    decoded = DecodedRecords(10)
    first = batch(table, index, decoded)
    state = first.get("a")
    assert state is not None
    state.events = 3
    first.put(state)
    asyncio.run(first.flush())
    assert decodes == ["a"]

    again = batch(table, index, decoded).get("a")

    assert again is state
    assert decodes == ["a"]
    assert decode_customer(table.data["a"]).events == 3  # the table has what it serves


def test_a_value_changed_behind_the_cache_is_decoded_afresh(decodes: list[str]) -> None:
    """A restore or a rebalance replaces the table's value: the kept record is not served."""
    table, index = table_of("a")
    decoded = DecodedRecords(10)
    kept = batch(table, index, decoded).get("a")
    restored = CustomerState.new("a", 2, START, RING)
    restored.events = 5
    table.data["a"] = encode_customer(restored)

    now = batch(table, index, decoded).get("a")

    assert now is not kept
    assert now is not None
    assert now.events == 5
    assert decodes == ["a", "a"]
    del table.data["a"]
    assert batch(table, index, decoded).get("a") is None


def test_a_sweep_reads_through_the_cache_and_never_evicts(decodes: list[str]) -> None:
    """A day's sweep of a partition bigger than the cache would only churn it."""
    table, index = table_of("a", "b", "c")
    decoded = DecodedRecords(2)
    store = batch(table, index, decoded)
    held = store.get("a")

    swept = {state.customer_id: state for state in store.in_partition(2)}

    assert swept["a"] is held
    assert len(decoded) == 2  # "a" and the first of "b", "c" the sweep decoded
    assert decodes.count("a") == 1
    again = {state.customer_id: state for state in batch(table, index, decoded).in_partition(2)}
    assert again["a"] is held
    assert decodes.count("a") == 1
    assert len(decodes) == 4  # the one of "b", "c" not kept is decoded by each sweep


def test_the_figures_pass_reads_kept_records_and_keeps_none_itself(decodes: list[str]) -> None:
    """Between batches (the figures timer holds the batch lock) a kept record is exact; a
    record the pass decodes is not kept, nor one whose table value changed served."""
    table, index = table_of("a", "b", "c")
    decoded = DecodedRecords(10)
    held = batch(table, index, decoded).get("a")
    replaced = CustomerState.new("b", 2, START, RING)
    replaced.events = 4
    batch(table, index, decoded).get("b")
    table.data["b"] = encode_customer(replaced)
    del decodes[:]

    read = {state.customer_id: state for state in stored_customers(table, index, 2, decoded)}

    assert read["a"] is held
    assert read["b"].events == 4
    assert sorted(decodes) == ["b", "c"]
    assert len(decoded) == 2  # "a", and "b" as the batch read it (never served again)
    assert [s.customer_id for s in stored_customers(table, index, 2, decoded)] == list(read)
    assert sorted(decodes) == ["b", "b", "c", "c"]


def test_the_least_recently_written_record_goes_first(decodes: list[str]) -> None:
    table, index = table_of("a", "b", "c")
    decoded = DecodedRecords(2)
    for customer_id in ("a", "b", "c"):
        store = batch(table, index, decoded)
        state = store.get(customer_id)
        assert state is not None
        state.events += 1
        store.put(state)
        asyncio.run(store.flush())
    assert len(decoded) == 2
    decodes.clear()

    for customer_id in ("c", "b", "a"):
        batch(table, index, decoded).get(customer_id)

    assert decodes == ["a"]


def test_an_expired_or_set_aside_record_is_dropped_when_written(decodes: list[str]) -> None:
    table, index = table_of("a", "b")
    decoded = DecodedRecords(10)
    store = batch(table, index, decoded)
    for state in store.in_partition(2):
        if state.customer_id == "a":
            store.delete(state)
        else:
            state.events = 4
            store.put(state)  # set aside (encoded) when the sweep moves on
    list(store.in_partition(2))  # the sweep's end sets the last record aside too
    asyncio.run(store.flush())

    assert len(decoded) == 0
    assert "a" not in table.data
    b = batch(table, index, decoded).get("b")
    assert b is not None
    assert b.events == 4


def test_none_are_kept_without_capacity(decodes: list[str]) -> None:
    table, index = table_of("a")
    decoded = DecodedRecords(0)
    for _ in range(2):
        batch(table, index, decoded).get("a")
    assert len(decoded) == 0
    assert decodes == ["a", "a"]


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class FailingEmitter:
    """Refuses every output: a batch that evaluates a day then fails."""

    async def send(self, topic: str, key: Any, value: Any, headers: Any) -> None:
        raise ConnectionError("broker gone")

    async def flush(self) -> None:
        return None

    async def record(self, closed: Any) -> bool:
        return True


def test_a_failed_batch_drops_every_decoded_record() -> None:
    """Its records may hold changes it never wrote: none may be served to the next batch."""
    settings = load_settings()
    table = FakeTable()
    decoded = DecodedRecords(100)
    sink = FailingEmitter()
    ingest = IngestBatch(
        engine=partition_engine(settings),
        customers=table,
        clocks=ClockBook(table),
        index=PartitionIndex(table),
        limits=settings.limits,
        topics=Topics("usage-events", "billing-events", "alerts", "dead-letters", "health"),
        emitter=sink,
        periods=sink,
        backlog=NoBacklog(),
        metrics=WorkerMetrics(CollectorRegistry()),
        decoded=decoded,
    )

    def usage(offset: int, customer: str, at: float) -> Message:
        event = {
            "event_id": f"{customer}-{offset}",
            "customer_id": customer,
            "occurred_at": at,
            "event_type": "login",
            "user_id": "u1",
            "quantity": 1.0,
        }
        return Message("usage-events", 0, offset, customer.encode(), orjson.dumps(event))

    first = [usage(n, f"c{n}", START + n) for n in range(5)]
    asyncio.run(ingest.handle(first))
    assert len(decoded) == 5

    with pytest.raises(ConnectionError):  # the next day closes: health to publish, refused
        asyncio.run(ingest.handle([usage(5, "c0", START + 3 * DAY)]))

    assert len(decoded) == 0
