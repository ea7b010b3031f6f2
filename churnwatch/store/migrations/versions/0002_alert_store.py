"""Alert store: every transition, each alert's latest state with ack and snooze, notifier claims.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _payload_columns() -> list[sa.Column[object]]:
    """Columns a transition and an alert's latest state share."""
    return [
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("risk_score", sa.Integer(), nullable=False),
        sa.Column("mrr_at_stake_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(8), nullable=True),
        sa.Column("segment", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        _when("opened_at"),
        _when("event_time"),
    ]


def upgrade() -> None:
    op.create_table(
        "alert_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=False),
        *_payload_columns(),
        _when("emitted_at", nullable=True),
        _when("recorded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_alert_transitions"),
        sa.UniqueConstraint("alert_id", "status", "event_time", name="uq_alert_transitions_key"),
    )
    op.create_index("ix_alert_transitions_customer_id", "alert_transitions", ["customer_id"])
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(64), nullable=False),
        *_payload_columns(),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("reason_codes", sa.Text(), nullable=False),
        _when("updated_at"),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        _when("acknowledged_at", nullable=True),
        sa.Column("acknowledgement_note", sa.Text(), nullable=True),
        _when("snoozed_until", nullable=True),
        sa.Column("snoozed_by", sa.Text(), nullable=True),
        _when("snoozed_at", nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_customer_id", "alerts", ["customer_id"])
    op.create_index("ix_alerts_event_time_alert_id", "alerts", ["event_time", "alert_id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _when("event_time"),
        sa.Column("route", sa.String(128), nullable=False),
        _when("claimed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint(
            "alert_id", "status", "event_time", "route", name="uq_notifications_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_index("ix_alerts_event_time_alert_id", table_name="alerts")
    op.drop_index("ix_alerts_customer_id", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_alert_transitions_customer_id", table_name="alert_transitions")
    op.drop_table("alert_transitions")
