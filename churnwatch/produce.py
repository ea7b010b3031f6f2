"""Producing JSON events to Kafka from the CLI (simulate, replay, demo): keyed by customer, fast."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson
from kafka import KafkaProducer

from churnwatch.progress import Progress


def make_producer(bootstrap: list[str], security: Mapping[str, Any] | None = None) -> KafkaProducer:
    """A producer tuned for throughput: batches by size and a short linger, acks from all.

    `security`: kafka-python's options for the settings (`kafka_client.kafka_python_options`).
    """
    return KafkaProducer(
        **(security or {}),
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
        client_id="churnwatch-producer",
    )


Record = tuple[str, bytes | None, bytes, float]  # kind, key, value, event time


def produce(
    producer: KafkaProducer,
    topics: Mapping[str, str],
    records: Iterable[Record],
    progress: Progress,
    flush_every: float,
    envelope_size: int = 1,
) -> Counter[str]:
    """Send `(kind, key, value, time)` records to `topics[kind]`; count messages by kind.

    Keys are customer ids, so the default partitioner puts a customer's usage and billing
    events in the same partition of the two (co-partitioned) topics. Kafka keeps no order
    across topics, and the producer batches each partition on its own: at replay speed a
    billing record could reach the log after usage records hours of event time newer, and be
    late. Flushing every `flush_every` seconds of event time (half the allowed lateness) keeps
    the inputs within the lateness of each other. With `envelope_size` > 1 each customer's
    events go in envelopes, held at most `flush_every` of event time (`streams.envelopes`).
    """
    from streams.envelopes import enveloped

    events = 0  # input records read: the progress counts events, not messages

    def each(records: Iterable[Record]) -> Iterator[Record]:
        nonlocal events
        for record in records:
            events += 1
            if events % 1000 == 0:
                progress.advance(1000)
            yield record

    stream = each(records)
    if envelope_size > 1:
        stream = enveloped(stream, envelope_size, flush_every)
    sent: Counter[str] = Counter()
    flushed_at: float | None = None
    for kind, key, value, at in stream:
        if flushed_at is None:
            flushed_at = at
        elif at - flushed_at >= flush_every:
            producer.flush()
            flushed_at = at
        producer.send(topics[kind], key=key, value=value)
        sent[kind] += 1
    progress.advance(events % 1000)
    producer.flush()
    return sent


def encode(kind: str, event: dict[str, Any]) -> Record:
    """A JSON event as a record keyed by its customer id."""
    return kind, str(event["customer_id"]).encode(), orjson.dumps(event), event["occurred_at"]


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
