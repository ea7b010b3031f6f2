"""`churnwatch replay` then `churnwatch report`: a history's closed period, end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = pytest.mark.integration

JAN = datetime(2021, 1, 1, tzinfo=UTC)


def at(days: float) -> str:
    return (JAN + timedelta(days=days)).isoformat()


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def worker(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(WorkerEnv.unique(kafka_bootstrap, unique_name), tmp_path).start()
    yield process
    process.stop()


def test_replayed_history_closes_its_period_and_reports_it(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    customers = ["acme", "globex", "initech"]
    usage = [
        orjson.dumps(
            {"event_id": f"{c}-{day}", "customer_id": c, "occurred_at": at(day + 0.5),
             "event_type": "login", "quantity": 3}
        )
        for day in range(59)
        for c in customers
    ]  # fmt: skip
    usage.insert(10, b"this line is not json")
    billing = [
        # Out of order on purpose: replay sorts by event time across both files.
        orjson.dumps({"event_id": "g-end", "customer_id": "globex",
                      "occurred_at": at(45), "type": "subscription.ended"}),
        *[
            orjson.dumps({"event_id": f"{c}-start", "customer_id": c, "occurred_at": at(1),
                          "type": "subscription.started", "plan": "team", "mrr": "199.00",
                          "channel": "sales"})
            for c in customers
        ],
        orjson.dumps({"event_id": "bad", "customer_id": "acme", "occurred_at": at(2),
                      "type": "subscription.exploded"}),
    ]  # fmt: skip
    usage_file = write_jsonl(tmp_path / "usage.jsonl", usage)
    billing_file = write_jsonl(tmp_path / "billing.jsonl", billing)

    # Past March 1st plus the allowed lateness (1 h): February closes.
    worker.env.run_cli(
        "replay", "--usage", str(usage_file), "--billing", str(billing_file),
        "--advance-to", "2021-03-01T01:00:01Z",
    )  # fmt: skip

    produced = len(usage) + len(billing)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        handled = worker.total("churnwatch_events_processed_total") + worker.total(
            "churnwatch_events_dead_lettered_total"
        )
        if handled >= produced:
            break
        time.sleep(0.5)
    assert handled == produced
    assert worker.total("churnwatch_events_dead_lettered_total", reason="not_json") == 1
    assert worker.total("churnwatch_events_dead_lettered_total", reason="invalid_value") == 1
    assert worker.total("churnwatch_events_dead_lettered_total", reason="late") == 0

    report = None
    while time.monotonic() < deadline:
        result = worker.env.run_cli(
            "report", "--period", "2021-02", "--json",
            "--database-url", f"sqlite:///{worker.data_dir}.sqlite3",
            check=False,
        )  # fmt: skip
        if result.returncode == 0:
            report = json.loads(result.stdout)
            if report["partitions"]["complete"]:
                break
        time.sleep(1.0)
    assert report is not None, "February was never recorded"
    assert report["partitions"]["complete"]
    figures = report["total"]["figures"]
    assert figures["start_customers"] == 3
    assert figures["churned_customers"] == 1
    assert figures["start_mrr_cents"] == 3 * 19_900
    assert figures["churned_mrr_cents"] == 19_900
    assert report["total"]["ratios"]["churn_rate"] == pytest.approx(0.3333, abs=1e-4)
