"""Producing JSON events to Kafka from the CLI (simulate, demo): keyed by customer, fast."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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


def produce_events(
    producer: KafkaProducer, topic: str, events: Iterable[dict[str, Any]], progress: Progress
) -> int:
    """Send events keyed by `customer_id` (the default partitioner co-partitions them)."""
    sent = 0
    for event in events:
        producer.send(topic, key=str(event["customer_id"]).encode(), value=orjson.dumps(event))
        sent += 1
        if sent % 1000 == 0:
            progress.advance(1000)
    progress.advance(sent % 1000)
    producer.flush()
    return sent


def send_heartbeats(producer: KafkaProducer, topic: str, occurred_at: float) -> int:
    """Advance event time on every partition of `topic` (see docs/topics.md, heartbeat)."""
    payload = orjson.dumps({"control": "heartbeat", "occurred_at": occurred_at})
    partitions = sorted(producer.partitions_for(topic) or ())
    for partition in partitions:
        producer.send(topic, value=payload, partition=partition)
    producer.flush()
    return len(partitions)
