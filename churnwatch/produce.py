"""Producing JSON events to Kafka from the CLI (simulate, replay, demo): keyed by customer, fast."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import orjson
from kafka import KafkaProducer

from churnwatch.progress import Progress


def make_producer(bootstrap: list[str]) -> KafkaProducer:
    """A producer tuned for throughput: batches by size and a short linger, acks from all."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
        client_id="churnwatch-producer",
    )


def produce(
    producer: KafkaProducer,
    topics: Mapping[str, str],
    records: Iterable[tuple[str, bytes | None, bytes]],
    progress: Progress,
) -> Counter[str]:
    """Send `(kind, key, value)` records to `topics[kind]`; return how many of each kind.

    Keys are customer ids, so the default partitioner puts a customer's usage and billing
    events in the same partition of the two (co-partitioned) topics.
    """
    sent: Counter[str] = Counter()
    for count, (kind, key, value) in enumerate(records, start=1):
        producer.send(topics[kind], key=key, value=value)
        sent[kind] += 1
        if count % 1000 == 0:
            progress.advance(1000)
    progress.advance(sent.total() % 1000)
    producer.flush()
    return sent


def encode(kind: str, event: dict[str, object]) -> tuple[str, bytes | None, bytes]:
    """A JSON event as a `(kind, key, value)` record keyed by its customer id."""
    return kind, str(event["customer_id"]).encode(), orjson.dumps(event)


def send_heartbeats(producer: KafkaProducer, topics: Iterable[str], occurred_at: float) -> int:
    """Advance event time on every partition of each topic (docs/topics.md, heartbeat)."""
    payload = orjson.dumps({"control": "heartbeat", "occurred_at": occurred_at})
    sent = 0
    for topic in topics:
        for partition in sorted(producer.partitions_for(topic) or ()):
            producer.send(topic, value=payload, partition=partition)
            sent += 1
    producer.flush()
    return sent
