"""`churnwatch replay`: JSONL history files produced in event-time order.

Lines are produced as they are, byte for byte: a line that is not valid JSON, or not a valid
event, is still sent (in the position of the line before it) so the worker dead-letters it
with its reason, as it would for any producer. Only the order is churnwatch's doing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from churnwatch.domain.events import parse_timestamp
from churnwatch.exceptions import ChurnwatchError, InvalidEventError


def read_history(path: Path, kind: str) -> list[tuple[float, int, str, bytes | None, bytes]]:
    """(event time, line number, kind, key, raw line) for every non-blank line of a file."""
    if not path.is_file():
        raise ChurnwatchError(f"history file not found: {path}")
    rows: list[tuple[float, int, str, bytes | None, bytes]] = []
    last_time = float("-inf")
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            raw = line.strip()
            if not raw:
                continue
            key, at = _key_and_time(raw)
            at = last_time if at is None else at
            last_time = at
            rows.append((at, number, kind, key, raw))
    return rows


def in_event_time_order(
    *histories: list[tuple[float, int, str, bytes | None, bytes]],
) -> Iterator[tuple[str, bytes | None, bytes, float]]:
    """Every history's records as `(kind, key, value, time)`, oldest event first (stable)."""
    merged = sorted((row for history in histories for row in history), key=lambda r: r[0])
    for at, _, kind, key, raw in merged:
        yield kind, key, raw, at


def last_event_time(*histories: list[tuple[float, int, str, bytes | None, bytes]]) -> float | None:
    times = [row[0] for history in histories for row in history if row[0] != float("-inf")]
    return max(times, default=None)


def _key_and_time(raw: bytes) -> tuple[bytes | None, float | None]:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(event, dict):
        return None, None
    customer = event.get("customer_id")
    key = customer.encode() if isinstance(customer, str) else None
    try:
        return key, parse_timestamp(event.get("occurred_at"))
    except InvalidEventError:
        return key, None
