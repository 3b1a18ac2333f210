"""case list indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:26:11.488477
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_order", ["priority", "due_date", "id"], unique=False)
        batch_op.create_index(
            "ix_cases_queue", ["route", "team_id", "priority", "due_date", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_queue")
        batch_op.drop_index("ix_cases_order")
