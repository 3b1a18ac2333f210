"""cheaper signal writes: index the period alone; no second foreign key per row

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 14:40:00.000000

Nothing looks signals up by address hash (the run reads a period's signals whole and matches in
memory; recidive reads cases), but every ingested row paid for an entry at a random place in an
index of 64-character hashes: at a million rows a month into a table of twelve million, that was
most of the database's work on an upload. The period alone keeps the run's read indexed, and its
entries arrive in order.

``signals.partner_id`` loses its foreign key: it copies the delivery's partner, whose own foreign
key already guarantees that partner and keeps it from being deleted, and checking it again for
every row was a quarter of the database's time per row (measured: COPY of 200,000 signals into a
table of thirteen million, 4.2 s with both row checks, 2.1 s with neither).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_index("ix_signals_period_address")
        batch_op.create_index("ix_signals_period", ["period"], unique=False)
        batch_op.drop_constraint("fk_signals_partner_id_partners", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_signals_partner_id_partners",
            "partners",
            ["partner_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch_op.drop_index("ix_signals_period")
        batch_op.create_index("ix_signals_period_address", ["period", "address_hash"], unique=False)
