"""The alert store: every transition once, each alert's latest state, acks, snoozes, claims.

Delivery is at least once, so `record` is idempotent. A transition is keyed by
(alert_id, status, event_time) and inserted with ON CONFLICT DO NOTHING. An alert's latest
state moves only forward, to a transition later in (event_time, lifecycle order), with an
upsert whose WHERE refuses anything older: a redelivered or late message never takes it back,
and any order and any duplication of the same transitions leave the same rows.

Messages are validated by `churnwatch.domain.alertwire`, strictly (docs/alert-store.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    SQLColumnExpression,
    Table,
    and_,
    case,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from churnwatch.domain.alertwire import OPEN_STATUSES, REASON_CODE, SEVERITIES, reason_of
from churnwatch.domain.alertwire import STATUSES as STATUSES
from churnwatch.domain.alertwire import Transition as Transition
from churnwatch.domain.alertwire import decode_transition as decode_transition
from churnwatch.domain.alertwire import parse_transition as parse_transition
from churnwatch.exceptions import (
    AlertNotFoundError,
    ConfigError,
    InvalidAlertRequestError,
)
from churnwatch.store.migrations import upgrade
from churnwatch.store.models import Alert, AlertTransition, Base, Notification, open_engine

SUPPORTED_DATABASES = ("sqlite", "postgresql")
MAX_LIMIT = 1000
MAX_NAME_LENGTH = 256  # who acknowledged or snoozed
MAX_NOTE_LENGTH = 4000
# Columns an upsert copies from the newer transition; acks and snoozes are people's, kept.
STATE_COLUMNS = (
    "customer_id",
    "status",
    "is_open",
    "severity",
    "risk_score",
    "mrr_at_stake_cents",
    "currency",
    "segment",
    "reasons",
    "reason_codes",
    "opened_at",
    "event_time",
    "updated_at",
)


class TransitionRecorder(Protocol):
    """Where the sink agent writes transitions (the SQL store, or a fake in tests)."""

    def record(self, transitions: Sequence[Transition | Mapping[str, Any]]) -> int: ...


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as the store holds it: its latest transition and what people did about it."""

    alert_id: str
    customer_id: str
    status: str
    is_open: bool
    severity: str
    risk_score: int
    mrr_at_stake: float  # currency units
    currency: str | None
    segment: dict[str, str]
    reasons: tuple[dict[str, Any], ...]
    opened_at: datetime
    event_time: datetime
    updated_at: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    acknowledgement_note: str | None = None
    snoozed_until: datetime | None = None
    snoozed_by: str | None = None
    snoozed_at: datetime | None = None

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(str(reason["code"]) for reason in self.reasons)

    def snoozed(self, at: datetime) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > at

    def as_json_dict(self) -> dict[str, Any]:
        """JSON-ready: times as RFC 3339 strings, null where nobody acted."""
        return {
            "alert_id": self.alert_id,
            "customer_id": self.customer_id,
            "status": self.status,
            "open": self.is_open,
            "severity": self.severity,
            "risk_score": self.risk_score,
            "mrr_at_stake": self.mrr_at_stake,
            "currency": self.currency,
            "segment": self.segment,
            "reasons": list(self.reasons),
            "opened_at": self.opened_at.isoformat(),
            "event_time": self.event_time.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _iso(self.acknowledged_at),
            "acknowledgement_note": self.acknowledgement_note,
            "snoozed_until": _iso(self.snoozed_until),
            "snoozed_by": self.snoozed_by,
            "snoozed_at": _iso(self.snoozed_at),
        }


@dataclass(frozen=True, slots=True)
class AlertPage:
    """One page of `list_alerts`; pass `next_cursor` back for the next (None: no more)."""

    alerts: tuple[AlertRecord, ...]
    next_cursor: str | None


class AlertStore:
    """Alerts in SQLite or PostgreSQL; blocking calls (the sink runs them in a thread)."""

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)
        if self._engine.dialect.name not in SUPPORTED_DATABASES:
            self._engine.dispose()
            name = self._engine.dialect.name
            raise ConfigError(f"database_url: {name} is not supported; use SQLite or PostgreSQL")

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision."""
        upgrade(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def record(self, transitions: Sequence[Transition | Mapping[str, Any]]) -> int:
        """Store transitions not stored yet, move alerts forward; return how many were new.

        Mappings are validated first (InvalidAlertError, nothing written); one transaction.
        """
        parsed = [t if isinstance(t, Transition) else parse_transition(t) for t in transitions]
        if not parsed:
            return 0
        now = datetime.now(UTC)
        distinct: dict[tuple[str, str, datetime], Transition] = {}
        latest: dict[str, Transition] = {}
        for transition in parsed:
            distinct.setdefault(transition.key, transition)
            found = latest.get(transition.alert_id)
            if found is None or transition.order > found.order:
                latest[transition.alert_id] = transition
        # Rows in key order: concurrent writers (two sinks in a rebalance) lock rows in the
        # same order, so PostgreSQL never finds them deadlocked.
        with self._engine.begin() as connection:
            inserted = _insert_new(
                connection,
                AlertTransition,
                [_transition_row(distinct[key], now) for key in sorted(distinct)],
                ("alert_id", "status", "event_time"),
            )
            rows = [_alert_row(latest[alert_id], now) for alert_id in sorted(latest)]
            _advance_alerts(connection, rows)
        return inserted

    def list_alerts(
        self,
        status: str | None = None,
        severity: str | None = None,
        reason: str | None = None,
        segment: Mapping[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AlertPage:
        """Alerts newest event time first (then by id), filtered; keyset-paginated.

        `status` is a latest status, or "open" / "closed"; `reason` a reason code the alert
        currently names; `segment` attribute values that must all match.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidAlertRequestError(f"limit must be 1 to {MAX_LIMIT}, not {limit}")
        query = select(Alert).where(*_filters(status, severity, reason, segment or {}))
        if cursor is not None:
            after_time, after_id = _decode_cursor(cursor)
            query = query.where(
                or_(
                    Alert.event_time < after_time,
                    and_(Alert.event_time == after_time, Alert.alert_id > after_id),
                )
            )
        query = query.order_by(Alert.event_time.desc(), Alert.alert_id).limit(limit + 1)
        with Session(self._engine) as session:
            rows = session.scalars(query).all()
        alerts = tuple(_record(row) for row in rows[:limit])
        more = len(rows) > limit
        return AlertPage(alerts, _encode_cursor(alerts[-1]) if more else None)

    def get(self, alert_id: str) -> AlertRecord:
        """The alert; AlertNotFoundError when the store has none with this id."""
        with Session(self._engine) as session:
            row = session.get(Alert, alert_id)
            if row is None:
                raise AlertNotFoundError(alert_id)
            return _record(row)

    def transitions(self, alert_id: str) -> tuple[Transition, ...]:
        """An alert's history, oldest first (empty for an unknown id)."""
        query = select(AlertTransition).where(AlertTransition.alert_id == alert_id)
        with Session(self._engine) as session:
            rows = session.scalars(query).all()
        return tuple(sorted((_transition(row) for row in rows), key=lambda t: t.order))

    def acknowledge(self, alert_id: str, by: str, note: str | None, at: datetime) -> AlertRecord:
        """Record who acknowledged the alert, when, and why; a later ack replaces it."""
        values = {
            "acknowledged_by": _name(by, "by"),
            "acknowledged_at": _aware(at, "at"),
            "acknowledgement_note": _note(note),
        }
        return self._update(alert_id, values)

    def snooze(self, alert_id: str, until: datetime, by: str, at: datetime) -> AlertRecord:
        """Silence the alert until `until`: no notification, no reopen while snoozed."""
        if _aware(until, "until") <= _aware(at, "at"):
            raise InvalidAlertRequestError(f"snooze until {until.isoformat()} is not after {at}")
        values = {"snoozed_until": until, "snoozed_by": _name(by, "by"), "snoozed_at": at}
        return self._update(alert_id, values)

    def is_snoozed(self, alert_id: str, at: datetime) -> bool:
        """Snoozed past `at`; an alert the store has not seen yet is not snoozed."""
        query = select(Alert.snoozed_until).where(Alert.alert_id == alert_id)
        with self._engine.connect() as connection:
            until = connection.scalar(query)
        return until is not None and until > _aware(at, "at")

    def claim_notification(
        self, alert_id: str, status: str, event_time: datetime, route: str
    ) -> bool:
        """Claim sending this transition to `route`: True for the first claimer only."""
        row = {
            "alert_id": alert_id,
            "status": status,
            "event_time": _aware(event_time, "event_time"),
            "route": route,
            "claimed_at": datetime.now(UTC),
        }
        with self._engine.begin() as connection:
            keys = ("alert_id", "status", "event_time", "route")
            return _insert_new(connection, Notification, [row], keys) == 1

    def release_notification(
        self, alert_id: str, status: str, event_time: datetime, route: str
    ) -> None:
        """Give a claim back after a failed send, so a retry can claim it (none: no-op)."""
        statement = delete(Notification).where(
            Notification.alert_id == alert_id,
            Notification.status == status,
            Notification.event_time == _aware(event_time, "event_time"),
            Notification.route == route,
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def at_risk(self) -> list[AlertRecord]:
        """Every open alert, highest risk score first, then MRR at stake (for exports)."""
        query = (
            select(Alert)
            .where(Alert.is_open.is_(True))
            .order_by(Alert.risk_score.desc(), Alert.mrr_at_stake_cents.desc(), Alert.alert_id)
        )
        with Session(self._engine) as session:
            return [_record(row) for row in session.scalars(query).all()]

    def _update(self, alert_id: str, values: dict[str, Any]) -> AlertRecord:
        with Session(self._engine) as session, session.begin():
            done = session.execute(update(Alert).where(Alert.alert_id == alert_id).values(**values))
            if done.rowcount == 0:  # type: ignore[attr-defined]  # a CursorResult at runtime
                raise AlertNotFoundError(alert_id)
            row = session.get(Alert, alert_id, populate_existing=True)
            assert row is not None
            return _record(row)


def _insert_new(
    connection: Connection, entity: type[Base], rows: list[dict[str, Any]], keys: Sequence[str]
) -> int:
    """Insert rows whose `keys` are not stored yet; return how many were inserted."""
    table = entity.__table__
    assert isinstance(table, Table)
    statement: postgresql.Insert | sqlite.Insert
    if connection.dialect.name == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    else:
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    # RETURNING names the inserted rows only; rowcount of an executemany is driver-specific.
    return len(connection.execute(statement.returning(table.c.id), rows).all())


def _advance_alerts(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert each alert's state; an existing row changes only for a later transition."""
    statement: postgresql.Insert | sqlite.Insert
    statement = (
        postgresql.insert(Alert)
        if connection.dialect.name == "postgresql"
        else sqlite.insert(Alert)
    )
    new = statement.excluded
    later = or_(
        new.event_time > Alert.event_time,
        and_(new.event_time == Alert.event_time, _rank(new.status) > _rank(Alert.status)),
    )
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["alert_id"],
            set_={name: new[name] for name in STATE_COLUMNS},
            where=later,
        ),
        rows,
    )


def _rank(status: SQLColumnExpression[str]) -> ColumnElement[int]:
    """Lifecycle order of a status column, for transitions with the same event time."""
    return case({name: rank for rank, name in enumerate(STATUSES)}, value=status, else_=-1)


def _filters(
    status: str | None, severity: str | None, reason: str | None, segment: Mapping[str, str]
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if status in ("open", "closed"):
        where.append(Alert.is_open.is_(status == "open"))
    elif status is not None:
        if status not in STATUSES:
            choices = ", ".join(("open", "closed", *STATUSES))
            raise InvalidAlertRequestError(f"status must be one of {choices}, not {status!r}")
        where.append(Alert.status == status)
    if severity is not None:
        if severity not in SEVERITIES:
            choices = ", ".join(SEVERITIES)
            raise InvalidAlertRequestError(f"severity must be one of {choices}, not {severity!r}")
        where.append(Alert.severity == severity)
    if reason is not None:
        if not REASON_CODE.fullmatch(reason):
            raise InvalidAlertRequestError(f"not a reason code: {reason!r}")
        # autoescape: "_" in a code must not match any character.
        where.append(Alert.reason_codes.contains(f"|{reason}|", autoescape=True))
    for key, value in segment.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidAlertRequestError(f"segment filter {key!r}={value!r} is not text")
        where.append(Alert.segment[key].as_string() == value)
    return where


def _encode_cursor(last: AlertRecord) -> str:
    raw = json.dumps([last.event_time.isoformat(), last.alert_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, alert_id = json.loads(raw)
        at = datetime.fromisoformat(when)
        if at.tzinfo is None or not isinstance(alert_id, str):
            raise ValueError("incomplete cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidAlertRequestError(f"not a cursor this store gave out: {cursor!r}") from None
    return at, alert_id


def _transition_row(transition: Transition, now: datetime) -> dict[str, Any]:
    return {
        "alert_id": transition.alert_id,
        "status": transition.status,
        "event_time": transition.event_time,
        "customer_id": transition.customer_id,
        "severity": transition.severity,
        "risk_score": transition.risk_score,
        "mrr_at_stake_cents": transition.mrr_at_stake_cents,
        "currency": transition.currency,
        "segment": transition.segment,
        "reasons": [dict(reason.fields) for reason in transition.reasons],
        "opened_at": transition.opened_at,
        "emitted_at": transition.emitted_at,
        "recorded_at": now,
    }


def _alert_row(transition: Transition, now: datetime) -> dict[str, Any]:
    row = _transition_row(transition, now)
    del row["emitted_at"], row["recorded_at"]
    codes = "".join(f"|{code}" for code in transition.reason_codes)
    return {
        **row,
        "is_open": transition.status in OPEN_STATUSES,
        "reason_codes": f"{codes}|" if codes else "",
        "updated_at": now,
    }


def _transition(row: AlertTransition) -> Transition:
    return Transition(
        alert_id=row.alert_id,
        customer_id=row.customer_id,
        status=row.status,
        severity=row.severity,
        risk_score=row.risk_score,
        mrr_at_stake=row.mrr_at_stake_cents / 100,
        currency=row.currency,
        segment=dict(row.segment),
        reasons=tuple(reason_of(reason) for reason in row.reasons),
        opened_at=row.opened_at,
        event_time=row.event_time,
        # A row stored while emitted_at was optional: when the store first saw it instead.
        emitted_at=row.emitted_at or row.recorded_at,
    )


def _record(row: Alert) -> AlertRecord:
    return AlertRecord(
        alert_id=row.alert_id,
        customer_id=row.customer_id,
        status=row.status,
        is_open=row.is_open,
        severity=row.severity,
        risk_score=row.risk_score,
        mrr_at_stake=row.mrr_at_stake_cents / 100,
        currency=row.currency,
        segment=dict(row.segment),
        reasons=tuple(row.reasons),
        opened_at=row.opened_at,
        event_time=row.event_time,
        updated_at=row.updated_at,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=row.acknowledged_at,
        acknowledgement_note=row.acknowledgement_note,
        snoozed_until=row.snoozed_until,
        snoozed_by=row.snoozed_by,
        snoozed_at=row.snoozed_at,
    )


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidAlertRequestError(f"{name} must be a datetime with a time zone: {value!r}")
    return value.astimezone(UTC)


def _name(value: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise InvalidAlertRequestError(f"{field} must name someone (1 to {MAX_NAME_LENGTH} chars)")
    return value.strip()


def _note(note: str | None) -> str | None:
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH):
        raise InvalidAlertRequestError(f"note must be text of at most {MAX_NOTE_LENGTH} chars")
    return note


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
