"""signals period index: (period) instead of (period, address_hash)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 14:40:00.000000

Nothing looks signals up by address hash (the run reads a period's signals whole and matches in
memory; recidive reads cases), but every ingested row paid for an entry at a random place in an
index of 64-character hashes: at a million rows a month into a table of twelve million, that was
most of the database's work on an upload. The period alone keeps the run's read indexed, and its
entries arrive in order.
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


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_index("ix_signals_period")
        batch_op.create_index("ix_signals_period_address", ["period", "address_hash"], unique=False)
