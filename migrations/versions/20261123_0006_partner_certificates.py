"""partner certificates

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partner_certificates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_partner_certificates_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_certificates")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_partner_certificates_fingerprint")),
    )
    with op.batch_alter_table("partner_certificates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_partner_certificates_partner_id"), ["partner_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("partner_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partner_certificates_partner_id"))

    op.drop_table("partner_certificates")
