"""End to end on the embedded Kafka: simulate, a real worker process, alerts and /metrics."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
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


PLAN = simulation.Plan(
    customers=2000, days=60, seed=7, decay_fraction=0.02, stop_fraction=0.02,
    churn_fraction=0.02, new_fraction=0.05, narrow_fraction=0.02, stall_fraction=0.02,
    dunning_fraction=0.02, downgrade_fraction=0.02, recover_fraction=0.02, flap_fraction=0.02,
)  # fmt: skip
EXPECTED_REASONS = {
    "decay": {"usage_drop"},
    "stop": {"usage_drop", "inactive", "cancel_scheduled"},
    "churn": {"cancel_scheduled"},
    "narrow": {"breadth_drop"},
    "stall": {"onboarding_stalled"},
    "dunning": {"payment_failed"},
    "downgrade": {"downgrade"},
    "recover": {"usage_drop"},
    "flap": {"usage_drop"},
}
MILESTONES = {"CHURNWATCH_RULES__MILESTONES": json.dumps(simulation.ACTIVATION)}


@pytest.mark.slow
def test_every_planted_reason_is_alerted_through_its_lifecycle(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The acceptance run: 2,000 customers, 60 days, 2% planted for each kind of risk.

    The history is produced before the worker starts: read while being produced at replay
    speed, the two input topics can drift further apart than the allowed lateness (docs/replay.md).
    """
    worker_env = WorkerEnv.unique(kafka_bootstrap, unique_name, **MILESTONES)
    customers = simulation.customers_for(PLAN)
    produced = sum(1 for _ in simulation.events(PLAN, customers)) + sum(
        1 for _ in simulation.billing_events(PLAN, customers)
    )
    planted_file = tmp_path / "planted.json"
    fractions = {
        name.removesuffix("_fraction").replace("_", "-"): getattr(PLAN, name)
        for name in PLAN.__dataclass_fields__
        if name.endswith("_fraction")
    }
    worker_env.run_cli(
        "simulate", "--customers", "2000", "--days", "60", "--seed", "7",
        *(arg for kind, share in fractions.items() for arg in (f"--{kind}-fraction", str(share))),
        "--planted-out", str(planted_file),
    )  # fmt: skip

    planted = {
        p["customer_id"]: p["pattern"] for p in json.loads(planted_file.read_text())["planted"]
    }
    assert Counter(planted.values()) == dict.fromkeys(EXPECTED_REASONS, 40)
    worker = WorkerProcess(worker_env, tmp_path).start()
    try:
        check_worker_against_plan(worker, worker_env, planted, produced)
    finally:
        worker.stop()


def check_worker_against_plan(
    worker: WorkerProcess, worker_env: WorkerEnv, planted: dict[str, str], produced: int
) -> None:
    worker.wait_for("churnwatch_events_processed_total", produced)
    worker.wait_for("churnwatch_heartbeats_total", 2 * worker_env.partitions)
    processed_by = time.time()

    def all_opened(messages: list[object]) -> bool:
        opened = {m.key for m in messages if orjson.loads(m.value)["status"] == "opened"}
        return len(opened) >= len(planted)

    alerts = [
        orjson.loads(m.value)
        for m in read_topic(worker_env.bootstrap, worker_env.alerts_topic, all_opened)
    ]
    reasons: dict[str, set[str]] = {}
    statuses: dict[str, list[str]] = {}
    for alert in alerts:
        assert alert["schema"] == "churnwatch.alert/1"
        assert alert["severity"] in ("info", "warning", "critical")
        reasons.setdefault(alert["customer_id"], set()).update(r["code"] for r in alert["reasons"])
        statuses.setdefault(alert["customer_id"], []).append(alert["status"])
    # Every planted customer is alerted for its reason (dropping usage may also rank it among
    # its segment's least engaged); anyone else only for being among the least engaged.
    assert set(planted) <= set(reasons)
    for customer_id, pattern in planted.items():
        assert reasons[customer_id] - {"low_engagement"} == EXPECTED_REASONS[pattern], customer_id
    others = set(reasons) - set(planted)
    assert {c: reasons[c] for c in others if reasons[c] != {"low_engagement"}} == {}
    assert 0 < len(others) < 0.12 * 2000
    # Lifecycle: churned ends as churned, recovering customers resolve; nothing reopens within
    # the cooldown (7 days) of a close; one `opened` per alert id.
    for customer_id, pattern in planted.items():
        if pattern == "churn":
            assert statuses[customer_id][-1] == "churned", customer_id
        if pattern in ("recover", "flap"):
            assert "resolved" in statuses[customer_id], customer_id
    closed_on: dict[str, datetime] = {}
    opened_ids: list[str] = []
    for alert in alerts:
        day = datetime.fromisoformat(alert["event_time"])
        if alert["status"] == "opened":
            opened_ids.append(alert["alert_id"])
            if alert["customer_id"] in closed_on:
                assert (day - closed_on[alert["customer_id"]]).days >= 7
        if alert["status"] in ("resolved", "churned"):
            closed_on[alert["customer_id"]] = day
    assert len(opened_ids) == len(set(opened_ids)), "no duplicate opened"

    # The compacted health topic holds every customer; its latest status matches the alerts.
    latest_health = {
        m.key.decode(): orjson.loads(m.value)
        for m in read_topic(
            worker_env.bootstrap,
            worker_env.health_topic,
            lambda messages: len({m.key for m in messages}) >= 2000,
        )
    }
    assert len(latest_health) == 2000
    still_open = {a["customer_id"] for a in alerts if a["status"] in ("opened", "escalated")} - {
        c for c, s in statuses.items() if s[-1] in ("resolved", "churned")
    }
    at_risk = {c for c, h in latest_health.items() if h["status"] == "at_risk"}
    assert at_risk == still_open
    churned = {c for c, h in latest_health.items() if h["status"] == "churned"}
    assert churned == {c for c, p in planted.items() if p == "churn"}

    # The gauges tell the same story as the topics.
    # The at-risk and active gauges are counted by the figures timer: wait for a count that
    # began after the last event was processed.
    worker.wait_for("churnwatch_state_refreshed_timestamp_seconds", processed_by, timeout=60)
    assert worker.total("churnwatch_events_processed_total") == produced
    assert worker.total("churnwatch_events_dead_lettered_total") == 0
    assert worker.total("churnwatch_customers_tracked") == 2000
    assert worker.total("churnwatch_customers_at_risk") == len(still_open)
    assert worker.total("churnwatch_customers_at_risk_by_severity") == len(still_open)
    assert worker.total("churnwatch_at_risk_mrr") > 0
    assert 1000 < worker.total("churnwatch_customers_active") <= 2000
    assert worker.total("churnwatch_customers_at_risk_by_reason", reason="payment_failed") == 40
    assert worker.total("churnwatch_alerts_total", status="opened") == len(opened_ids)
    assert worker.total("churnwatch_alerts_total", status="churned") == 40
    watermarks = [
        value
        for (name, _), value in worker.metrics().items()
        if name == "churnwatch_partition_watermark_timestamp_seconds"
    ]
    assert watermarks == [PLAN.end + 1] * worker_env.partitions


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
