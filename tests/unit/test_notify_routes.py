"""Reading alert transitions and choosing the routes that take them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import churnwatch.notify
from churnwatch.exceptions import InvalidEventError
from churnwatch.notify.routes import matches, select_routes
from churnwatch.notify.transition import parse_transition
from config.notify import NotifySettings, Route, RouteMatch
from tests.unit.test_domain_purity import _impurities

PURE_MODULES = ("transition", "routes", "payloads", "ratelimit", "retry")


def wire(**fields: Any) -> dict[str, Any]:
    """An alert transition as on the topic (v1 with the new fields), `fields` overriding."""
    message: dict[str, Any] = {
        "schema": "churnwatch.alert/1",
        "alert_id": "168c3da3-4b83-5445-b94f-7312fe71fa44",
        "customer_id": "c-42",
        "status": "opened",
        "risk_score": 55,
        "severity": "warning",
        "mrr_at_stake": 129.0,
        "currency": "EUR",
        "segment": {"plan": "pro", "channel": "sales"},
        "reasons": [
            {
                "code": "usage_drop",
                "area": "execution",
                "observed": 2.1,
                "baseline": 24.5,
                "window_days": 7,
            }
        ],
        "opened_at": "2024-03-12T00:00:00+00:00",
        "event_time": "2024-03-12T00:00:00+00:00",
        "emitted_at": "2024-03-12T01:00:03.412907+00:00",
    }
    message.update(fields)
    return message


def route(name: str = "ops", **match: Any) -> Route:
    return Route.model_validate(
        {"name": name, "match": match, "target": {"kind": "slack", "url": "https://h/x"}}
    )


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_notifier_modules_import_no_io_and_read_no_clock(module: str) -> None:
    source = (Path(churnwatch.notify.__file__).parent / f"{module}.py").read_text(encoding="utf-8")

    assert _impurities(source) == []
    assert "aiohttp" not in source


def test_a_full_transition_is_read() -> None:
    t = parse_transition(wire())

    assert (t.alert_id, t.customer_id, t.status, t.risk_score) == (
        "168c3da3-4b83-5445-b94f-7312fe71fa44",
        "c-42",
        "opened",
        55,
    )
    assert (t.severity, t.mrr_at_stake, t.currency) == ("warning", 129.0, "EUR")
    assert t.segment == {"plan": "pro", "channel": "sales"}
    assert t.reason_codes == ("usage_drop",)
    assert (t.reasons[0].observed, t.reasons[0].baseline) == (2.1, 24.5)
    assert t.event_time == datetime(2024, 3, 12, tzinfo=UTC)
    assert not t.closing


def test_an_older_message_without_the_new_fields_gets_their_defaults() -> None:
    old = wire()
    for name in ("severity", "mrr_at_stake", "currency", "segment"):
        del old[name]

    t = parse_transition(old)

    assert (t.severity, t.mrr_at_stake, t.currency, dict(t.segment)) == ("warning", 0.0, None, {})


def test_unknown_fields_reason_codes_and_severities_are_tolerated() -> None:
    t = parse_transition(
        wire(
            future_field={"x": 1},
            severity="catastrophic",
            reasons=[{"code": "new_signal", "area": "x", "observed": 1, "baseline": 2}],
        )
    )

    assert t.reason_codes == ("new_signal",)
    assert t.severity == "warning"  # ranks as the default level
    assert t.reasons[0].window_days is None
    assert t.raw["future_field"] == {"x": 1}


def test_a_timestamp_without_offset_is_utc() -> None:
    t = parse_transition(wire(event_time="2024-03-12T00:00:00"))

    assert t.event_time == datetime(2024, 3, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"alert_id": None}, "missing_field"),
        ({"alert_id": ""}, "missing_field"),
        ({"alert_id": "x" * 256}, "invalid_value"),
        ({"status": 3}, "missing_field"),
        ({"event_time": "yesterday"}, "invalid_value"),
        ({"emitted_at": None}, "missing_field"),
        ({"mrr_at_stake": "lots"}, "invalid_value"),
        ({"risk_score": float("nan")}, "invalid_value"),
        ({"reasons": "usage_drop"}, "invalid_value"),
        ({"reasons": [{"area": "execution"}]}, "invalid_value"),
    ],
)
def test_a_malformed_transition_is_refused_with_a_reason(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_transition(wire(**fields))

    assert caught.value.reason == reason


def test_a_message_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidEventError):
        parse_transition([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minimum", "severity", "taken"),
    [
        ("info", "info", True),
        ("warning", "info", False),
        ("warning", "warning", True),
        ("warning", "critical", True),
        ("critical", "warning", False),
        ("critical", "critical", True),
    ],
)
def test_min_severity(minimum: str, severity: str, taken: bool) -> None:
    match = RouteMatch.model_validate({"min_severity": minimum})

    assert matches(match, parse_transition(wire(severity=severity))) is taken


def test_reasons_match_any_of() -> None:
    two = parse_transition(
        wire(reasons=[{"code": "inactive"}, {"code": "payment_failed"}], severity="critical")
    )

    assert matches(RouteMatch(reasons=("payment_failed", "downgrade")), two)
    assert not matches(RouteMatch(reasons=("downgrade", "usage_drop")), two)
    assert matches(RouteMatch(), two)  # no reason filter


def test_min_mrr_at_stake() -> None:
    assert matches(RouteMatch(min_mrr_at_stake=129.0), parse_transition(wire()))
    assert not matches(RouteMatch(min_mrr_at_stake=129.01), parse_transition(wire()))
    no_mrr = wire()
    del no_mrr["mrr_at_stake"]
    assert not matches(RouteMatch(min_mrr_at_stake=1), parse_transition(no_mrr))


def test_segment_needs_every_key_with_one_of_its_values() -> None:
    t = parse_transition(wire())
    match = RouteMatch.model_validate

    assert matches(match({"segment": {"plan": "pro"}}), t)
    assert matches(match({"segment": {"plan": ["enterprise", "pro"], "channel": "sales"}}), t)
    assert not matches(match({"segment": {"plan": "pro", "channel": "self_serve"}}), t)
    assert not matches(match({"segment": {"region": "eu"}}), t)  # attribute absent


def test_statuses_default_to_all_four_and_filter_when_set() -> None:
    every = RouteMatch()
    opened_only = RouteMatch(statuses=("opened",))

    for status in ("opened", "escalated", "resolved", "churned"):
        assert matches(every, parse_transition(wire(status=status)))
    assert matches(opened_only, parse_transition(wire(status="opened")))
    assert not matches(opened_only, parse_transition(wire(status="escalated")))
    assert not matches(every, parse_transition(wire(status="reopened")))  # unknown status


def test_select_routes_keeps_configuration_order() -> None:
    routes = [
        route("all"),
        route("critical", min_severity="critical"),
        route("big", min_mrr_at_stake=100),
    ]

    chosen = select_routes(routes, parse_transition(wire(severity="warning")))

    assert [r.name for r in chosen] == ["all", "big"]


def test_a_close_reaches_the_routes_its_alert_was_sent_to() -> None:
    routes = [
        route("pager", min_severity="critical", reasons=["payment_failed"]),
        route("slack-critical", min_severity="critical"),
        route("opened-only", statuses=["opened"]),
    ]
    resolved = parse_transition(wire(status="resolved", severity="info", reasons=[]))

    chosen = select_routes(routes, resolved, notified={"pager", "opened-only"})

    # Its filters would refuse the close; having paged the alert, it is told it closed.
    assert [r.name for r in chosen] == ["pager"]
    assert select_routes(routes[:2], resolved, notified=()) == []


def test_an_open_transition_is_not_let_through_by_an_earlier_notification() -> None:
    critical_only = [route("pager", min_severity="critical")]
    escalated = parse_transition(wire(status="escalated", severity="warning"))

    assert select_routes(critical_only, escalated, notified={"pager"}) == []


def test_route_names_must_be_unique_and_label_safe() -> None:
    target = {"kind": "slack", "url": "https://h/x"}
    with pytest.raises(ValueError, match="unique"):
        NotifySettings.model_validate(
            {"routes": [{"name": "a", "target": target}, {"name": "a", "target": target}]}
        )
    with pytest.raises(ValueError, match="pattern"):
        Route.model_validate({"name": "Has Space", "target": target})
