"""The HTTP API against workers built by create_worker, served by aiohttp's test server.

Customer state comes through the ingest agent's test seam; alerts from a SQLite alert store;
the owner of a key and the stream's snooze sender are fakes. Requests go over loopback only.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]  # no stubs
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

from agents import api, api_formats
from churnwatch.broker import free_port
from churnwatch.domain.alertwire import Transition, parse_transition
from churnwatch.domain.events import Snooze, parse_usage_message
from churnwatch.store.alerts import AlertStore
from config import load_settings
from streams.app import MemoryPeriodSink, Worker, create_worker
from streams.commands import send_snooze, snooze_message
from streams.ingest import NoBacklog

DAY = 86_400.0
START = 1_577_836_800.0  # 2020-01-01
ALERT_START = datetime(2024, 3, 1, tzinfo=UTC)
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
ODD_ID = "team/\u00e9, b"  # non-ASCII, a slash, a comma: quoted in a path
DOCS = Path(__file__).resolve().parents[2] / "docs"
OPENAPI = DOCS / "openapi.yaml"


class NoEmitter:
    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> None:
        pass

    async def flush(self) -> None:
        pass


class Owners:
    """Customers named in `remote` live on another worker; `unknown` ones on none."""

    def __init__(self, remote: dict[str, str] | None = None, unknown: bool = False) -> None:
        self.remote = remote or {}
        self.unknown = unknown

    def owner(self, customer_id: str) -> str | None:
        if self.unknown:
            raise LookupError(customer_id)
        return self.remote.get(customer_id)


class Snoozes:
    """Records what the stream is told; fails when asked to."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, datetime]] = []
        self.fail = fail

    async def __call__(self, customer_id: str, until: datetime) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((customer_id, until))


def make_worker(tmp_path: Path, port: int, token: str | None = None) -> Worker:
    settings = load_settings(
        data_dir=tmp_path / f"worker-{port}",
        database_url=f"sqlite:///{tmp_path}/default-{port}.sqlite3",
        batch_within_seconds=0.01,
        allowed_lateness_seconds=0,
        web_port=port,
        api_token=token,
    )
    worker = create_worker(
        settings,
        CollectorRegistry(),
        emitter=NoEmitter(),
        periods=MemoryPeriodSink(),
        backlog=NoBacklog(),
        owned=lambda: {0},  # test_context() delivers everything on partition 0
    )
    worker.app.finalize()
    worker.app.flow_control.resume()
    return worker


def transition(
    alert_id: str,
    customer_id: str,
    status: str = "opened",
    day: int = 0,
    *,
    score: int = 55,
    severity: str = "warning",
    codes: tuple[str, ...] = ("usage_drop",),
    segment: dict[str, str] | None = None,
    mrr: float = 0.0,
) -> dict[str, Any]:
    """An alert transition as the worker publishes it (docs/schemas/alert.schema.json)."""
    closing = status in ("resolved", "churned")
    at = ALERT_START + timedelta(days=day)
    return {
        "schema": "churnwatch.alert/1",
        "alert_id": alert_id,
        "customer_id": customer_id,
        "status": status,
        "risk_score": 0 if closing else score,
        "severity": severity,
        "mrr_at_stake": mrr,
        "currency": "EUR",
        "segment": segment or {},
        "reasons": []
        if closing
        else [
            {"code": c, "area": "execution", "observed": 2.1, "baseline": 24.5, "window_days": 7}
            for c in codes
        ],
        "opened_at": ALERT_START.isoformat(),
        "event_time": at.isoformat(),
        "emitted_at": (at + timedelta(hours=1)).isoformat(),
    }


ALERTS = [
    transition("a-1", "c-1", day=1, segment={"plan": "pro", "channel": "sales"}, mrr=129),
    transition("a-1", "c-1", "escalated", 3, score=80, severity="critical",
               codes=("usage_drop", "inactive"), segment={"plan": "pro", "channel": "sales"},
               mrr=129),
    transition("a-2", 'c-2, "quoted"\nline', day=2, segment={"plan": "basic"}),
    transition("a-3", "c-3", day=1, codes=("payment_failed",), segment={"plan": "pro"}),
    transition("a-3", "c-3", "resolved", 4),
    transition("a-4", "c-4", day=5, score=30, severity="info", codes=("inactive",)),
    transition("a-5", "c-5", day=6, score=60, codes=("downgrade",), segment={"plan": "pro"}),
]  # fmt: skip
OPEN = {"a-1", "a-2", "a-4", "a-5"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    store = AlertStore(f"sqlite:///{tmp_path}/alerts.sqlite3")
    store.migrate()
    store.record(ALERTS)
    yield store
    store.close()


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return make_worker(tmp_path, 16_001)


@asynccontextmanager
async def serving(worker: Worker) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(cast(Any, worker.app.web).web_app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await worker.app.http_client.close()


def usage(customer: str, at: float) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{customer}-{at}",
            "customer_id": customer,
            "occurred_at": at,
            "event_type": "api_call",
            "quantity": 10,
        }
    )


async def feed(worker: Worker) -> None:
    """30 days of daily usage for "steady" and ODD_ID; "silent" stops after day 19 (an inactive
    alert)."""
    async with worker.agents["ingest"].test_context() as agent:
        for day in range(30):
            for customer in ("steady", "silent", ODD_ID):
                if customer == "silent" and day >= 20:
                    continue
                await agent.put(usage(customer, START + day * DAY + 3600), key=customer.encode())
        for _ in range(500):
            if worker.clocks.get(0).evaluated_day == int(START / DAY) + 29:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the agent did not reach the last day")


def json_schema(path: Path) -> Draft202012Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


# -- GET /customers/{customer_id} ---------------------------------------------------------------


def test_a_customers_health_is_computed_as_of_its_partitions_last_day(
    worker: Worker, store: AlertStore
) -> None:
    api.install(worker, store, owners=Owners(), snoozes=Snoozes())

    async def scenario() -> tuple[Any, ...]:
        await feed(worker)
        async with serving(worker) as client:
            silent = await client.get("/customers/silent")
            steady = await client.get("/customers/steady")
            return silent.status, await silent.json(), silent.headers, await steady.json()

    status, silent, headers, steady = run(scenario)

    assert status == 200
    assert headers[api.WORKER_HEADER] == str(worker.app.conf.canonical_url)
    health_schema = json_schema(DOCS / "schemas" / "customer-health.schema.json")
    health_schema.validate(silent)
    health_schema.validate(steady)
    assert silent["schema"] == "churnwatch.customer-health/1"
    assert silent["customer_id"] == "silent"
    assert silent["as_of"] == "2020-01-30T00:00:00+00:00"
    assert silent["status"] == "at_risk"
    assert "inactive" in {reason["code"] for reason in silent["reasons"]}
    assert silent["alert_id"] == worker.customer("silent").alert.alert_id
    assert silent["window"]["recent_active_days"] == 0
    assert steady["status"] == "unsubscribed"  # no billing events: never subscribed
    assert steady["alert_id"] is None
    assert steady["window"]["recent_active_days"] == 7
    assert steady["window"]["recent_daily_usage"] == pytest.approx(10.0)


def test_an_unknown_customer_is_a_404_and_an_unsettled_worker_a_503(
    worker: Worker, store: AlertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.install(worker, store, owners=Owners(), snoozes=Snoozes())

    async def scenario() -> list[tuple[int, Any, str | None]]:
        await feed(worker)
        async with serving(worker) as client:
            replies = [await client.get("/customers/nobody")]
            replies.append(await client.get("/customers/" + "x" * 257))
            monkeypatch.setattr(worker, "settled", lambda: False)
            replies.append(await client.get("/customers/silent"))
            return [(r.status, await r.json(), r.headers.get("Retry-After")) for r in replies]

    unknown, too_long, unsettled = run(scenario)

    assert unknown[:2] == (404, {"error": "customer_not_found", "message": "no customer with "
                                 "this id", "field": "customer_id"})  # fmt: skip
    assert too_long[0] == 400
    assert too_long[1]["field"] == "customer_id"
    assert unsettled[0] == 503
    assert unsettled[1]["error"] == "rebalancing"
    assert unsettled[2] is not None


def test_a_customer_owned_elsewhere_is_answered_by_its_owner(
    tmp_path: Path, store: AlertStore
) -> None:
    here = make_worker(tmp_path, 16_002, TOKEN)  # holds no customer at all
    owner = make_worker(tmp_path, 16_003, TOKEN)
    api.install(owner, store, owners=Owners(), snoozes=Snoozes())

    async def scenario() -> dict[str, Any]:
        await feed(owner)
        async with serving(owner) as theirs:
            url = str(theirs.make_url("/"))
            remote = {"silent": url, "ghost": url, ODD_ID: url}
            api.install(here, store, owners=Owners(remote))
            async with serving(here) as ours:
                direct = await theirs.get("/customers/silent", headers=AUTH)
                routed = await ours.get("/customers/silent", headers=AUTH)
                odd = "/customers/" + quote(ODD_ID, safe="")
                odd_direct = await theirs.get(odd, headers=AUTH)
                odd_routed = await ours.get(odd, headers=AUTH)
                missing = await ours.get("/customers/ghost", headers=AUTH)
                no_token = await ours.get("/customers/silent")
                again = await ours.get("/customers/silent", headers={
                    **AUTH, api.FORWARDED_HEADER: "http://elsewhere"})  # fmt: skip
                return {
                    "direct": (direct.status, await direct.read()),
                    "routed": (routed.status, await routed.read()),
                    "odd_direct": (odd_direct.status, await odd_direct.json()),
                    "odd_routed": (odd_routed.status, await odd_routed.json()),
                    "worker": routed.headers.get(api.WORKER_HEADER),
                    "missing": (missing.status, await missing.json()),
                    "no_token": (no_token.status, no_token.headers.get("WWW-Authenticate")),
                    "again": (again.status, await again.json()),
                }

    got = run(scenario)

    assert got["routed"] == got["direct"]
    assert got["routed"][0] == 200
    assert got["worker"] == str(owner.app.conf.canonical_url)
    assert got["odd_routed"] == got["odd_direct"]
    assert got["odd_routed"][1]["customer_id"] == ODD_ID
    assert got["missing"] == (404, {"error": "customer_not_found", "message": "no customer with "
                                    "this id", "field": "customer_id"})  # fmt: skip
    assert got["no_token"] == (401, 'Bearer realm="churnwatch"')
    assert got["again"][0] == 503, "a forwarded request is never forwarded again"
    assert got["again"][1]["error"] == "owner_moved"


def test_an_unreachable_or_unknown_owner_is_said_so(worker: Worker, store: AlertStore) -> None:
    owners = Owners({"c-1": f"http://127.0.0.1:{free_port()}"})  # nobody listens there
    api.install(worker, store, owners=owners, snoozes=Snoozes())

    async def scenario() -> list[tuple[int, str]]:
        async with serving(worker) as client:
            unreachable = await client.get("/customers/c-1")
            owners.unknown = True
            unknown = await client.get("/customers/c-1")
            return [(r.status, (await r.json())["error"]) for r in (unreachable, unknown)]

    assert run(scenario) == [(502, "owner_unreachable"), (503, "owner_unknown")]


# -- alerts -------------------------------------------------------------------------------------


@pytest.fixture
def installed(worker: Worker, store: AlertStore) -> Snoozes:
    snoozes = Snoozes()
    api.install(worker, store, owners=Owners(), snoozes=snoozes)
    return snoozes


def get_json(worker: Worker, *paths: str, headers: dict[str, str] | None = None) -> list[Any]:
    async def scenario() -> list[Any]:
        async with serving(worker) as client:
            replies = []
            for path in paths:
                response = await client.get(path, headers=headers)
                replies.append((response.status, await response.json()))
            return replies

    result: list[Any] = run(scenario)
    return result


def item_ids(reply: tuple[int, Any]) -> list[str]:
    status, body = reply
    assert status == 200, body
    return [item["alert_id"] for item in body["items"]]


@pytest.mark.usefixtures("installed")
def test_alerts_are_filtered_like_the_store_filters(worker: Worker) -> None:
    replies = get_json(
        worker,
        "/alerts",
        "/alerts?status=open",
        "/alerts?status=resolved",
        "/alerts?severity=critical",
        "/alerts?reason=inactive",
        "/alerts?segment=plan%3Dpro",
        "/alerts?segment=plan%3Dpro&segment=channel%3Dsales",
        "/alerts?status=open&reason=usage_drop&segment=plan%3Dbasic",
    )

    assert item_ids(replies[0]) == ["a-5", "a-4", "a-3", "a-1", "a-2"]  # newest event first
    assert set(item_ids(replies[1])) == OPEN
    assert item_ids(replies[2]) == ["a-3"]
    assert item_ids(replies[3]) == ["a-1"]
    assert item_ids(replies[4]) == ["a-4", "a-1"]
    assert item_ids(replies[5]) == ["a-5", "a-1"]  # a-3's latest transition has no segment
    assert item_ids(replies[6]) == ["a-1"]
    assert item_ids(replies[7]) == ["a-2"]
    first = replies[0][1]["items"][3]
    assert (first["status"], first["risk_score"], first["mrr_at_stake"]) == ("escalated", 80, 129)
    assert replies[0][1]["next_cursor"] is None


@pytest.mark.usefixtures("installed")
def test_pages_follow_the_cursor_to_every_alert_once(worker: Worker) -> None:
    async def scenario() -> list[list[str]]:
        pages: list[list[str]] = []
        async with serving(worker) as client:
            path = "/alerts?limit=2"
            while True:
                body = await (await client.get(path)).json()
                pages.append([item["alert_id"] for item in body["items"]])
                if body["next_cursor"] is None:
                    return pages
                path = f"/alerts?limit=2&cursor={body['next_cursor']}"

    assert run(scenario) == [["a-5", "a-4"], ["a-3", "a-1"], ["a-2"]]


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=%EF%BC%95", "limit"),  # a full-width digit
        ("status=paused", "status"),
        ("status=open&status=closed", "status"),
        ("severity=high", "severity"),
        ("reason=Usage-Drop", "reason"),
        ("segment=plan", "segment"),
        ("segment=%3Dpro", "segment"),
        ("segment=plan%3Dpro&segment=plan%3Dbasic", "segment"),
        ("cursor=not-a-cursor", "cursor"),
        ("sort=score", "sort"),
    ],
)
def test_a_bad_alerts_query_is_a_400_naming_the_parameter(
    worker: Worker, query: str, field: str
) -> None:
    [(status, body)] = get_json(worker, f"/alerts?{query}")

    assert status == 400
    assert body["error"] == "invalid_request"
    assert body["field"] == field
    assert body["message"]


@pytest.mark.usefixtures("installed")
def test_an_alert_comes_with_its_transitions_oldest_first(worker: Worker) -> None:
    found, missing, too_long = get_json(
        worker, "/alerts/a-1", "/alerts/nope", "/alerts/" + "x" * 65
    )

    status, body = found
    assert status == 200
    assert (body["alert_id"], body["status"], body["open"]) == ("a-1", "escalated", True)
    assert [t["status"] for t in body["transitions"]] == ["opened", "escalated"]
    assert body["transitions"][1]["risk_score"] == 80
    assert body["transitions"][1]["reasons"][1]["code"] == "inactive"
    assert body["transitions"][0]["emitted_at"] == "2024-03-02T01:00:00+00:00"
    assert missing == (404, {"error": "alert_not_found", "message": "no alert with this id",
                             "field": "alert_id"})  # fmt: skip
    assert too_long[0] == 400


def post(worker: Worker, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    async def scenario() -> tuple[int, Any]:
        async with serving(worker) as client:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            response = await client.post(path, data=data, headers=headers)
            return response.status, await response.json()

    return run(scenario)


def test_an_ack_is_stored_with_who_and_why(
    worker: Worker, store: AlertStore, installed: Snoozes
) -> None:
    status, body = post(worker, "/alerts/a-1/ack", {"by": " ana ", "note": "calling them"})

    assert status == 200
    assert (body["acknowledged_by"], body["acknowledgement_note"]) == ("ana", "calling them")
    stored = store.get("a-1")
    assert (stored.acknowledged_by, stored.acknowledgement_note) == ("ana", "calling them")
    assert stored.acknowledged_at is not None
    assert abs(stored.acknowledged_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert installed.sent == [], "an ack tells the stream nothing"


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "by"),
        ({"by": ""}, 400, "by"),
        ({"by": 7}, 400, "by"),
        ({"by": "x" * 257}, 400, "by"),
        ({"by": "ana", "note": 5}, 400, "note"),
        ({"by": "ana", "note": "x" * 4001}, 400, "note"),
        ({"by": "ana", "not": "typo"}, 400, "not"),
        ([], 400, "body"),
        (b"{not json", 400, "body"),
        (b"", 400, "body"),
        ({"by": "ana", "note": "x" * (64 * 1024)}, 413, None),
    ],
)
def test_a_bad_ack_is_refused_naming_the_field(
    worker: Worker, store: AlertStore, body: Any, status: int, field: str | None
) -> None:
    got_status, got = post(worker, "/alerts/a-1/ack", body)

    assert got_status == status
    assert got.get("field") == field
    assert store.get("a-1").acknowledged_by is None


@pytest.mark.usefixtures("installed")
def test_a_body_streamed_without_a_length_is_cut_at_64_kib(worker: Worker) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    async def scenario() -> int:
        async with serving(worker) as client:
            response = await client.post("/alerts/a-1/ack", data=chunks())
            return response.status

    assert run(scenario) == 413


def test_acking_an_unknown_alert_is_a_404(worker: Worker, installed: Snoozes) -> None:
    assert post(worker, "/alerts/nope/ack", {"by": "ana"})[0] == 404


def test_a_snooze_is_stored_and_sent_to_the_stream(
    worker: Worker, store: AlertStore, installed: Snoozes
) -> None:
    until = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    as_sent = until.astimezone(UTC).isoformat().replace("+00:00", "Z")

    status, body = post(worker, "/alerts/a-2/snooze", {"until": as_sent, "by": "ana"})

    assert status == 200
    assert (body["snoozed_until"], body["snoozed_by"]) == (until.isoformat(), "ana")
    assert store.get("a-2").snoozed_until == until
    assert installed.sent == [('c-2, "quoted"\nline', until)]


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"by": "ana"}, "until"),
        ({"until": "2999-01-01T00:00:00Z"}, "by"),
        ({"until": "2999-01-01T00:00:00", "by": "ana"}, "until"),  # no offset
        ({"until": "2999-01-01", "by": "ana"}, "until"),
        ({"until": "2999-02-30T00:00:00Z", "by": "ana"}, "until"),
        ({"until": 32503680000, "by": "ana"}, "until"),
        ({"until": "2001-01-01T00:00:00Z", "by": "ana"}, "until"),  # past
        ({"until": "2999-01-01T00:00:00Z", "by": "ana", "note": "x"}, "note"),
    ],
)
def test_a_bad_snooze_is_refused_naming_the_field(
    worker: Worker, store: AlertStore, installed: Snoozes, body: Any, field: str
) -> None:
    status, got = post(worker, "/alerts/a-2/snooze", body)

    assert (status, got["field"]) == (400, field)
    assert store.get("a-2").snoozed_until is None
    assert installed.sent == []


def test_a_snooze_the_stream_did_not_get_is_a_503_to_repeat(
    worker: Worker, store: AlertStore
) -> None:
    api.install(worker, store, owners=Owners(), snoozes=Snoozes(fail=True))
    until = datetime.now(UTC) + timedelta(days=1)

    status, body = post(worker, "/alerts/a-2/snooze", {"until": until.isoformat(), "by": "ana"})

    assert (status, body["error"]) == (503, "stream_unavailable")
    assert store.get("a-2").snoozed_by == "ana", "stored: repeating the request is harmless"


# -- GET /at-risk -------------------------------------------------------------------------------


@pytest.mark.usefixtures("installed")
def test_the_at_risk_list_has_every_open_alert_highest_risk_first(worker: Worker) -> None:
    [(status, body)] = get_json(worker, "/at-risk")

    assert status == 200
    assert body["count"] == 4
    assert [item["alert_id"] for item in body["items"]] == ["a-1", "a-5", "a-2", "a-4"]
    assert body["items"][0] == {
        "customer_id": "c-1",
        "alert_id": "a-1",
        "status": "escalated",
        "severity": "critical",
        "risk_score": 80,
        "mrr_at_stake": 129.0,
        "currency": "EUR",
        "reasons": ["usage_drop", "inactive"],
        "segment": {"plan": "pro", "channel": "sales"},
        "opened_at": "2024-03-01T00:00:00+00:00",
        "event_time": "2024-03-04T00:00:00+00:00",
        "acknowledged_by": None,
        "snoozed_until": None,
    }


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("query", "accept"),
    [("?format=csv", None), ("", "text/csv"), ("", "application/json;q=0.5, text/csv")],
)
def test_the_at_risk_csv_parses_back(worker: Worker, query: str, accept: str | None) -> None:
    async def scenario() -> tuple[int, str, bytes]:
        async with serving(worker) as client:
            headers = {"Accept": accept} if accept else None
            response = await client.get(f"/at-risk{query}", headers=headers)
            return response.status, response.headers["Content-Type"], await response.read()

    status, content_type, raw = run(scenario)

    assert status == 200
    assert content_type.startswith("text/csv")
    assert raw.endswith(b"\r\n")
    rows = list(csv.DictReader(io.StringIO(raw.decode(), newline="")))
    assert [row["alert_id"] for row in rows] == ["a-1", "a-5", "a-2", "a-4"]
    assert rows[0] == {
        "customer_id": "c-1",
        "alert_id": "a-1",
        "status": "escalated",
        "severity": "critical",
        "risk_score": "80",
        "mrr_at_stake": "129.00",
        "currency": "EUR",
        "reasons": "usage_drop inactive",
        "segment_plan": "pro",
        "segment_channel": "sales",
        "opened_at": "2024-03-01T00:00:00+00:00",
        "event_time": "2024-03-04T00:00:00+00:00",
        "acknowledged_by": "",
        "snoozed_until": "",
    }
    assert rows[2]["customer_id"] == 'c-2, "quoted"\nline'  # quoted, the quote doubled
    assert b'"c-2, ""quoted""\nline"' in raw


@pytest.mark.usefixtures("installed")
def test_json_stays_the_default_and_a_bad_format_is_a_400(worker: Worker) -> None:
    replies = get_json(worker, "/at-risk?format=json", "/at-risk?format=xml", "/at-risk?fmt=csv")

    assert replies[0][0] == 200
    assert [(s, b["field"]) for s, b in replies[1:]] == [(400, "format"), (400, "fmt")]


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [
        ("", False),
        ("*/*", False),
        ("text/csv", True),
        ("text/*", True),
        ("text/csv;q=0.4, application/json", False),
        ("application/json;q=0.4, text/csv;q=0.9", True),
        ("text/csv;q=0, */*", False),
        ("text/csv;q=bogus, application/json", False),
    ],
)
def test_the_accept_header_picks_csv_only_when_ranked_higher(accept: str, csv_wanted: bool) -> None:
    assert api_formats.prefers_csv(accept) is csv_wanted


# -- the bearer token ---------------------------------------------------------------------------


def test_the_token_guards_every_api_route_and_no_probe(tmp_path: Path, store: AlertStore) -> None:
    worker = make_worker(tmp_path, 16_004, TOKEN)
    api.install(worker, store, owners=Owners(), snoozes=Snoozes())
    routes = [(method, re.sub(r"\{\w+\}", "a-1", path)) for method, path in api.ROUTES]

    async def scenario() -> dict[str, list[tuple[int, str | None]]]:
        out: dict[str, list[tuple[int, str | None]]] = {}
        async with serving(worker) as client:
            for label, headers in [
                ("none", {}),
                ("wrong", {"Authorization": "Bearer s3cret-tokeN"}),
                ("basic", {"Authorization": "Basic czNjcmV0LXRva2Vu"}),
                ("right", AUTH),
                ("lowercase scheme", {"Authorization": f"bearer {TOKEN}"}),
            ]:
                out[label] = []
                for method, path in routes:
                    body = {"by": "ana", "until": "2999-01-01T00:00:00Z"}
                    if path.endswith("/ack"):
                        body = {"by": "ana"}
                    response = await client.request(method, path, headers=headers, json=body)
                    out[label].append((response.status, response.headers.get("WWW-Authenticate")))
            for path in ("/metrics", "/healthz", "/readyz"):
                out[path] = [((await client.get(path)).status, None)]
        return out

    got = run(scenario)

    assert got["none"] == [(401, 'Bearer realm="churnwatch"')] * len(routes)
    invalid = (401, 'Bearer realm="churnwatch", error="invalid_token"')
    assert got["wrong"] == [invalid] * len(routes)
    assert got["basic"] == [invalid] * len(routes)
    assert all(status in (200, 404, 503) for status, _ in got["right"])
    assert got["right"][1:] == [(200, None)] * (len(routes) - 1)
    assert got["lowercase scheme"] == got["right"]
    assert got["/metrics"] == [(200, None)]
    assert got["/healthz"] == [(200, None)]
    assert got["/readyz"] == [(503, None)]  # not 401: no partitions in this test


def test_the_token_is_compared_in_constant_time(
    tmp_path: Path, store: AlertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = api.hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)
    worker = make_worker(tmp_path, 16_006, TOKEN)
    api.install(worker, store, owners=Owners(), snoozes=Snoozes())

    async def scenario() -> list[int]:
        async with serving(worker) as client:
            return [
                (await client.get("/alerts", headers=headers)).status
                for headers in ({"Authorization": f"Bearer {TOKEN[:-1]}"}, AUTH)
            ]

    assert run(scenario) == [401, 200]
    assert compared == [(TOKEN[:-1].encode(), TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_without_a_token_configured_the_api_is_open(worker: Worker, installed: Snoozes) -> None:
    [(status, _)] = get_json(worker, "/alerts", headers={"Authorization": "Bearer anything"})

    assert status == 200


def test_the_default_store_is_the_database_url_migrated_on_first_use(worker: Worker) -> None:
    api.install(worker, owners=Owners(), snoozes=Snoozes())

    [(status, body)] = get_json(worker, "/alerts")

    assert (status, body) == (200, {"items": [], "next_cursor": None})


# -- the stream command -------------------------------------------------------------------------


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send_and_wait(self, *args: Any) -> None:
        self.sent.append(args)


class App:
    def __init__(self) -> None:
        self.producer = Producer()


def test_send_snooze_produces_the_control_message_the_worker_applies() -> None:
    app = App()
    until = datetime(2024, 3, 20, 9, 30, tzinfo=UTC)

    asyncio.run(send_snooze(app, "usage-events", "c-42", until))  # type: ignore[arg-type]

    [(topic, key, value, partition, _, _)] = app.producer.sent
    assert (topic, key, partition) == ("usage-events", b"c-42", None)  # keyed: its partition
    assert orjson.loads(value) == {
        "control": "snooze",
        "customer_id": "c-42",
        "until": "2024-03-20T09:30:00+00:00",
    }
    json_schema(DOCS / "schemas" / "snooze-control.schema.json").validate(orjson.loads(value))
    limits = load_settings().limits
    parsed = parse_usage_message(value, key, now=until.timestamp(), limits=limits)
    assert parsed == Snooze("c-42", until.timestamp())


def test_a_snooze_message_can_lift_a_snooze_and_refuses_naive_times() -> None:
    _, value = snooze_message("c-1", None)

    assert orjson.loads(value)["until"] is None
    with pytest.raises(ValueError, match="time zone"):
        snooze_message("c-1", datetime(2024, 1, 1))


@given(st.text(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_of_agrees_with_faust_producers_partitioner(
    customer_id: str, partitions: int
) -> None:
    expected = DefaultPartitioner()(customer_id.encode(), list(range(partitions)), [])

    assert api.partition_of(customer_id, partitions) == expected


def test_faust_key_owners_answer_from_the_assignment(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = api.FaustKeyOwners(worker)
    partition = api.partition_of("c-42", worker.settings.partitions)
    changelog = worker.customers.changelog_topic.get_topic_name()
    mine = str(worker.app.conf.canonical_url)
    layout: dict[str, dict[str, list[int]]] = {}
    monkeypatch.setattr(worker.app.router, "table_metadata", lambda table: layout)

    monkeypatch.setattr(worker, "owned_partitions", lambda: {partition})
    assert owners.owner("c-42") is None
    monkeypatch.setattr(worker, "owned_partitions", set)
    layout.update({"http://10.0.0.2:6066": {changelog: [partition]}, mine: {changelog: []}})
    assert owners.owner("c-42") == "http://10.0.0.2:6066"
    layout.clear()
    layout[mine] = {changelog: [partition]}
    with pytest.raises(LookupError):
        owners.owner("c-42")  # the metadata says us, the assignment does not: wait


# -- the contract -------------------------------------------------------------------------------


def documented_operations(text: str) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in openapi.yaml, read without a YAML library."""
    operations: set[tuple[str, str]] = set()
    section = path = None
    for line in text.splitlines():
        if re.fullmatch(r"\S.*:\s*", line):
            section = line.strip()[:-1]
        elif section == "paths" and (found := re.fullmatch(r"  (/\S*):\s*", line)):
            path = found.group(1)
        elif (
            section == "paths"
            and path
            and (found := re.fullmatch(r"    (\w+):\s*", line))
            and found.group(1) in HTTP_METHODS
        ):
            operations.add((found.group(1).upper(), path))
    return operations


def served_operations(worker: Worker) -> set[tuple[str, str]]:
    """(METHOD, path) of the views agents.api and agents.web register on the app."""
    return {
        (method, path)
        for path, view in worker.app.web.views.items()
        if type(view).__module__ in ("agents.api", "agents.web")
        for method in view.get_methods() - {"HEAD"}
    }


def test_every_route_is_in_openapi_and_every_documented_path_is_served(
    worker: Worker, installed: Snoozes
) -> None:
    documented = documented_operations(OPENAPI.read_text())

    assert len(documented) == 9
    assert served_operations(worker) == documented
    assert set(api.ROUTES) <= documented


def test_openapi_is_a_valid_document_when_the_tools_are_installed() -> None:
    try:
        yaml = import_module("yaml")
    except ImportError:
        pytest.skip("PyYAML is not installed")
    document = yaml.safe_load(OPENAPI.read_text())
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert operations == documented_operations(OPENAPI.read_text())
    try:
        validator = import_module("openapi_spec_validator")
    except ImportError:
        pytest.skip("openapi-spec-validator is not installed")
    validator.validate(document)


def test_transitions_keep_every_reason_field_as_sent() -> None:
    sent = transition("a-9", "c-9", codes=("breadth_drop",))
    sent["reasons"][0]["measure"] = "users"
    parsed: Transition = parse_transition(sent)

    assert api_formats.transition_json(parsed)["reasons"] == sent["reasons"]


def test_responses_match_their_openapi_schemas(tmp_path: Path, store: AlertStore) -> None:
    try:
        yaml = import_module("yaml")
    except ImportError:
        pytest.skip("PyYAML is not installed")
    components = yaml.safe_load(OPENAPI.read_text())["components"]

    def check(name: str, body: Any) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": components}
        Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
            body
        )

    worker = make_worker(tmp_path, 16_005)
    api.install(worker, store, owners=Owners(), snoozes=Snoozes())
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    async def scenario() -> list[tuple[str, Any]]:
        await feed(worker)
        async with serving(worker) as client:
            replies = [
                ("CustomerHealth", await client.get("/customers/silent")),
                ("CustomerHealth", await client.get("/customers/steady")),
                ("AlertPage", await client.get("/alerts?limit=2")),
                ("AlertDetail", await client.get("/alerts/a-1")),
                ("Alert", await client.post("/alerts/a-1/ack", json={"by": "ana", "note": "x"})),
                (
                    "Alert",
                    await client.post("/alerts/a-2/snooze", json={"until": until, "by": "b"}),
                ),
                ("AtRiskList", await client.get("/at-risk")),
                ("Error", await client.get("/alerts?limit=0")),
                ("Error", await client.get("/alerts/nope")),
            ]
            return [(name, await reply.json()) for name, reply in replies]

    for name, body in run(scenario):
        check(name, body)
