"""drop the indexes of cases by run and by team: no statement needs them

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 00:45:00.000000

A case's run and team are references (kept by statement triggers on PostgreSQL, migration 0009,
and by foreign keys on SQLite), and their indexes were made with them. Nothing reads cases by
run: a run's figures are kept with the run. The case lists filter by team under the orders of
``ix_cases_queue`` (route, team, ...) and ``ix_cases_order``; the team filter of the
coordinator's list reads the second in order and skips other teams' cases: at national scale the
plan is the same with or without the team index, 0.2 to 0.6 ms for the first page and 11 ms at
offset 5,000 (EXPLAIN ANALYZE). The indexes would serve deleting a run or a team,
which the service never does; done by hand, that check reads the cases once.

Measured on the national-scale database (271,118 cases inserted into 3.25 million, five times,
alternating): 5.1 to 5.5 s without these two indexes, 6.0 s with them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_cases_run_id", table_name="cases")
    op.drop_index("ix_cases_team_id", table_name="cases")


def downgrade() -> None:
    op.create_index("ix_cases_team_id", "cases", ["team_id"])
    op.create_index("ix_cases_run_id", "cases", ["run_id"])
