"""a statement's many parents checked over their key range, when they are neighbours

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 00:20:00.000000

Migration 0009 checks the parents of a statement's rows once per statement. Above
``ESCALATE_ABOVE`` distinct parents it locks the parent table and looks each parent up in its
primary key: at national scale the monthly run's 248,866 new cases were looked up one by one for
their signal links, again for their ``routed`` events, and the month's 368,974 linked signals
likewise, about a second each (3 to 4 µs a look-up, with a visit to the row to see that it is
there for this transaction).

The parents of such a statement are mostly neighbours in their primary key: a month's signals
(ids in the order they were stored) and the cases one run has just made (time-ordered ids,
``shared.ids``). When the planner estimates that the range between the smallest and the largest
key wanted holds at most ``SPAN_FACTOR`` times as many rows as there are keys, the range is read
in one pass of the primary key and joined to the keys in a hash (0.4 s for each of those three
checks). Otherwise (parents spread over the whole table, such as the earlier cases a month's
recidive links point to) the look-ups stay. Both ways count the parents found against the keys
wanted, under the same table lock, so the rule is the same; only its cost changes.
"""

from collections.abc import Sequence
from types import ModuleType

from alembic import op

from shared.migrate import earlier_migration

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Read the key range in one pass when it holds at most this many rows per key wanted.
SPAN_FACTOR = 4

PARENTS_EXIST = """
CREATE OR REPLACE FUNCTION vs_parents_exist() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
-- The parents are found by their primary key, never by reading a whole table.
SET enable_seqscan = off AS $$
DECLARE
    wanted bigint;
    found bigint;
    low text;
    high text;
    plan json;
    nestloop text;
BEGIN
    -- TG_ARGV: the child's column, the parent table, the constraint's name.
    EXECUTE format('SELECT count(DISTINCT %I) FROM new_rows', TG_ARGV[0]) INTO wanted;
    IF wanted = 0 THEN
        RETURN NULL;
    END IF;
    IF wanted <= ESCALATE_ABOVE THEN
        -- Each parent row locked as a foreign key's check locks it.
        EXECUTE format(
            'SELECT count(*) FROM (SELECT 1 FROM %2$I AS p '
            'WHERE p.id IN (SELECT %1$I FROM new_rows) FOR KEY SHARE OF p) AS locked',
            TG_ARGV[0], TG_ARGV[1])
        INTO found;
    ELSE
        -- Lock escalation: one table lock in SHARE mode keeps all parents from changing until
        -- this transaction ends (row locks would rewrite every parent page).
        EXECUTE format('LOCK TABLE %I IN SHARE MODE', TG_ARGV[1]);
        EXECUTE format(
            'SELECT (SELECT %1$I FROM new_rows WHERE %1$I IS NOT NULL ORDER BY 1 LIMIT 1)::text, '
            '(SELECT %1$I FROM new_rows WHERE %1$I IS NOT NULL ORDER BY 1 DESC LIMIT 1)::text',
            TG_ARGV[0])
        INTO low, high;
        EXECUTE format(
            'EXPLAIN (FORMAT JSON) SELECT 1 FROM %I AS p WHERE p.id BETWEEN %L AND %L',
            TG_ARGV[1], low, high)
        INTO plan;
        IF (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric <= SPAN_FACTOR * wanted THEN
            -- Neighbours: the range in one pass of the primary key, joined in a hash.
            nestloop := current_setting('enable_nestloop');
            PERFORM set_config('enable_nestloop', 'off', true);
            EXECUTE format(
                'SELECT count(*) FROM %2$I AS p WHERE p.id BETWEEN %3$L AND %4$L '
                'AND p.id IN (SELECT %1$I FROM new_rows)',
                TG_ARGV[0], TG_ARGV[1], low, high)
            INTO found;
            PERFORM set_config('enable_nestloop', nestloop, true);
        ELSE
            EXECUTE format(
                'SELECT count(*) FROM %2$I AS p WHERE p.id IN (SELECT %1$I FROM new_rows)',
                TG_ARGV[0], TG_ARGV[1])
            INTO found;
        END IF;
    END IF;
    IF found < wanted THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"',
            TG_TABLE_NAME, TG_ARGV[2]
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
"""


def _migration_0009() -> ModuleType:
    """Migration 0009, for its limit and, on the way down, its functions."""
    return earlier_migration("20261123_0009_foreign_keys_per_statement.py")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    limit = _migration_0009().ESCALATE_ABOVE
    op.execute(
        PARENTS_EXIST.replace("ESCALATE_ABOVE", str(limit)).replace("SPAN_FACTOR", str(SPAN_FACTOR))
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    previous = _migration_0009()
    functions = previous.FUNCTIONS.replace("ESCALATE_ABOVE", str(previous.ESCALATE_ABOVE))
    op.execute(functions.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
