"""The alert sink on the embedded Kafka: re-reading the topic adds nothing; `alerts tail`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from churnwatch.cli import main
from churnwatch.store.alerts import AlertStore, parse_transition
from tests.integration.conftest import CreateTopics
from tests.integration.workers import WorkerEnv, WorkerProcess
from tests.unit.test_alert_store import new_prefix, stored_transitions, universe

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def keyed(transition: dict[str, Any]) -> tuple[bytes, bytes]:
    return str(transition["customer_id"]).encode(), orjson.dumps(transition)


@pytest.fixture
def sink_env(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    create_topics: CreateTopics,
    tmp_path: Path,
) -> WorkerEnv:
    env = WorkerEnv.unique(
        kafka_bootstrap,
        unique_name,
        CHURNWATCH_DATABASE_URL=f"sqlite:///{tmp_path}/alerts.sqlite3",
        CHURNWATCH_BATCH_WITHIN_SECONDS="0.05",
    )
    create_topics([env.alerts_topic], partitions=env.partitions)
    return env


def test_re_reading_the_topic_from_the_start_adds_nothing(
    sink_env: WorkerEnv, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Duplicates, re-sends, a late older transition and a malformed message, read twice."""
    p = new_prefix()
    every = universe(p)
    # Each customer's alert arrives newest first, then a re-send of everything.
    messages = [keyed(t) for t in reversed(every)]
    messages += [keyed(dict(t, emitted_at="2024-04-01T00:00:00+00:00")) for t in every]
    messages.append((b"c-1", b"{not json"))
    produce(sink_env.bootstrap, sink_env.alerts_topic, messages)
    url = sink_env.extra["CHURNWATCH_DATABASE_URL"]

    first = WorkerProcess(sink_env, tmp_path, "first").start()
    try:
        first.wait_for("churnwatch_alert_sink_written_total", len(every))
        first.wait_for("churnwatch_alert_sink_duplicate_total", len(every))
        first.wait_for("churnwatch_alert_sink_invalid_total", 1, reason="not_json")
    finally:
        first.stop()
    check_store_holds_each_transition_once(url, p, every)

    # A fresh consumer group reads the whole topic again from the start.
    again = dataclasses.replace(sink_env, app_id=unique_name("app"))
    second = WorkerProcess(again, tmp_path, "second").start()
    try:
        second.wait_for("churnwatch_alert_sink_duplicate_total", len(messages) - 1)
        second.wait_for("churnwatch_alert_sink_invalid_total", 1, reason="not_json")
        assert second.total("churnwatch_alert_sink_written_total") == 0
    finally:
        second.stop()
    check_store_holds_each_transition_once(url, p, every)


def check_store_holds_each_transition_once(
    url: str, prefix: str, every: list[dict[str, Any]]
) -> None:
    expected = [parse_transition(t) for t in every]
    assert stored_transitions(url, prefix) == sorted(
        (t.alert_id, t.status, t.event_time, t.customer_id, t.risk_score, t.severity)
        for t in expected
    )
    store = AlertStore(url)
    try:
        latest = {a.alert_id: a.status for a in store.list_alerts(limit=1000).alerts}
    finally:
        store.close()
    assert latest == {f"{prefix}-a": "resolved", f"{prefix}-b": "churned", f"{prefix}-c": "churned"}


@pytest.fixture
def alerts_topic(
    kafka_bootstrap: str, unique_name: Callable[[str], str], create_topics: CreateTopics
) -> str:
    topic = unique_name("alerts")
    create_topics([topic], partitions=2)
    return topic


def test_tail_from_the_beginning_prints_each_alert_as_json(
    kafka_bootstrap: str, alerts_topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = universe(new_prefix())[:4]
    produce(kafka_bootstrap, alerts_topic, [*map(keyed, sent[:2]), (b"c-1", b"[]")])
    produce(kafka_bootstrap, alerts_topic, list(map(keyed, sent[2:])))

    code = main(
        [
            "alerts", "tail", "--json", "--from-beginning", "--max-messages", "4",
            "--duration", "60", "--broker", f"kafka://{kafka_bootstrap}", "--topic", alerts_topic,
        ]
    )  # fmt: skip

    captured = capsys.readouterr()
    assert code == 0
    printed = [json.loads(line) for line in captured.out.splitlines()]

    def key(transition: dict[str, Any]) -> tuple[str, str, str]:
        return transition["alert_id"], transition["status"], transition["event_time"]

    assert sorted(printed, key=key) == sorted(sent, key=key)
    assert "skipped a malformed alert" in captured.err
    assert "not_object" in captured.err


@pytest.fixture
def tail_process(kafka_bootstrap: str, alerts_topic: str) -> Iterator[subprocess.Popen[str]]:
    command = [
        sys.executable, "-m", "churnwatch", "alerts", "tail", "--max-messages", "1",
        "--duration", "60", "--broker", f"kafka://{kafka_bootstrap}", "--topic", alerts_topic,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_tail_from_now_shows_only_new_alerts_one_line_each(
    kafka_bootstrap: str, alerts_topic: str, tail_process: subprocess.Popen[str]
) -> None:
    old, new = universe(new_prefix())[:2]
    produce(kafka_bootstrap, alerts_topic, [keyed(old)])
    assert tail_process.stderr is not None
    line = tail_process.stderr.readline()  # "following ..." once its start offsets are fixed
    while line and not line.startswith("following"):
        line = tail_process.stderr.readline()
    assert line.startswith(f"following {alerts_topic} from now")

    produce(kafka_bootstrap, alerts_topic, [keyed(new)])
    out, _ = tail_process.communicate(timeout=60)

    assert tail_process.returncode == 0
    assert out.splitlines() == [
        f"2024-03-04 escalated warning  score  75  mrr 0.00  customer c-1  reasons usage_drop  "
        f"segment -  alert {new['alert_id']}"
    ]


def test_snooze_tells_the_stream_in_the_customers_partition(
    kafka_bootstrap: str,
    create_topics: CreateTopics,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.partitioner.default import murmur2

    usage_topic = unique_name("usage")
    create_topics([usage_topic], partitions=4)
    monkeypatch.setenv("CHURNWATCH_TOPICS__USAGE", usage_topic)
    url = f"sqlite:///{tmp_path / 'alerts.sqlite3'}"
    wire = universe(new_prefix())[0]
    store = AlertStore(url)
    store.migrate()
    store.record([parse_transition(wire)])
    store.close()

    code = main(
        [
            "alerts", "snooze", wire["alert_id"], "--until", "3d", "--by", "bo",
            "--database-url", url, "--broker", f"kafka://{kafka_bootstrap}",
        ]
    )  # fmt: skip

    assert code == 0
    assert "told the stream" in capsys.readouterr().out
    key = wire["customer_id"].encode()
    partition = (murmur2(key) & 0x7FFFFFFF) % 4  # Kafka's default partitioner
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=10_000)
    try:
        consumer.assign([TopicPartition(usage_topic, partition)])
        consumer.seek_to_beginning()
        message = next(iter(consumer))
    finally:
        consumer.close()
    assert message.key == key
    control = orjson.loads(message.value)
    assert (control["control"], control["customer_id"]) == ("snooze", wire["customer_id"])
    assert control["until"] is not None
