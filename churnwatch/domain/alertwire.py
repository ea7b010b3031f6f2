"""Read one alert transition from the alerts topic (docs/schemas/alert.schema.json).

The alert store and the notifier both read the wire through `parse_transition`. Lenient where
the format asks: unknown fields and reason codes pass (kept as sent), an unknown severity reads
as "warning", and the fields added after v1's first release default when missing (severity
"warning", mrr_at_stake 0, currency null, segment {}). Strict on what a consumer cannot do
without: the schema, the ids, the status, the risk score, reasons with well-formed codes, and
the three times.

`InvalidAlertError.reason`: `empty`, `too_large`, `not_json` (decode only), `not_object`,
`unknown_schema`, `missing_field` (absent, or not non-empty text where text is needed),
`wrong_type` (a v1 number that is not a number), `invalid_value` (out of range, an unknown
status, a bad time, or a field added after v1 that is present but unusable).

`strict=False` is the notifier's reading: it routes and shows a transition instead of storing
it, so it also takes a status it does not know (no route takes one), a time without a UTC
offset (read as UTC) and a currency longer than the store's 8 characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from churnwatch.exceptions import InvalidAlertError

SCHEMA: Final = "churnwatch.alert/1"
STATUSES: Final = ("opened", "escalated", "resolved", "churned")  # lifecycle order
OPEN_STATUSES: Final = frozenset({"opened", "escalated"})
CLOSING_STATUSES: Final = frozenset({"resolved", "churned"})
SEVERITIES: Final = ("info", "warning", "critical")
DEFAULT_SEVERITY: Final = "warning"  # messages from before severity existed, or a newer level
REASON_CODE: Final = re.compile(r"[a-z][a-z_]{0,63}")
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_ALERT_ID_LENGTH: Final = 64  # alert ids are UUIDs; the store's and ledger's column width
MAX_ID_LENGTH: Final = 1024  # customer ids (events allow `limits.max_id_length`, 256 by default)
MAX_STATUS_LENGTH: Final = 64
MAX_CURRENCY_LENGTH: Final = 8  # ISO 4217 codes are 3; the store's column width
MAX_LENIENT_CURRENCY_LENGTH: Final = 256
MAX_SEGMENT_ATTRIBUTES: Final = 16
MAX_REASONS: Final = 64
MAX_MRR: Final = 1e13  # currency units; more is a unit mistake upstream, not revenue
MAX_TIME_LENGTH: Final = 40


@dataclass(frozen=True, slots=True)
class WireReason:
    """One reason: its figures typed for display; `reason[name]` reads any field as sent."""

    code: str
    area: str
    observed: float | None
    baseline: float | None
    window_days: int | None
    fields: Mapping[str, Any]  # the reason as sent, unknown fields included

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert transition, validated; `raw` is the message as received."""

    alert_id: str
    customer_id: str
    status: str
    severity: str
    risk_score: int
    mrr_at_stake: float  # currency units
    currency: str | None
    segment: dict[str, str]
    reasons: tuple[WireReason, ...]
    opened_at: datetime
    event_time: datetime
    emitted_at: datetime
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str, datetime]:
        """What a re-send repeats: deduplicate on it."""
        return self.alert_id, self.status, self.event_time

    @property
    def order(self) -> tuple[datetime, int]:
        """Later transitions of one alert sort higher: event time, then lifecycle order."""
        rank = STATUSES.index(self.status) if self.status in STATUSES else -1
        return self.event_time, rank

    @property
    def closing(self) -> bool:
        """Resolved or churned: the alert is closed."""
        return self.status in CLOSING_STATUSES

    @property
    def mrr_at_stake_cents(self) -> int:
        return round(self.mrr_at_stake * 100)

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """Each code once, in the order sent (breadth_drop may come once per measure)."""
        return tuple(dict.fromkeys(reason.code for reason in self.reasons))


def decode_transition(raw: bytes | None) -> Transition:
    """Decode and validate one alerts-topic message value (InvalidAlertError if it cannot)."""
    if raw is None:
        raise InvalidAlertError("empty", "the message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidAlertError("too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidAlertError("not_json", str(exc)[:200]) from None
    return parse_transition(payload)


def parse_transition(payload: Mapping[str, Any], *, strict: bool = True) -> Transition:
    """Validate a decoded alert; InvalidAlertError naming the first problem.

    `strict=False`: any status text, a time without offset as UTC, a longer currency.
    """
    if not isinstance(payload, Mapping):
        raise InvalidAlertError("not_object", "an alert transition is a JSON object")
    schema = payload.get("schema")
    if schema != SCHEMA:
        raise InvalidAlertError("unknown_schema", f"schema is {schema!r}, not {SCHEMA!r}")
    status = _text(payload, "status", MAX_STATUS_LENGTH)
    if strict and status not in STATUSES:
        raise InvalidAlertError("invalid_value", f"status {status!r} is not one of {STATUSES}")
    severity = payload.get("severity")
    return Transition(
        alert_id=_text(payload, "alert_id", MAX_ALERT_ID_LENGTH),
        customer_id=_text(payload, "customer_id", MAX_ID_LENGTH),
        status=status,
        severity=severity if severity in SEVERITIES else DEFAULT_SEVERITY,
        risk_score=round(_score(payload.get("risk_score"))),
        mrr_at_stake=_mrr(payload),
        currency=_currency(payload.get("currency"), strict),
        segment=_segment(payload.get("segment")),
        reasons=_reasons(payload.get("reasons")),
        opened_at=_time(payload, "opened_at", strict),
        event_time=_time(payload, "event_time", strict),
        emitted_at=_time(payload, "emitted_at", strict),
        raw=payload,
    )


def reason_of(fields: Mapping[str, Any]) -> WireReason:
    """A reason whose code is known to be valid (validated, or read back from the store)."""
    return WireReason(
        code=str(fields["code"]),
        area=str(fields.get("area") or ""),
        observed=_figure(fields.get("observed")),
        baseline=_figure(fields.get("baseline")),
        window_days=_whole(fields.get("window_days")),
        fields=dict(fields),
    )


def _text(payload: Mapping[str, Any], name: str, longest: int) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidAlertError("missing_field", f"{name} must be non-empty text")
    if len(value) > longest:
        raise InvalidAlertError("invalid_value", f"{name} is longer than {longest} characters")
    return value


def _score(value: object) -> float:
    if value is None:
        raise InvalidAlertError("missing_field", "risk_score is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidAlertError("wrong_type", "risk_score must be a number")
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise InvalidAlertError("invalid_value", f"risk_score {value!r} is not in [0, 100]")
    return float(value)


def _mrr(payload: Mapping[str, Any]) -> float:
    """Absent: 0 (older messages); present, a finite number of currency units >= 0."""
    if "mrr_at_stake" not in payload:
        return 0.0
    value = payload["mrr_at_stake"]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and 0 <= value <= MAX_MRR)
    ):
        raise InvalidAlertError("invalid_value", f"mrr_at_stake {value!r} is not in [0, {MAX_MRR}]")
    return float(value)


def _currency(value: object, strict: bool) -> str | None:
    longest = MAX_CURRENCY_LENGTH if strict else MAX_LENIENT_CURRENCY_LENGTH
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= longest:
        raise InvalidAlertError("invalid_value", f"currency {value!r:.40} is not a code")
    return value


def _segment(value: object) -> dict[str, str]:
    """Attribute -> value as text; null values are dropped (an attribute not known)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_SEGMENT_ATTRIBUTES:
        raise InvalidAlertError("invalid_value", "segment must be an object of a few attributes")
    segment: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            continue
        if not isinstance(item, str | int | float) or len(str(key)) > 64 or len(str(item)) > 256:
            raise InvalidAlertError("invalid_value", f"segment attribute {key!r:.70} is not text")
        segment[str(key)] = str(item)
    return segment


def _reasons(value: object) -> tuple[WireReason, ...]:
    """Reasons as sent (unknown codes and fields kept); each needs a well-formed code."""
    if value is None:
        raise InvalidAlertError("missing_field", "reasons is missing")
    if not isinstance(value, list) or len(value) > MAX_REASONS:
        raise InvalidAlertError("invalid_value", f"reasons must be a list of <= {MAX_REASONS}")
    for reason in value:
        code = reason.get("code") if isinstance(reason, Mapping) else None
        if not isinstance(code, str) or not REASON_CODE.fullmatch(code):
            detail = f"reason without a valid code: {reason!r:.200}"
            raise InvalidAlertError("invalid_value", detail)
    return tuple(reason_of(reason) for reason in value)


def _time(payload: Mapping[str, Any], name: str, strict: bool) -> datetime:
    value = payload.get(name)
    if not isinstance(value, str):
        raise InvalidAlertError("missing_field", f"{name} must be an RFC 3339 string")
    try:
        if len(value) > MAX_TIME_LENGTH:
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidAlertError("invalid_value", f"{name} is not RFC 3339: {value!r:.50}") from None
    if parsed.tzinfo is None:
        if strict:
            raise InvalidAlertError("invalid_value", f"{name} has no UTC offset: {value!r}")
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _figure(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
