"""The fixed workload: deterministic usage events keyed by customer, pre-produced to a fresh topic.

Days are produced in event-time order, each customer using the product a fixed number of times a
day at its own volume (+-20%), so churnwatch's rules see a real, quiet history: usage_drop has a
baseline and stays silent, and only the planted customers, who stop using the product ten days
before the end, open `inactive` alerts. The stream is cut at exactly `events` events and closed
by a heartbeat on every partition that completes the last day.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaAdminClient

from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.produce import Record, make_producer, send_heartbeats
from streams.envelopes import EnvelopeBuffer

EVENT_TYPES = ("page_view", "report_run", "api_call", "export", "login", "search")
SILENCE_DAYS_BEFORE_END = 10
HEARTBEAT_AFTER_DAY_SECONDS = 2 * 3600  # past the next midnight plus the default lateness (1 h)
ENVELOPE_WAIT = 1800.0  # event seconds an envelope is held at most: half the default lateness


@dataclass(frozen=True, slots=True)
class Workload:
    """What to produce; the same arguments always give the same bytes (see `sha256`)."""

    customers: int
    events: int
    partitions: int = 4
    seed: int = 42
    events_per_customer_day: int = 2
    silent_fraction: float = 0.01
    start: float = 1_704_067_200.0  # 2024-01-01T00:00:00Z: old enough for any skew check

    @property
    def days(self) -> int:
        """Days the events span (the last one may be cut short)."""
        return math.ceil(self.events / (self.customers * self.events_per_customer_day))

    @property
    def silence_day(self) -> int:
        """The day planted customers stop using the product."""
        return max(1, self.days - SILENCE_DAYS_BEFORE_END)

    def silent_customers(self) -> list[str]:
        """The planted customers, spread evenly through the id range."""
        count = round(self.customers * self.silent_fraction)
        if count == 0:
            return []
        step = self.customers / count
        return [customer_id(int(k * step + step / 2)) for k in range(count)]

    def describe(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "events": self.events,
            "partitions": self.partitions,
            "seed": self.seed,
            "events_per_customer_day": self.events_per_customer_day,
            "days": self.days,
            "planted_silent_customers": len(self.silent_customers()),
            "planted_silent_from_day": self.silence_day,
            "start": self.start,
        }


@dataclass(frozen=True, slots=True)
class Profile:
    """A customer's usual behaviour."""

    customer_id: str
    daily_volume: float
    users: int


def customer_id(number: int) -> str:
    return f"cust-{number:06d}"


def profiles(workload: Workload) -> list[Profile]:
    rng = random.Random(workload.seed)
    return [
        Profile(customer_id(n), round(rng.uniform(20, 200), 3), rng.randint(1, 8))
        for n in range(workload.customers)
    ]


def make_event(
    rng: random.Random, profile: Profile, occurred_at: float, quantity: float, serial: str
) -> dict[str, Any]:
    """One usage event as the documented JSON object (~150 bytes encoded)."""
    cid = profile.customer_id
    return {
        "event_id": f"{cid}-{serial}",
        "customer_id": cid,
        "occurred_at": round(occurred_at, 3),
        "event_type": rng.choice(EVENT_TYPES),
        "user_id": f"u{rng.randint(1, profile.users)}",
        "quantity": round(quantity, 3),
    }


def events(workload: Workload) -> Iterator[dict[str, Any]]:
    """Exactly `workload.events` events, one UTC day at a time, in event-time order."""
    everyone = profiles(workload)
    silent = set(workload.silent_customers())
    rng = random.Random(workload.seed + 1)
    per_day = workload.events_per_customer_day
    produced = 0
    day = 0
    while produced < workload.events:
        day_start = workload.start + day * SECONDS_PER_DAY
        todays = []
        for profile in everyone:
            if day >= workload.silence_day and profile.customer_id in silent:
                continue
            volume = profile.daily_volume * rng.uniform(0.8, 1.2)
            for k in range(per_day):
                at = day_start + rng.uniform(0, SECONDS_PER_DAY - 1)
                todays.append(make_event(rng, profile, at, volume / per_day, f"d{day:03d}-{k}"))
        todays.sort(key=lambda event: event["occurred_at"])
        yield from todays[: workload.events - produced]
        produced += min(len(todays), workload.events - produced)
        day += 1


def heartbeat_time(last_event_time: float) -> float:
    """Event time of the closing heartbeats: the last day completes, lateness included."""
    next_day = (math.floor(last_event_time / SECONDS_PER_DAY) + 1) * SECONDS_PER_DAY
    return next_day + HEARTBEAT_AFTER_DAY_SECONDS


def create_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create fresh topics (with topic configs by name) and wait until every partition has
    a leader."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="churnwatch-bench")
    configs = configs or {}
    try:
        spec = {
            name: {
                "num_partitions": partitions,
                "replication_factor": 1,
                "configs": configs.get(name, {}),
            }
            for name in names
        }
        admin.create_topics(spec, timeout_ms=30_000)
        admin.wait_for_topics(names, timeout_ms=30_000)
    finally:
        admin.close()


@dataclass(frozen=True, slots=True)
class Produced:
    """What `produce` wrote: counts, size, time span and a digest of every value."""

    topic: str
    events: int
    heartbeats: int
    event_messages: int  # messages carrying the events: fewer than `events` with envelopes
    value_bytes: int
    first_event_time: float
    last_event_time: float
    heartbeat_time: float
    sha256: str
    seconds: float

    @property
    def messages(self) -> int:
        return self.event_messages + self.heartbeats

    def describe(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "messages": self.messages,
            "events_per_message": round(self.events / max(1, self.event_messages), 1),
            "heartbeats": self.heartbeats,
            "mean_event_bytes": round(self.value_bytes / max(1, self.events), 1),
            "first_event_time": self.first_event_time,
            "last_event_time": self.last_event_time,
            "heartbeat_time": self.heartbeat_time,
            "sha256": self.sha256,
            "produce_seconds": round(self.seconds, 2),
        }


def produce(workload: Workload, bootstrap: str, topic: str, envelope_size: int = 1) -> Produced:
    """Create `topic` and write the workload to it, keyed by customer id, then the heartbeats.

    With `envelope_size` > 1 each customer's events go in envelopes of up to that many, each
    held at most `ENVELOPE_WAIT` of event time (half the default allowed lateness), as
    `churnwatch replay --envelope-size` does. The digest is of the events either way.
    """
    create_topics(bootstrap, [topic], workload.partitions)
    producer = make_producer([bootstrap])
    digest = hashlib.sha256()
    started = time.monotonic()
    count = size = messages = 0
    first = last = workload.start
    buffer = EnvelopeBuffer(envelope_size, ENVELOPE_WAIT)

    def send(records: list[Record]) -> None:
        nonlocal messages
        for _, key, value, _ in records:
            producer.send(topic, key=key, value=value)
            messages += 1

    try:
        for event in events(workload):
            value = orjson.dumps(event)
            digest.update(value)
            at = event["occurred_at"]
            send(buffer.add("usage", event["customer_id"].encode(), value, at))
            count += 1
            size += len(value)
            if count == 1:
                first = at
            last = at
        send(buffer.drain())
        producer.flush()
        closing = heartbeat_time(last)
        heartbeats = send_heartbeats(producer, [topic], closing)
    finally:
        producer.close()
    return Produced(
        topic=topic,
        events=count,
        heartbeats=heartbeats,
        event_messages=messages,
        value_bytes=size,
        first_event_time=first,
        last_event_time=last,
        heartbeat_time=closing,
        sha256=digest.hexdigest(),
        seconds=time.monotonic() - started,
    )
