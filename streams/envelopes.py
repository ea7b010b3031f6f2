"""Producing envelopes: buffer each customer's events, send many as one message.

A worker pays Faust's per-message cost once per Kafka message, so a producer that sends a
customer's events together (`{"envelope": 1, "customer_id": ..., "events": [...]}`, keyed by
the customer; docs/topics.md#envelopes) lets one worker take several times more events.

    buffer = EnvelopeBuffer(max_events=50, max_wait=1.0)
    for record in buffer.add("usage", b"c-42", event_bytes, at=time.monotonic()):
        producer.send(topics[record[0]], key=record[1], value=record[2])
    ...
    for record in buffer.due(time.monotonic()):   # call now and then: flush by time
        ...
    for record in buffer.drain():                 # on shutdown
        ...

`max_wait` is measured on whatever clock `at` is given in: the wall clock for a live producer
(the latency an envelope may add), event time for a replay of history. It must stay below the
workers' `allowed_lateness_seconds`, or the events of a customer whose envelope waited could
arrive after other customers' newer events had moved the partition's watermark past them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from churnwatch.domain.envelopes import ENVELOPE_VERSION
from churnwatch.produce import Record

_OPEN = b'{"envelope":%d,"customer_id":' % ENVELOPE_VERSION


def envelope_value(customer_id: bytes, events: Iterable[bytes]) -> bytes:
    """An envelope of already-encoded JSON events (sent byte for byte, not re-encoded)."""
    return b"".join(
        (_OPEN, orjson.dumps(customer_id.decode()), b',"events":[', b",".join(events), b"]}")
    )


@dataclass(slots=True)
class _Pending:
    since: float  # the clock when its first event came
    latest: float  # the newest event time in it (the record's time once sent)
    events: list[bytes] = field(default_factory=list)


class EnvelopeBuffer:
    """Events per (kind, customer) until `max_events` are held or `max_wait` has passed.

    Records are `(kind, key, value, time)`, as `churnwatch.produce.produce` sends them; the
    clock `at` must not go backwards (wall clock, or event time of a sorted replay). A
    record without a key cannot be enveloped (an envelope is one customer's) and passes
    through at once, as does everything when `max_events` is 1.
    """

    def __init__(self, max_events: int = 50, max_wait: float = 1.0) -> None:
        if max_events < 1 or max_wait < 0:
            raise ValueError("max_events must be >= 1 and max_wait >= 0")
        self.max_events = max_events
        self.max_wait = max_wait
        self._pending: dict[tuple[str, bytes], _Pending] = {}

    def __len__(self) -> int:
        """Events held."""
        return sum(len(pending.events) for pending in self._pending.values())

    def add(self, kind: str, key: bytes | None, value: bytes, at: float) -> list[Record]:
        """Hold an event; return the records now ready, oldest first (this one may be)."""
        ready = self.due(at)
        if key is None or self.max_events == 1:
            ready.append((kind, key, value, at))
            return ready
        slot = (kind, key)
        pending = self._pending.get(slot)
        if pending is None:
            pending = self._pending[slot] = _Pending(since=at, latest=at)
        pending.events.append(value)
        pending.latest = max(pending.latest, at)
        if len(pending.events) >= self.max_events:
            del self._pending[slot]
            ready.append(_record(slot, pending))
        return ready

    def due(self, now: float) -> list[Record]:
        """Records of the buffers that have waited `max_wait` by `now`, oldest first.

        Buffers sit in the order they were opened, so this stops at the first that has not
        waited long enough: O(records returned), as long as the clock does not go back.
        """
        ready: list[Record] = []
        for slot, pending in self._pending.items():
            if now - pending.since < self.max_wait:
                break
            ready.append(_record(slot, pending))
        for _ in ready:
            del self._pending[next(iter(self._pending))]
        return ready

    def drain(self) -> list[Record]:
        """Every buffer as a record, oldest first."""
        slots = sorted(self._pending, key=lambda slot: self._pending[slot].since)
        return [_record(slot, self._pending.pop(slot)) for slot in slots]


def _record(slot: tuple[str, bytes], pending: _Pending) -> Record:
    kind, key = slot
    if len(pending.events) == 1:
        return kind, key, pending.events[0], pending.latest
    return kind, key, envelope_value(key, pending.events), pending.latest


def enveloped(records: Iterable[Record], max_events: int, max_wait: float) -> Iterator[Record]:
    """Records in event-time order, as envelopes: `max_wait` in event time (replays)."""
    buffer = EnvelopeBuffer(max_events, max_wait)
    for kind, key, value, at in records:
        yield from buffer.add(kind, key, value, at)
    yield from buffer.drain()
