"""drop the index of cases by address: no query uses it

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 09:00:00.000000

Cases are read by period (the run, its rerun, the retention purge), by id, and in the lists'
orders; an address's earlier cases reach the run through the history it reads per period and
reach the case view through ``case_links``. Nothing looks a case up by its address hash, so its
index only cost writes: 3.9 s of each national-scale monthly run (271,118 new cases into an
index of 3.5 million, 128 MB).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_cases_address", table_name="cases")


def downgrade() -> None:
    using = {"postgresql_using": "hash"} if op.get_bind().dialect.name == "postgresql" else {}
    op.create_index("ix_cases_address", "cases", ["address_hash"], **using)
