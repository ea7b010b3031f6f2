"""Fold one partition's messages into customer state, in offset order, in event time.

Each partition keeps its own event-time clock: its watermark is the newest event time seen on
it less the allowed lateness. Whenever the watermark enters a new UTC day, every customer of
the partition is evaluated as of that day: that is how silence is found, since no event arrives
to say that nothing happened. Partitions never wait on each other, so how a consumer interleaves
them cannot change a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from churnwatch.domain.alerts import AlertEvent, next_transition
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import day_of
from churnwatch.domain.events import Heartbeat, UsageEvent
from churnwatch.domain.rules import Thresholds, evaluate


class CustomerStore(Protocol):
    """Where customer records live for the length of a batch."""

    def get(self, customer_id: str) -> CustomerState | None: ...

    def put(self, state: CustomerState) -> None:
        """Record a changed customer: written once at the end of the batch."""

    def in_partition(self, partition: int) -> Iterable[CustomerState]: ...


@dataclass(slots=True)
class PartitionClock:
    """Event-time progress of one partition; persisted so a restart resumes where it was."""

    partition: int
    max_event_time: float | None = None
    evaluated_day: int | None = None

    def watermark(self, lateness: float) -> float | None:
        return None if self.max_event_time is None else self.max_event_time - lateness


@dataclass(slots=True)
class BatchResult:
    """What a batch did; `late` holds positions (in the input) of events to dead-letter."""

    applied: int = 0
    redelivered: int = 0
    heartbeats: int = 0
    late: list[int] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    clock_changed: bool = False


@dataclass(frozen=True, slots=True)
class PartitionEngine:
    """The rules, lateness and ring size every partition of a worker shares."""

    thresholds: Thresholds
    allowed_lateness: float
    ring_days: int

    def process(
        self,
        clock: PartitionClock,
        messages: Sequence[tuple[int, UsageEvent | Heartbeat]],
        store: CustomerStore,
    ) -> BatchResult:
        """Apply `(offset, event)` pairs of `clock.partition`, in offset order."""
        result = BatchResult()
        for position, (offset, item) in enumerate(messages):
            if isinstance(item, UsageEvent) and not self._apply(clock, offset, item, store, result):
                result.late.append(position)
                continue
            if isinstance(item, Heartbeat):
                result.heartbeats += 1
            if clock.max_event_time is None or item.occurred_at > clock.max_event_time:
                clock.max_event_time = item.occurred_at
                result.clock_changed = True
                self._close_days(clock, store, result)
        return result

    def _apply(
        self,
        clock: PartitionClock,
        offset: int,
        event: UsageEvent,
        store: CustomerStore,
        result: BatchResult,
    ) -> bool:
        """Apply one event; False when it is late (older than the partition's watermark)."""
        state = store.get(event.customer_id)
        if state is not None and offset <= state.usage_offset:
            result.redelivered += 1
            return True
        watermark = clock.watermark(self.allowed_lateness)
        if watermark is not None and event.occurred_at < watermark:
            return False
        if state is None:
            state = CustomerState.new(
                event.customer_id, clock.partition, event.occurred_at, self.ring_days
            )
        if not state.ring.add(day_of(event.occurred_at), event.quantity):
            return False
        state.first_seen = min(state.first_seen, event.occurred_at)
        state.last_seen = max(state.last_seen, event.occurred_at)
        state.events += 1
        state.usage_offset = offset
        store.put(state)
        result.applied += 1
        return True

    def _close_days(self, clock: PartitionClock, store: CustomerStore, result: BatchResult) -> None:
        watermark = clock.watermark(self.allowed_lateness)
        assert watermark is not None
        today = day_of(watermark)
        if clock.evaluated_day is None:
            clock.evaluated_day = today
            return
        for as_of_day in range(clock.evaluated_day + 1, today + 1):
            for state in list(store.in_partition(clock.partition)):
                self._evaluate(state, as_of_day, store, result)
            clock.evaluated_day = as_of_day

    def _evaluate(
        self, state: CustomerState, as_of_day: int, store: CustomerStore, result: BatchResult
    ) -> None:
        reasons = evaluate(state, as_of_day, self.thresholds)
        alert, event = next_transition(state.customer_id, state.alert, reasons, as_of_day)
        if alert != state.alert:
            state.alert = alert
            store.put(state)
        if event is not None:
            result.alerts.append(event)
