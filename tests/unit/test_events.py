"""Input messages decode into events, or fail with exactly one of the documented reason codes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from churnwatch.domain.events import (
    REASONS,
    Heartbeat,
    UsageEvent,
    parse_timestamp,
    parse_usage_message,
)
from churnwatch.exceptions import InvalidEventError
from config.settings import EventLimits

LIMITS = EventLimits()
NOW = datetime(2024, 3, 9, 12, tzinfo=UTC).timestamp()
TEN_AM = datetime(2024, 3, 9, 10, tzinfo=UTC).timestamp()


def _event(**fields: Any) -> dict[str, Any]:
    """A valid event with `fields` replaced (a value of ... removes the field)."""
    event: dict[str, Any] = {
        "event_id": "evt-1",
        "customer_id": "c-1",
        "occurred_at": "2024-03-09T10:00:00Z",
        "event_type": "login",
        "quantity": 2,
    }
    event.update(fields)
    return {name: value for name, value in event.items() if value is not ...}


def _parse(raw: bytes | None, key: bytes | None = None) -> UsageEvent | Heartbeat:
    return parse_usage_message(raw, key, now=NOW, limits=LIMITS)


def _reason(raw: bytes | None, key: bytes | None = None) -> str:
    with pytest.raises(InvalidEventError) as caught:
        _parse(raw, key)
    return caught.value.reason


# valid messages


def test_a_valid_event_parses_with_every_field() -> None:
    raw = orjson.dumps(_event(user_id="u-7", quantity=2.5))

    assert _parse(raw, key=b"c-1") == UsageEvent(
        event_id="evt-1",
        customer_id="c-1",
        occurred_at=TEN_AM,
        event_type="login",
        quantity=2.5,
        user_id="u-7",
    )


def test_optional_fields_default() -> None:
    event = _parse(orjson.dumps(_event(quantity=..., user_id=...)))

    assert isinstance(event, UsageEvent)
    assert event.quantity == 1.0
    assert event.user_id is None
    assert _parse(orjson.dumps(_event(quantity=None))) == event


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2024-03-09T10:00:00Z",
        "2024-03-09T10:00:00.000Z",
        "2024-03-09T12:00:00+02:00",
        "2024-03-09T05:30:00-04:30",
        "2024-03-09t10:00:00z",
        "2024-03-09 10:00:00Z",
        "2024-03-09T10:00:00.000000000Z",
        TEN_AM,
        int(TEN_AM),
    ],
)
def test_timestamps_in_every_accepted_form(occurred_at: str | float) -> None:
    event = _parse(orjson.dumps(_event(occurred_at=occurred_at)))

    assert event.occurred_at == TEN_AM
    assert isinstance(event.occurred_at, float)


def test_fractional_epoch_seconds_are_kept() -> None:
    assert parse_timestamp(TEN_AM + 0.25) == TEN_AM + 0.25
    assert parse_timestamp("2024-03-09T10:00:00.25Z") == TEN_AM + 0.25


def test_properties_may_be_an_object_or_absent() -> None:
    for properties in ({"plan": "pro", "seats": 3}, {}, None):
        assert isinstance(_parse(orjson.dumps(_event(properties=properties))), UsageEvent)


def test_a_key_equal_to_the_customer_id_is_accepted() -> None:
    assert isinstance(_parse(orjson.dumps(_event()), key=b"c-1"), UsageEvent)


def test_heartbeat_parses_to_its_time() -> None:
    raw = orjson.dumps({"control": "heartbeat", "occurred_at": "2024-03-09T10:00:00Z"})

    assert _parse(raw, key=b"anything") == Heartbeat(occurred_at=TEN_AM)


def test_a_heartbeat_timestamp_is_validated_too() -> None:
    raw = orjson.dumps({"control": "heartbeat", "occurred_at": "1990-01-01T00:00:00Z"})

    assert _reason(raw) == "timestamp_out_of_range"


@pytest.mark.parametrize("control", ["pause", "HEARTBEAT", 1, ["heartbeat"]])
def test_an_unknown_control_message_is_an_invalid_value(control: object) -> None:
    raw = orjson.dumps(_event(control=control))

    assert _reason(raw) == "invalid_value"


def test_a_payload_of_exactly_the_limit_is_accepted() -> None:
    raw = orjson.dumps(_event())
    padded = raw + b" " * (LIMITS.max_payload_bytes - len(raw))

    assert isinstance(_parse(padded), UsageEvent)


# rejections, one reason each


def test_payload_too_large() -> None:
    raw = orjson.dumps(_event())
    padded = raw + b" " * (LIMITS.max_payload_bytes - len(raw) + 1)

    assert _reason(padded) == "payload_too_large"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="tombstone"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"customer_id": "c-1"', id="truncated"),
        pytest.param(b'{"customer_id": "c-1", "quantity": NaN}', id="nan_literal"),
        pytest.param(b'{"customer_id": "c-1", "quantity": Infinity}', id="infinity_literal"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep_list"),
        pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, id="deep_object"),
        pytest.param(b'{"customer_id": "c-\xff"}', id="invalid_utf8"),
        pytest.param(b'{"customer_id": "\\ud800"}', id="lone_surrogate"),
        # orjson refuses a number that overflows a double, before any field is looked at.
        pytest.param(
            b'{"event_id": "evt-1", "customer_id": "c-1", "occurred_at": 1709978400,'
            b' "event_type": "login", "quantity": 1e999}',
            id="quantity_1e999",
        ),
    ],
)
def test_not_json(raw: bytes | None) -> None:
    assert _reason(raw) == "not_json"


@pytest.mark.parametrize("raw", [b"[]", b'[{"customer_id": "c-1"}]', b'"c-1"', b"42", b"null"])
def test_not_an_object(raw: bytes) -> None:
    assert _reason(raw) == "not_an_object"


@pytest.mark.parametrize(
    "fields",
    [
        {"customer_id": ...},
        {"customer_id": None},
        {"event_id": ...},
        {"event_type": ...},
        {"occurred_at": ...},
        {"occurred_at": None},
    ],
    ids=["no_customer", "null_customer", "no_event_id", "no_event_type", "no_time", "null_time"],
)
def test_missing_field(fields: dict[str, Any]) -> None:
    assert _reason(orjson.dumps(_event(**fields))) == "missing_field"


def test_heartbeat_without_a_time_is_missing_a_field() -> None:
    assert _reason(orjson.dumps({"control": "heartbeat"})) == "missing_field"


@pytest.mark.parametrize(
    "fields",
    [
        {"customer_id": 42},
        {"event_id": ["evt-1"]},
        {"user_id": 7},
        {"quantity": True},
        {"quantity": "2"},
        {"occurred_at": True},
        {"occurred_at": {"seconds": 1}},
        {"properties": ["plan", "pro"]},
        {"properties": "plan=pro"},
    ],
    ids=[
        "number_customer_id",
        "list_event_id",
        "number_user_id",
        "bool_quantity",
        "string_quantity",
        "bool_occurred_at",
        "object_occurred_at",
        "list_properties",
        "string_properties",
    ],
)
def test_wrong_type(fields: dict[str, Any]) -> None:
    assert _reason(orjson.dumps(_event(**fields))) == "wrong_type"


@pytest.mark.parametrize(
    "fields",
    [
        {"customer_id": ""},
        {"event_type": ""},
        {"customer_id": "c" * (LIMITS.max_id_length + 1)},
        {"quantity": -1},
        {"quantity": -0.001},
        {"quantity": LIMITS.max_quantity * 10},
        {"occurred_at": "2024-03-09T10:00:00"},
        {"occurred_at": "2024-03-09"},
        {"occurred_at": "yesterday"},
        {"occurred_at": "2024-03-09T10:00:00Z" + " " * 30},
        {"occurred_at": "2024-W10-6T10:00:00Z"},
        {"occurred_at": "20240309T100000Z"},
        {"occurred_at": "2024-03-09T10:00Z"},
        {"occurred_at": "2024-03-09T10:00:00+0200"},
        {"occurred_at": "2024-02-30T10:00:00Z"},
        {"occurred_at": "\uff12\uff10\uff12\uff14-03-09T10:00:00Z"},
    ],
    ids=[
        "empty_customer_id",
        "empty_event_type",
        "customer_id_too_long",
        "negative_quantity",
        "slightly_negative_quantity",
        "quantity_above_limit",
        "naive_timestamp",
        "date_only",
        "not_a_timestamp",
        "timestamp_too_long",
        "iso_week_date",
        "iso_basic_format",
        "no_seconds",
        "offset_without_colon",
        "no_such_date",
        "fullwidth_digits",
    ],
)
def test_invalid_value(fields: dict[str, Any]) -> None:
    assert _reason(orjson.dumps(_event(**fields))) == "invalid_value"


def test_the_longest_allowed_id_is_accepted() -> None:
    customer_id = "c" * LIMITS.max_id_length

    event = _parse(orjson.dumps(_event(customer_id=customer_id)))

    assert isinstance(event, UsageEvent)
    assert event.customer_id == customer_id


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_parse_timestamp_refuses_non_finite_numbers(value: float) -> None:
    # JSON cannot carry these (orjson refuses them); parse_timestamp is also called directly.
    with pytest.raises(InvalidEventError) as caught:
        parse_timestamp(value)

    assert caught.value.reason == "invalid_value"


@pytest.mark.parametrize(
    "occurred_at",
    [
        "1990-01-01T00:00:00Z",
        LIMITS.earliest_event_time - 1,
        -1,
        NOW + 2 * 86_400,
        NOW + LIMITS.max_future_skew_seconds + 1,
        "2024-03-11T12:00:00Z",
    ],
)
def test_timestamp_out_of_range(occurred_at: str | float) -> None:
    assert _reason(orjson.dumps(_event(occurred_at=occurred_at))) == "timestamp_out_of_range"


@pytest.mark.parametrize(
    "occurred_at", [LIMITS.earliest_event_time, NOW + LIMITS.max_future_skew_seconds]
)
def test_timestamp_range_is_inclusive(occurred_at: float) -> None:
    assert _parse(orjson.dumps(_event(occurred_at=occurred_at))).occurred_at == occurred_at


@pytest.mark.parametrize("key", [b"c-2", b"", b"c-1 ", "c-ü".encode("latin-1")])
def test_key_mismatch(key: bytes) -> None:
    assert _reason(orjson.dumps(_event(customer_id="c-ü")), key=key) == "key_mismatch"


# never anything but a result or an InvalidEventError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = (
    json_values
    | st.datetimes(timezones=st.timezones()).map(datetime.isoformat)
    | st.datetimes().map(datetime.isoformat)
    | st.floats(0, 2e9)
    | st.text(alphabet="0123456789-+:TZW. ", max_size=40)
)
wild_fields = {
    "control": st.just("heartbeat") | json_values,
    "event_id": st.text(max_size=300) | json_values,
    "customer_id": st.just("c-2") | json_values,
    "event_type": st.text(max_size=3) | json_values,
    "occurred_at": timestamps,
    "quantity": st.floats() | json_values,
    "user_id": json_values,
    "properties": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
}


@st.composite
def event_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with a few fields removed or replaced by anything at all."""
    replaced = draw(st.sets(st.sampled_from(sorted(wild_fields)), max_size=3))
    return _event(**{name: draw(st.just(...) | wild_fields[name]) for name in sorted(replaced)})


keys = st.none() | st.just(b"c-1") | st.binary(max_size=8)


def _outcome(raw: bytes, key: bytes | None) -> str:
    """ "ok" or the reason; any other exception fails the test."""
    try:
        result = _parse(raw, key)
    except InvalidEventError as exc:
        return exc.reason
    assert isinstance(result, UsageEvent | Heartbeat)
    return "ok"


OUTCOMES = {*REASONS, "ok"}


@given(raw=st.binary(max_size=512), key=keys)
def test_arbitrary_bytes_are_parsed_or_refused_with_a_reason(raw: bytes, key: bytes | None) -> None:
    assert _outcome(raw, key) in OUTCOMES


@given(value=json_values, key=keys)
def test_arbitrary_json_is_parsed_or_refused_with_a_reason(value: Any, key: bytes | None) -> None:
    assert _outcome(orjson.dumps(value), key) in OUTCOMES


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(payload=event_shaped(), key=keys)
def test_event_shaped_json_is_parsed_or_refused_with_a_reason(
    payload: dict[str, Any], key: bytes | None
) -> None:
    # orjson writes non-finite floats as null, which the parser must handle like any value.
    outcome = _outcome(orjson.dumps(payload), key)
    event(outcome)
    assert outcome in OUTCOMES
