"""run deliveries: which deliveries each monthly run read

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02 13:00:00.000000

A period's single signals (an address with one signal that makes no case: owed an offer of help
by letter) are listed from the deliveries its latest monthly run judged; a delivery that arrived
while the run was reading and matching (a file over SFTP, written before the deadline) is not
among them until a rerun. Each run now keeps the ids of the deliveries it read
(``runs.delivery_ids``, a JSON list). Runs made before this migration get the deliveries that
were current when they started: stored by then (``received_at`` is when the ingest began) and
not yet replaced; a delivery whose ingest began just before the run and ended during it is
counted among them, which from now on the run's own record gets right.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("delivery_ids", sa.Text(), nullable=True))
    bind = op.get_bind()
    # Both moments are stored the same way in one backend (text of one format on SQLite), so
    # they compare in SQL on either.
    pairs = bind.execute(
        sa.text(
            """
            SELECT r.id, d.id FROM runs r
            LEFT JOIN deliveries d
              ON d.period = r.period AND d.received_at <= r.started_at
             AND (d.superseded_at IS NULL OR d.superseded_at > r.started_at)
            WHERE r.kind = 'monthly'
            """
        )
    ).all()
    found: dict[object, list[str]] = defaultdict(list)
    for run_id, delivery_id in pairs:
        # A UUID comes back as text of 32 hex digits on SQLite: written in its usual form.
        found[run_id] += [] if delivery_id is None else [str(uuid.UUID(str(delivery_id)))]
    update = sa.text("UPDATE runs SET delivery_ids = :ids WHERE id = :id")
    for run_id, ids in found.items():
        bind.execute(update, {"ids": json.dumps(sorted(ids)), "id": run_id})


def downgrade() -> None:
    op.drop_column("runs", "delivery_ids")
