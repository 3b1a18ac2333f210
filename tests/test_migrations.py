"""Migrations: upgrade → downgrade → upgrade works, and the models match the migrations."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shared import migrate
from shared.db import TRIGGER_ENFORCED_FOREIGN_KEYS, Base, make_engine, schema_comparison_filter


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


def test_trigger_enforced_foreign_keys_are_the_models_and_absent_only_on_postgres(
    database_url: str,
) -> None:
    """Each name the schema comparison leaves out is a foreign key of the models; PostgreSQL has
    no such constraint (its triggers keep the rule) and SQLite has every one of them."""
    declared = {
        fk.name for table in Base.metadata.tables.values() for fk in table.foreign_key_constraints
    }
    assert declared >= TRIGGER_ENFORCED_FOREIGN_KEYS
    engine = make_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        present = {
            fk["name"]
            for table in inspector.get_table_names()
            for fk in inspector.get_foreign_keys(table)
        }
        postgres = engine.dialect.name == "postgresql"
    finally:
        engine.dispose()
    if postgres:
        assert not TRIGGER_ENFORCED_FOREIGN_KEYS & present
    else:
        assert present >= TRIGGER_ENFORCED_FOREIGN_KEYS
