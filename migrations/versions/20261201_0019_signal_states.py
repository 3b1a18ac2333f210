"""a signal's state in a narrow table of its own; signals written once

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 03:40:00.000000

A signal's status (DDAS ``Signaalstatus``, fed back to its partner) and the reason a run set it
aside were columns of ``signals``, whose rows are wide (the sealed personal data) and written in
bulk by an upload. The monthly run sets a few percent of a month's signals aside: each update
rewrote that signal's page and put a new row version into every index of ``signals``
(at national scale 33,000 signals, 1.0 s of the run, most of it whole pages into the write-ahead
log). The teams' work (a contact attempt, a closure) wrote signals' rows the same way.

Now ``signal_states`` holds the state of the signals whose state is no longer the one they
arrived with ("Nog niet opgepakt", no outcome): a signal without a row there is in that state.
Its key is the signal's, removed with the signal (on PostgreSQL by the statement triggers of
migration 0009). Rows that differ from the arrival state move there; the columns go.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.migrate import earlier_migration

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARRIVED = "Nog niet opgepakt"
STATUSES = (
    "Nog niet opgepakt",
    "Opgepakt",
    "Inwoner al bekend bij schuldhulpverlening",
    "Inwoner is overleden",
    "Niet opgepakt: andere reden",
    "Niet opgepakt: herhaalde melding",
    "Niet opgepakt: onterecht signaal",
    "Persoon is geen inwoner (meer) in de gemeente",
)
STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES))


def _link_triggers() -> str:
    """Migration 0009's statement triggers for the state's key (the check, the unchanged key,
    the cascade from ``signals``)."""
    keys = earlier_migration("20261123_0009_foreign_keys_per_statement.py")
    return str(keys._link_triggers(keys.Link("signal_states", "signal_id", "signals", "CASCADE")))


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    moved = (
        "SELECT id, status, run_outcome FROM signals "
        f"WHERE status <> '{ARRIVED}' OR run_outcome IS NOT NULL"
    )
    if postgres:
        _create_table()
        op.execute(f"INSERT INTO signal_states (signal_id, status, run_outcome) {moved}")
        op.drop_constraint("fk_signal_states_signal_id_signals", "signal_states", "foreignkey")
        op.execute(_link_triggers())
        # Dropping a column is a change of the catalogue only; its CHECK goes with it.
        op.execute("ALTER TABLE signals DROP COLUMN status, DROP COLUMN run_outcome")
        return
    # SQLite cannot drop a column that a table's CHECK names, so ``signals`` is copied without
    # them; dropping the old table deletes its children (ON DELETE CASCADE), which are kept
    # aside and put back. The embedded default holds a few thousand signals a month.
    op.execute(f"CREATE TEMP TABLE moved_signal_states AS {moved}")
    op.execute("CREATE TEMP TABLE kept_case_signals AS SELECT * FROM case_signals")
    with op.batch_alter_table("signals", recreate="always") as batch:
        batch.drop_constraint(op.f("ck_signals_status_valid"), type_="check")
        batch.drop_column("run_outcome")
        batch.drop_column("status")
    op.execute(
        "INSERT INTO case_signals (case_id, signal_id, partner_id, bedrag_cent) "
        "SELECT case_id, signal_id, partner_id, bedrag_cent FROM kept_case_signals"
    )
    _create_table()
    op.execute(
        "INSERT INTO signal_states (signal_id, status, run_outcome) "
        "SELECT id, status, run_outcome FROM moved_signal_states"
    )
    op.execute("DROP TABLE kept_case_signals")
    op.execute("DROP TABLE moved_signal_states")


def _create_table() -> None:
    op.create_table(
        "signal_states",
        sa.Column("signal_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("run_outcome", sa.String(length=16), nullable=True),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_signal_states_status_valid")),
        sa.ForeignKeyConstraint(
            ["signal_id"],
            ["signals.id"],
            name=op.f("fk_signal_states_signal_id_signals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("signal_id", name=op.f("pk_signal_states")),
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Added in place on both (a copy of ``signals`` on SQLite would cascade to its children).
    op.execute(
        f"ALTER TABLE signals ADD COLUMN status VARCHAR(64) NOT NULL DEFAULT '{ARRIVED}' "
        f"CONSTRAINT ck_signals_status_valid CHECK ({STATUS_CHECK})"
    )
    op.execute("ALTER TABLE signals ADD COLUMN run_outcome VARCHAR(16)")
    for column in ("status", "run_outcome"):
        op.execute(
            f"UPDATE signals SET {column} = (SELECT st.{column} FROM signal_states st "
            "WHERE st.signal_id = signals.id) "
            "WHERE id IN (SELECT signal_id FROM signal_states)"
        )
    if postgres:
        op.execute("ALTER TABLE signals ALTER COLUMN status DROP DEFAULT")
        op.execute("DROP TRIGGER signals_delete_signal_states_signal_id ON signals")
        for trigger in ("exists", "unchanged"):
            op.execute(f"DROP TRIGGER signal_states_signal_id_{trigger} ON signal_states")
    op.drop_table("signal_states")
