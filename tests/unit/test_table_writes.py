"""Batch writes: they name their partition to the table store (Faust's RocksDB store needs it),
and their changelog records go straight to the producer."""

from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import RecordMetadata, TopicPartition
from faust.streams import current_event
from structlog.testing import capture_logs

from streams.state import ProducerChangelog, put_in_partition


class RecordingData(dict[str, Any]):
    """A store that, like Faust's RocksDB store, asks the current event for the partition."""

    def __init__(self) -> None:
        super().__init__()
        self.partitions: list[int] = []

    def __setitem__(self, key: str, value: Any) -> None:
        event = current_event()
        assert event is not None, "no current event: RocksDB's store would assert here"
        self.partitions.append(event.message.partition)
        super().__setitem__(key, value)


class Table:
    def __init__(self) -> None:
        self.data = RecordingData()


def test_a_batch_write_tells_the_store_its_partition_and_leaves_no_event_behind() -> None:
    table = Table()

    put_in_partition(table, 3, "c-1", "state")
    put_in_partition(table, 0, "c-2", "other")

    assert table.data == {"c-1": "state", "c-2": "other"}
    assert table.data.partitions == [3, 0]
    assert current_event() is None


class MarkerKeepingData(dict[str, Any]):
    """Keeps a weak reference to each write's stand-in event, to see when it is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.markers: list[weakref.ref[Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.markers.append(weakref.ref(current_event()))
        super().__setitem__(key, value)


def test_a_batch_write_frees_its_stand_in_event_without_the_garbage_collector() -> None:
    # A day's evaluation writes every customer: a stand-in left for the collector per write
    # was 56 B each, held until a collection of its generation came.
    table = SimpleNamespace(data=MarkerKeepingData())
    gc.disable()
    try:
        put_in_partition(table, 1, "c-1", "state")

        assert [marker() for marker in table.data.markers] == [None]
    finally:
        gc.enable()


TOPIC = "cw-customers-changelog"


class Producer:
    """Records sends; each returns a future the test completes as the broker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, key: bytes, value: bytes | None, partition: int, *_: Any
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class Store(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


class ChangelogTable:
    """What ProducerChangelog uses of a Faust table and its app."""

    def __init__(self, in_transaction: bool) -> None:
        self.app = SimpleNamespace(producer=Producer(), in_transaction=in_transaction)
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: TOPIC)
        self.data = Store()
        self.queued: list[tuple[int, str, Any, Any]] = []

    def send_changelog(
        self, partition: int, key: str, value: Any, value_serializer: Any = None
    ) -> None:
        self.queued.append((partition, key, value, value_serializer))


def test_changelog_records_go_straight_to_the_producer_and_move_the_persisted_offset() -> None:
    table = ChangelogTable(in_transaction=False)
    changelog = ProducerChangelog(table)

    async def send_and_deliver() -> None:
        await changelog.send(3, "c-1", b'{"v":1}')
        await changelog.send(0, "c-2", None)
        delivered = TopicPartition(TOPIC, 3)
        table.app.producer.futures[0].set_result(RecordMetadata(TOPIC, 3, delivered, 41, -1, 0, -1))
        table.app.producer.futures[1].set_exception(RuntimeError("broker gone"))
        await asyncio.sleep(0)  # done callbacks run

    with capture_logs() as logs:
        asyncio.run(send_and_deliver())

    assert table.app.producer.sent == [
        (TOPIC, b"c-1", b'{"v":1}', 3),
        (TOPIC, b"c-2", None, 0),
    ]
    assert table.data.persisted == {TopicPartition(TOPIC, 3): 41}  # not the failed one
    assert table.queued == []
    assert [(line["event"], line["error"]) for line in logs] == [
        ("changelog_send_failed", "RuntimeError('broker gone')")
    ]


def test_in_a_transaction_changelog_records_go_the_way_faust_sends_them() -> None:
    table = ChangelogTable(in_transaction=True)

    asyncio.run(ProducerChangelog(table).send(2, "c-1", b"{}"))

    assert table.queued == [(2, "c-1", b"{}", "raw")]
    assert table.app.producer.sent == []
