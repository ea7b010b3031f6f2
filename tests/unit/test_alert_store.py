"""The SQL alert store on SQLite, the wire validation it applies, and the sink agent.

The `check_*` functions take any migrated store, so the PostgreSQL tests run them too. Each
check names its alerts with a fresh prefix, so several checks can share one database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy import select, update

from agents import alert_sink
from churnwatch.exceptions import (
    AlertNotFoundError,
    InvalidAlertError,
    InvalidAlertRequestError,
    InvalidEventError,
)
from churnwatch.store.alerts import (
    STATUSES,
    AlertStore,
    Transition,
    decode_transition,
    parse_transition,
)
from churnwatch.store.models import AlertTransition, open_engine
from config import load_settings
from streams.app import MemoryPeriodSink, Worker, create_worker
from streams.ingest import NoBacklog

DAY = timedelta(days=1)
START = datetime(2024, 3, 1, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat()


def wire(
    alert_id: str,
    status: str = "opened",
    day: int = 0,
    *,
    customer_id: str = "c-42",
    opened_day: int = 0,
    score: int = 55,
    codes: Sequence[str] = ("usage_drop",),
    emitted_offset: float = 3603.4,
    **extra: Any,
) -> dict[str, Any]:
    """An alert transition as the worker publishes it (docs/schemas/alert.schema.json)."""
    closing = status in ("resolved", "churned")
    return {
        "schema": "churnwatch.alert/1",
        "alert_id": alert_id,
        "customer_id": customer_id,
        "status": status,
        "risk_score": 0 if closing else score,
        "reasons": []
        if closing
        else [
            {"code": c, "area": "execution", "observed": 2.1, "baseline": 24.5, "window_days": 7}
            for c in codes
        ],
        "opened_at": iso(START + opened_day * DAY),
        "event_time": iso(START + day * DAY),
        "emitted_at": iso(START + day * DAY + timedelta(seconds=emitted_offset)),
        **extra,
    }


def new_prefix() -> str:
    return uuid.uuid4().hex[:12]


def stored_transitions(store_url: str, prefix: str) -> list[tuple[Any, ...]]:
    """(alert_id, status, event_time, payload...) of the transitions stored for `prefix`."""
    engine = open_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(AlertTransition).where(AlertTransition.alert_id.startswith(prefix))
            ).all()
    finally:
        engine.dispose()
    return sorted(
        (r.alert_id, r.status, r.event_time, r.customer_id, r.risk_score, r.severity) for r in rows
    )


# -- checks shared with the PostgreSQL tests ---------------------------------------------------


def check_record_is_idempotent(store: AlertStore, url: str) -> None:
    p = new_prefix()
    batch = [wire(f"{p}-a"), wire(f"{p}-a", "escalated", 2, score=80), wire(f"{p}-b")]

    assert store.record(batch) == 3
    resent = [dict(t, emitted_at=iso(START + 9 * DAY)) for t in batch]  # a re-send
    assert store.record(resent) == 0
    assert store.record([*batch, *batch]) == 0

    assert len(stored_transitions(url, p)) == 3
    first = store.transitions(f"{p}-a")[0]
    assert first.emitted_at == START + timedelta(seconds=3603.4), "the first delivery's kept"
    alert = store.get(f"{p}-a")
    assert (alert.status, alert.risk_score, alert.event_time) == ("escalated", 80, START + 2 * DAY)


def check_a_late_transition_never_moves_an_alert_back(store: AlertStore) -> None:
    p = new_prefix()
    store.record([wire(f"{p}-a", "resolved", 5)])
    store.record([wire(f"{p}-a", "escalated", 3, score=90), wire(f"{p}-a", "opened", 0)])

    alert = store.get(f"{p}-a")
    assert (alert.status, alert.is_open, alert.event_time) == ("resolved", False, START + 5 * DAY)
    assert [t.status for t in store.transitions(f"{p}-a")] == ["opened", "escalated", "resolved"]

    # Same event time: the lifecycle order decides, whatever order they arrive in.
    store.record([wire(f"{p}-b", "churned", 1), wire(f"{p}-b", "escalated", 1)])
    store.record([wire(f"{p}-b", "opened", 1)])
    assert store.get(f"{p}-b").status == "churned"


def universe(prefix: str) -> list[dict[str, Any]]:
    """Distinct transitions of three alerts, two of them with ties in event time."""
    return [
        wire(f"{prefix}-a", "opened", 1, opened_day=1, customer_id="c-1"),
        wire(f"{prefix}-a", "escalated", 3, opened_day=1, score=75, customer_id="c-1"),
        wire(f"{prefix}-a", "escalated", 5, opened_day=1, score=95, customer_id="c-1"),
        wire(f"{prefix}-a", "resolved", 8, opened_day=1, customer_id="c-1"),
        wire(f"{prefix}-b", "opened", 2, opened_day=2, customer_id="c-2", severity="critical"),
        wire(f"{prefix}-b", "churned", 4, opened_day=2, customer_id="c-2", severity="critical"),
        wire(f"{prefix}-c", "opened", 6, opened_day=6, customer_id="c-3"),
        wire(f"{prefix}-c", "escalated", 6, opened_day=6, score=80, customer_id="c-3"),
        wire(f"{prefix}-c", "resolved", 6, opened_day=6, customer_id="c-3"),
        wire(f"{prefix}-c", "churned", 6, opened_day=6, customer_id="c-3"),
    ]


# Deliveries: indices into universe() (any order, repeats allowed) and batch sizes.
deliveries = st.tuples(
    st.lists(st.integers(0, len(universe("x")) - 1), min_size=1, max_size=30),
    st.integers(1, 8),
)


def check_deliveries_converge(
    store: AlertStore, url: str, order: Sequence[int], batch_size: int
) -> None:
    """Whatever the order, repeats and batching: one row per transition, the latest state."""
    p = new_prefix()
    every = universe(p)
    sent = [
        dict(every[i], emitted_at=iso(START + n * timedelta(minutes=1)))
        for n, i in enumerate(order)
    ]
    for first in range(0, len(sent), batch_size):
        store.record(sent[first : first + batch_size])

    delivered = [parse_transition(every[i]) for i in sorted(set(order))]
    assert stored_transitions(url, p) == sorted(
        (t.alert_id, t.status, t.event_time, t.customer_id, t.risk_score, t.severity)
        for t in delivered
    )
    for alert_id in {t.alert_id for t in delivered}:
        latest = max((t for t in delivered if t.alert_id == alert_id), key=lambda t: t.order)
        alert = store.get(alert_id)
        assert (alert.status, alert.event_time, alert.risk_score, alert.severity) == (
            latest.status,
            latest.event_time,
            latest.risk_score,
            latest.severity,
        )
        assert alert.reason_codes == latest.reason_codes
        assert alert.is_open == (latest.status in ("opened", "escalated"))


def filter_fixture(store: AlertStore) -> str:
    """Five alerts with different status, severity, reasons and segment; return the prefix."""
    p = new_prefix()
    store.record(
        [
            wire(f"{p}-1", day=1, severity="critical", segment={"plan": "pro", "channel": "web"}),
            wire(f"{p}-2", day=2, codes=("inactive", "payment_failed"), segment={"plan": "pro"}),
            wire(f"{p}-3", "opened", 0, codes=("usage_drop",), segment={"plan": "basic"}),
            wire(f"{p}-3", "resolved", 3, segment={"plan": "basic"}),
            wire(f"{p}-4", day=4, severity="info", codes=("usagexdrop",)),  # an unknown code
            wire(f"{p}-5", day=5, codes=("cancel_scheduled",), mrr_at_stake=129.5, currency="EUR"),
        ]
    )
    return p


def ids(page: Any, prefix: str) -> list[str]:
    return [
        a.alert_id.removeprefix(f"{prefix}-") for a in page.alerts if a.alert_id.startswith(prefix)
    ]


def check_filters(store: AlertStore) -> None:
    p = filter_fixture(store)

    def listed(**where: Any) -> list[str]:
        return ids(store.list_alerts(limit=1000, **where), p)

    assert listed() == ["5", "4", "3", "2", "1"]  # newest event time first
    assert listed(status="open") == ["5", "4", "2", "1"]
    assert listed(status="closed") == listed(status="resolved") == ["3"]
    assert listed(severity="critical") == ["1"]
    assert listed(severity="info") == ["4"]
    assert listed(reason="usage_drop") == ["1"]  # "_" is not a wildcard; resolved has none
    assert listed(reason="payment_failed") == listed(reason="inactive") == ["2"]
    assert listed(segment={"plan": "pro"}) == ["2", "1"]
    assert listed(segment={"plan": "pro", "channel": "web"}) == ["1"]
    assert listed(segment={"plan": "pro"}, reason="inactive", status="opened") == ["2"]
    assert listed(segment={"plan": "enterprise"}) == []
    five = store.get(f"{p}-5")
    assert (five.mrr_at_stake, five.currency) == (129.5, "EUR")
    assert store.get(f"{p}-4").severity == "info"
    assert store.get(f"{p}-2").severity == "warning", "missing severity defaults to warning"


def check_pages_cover_every_alert_once(store: AlertStore) -> None:
    p = new_prefix()
    # 23 alerts over 4 event times: most pages cut through alerts of the same time.
    store.record([wire(f"{p}-{n:02d}", day=n % 4, segment={"batch": p}) for n in range(23)])
    expected = [a.alert_id for a in store.list_alerts(limit=1000, segment={"batch": p}).alerts]
    assert len(expected) == 23

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = store.list_alerts(segment={"batch": p}, limit=4, cursor=cursor)
        seen += [a.alert_id for a in page.alerts]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    assert pages == 6
    times = [store.get(alert_id).event_time for alert_id in seen]
    assert times == sorted(times, reverse=True)


def check_ack_and_snooze(store: AlertStore) -> None:
    p = new_prefix()
    store.record([wire(f"{p}-a", day=1)])
    at = START + 2 * DAY

    acked = store.acknowledge(f"{p}-a", by="ana", note="called them", at=at)
    assert (acked.acknowledged_by, acked.acknowledged_at) == ("ana", at)
    assert acked.acknowledgement_note == "called them"
    assert not store.is_snoozed(f"{p}-a", at)

    snoozed = store.snooze(f"{p}-a", until=at + 3 * DAY, by="bo", at=at)
    assert (snoozed.snoozed_until, snoozed.snoozed_by, snoozed.snoozed_at) == (
        at + 3 * DAY,
        "bo",
        at,
    )
    assert store.is_snoozed(f"{p}-a", at + DAY)
    assert not store.is_snoozed(f"{p}-a", at + 3 * DAY), "the snooze ends at `until`"
    assert not store.is_snoozed(f"{p}-unknown", at), "an unseen alert is not snoozed"

    # A later transition keeps what people did.
    store.record([wire(f"{p}-a", "escalated", 3, score=90)])
    alert = store.get(f"{p}-a")
    assert (alert.status, alert.acknowledged_by, alert.snoozed_by) == ("escalated", "ana", "bo")

    with pytest.raises(AlertNotFoundError, match="no alert with id"):
        store.acknowledge(f"{p}-missing", by="ana", note=None, at=at)
    with pytest.raises(AlertNotFoundError):
        store.snooze(f"{p}-missing", until=at + DAY, by="ana", at=at)
    with pytest.raises(AlertNotFoundError):
        store.get(f"{p}-missing")
    with pytest.raises(InvalidAlertRequestError, match="not after"):
        store.snooze(f"{p}-a", until=at, by="ana", at=at)
    with pytest.raises(InvalidAlertRequestError, match="must name someone"):
        store.acknowledge(f"{p}-a", by="  ", note=None, at=at)
    with pytest.raises(InvalidAlertRequestError, match="time zone"):
        store.acknowledge(f"{p}-a", by="ana", note=None, at=datetime(2024, 3, 1))


def check_claim_once(store: AlertStore) -> None:
    p = new_prefix()
    at = START + DAY

    assert store.claim_notification(f"{p}-a", "opened", at, "slack")
    assert not store.claim_notification(f"{p}-a", "opened", at, "slack")
    assert store.claim_notification(f"{p}-a", "opened", at, "pagerduty"), "routes are apart"
    assert store.claim_notification(f"{p}-a", "escalated", at, "slack"), "so are statuses"

    store.release_notification(f"{p}-a", "opened", at, "slack")  # the send failed
    store.release_notification(f"{p}-a", "opened", at, "slack")  # twice: nothing to release
    assert store.claim_notification(f"{p}-a", "opened", at, "slack"), "a retry can claim it"
    assert not store.claim_notification(f"{p}-a", "opened", at, "slack")
    assert not store.claim_notification(f"{p}-a", "opened", at, "pagerduty"), "still claimed"


def check_at_risk_lists_open_alerts(store: AlertStore) -> None:
    p = filter_fixture(store)
    risky = [a for a in store.at_risk() if a.alert_id.startswith(p)]

    assert {a.alert_id.removeprefix(f"{p}-") for a in risky} == {"1", "2", "4", "5"}
    assert all(a.is_open for a in risky)
    assert risky[0].alert_id == f"{p}-5", "equal scores: the most MRR at stake first"


# -- SQLite ------------------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/var/alerts.sqlite3"


@pytest.fixture
def store(url: str) -> Iterator[AlertStore]:
    store = AlertStore(url)
    store.migrate()
    yield store
    store.close()


def test_recording_twice_never_duplicates(store: AlertStore, url: str) -> None:
    check_record_is_idempotent(store, url)


def test_a_late_transition_never_moves_an_alert_back(store: AlertStore) -> None:
    check_a_late_transition_never_moves_an_alert_back(store)


def test_any_order_and_duplication_give_the_same_rows(store: AlertStore, url: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(deliveries)
    def converge(delivery: tuple[list[int], int]) -> None:
        check_deliveries_converge(store, url, *delivery)

    converge()


def test_filters(store: AlertStore) -> None:
    check_filters(store)


def test_pages_cover_every_alert_once(store: AlertStore) -> None:
    check_pages_cover_every_alert_once(store)


def test_ack_and_snooze(store: AlertStore) -> None:
    check_ack_and_snooze(store)


def test_a_notification_is_claimed_once(store: AlertStore) -> None:
    check_claim_once(store)


def test_at_risk_lists_every_open_alert(store: AlertStore) -> None:
    check_at_risk_lists_open_alerts(store)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"limit": 0}, "limit must be 1 to 1000"),
        ({"status": "pending"}, "status must be one of open, closed, opened"),
        ({"severity": "high"}, "severity must be one of info"),
        ({"reason": "usage%"}, "not a reason code"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "not a cursor"),
        ({"cursor": "%%%"}, "not a cursor"),
    ],
)
def test_a_malformed_query_is_refused(
    store: AlertStore, where: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidAlertRequestError, match=message):
        store.list_alerts(**where)


def test_a_mapping_that_does_not_validate_writes_nothing(store: AlertStore, url: str) -> None:
    p = new_prefix()
    with pytest.raises(InvalidAlertError):
        store.record([wire(f"{p}-a"), {"schema": "churnwatch.alert/1"}])
    assert stored_transitions(url, p) == []


def test_history_reads_back_reasons_as_sent_and_the_same_transition(store: AlertStore) -> None:
    message = wire("a", codes=("usage_drop", "seat_churn"), mrr_at_stake=129.5, currency="EUR")
    message["reasons"][1]["extra"] = {"nested": True}
    store.record([message])

    (stored,) = store.transitions("a")

    assert stored == parse_transition(message)
    assert stored.reasons[1]["extra"] == {"nested": True}
    assert store.get("a").reasons[1]["extra"] == {"nested": True}


def test_a_row_stored_without_emitted_at_reads_back_with_the_time_it_was_recorded(
    store: AlertStore, url: str
) -> None:
    store.record([wire("a")])
    engine = open_engine(url)
    with engine.begin() as connection:
        connection.execute(update(AlertTransition).values(emitted_at=None))
        recorded = connection.scalar(select(AlertTransition.recorded_at))
    engine.dispose()

    assert recorded is not None
    assert store.transitions("a")[0].emitted_at == recorded


def test_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    store = AlertStore("sqlite://")
    store.migrate()

    assert asyncio.run(asyncio.to_thread(store.record, [wire("a")])) == 1
    assert store.get("a").status == "opened"
    store.close()


# -- the wire, leniently -----------------------------------------------------------------------


def test_an_older_message_gets_defaults_for_the_new_fields() -> None:
    transition = parse_transition(wire("a"))

    assert (transition.severity, transition.mrr_at_stake_cents, transition.currency) == (
        "warning",
        0,
        None,
    )
    assert transition.segment == {}
    assert parse_transition(wire("a", severity="emergency")).severity == "warning"


def test_unknown_fields_and_reason_codes_are_kept_or_ignored() -> None:
    message = wire("a", codes=("usage_drop", "seat_churn"), severity="critical", future="x")
    message["reasons"][1]["extra"] = {"nested": True}
    message.update(mrr_at_stake=129.0, currency="EUR", segment={"plan": "pro", "size": 50})

    transition = decode_transition(orjson.dumps(message))

    assert transition.reason_codes == ("usage_drop", "seat_churn")
    assert transition.reasons[1]["extra"] == {"nested": True}
    assert (transition.mrr_at_stake_cents, transition.currency) == (12900, "EUR")
    assert transition.segment == {"plan": "pro", "size": "50"}
    assert transition.event_time == START
    assert transition.order == (START, STATUSES.index("opened"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b"x" * (64 * 1024 + 1), "too_large"),
        (orjson.dumps(wire("a", schema="churnwatch.alert/2")), "unknown_schema"),
        (orjson.dumps({**wire("a"), "alert_id": None}), "missing_field"),
        (orjson.dumps(wire("a", status="paused")), "invalid_value"),
        (orjson.dumps(wire("a", risk_score=101)), "invalid_value"),
        (orjson.dumps(wire("a", risk_score="55")), "wrong_type"),
        (orjson.dumps(wire("a", mrr_at_stake=-1)), "invalid_value"),
        (orjson.dumps(wire("a", event_time="2024-03-01T00:00:00")), "invalid_value"),
        (orjson.dumps(wire("a", event_time="yesterday")), "invalid_value"),
        (orjson.dumps(wire("a", reasons=[{"area": "execution"}])), "invalid_value"),
        (orjson.dumps(wire("a", segment={"plan": ["pro"]})), "invalid_value"),
    ],
)
def test_a_malformed_alert_names_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidAlertError) as caught:
        decode_transition(raw)

    assert caught.value.reason == reason
    assert isinstance(caught.value, InvalidEventError)


# -- the sink agent through Faust's test seam --------------------------------------------------


@pytest.fixture
def worker(tmp_path: Path, url: str) -> Worker:
    settings = load_settings(data_dir=tmp_path, database_url=url, batch_within_seconds=0.01)
    worker = create_worker(
        settings,
        CollectorRegistry(),
        periods=MemoryPeriodSink(),
        backlog=NoBacklog(),
        owned=lambda: {0},
    )
    if "alert_sink" not in worker.agents:  # not wired into install_all yet
        alert_sink.install(worker)
    worker.app.finalize()
    worker.app.flow_control.resume()
    return worker


def test_the_sink_stores_transitions_and_skips_malformed_ones(worker: Worker, url: str) -> None:
    def sample(name: str, **labels: str) -> float:
        return worker.registry.get_sample_value(name, labels) or 0.0

    async def scenario() -> None:
        async with worker.agents["alert_sink"].test_context() as agent:
            messages = [
                orjson.dumps(wire("a")),
                b"{not json",
                orjson.dumps(wire("a", "escalated", 2, score=90)),
                orjson.dumps(wire("a")),  # redelivered
                orjson.dumps(wire("b", schema="churnwatch.alert/9")),
            ]
            for value in messages:
                await agent.put(value, key=b"c-42")
            for _ in range(500):
                seen = sum(
                    sample(f"churnwatch_alert_sink_{name}_total")
                    for name in ("written", "duplicate")
                )
                if seen >= 3:
                    break
                await asyncio.sleep(0.01)

    asyncio.run(scenario())

    assert sample("churnwatch_alert_sink_written_total") == 2
    assert sample("churnwatch_alert_sink_duplicate_total") == 1
    assert sample("churnwatch_alert_sink_invalid_total", reason="not_json") == 1
    assert sample("churnwatch_alert_sink_invalid_total", reason="unknown_schema") == 1
    store = AlertStore(url)
    try:
        assert store.get("a").status == "escalated"
        assert [t.status for t in store.transitions("a")] == ["opened", "escalated"]
    finally:
        store.close()


def test_transition_keys_repeat_exactly_what_a_resend_repeats() -> None:
    first = parse_transition(wire("a", emitted_offset=1.0))
    resent = parse_transition(wire("a", emitted_offset=99.0))

    assert isinstance(first, Transition)
    assert first.key == resent.key
    assert first.emitted_at != resent.emitted_at
