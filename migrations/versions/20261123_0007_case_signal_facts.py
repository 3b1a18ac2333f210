"""case signal facts: the partner and amount of each linked signal, kept with the link

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 14:10:00.000000

The monthly run reads six months of earlier cases with their signals' partner and amount (the
repeat rule and recidive). Reading them through ``signals`` meant a join with every signal of
those months (millions of wide rows at national scale); a link now carries the two facts it
needs, written once when the case is made. Existing links are filled from ``signals``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("case_signals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("partner_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("bedrag_cent", sa.BigInteger(), nullable=True))
    op.execute(
        """
        UPDATE case_signals SET
            partner_id = (SELECT s.partner_id FROM signals s WHERE s.id = case_signals.signal_id),
            bedrag_cent = (SELECT s.bedrag_cent FROM signals s WHERE s.id = case_signals.signal_id)
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("case_signals", schema=None) as batch_op:
        batch_op.drop_column("bedrag_cent")
        batch_op.drop_column("partner_id")
