"""runs have a kind: the monthly run, or a crisis run between monthly runs

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 02:00:00.000000

The Wgs gives a household facing eviction or disconnection a first talk within three working
days of the report. A crisis run (``vroegsignaal crisis``, daily) makes the cases of the crisis
signals delivered so far at once, instead of at the monthly run after the deadline. Its runs are
rows of ``runs`` like the monthly run's; ``kind`` tells them apart (the monthly run looks for a
completed *monthly* run of its period). Every earlier run was a monthly run.

Added in place on both backends: SQLite would copy ``runs`` to add a CHECK, and dropping the old
table trips the cases' foreign key to it (ON DELETE RESTRICT).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE runs ADD COLUMN kind VARCHAR(16) DEFAULT 'monthly' NOT NULL "
        "CONSTRAINT ck_runs_kind_valid CHECK (kind IN ('monthly', 'crisis'))"
    )


def downgrade() -> None:
    # Without its kind a crisis run would count as its period's monthly run.
    made = op.get_bind().exec_driver_sql(
        "SELECT count(*) FROM runs WHERE kind = 'crisis' AND id IN (SELECT run_id FROM cases)"
    )
    if made.scalar():
        raise RuntimeError("crisis runs made cases: they would count as monthly runs")
    op.execute("DELETE FROM runs WHERE kind = 'crisis'")
    # The CHECK is the column's own: both backends drop it with the column.
    op.execute("ALTER TABLE runs DROP COLUMN kind")
