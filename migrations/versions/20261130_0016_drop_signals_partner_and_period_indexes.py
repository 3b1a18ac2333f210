"""drop the indexes of signals by partner and by period: no statement reads signals by either

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 09:40:00.000000

Every statement that reads signals finds them by delivery (``ix_signals_delivery_row``): the run
reads a period's signals as those of its current deliveries (a delivery's signals all carry its
period), the partner's feedback, the national export and the retention rules go through the
deliveries too. The index by period only added a second bitmap to the run's read, and nothing at
all read the index by partner, yet every uploaded row paid for an entry in both.

Measured on the national-scale database (the benchmark's file of 1,000,000 rows copied on the
server into a fresh copy of 14 million signals, alternating): 22.1, 18.5 and 17.5 s with the two
indexes, 15.6, 13.6 and 14.7 s without. The run's read of its month is the same plan with one
bitmap fewer.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_signals_period", table_name="signals")
    op.drop_index("ix_signals_partner_id", table_name="signals")


def downgrade() -> None:
    op.create_index("ix_signals_partner_id", "signals", ["partner_id"])
    op.create_index("ix_signals_period", "signals", ["period"])
