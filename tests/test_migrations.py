"""Migrations: upgrade → downgrade → upgrade works, and the models match the migrations."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shared import migrate
from shared.db import Base, make_engine, schema_comparison_filter


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": schema_comparison_filter(conn.dialect.name),
                },
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(database_url: str) -> None:
    head = migrate.head_revision(database_url)
    migrate.downgrade(database_url, "base")
    engine = make_engine(database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
        assert tables == set()
        migrate.upgrade(database_url)
        assert migrate.current_revision(engine) == head
    finally:
        engine.dispose()
    assert _diff(database_url) == []
