"""Latency of a caught-up worker under a steady live rate, measured from outside it.

A producer sends usage events at a steady rate for a fixed time. Event time runs fast, tied to
the wall clock: an event produced at wall time w has occurred_at = E0 + (w - W0) * speed, so
every event-time instant has a wall-clock instant. Every live message carries its produce time
as its Kafka timestamp. The alerts topic and the customers changelog are created with
`message.timestamp.type=LogAppendTime`: the broker stamps each record the worker writes as it
appends it, so a latency ends when the record is on the topic, where a consumer can read it, not
when the worker's producer was handed it (the two differ by however long the record waited in
the producer's buffer: up to a whole batch before each batch gave the producer's sender a turn).

produce -> processed, per live event: from the event's produce timestamp to the timestamp of
the first record on the customers table's changelog for that customer whose applied usage
offset (`off`) reaches the event's offset: the moment the state that includes the event was on
the changelog. The worker writes a changelog record for every changed customer once per batch.

condition -> alert, per planted customer: planted customers stop using the product at spread
moments. churnwatch's `inactive` rule holds as of day X once the days before X hold no usage
for `inactive_days` whole days, so X = (day of its last event) + 1 + inactive_days; rules run
once per UTC day of event time, when a partition's watermark (newest event time less the
allowed lateness) enters the day. "Condition true" is the event-time instant X starts (the day
that completes the silence threshold ends); its wall instant follows from the mapping. The
latency runs from there to the append timestamp of the first alert naming `inactive` on the alerts
topic: `escalated` when `usage_drop` had opened one for the customer before (it usually has:
a week of silence halves the recent rate sooner). It includes, by design, the allowed lateness
(lateness / speed of wall time), which is reported apart.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from benchmarks.churnwatch_run import WorkerProcess
from benchmarks.measure import process_cpu_seconds
from benchmarks.workload import Produced, Profile, Workload, make_event, profiles
from churnwatch.domain.engagement import SECONDS_PER_DAY, day_of

SILENCE_FROM_DAY = 1.5  # planted customers go quiet between these live event days, so each has
SILENCE_UNTIL_DAY = 3.5  # live events before its silence and a whole threshold after it


@dataclass(frozen=True, slots=True)
class LivePlan:
    rate: float  # events per wall second
    duration: float  # wall seconds
    event_days: float  # event-time days the live phase spans
    planted: int  # customers that go silent
    start_event_time: float  # E0: after the workload's closing heartbeat

    @property
    def speed(self) -> float:
        """Event seconds per wall second."""
        return self.event_days * SECONDS_PER_DAY / self.duration


@dataclass(slots=True)
class LiveRun:
    """What the live producer did."""

    started: float  # W0
    finished: float = 0.0
    sent: int = 0
    last_event_time: float = 0.0
    silenced: dict[str, float] = field(default_factory=dict)  # customer -> its last occurred_at


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def read_from(bootstrap: str, topic: str, start: dict[int, int], timeout: float = 120) -> list[Any]:
    """Every record of `topic` from `start` (per partition) to the current end."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp.partition, 0))
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took more than {timeout:.0f} s")
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def produce_live(workload: Workload, plan: LivePlan, bootstrap: str, topic: str) -> LiveRun:
    """Send events at `plan.rate` for `plan.duration` s, round robin over active customers."""
    quiet_already = set(workload.silent_customers())
    active = [p for p in profiles(workload) if p.customer_id not in quiet_already]
    rng = random.Random(workload.seed + 2)
    rng.shuffle(active)
    step = len(active) / max(plan.planted, 1)
    planted = {active[int(k * step)].customer_id for k in range(plan.planted)}
    silence_at = {}
    for k, customer in enumerate(sorted(planted)):
        fraction = k / max(plan.planted - 1, 1)
        day = SILENCE_FROM_DAY + fraction * (SILENCE_UNTIL_DAY - SILENCE_FROM_DAY)
        silence_at[customer] = plan.start_event_time + day * SECONDS_PER_DAY
    per_customer_day = plan.rate * SECONDS_PER_DAY / plan.speed / len(active)
    producer = KafkaProducer(
        bootstrap_servers=[bootstrap], acks="all", linger_ms=1, client_id="churnwatch-bench-live"
    )
    run = LiveRun(started=time.time())
    turn = 0
    try:
        while (now := time.time()) < run.started + plan.duration:
            due = int((now - run.started) * plan.rate)
            while run.sent < due:
                profile, turn = _next_customer(active, turn, silence_at, plan, run)
                wall = time.time()
                occurred_at = plan.start_event_time + (wall - run.started) * plan.speed
                quantity = profile.daily_volume / per_customer_day
                event = make_event(rng, profile, occurred_at, quantity, f"l{run.sent}")
                producer.send(
                    topic,
                    key=profile.customer_id.encode(),
                    value=orjson.dumps(event),
                    timestamp_ms=int(wall * 1000),
                )
                if profile.customer_id in planted:
                    run.silenced[profile.customer_id] = event["occurred_at"]
                run.last_event_time = event["occurred_at"]
                run.sent += 1
            time.sleep(0.002)
        run.finished = time.time()
        producer.flush()
    finally:
        producer.close()
    return run


def _next_customer(
    active: Sequence[Profile],
    turn: int,
    silence_at: dict[str, float],
    plan: LivePlan,
    run: LiveRun,
) -> tuple[Profile, int]:
    """The next customer in the round whose silence has not begun."""
    now_event = plan.start_event_time + (time.time() - run.started) * plan.speed
    while True:
        profile = active[turn % len(active)]
        turn += 1
        quiet_from = silence_at.get(profile.customer_id)
        if quiet_from is None or now_event < quiet_from:
            return profile, turn


def produce_to_processed(
    usage: list[Any], changelog: list[Any]
) -> tuple[list[tuple[int, float]], int]:
    """(produce timestamp, latency ms) per live event, to the changelog record that includes
    it; and how many events no changelog record covered."""
    written: dict[bytes, list[tuple[int, int]]] = defaultdict(list)  # key -> [(off, ts)]
    for record in changelog:
        if record.value is None or record.key.startswith(b"\x00"):
            continue  # a tombstone, or a partition clock (streams/state.py)
        state = orjson.loads(record.value)
        written[record.key].append((int(state["off"]), record.timestamp))
    events: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for record in usage:
        events[record.key].append((record.offset, record.timestamp))
    latencies: list[tuple[int, float]] = []
    uncovered = 0
    for key, sent in events.items():
        writes = written.get(key, [])
        position = 0
        for offset, produced_ms in sorted(sent):
            while position < len(writes) and writes[position][0] < offset:
                position += 1
            if position == len(writes):
                uncovered += 1
                continue
            latencies.append((produced_ms, float(writes[position][1] - produced_ms)))
    return latencies, uncovered


def over_time(samples: list[tuple[int, float]], started: float, rows: int = 12) -> list[Any]:
    """[from s, samples, p50, p99, max] per slice of the live phase: steady, or building up?"""
    if not samples:
        return []
    span = max(produced for produced, _ in samples) / 1000 - started
    width = max(span / rows, 1e-3)
    slices: dict[int, list[float]] = defaultdict(list)
    for produced, latency in samples:
        slices[min(int((produced / 1000 - started) / width), rows - 1)].append(latency)
    table = []
    for index in sorted(slices):
        figures = percentiles(slices[index])
        table.append([round(index * width, 1), figures["samples"], figures["p50_ms"],
                      figures["p99_ms"], figures["max_ms"]])  # fmt: skip
    return table


def condition_to_alert(
    run: LiveRun, plan: LivePlan, alerts: list[Any], inactive_days: int, lateness: float
) -> dict[str, Any]:
    """Latency (ms) from each planted customer's condition instant to its first alert naming
    `inactive` (`escalated` when usage_drop opened one before the silence was long enough)."""
    first: dict[str, tuple[int, dict[str, Any]]] = {}  # planted customer -> first `inactive`
    others: dict[str, int] = defaultdict(int)
    for record in alerts:
        alert = orjson.loads(record.value)
        customer = alert["customer_id"]
        codes = {reason["code"] for reason in alert["reasons"]}
        if customer not in run.silenced:
            others[f"{alert['status']}:{'+'.join(sorted(codes)) or 'none'}"] += 1
        elif "inactive" in codes and customer not in first:
            first[customer] = (record.timestamp, alert)
    latencies: list[float] = []
    missing = mismatched = 0
    boundaries = set()
    statuses: dict[str, int] = defaultdict(int)
    for customer, last_seen in run.silenced.items():
        day = day_of(last_seen) + 1 + inactive_days
        condition_event_time = day * SECONDS_PER_DAY
        if condition_event_time + lateness + 0.1 * SECONDS_PER_DAY > run.last_event_time:
            continue  # the live phase ended before the worker could see this condition
        condition_wall = run.started + (condition_event_time - plan.start_event_time) / plan.speed
        found = first.get(customer)
        if found is None:
            missing += 1
            continue
        timestamp_ms, alert = found
        if day_of(datetime.fromisoformat(alert["event_time"]).timestamp()) != day:
            mismatched += 1
        latencies.append(timestamp_ms - condition_wall * 1000)
        boundaries.add(day)
        statuses[alert["status"]] += 1
    return {
        "statuses": dict(statuses),
        "latencies": latencies,
        "expected": len(latencies) + missing,
        "missing": missing,
        "day_mismatches": mismatched,
        "distinct_condition_days": len(boundaries),
        "other_alerts": dict(others),
    }


LOG_APPEND_TIME = 1  # a record's `timestamp_type` when the broker stamped it (0: the producer)


def timestamp_kinds(records: list[Any]) -> list[str]:
    """The kinds of Kafka timestamp the records carry: `log_append` (stamped by the broker)
    or `create` (by the producer)."""
    return sorted(
        {"log_append" if r.timestamp_type == LOG_APPEND_TIME else "create" for r in records}
    )


def percentiles(values: list[float]) -> dict[str, Any]:
    """Nearest-rank p50/p99, max and mean (ms), rounded; None when there are no samples."""
    if not values:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "samples": len(ordered),
        "p50_ms": round(rank(0.50), 1),
        "p99_ms": round(rank(0.99), 1),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(sum(ordered) / len(ordered), 1),
    }


def measure(
    worker: WorkerProcess,
    workload: Workload,
    produced: Produced,
    plan: LivePlan,
    settings: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """Run the live phase on a caught-up worker and work out both latencies."""
    bootstrap = worker.bootstrap
    starts = {
        topic: end_offsets(bootstrap, topic)
        for topic in (produced.topic, worker.changelog_topic, worker.alerts_topic)
    }
    before = worker.handled()
    totals_before, cpu_before = worker.totals(), process_cpu_seconds(worker.pid)
    run = produce_live(workload, plan, bootstrap, produced.topic)
    worker.wait_handled(before + run.sent, timeout)
    busy = _worker_busy(worker, totals_before, cpu_before, time.time() - run.started)
    time.sleep(1.0)  # the worker's producer lingers a moment before its last records land
    usage = read_from(bootstrap, produced.topic, starts[produced.topic])
    changelog = read_from(bootstrap, worker.changelog_topic, starts[worker.changelog_topic])
    alerts = read_from(bootstrap, worker.alerts_topic, starts[worker.alerts_topic])
    processed, uncovered = produce_to_processed(usage, changelog)
    lateness = float(settings["allowed_lateness_seconds"])
    silence = condition_to_alert(
        run, plan, alerts, int(settings["rules"]["inactive_days"]), lateness
    )
    wall = run.finished - run.started
    return {
        "status": "ok",
        "rate_per_second": plan.rate,
        "achieved_rate_per_second": round(run.sent / wall, 1),
        "duration_seconds": plan.duration,
        "events": run.sent,
        "event_seconds_per_wall_second": round(plan.speed, 1),
        "event_days": plan.event_days,
        "produce_to_processed": {
            **percentiles([latency for _, latency in processed]),
            "uncovered_events": uncovered,
            "over_time": {
                "columns": ["from_s", "samples", "p50_ms", "p99_ms", "max_ms"],
                "rows": over_time(processed, run.started),
            },
        },
        "condition_to_alert": {
            **percentiles(silence["latencies"]),
            "planted_customers": plan.planted,
            "alerts_expected": silence["expected"],
            "alerts_missing": silence["missing"],
            "alert_day_mismatches": silence["day_mismatches"],
            "alert_statuses": silence["statuses"],
            "distinct_condition_days": silence["distinct_condition_days"],
            "of_which_allowed_lateness_ms": round(lateness / plan.speed * 1000, 1),
        },
        "other_alerts_in_live_phase": silence["other_alerts"],
        "worker_record_timestamps": {
            "changelog": timestamp_kinds(changelog),
            "alerts": timestamp_kinds(alerts),
        },
        "worker_during_live_phase": busy,
        "definitions": DEFINITIONS,
    }


def _worker_busy(
    worker: WorkerProcess, before: dict[str, float], cpu_before: float, seconds: float
) -> dict[str, Any]:
    """How busy the worker was over the live phase: batches, time in them, CPU."""
    after = worker.totals()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("churnwatch_batch_duration_seconds_count")
    cpu = process_cpu_seconds(worker.pid) - cpu_before
    return {
        "seconds": round(seconds, 1),
        "batches": int(batches),
        "mean_batch_events": round(delta("churnwatch_batch_events_sum") / max(batches, 1), 1),
        "seconds_inside_batches": round(delta("churnwatch_batch_duration_seconds_sum"), 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_utilisation": round(cpu / seconds, 3),
    }


DEFINITIONS = {
    "produce_to_processed": (
        "per live event: broker append timestamp of the customers-changelog record whose "
        "applied usage offset first reaches the event's offset (state including the event is on "
        "the changelog) minus the event's produce timestamp"
    ),
    "condition_to_alert": (
        "per planted silent customer: broker append timestamp of its first alert naming "
        "`inactive` (opened, or escalated from an earlier usage_drop alert), minus the wall "
        "instant mapped to the start of day X = day of its last event + 1 + inactive_days (the "
        "event-time instant the silence threshold is met); includes the allowed lateness, in "
        "wall time"
    ),
}
