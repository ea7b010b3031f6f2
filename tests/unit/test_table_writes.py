"""Batch writes name their partition to the table store (Faust's RocksDB store needs it)."""

from __future__ import annotations

from typing import Any

from faust.streams import current_event

from streams.state import put_in_partition


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
