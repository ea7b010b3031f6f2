"""A real worker fed hostile input: every message is accounted for and memory stays bounded.

Thousands of messages of every bad kind (tests/hostile.py) go to both input topics, mixed with
valid events of a few real customers and a flood of valid events of distinct junk customer ids.
The worker has a small cap per partition and a short retention, so both bounds are exercised:
processed + dead-lettered == produced, the tracked customers never exceed the cap, junk idle
past the retention is forgotten, and the worker stays alive, healthy and ready throughout.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from churnwatch.domain.billing import billing_from_payload
from churnwatch.domain.envelopes import Envelope, decode_message
from churnwatch.domain.events import Heartbeat, usage_from_payload
from churnwatch.exceptions import InvalidEventError
from config import EventLimits
from tests.hostile import DAY, HostileMix, Message
from tests.integration.conftest import CreateTopics
from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = pytest.mark.integration

SEED = 20261125
HOSTILE, JUNK, VALID, REAL_CUSTOMERS = 2800, 3000, 1500, 60
SPAN_DAYS = 75
CAP_PER_PARTITION = 250
RETENTION_DAYS = 30  # the least weekly periods allow (2 weeks + 14-day window + lateness + 1)
PARTITIONS = 4


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_sum(samples: Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def predicted_reason(message: Message, now: float) -> str:
    """What validation alone makes of a message ('ok' when it reaches the engine)."""
    limits = EventLimits()
    try:  # the worker's own path: decode (single event or envelope), then validate
        decoded = decode_message(message.value, message.key, limits)
        assert not isinstance(decoded, Envelope), "the hostile generator makes no envelopes"
        if message.topic == "billing":
            item = billing_from_payload(decoded, message.key, now=now, limits=limits)
        else:
            item = usage_from_payload(decoded, message.key, now=now, limits=limits)
    except InvalidEventError as error:
        return error.reason
    if message.key is None and not isinstance(item, Heartbeat):
        return "key_mismatch"
    return "ok"


def test_hostile_input_is_accounted_for_and_state_stays_bounded(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    create_topics: CreateTopics,
    tmp_path: Path,
) -> None:
    env = WorkerEnv.unique(
        kafka_bootstrap,
        unique_name,
        CHURNWATCH_CHURN__PERIOD="week",
        CHURNWATCH_STATE__RETENTION_DAYS=str(RETENTION_DAYS),
        CHURNWATCH_STATE__MAX_CUSTOMERS_PER_PARTITION=str(CAP_PER_PARTITION),
    )
    create_topics([env.usage_topic, env.billing_topic], partitions=PARTITIONS)
    now = time.time()
    mix = HostileMix(SEED, now=now, first=now - (SPAN_DAYS + 1) * DAY)
    messages = list(
        mix.stream(
            hostile=HOSTILE,
            junk=JUNK,
            valid=VALID,
            customers=REAL_CUSTOMERS,
            span_days=SPAN_DAYS,
        )
    )
    topics = {"usage": env.usage_topic, "billing": env.billing_topic}
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, max_request_size=2**21, linger_ms=20
    )
    for message in messages:
        producer.send(topics[message.topic], key=message.key, value=message.value)
    producer.flush()
    producer.close()
    produced = len(messages)
    by_kind = Counter(m.kind for m in messages)
    predicted = Counter(predicted_reason(m, now) for m in messages)
    stale_ok = sum(1 for m in messages if m.kind == "stale" and predicted_reason(m, now) == "ok")

    worker = WorkerProcess(env, tmp_path).start()
    try:
        tracked_samples: list[tuple[float, float]] = []
        rss: list[float] = []
        deadline = time.monotonic() + 240
        while True:
            worker.assert_alive()
            metrics = worker.metrics()

            processed = metric_sum(metrics, "churnwatch_events_processed_total")
            dead = metric_sum(metrics, "churnwatch_events_dead_lettered_total")
            limit = metric_sum(metrics, "churnwatch_customers_tracked_limit")
            tracked_samples.append((metric_sum(metrics, "churnwatch_customers_tracked"), limit))
            rss.append(metric_sum(metrics, "process_resident_memory_bytes"))
            assert worker.health()["status"] == "ok"
            if processed + dead >= produced or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(2)  # nothing more may arrive: each message is counted exactly once
        metrics = worker.metrics()
        assert worker.ready()
        assert worker.health()["status"] == "ok"
        worker.assert_alive()
    finally:
        worker.stop()
    # A new worker restores the table from its changelog: forgotten customers stay forgotten.
    restarted = WorkerProcess(env, tmp_path, name="restarted").start()
    try:
        restarted.wait_for(
            "churnwatch_customers_tracked", metric_sum(metrics, "churnwatch_customers_tracked")
        )
        deadline = time.monotonic() + 60
        while not restarted.ready() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        restored = restarted.total("churnwatch_customers_tracked")
    finally:
        restarted.stop()

    processed = metric_sum(metrics, "churnwatch_events_processed_total")
    dead_by_reason: Counter[str] = Counter()
    for (name, labels), value in metrics.items():
        if name == "churnwatch_events_dead_lettered_total" and value:
            dead_by_reason[dict(labels)["reason"]] += int(value)
    expired = metric_sum(metrics, "churnwatch_customers_expired_total")
    figures = {
        "produced": produced,
        "produced_by_kind": dict(sorted(by_kind.items())),
        "processed": processed,
        "dead_lettered_by_reason": dict(sorted(dead_by_reason.items())),
        "customers_expired": expired,
        "tracked_max": max(t for t, _ in tracked_samples),
        "tracked_final": metric_sum(metrics, "churnwatch_customers_tracked"),
        "tracked_after_restart": restored,
        "tracked_limit": tracked_samples[-1][1],
        "rss_max_mb": round(max(rss) / 2**20, 1),
    }
    print("fuzz figures:", json.dumps(figures))
    (tmp_path / "fuzz-figures.json").write_text(json.dumps(figures, indent=2))

    assert processed + sum(dead_by_reason.values()) == produced, figures
    for reason, count in predicted.items():
        if reason != "ok":
            assert dead_by_reason.get(reason, 0) == count, (reason, figures)
    # A stale event is late once its partition's watermark is set; read before the partition
    # has seen both inputs (in its first batch), it cannot be called late and is applied.
    assert stale_ok / 2 <= dead_by_reason.get("late", 0) <= stale_ok
    assert dead_by_reason.get("capacity", 0) > 0, "the junk flood reached the cap"
    assert expired > 0, "idle junk was forgotten"
    assert all(limit == CAP_PER_PARTITION * PARTITIONS for _, limit in tracked_samples)
    assert all(tracked <= limit for tracked, limit in tracked_samples), tracked_samples
    assert restored == figures["tracked_final"]
