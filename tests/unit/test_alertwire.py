"""The one reading of the alert wire format, as the store (strict) and the notifier use it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.alerts import AlertEvent
from churnwatch.domain.alertwire import (
    MAX_MRR,
    STATUSES,
    decode_transition,
    parse_transition,
)
from churnwatch.domain.rules import Reason
from churnwatch.exceptions import InvalidAlertError

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "schemas" / "alert.schema.json"
EXAMPLE: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["examples"][0]


def wire(**fields: Any) -> dict[str, Any]:
    """The schema's documented example, `fields` overriding."""
    return {**EXAMPLE, **fields}


def without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in EXAMPLE.items() if k not in names}


@pytest.mark.parametrize("strict", [True, False])
def test_the_documented_example_reads_as_documented_either_way(strict: bool) -> None:
    t = parse_transition(wire(), strict=strict)

    for name in ("alert_id", "customer_id", "status", "severity", "risk_score", "currency"):
        assert getattr(t, name) == EXAMPLE[name], name
    assert t.mrr_at_stake_cents == round(EXAMPLE["mrr_at_stake"] * 100)
    assert t.segment == EXAMPLE["segment"]
    assert [dict(reason.fields) for reason in t.reasons] == EXAMPLE["reasons"]
    assert [(r.code, r.area, r.observed, r.window_days) for r in t.reasons] == [
        (r["code"], r["area"], r["observed"], r["window_days"]) for r in EXAMPLE["reasons"]
    ]
    assert t.event_time == datetime.fromisoformat(EXAMPLE["event_time"])
    assert t.emitted_at == datetime.fromisoformat(EXAMPLE["emitted_at"])
    assert t.event_time.tzinfo == UTC
    assert t.raw == EXAMPLE
    assert t.closing == (EXAMPLE["status"] in ("resolved", "churned"))


def test_what_the_worker_publishes_reads_back_field_for_field() -> None:
    reason = Reason("breadth_drop", 2.0, 6.5, 14, 0.7, measure="users")
    event = AlertEvent(
        alert_id="a-1",
        customer_id="c-9",
        status="escalated",
        reasons=(reason, Reason("breadth_drop", 3.0, 5.0, 14, 0.4, measure="event_types")),
        risk_score=72,
        as_of_day=19_800,
        opened_day=19_795,
        severity="critical",
        mrr_at_stake=1290.5,
        currency="EUR",
        segment=(("plan", "pro"),),
    )
    emitted = 19_800 * 86_400 + 3_600.25

    t = decode_transition(orjson.dumps(event.to_json_dict(emitted)))

    assert (t.alert_id, t.customer_id, t.status, t.severity, t.risk_score) == (
        "a-1",
        "c-9",
        "escalated",
        "critical",
        72,
    )
    assert (t.mrr_at_stake_cents, t.currency, t.segment) == (129050, "EUR", {"plan": "pro"})
    assert t.reason_codes == ("breadth_drop",)  # each code once
    assert [r["measure"] for r in t.reasons] == ["users", "event_types"]  # fields as sent
    assert t.opened_at == datetime.fromtimestamp(19_795 * 86_400, UTC)
    assert t.emitted_at == datetime.fromtimestamp(emitted, UTC)


@pytest.mark.parametrize("strict", [True, False])
def test_fields_added_after_v1_default_when_missing(strict: bool) -> None:
    t = parse_transition(without("severity", "mrr_at_stake", "currency", "segment"), strict=strict)

    assert (t.severity, t.mrr_at_stake, t.currency, t.segment) == ("warning", 0.0, None, {})


@pytest.mark.parametrize("strict", [True, False])
def test_unknown_fields_codes_severities_and_reason_figures_are_tolerated(strict: bool) -> None:
    reasons = [{"code": "seat_churn", "observed": "n/a", "baseline": None, "extra": [1]}]

    t = parse_transition(wire(reasons=reasons, severity="catastrophic", later=1), strict=strict)

    assert t.reason_codes == ("seat_churn",)
    assert (t.reasons[0].area, t.reasons[0].observed, t.reasons[0].baseline) == ("", None, None)
    assert t.reasons[0]["extra"] == [1]
    assert t.severity == "warning"
    assert t.raw["later"] == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"schema": "churnwatch.alert/2"}, "unknown_schema"),
        ({"alert_id": ""}, "missing_field"),
        ({"alert_id": "x" * 65}, "invalid_value"),
        ({"customer_id": 42}, "missing_field"),
        ({"status": None}, "missing_field"),
        ({"risk_score": None}, "missing_field"),
        ({"risk_score": "55"}, "wrong_type"),
        ({"risk_score": True}, "wrong_type"),
        ({"risk_score": -1}, "invalid_value"),
        ({"mrr_at_stake": None}, "invalid_value"),
        ({"mrr_at_stake": "lots"}, "invalid_value"),
        ({"mrr_at_stake": math.inf}, "invalid_value"),
        ({"currency": 978}, "invalid_value"),
        ({"currency": ""}, "invalid_value"),
        ({"segment": ["pro"]}, "invalid_value"),
        ({"segment": {"plan": {"name": "pro"}}}, "invalid_value"),
        ({"reasons": None}, "missing_field"),
        ({"reasons": [{"code": "Usage-Drop"}]}, "invalid_value"),
        ({"reasons": ["usage_drop"]}, "invalid_value"),
        ({"opened_at": 1710201600}, "missing_field"),
        ({"emitted_at": None}, "missing_field"),
        ({"event_time": "2024-03-12T00:00:00+00:00" + " " * 40}, "invalid_value"),
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_both_readings_refuse_what_no_consumer_can_use(
    fields: dict[str, Any], reason: str, strict: bool
) -> None:
    with pytest.raises(InvalidAlertError) as caught:
        parse_transition(wire(**fields), strict=strict)

    assert caught.value.reason == reason


def test_a_message_without_reasons_is_refused() -> None:
    with pytest.raises(InvalidAlertError) as caught:
        parse_transition(without("reasons"), strict=False)

    assert caught.value.reason == "missing_field"


@pytest.mark.parametrize(
    ("fields", "lenient"),
    [
        ({"status": "reopened"}, ("status", "reopened")),
        ({"event_time": "2024-03-12T00:00:00"}, ("event_time", datetime(2024, 3, 12, tzinfo=UTC))),
        ({"currency": "UNITS-OF-ACCOUNT"}, ("currency", "UNITS-OF-ACCOUNT")),
    ],
)
def test_only_the_lenient_reading_takes_status_times_and_currency_it_cannot_place(
    fields: dict[str, Any], lenient: tuple[str, Any]
) -> None:
    with pytest.raises(InvalidAlertError) as caught:
        parse_transition(wire(**fields))
    name, value = lenient

    assert caught.value.reason == "invalid_value"
    assert getattr(parse_transition(wire(**fields), strict=False), name) == value


def test_an_unknown_status_ranks_before_every_known_one() -> None:
    unknown = parse_transition(wire(status="reopened"), strict=False)
    opened = parse_transition(wire())

    assert unknown.order < opened.order
    assert not unknown.closing


def test_times_are_read_as_utc_instants() -> None:
    t = parse_transition(wire(event_time="2024-03-12T02:00:00+02:00"))

    assert t.event_time == datetime(2024, 3, 12, tzinfo=UTC)
    assert t.event_time.tzinfo == UTC
    assert t.event_time.isoformat() == "2024-03-12T00:00:00+00:00"


def test_a_resend_repeats_the_key_and_the_raw_message_is_no_part_of_equality() -> None:
    first = parse_transition(wire())
    resent = parse_transition(wire(emitted_at="2024-03-13T09:00:00+00:00"))

    assert first.key == resent.key
    assert first != resent
    assert parse_transition(wire(later={"x": 1})) == first


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(None, "empty"), (b"x" * (64 * 1024 + 1), "too_large"), (b"[]", "not_object")],
)
def test_decode_names_what_is_not_a_message(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidAlertError) as caught:
        decode_transition(raw)

    assert caught.value.reason == reason


@given(score=st.floats(-1e3, 1e3, allow_nan=False), strict=st.booleans())
def test_a_score_is_read_rounded_in_0_to_100_and_refused_outside(
    score: float, strict: bool
) -> None:
    if 0 <= score <= 100:
        assert parse_transition(wire(risk_score=score), strict=strict).risk_score == round(score)
    else:
        with pytest.raises(InvalidAlertError, match="risk_score"):
            parse_transition(wire(risk_score=score), strict=strict)


@given(mrr=st.floats(-1.0, 2 * MAX_MRR, allow_nan=False))
def test_mrr_is_kept_as_sent_within_its_range(mrr: float) -> None:
    if 0 <= mrr <= MAX_MRR:
        t = parse_transition(wire(mrr_at_stake=mrr))
        assert (t.mrr_at_stake, t.mrr_at_stake_cents) == (mrr, round(mrr * 100))
    else:
        with pytest.raises(InvalidAlertError, match="mrr_at_stake"):
            parse_transition(wire(mrr_at_stake=mrr))


@given(status=st.sampled_from(STATUSES))
def test_every_documented_status_is_read_by_both(status: str) -> None:
    strict = parse_transition(wire(status=status))

    assert strict == parse_transition(wire(status=status), strict=False)
    assert strict.closing == (status in ("resolved", "churned"))
