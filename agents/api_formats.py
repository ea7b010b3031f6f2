"""What the HTTP API reads from a request and writes in a reply; no Faust, no worker.

Query and body checks raise ApiError, which agents.api turns into a JSON error reply
(docs/openapi.yaml, Error); the formatters give the bodies docs/openapi.yaml describes.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from churnwatch.domain.alertwire import (
    MAX_ALERT_ID_LENGTH,
    MAX_SEGMENT_ATTRIBUTES,
    REASON_CODE,
    SEVERITIES,
    STATUSES,
    Transition,
)
from churnwatch.store.alerts import MAX_NAME_LENGTH, MAX_NOTE_LENGTH, AlertRecord

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_CURSOR_LENGTH = 512
RETRY_AFTER_SECONDS = "2"
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv; charset=utf-8; header=present"
ALERT_FILTERS = frozenset({"status", "severity", "reason", "segment", "limit", "cursor"})
STATUS_FILTERS = ("open", "closed", *STATUSES)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """A request the API refuses: becomes a JSON error reply (docs/openapi.yaml, Error)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})

    def reply(self) -> Reply:
        body: dict[str, str] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return Reply(self.status, orjson.dumps(body), headers=self.headers)


def unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": RETRY_AFTER_SECONDS})


def invalid(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_request", message, field=name)


def json_reply(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(body), JSON_TYPE, dict(headers or {}))


# -- query parameters ---------------------------------------------------------------------------


def only(query: Any, allowed: Iterable[str]) -> None:
    for name in query:
        if name not in allowed:
            raise invalid(name, f"unknown parameter {name[:64]!r}")


def one(query: Any, name: str, choices: Sequence[str] | None = None) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise invalid(name, f"{name} may be given once")
    if not values:
        return None
    value: str = values[0]
    if choices is not None and value not in choices:
        raise invalid(name, f"{name} must be one of {', '.join(choices)}")
    return value


def alert_filters(query: Any) -> dict[str, Any]:
    """The `GET /alerts` query as keyword arguments of the store's `list_alerts`."""
    only(query, ALERT_FILTERS)
    reason = one(query, "reason")
    if reason is not None and not REASON_CODE.fullmatch(reason):
        raise invalid("reason", "reason must be a reason code such as usage_drop")
    cursor = one(query, "cursor")
    if cursor is not None and not 0 < len(cursor) <= MAX_CURSOR_LENGTH:
        raise invalid("cursor", "cursor must be a next_cursor this API gave out")
    return {
        "status": one(query, "status", STATUS_FILTERS),
        "severity": one(query, "severity", SEVERITIES),
        "reason": reason,
        "segment": segment_filter(query.getall("segment", [])),
        "limit": page_size(one(query, "limit")),
        "cursor": cursor,
    }


def page_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_PAGE_SIZE):
        raise invalid("limit", f"limit must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(value)


def segment_filter(values: Sequence[str]) -> dict[str, str]:
    """`segment=plan=pro` pairs; every one must match."""
    if len(values) > MAX_SEGMENT_ATTRIBUTES:
        raise invalid("segment", f"at most {MAX_SEGMENT_ATTRIBUTES} segment filters")
    wanted: dict[str, str] = {}
    for value in values:
        key, equals, wanted_value = value.partition("=")
        if not (equals and key and wanted_value and len(key) <= 64 and len(wanted_value) <= 256):
            raise invalid("segment", "segment must be attribute=value, e.g. plan=pro")
        if key in wanted:
            raise invalid("segment", f"segment attribute {key!r} is given twice")
        wanted[key] = wanted_value
    return wanted


def check_alert_id(alert_id: str) -> None:
    if not 0 < len(alert_id) <= MAX_ALERT_ID_LENGTH:
        raise invalid("alert_id", f"alert_id must have 1 to {MAX_ALERT_ID_LENGTH} characters")


# -- request bodies -----------------------------------------------------------------------------


async def json_body(request: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    """The request's JSON object, at most MAX_BODY_BYTES, with only the fields named."""
    length = request.content_length
    too_large = ApiError(413, "body_too_large", f"the body may have {MAX_BODY_BYTES} bytes")
    if length is not None and length > MAX_BODY_BYTES:
        raise too_large
    raw = bytearray()
    while chunk := await request.content.read(MAX_BODY_BYTES + 1 - len(raw)):
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise too_large
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("body", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise invalid("body", "the body must be a JSON object")
    for name in body:
        if name not in required | optional:
            raise invalid(str(name)[:64], f"unknown field {str(name)[:64]!r}")
    missing = sorted(required - body.keys())
    if missing:
        raise invalid(missing[0], f"{missing[0]} is required")
    return body


def name_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise invalid(name, f"{name} must name someone (1 to {MAX_NAME_LENGTH} characters)")
    return value.strip()


def note_field(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_NOTE_LENGTH):
        raise invalid(name, f"{name} must be text of at most {MAX_NOTE_LENGTH} characters")
    return value


def time_field(body: Mapping[str, Any], name: str) -> datetime:
    value = body.get(name)
    if not isinstance(value, str) or not _RFC3339.fullmatch(value.upper()):
        raise invalid(name, f"{name} must be an RFC 3339 time with an offset")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except ValueError:
        raise invalid(name, f"{name} is not a valid date and time") from None


# -- reply bodies -------------------------------------------------------------------------------


def prefers_csv(accept: str) -> bool:
    """Whether an Accept header ranks text/csv above application/json (JSON on a tie)."""
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    weight = float(param[2:])
                except ValueError:
                    weight = 0.0
        ranges.append((media, weight))

    def quality(wanted: str) -> float:
        major = wanted.split("/")[0]
        for pattern in (wanted, f"{major}/*", "*/*"):
            weights = [weight for media, weight in ranges if media == pattern]
            if weights:
                return max(weights)
        return 0.0

    return quality("text/csv") > quality("application/json")


def at_risk_json(record: AlertRecord) -> dict[str, Any]:
    return {
        "customer_id": record.customer_id,
        "alert_id": record.alert_id,
        "status": record.status,
        "severity": record.severity,
        "risk_score": record.risk_score,
        "mrr_at_stake": record.mrr_at_stake,
        "currency": record.currency,
        "reasons": list(record.reason_codes),
        "segment": record.segment,
        "opened_at": record.opened_at.isoformat(),
        "event_time": record.event_time.isoformat(),
        "acknowledged_by": record.acknowledged_by,
        "snoozed_until": None if record.snoozed_until is None else record.snoozed_until.isoformat(),
    }


def at_risk_csv(records: Iterable[AlertRecord], segment_by: Sequence[str]) -> bytes:
    """RFC 4180: a header row, CRLF line ends, quotes where needed; one column per segment
    attribute the worker splits by (JSON has every attribute)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    columns = ["customer_id", "alert_id", "status", "severity", "risk_score", "mrr_at_stake"]
    columns += ["currency", "reasons", *(f"segment_{name}" for name in segment_by)]
    writer.writerow([*columns, "opened_at", "event_time", "acknowledged_by", "snoozed_until"])
    for record in records:
        snoozed = record.snoozed_until
        writer.writerow(
            [
                record.customer_id,
                record.alert_id,
                record.status,
                record.severity,
                record.risk_score,
                f"{record.mrr_at_stake:.2f}",
                record.currency or "",
                " ".join(record.reason_codes),
                *(record.segment.get(name, "") for name in segment_by),
                record.opened_at.isoformat(),
                record.event_time.isoformat(),
                record.acknowledged_by or "",
                "" if snoozed is None else snoozed.isoformat(),
            ]
        )
    return out.getvalue().encode()


def transition_json(transition: Transition) -> dict[str, Any]:
    return {
        "status": transition.status,
        "event_time": transition.event_time.isoformat(),
        "severity": transition.severity,
        "risk_score": transition.risk_score,
        "mrr_at_stake": transition.mrr_at_stake,
        "currency": transition.currency,
        "segment": transition.segment,
        "reasons": [dict(reason.fields) for reason in transition.reasons],
        "opened_at": transition.opened_at.isoformat(),
        "emitted_at": transition.emitted_at.isoformat(),
    }
