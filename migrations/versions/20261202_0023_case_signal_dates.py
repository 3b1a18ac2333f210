"""case signal dates: the date of each linked signal, kept with the link

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02 11:00:00.000000

The repeat rule sets aside a partner's signal about the *same* arrears as an earlier case's (the
national model): arrears that arose after the partner reported them for the earlier case are other
arrears. The run reads the earlier cases' links, not their signals (migration 0007), so a link
now carries its signal's date as well. Existing links are filled from ``signals``, whose dates
stay when their personal data is purged. On PostgreSQL one pass over the links joined to their
signals; on SQLite a lookup per link.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both (a copy of the table on SQLite is not needed to add a column).
    op.add_column("case_signals", sa.Column("signaaldatum", sa.Date(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            UPDATE case_signals cs SET signaaldatum = s.signaaldatum
            FROM signals s WHERE s.id = cs.signal_id
            """
        )
    else:
        op.execute(
            """
            UPDATE case_signals SET signaaldatum =
                (SELECT s.signaaldatum FROM signals s WHERE s.id = case_signals.signal_id)
            """
        )


def downgrade() -> None:
    op.drop_column("case_signals", "signaaldatum")
