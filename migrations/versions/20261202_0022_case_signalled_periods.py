"""the earlier periods in which a case's address was signalled

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02 07:30:00.000000

Since migration 0021 a case is recurrent (*opeenvolgend*) when its address was signalled in the
previous periods, with or without a case then. The case detail listed only the earlier cases, so
a case recurrent by an earlier signal alone showed no reason. ``cases.signalled_periods`` names
those periods (``2026-05,2026-07``). Cases matched before stay null here: what their run saw
was not kept, and is not guessed now; their period's next rerun notes what it sees
(``services.matcher.repository.update_cases``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both: on SQLite a copy of ``cases`` would cascade its removal to the
    # cases' links, signals and history.
    op.add_column("cases", sa.Column("signalled_periods", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("cases", "signalled_periods")
