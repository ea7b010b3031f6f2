"""The HTTP API of real worker processes on the embedded Kafka, after `churnwatch simulate`.

Workers run as processes of this module (`python -m tests.integration.test_api`): a
`churnwatch worker` that installs the API itself if `agents.install_all` does not yet.
"""

from __future__ import annotations

import csv
import io
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from agents.api import partition_of
from churnwatch import simulation
from churnwatch.store.alerts import AlertStore
from tests.integration import runs
from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
PLAN = simulation.Plan(
    customers=300, days=50, seed=11, decay_fraction=0.05, stop_fraction=0.05,
    churn_fraction=0.03, new_fraction=0.05, dunning_fraction=0.03,
)  # fmt: skip
ROUTING_PLAN = simulation.Plan(customers=200, days=50, seed=5, stop_fraction=0.05)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(
    worker: WorkerProcess,
    path: str,
    body: Any = None,
    token: str | None = TOKEN,
    accept: str | None = None,
) -> Reply:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if accept is not None:
        headers["Accept"] = accept
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(f"{worker.url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read())


def simulate(env: WorkerEnv, plan: simulation.Plan) -> tuple[list[str], int]:
    """Produce the plan's history (then heartbeats); return its customer ids and event count."""
    produced = runs.simulate(env, plan)
    return [customer.customer_id for customer in simulation.customers_for(plan)], produced


def wait_until(
    check: Callable[[], bool], what: str, worker: WorkerProcess, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.assert_alive()
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen in {timeout}s\n{worker.log_tail()}")


@dataclass
class Pipeline:
    worker: WorkerProcess
    env: WorkerEnv
    customers: list[str]
    database_url: str
    produced: int


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One worker (with a token) that has read the whole simulation and stored its alerts."""
    workdir = tmp_path_factory.mktemp("api")
    database_url = f"sqlite:///{workdir}/alerts.sqlite3"
    env = WorkerEnv.unique(
        kafka_bootstrap,
        lambda kind: f"test-{kind}-{uuid.uuid4().hex[:12]}",
        CHURNWATCH_DATABASE_URL=database_url,
        CHURNWATCH_API_TOKEN=TOKEN,
    )
    customers, produced = simulate(env, PLAN)
    worker = WorkerProcess(env, workdir).start()
    try:
        worker.wait_for("churnwatch_events_processed_total", produced)
        end = PLAN.end + 1  # the heartbeat less the allowed lateness
        wait_until(
            lambda: list(worker.watermarks().values()) == [end] * env.partitions,
            "every partition evaluated to the end",
            worker,
        )
        worker.wait_for(
            "churnwatch_alert_sink_written_total", worker.total("churnwatch_alerts_total")
        )
        yield Pipeline(worker, env, customers, database_url, produced)
    finally:
        worker.stop()


def at_risk(pipeline: Pipeline) -> list[dict[str, Any]]:
    reply = call(pipeline.worker, "/at-risk")
    assert reply.status == 200, reply.body
    items: list[dict[str, Any]] = reply.json()["items"]
    return items


def test_every_customers_health_agrees_with_its_open_alert(pipeline: Pipeline) -> None:
    open_alerts = {item["customer_id"]: item["alert_id"] for item in at_risk(pipeline)}
    assert 10 < len(open_alerts) < len(pipeline.customers) / 2
    final_day = datetime.fromtimestamp(PLAN.end, UTC).isoformat()
    scores: list[int] = []

    for customer_id in pipeline.customers:
        reply = call(pipeline.worker, f"/customers/{urllib.parse.quote(customer_id)}")
        assert reply.status == 200, reply.body
        health = reply.json()
        assert (health["customer_id"], health["as_of"]) == (customer_id, final_day)
        assert health["alert_id"] == open_alerts.get(customer_id), customer_id
        assert (health["status"] == "at_risk") == (customer_id in open_alerts)
        if customer_id in open_alerts:  # an alert stays open a few clear days before resolving
            scores.append(health["risk_score"])

    assert sum(score > 0 for score in scores) > len(scores) / 2
    missing = call(pipeline.worker, "/customers/nobody-here")
    assert (missing.status, missing.json()["error"]) == (404, "customer_not_found")


def test_alerts_filter_and_page_through_the_store(pipeline: Pipeline) -> None:
    everything = call(pipeline.worker, "/alerts?limit=500").json()
    assert everything["next_cursor"] is None
    alerts = {item["alert_id"]: item for item in everything["items"]}
    assert len(alerts) > 10

    paged: list[str] = []
    path = "/alerts?limit=7"
    while path:
        page = call(pipeline.worker, path).json()
        assert len(page["items"]) <= 7
        paged += [item["alert_id"] for item in page["items"]]
        path = f"/alerts?limit=7&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert paged == [item["alert_id"] for item in everything["items"]], "every alert once, in order"

    def ids(query: str) -> set[str]:
        reply = call(pipeline.worker, f"/alerts?limit=500&{query}")
        assert reply.status == 200, reply.body
        return {item["alert_id"] for item in reply.json()["items"]}

    assert ids("status=open") == {item["alert_id"] for item in at_risk(pipeline)}
    assert ids("status=open") | ids("status=closed") == set(alerts)
    inactive = {
        a for a, item in alerts.items() if "inactive" in {r["code"] for r in item["reasons"]}
    }
    assert inactive
    assert ids("reason=inactive") == inactive
    for severity in ("info", "warning", "critical"):
        assert ids(f"severity={severity}") == {
            a for a, item in alerts.items() if item["severity"] == severity
        }
    plan_name = next(item["segment"]["plan"] for item in alerts.values() if item["segment"])
    assert ids(f"segment=plan%3D{plan_name}") == {
        a for a, item in alerts.items() if item["segment"].get("plan") == plan_name
    }
    bad = call(pipeline.worker, "/alerts?limit=501")
    assert (bad.status, bad.json()["field"]) == (400, "limit")


def test_an_ack_round_trips_through_the_store(pipeline: Pipeline) -> None:
    alert_id = at_risk(pipeline)[0]["alert_id"]

    reply = call(pipeline.worker, f"/alerts/{alert_id}/ack", {"by": "ana", "note": "on it"})

    assert reply.status == 200, reply.body
    shown = call(pipeline.worker, f"/alerts/{alert_id}").json()
    assert (shown["acknowledged_by"], shown["acknowledgement_note"]) == ("ana", "on it")
    assert shown["transitions"][0]["status"] == "opened"
    store = AlertStore(pipeline.database_url)
    try:
        assert store.get(alert_id).acknowledged_by == "ana"
    finally:
        store.close()


def test_a_snooze_round_trips_through_the_store_and_the_stream(pipeline: Pipeline) -> None:
    alert = at_risk(pipeline)[-1]
    customer_id = alert["customer_id"]
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    processed = pipeline.worker.total("churnwatch_events_processed_total")

    reply = call(
        pipeline.worker,
        f"/alerts/{alert['alert_id']}/snooze",
        {"until": until.isoformat(), "by": "bo"},
    )

    assert reply.status == 200, reply.body
    assert reply.json()["snoozed_until"] == until.isoformat()
    store = AlertStore(pipeline.database_url)
    try:
        assert store.get(alert["alert_id"]).snoozed_until == until
    finally:
        store.close()
    pipeline.worker.wait_for("churnwatch_events_processed_total", processed + 1)  # applied
    assert pipeline.worker.total("churnwatch_events_dead_lettered_total") == 0
    partitions, commands = customer_messages(pipeline.env, customer_id)
    assert len(partitions) == 1, "the command shares the partition of the customer's events"
    assert commands == [
        {"control": "snooze", "customer_id": customer_id, "until": until.isoformat()}
    ]


def customer_messages(env: WorkerEnv, customer_id: str) -> tuple[set[int], list[Any]]:
    """Partitions of the usage topic holding the customer's messages, and its control messages."""
    consumer = KafkaConsumer(bootstrap_servers=env.bootstrap, consumer_timeout_ms=2000)
    try:
        parts = [TopicPartition(env.usage_topic, p) for p in range(env.partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        partitions: set[int] = set()
        commands: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(p) < ends[p] for p in parts) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if record.key == customer_id.encode():
                        partitions.add(record.partition)
                        value = orjson.loads(record.value)
                        if "control" in value:
                            commands.append(value)
    finally:
        consumer.close()
    return partitions, commands


def test_the_at_risk_csv_parses_to_the_json_list(pipeline: Pipeline) -> None:
    items = at_risk(pipeline)

    reply = call(pipeline.worker, "/at-risk", accept="text/csv")

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.body.decode(), newline="")))
    assert [(r["customer_id"], r["alert_id"], int(r["risk_score"])) for r in rows] == [
        (i["customer_id"], i["alert_id"], i["risk_score"]) for i in items
    ]
    assert [r["reasons"].split() for r in rows] == [i["reasons"] for i in items]
    assert [r["segment_plan"] for r in rows] == [i["segment"].get("plan", "") for i in items]
    assert call(pipeline.worker, "/at-risk?format=csv").body == reply.body


def test_the_token_is_required_everywhere_but_the_probes(pipeline: Pipeline) -> None:
    worker = pipeline.worker
    for path in ("/alerts", "/at-risk", f"/customers/{pipeline.customers[0]}", "/alerts/x"):
        for token in (None, "wrong"):
            reply = call(worker, path, token=token)
            assert reply.status == 401, (path, token)
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/metrics", "/healthz", "/readyz"):
        assert call(worker, path, token=None).status == 200, path


def test_either_of_two_workers_answers_for_any_customer_from_its_owner(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = WorkerEnv.unique(kafka_bootstrap, unique_name)  # each worker its own store
    customers, produced = simulate(env, ROUTING_PLAN)
    workers = [
        WorkerProcess(env, tmp_path, "first").start(),
        WorkerProcess(env, tmp_path, "second"),
    ]
    try:
        end = ROUTING_PLAN.end + 1
        # The second joins once the first has read the history: a hand-over mid-history is
        # the known issue of tests/integration/test_figures.py, not what this test is about.
        wait_until(
            lambda: (
                set(workers[0].watermarks().values()) == {end}
                and len(workers[0].watermarks()) == env.partitions
            ),
            "the first worker reading the whole history",
            workers[0],
        )
        workers[1].start()

        def settled() -> bool:
            owned = [owned_partitions(w) for w in workers]
            marks = [w.watermarks() for w in workers]
            return (
                all(owned)
                and owned[0].isdisjoint(owned[1])
                and owned[0] | owned[1] == set(range(env.partitions))
                and all(w.ready() for w in workers)
                and all(
                    set(m) == o and set(m.values()) == {end}
                    for m, o in zip(marks, owned, strict=True)
                )
            )

        wait_until(settled, "two settled workers sharing the partitions", workers[1])
        owners = {w.url: owned_partitions(w) for w in workers}
        served: dict[str, int] = dict.fromkeys(owners, 0)
        for customer_id in customers:
            replies = [call(w, f"/customers/{customer_id}", token=None) for w in workers]
            assert [r.status for r in replies] == [200, 200], (customer_id, replies)
            assert replies[0].json() == replies[1].json(), customer_id
            answered = {r.headers["X-Churnwatch-Worker"].rstrip("/") for r in replies}
            assert len(answered) == 1, customer_id
            owner = answered.pop()
            assert partition_of(customer_id, env.partitions) in owners[owner], customer_id
            served[owner] += 1
        assert all(count > 0 for count in served.values()), served
        assert sum(w.total("churnwatch_events_processed_total") for w in workers) >= produced
    finally:
        for worker in workers:
            worker.stop()


def owned_partitions(worker: WorkerProcess) -> set[int]:
    partitions = worker.health()["partitions"]
    assert isinstance(partitions, list)
    return {int(partition) for partition in partitions}
