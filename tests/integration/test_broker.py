"""The embedded Kafka broker is a real broker: it round-trips messages, keeps them across a
restart of the same data directory, and refuses to start on a taken port."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from churnwatch.broker import EmbeddedKafka, free_port
from churnwatch.exceptions import BrokerError

if TYPE_CHECKING:
    from tests.integration.conftest import CreateTopics

pytestmark = pytest.mark.integration


def _consume(consumer: KafkaConsumer, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Poll until `expected` records arrived (or time ran out), then briefly for extras."""
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    for batch in consumer.poll(timeout_ms=500).values():
        records.extend(batch)
    return records


def test_round_trip_100_messages_over_4_partitions(
    kafka_bootstrap: str, unique_name: Callable[[str], str], create_topics: CreateTopics
) -> None:
    topic, group = unique_name("topic"), unique_name("group")
    create_topics([topic], 4)
    sent = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(100)]

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in sent]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=10)  # raises if the broker rejected the message
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        records = _consume(consumer, len(sent))
    finally:
        consumer.close()

    received = [(r.key, r.value) for r in records]
    assert sorted(received) == sorted(sent)
    assert {r.partition for r in records} == {0, 1, 2, 3}
    # Kafka orders per partition only: each partition must hold its keys in send order.
    for partition in range(4):
        in_partition = [(r.key, r.value) for r in records if r.partition == partition]
        assert in_partition == [kv for kv in sent if kv in in_partition]


def test_restart_on_same_data_dir_keeps_messages(kafka_lib_dir: Path, tmp_path: Path) -> None:
    data_dir, port, topic = tmp_path / "kafka", free_port(), "durable"

    with EmbeddedKafka(kafka_lib_dir, data_dir, port=port, fresh=True) as kafka:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        try:  # auto topic creation is on, so the first send creates the topic
            producer.send(topic, key=b"k", value=b"survives a restart").get(timeout=30)
        finally:
            producer.close()
    cluster_id = (data_dir / "cluster.id").read_text()

    with EmbeddedKafka(kafka_lib_dir, data_dir, port=port) as kafka:
        consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
        try:  # no consumer group: assign the partition directly, which is quicker
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            records = _consume(consumer, 1)
        finally:
            consumer.close()

    assert [(r.key, r.value) for r in records] == [(b"k", b"survives a restart")]
    assert (data_dir / "cluster.id").read_text() == cluster_id


def test_port_in_use_is_a_clear_broker_error(kafka_lib_dir: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        kafka = EmbeddedKafka(kafka_lib_dir, tmp_path / "kafka", port=port)
        with pytest.raises(BrokerError, match=rf"port {port} .*in use"):
            kafka.start()
    assert not kafka.running
