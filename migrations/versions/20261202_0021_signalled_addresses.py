"""each period's signalled addresses, for the recidive rule

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 05:00:00.000000

The national monitor calls a case *opeenvolgend* when its address had a signal in the previous
six months, whether or not that signal made a case; the run looked at earlier cases only. One row
per period holds the set of addresses its signals were about (the first 64 bits of each address
hash, sorted, as one Arrow IPC column): see ``shared.models.SignalledAddresses``.

Nothing is copied here: the first monthly run that needs an earlier period's set and finds none
builds it from that period's signals and keeps it, where the purge has not yet removed any of
their addresses (``services.matcher.signalled``). ``hash_key_check`` tells which address hash key
made a set: one made with another key is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signalled_addresses",
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("address_count", sa.Integer(), nullable=False),
        sa.Column("address_keys", sa.LargeBinary(), nullable=False),
        sa.Column("hash_key_check", sa.String(length=16), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("period", name=op.f("pk_signalled_addresses")),
    )


def downgrade() -> None:
    op.drop_table("signalled_addresses")
