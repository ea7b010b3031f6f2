"""One batch of input messages: decode, dead-letter the bad, fold the good, write, emit, count.

Faust-free apart from the table handles it is given, so unit tests drive it with plain
messages, an in-memory emitter and an in-memory period sink.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from churnwatch.domain.alerts import AlertEvent
from churnwatch.domain.billing import billing_from_payload
from churnwatch.domain.envelopes import (
    Envelope,
    EnvelopeError,
    EnvelopeLimits,
    decode_message,
    event_object,
)
from churnwatch.domain.events import Heartbeat, usage_from_payload
from churnwatch.domain.health import CustomerHealth
from churnwatch.domain.partition import (
    BatchResult,
    ClosedPeriod,
    Item,
    Labels,
    PartitionClock,
    PartitionEngine,
)
from churnwatch.domain.rules import WEIGHTS
from churnwatch.exceptions import InvalidEventError
from churnwatch.metrics import WorkerMetrics
from streams.capacity import RefusalLog
from streams.deadletters import dead_letter_headers
from streams.state import ClockBook, DecodedRecords, PartitionIndex, TableChangelog, TableStore

log = structlog.get_logger(__name__)

# Long enough for the producer's sender task to wake and write what a batch sent to the socket
# (a few turns of the event loop, microseconds each).
SENDER_TURN_SECONDS = 0.001


class Message(Protocol):
    """The parts of a Kafka message a batch reads (faust's Message has them)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class Emitter(Protocol):
    """Where output records go: Faust's producer in a worker, a list in tests."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,  # None: a tombstone (compacted topics)
        headers: list[tuple[str, bytes]] | None,
    ) -> None: ...

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged by the broker."""


class Backlog(Protocol):
    """Whether a topic-partition has messages this worker has not processed yet."""

    async def unread(self, topic: str, partition: int, next_offset: int | None) -> bool: ...


class NoBacklog:
    """Every input read to its end (agent tests, where no consumer runs)."""

    async def unread(self, topic: str, partition: int, next_offset: int | None) -> bool:
        return False


class Rewinder(Protocol):
    """Moves the consumer of a topic-partition back to an offset."""

    async def rewind(self, topic: str, partition: int, offset: int) -> bool:
        """Read from `offset` again; False when the log no longer holds it (retention)."""


class NoRewind:
    """Accept every jump in offsets (agent tests, where no consumer runs)."""

    async def rewind(self, topic: str, partition: int, offset: int) -> bool:
        return False


class PeriodSink(Protocol):
    """Where a partition's final figures of a closed period go (the SQL store)."""

    async def record(self, closed: ClosedPeriod) -> bool:
        """Record idempotently; False when it could not (to be retried, never raised)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where an event came from: a message, or one event (`index`) of an envelope message."""

    message: Message
    index: int | None = None

    def dead_letter_value(self) -> bytes:
        """The message, or the envelope's event alone: decoded again, as refusals are rare and
        holding every event's object until its batch ends costs garbage collection time."""
        if self.index is None:
            return self.message.value or b""
        assert self.message.value is not None  # it decoded to an envelope
        return orjson.dumps(orjson.loads(self.message.value)["events"][self.index])


class PartitionEvents:
    """A partition's valid events of a batch and where each came from, by position (as
    `process` reports them). Flat lists, no object per event but the event: objects that live
    as long as a batch bring the garbage collector's full passes sooner. A `Source` is built
    only for the few events refused after parsing."""

    __slots__ = ("indexes", "items", "messages")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.messages: list[Message] = []
        self.indexes: list[int | None] = []  # in its envelope (None: the message is the event)

    def add(self, item: Item, message: Message, index: int | None) -> None:
        self.items.append(item)
        self.messages.append(message)
        self.indexes.append(index)

    def offsets(self) -> list[int]:
        return [message.offset for message in self.messages]

    def source(self, position: int) -> Source:
        return Source(self.messages[position], self.indexes[position])

    def topic(self, position: int) -> str:
        return self.messages[position].topic


@dataclass(frozen=True, slots=True)
class Topics:
    usage: str
    billing: str
    alerts: str
    dead_letters: str
    health: str | None = None  # compacted customer-health topic; None: not published


class IngestBatch:
    """Processes batches of `usage-events` and `billing-events` for the owned partitions."""

    def __init__(
        self,
        *,
        engine: PartitionEngine,
        customers: Any,
        clocks: ClockBook,
        index: PartitionIndex,
        limits: EnvelopeLimits,
        topics: Topics,
        emitter: Emitter,
        periods: PeriodSink,
        backlog: Backlog,
        metrics: WorkerMetrics,
        owned: Callable[[], set[int]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        uncommittable: Callable[[Message], None] = lambda message: None,
        rewinder: Rewinder | None = None,
        changelog: TableChangelog | None = None,
        decoded: DecodedRecords | None = None,
    ) -> None:
        self._engine = engine
        self._customers = customers
        self._changelog = TableChangelog(customers) if changelog is None else changelog
        # Kept between batches; a reader holding the batch lock may read through them too.
        self.decoded = DecodedRecords(0) if decoded is None else decoded
        self._clocks = clocks
        self._index = index
        self._limits = limits
        self._topics = topics
        self._emitter = emitter
        self._periods = periods
        self._backlog = backlog
        self._metrics = metrics
        self._owned = owned
        self._wall_clock = wall_clock
        self._uncommittable = uncommittable
        self._rewinder = rewinder or NoRewind()
        self.recorded: set[tuple[int, str]] = set()  # (partition, period label) in the store
        # Each owned partition's low-engagement cutoffs on its last evaluated day (queries).
        self.cutoffs: dict[int, dict[Labels, float]] = {}
        self._refusals = RefusalLog()
        self._unflushed = False  # outputs sent since the last flush

    async def record_period(self, closed: ClosedPeriod) -> None:
        """Store a closed period; a failure is counted and retried by the figures timer."""
        if await self._periods.record(closed):
            self.recorded.add((closed.partition, closed.period.label))
        else:
            self._metrics.period_record_failures.inc()

    async def handle(self, messages: Sequence[Message]) -> None:
        """Fold a batch; every event ends processed (applied, duplicate or redelivered),
        a heartbeat, or dead-lettered."""
        started = time.perf_counter()
        now = self._wall_clock()
        parsed: dict[int, PartitionEvents] = defaultdict(PartitionEvents)
        next_offsets: dict[int, dict[str, int]] = defaultdict(dict)
        owned = None if self._owned is None else self._owned()
        rewound: set[tuple[str, int]] = set()  # read again from their expected offset
        processed: Counter[str] = Counter()  # less those dead-lettered after `process`
        heartbeats: Counter[str] = Counter()
        for message in messages:
            if owned is not None and message.partition not in owned:
                # Taken before a rebalance moved the partition away: its new owner reads it
                # again from the committed offset. Applying it here would write a record
                # (possibly a fresh one: ours was dropped) over the new owner's.
                # Nor may its offset be committed: the new owner could not have read it yet.
                self._uncommittable(message)
                self._metrics.events_moved_away.labels(message.topic).inc()
                continue
            read = next_offsets[message.partition]
            if message.topic not in read:
                expected = self._clocks.get(message.partition).next_offsets.get(message.topic)
                # Never processed here: the group reads it from the start of the log
                # (auto offset reset "earliest"). A first message past it is a jump too: around
                # a rebalance Faust can skip a never-committed partition's first records, and
                # its seek to the committed offset does not move a partition that has none.
                read[message.topic] = 0 if expected is None else expected
            if (message.topic, message.partition) in rewound or (
                message.offset > read[message.topic] and await self._rewound(message, read)
            ):
                rewound.add((message.topic, message.partition))
                self._uncommittable(message)
                self._metrics.events_rewound.labels(message.topic).inc()
                continue
            read[message.topic] = max(read[message.topic], message.offset + 1)
            events = parsed[message.partition]
            for index, item in self._parse(message, now):
                if isinstance(item, InvalidEventError):
                    await self._dead_letter(Source(message, index), item, now)
                    continue
                events.add(item, message, index)
                if type(item) is Heartbeat:
                    heartbeats[message.topic] += 1
                else:
                    processed[message.topic] += 1

        with self._store() as store:
            clocks: list[PartitionClock] = []
            for partition, read in next_offsets.items():
                clock = self._clocks.get(partition)
                for topic, offset in read.items():
                    clock.next_offsets[topic] = max(clock.next_offsets.get(topic, 0), offset)
                backlog = await self._unread_inputs(clock)
                events = parsed.pop(partition, PartitionEvents())  # not kept past its turn
                result = self._engine.process_items(
                    clock, events.offsets(), events.items, store, backlog
                )
                clocks.append(clock)
                too_late = InvalidEventError("late", "event time is older than the watermark")
                for position in result.late:
                    await self._dead_letter(events.source(position), too_late, now)
                await self._refuse(partition, [events.source(p) for p in result.rejected], now)
                for position in result.duplicates:
                    self._metrics.events_duplicate.labels(events.topic(position)).inc()
                for position in result.redelivered:
                    self._metrics.events_redelivered.labels(events.topic(position)).inc()
                if result.forgotten_ids:
                    self._metrics.dedupe_forgotten.inc(result.forgotten_ids)
                for position in (*result.late, *result.rejected):  # dead-lettered instead
                    processed[events.topic(position)] -= 1
                await self._settle(partition, result, store, now)
                # Sent: not held while the next partition is processed (a day's health
                # changes of a whole partition, ~600 B each).
                del result, events
            await self._write(store, clocks)
        for topic, count in processed.items():
            if count:
                self._metrics.events_processed.labels(topic).inc(count)
        for topic, count in heartbeats.items():
            self._metrics.heartbeats.labels(topic).inc(count)
        self._metrics.batch_events.observe(len(messages))
        self._metrics.batch_duration.observe(time.perf_counter() - started)

    def defer(self, messages: Sequence[Message]) -> None:
        """Leave a batch for later: uncommitted, so it is read again once recovery is done."""
        for message in messages:
            self._uncommittable(message)
            self._metrics.events_deferred.labels(message.topic).inc()

    async def _rewound(self, message: Message, read: dict[str, int]) -> bool:
        """A message past the next offset its partition expects: the ones between never
        reached this worker (a consumer that skipped ahead, as Faust's can around a
        rebalance). Read from the expected offset again; this message and the rest of its
        partition in the batch wait, uncommitted. True when rewound.

        Offsets the log no longer holds (retention) are a real gap: accepted, logged.
        """
        expected = read[message.topic]
        if await self._rewinder.rewind(message.topic, message.partition, expected):
            log.info(
                "input_rewound",
                topic=message.topic,
                partition=message.partition,
                expected=expected,
                got=message.offset,
            )
            return True
        log.warning(
            "input_offsets_gone",
            topic=message.topic,
            partition=message.partition,
            expected=expected,
            next=message.offset,
        )
        return False

    async def advance(self, partitions: set[int], to_time: float) -> None:
        """Move owned partitions' event time to `to_time` (live clock), as a heartbeat would."""
        with self._store() as store:
            clocks: list[PartitionClock] = []
            now = self._wall_clock()
            for partition in partitions:
                clock = self._clocks.get(partition)
                result = self._engine.process(
                    clock,
                    [(-1, Heartbeat(to_time, "usage")), (-1, Heartbeat(to_time, "billing"))],
                    store,
                )
                clocks.append(clock)
                await self._settle(partition, result, store, now)
                del result  # sent: not held while the next partition is processed
            await self._write(store, clocks)

    async def _settle(
        self, partition: int, result: BatchResult, store: TableStore, now: float
    ) -> None:
        """What a partition's part of a batch (or of a clock advance) found, sent on: its
        low-engagement cutoffs kept, its alerts and health published, its expired customers
        forgotten, its closed periods stored.

        Alerts are flushed at once: on-call waits for them, and the batch's next partitions
        may each evaluate a whole day (hundreds of milliseconds) before its own flush."""
        if result.cutoffs is not None:
            self.cutoffs[partition] = result.cutoffs
        if result.alerts:
            await self._publish_all(result.alerts, now)
            await self._flush()
        await self._publish_health(result.health)
        await self._forget(result.expired, store)
        for closed in result.closed:
            await self.record_period(closed)

    @contextmanager
    def _store(self) -> Iterator[TableStore]:
        """A batch's view of the customer table. When the batch fails, the records kept
        decoded between batches are dropped: they may hold changes it never wrote."""
        try:
            yield TableStore(self._customers, self._index, self._changelog, self.decoded)
        except BaseException:
            self.decoded.clear()
            raise

    async def _write(self, store: TableStore, clocks: list[PartitionClock]) -> None:
        """The batch's outputs first, then customer records, then clocks.

        A crash can persist some of a batch's records without its clock; the next owner
        then reads the batch again but skips what those records already hold, alerts and
        health included (`CustomerState.evaluated_day`), so the outputs must be on the
        broker before any record. Clocks are sent after every record of the batch, to the
        same changelog partitions: a rebalance that flushes the producer while the records
        go out (sending one can wait for the producer's buffer) persists some records
        without their clock, the case above, never a clock ahead of the records it counted
        (the next owner would then call the batch's events late).

        The records then get a turn of the event loop (`SENDER_TURN_SECONDS`): left in the
        producer's buffer, they would reach the changelog only when the next batch's work let
        the producer's sender run (up to a whole batch later, a day's evaluation included).
        Their acknowledgement is not waited for: the broker appends them while the next batch
        is processed (a batch of single events can write thousands of records: megabytes).
        """
        await self._flush()
        if await store.flush():
            await asyncio.sleep(SENDER_TURN_SECONDS)
        for clock in clocks:
            self._clocks.save(clock)

    async def _flush(self) -> None:
        """Wait for what was sent since the last flush to be on the broker (nothing sent:
        nothing to wait for)."""
        if self._unflushed:
            await self._emitter.flush()
            self._unflushed = False

    async def _unread_inputs(self, clock: PartitionClock) -> frozenset[str]:
        """Inputs of the clock's partition with messages beyond those processed so far."""
        kinds = {self._topics.usage: "usage", self._topics.billing: "billing"}
        unread = set()
        for topic, kind in kinds.items():
            if await self._backlog.unread(topic, clock.partition, clock.next_offsets.get(topic)):
                unread.add(kind)
        return frozenset(unread)

    def _parse(
        self, message: Message, now: float
    ) -> Iterator[tuple[int | None, Item | InvalidEventError]]:
        """Each event of the message (one, or an envelope's, with its index), validated or
        refused."""
        try:
            decoded = decode_message(message.value, message.key, self._limits)
            if isinstance(decoded, Envelope) and message.key is None:
                count = len(decoded.events)
                raise EnvelopeError(
                    "key_mismatch", "envelope has no key; key it by customer", count
                )
        except EnvelopeError as error:
            yield None, error
            if error.events > 1:
                self._metrics.events_dead_lettered.labels(message.topic, error.reason).inc(
                    error.events - 1
                )
            return
        except InvalidEventError as error:
            yield None, error
            return
        if not isinstance(decoded, Envelope):
            item = self._validate(message.topic, decoded, message.key, now)
            if message.key is None and not isinstance(item, Heartbeat | InvalidEventError):
                # Unkeyed, it landed in any partition: its customer's state would split.
                item = InvalidEventError(
                    "key_mismatch", "message has no key; key it by customer_id"
                )
            yield None, item
            return
        self._metrics.envelopes.labels(message.topic).inc()
        key = decoded.customer_id.encode()
        for index, event in enumerate(decoded.events):
            try:
                payload = event_object(event)
            except InvalidEventError as error:
                yield index, error
                continue
            yield index, self._validate(message.topic, payload, key, now)

    def _validate(
        self, topic: str, payload: dict[str, Any], key: bytes | None, now: float
    ) -> Item | InvalidEventError:
        """One decoded event, or why not; a validation gap costs one event, never the agent."""
        try:
            if topic == self._topics.billing:
                return billing_from_payload(
                    payload,
                    key,
                    now=now,
                    limits=self._limits,
                    segment_attributes=self._engine.segment_by,
                )
            return usage_from_payload(payload, key, now=now, limits=self._limits)
        except InvalidEventError as error:
            return error
        except Exception as exc:
            log.error("event_validation_crashed", topic=topic, error=repr(exc)[:200])
            return InvalidEventError("invalid_value", f"could not validate: {exc!r}"[:300])

    async def _dead_letter(self, source: Source, error: InvalidEventError, now: float) -> None:
        message = source.message
        headers = dead_letter_headers(error, message.topic, message.partition, message.offset, now)
        if source.index is not None:
            headers.append(("churnwatch.source.index", str(source.index).encode()))
        value = source.dead_letter_value()
        await self._send(self._topics.dead_letters, message.key, value, headers)
        self._metrics.events_dead_lettered.labels(message.topic, error.reason).inc()
        if error.reason == "late":
            self._metrics.events_late.labels(message.topic).inc()

    async def _refuse(self, partition: int, sources: list[Source], now: float) -> None:
        """Dead-letter events of new customers the partition has no room for; log rarely."""
        if not sources:
            return
        full = InvalidEventError(
            "capacity", "partition tracks its maximum of customers; new ones are refused"
        )
        for source in sources:
            await self._dead_letter(source, full, now)
        limit = self._engine.bounds.max_customers
        tracked = len(self._index.customers(partition))
        self._refusals.note(partition, len(sources), tracked, limit)

    async def _forget(self, expired: list[str], store: TableStore) -> None:
        """Count expired customers; tombstone their health (after any health of theirs in
        the batch) so compaction forgets them too, unless they came back in the batch."""
        if not expired:
            return
        self._metrics.customers_expired.inc(len(expired))
        if self._topics.health is None:
            return
        for customer_id in expired:
            if store.get(customer_id) is None:
                await self._send(self._topics.health, customer_id.encode(), None, None)

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        """Send through the emitter; the batch then flushes before writing its records."""
        await self._emitter.send(topic, key, value, headers)
        self._unflushed = True

    async def _publish_all(self, alerts: list[AlertEvent], now: float) -> None:
        for alert in alerts:
            payload = orjson.dumps(alert.to_json_dict(emitted_at=now))
            await self._send(self._topics.alerts, alert.customer_id.encode(), payload, None)
            self._metrics.alerts.labels(alert.status, primary_reason(alert)).inc()

    async def _publish_health(self, changes: list[CustomerHealth]) -> None:
        topic = self._topics.health
        if topic is None:
            return
        for health in changes:
            payload = orjson.dumps(health.to_json_dict())
            await self._send(topic, health.customer_id.encode(), payload, None)


def primary_reason(alert: AlertEvent) -> str:
    """The reason weighing most in the alert (`none` for a closing without reasons)."""
    if not alert.reasons:
        return "none"
    return max(alert.reasons, key=lambda r: WEIGHTS[r.code] * r.strength).code
