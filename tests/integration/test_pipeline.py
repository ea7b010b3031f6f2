"""End to end on the embedded Kafka: simulate, a real worker process, alerts and /metrics."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from churnwatch import simulation
from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = pytest.mark.integration


def read_topic(
    bootstrap: str, topic: str, done: Callable[[list[object]], bool], timeout: float = 120
) -> list[object]:
    """Read a topic from the start with a fresh group until `done(messages)` or the timeout."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    messages: list[object] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(messages):
            messages.extend(consumer)
    finally:
        consumer.close()
    return messages


@pytest.fixture
def worker_env(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> WorkerEnv:
    return WorkerEnv.unique(kafka_bootstrap, unique_name)


@pytest.fixture
def worker(worker_env: WorkerEnv, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(worker_env, tmp_path).start()
    yield process
    process.stop()


@pytest.mark.slow
def test_simulated_drop_offs_are_alerted_and_steady_customers_are_not(
    worker_env: WorkerEnv, tmp_path: Path
) -> None:
    """The issue's acceptance run: 2,000 customers, 60 days, 5% decaying or stopping.

    The history is produced before the worker starts: read while being produced at replay
    speed, the two input topics can drift further apart than the allowed lateness (docs/replay.md).
    """
    plan = simulation.Plan(
        customers=2000,
        days=60,
        seed=7,
        decay_fraction=0.025,
        stop_fraction=0.025,
        churn_fraction=0.03,
        new_fraction=0.05,
    )
    customers = simulation.customers_for(plan)
    produced = sum(1 for _ in simulation.events(plan, customers)) + sum(
        1 for _ in simulation.billing_events(plan, customers)
    )
    planted_file = tmp_path / "planted.json"

    worker_env.run_cli(
        "simulate", "--customers", "2000", "--days", "60", "--seed", "7",
        "--decay-fraction", "0.025", "--stop-fraction", "0.025",
        "--churn-fraction", "0.03", "--new-fraction", "0.05",
        "--planted-out", str(planted_file),
    )  # fmt: skip

    planted = {
        p["customer_id"]: p["pattern"] for p in json.loads(planted_file.read_text())["planted"]
    }
    count = Counter(planted.values())
    assert count == {"decay": 50, "stop": 50, "churn": 60}
    worker = WorkerProcess(worker_env, tmp_path).start()
    try:
        check_worker_against_plan(worker, worker_env, plan, planted, count, produced)
    finally:
        worker.stop()


def check_worker_against_plan(
    worker: WorkerProcess,
    worker_env: WorkerEnv,
    plan: simulation.Plan,
    planted: dict[str, str],
    count: Counter[str],
    produced: int,
) -> None:
    worker.wait_for("churnwatch_events_processed_total", produced)
    worker.wait_for("churnwatch_heartbeats_total", 2 * worker_env.partitions)

    def all_opened(messages: list[object]) -> bool:
        opened = {m.key for m in messages if orjson.loads(m.value)["status"] == "opened"}
        return len(opened) >= len(planted)

    alerts = [
        orjson.loads(m.value)
        for m in read_topic(worker_env.bootstrap, worker_env.alerts_topic, all_opened)
    ]
    opened = [a for a in alerts if a["status"] == "opened"]
    assert {a["customer_id"] for a in opened} == set(planted)
    assert len(opened) == len(planted), "one opened alert per customer, no duplicates"
    assert {a["customer_id"] for a in alerts} == set(planted), "no alert for a steady customer"
    churned = {a["customer_id"] for a in alerts if a["status"] == "churned"}
    assert churned == {cid for cid, pattern in planted.items() if pattern == "churn"}
    for alert in alerts:
        assert alert["schema"] == "churnwatch.alert/1"
        assert {r["code"] for r in alert["reasons"]} <= {
            "usage_drop",
            "inactive",
            "cancel_scheduled",
        }

    # The gauges tell the same story as the topics.
    still_open = count["decay"] + count["stop"]
    assert worker.total("churnwatch_events_processed_total") == produced
    assert worker.total("churnwatch_events_dead_lettered_total") == 0
    assert worker.total("churnwatch_customers_tracked") == 2000
    assert worker.total("churnwatch_customers_at_risk") == still_open
    by_reason = {
        reason: worker.total("churnwatch_customers_at_risk_by_reason", reason=reason)
        for reason in ("inactive", "usage_drop", "cancel_scheduled")
    }
    assert by_reason == {
        "inactive": count["stop"],
        "usage_drop": still_open,
        "cancel_scheduled": count["stop"],
    }
    assert worker.total("churnwatch_alerts_total", status="opened") == len(planted)
    assert worker.total("churnwatch_alerts_total", status="churned") == count["churn"]
    watermarks = [
        value
        for (name, _), value in worker.metrics().items()
        if name == "churnwatch_partition_watermark_timestamp_seconds"
    ]
    assert watermarks == [plan.end + 1] * worker_env.partitions


def malformed_messages() -> list[tuple[bytes | None, bytes, str]]:
    """(key, value, expected reason) for each kind of bad input."""
    good = {
        "event_id": "e",
        "customer_id": "bad-1",
        "occurred_at": "2020-01-05T10:00:00Z",
        "event_type": "login",
    }
    kinds: list[tuple[bytes | None, bytes, str]] = [
        (b"bad-1", b"\xff\xfe not json", "not_json"),
        (b"bad-1", b'{"event_id": "x", "quantity": NaN}', "not_json"),
        (b"bad-1", b"[1, 2, 3]", "not_an_object"),
        (b"bad-1", orjson.dumps({**good, "customer_id": None}), "missing_field"),
        (
            b"bad-1",
            orjson.dumps({k: v for k, v in good.items() if k != "event_type"}),
            "missing_field",
        ),
        (b"bad-1", orjson.dumps({**good, "quantity": "ten"}), "wrong_type"),
        (b"bad-1", orjson.dumps({**good, "quantity": -3}), "invalid_value"),
        (b"bad-1", orjson.dumps({**good, "occurred_at": "2020-01-05T10:00:00"}), "invalid_value"),
        (
            b"bad-1",
            orjson.dumps({**good, "occurred_at": "1970-01-02T00:00:00Z"}),
            "timestamp_out_of_range",
        ),
        (b"bad-1", orjson.dumps({**good, "occurred_at": 4_102_444_800}), "timestamp_out_of_range"),
        (b"someone-else", orjson.dumps(good), "key_mismatch"),
        (b"bad-1", b'{"x": "' + b"y" * 70_000 + b'"}', "payload_too_large"),
    ]
    return kinds * 25  # 300 bad messages


def test_bad_input_is_dead_lettered_with_its_reason_and_nothing_is_lost(
    worker_env: WorkerEnv, worker: WorkerProcess
) -> None:
    bad = malformed_messages()
    producer = KafkaProducer(bootstrap_servers=worker_env.bootstrap, max_request_size=2**21)
    valid = 0
    start = 1_577_836_800.0
    for n in range(3000):
        customer = f"ok-{n % 150}"
        event = {
            "event_id": f"v{n}",
            "customer_id": customer,
            "occurred_at": start + n * 60,
            "event_type": "api_call",
            "quantity": 2,
        }
        producer.send(worker_env.usage_topic, key=customer.encode(), value=orjson.dumps(event))
        valid += 1
        if n % 10 == 0:
            key, value, _ = bad[n // 10]
            producer.send(worker_env.usage_topic, key=key, value=value)
    producer.flush()
    producer.close()
    produced = valid + len(bad)

    worker.wait_for("churnwatch_events_dead_lettered_total", len(bad))
    processed = worker.wait_for("churnwatch_events_processed_total", valid)
    dead = read_topic(
        worker_env.bootstrap,
        worker_env.dead_letters_topic,
        lambda messages: len(messages) >= len(bad),
    )

    assert processed + worker.total("churnwatch_events_dead_lettered_total") == produced
    assert len(dead) == len(bad)
    by_value = {}
    for message in dead:
        headers = dict(message.headers)
        assert headers["churnwatch.source.topic"] == worker_env.usage_topic.encode()
        assert int(headers["churnwatch.source.offset"]) >= 0
        by_value.setdefault(message.value, set()).add(headers["churnwatch.reason"].decode())
    for _key, value, reason in bad:
        assert by_value[value] == {reason}, (value[:60], reason)
    for reason, count in Counter(reason for _, _, reason in bad).items():
        assert worker.total("churnwatch_events_dead_lettered_total", reason=reason) == count
    assert worker.health()["status"] == "ok"
