"""Customer records and partition clocks in one Faust table, written once per batch.

Faust refuses `table[key] = value` outside per-event stream iteration, and a write per event
costs a changelog message per event. So a batch reads through a working set, and each changed
record is written once, to `table.data`, with its changelog record sent to the key's *source*
partition: the partition Faust restores it from when that partition is assigned again.
Customer records are held encoded (streams/codecs.py): the working set decodes what it reads.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from typing import Any

import structlog
from faust.streams import _current_event

from churnwatch.domain.customer import CustomerState
from churnwatch.domain.partition import PartitionClock
from streams.codecs import decode_customer, encode_customer, is_customer, partition_of

log = structlog.get_logger(__name__)


class _Partition:
    """Stands in for Faust's current event where a store asks it which partition a key is in."""

    __slots__ = ("__weakref__", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition

    @property
    def message(self) -> _Partition:
        """The store reads `event.message.partition`. A property, not `self.message = self`:
        that cycle left each written record's marker to the garbage collector (measured:
        100,000 of them, 56 B each, still held after a day's evaluation of 100,000 customers)."""
        return self


def put_in_partition(table: Any, partition: int, key: str, value: Any) -> None:
    """`table.data[key] = value` for a key of `partition`, outside any stream event.

    Faust's RocksDB store keeps a database per partition and picks it from the current
    event (`assert event is not None` without one); the memory store ignores it. A batch
    writes after all its events, so it names the partition itself (faust-streaming pinned).
    """
    marker = _Partition(partition)
    token = _current_event.set(weakref.ref(marker))  # type: ignore[arg-type]
    try:
        table.data[key] = value
    finally:
        _current_event.reset(token)


class TableChangelog:
    """Sends a table's changelog records the way Faust does (`send_changelog`).

    Each record is queued as a future message that a background task publishes one at a
    time. Used under Kafka transactions, where Faust picks the transaction's producer, and
    wherever no producer runs (agent tests, the in-process benchmark).
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    async def send(self, partition: int, key: str, value: bytes | None) -> None:
        self._table.send_changelog(partition, key, value, value_serializer="raw")


class ProducerChangelog(TableChangelog):
    """Sends a table's changelog records straight to Faust's producer.

    Faust's queued path costs ~100 µs per record here (`make bench`: faust_changelog against
    faust_take), most of what a single event costs; the producer takes one in ~15 µs (design).
    Records are encoded as the table would (raw keys and values), and a sent record moves the
    store's persisted offset as Faust's callback does (RocksDB restores from there).
    """

    def __init__(self, table: Any) -> None:
        super().__init__(table)
        self._app = table.app
        self._topic = table.changelog_topic.get_topic_name()

    async def send(self, partition: int, key: str, value: bytes | None) -> None:
        if self._app.in_transaction:
            await super().send(partition, key, value)
            return
        sent = await self._app.producer.send(
            self._topic, key.encode(), value, partition, None, None
        )
        sent.add_done_callback(self._on_sent)

    def _on_sent(self, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            return
        error = sent.exception()
        if error is not None:  # as Faust's callback does: said, and the offset stays
            log.warning("changelog_send_failed", topic=self._topic, error=repr(error))
            return
        metadata = sent.result()
        self._table.data.set_persisted_offset(metadata.topic_partition, metadata.offset)


class PartitionIndex:
    """Which customers live in which owned partition; rebuilt from the table when unknown."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._members: dict[int, set[str]] = {}

    def customers(self, partition: int) -> set[str]:
        members = self._members.get(partition)
        if members is None:
            # One pass indexes every partition not indexed yet. An indexed one is left alone:
            # the table can still hold a record its batch deleted (written at the batch's end).
            found: dict[int, set[str]] = {}
            for key, value in self._table.data.items():
                if is_customer(value):
                    found.setdefault(partition_of(value), set()).add(key)
            for indexed, keys in found.items():
                self._members.setdefault(indexed, keys)
            members = self._members.setdefault(partition, set())
        return members

    def add(self, state: CustomerState) -> None:
        self.customers(state.partition).add(state.customer_id)

    def discard(self, state: CustomerState) -> None:
        self.customers(state.partition).discard(state.customer_id)

    def clear(self) -> None:
        """Forget everything: after a rebalance, partitions are indexed afresh when asked."""
        self._members.clear()


class DecodedRecords:
    """Customer records kept decoded between batches, each beside the encoded value it was
    read from or written as, so a customer's next event or daily evaluation skips decoding.

    A record is served only while the table holds an equal value: a restore, a rebalance or
    a deletion never serves a stale one. What a batch changed reaches it only when the batch
    has written it; a batch that fails must `clear` it, since its records may hold changes
    never written. Holds at most `capacity` records (~3 KB each), the least recently written
    going first; 0 keeps none.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._records: dict[str, tuple[bytes, CustomerState]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, customer_id: str, encoded: bytes) -> CustomerState | None:
        held = self._records.get(customer_id)
        if held is not None and held[0] == encoded:
            return held[1]
        return None

    def keep(self, customer_id: str, encoded: bytes, state: CustomerState, evict: bool) -> None:
        """Hold `state` as the decoded `encoded`; when full, make room only if `evict`."""
        records = self._records
        records.pop(customer_id, None)
        if len(records) >= self._capacity:
            if not evict or not records:
                return
            del records[next(iter(records))]
        records[customer_id] = (encoded, state)

    def discard(self, customer_id: str) -> None:
        self._records.pop(customer_id, None)

    def clear(self) -> None:
        self._records.clear()


def stored_customer(table: Any, customer_id: str) -> CustomerState | None:
    """The customer's record as the table holds it (None: none, or a clock's key)."""
    value = table.data.get(customer_id)
    return decode_customer(value) if is_customer(value) else None


def stored_customers(
    table: Any, index: PartitionIndex, partition: int, decoded: DecodedRecords
) -> Iterator[CustomerState]:
    """A partition's records, for a reader between batches (the figures pass): served from
    `decoded` where it holds the table's value, else decoded one at a time and not kept.
    Only between batches: a batch in flight may have changed a kept record in place."""
    data = table.data
    for customer_id in tuple(index.customers(partition)):
        encoded = data.get(customer_id)
        if is_customer(encoded):
            yield decoded.get(customer_id, encoded) or decode_customer(encoded)


class TableStore:
    """A batch's view of the customer table: reads through changes, writes each once.

    Records the batch asks for by id are decoded once and kept until a sweep or its end. A
    partition's daily sweep (`in_partition`) decodes as it goes and keeps what changed encoded
    (`_encoded`, decoded again if asked for), as it does what the batch changed before: a
    batch that closes a day on every partition holds one decoded record at a time, however
    many customers a partition has.

    A deleted customer (expired) is removed from the table and the index, and its changelog
    key gets a tombstone, so compaction drops it and a restore does not bring it back.
    """

    def __init__(
        self,
        table: Any,
        index: PartitionIndex,
        changelog: TableChangelog,
        decoded: DecodedRecords | None = None,
    ) -> None:
        self._table = table
        self._index = index
        self._changelog = changelog
        self._decoded = DecodedRecords(0) if decoded is None else decoded
        self._read: dict[str, CustomerState] = {}  # decoded this batch, unchanged so far
        self._dirty: dict[str, CustomerState] = {}
        self._encoded: dict[str, bytes] = {}  # changed this batch, set aside by a sweep
        self._deleted: dict[str, int] = {}  # customer id -> partition

    def get(self, customer_id: str) -> CustomerState | None:
        state = self._held(customer_id)
        if state is None and customer_id not in self._deleted:
            encoded = self._table.data.get(customer_id)
            if is_customer(encoded):
                state = self._decode(customer_id, encoded, evict=True)
                self._read[customer_id] = state
        return state

    def _decode(self, customer_id: str, encoded: bytes, evict: bool) -> CustomerState:
        state = self._decoded.get(customer_id, encoded)
        if state is None:
            state = decode_customer(encoded)
            self._decoded.keep(customer_id, encoded, state, evict)
        return state

    def _held(self, customer_id: str) -> CustomerState | None:
        """The batch's own copy of the record, if it has one."""
        state = self._dirty.get(customer_id)
        if state is None:
            state = self._read.get(customer_id)
        if state is None and customer_id in self._encoded:
            state = self._dirty[customer_id] = decode_customer(self._encoded.pop(customer_id))
        return state

    def put(self, state: CustomerState) -> None:
        if state.customer_id not in self._dirty:
            self._deleted.pop(state.customer_id, None)
            self._encoded.pop(state.customer_id, None)
            self._dirty[state.customer_id] = state
            self._index.add(state)

    def delete(self, state: CustomerState) -> None:
        self._dirty.pop(state.customer_id, None)
        self._read.pop(state.customer_id, None)
        self._encoded.pop(state.customer_id, None)
        self._deleted[state.customer_id] = state.partition
        self._index.discard(state)

    def tracked(self, partition: int) -> int:
        return len(self._index.customers(partition))

    def in_partition(self, partition: int) -> Iterator[CustomerState]:
        """Each record of the partition, decoded as it is read and held only while the reader
        is on it: a record the reader changed is set aside (encoded) when it moves on, so a
        sweep holds one decoded record at a time. The ids are copied first: a reader may
        delete customers while it goes."""
        self._set_aside()
        encoded_changes, data, deleted = self._encoded, self._table.data, self._deleted
        for customer_id in tuple(self._index.customers(partition)):
            encoded = encoded_changes.get(customer_id)
            if encoded is not None:
                yield decode_customer(encoded)
            else:
                if customer_id in deleted:
                    continue
                encoded = data.get(customer_id)
                if not is_customer(encoded):
                    continue
                # A sweep of a partition bigger than the cache would only churn it.
                yield self._decode(customer_id, encoded, evict=False)
            changed = self._dirty.pop(customer_id, None)
            if changed is not None:
                encoded_changes[customer_id] = encode_customer(changed)

    def _set_aside(self) -> None:
        """Encode the changed records and forget the unchanged ones: a sweep reads each
        afresh, and the engine gets a record again after a sweep."""
        for customer_id, state in self._dirty.items():
            self._encoded[customer_id] = encode_customer(state)
        self._dirty.clear()
        self._read.clear()

    async def flush(self) -> int:
        """Write every changed record and its changelog entry; return how many."""
        data, decoded = self._table.data, self._decoded
        for customer_id, partition in self._deleted.items():
            decoded.discard(customer_id)
            if customer_id in data:
                del data[customer_id]
            await self._changelog.send(partition, customer_id, None)
        for customer_id, encoded in self._encoded.items():
            decoded.discard(customer_id)
            await self._write(partition_of(encoded), customer_id, encoded)
        for customer_id, state in self._dirty.items():
            encoded = encode_customer(state)
            decoded.keep(customer_id, encoded, state, evict=True)
            await self._write(state.partition, customer_id, encoded)
        written = len(self._encoded) + len(self._dirty) + len(self._deleted)
        self._read, self._dirty, self._encoded, self._deleted = {}, {}, {}, {}
        return written

    async def _write(self, partition: int, customer_id: str, encoded: bytes) -> None:
        put_in_partition(self._table, partition, customer_id, encoded)
        await self._changelog.send(partition, customer_id, encoded)


CLOCK_KEY_PREFIX = "\x00clock/"  # no customer id starts with NUL (events.py refuses it)


def clock_key(partition: int) -> str:
    return f"{CLOCK_KEY_PREFIX}{partition}"


class ClockBook:
    """Partition clocks, kept in the customers table under keys no customer can have.

    Each clock is written after its partition's customer records of the same batch, by the
    same producer, to the same changelog partition; Kafka keeps a partition's order (aiokafka
    sends one batch per partition at a time), so a clock that survived a crash implies every
    record written before it did. In a table of its own, a `kill -9` could persist the clock
    without the records: their next owner then skipped re-evaluating a day the records lacked.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, partition: int) -> PartitionClock:
        """A copy: the batch changes it and writes it back with `save`."""
        clock = self._table.data.get(clock_key(partition))
        return PartitionClock(partition) if clock is None else clock.copy()

    def save(self, clock: PartitionClock) -> None:
        key = clock_key(clock.partition)
        saved = clock.copy()
        put_in_partition(self._table, clock.partition, key, saved)
        self._table.send_changelog(clock.partition, key, saved)

    def watermarks(self, partitions: set[int]) -> dict[int, float]:
        marks = {}
        for partition in partitions:
            watermark = self.get(partition).watermark
            if watermark is not None:
                marks[partition] = watermark
        return marks
