"""Envelopes: one Kafka message carrying many events of one customer.

Faust pays its per-message cost (~70 us here) per Kafka message, not per event, so a producer
that batches a customer's events into one message spreads it. An envelope is

    {"envelope": 1, "customer_id": "c-1", "events": [<event>, <event>, ...]}

keyed by its `customer_id`, on `usage-events` or `billing-events`, beside single events. Each
event inside is a complete event object, exactly as it would be sent alone (its own
`customer_id`, which must be the envelope's), and is validated, deduplicated and dead-lettered
on its own: one bad event never costs its neighbours. Only what makes the whole envelope
unreadable (not JSON, too large, too many events, a key that is not its customer) refuses it
whole. Schema: docs/schemas/envelope.schema.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from churnwatch.domain.events import Limits
from churnwatch.exceptions import InvalidEventError

ENVELOPE_VERSION: Final = 1


class EnvelopeLimits(Limits, Protocol):
    """Event limits, and the envelope's own (config.EventLimits has both)."""

    @property
    def max_envelope_bytes(self) -> int: ...
    @property
    def max_envelope_events(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope: its events are still unvalidated objects."""

    customer_id: str
    events: list[Any]


class EnvelopeError(InvalidEventError):
    """An envelope refused whole; `events` is how many events it held (1 if unknown)."""

    def __init__(self, reason: str, detail: str, events: int) -> None:
        super().__init__(reason, detail)
        self.events = events


def decode_message(raw: bytes | None, key: bytes | None, limits: EnvelopeLimits) -> Any:
    """A message's JSON object, or an `Envelope` when it is one.

    A single event is held to `max_payload_bytes`, an envelope to `max_envelope_bytes`.
    """
    if raw is None:
        raise InvalidEventError("not_json", "message has no value (tombstone)")
    size = len(raw)
    if size > limits.max_envelope_bytes:
        detail = f"{size} bytes > limit {limits.max_envelope_bytes}"
        raise InvalidEventError("payload_too_large", detail)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("not_json", str(exc)[:200]) from None
    if not isinstance(payload, dict):
        raise InvalidEventError("not_an_object", f"top level is {type(payload).__name__}")
    if "envelope" in payload:
        return _envelope(payload, key, limits)
    if size > limits.max_payload_bytes:
        detail = f"{size} bytes > limit {limits.max_payload_bytes}"
        raise InvalidEventError("payload_too_large", detail)
    return payload


def _envelope(payload: dict[str, Any], key: bytes | None, limits: EnvelopeLimits) -> Envelope:
    events = payload.get("events")
    count = len(events) if isinstance(events, list) else 1

    def refuse(reason: str, detail: str) -> EnvelopeError:
        return EnvelopeError(reason, detail, max(count, 1))

    if payload["envelope"] != ENVELOPE_VERSION:
        version = str(payload["envelope"])[:20]
        raise refuse("invalid_value", f"unknown envelope version {version!r} (expected 1)")
    customer_id = payload.get("customer_id")
    if customer_id is None:
        raise refuse("missing_field", "customer_id is required")
    if not isinstance(customer_id, str):
        raise refuse("wrong_type", "customer_id must be a string")
    if not customer_id or len(customer_id) > limits.max_id_length:
        raise refuse("invalid_value", f"customer_id must have 1..{limits.max_id_length} characters")
    if customer_id[0] == "\x00":
        raise refuse("invalid_value", "customer_id must not start with a NUL character")
    if key is not None and key != customer_id.encode():
        raise refuse("key_mismatch", "message key differs from the envelope's customer_id")
    if events is None:
        raise refuse("missing_field", "events is required")
    if not isinstance(events, list):
        raise refuse("wrong_type", "events must be an array")
    if not events:
        raise refuse("invalid_value", "events is empty")
    if len(events) > limits.max_envelope_events:
        detail = f"{len(events)} events > limit {limits.max_envelope_events}"
        raise refuse("invalid_value", detail)
    return Envelope(customer_id, events)


def event_object(event: Any) -> dict[str, Any]:
    """One event of an envelope as an object to validate; control messages cannot ride."""
    if not isinstance(event, dict):
        raise InvalidEventError("not_an_object", f"envelope event is {type(event).__name__}")
    if event.get("control") is not None:
        raise InvalidEventError("invalid_value", "control messages cannot ride in an envelope")
    return event
