"""Parse one alert transition from its wire form (docs/schemas/alert.schema.json).

Tolerant as the format asks: unknown fields and reason codes pass; the fields added after v1's
first release (severity, mrr_at_stake, currency, segment) default when missing. What a route or
a payload cannot do without (ids, status, times) makes the message malformed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from churnwatch.exceptions import InvalidEventError

CLOSING_STATUSES: Final = frozenset({"resolved", "churned"})
KNOWN_SEVERITIES: Final = ("info", "warning", "critical")
DEFAULT_SEVERITY: Final = "warning"
MAX_ID_LENGTH: Final = 255  # PagerDuty's dedup_key limit; alert ids are UUIDs


@dataclass(frozen=True, slots=True)
class ReasonView:
    """One reason as a notification shows it."""

    code: str
    area: str
    observed: float | None
    baseline: float | None
    window_days: int | None


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert transition, parsed; `raw` is the message as received (generic webhooks)."""

    alert_id: str
    customer_id: str
    status: str
    risk_score: int
    severity: str
    mrr_at_stake: float
    currency: str | None
    segment: Mapping[str, str]
    reasons: tuple[ReasonView, ...]
    opened_at: datetime
    event_time: datetime
    emitted_at: datetime
    raw: Mapping[str, Any]

    @property
    def closing(self) -> bool:
        """Resolved or churned: the alert is closed."""
        return self.status in CLOSING_STATUSES

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(reason.code for reason in self.reasons)


def parse_transition(message: Mapping[str, Any]) -> Transition:
    """The transition in `message`; InvalidEventError naming the first problem."""
    if not isinstance(message, Mapping):
        raise InvalidEventError("not_an_object", "an alert transition is a JSON object")
    severity = message.get("severity") or DEFAULT_SEVERITY
    if severity not in KNOWN_SEVERITIES:
        severity = DEFAULT_SEVERITY  # a newer producer's level ranks as the default
    currency = message.get("currency")
    return Transition(
        alert_id=_identifier(message, "alert_id"),
        customer_id=_identifier(message, "customer_id"),
        status=_identifier(message, "status"),
        risk_score=int(_number(message, "risk_score", default=0.0)),
        severity=str(severity),
        mrr_at_stake=_number(message, "mrr_at_stake", default=0.0),
        currency=currency if isinstance(currency, str) and currency else None,
        segment=_segment(message.get("segment")),
        reasons=_reasons(message.get("reasons")),
        opened_at=_timestamp(message, "opened_at"),
        event_time=_timestamp(message, "event_time"),
        emitted_at=_timestamp(message, "emitted_at"),
        raw=message,
    )


def _identifier(message: Mapping[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEventError("missing_field", f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEventError("invalid_value", f"{name} is longer than {MAX_ID_LENGTH}")
    return value


def _number(message: Mapping[str, Any], name: str, default: float) -> float:
    value = message.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEventError("invalid_value", f"{name} must be a finite number")
    return float(value)


def _timestamp(message: Mapping[str, Any], name: str) -> datetime:
    value = message.get(name)
    if not isinstance(value, str):
        raise InvalidEventError("missing_field", f"{name} must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidEventError("invalid_value", f"{name} is not RFC 3339: {value[:40]!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _segment(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _reasons(value: object) -> tuple[ReasonView, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidEventError("invalid_value", "reasons must be a list")
    views = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("code"), str):
            raise InvalidEventError("invalid_value", "each reason needs a string code")
        views.append(
            ReasonView(
                code=item["code"],
                area=str(item.get("area") or ""),
                observed=_optional_float(item.get("observed")),
                baseline=_optional_float(item.get("baseline")),
                window_days=_optional_int(item.get("window_days")),
            )
        )
    return tuple(views)


def _optional_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _optional_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
