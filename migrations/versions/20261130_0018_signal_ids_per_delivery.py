"""signals' ids in a block per delivery; no index of signals by delivery

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30 20:00:00.000000

An upload's signals were found by the unique index on (delivery, row), which every uploaded row
paid for: the benchmark's million stored rows copied again on the server into a database of
two million signals took 5.84 to 7.15 s with it, 4.55 to 5.18 s without it (four runs each,
alternating), and 3.43 to 3.54 s with neither it, the primary key nor the key check. Now the
ingest gives each delivery a block of ids (``shared.ids``: the block's number times 2^24, plus
the row), so a delivery's signals are one range of the primary key; the range is kept on the
delivery (``first_signal_id``, ``last_signal_id``) and readers look in it (checking
``delivery_id`` too where the range is not a whole block of the delivery's own). No sequence is
drawn per row either: the id comes with the row. A delivery can no longer be deleted cheaply
(its signals are found by a scan of the table); the application never deletes one.

Signals stored before keep their ids; their deliveries get the smallest and the largest id of
their signals as the range (read once here, by the index about to go). Such a range may hold
other deliveries' signals (ids were drawn per row, by uploads side by side), which the check of
``delivery_id`` leaves out. New blocks start above every id in use.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BLOCK = 1 << 24


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Plain ALTER TABLE on both (no copy of the table: on SQLite a copy of ``deliveries`` would
    # cascade its removal to every signal).
    op.add_column("deliveries", sa.Column("first_signal_id", sa.BigInteger(), nullable=True))
    op.add_column("deliveries", sa.Column("last_signal_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE deliveries SET "
        "first_signal_id = (SELECT min(s.id) FROM signals s WHERE s.delivery_id = deliveries.id), "
        "last_signal_id = (SELECT max(s.id) FROM signals s WHERE s.delivery_id = deliveries.id)"
    )
    # A kept range that would look like a whole block (shared.ids.owns_block: readers then skip
    # the check of delivery_id) is widened by one id, so that it cannot be taken for one.
    op.execute(
        f"UPDATE deliveries SET first_signal_id = first_signal_id - 1 "
        f"WHERE first_signal_id % {BLOCK} = 0 AND last_signal_id - first_signal_id = {BLOCK - 1}"
    )
    op.drop_index("ix_signals_delivery_row", table_name="signals")
    if postgres:
        op.execute("CREATE SEQUENCE signal_blocks")
        op.execute(
            "SELECT setval('signal_blocks', "
            f"(SELECT coalesce(max(id), 0) FROM signals) / {BLOCK} + 1, false)"
        )
        op.execute("ALTER TABLE signals ALTER COLUMN id DROP DEFAULT")
        op.execute("DROP SEQUENCE IF EXISTS signals_id_seq")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE SEQUENCE signals_id_seq OWNED BY signals.id")
        op.execute(
            "SELECT setval('signals_id_seq', (SELECT coalesce(max(id), 0) FROM signals) + 1, false)"
        )
        op.execute("ALTER TABLE signals ALTER COLUMN id SET DEFAULT nextval('signals_id_seq')")
        op.execute("DROP SEQUENCE signal_blocks")
    op.create_index(
        "ix_signals_delivery_row", "signals", ["delivery_id", "row_number"], unique=True
    )
    # ALTER TABLE ... DROP COLUMN: SQLite 3.35 or later (a copy of the table would cascade).
    op.execute("ALTER TABLE deliveries DROP COLUMN last_signal_id")
    op.execute("ALTER TABLE deliveries DROP COLUMN first_signal_id")
