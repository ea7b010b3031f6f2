"""Decode and validate input messages into typed events, or say precisely why not.

Every rejection is an `InvalidEventError` whose `reason` is one of `REASONS`: those codes are
metric labels and dead-letter headers, so they are few and stable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import orjson

from churnwatch.exceptions import InvalidEventError

# RFC 3339 date-time; datetime.fromisoformat alone also takes other ISO 8601 forms.
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)

REASONS: Final = (
    "payload_too_large",
    "not_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "timestamp_out_of_range",
    "key_mismatch",
    "late",
    "capacity",  # a new customer beyond the cap on tracked customers (retention.py)
)


class Limits(Protocol):
    """Validation bounds (config.EventLimits); `now` is passed apart, for far-future checks."""

    @property
    def max_payload_bytes(self) -> int: ...
    @property
    def max_id_length(self) -> int: ...
    @property
    def max_future_skew_seconds(self) -> float: ...
    @property
    def earliest_event_time(self) -> float: ...
    @property
    def max_quantity(self) -> float: ...


@dataclass(slots=True)  # not frozen: a frozen dataclass takes 5x longer to build (hot path)
class UsageEvent:
    event_id: str
    customer_id: str
    occurred_at: float
    event_type: str
    quantity: float = 1.0
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Control message: no event older than `occurred_at` will follow on this topic-partition."""

    occurred_at: float
    kind: str = "usage"  # the input it speaks for: "usage" or "billing"


@dataclass(frozen=True, slots=True)
class Snooze:
    """Control message: open no alert for this customer before `until` (None: lift it).

    Sent by the HTTP API to the customer's partition of the usage topic, so the worker that
    owns the customer applies it in order with its events.
    """

    customer_id: str
    until: float | None


def decode_object(raw: bytes | None, limits: Limits) -> dict[str, Any]:
    """Decode a JSON object, refusing oversized and non-object payloads."""
    if raw is None:
        raise InvalidEventError("not_json", "message has no value (tombstone)")
    if len(raw) > limits.max_payload_bytes:
        raise InvalidEventError(
            "payload_too_large", f"{len(raw)} bytes > limit {limits.max_payload_bytes}"
        )
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("not_json", str(exc)[:200]) from None
    if not isinstance(payload, dict):
        raise InvalidEventError("not_an_object", f"top level is {type(payload).__name__}")
    return payload


def parse_usage_message(
    raw: bytes | None, key: bytes | None, *, now: float, limits: Limits
) -> UsageEvent | Heartbeat | Snooze:
    """Turn one `usage-events` message into a UsageEvent (or a Heartbeat)."""
    return usage_from_payload(decode_object(raw, limits), key, now=now, limits=limits)


def usage_from_payload(
    payload: dict[str, Any], key: bytes | None, *, now: float, limits: Limits
) -> UsageEvent | Heartbeat | Snooze:
    """Validate one decoded usage object (a message's, or an envelope's event)."""
    event = _plain_usage(payload, key, now, limits)
    if event is not None:
        return event
    if payload.get("control") == "snooze":
        return parse_snooze(payload, key, limits)
    if payload.get("control") is not None:
        return parse_control(payload, now, limits)
    customer_id = customer_id_of(payload, limits)
    if key is not None and key != customer_id.encode():
        raise InvalidEventError(
            "key_mismatch", "message key differs from customer_id (wrong partition)"
        )
    properties = payload.get("properties")
    if properties is not None and not isinstance(properties, dict):
        raise InvalidEventError("wrong_type", "properties must be an object")
    return UsageEvent(
        event_id=required_string(payload, "event_id", limits),
        customer_id=customer_id,
        occurred_at=event_time(payload, now, limits),
        event_type=required_string(payload, "event_type", limits),
        quantity=_quantity(payload, limits),
        user_id=optional_string(payload, "user_id", limits),
    )


def _plain_usage(
    payload: dict[str, Any], key: bytes | None, now: float, limits: Limits
) -> UsageEvent | None:
    """The common case, checked in one pass: every field present with the plain type and in
    bounds, the time in epoch seconds. None for anything else, which the full checks then
    accept or refuse with the precise reason (a property test holds the two to agreement)."""
    event_id = payload.get("event_id")
    customer_id = payload.get("customer_id")
    event_type = payload.get("event_type")
    at = payload.get("occurred_at")
    quantity = payload.get("quantity", 1)
    user_id = payload.get("user_id")
    longest = limits.max_id_length
    if not (
        type(event_id) is str
        and type(customer_id) is str
        and type(event_type) is str
        and (type(at) is float or type(at) is int)
        and (type(quantity) is float or type(quantity) is int)
        and (user_id is None or (type(user_id) is str and 0 < len(user_id) <= longest))
        and 0 < len(event_id) <= longest
        and 0 < len(customer_id) <= longest
        and customer_id[0] != "\x00"
        and 0 < len(event_type) <= longest
        and limits.earliest_event_time <= at <= now + limits.max_future_skew_seconds
        and 0 <= quantity <= limits.max_quantity
        and (key is None or key == customer_id.encode())
        and "control" not in payload
        and type(payload.get("properties", {})) is dict
    ):
        return None
    return UsageEvent(event_id, customer_id, float(at), event_type, float(quantity), user_id)


def parse_snooze(payload: dict[str, Any], key: bytes | None, limits: Limits) -> Snooze:
    """`{"control": "snooze", "customer_id": ..., "until": time or null}`, keyed by the id."""
    customer_id = customer_id_of(payload, limits)
    if key is not None and key != customer_id.encode():
        raise InvalidEventError("key_mismatch", "message key differs from customer_id")
    until = payload.get("until")
    if until is None:
        return Snooze(customer_id, None)
    return Snooze(customer_id, parse_timestamp(until))


def parse_control(
    payload: dict[str, Any], now: float, limits: Limits, kind: str = "usage"
) -> Heartbeat:
    """A control message; `heartbeat` is the only kind so far."""
    if payload["control"] != "heartbeat":
        detail = f"unknown control {str(payload['control'])[:40]!r}"
        raise InvalidEventError("invalid_value", detail)
    return Heartbeat(occurred_at=event_time(payload, now, limits), kind=kind)


def customer_id_of(payload: dict[str, Any], limits: Limits) -> str:
    """`customer_id`, which must not start with NUL: such keys hold the partition clocks."""
    customer_id = required_string(payload, "customer_id", limits)
    if customer_id[0] == "\x00":
        raise InvalidEventError("invalid_value", "customer_id must not start with a NUL character")
    return customer_id


def required_string(payload: dict[str, Any], field: str, limits: Limits) -> str:
    if field not in payload or payload[field] is None:
        raise InvalidEventError("missing_field", f"{field} is required")
    value = optional_string(payload, field, limits)
    assert value is not None
    return value


def optional_string(payload: dict[str, Any], field: str, limits: Limits) -> str | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError("wrong_type", f"{field} must be a string")
    if not value or len(value) > limits.max_id_length:
        raise InvalidEventError(
            "invalid_value", f"{field} must have 1..{limits.max_id_length} characters"
        )
    return value


def _quantity(payload: dict[str, Any], limits: Limits) -> float:
    value = payload.get("quantity", 1)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEventError("wrong_type", "quantity must be a number")
    if not math.isfinite(value) or value < 0 or value > limits.max_quantity:
        raise InvalidEventError("invalid_value", f"quantity must be 0..{limits.max_quantity:g}")
    return float(value)


def event_time(payload: dict[str, Any], now: float, limits: Limits) -> float:
    if "occurred_at" not in payload or payload["occurred_at"] is None:
        raise InvalidEventError("missing_field", "occurred_at is required")
    seconds = parse_timestamp(payload["occurred_at"])
    if seconds < limits.earliest_event_time or seconds > now + limits.max_future_skew_seconds:
        raise InvalidEventError("timestamp_out_of_range", f"occurred_at {seconds:.0f} is absurd")
    return seconds


def parse_timestamp(value: object) -> float:
    """Accept RFC 3339 with an offset, or epoch seconds; return epoch seconds."""
    if isinstance(value, bool):
        raise InvalidEventError("wrong_type", "occurred_at must be RFC 3339 or epoch seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidEventError("invalid_value", "occurred_at must be finite")
        return float(value)
    if not isinstance(value, str):
        raise InvalidEventError("wrong_type", "occurred_at must be RFC 3339 or epoch seconds")
    if len(value) > 40:
        raise InvalidEventError("invalid_value", "occurred_at is too long for RFC 3339")
    if not _RFC3339.fullmatch(value):
        if _RFC3339.fullmatch(value + "Z"):
            raise InvalidEventError("invalid_value", "occurred_at needs a UTC offset (e.g. Z)")
        raise InvalidEventError("invalid_value", f"occurred_at is not RFC 3339: {value!r}")
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidEventError("invalid_value", f"occurred_at is not a date: {value!r}") from None
