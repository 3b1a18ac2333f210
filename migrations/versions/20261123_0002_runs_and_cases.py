"""runs and cases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 01:01:50.433775
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("run_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rerun", sa.Boolean(), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("started_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_period", ["period", "started_at"], unique=False)

    op.create_table(
        "cases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("pc4", sa.String(length=4), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("classification", sa.String(length=16), nullable=False),
        sa.Column("is_recidive", sa.Boolean(), nullable=False),
        sa.Column("has_rent", sa.Boolean(), nullable=False),
        sa.Column("has_crisis", sa.Boolean(), nullable=False),
        sa.Column("has_warm_handover", sa.Boolean(), nullable=False),
        sa.Column("partner_count", sa.Integer(), nullable=False),
        sa.Column("signal_count", sa.Integer(), nullable=False),
        sa.Column("total_cent", sa.BigInteger(), nullable=False),
        sa.Column("kinds", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resultaat", sa.String(length=80), nullable=True),
        sa.CheckConstraint(
            "classification IN ('enkelvoudig', 'meervoudig', 'opeenvolgend')",
            name=op.f("ck_cases_classification_valid"),
        ),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_cases_status_valid")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_cases_run_id_runs"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_address", ["address_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_run_id"), ["run_id"], unique=False)
        batch_op.create_index("uq_cases_period_address", ["period", "address_hash"], unique=True)

    op.create_table(
        "case_links",
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("earlier_case_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_links_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["earlier_case_id"],
            ["cases.id"],
            name=op.f("fk_case_links_earlier_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", "earlier_case_id", name=op.f("pk_case_links")),
    )
    with op.batch_alter_table("case_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_case_links_earlier_case_id"), ["earlier_case_id"], unique=False
        )

    op.create_table(
        "case_signals",
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column(
            "signal_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_signals_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["signal_id"],
            ["signals.id"],
            name=op.f("fk_case_signals_signal_id_signals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", "signal_id", name=op.f("pk_case_signals")),
        sa.UniqueConstraint("signal_id", name=op.f("uq_case_signals_signal_id")),
    )
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_outcome", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_column("run_outcome")

    op.drop_table("case_signals")
    with op.batch_alter_table("case_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_links_earlier_case_id"))

    op.drop_table("case_links")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("uq_cases_period_address")
        batch_op.drop_index(batch_op.f("ix_cases_run_id"))
        batch_op.drop_index("ix_cases_address")

    op.drop_table("cases")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_period")

    op.drop_table("runs")
