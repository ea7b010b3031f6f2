"""Tables of the SQL store, and the engine that reaches them (SQLite or PostgreSQL).

Closed-period figures (`PeriodFigures`, `PeriodClosure`); alert history (`AlertTransition`),
each alert's latest state with its acknowledgement and snooze (`Alert`), and the notifier's
claims (`Notification`).

The tables change only through migrations (`churnwatch/store/migrations`); a unit test checks
that the migrated schema matches these models and that every `Figures` field has a column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    make_url,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

# Named constraints, so later migrations can alter them on PostgreSQL and SQLite (batch mode).
# Keep explicit names short: PostgreSQL cuts identifiers at 63 bytes, SQLite does not.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite keeps no zone, so naive values read back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime would be stored ambiguously: {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PeriodFigures(Base):
    """One partition's final figures of one period and segment (a `Figures`, column by column)."""

    __tablename__ = "period_figures"
    __table_args__ = (
        UniqueConstraint(
            "granularity",
            "period_label",
            "partition",
            "segment_key",
            name="uq_period_figures_period",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    granularity: Mapped[str] = mapped_column(String(16))
    period_label: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime)
    period_end: Mapped[datetime] = mapped_column(UtcDateTime)
    partition: Mapped[int] = mapped_column(Integer)
    segment: Mapped[dict[str, str]] = mapped_column(JSON)  # {attribute: value}, segment_by order
    segment_key: Mapped[str] = mapped_column(Text)  # canonical JSON of `segment`
    partitions_total: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Figures, field by field (integer counts and cents).
    start_customers: Mapped[int] = mapped_column(BigInteger)
    end_customers: Mapped[int] = mapped_column(BigInteger)
    retained_customers: Mapped[int] = mapped_column(BigInteger)
    churned_customers: Mapped[int] = mapped_column(BigInteger)
    churned_involuntary_customers: Mapped[int] = mapped_column(BigInteger)
    new_customers: Mapped[int] = mapped_column(BigInteger)
    reactivated_customers: Mapped[int] = mapped_column(BigInteger)
    start_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    end_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    churned_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    downsell_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    expansion_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    new_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    reactivation_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    retained_end_mrr_cents: Mapped[int] = mapped_column(BigInteger)
    start_active_customers: Mapped[int] = mapped_column(BigInteger)
    churned_active_customers: Mapped[int] = mapped_column(BigInteger)


class PeriodClosure(Base):
    """A partition closed a period: its figures are final, even when it had no customers."""

    __tablename__ = "period_closures"
    __table_args__ = (
        UniqueConstraint(
            "granularity", "period_label", "partition", name="uq_period_closures_period"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    granularity: Mapped[str] = mapped_column(String(16))
    period_label: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime)
    period_end: Mapped[datetime] = mapped_column(UtcDateTime)
    partition: Mapped[int] = mapped_column(Integer)
    partitions_total: Mapped[int] = mapped_column(Integer)
    segments: Mapped[int] = mapped_column(Integer)  # period_figures rows it recorded
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AlertTransition(Base):
    """One alert transition as it came off the wire; (alert_id, status, event_time) is unique."""

    __tablename__ = "alert_transitions"
    __table_args__ = (
        UniqueConstraint("alert_id", "status", "event_time", name="uq_alert_transitions_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    event_time: Mapped[datetime] = mapped_column(UtcDateTime)
    customer_id: Mapped[str] = mapped_column(Text, index=True)
    severity: Mapped[str] = mapped_column(String(16))
    risk_score: Mapped[int] = mapped_column(Integer)
    mrr_at_stake_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    segment: Mapped[dict[str, str]] = mapped_column(JSON)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    emitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # first delivery's
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Alert(Base):
    """An alert's latest transition (by event time, then lifecycle order) and what people did."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_event_time_alert_id", "event_time", "alert_id"),)

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(String(16))
    is_open: Mapped[bool] = mapped_column(Boolean)  # opened or escalated
    severity: Mapped[str] = mapped_column(String(16))
    risk_score: Mapped[int] = mapped_column(Integer)
    mrr_at_stake_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    segment: Mapped[dict[str, str]] = mapped_column(JSON)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reason_codes: Mapped[str] = mapped_column(Text)  # "|usage_drop|inactive|", for LIKE filters
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime)  # of the latest transition
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)  # wall clock of the last change
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledgement_note: Mapped[str | None] = mapped_column(Text)
    snoozed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    snoozed_by: Mapped[str | None] = mapped_column(Text)
    snoozed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Notification(Base):
    """A notifier's claim to send one transition to one route: the first claimer sends it."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "status", "event_time", "route", name="uq_notifications_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    event_time: Mapped[datetime] = mapped_column(UtcDateTime)
    route: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime)


def open_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's directory is created, in-memory SQLite is shared."""
    parsed = make_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            # One connection for every thread (asyncio.to_thread), or each would see its own DB.
            options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        elif not database.startswith("file:"):  # a `file:` URI is the driver's to resolve
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(parsed, **options)
