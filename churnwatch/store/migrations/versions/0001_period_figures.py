"""Period figures per partition and segment, and which partitions closed each period.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Figures fields as of this revision; later fields arrive in later revisions.
FIGURES_COLUMNS = (
    "start_customers",
    "end_customers",
    "retained_customers",
    "churned_customers",
    "churned_involuntary_customers",
    "new_customers",
    "reactivated_customers",
    "start_mrr_cents",
    "end_mrr_cents",
    "churned_mrr_cents",
    "downsell_mrr_cents",
    "expansion_mrr_cents",
    "new_mrr_cents",
    "reactivation_mrr_cents",
    "retained_end_mrr_cents",
    "start_active_customers",
    "churned_active_customers",
)


def _period_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("granularity", sa.String(16), nullable=False),
        sa.Column("period_label", sa.String(16), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "period_figures",
        *_period_columns(),
        sa.Column("segment", sa.JSON(), nullable=False),
        sa.Column("segment_key", sa.Text(), nullable=False),
        sa.Column("partitions_total", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in FIGURES_COLUMNS),
        sa.PrimaryKeyConstraint("id", name="pk_period_figures"),
        sa.UniqueConstraint(
            "granularity",
            "period_label",
            "partition",
            "segment_key",
            name="uq_period_figures_period",
        ),
    )
    op.create_table(
        "period_closures",
        *_period_columns(),
        sa.Column("partitions_total", sa.Integer(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_period_closures"),
        sa.UniqueConstraint(
            "granularity", "period_label", "partition", name="uq_period_closures_period"
        ),
    )


def downgrade() -> None:
    op.drop_table("period_closures")
    op.drop_table("period_figures")
