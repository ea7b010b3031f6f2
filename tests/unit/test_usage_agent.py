"""The usage agent through Faust's own test seam (`agent.test_context()`), no broker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from churnwatch.domain.customer import CustomerState
from config import load_settings
from streams.app import PRODUCER_BATCH_BYTES, MemoryPeriodSink, Worker, create_worker
from streams.ingest import NoBacklog, NoRewind

DAY = 86_400.0
START = 1_577_836_800.0  # 2020-01-01


class ListEmitter:
    """Collects what the worker would produce."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]] = []
        self.flushes = 0

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> None:
        self.sent.append((topic, key, value, headers))

    async def flush(self) -> None:
        self.flushes += 1

    def on(self, topic: str) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]]:
        return [(key, value, headers) for t, key, value, headers in self.sent if t == topic]


@pytest.fixture
def emitter() -> ListEmitter:
    return ListEmitter()


@pytest.fixture
def worker(tmp_path: Path, emitter: ListEmitter) -> Worker:
    settings = load_settings(
        data_dir=tmp_path, batch_within_seconds=0.01, allowed_lateness_seconds=0
    )
    worker = create_worker(
        settings,
        CollectorRegistry(),
        emitter=emitter,
        periods=MemoryPeriodSink(),
        backlog=NoBacklog(),
        owned=lambda: {0},  # test_context() delivers everything on partition 0
        rewinder=NoRewind(),
    )
    worker.app.finalize()
    worker.app.flow_control.resume()
    return worker


def usage(customer: str, at: float, quantity: float = 10.0, n: int = 0) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{customer}-{at}-{n}",
            "customer_id": customer,
            "occurred_at": at,
            "event_type": "api_call",
            "quantity": quantity,
        }
    )


def sample_sum(worker: Worker, name: str) -> float:
    return sum(
        sample.value
        for family in worker.registry.collect()
        for sample in family.samples
        if sample.name == name
    )


async def drain(worker: Worker, agent_puts: int) -> None:
    """Wait until the agent's batches have taken every message put so far."""
    sample = "churnwatch_batch_events_sum"
    for _ in range(200):
        done = worker.registry.get_sample_value(sample) or 0
        if done >= agent_puts:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"agent handled {done} of {agent_puts} messages")


def test_agent_folds_events_into_one_record_per_customer(worker: Worker) -> None:
    async def scenario() -> CustomerState:
        async with worker.agents["ingest"].test_context() as agent:
            for n in range(5):
                await agent.put(usage("c-1", START + n * 60, n=n), key=b"c-1")
            await drain(worker, 5)
        state: CustomerState = worker.customer("c-1")
        return state

    state = asyncio.run(scenario())
    assert state.events == 5
    assert state.ring.total(0, 10**6) == pytest.approx(50.0)
    assert state.first_seen == START
    assert state.last_seen == START + 4 * 60
    # test_context() delivers on an internal topic: sum over the topic label.
    assert sample_sum(worker, "churnwatch_events_processed_total") == 5


def test_agent_dead_letters_bad_input_and_keeps_going(worker: Worker, emitter: ListEmitter) -> None:
    async def scenario() -> None:
        async with worker.agents["ingest"].test_context() as agent:
            await agent.put(b"{not json", key=b"c-1")
            await agent.put(orjson.dumps({"customer_id": "c-1"}), key=b"c-1")
            await agent.put(usage("c-1", START), key=b"c-1")
            await drain(worker, 3)

    asyncio.run(scenario())
    dead = emitter.on(worker.settings.topics.dead_letters)
    assert [dict(headers or [])["churnwatch.reason"] for _, _, headers in dead] == [
        b"not_json",
        b"missing_field",
    ]
    assert dead[0][1] == b"{not json"  # the original bytes, untouched
    assert worker.customer("c-1").events == 1


def test_agent_opens_an_alert_when_a_customer_goes_silent(
    worker: Worker, emitter: ListEmitter
) -> None:
    async def scenario() -> None:
        async with worker.agents["ingest"].test_context() as agent:
            puts = 0
            for day in range(30):
                for customer in ("steady", "silent"):
                    if customer == "silent" and day >= 20:
                        continue
                    await agent.put(
                        usage(customer, START + day * DAY + 3600), key=customer.encode()
                    )
                    puts += 1
            await drain(worker, puts)

    asyncio.run(scenario())
    alerts = [orjson.loads(value) for _, value, _ in emitter.on(worker.settings.topics.alerts)]
    assert {a["customer_id"] for a in alerts} == {"silent"}
    opened = [a for a in alerts if a["status"] == "opened"]
    assert len(opened) == 1
    assert "inactive" in {r["code"] for a in alerts for r in a["reasons"]}


class ScriptedRewinder:
    """Records rewinds; the log holds offsets from `earliest` on."""

    def __init__(self, earliest: int = 0) -> None:
        self.earliest = earliest
        self.calls: list[tuple[str, int, int]] = []

    async def rewind(self, topic: str, partition: int, offset: int) -> bool:
        self.calls.append((topic, partition, offset))
        return offset >= self.earliest


def test_a_jump_in_offsets_rewinds_and_applies_nothing_past_it(
    tmp_path: Path, emitter: ListEmitter
) -> None:
    rewinder = ScriptedRewinder()
    worker = plain_worker(tmp_path, emitter, rewinder)
    topic = worker.settings.topics.usage
    first = [Msg(topic, 0, n, b"c-1", usage("c-1", START + n, n=n)) for n in range(3)]
    asyncio.run(worker.ingest.handle(first))
    # Offsets 3 and 4 never arrive: 5 and 6 must wait for them, uncommitted.
    later = [Msg(topic, 0, n, b"c-1", usage("c-1", START + n, n=n)) for n in (5, 6)]
    asyncio.run(worker.ingest.handle(later))

    assert rewinder.calls == [(topic, 0, 3)]
    assert all(m.acked for m in later)  # marked so Faust never commits their offsets
    assert worker.customer("c-1").events == 3
    assert sample_sum(worker, "churnwatch_events_rewound_total") == 2
    # Read again from 3, everything applies once.
    again = [Msg(topic, 0, n, b"c-1", usage("c-1", START + n, n=n)) for n in range(3, 7)]
    asyncio.run(worker.ingest.handle(again))
    assert worker.customer("c-1").events == 7


def test_offsets_removed_by_retention_are_a_real_gap(tmp_path: Path, emitter: ListEmitter) -> None:
    rewinder = ScriptedRewinder(earliest=10)
    worker = plain_worker(tmp_path, emitter, rewinder)
    topic = worker.settings.topics.usage
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 0, b"c-1", usage("c-1", START))]))
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 12, b"c-1", usage("c-1", START + 5, n=1))]))

    assert rewinder.calls == [(topic, 0, 1)]
    assert worker.customer("c-1").events == 2


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    acked: bool = False


def plain_worker(
    tmp_path: Path,
    emitter: ListEmitter,
    rewinder: ScriptedRewinder | None = None,
    owned: frozenset[int] = frozenset({0}),
    **overrides: Any,
) -> Worker:
    """A worker whose batches the test hands over itself (no Faust stream), of `owned`."""
    settings = load_settings(data_dir=tmp_path, allowed_lateness_seconds=3600, **overrides)
    return create_worker(
        settings,
        CollectorRegistry(),
        emitter=emitter,
        periods=MemoryPeriodSink(),
        backlog=NoBacklog(),
        owned=lambda: set(owned),
        rewinder=rewinder or ScriptedRewinder(),
    )


def test_a_partition_never_processed_is_read_from_the_start_of_the_log(
    tmp_path: Path, emitter: ListEmitter
) -> None:
    # Around a rebalance a new group's consumer can skip a never-committed partition's first
    # records (seeking to "committed" does not move a partition that has none): with no
    # clock yet, offset 0 is the one expected.
    rewinder = ScriptedRewinder()
    worker = plain_worker(tmp_path, emitter, rewinder)
    topic = worker.settings.topics.usage
    skipped = [Msg(topic, 0, n, b"c-1", usage("c-1", START + n, n=n)) for n in (4, 5)]
    asyncio.run(worker.ingest.handle(skipped))

    assert rewinder.calls == [(topic, 0, 0)]
    assert all(m.acked for m in skipped)  # never committed past the missing offsets
    assert "c-1" not in worker.customers.data
    assert sample_sum(worker, "churnwatch_events_processed_total") == 0
    again = [Msg(topic, 0, n, b"c-1", usage("c-1", START + n, n=n)) for n in range(6)]
    asyncio.run(worker.ingest.handle(again))
    assert worker.customer("c-1").events == 6
    assert rewinder.calls == [(topic, 0, 0)]


def test_a_partition_never_processed_from_a_trimmed_log_starts_where_it_can(
    tmp_path: Path, emitter: ListEmitter
) -> None:
    rewinder = ScriptedRewinder(earliest=10)
    worker = plain_worker(tmp_path, emitter, rewinder)
    topic = worker.settings.topics.usage
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 10, b"c-1", usage("c-1", START))]))

    assert rewinder.calls == [(topic, 0, 0)]  # offsets before 10 are gone: accepted
    assert worker.customer("c-1").events == 1


class TableWatchingEmitter(ListEmitter):
    """Notes, at each flush, which customers the table holds already."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[str, object] = {}
        self.held_at_flush: list[set[str]] = []

    async def flush(self) -> None:
        await super().flush()
        self.held_at_flush.append(set(self.table))


def test_a_batchs_outputs_reach_the_broker_before_its_records(tmp_path: Path) -> None:
    # A crash can keep some of a batch's records without its clock; reading the batch again
    # then skips what they hold, so their dead letters, alerts and health must be out first.
    emitter = TableWatchingEmitter()
    worker = plain_worker(tmp_path, emitter)
    emitter.table = worker.customers.data
    topic = worker.settings.topics.usage
    batch = [Msg(topic, 0, 0, b"c-1", b"{not json"), Msg(topic, 0, 1, b"c-1", usage("c-1", START))]

    asyncio.run(worker.ingest.handle(batch))

    assert len(emitter.on(worker.settings.topics.dead_letters)) == 1
    assert emitter.held_at_flush == [set()]  # flushed once, before c-1's record was written
    assert "c-1" in worker.customers.data
    quiet = [Msg(topic, 0, 2, b"c-1", usage("c-1", START + 60, n=2))]
    asyncio.run(worker.ingest.handle(quiet))
    assert emitter.flushes == 1  # nothing sent: nothing to wait for


def test_the_producer_takes_a_batchs_records_for_a_partition_in_one_request(
    tmp_path: Path, emitter: ListEmitter
) -> None:
    # A batch hands its ~1,000 records (~300 B each) to the producer at once, all to one
    # partition when the worker owns one; with aiokafka's 16 KiB a partition's batch filled
    # after ~50, and the rest waited for the sender (streams/app.py).
    worker = plain_worker(tmp_path, emitter)
    producer = worker.app.producer._settings_default()

    assert producer["max_batch_size"] == PRODUCER_BATCH_BYTES
    assert PRODUCER_BATCH_BYTES >= 1_000 * 300
    assert producer["max_batch_size"] < producer["max_request_size"]


def test_a_batchs_records_get_a_turn_of_the_event_loop_once_written(
    tmp_path: Path, emitter: ListEmitter
) -> None:
    # The producer's sender is a task on the same loop: a batch that returned without a turn
    # left its records in the producer's buffer until the next batch's work was done.
    worker = plain_worker(tmp_path, emitter)
    topic = worker.settings.topics.usage
    seen_written: list[bool] = []

    async def ticker() -> None:
        while True:
            seen_written.append("c-1" in worker.customers.data)
            await asyncio.sleep(0)

    async def scenario() -> None:
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker's first look: nothing written yet
        await worker.ingest.handle([Msg(topic, 0, 0, b"c-1", usage("c-1", START))])
        ticking.cancel()

    asyncio.run(scenario())

    assert seen_written[0] is False
    assert seen_written[-1] is True  # the loop turned after c-1's record was written
