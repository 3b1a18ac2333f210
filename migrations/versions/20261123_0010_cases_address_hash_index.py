"""a hash index for looking cases up by address on PostgreSQL

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 17:20:00.000000

Cases are looked up by address only for equality (an address's earlier cases, recidive). A
B-tree of 64-character hashes receives each month's new cases at random places: at national
scale (271,118 new cases into 3.2 million) that index was 7.4 s of the 25.2 s their insert took;
a hash index, which keeps a 4-byte code per entry (128 MB for 3.5 million cases), 3.9 s (2-core
machine, the month copied in on the server after a checkpoint). SQLite keeps the B-tree.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_cases_address", table_name="cases")
    op.create_index("ix_cases_address", "cases", ["address_hash"], postgresql_using="hash")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_cases_address", table_name="cases")
    op.create_index("ix_cases_address", "cases", ["address_hash"])
