"""case counts: the case lists' totals, kept by the database in the statements that change cases

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 19:30:00.000000

A case list's total was a ``COUNT(*)`` over the cases it shows: for a coordinator at national
scale every one of 3.5 million cases, 180 to 420 ms each time, and again after every write. That
count set the list's 99th percentile. Every condition of a list (who may see what, and its
filters) is a condition on a case's route, team, status, period and due date, so the number of
cases per such key is enough to answer any list's total: ``case_counts`` holds it (63 rows for
the 3.5 million cases of the benchmark's national scale).

The rows are kept by triggers on ``cases``, inside the statement that changes them, so a total
is exactly as current as the list beside it:

* PostgreSQL: one trigger per statement (``INSERT``/``COPY``, ``UPDATE``, ``DELETE``) adds the
  differences per key of the statement's old and new rows in one upsert, in key order (so that
  two statements never take the same keys' row locks in opposite orders), and deletes the rows
  it brought to zero; ``TRUNCATE`` empties the table. The functions run as their owner, so that
  whoever may change cases keeps the counts without being able to write them otherwise.
* SQLite: the same per row (a row-level trigger; SQLite writes one transaction at a time).

The existing cases are counted here, with the cases locked against writes until the migration
commits.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ("route", "team_id", "status", "period", "due_date")
KEY_LIST = ", ".join(KEY)


def _upsert(rows: str) -> str:
    """Add ``rows`` (the key columns and a signed count ``d``) to the counts; the ids of rows
    that reach zero go into ``emptied``."""
    return f"""
        WITH changed AS (
            INSERT INTO case_counts AS c ({KEY_LIST}, n)
            SELECT {KEY_LIST}, sum(d) FROM ({rows}) AS r
            GROUP BY {KEY_LIST}
            HAVING sum(d) <> 0
            ORDER BY {KEY_LIST}
            ON CONFLICT ({KEY_LIST}) DO UPDATE SET n = c.n + excluded.n
            RETURNING c.id, c.n
        )
        SELECT array_agg(id) INTO emptied FROM changed WHERE n = 0;"""


_NEW = f"SELECT {KEY_LIST}, 1 AS d FROM new_rows"
_OLD = f"SELECT {KEY_LIST}, -1 AS d FROM old_rows"

POSTGRES_FUNCTIONS = f"""
CREATE FUNCTION vs_case_counts_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    emptied bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN{_upsert(_NEW)}
    ELSIF TG_OP = 'DELETE' THEN{_upsert(_OLD)}
    ELSE{_upsert(_NEW + " UNION ALL " + _OLD)}
    END IF;
    IF emptied IS NOT NULL THEN
        DELETE FROM case_counts WHERE id = ANY (emptied) AND n = 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION vs_case_counts_clear() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM case_counts;
    RETURN NULL;
END;
$$;
"""

POSTGRES_TRIGGERS = """
CREATE TRIGGER cases_counts_insert AFTER INSERT ON cases
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION vs_case_counts_apply();
CREATE TRIGGER cases_counts_update AFTER UPDATE ON cases
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION vs_case_counts_apply();
CREATE TRIGGER cases_counts_delete AFTER DELETE ON cases
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION vs_case_counts_apply();
CREATE TRIGGER cases_counts_truncate AFTER TRUNCATE ON cases
    FOR EACH STATEMENT EXECUTE FUNCTION vs_case_counts_clear();
"""


def _same_key(row: str) -> str:
    return " AND ".join(f"{column} IS {row}.{column}" for column in KEY)


def _sqlite_add(row: str) -> str:
    values = ", ".join(f"{row}.{column}" for column in KEY)
    return f"""
    INSERT INTO case_counts ({KEY_LIST}, n) SELECT {values}, 0
        WHERE NOT EXISTS (SELECT 1 FROM case_counts WHERE {_same_key(row)});
    UPDATE case_counts SET n = n + 1 WHERE {_same_key(row)};"""


def _sqlite_remove(row: str) -> str:
    return f"""
    UPDATE case_counts SET n = n - 1 WHERE {_same_key(row)};
    DELETE FROM case_counts WHERE n = 0 AND {_same_key(row)};"""


def _key_changed() -> str:
    return " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in KEY)


SQLITE_TRIGGERS = (
    f"CREATE TRIGGER cases_counts_insert AFTER INSERT ON cases BEGIN{_sqlite_add('NEW')}\nEND",
    f"CREATE TRIGGER cases_counts_delete AFTER DELETE ON cases BEGIN{_sqlite_remove('OLD')}\nEND",
    f"CREATE TRIGGER cases_counts_update AFTER UPDATE OF {KEY_LIST} ON cases "
    f"WHEN {_key_changed()} BEGIN{_sqlite_remove('OLD')}{_sqlite_add('NEW')}\nEND",
)

TRIGGERS = ("cases_counts_insert", "cases_counts_update", "cases_counts_delete")


def upgrade() -> None:
    op.create_table(
        "case_counts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("route", sa.String(length=16), nullable=True),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_counts")),
    )
    op.create_index(
        "uq_case_counts_key",
        "case_counts",
        list(KEY),
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    if op.get_bind().dialect.name == "postgresql":
        # No case changes between the count below and the triggers taking over.
        op.execute("LOCK TABLE cases IN SHARE MODE")
        op.execute(POSTGRES_FUNCTIONS)
        op.execute(POSTGRES_TRIGGERS)
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
    op.execute(
        f"INSERT INTO case_counts ({KEY_LIST}, n) "
        f"SELECT {KEY_LIST}, count(*) FROM cases GROUP BY {KEY_LIST}"
    )


def downgrade() -> None:
    for trigger in TRIGGERS:
        op.execute(
            f"DROP TRIGGER {trigger} ON cases"
            if op.get_bind().dialect.name == "postgresql"
            else f"DROP TRIGGER {trigger}"
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER cases_counts_truncate ON cases")
        op.execute("DROP FUNCTION vs_case_counts_clear()")
        op.execute("DROP FUNCTION vs_case_counts_apply()")
    op.drop_index("uq_case_counts_key", table_name="case_counts")
    op.drop_table("case_counts")
