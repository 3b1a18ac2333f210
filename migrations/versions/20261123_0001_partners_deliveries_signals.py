"""partners deliveries signals

Revision ID: 0001
Revises:
Create Date: 2026-11-23 00:41:45.860101
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('huur', 'energie', 'water', 'zorg')", name=op.f("ck_partners_kind_valid")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partners")),
        sa.UniqueConstraint("name", name=op.f("uq_partners_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_api_keys_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_keys_key_id")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("file_format", sa.String(length=8), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("warning_count", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.Text(), nullable=True),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("superseded_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("superseded_by_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "status IN ('accepted', 'superseded')", name=op.f("ck_deliveries_status_valid")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_deliveries_partner_id_partners"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by_id"],
            ["deliveries.id"],
            name=op.f("fk_deliveries_superseded_by_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_partner_period", ["partner_id", "period"], unique=False
        )
        batch_op.create_index(
            "uq_deliveries_current",
            ["partner_id", "period"],
            unique=True,
            postgresql_where=sa.text("status = 'accepted'"),
            sqlite_where=sa.text("status = 'accepted'"),
        )

    op.create_table(
        "signals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=True),
        sa.Column("person_hash", sa.String(length=64), nullable=True),
        sa.Column("pc4", sa.String(length=4), nullable=True),
        sa.Column("bedrag_cent", sa.BigInteger(), nullable=False),
        sa.Column("achterstand_sinds", sa.Date(), nullable=False),
        sa.Column("signaaldatum", sa.Date(), nullable=False),
        sa.Column("crisis", sa.Boolean(), nullable=False),
        sa.Column("warme_overdracht", sa.Boolean(), nullable=False),
        sa.Column("eindelevering", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("pii", sa.LargeBinary(), nullable=True),
        sa.Column("pii_key_id", sa.String(length=16), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("purged_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('huur', 'energie', 'water', 'zorg')", name=op.f("ck_signals_kind_valid")
        ),
        sa.CheckConstraint(
            "status IN ('Nog niet opgepakt', 'Opgepakt', 'Inwoner al bekend bij schuldhulpverlening', 'Inwoner is overleden', 'Niet opgepakt: andere reden', 'Niet opgepakt: herhaalde melding', 'Niet opgepakt: onterecht signaal', 'Persoon is geen inwoner (meer) in de gemeente')",
            name=op.f("ck_signals_status_valid"),
        ),
        sa.CheckConstraint("bedrag_cent > 0", name=op.f("ck_signals_bedrag_positive")),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_signals_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_signals_partner_id_partners"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
    )
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.create_index("ix_signals_delivery_row", ["delivery_id", "row_number"], unique=True)
        batch_op.create_index(batch_op.f("ix_signals_partner_id"), ["partner_id"], unique=False)
        batch_op.create_index("ix_signals_period_address", ["period", "address_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_index("ix_signals_period_address")
        batch_op.drop_index(batch_op.f("ix_signals_partner_id"))
        batch_op.drop_index("ix_signals_delivery_row")

    op.drop_table("signals")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_deliveries_current",
            postgresql_where=sa.text("status = 'accepted'"),
            sqlite_where=sa.text("status = 'accepted'"),
        )
        batch_op.drop_index("ix_deliveries_partner_period")

    op.drop_table("deliveries")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_partner_id"))

    op.drop_table("api_keys")
    op.drop_table("partners")
