"""The worker's batch path in one process, without Kafka or Faust: where per-event CPU goes.

`python -m benchmarks.fold` folds a live-shaped workload (every customer ~50 usage events within
half an hour of event time) through the real `IngestBatch`: decoding, validation, dedupe,
state, rules, the changelog encoding of every written record, alerts and metrics. Only the
transport is left out: messages come from a list, records go to a dict. It measures CPU
seconds per million events for single events and envelopes side by side, and the memory the
table's values hold per customer; `--profile` adds cProfile's top functions.

It is the quick loop for work on the hot path (seconds, not the minutes of `make bench`);
the worker's figures still come from `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import random
import sys
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from benchmarks.workload import EVENT_TYPES, customer_id
from churnwatch.metrics import WorkerMetrics
from config.settings import load_settings
from streams.app import partition_engine
from streams.codecs import CustomerCodec
from streams.envelopes import EnvelopeBuffer
from streams.ingest import IngestBatch, NoBacklog, Topics
from streams.state import ClockBook, DecodedRecords, PartitionIndex

USAGE = "usage-events"
START = 1_704_067_200.0  # 2024-01-01T00:00:00Z
SPAN_SECONDS = 1800.0  # the live shape: every event within half an hour of event time


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class MemoryTable:
    """What the batch path uses of a Faust table: `data`, and changelog sends (encoded)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog_records = 0
        self.changelog_bytes = 0
        self._codec = CustomerCodec()

    def send_changelog(
        self, partition: int, key: Any, value: Any, value_serializer: str | None = None
    ) -> None:
        encoded = value if value is None or isinstance(value, bytes) else self._codec.dumps(value)
        self.changelog_records += 1
        self.changelog_bytes += len(key) + (0 if encoded is None else len(encoded))


class Sink:
    """Emitter and period sink in one: counts what would be sent."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, key: Any, value: Any, headers: Any) -> None:
        self.sent += 1

    async def flush(self) -> None:
        return None

    async def record(self, closed: Any) -> bool:
        return True


def live_events(customers: int, events: int, seed: int) -> list[dict[str, Any]]:
    """`events` usage events of `customers` customers in half an hour, in event-time order."""
    rng = random.Random(seed)
    per_customer, extra = divmod(events, customers)
    made = []
    for number in range(customers):
        cid = customer_id(number)
        users = rng.randint(1, 8)
        for k in range(per_customer + (number < extra)):
            made.append(
                {
                    "event_id": f"{cid}-l{k:04d}",
                    "customer_id": cid,
                    "occurred_at": round(START + rng.uniform(0, SPAN_SECONDS), 3),
                    "event_type": rng.choice(EVENT_TYPES),
                    "user_id": f"u{rng.randint(1, users)}",
                    "quantity": round(rng.uniform(0.5, 5), 3),
                }
            )
    made.sort(key=lambda event: event["occurred_at"])
    return made


def messages(events: list[dict[str, Any]], partitions: int, envelope_size: int) -> list[Message]:
    """The events as Kafka messages keyed by customer, single or in envelopes."""
    buffer = EnvelopeBuffer(envelope_size, SPAN_SECONDS / 2)
    offsets = [0] * partitions
    made: list[Message] = []

    def add(records: list[Any]) -> None:
        for _, key, value, _ in records:
            partition = zlib.crc32(key) % partitions
            made.append(Message(USAGE, partition, offsets[partition], key, value))
            offsets[partition] += 1

    for event in events:
        key = event["customer_id"].encode()
        add(buffer.add("usage", key, orjson.dumps(event), event["occurred_at"]))
    add(buffer.drain())
    return made


def batches(made: list[Message], size: int) -> Iterator[list[Message]]:
    """Batches of about `size` events, as `take_events` hands them over."""
    batch: list[Message] = []
    counted = 0
    for message in made:
        batch.append(message)
        counted += message.value.count(b'"event_id"') if message.value else 1
        if counted >= size:
            yield batch
            batch, counted = [], 0
    if batch:
        yield batch


def ingest_for(table: MemoryTable, sink: Sink) -> IngestBatch:
    """The worker's batch path on the default settings, writing to `table`."""
    settings = load_settings()
    return IngestBatch(
        engine=partition_engine(settings),
        customers=table,
        clocks=ClockBook(table),
        index=PartitionIndex(table),
        limits=settings.limits,
        topics=Topics(USAGE, "billing-events", "alerts", "dead-letters", "health"),
        emitter=sink,
        periods=sink,
        backlog=NoBacklog(),
        metrics=WorkerMetrics(CollectorRegistry()),
        decoded=DecodedRecords(settings.state.decoded_cache_max),
    )


def fold(made: list[Message], batch_size: int, profile: cProfile.Profile | None) -> dict[str, Any]:
    """CPU seconds of folding every batch (and what the changelog got)."""
    table = MemoryTable()
    sink = Sink()
    ingest = ingest_for(table, sink)
    loop = asyncio.new_event_loop()
    work = list(batches(made, batch_size))
    # A worker's input is not resident, and it freezes what it built at start (cli.py): the
    # collector's full passes must not walk this process's pre-built messages either.
    gc.collect()
    gc.freeze()
    if profile is not None:
        profile.enable()
    started = time.process_time()
    for batch in work:
        loop.run_until_complete(ingest.handle(batch))
    seconds = time.process_time() - started
    if profile is not None:
        profile.disable()
    gc.unfreeze()
    loop.close()
    events = sum(m.value.count(b'"event_id"') for m in made if m.value)
    return {
        "events": events,
        "messages": len(made),
        "cpu_seconds": round(seconds, 3),
        "cpu_s_per_m_events": round(seconds / events * 1e6, 1),
        "events_per_cpu_second": round(events / seconds),
        "changelog_records": table.changelog_records,
        "changelog_bytes_per_event": round(table.changelog_bytes / events, 1),
        "outputs_sent": sink.sent,
    }


def held_bytes_per_customer(made: list[Message], batch_size: int) -> float:
    """Bytes still allocated after a fold, per customer: the table's values, mostly."""
    table = MemoryTable()
    ingest = ingest_for(table, Sink())
    loop = asyncio.new_event_loop()
    work = list(batches(made, batch_size))
    gc.collect()
    tracemalloc.start()
    for batch in work:
        loop.run_until_complete(ingest.handle(batch))
    gc.collect()
    held = sum(stat.size for stat in tracemalloc.take_snapshot().statistics("filename"))
    tracemalloc.stop()
    loop.close()
    customers = sum(1 for key in table.data if not key.startswith("\x00"))
    return held / max(customers, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fold",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--envelope-size", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4000, help="events per batch (worker: 4000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", choices=("single", "envelopes"))
    parser.add_argument("--profile", action="store_true", help="cProfile; top 25 by self time")
    parser.add_argument("--memory", action="store_true", help="also trace the table's bytes")
    args = parser.parse_args(argv)

    events = live_events(args.customers, args.events, args.seed)
    shapes = {"single": 1, "envelopes": args.envelope_size}
    results: dict[str, Any] = {}
    for name, size in shapes.items():
        if args.only and name != args.only:
            continue
        made = messages(events, args.partitions, size)
        profile = cProfile.Profile() if args.profile else None
        result = fold(made, args.batch, profile)
        if args.memory:
            result["held_bytes_per_customer"] = round(held_bytes_per_customer(made, args.batch))
        results[name] = result
        print(f"{name}: {json.dumps(result)}", file=sys.stderr)
        if profile is not None:
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue(), file=sys.stderr)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
