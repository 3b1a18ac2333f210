"""the case lists' indexes kept per status: the open cases' apart from the closed ones'

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 09:10:00.000000

The case lists are sorted by priority, then due date (``ix_cases_order``), within a route and team
(``ix_cases_queue``). A run's new cases start at priority 1 again each month, so they went in
among the entries of every case of the past year, most of them closed: at national scale 249,000
new entries a month at random places in two indexes of 3.25 million, each on a page of its own.

Each index is now two partial ones, one over the open cases and one over the closed. The run's
new cases go into the open ones only (those of the last two months or so); a case moves to the
closed ones when it is closed, one at a time. A list of one status reads that status's index;
a list of both reads the first page's worth from each, in order, and merges them
(``services.routing.service.list_statuses``). The status is written into the list statements
as a literal, so that every plan, a generic one included, can use the partial indexes.

Building the four indexes over 3.25 million cases took 13 s on the benchmark's machine (with
dropping the two and a ``VACUUM ANALYZE``); writes to ``cases`` wait meanwhile, reads do not.

Measured on the national-scale database (the month's 249,004 cases copied into 3.25 million on a
fresh copy, alternating): 10.3 s with the indexes over all cases, 9.0 to 10.1 s with them per
status; the monthly run 24.2 and 24.5 s → 23.6 and 22.4 s on the same machine.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("open", "closed")


def _where(status: str) -> dict[str, sa.TextClause]:
    where = sa.text(f"status = '{status}'")
    return {"postgresql_where": where, "sqlite_where": where}


def upgrade() -> None:
    for status in STATUSES:
        op.create_index(
            f"ix_cases_queue_{status}",
            "cases",
            ["route", "team_id", "priority", "due_date", "id"],
            **_where(status),
        )
        op.create_index(
            f"ix_cases_order_{status}", "cases", ["priority", "due_date", "id"], **_where(status)
        )
    op.drop_index("ix_cases_queue", table_name="cases")
    op.drop_index("ix_cases_order", table_name="cases")


def downgrade() -> None:
    op.create_index("ix_cases_order", "cases", ["priority", "due_date", "id"])
    op.create_index("ix_cases_queue", "cases", ["route", "team_id", "priority", "due_date", "id"])
    for status in STATUSES:
        op.drop_index(f"ix_cases_order_{status}", table_name="cases")
        op.drop_index(f"ix_cases_queue_{status}", table_name="cases")
