"""What `IngestBatch` relies on to get a batch's records out without waiting for them: a short
turn of the event loop lets aiokafka's sender task write what it holds to the broker, which
then appends it while the loop is busy with the next batch (streams/ingest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from streams.app import PRODUCER_BATCH_BYTES
from streams.ingest import SENDER_TURN_SECONDS

if TYPE_CHECKING:
    from tests.integration.conftest import CreateTopics

pytestmark = pytest.mark.integration

RECORDS = 500
BUSY_SECONDS = 1.0  # the next batch's work: the loop does not turn


def on_broker(bootstrap: str, topic: str) -> int:
    """How many records the topic's partition holds (read without the event loop)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        return int(consumer.end_offsets([partition])[partition])
    finally:
        consumer.close()


def test_a_turn_of_the_loop_puts_buffered_records_on_the_broker(
    kafka_bootstrap: str, unique_name: Callable[[str], str], create_topics: CreateTopics
) -> None:
    topic = unique_name("turn")
    create_topics([topic], 1)

    async def scenario() -> tuple[int, int]:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, max_batch_size=PRODUCER_BATCH_BYTES
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"warm-up", partition=0)  # metadata known
            for n in range(RECORDS):
                await producer.send(topic, b"x" * 300, key=str(n).encode(), partition=0)
            time.sleep(BUSY_SECONDS)  # busy, no turn: the records wait in the buffer
            without_turn = on_broker(kafka_bootstrap, topic) - 1
            await asyncio.sleep(SENDER_TURN_SECONDS)
            time.sleep(BUSY_SECONDS)  # busy again: the broker appends meanwhile
            after_turn = on_broker(kafka_bootstrap, topic) - 1
            await producer.flush()
            return without_turn, after_turn
        finally:
            await producer.stop()

    without_turn, after_turn = asyncio.run(scenario())

    assert without_turn == 0
    assert after_turn == RECORDS
