"""The JSON Schemas in docs/schemas agree with the code that reads and writes the messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from churnwatch.domain.alerts import AlertEvent, AlertPolicy, OpenAlert, assess, next_transition
from churnwatch.domain.billing import BILLING_TYPES, BillingEvent, parse_billing_message
from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.domain.events import REASONS, Heartbeat, UsageEvent, parse_usage_message
from churnwatch.domain.rules import Reason
from churnwatch.exceptions import InvalidEventError
from config.settings import EventLimits

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
NOW = datetime(2024, 3, 9, 12, tzinfo=UTC).timestamp()
LIMITS = EventLimits()
FORMATS = Draft202012Validator.FORMAT_CHECKER


def _validator(name: str, *, formats: bool = True) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FORMATS if formats else None)


def _parse(event: Any, key: bytes | None = None) -> UsageEvent | Heartbeat:
    return parse_usage_message(orjson.dumps(event), key, now=NOW, limits=LIMITS)


def _event(**fields: Any) -> dict[str, Any]:
    """A valid minimal event with `fields` replaced (a value of ... removes the field)."""
    event: dict[str, Any] = {
        "event_id": "evt-1",
        "customer_id": "c-42",
        "occurred_at": "2024-03-05T14:07:12Z",
        "event_type": "report.exported",
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not ...}


VALID_EVENTS = {
    "minimal_rfc3339_z": _event(),
    "all_fields_offset_fraction": _event(
        occurred_at="2024-03-05T16:07:12.123456+02:00",
        user_id="u-7",
        quantity=3,
        properties={"format": "pdf", "pages": 12},
    ),
    "negative_offset": _event(occurred_at="2024-03-05T09:07:12-05:00"),
    "epoch_int": _event(occurred_at=1_709_647_632),
    "epoch_float": _event(occurred_at=1_709_647_632.25),
    "nulls_mean_absent": _event(user_id=None, quantity=None),
    "quantity_zero": _event(quantity=0),
    "quantity_fraction": _event(quantity=0.5),
    "quantity_max": _event(quantity=1e9),
    "longest_ids": _event(event_id="e" * 256, customer_id="c" * 256, event_type="t" * 256),
    "unknown_fields_allowed": _event(source="billing", region="eu"),
    "control_null": _event(control=None),
}

# (event, reason the parser gives); every one must also fail the schema.
INVALID_EVENTS: dict[str, tuple[Any, str]] = {
    "unknown_control": (_event(control="other"), "invalid_value"),
    "array": ([1, 2], "not_an_object"),
    "string": ("hello", "not_an_object"),
    "no_event_id": (_event(event_id=...), "missing_field"),
    "no_customer_id": (_event(customer_id=...), "missing_field"),
    "no_occurred_at": (_event(occurred_at=...), "missing_field"),
    "no_event_type": (_event(event_type=...), "missing_field"),
    "null_event_id": (_event(event_id=None), "missing_field"),
    "null_occurred_at": (_event(occurred_at=None), "missing_field"),
    "numeric_customer_id": (_event(customer_id=42), "wrong_type"),
    "empty_event_type": (_event(event_type=""), "invalid_value"),
    "too_long_event_id": (_event(event_id="e" * 257), "invalid_value"),
    "empty_user_id": (_event(user_id=""), "invalid_value"),
    "numeric_user_id": (_event(user_id=7), "wrong_type"),
    "negative_quantity": (_event(quantity=-1), "invalid_value"),
    "huge_quantity": (_event(quantity=1e9 + 1), "invalid_value"),
    "string_quantity": (_event(quantity="3"), "wrong_type"),
    "boolean_quantity": (_event(quantity=True), "wrong_type"),
    "naive_timestamp": (_event(occurred_at="2024-01-01T00:00:00"), "invalid_value"),
    "date_only": (_event(occurred_at="2024-01-01"), "invalid_value"),
    "impossible_date": (_event(occurred_at="2024-02-30T00:00:00Z"), "invalid_value"),
    "words_timestamp": (_event(occurred_at="yesterday"), "invalid_value"),
    "boolean_timestamp": (_event(occurred_at=True), "wrong_type"),
    "list_timestamp": (_event(occurred_at=[2024, 1, 1]), "wrong_type"),
    "epoch_before_2000": (_event(occurred_at=0), "timestamp_out_of_range"),
    "heartbeat_without_time": ({"control": "heartbeat"}, "missing_field"),
}


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.schema.json")), ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=FORMATS)
    for example in schema.get("examples", []):
        validator.validate(example)


def test_every_documented_schema_is_present() -> None:
    names = {p.name for p in SCHEMAS.glob("*.schema.json")}
    assert names == {
        "usage-event.schema.json",
        "billing-event.schema.json",
        "heartbeat.schema.json",
        "alert.schema.json",
        "customer-health.schema.json",
        "snooze-control.schema.json",
        "envelope.schema.json",
    }


def test_format_checker_enforces_date_time() -> None:
    # Without rfc3339-validator installed, jsonschema skips date-time checks silently.
    assert not FORMATS.conforms("2024-02-30T00:00:00Z", "date-time")
    assert FORMATS.conforms("2024-02-29T00:00:00Z", "date-time")


@pytest.mark.parametrize("event", VALID_EVENTS.values(), ids=VALID_EVENTS.keys())
def test_valid_event_passes_schema_and_parser(event: dict[str, Any]) -> None:
    _validator("usage-event.schema.json").validate(event)
    parsed = _parse(event, key=event["customer_id"].encode())
    assert isinstance(parsed, UsageEvent)
    assert parsed.customer_id == event["customer_id"]
    assert parsed.quantity == (event.get("quantity") if event.get("quantity") is not None else 1)


@pytest.mark.parametrize(("event", "reason"), INVALID_EVENTS.values(), ids=INVALID_EVENTS.keys())
def test_invalid_event_fails_schema_and_parser(event: Any, reason: str) -> None:
    assert reason in REASONS
    with pytest.raises(ValidationError):
        _validator("usage-event.schema.json").validate(event)
    with pytest.raises(InvalidEventError) as caught:
        _parse(event)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "timestamp", ["2024-01-01T00:00:00", "2024-01-01 00:00:00Z", "2024-01-01T00:00Z"]
)
def test_pattern_refuses_what_date_time_format_may_not(timestamp: str) -> None:
    # Validators that treat `format` as an annotation still refuse timestamps without an offset.
    for name in ("usage-event.schema.json", "heartbeat.schema.json"):
        with pytest.raises(ValidationError):
            _validator(name, formats=False).validate(_event(occurred_at=timestamp))


def test_heartbeat_is_not_a_usage_event() -> None:
    heartbeat = _event(control="heartbeat")
    assert not _validator("usage-event.schema.json").is_valid(heartbeat)
    assert isinstance(_parse(heartbeat), Heartbeat)


@pytest.mark.parametrize(
    "heartbeat",
    [
        {"control": "heartbeat", "occurred_at": "2024-03-05T15:00:00Z"},
        {"control": "heartbeat", "occurred_at": 1_709_650_800},
    ],
)
def test_heartbeat_example_validates_and_parses(heartbeat: dict[str, Any]) -> None:
    _validator("heartbeat.schema.json").validate(heartbeat)
    parsed = parse_usage_message(orjson.dumps(heartbeat), b"any-key", now=NOW, limits=LIMITS)
    assert parsed == Heartbeat(occurred_at=1_709_650_800.0)


DAY = int(datetime(2024, 3, 12, tzinfo=UTC).timestamp()) // SECONDS_PER_DAY
DROP = Reason("usage_drop", observed=2.142857, baseline=24.5, window_days=7, strength=0.91)
IDLE = Reason("inactive", observed=9.0, baseline=7.0, window_days=7, strength=9 / 14)


POLICY = AlertPolicy(resolve_after_days=0)
SEGMENT = (("plan", "team"), ("channel", "sales"))


def _transitions() -> dict[str, AlertEvent]:
    def step(
        current: OpenAlert | None, *reasons: Reason, day: int, churned: bool = False
    ) -> tuple[OpenAlert | None, AlertEvent]:
        found = assess(reasons, POLICY, None, 199.0, "USD", SEGMENT)
        alert, event = next_transition("c-42", current, found, day, POLICY, churned=churned)
        assert event is not None
        return alert, event

    opened_state, opened = step(None, DROP, day=DAY)
    escalated_state, escalated = step(opened_state, DROP, IDLE, day=DAY + 1)
    assert isinstance(escalated_state, OpenAlert)
    _, resolved = step(escalated_state, day=DAY + 5)
    _, churned = step(escalated_state, DROP, day=DAY + 5, churned=True)
    return {"opened": opened, "escalated": escalated, "resolved": resolved, "churned": churned}


@pytest.mark.parametrize("status", ["opened", "escalated", "resolved", "churned"])
def test_alert_wire_form_matches_schema(status: str) -> None:
    alert = _transitions()[status]
    assert alert.status == status
    wire = alert.to_json_dict(emitted_at=NOW + 0.25)
    # Through JSON, as a consumer receives it.
    _validator("alert.schema.json").validate(json.loads(orjson.dumps(wire)))


def test_alert_schema_tolerates_new_fields() -> None:
    wire = _transitions()["opened"].to_json_dict(emitted_at=NOW)
    wire["acknowledged"] = True
    wire["reasons"][0]["hint"] = "call them"
    _validator("alert.schema.json").validate(wire)


def test_alert_schema_refuses_wrong_status_and_score() -> None:
    validator = _validator("alert.schema.json")
    wire = _transitions()["opened"].to_json_dict(emitted_at=NOW)
    assert not validator.is_valid({**wire, "status": "closed"})
    assert not validator.is_valid({**wire, "risk_score": 101})
    assert not validator.is_valid({**wire, "alert_id": "not-a-uuid"})
    assert not validator.is_valid({**wire, "severity": "high"})
    assert not validator.is_valid({**wire, "mrr_at_stake": -1})


# --- billing events -------------------------------------------------------------------------

SEGMENTS = ("plan", "channel")


def _billing_validator(*, formats: bool = True) -> Draft202012Validator:
    return _validator("billing-event.schema.json", formats=formats)


def _parse_billing(event: Any, key: bytes | None = None) -> BillingEvent | Heartbeat:
    return parse_billing_message(
        orjson.dumps(event), key, now=NOW, limits=LIMITS, segment_attributes=SEGMENTS
    )


def _billing(**fields: Any) -> dict[str, Any]:
    """A valid subscription.started with `fields` replaced (a value of ... removes the field)."""
    event: dict[str, Any] = {
        "event_id": "bill-1",
        "customer_id": "c-42",
        "occurred_at": "2024-03-05T14:07:12Z",
        "type": "subscription.started",
        "mrr": 49.9,
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not ...}


def _billing_schema_examples() -> list[dict[str, Any]]:
    schema = json.loads((SCHEMAS / "billing-event.schema.json").read_text(encoding="utf-8"))
    examples: list[dict[str, Any]] = schema["examples"]
    return examples


# (event, mrr in cents the parser gives)
VALID_BILLING: dict[str, tuple[dict[str, Any], int | None]] = {
    "started_number_mrr": (_billing(), 4990),
    "started_integer_mrr": (_billing(mrr=49), 4900),
    "started_string_mrr": (_billing(mrr="49.90"), 4990),
    "started_zero_mrr": (_billing(mrr=0), 0),
    "started_string_zero_mrr": (_billing(mrr="0"), 0),
    "started_max_mrr": (_billing(mrr=100_000_000_000), 10**13),
    "started_all_fields": (
        _billing(
            currency="USD",
            plan="team",
            seats=5,
            channel="self-serve",
            occurred_at="2024-03-05T16:07:12.5+02:00",
        ),
        4990,
    ),
    "changed_with_mrr": (_billing(type="subscription.changed", mrr="29.9", seats=3), 2990),
    "renewed_without_mrr": (_billing(type="subscription.renewed", mrr=...), None),
    "renewed_with_mrr": (_billing(type="subscription.renewed", mrr=59), 5900),
    "canceled_rfc3339_effective": (
        _billing(type="subscription.canceled", mrr=..., effective_at="2024-04-01T00:00:00Z"),
        None,
    ),
    "canceled_epoch_effective": (
        _billing(type="subscription.canceled", mrr=..., effective_at=1_711_929_600),
        None,
    ),
    "canceled_without_effective": (_billing(type="subscription.canceled", mrr=...), None),
    "ended": (_billing(type="subscription.ended", mrr=...), None),
    "payment_failed_epoch": (
        _billing(type="payment.failed", mrr=..., occurred_at=1_709_647_632.25),
        None,
    ),
    "payment_succeeded": (_billing(type="payment.succeeded", mrr=...), None),
    "seats_zero": (_billing(seats=0), 4990),
    "seats_max": (_billing(seats=10_000_000), 4990),
    "nulls_mean_absent": (
        _billing(
            type="subscription.renewed",
            mrr=None,
            plan=None,
            seats=None,
            currency=None,
            channel=None,
            effective_at=None,
        ),
        None,
    ),
    "longest_fields": (
        _billing(event_id="e" * 256, customer_id="c" * 256, plan="p" * 64, channel="x" * 64),
        4990,
    ),
    "unknown_fields_allowed": (_billing(country="DE", source="stripe"), 4990),
    "control_null": (_billing(control=None), 4990),
}

# (event, reason the parser gives); every one must also fail the schema.
INVALID_BILLING: dict[str, tuple[Any, str]] = {
    "started_without_mrr": (_billing(mrr=...), "missing_field"),
    "started_null_mrr": (_billing(mrr=None), "missing_field"),
    "changed_without_mrr": (_billing(type="subscription.changed", mrr=...), "missing_field"),
    "no_type": (_billing(type=...), "missing_field"),
    "null_type": (_billing(type=None), "missing_field"),
    "unknown_type": (_billing(type="subscription.paused"), "invalid_value"),
    "type_without_namespace": (_billing(type="started"), "invalid_value"),
    "negative_mrr": (_billing(mrr=-1), "invalid_value"),
    "negative_string_mrr": (_billing(mrr="-0.01"), "invalid_value"),
    "huge_mrr": (_billing(mrr=100_000_000_001), "invalid_value"),
    "words_mrr": (_billing(mrr="ten"), "invalid_value"),
    "nan_string_mrr": (_billing(mrr="NaN"), "invalid_value"),
    "boolean_mrr": (_billing(mrr=True), "wrong_type"),
    "false_mrr": (_billing(mrr=False), "wrong_type"),
    "object_mrr": (_billing(mrr={"amount": 49}), "wrong_type"),
    "seats_as_string": (_billing(seats="5"), "invalid_value"),
    "seats_negative": (_billing(seats=-1), "invalid_value"),
    "seats_too_many": (_billing(seats=10_000_001), "invalid_value"),
    "seats_boolean": (_billing(seats=True), "invalid_value"),
    "seats_fraction": (_billing(seats=2.5), "invalid_value"),
    "naive_timestamp": (_billing(occurred_at="2024-01-01T00:00:00"), "invalid_value"),
    "date_only": (_billing(occurred_at="2024-01-01"), "invalid_value"),
    "boolean_timestamp": (_billing(occurred_at=True), "wrong_type"),
    "epoch_before_2000": (_billing(occurred_at=0), "timestamp_out_of_range"),
    "no_occurred_at": (_billing(occurred_at=...), "missing_field"),
    "no_event_id": (_billing(event_id=...), "missing_field"),
    "no_customer_id": (_billing(customer_id=...), "missing_field"),
    "too_long_customer_id": (_billing(customer_id="c" * 257), "invalid_value"),
    "numeric_customer_id": (_billing(customer_id=42), "wrong_type"),
    "empty_plan": (_billing(plan=""), "invalid_value"),
    "too_long_plan": (_billing(plan="p" * 65), "invalid_value"),
    "numeric_currency": (_billing(currency=840), "wrong_type"),
    "empty_channel": (_billing(channel=""), "invalid_value"),
    "too_long_channel": (_billing(channel="x" * 65), "invalid_value"),
    "numeric_channel": (_billing(channel=7), "wrong_type"),
    "naive_effective_at": (
        _billing(type="subscription.canceled", effective_at="2024-04-01T00:00:00"),
        "invalid_value",
    ),
    "boolean_effective_at": (
        _billing(type="subscription.canceled", effective_at=True),
        "wrong_type",
    ),
    "unknown_control": (_billing(control="pause"), "invalid_value"),
    "array": ([_billing()], "not_an_object"),
}


@pytest.mark.parametrize(
    "example", _billing_schema_examples(), ids=lambda e: f"{e['event_id']}-{e['type']}"
)
def test_billing_schema_examples_parse(example: dict[str, Any]) -> None:
    _billing_validator().validate(example)
    parsed = _parse_billing(example, key=example["customer_id"].encode())
    assert isinstance(parsed, BillingEvent)
    assert parsed.type == example["type"]


def test_billing_schema_examples_cover_every_type() -> None:
    assert {example["type"] for example in _billing_schema_examples()} == BILLING_TYPES


def test_billing_schema_lists_exactly_the_parsers_types() -> None:
    schema = json.loads((SCHEMAS / "billing-event.schema.json").read_text(encoding="utf-8"))
    assert set(schema["properties"]["type"]["enum"]) == BILLING_TYPES


@pytest.mark.parametrize(("event", "mrr_cents"), VALID_BILLING.values(), ids=VALID_BILLING.keys())
def test_valid_billing_event_passes_schema_and_parser(
    event: dict[str, Any], mrr_cents: int | None
) -> None:
    _billing_validator().validate(event)
    parsed = _parse_billing(event, key=event["customer_id"].encode())
    assert isinstance(parsed, BillingEvent)
    assert parsed.customer_id == event["customer_id"]
    assert parsed.type == event["type"]
    assert parsed.mrr_cents == mrr_cents
    assert parsed.plan == event.get("plan")
    assert parsed.seats == event.get("seats")
    expected_attributes = (("channel", event["channel"]),) if event.get("channel") else ()
    assert parsed.attributes == expected_attributes


@pytest.mark.parametrize(("event", "reason"), INVALID_BILLING.values(), ids=INVALID_BILLING.keys())
def test_invalid_billing_event_fails_schema_and_parser(event: Any, reason: str) -> None:
    assert reason in REASONS
    with pytest.raises(ValidationError):
        _billing_validator().validate(event)
    with pytest.raises(InvalidEventError) as caught:
        _parse_billing(event)
    assert caught.value.reason == reason


def test_billing_key_must_be_the_customer() -> None:
    event = _billing()
    with pytest.raises(InvalidEventError) as caught:
        _parse_billing(event, key=b"c-43")
    assert caught.value.reason == "key_mismatch"
    assert isinstance(_parse_billing(event, key=None), BillingEvent)


def test_billing_times_are_epoch_seconds() -> None:
    parsed = _parse_billing(
        _billing(
            type="subscription.canceled",
            occurred_at="2024-03-05T15:07:12+01:00",
            effective_at="2024-04-01T00:00:00Z",
        )
    )
    assert isinstance(parsed, BillingEvent)
    assert parsed.occurred_at == datetime(2024, 3, 5, 14, 7, 12, tzinfo=UTC).timestamp()
    assert parsed.effective_at == datetime(2024, 4, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "timestamp", ["2024-01-01T00:00:00", "2024-01-01 00:00:00Z", "2024-01-01T00:00Z"]
)
@pytest.mark.parametrize("field", ["occurred_at", "effective_at"])
def test_billing_pattern_refuses_what_date_time_format_may_not(field: str, timestamp: str) -> None:
    event = _billing(type="subscription.canceled", **{field: timestamp})
    with pytest.raises(ValidationError):
        _billing_validator(formats=False).validate(event)


@pytest.mark.parametrize(
    ("parse", "kind"),
    [
        (parse_usage_message, "usage"),
        (
            lambda raw, key, *, now, limits: parse_billing_message(
                raw, key, now=now, limits=limits, segment_attributes=SEGMENTS
            ),
            "billing",
        ),
    ],
    ids=["usage", "billing"],
)
@pytest.mark.parametrize(
    "heartbeat",
    [
        {"control": "heartbeat", "occurred_at": "2024-03-05T15:00:00Z"},
        {"control": "heartbeat", "occurred_at": 1_709_650_800},
        {"control": "heartbeat", "occurred_at": 1_709_650_800, "customer_id": "ignored"},
    ],
    ids=["rfc3339", "epoch", "extra_field"],
)
def test_heartbeat_on_either_input_speaks_for_it(
    heartbeat: dict[str, Any], parse: Any, kind: str
) -> None:
    _validator("heartbeat.schema.json").validate(heartbeat)
    parsed = parse(orjson.dumps(heartbeat), b"any-key", now=NOW, limits=LIMITS)
    assert parsed == Heartbeat(occurred_at=1_709_650_800.0, kind=kind)


def test_heartbeat_is_not_a_billing_event() -> None:
    heartbeat = _billing(control="heartbeat")
    assert not _billing_validator().is_valid(heartbeat)
    assert _parse_billing(heartbeat) == Heartbeat(
        occurred_at=datetime(2024, 3, 5, 14, 7, 12, tzinfo=UTC).timestamp(), kind="billing"
    )


def test_usage_and_billing_events_are_not_interchangeable() -> None:
    # A usage event lacks `type`; a billing event lacks `event_type`.
    assert not _billing_validator().is_valid(_event())
    assert not _validator("usage-event.schema.json").is_valid(_billing())
    for parse, event in ((_parse_billing, _event()), (_parse, _billing())):
        with pytest.raises(InvalidEventError) as caught:
            parse(event)
        assert caught.value.reason == "missing_field"
