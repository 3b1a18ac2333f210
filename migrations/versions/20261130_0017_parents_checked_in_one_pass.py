"""a statement's parents gathered in one pass over its new rows

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 15:00:00.000000

The statement triggers of migrations 0009 and 0013 read a statement's new rows (its transition
table) three or four times per foreign key: to count the distinct parents, for the smallest and
the largest key (two sorts), and again in the check itself. For the monthly run's cases (wide
rows: 156 ms a pass for 249,000 of them) and links, and for an upload's million signals, those
passes were most of the checks' time: 1.8 s of the run, at the end of its statements, where
nothing else runs beside them.

Now one pass gathers the distinct parents into an array, with the smallest and the largest key;
the check looks the parents up from the array: the same
rule (every parent there, locked as before: row locks up to ``ESCALATE_ABOVE`` parents, else a
table lock; a range read in one pass when the parents are neighbours), with one pass over the new
rows instead of three or four. Parents' keys are ``uuid`` or ``bigint`` (every parent's key is its
``id``); another type is refused, so that a new table cannot slip past the check.
"""

from collections.abc import Sequence

from alembic import op

from shared.migrate import earlier_migration

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARENTS_EXIST = """
CREATE OR REPLACE FUNCTION vs_parents_exist() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
-- The parents are found by their primary key, never by reading a whole table.
SET enable_seqscan = off AS $$
DECLARE
    keytype regtype;
    uuids uuid[];
    numbers bigint[];
    gather text;
    keys text;
    wanted bigint;
    found bigint;
    low text;
    high text;
    plan json;
    nestloop text;
BEGIN
    -- TG_ARGV: the child's column, the parent table, the constraint's name.
    SELECT a.atttypid::regtype INTO keytype FROM pg_attribute AS a
    WHERE a.attrelid = TG_RELID AND a.attname = TG_ARGV[0];
    IF keytype IS NULL OR keytype NOT IN ('uuid'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'foreign key "%": a parent key of type % is not checked here',
            TG_ARGV[2], keytype;
    END IF;
    -- The one pass over the new rows: their distinct parents, the smallest and the largest
    -- (no min() for uuid: their text in the C collation sorts as they do).
    gather := format(
        'SELECT array_agg(k), min(%2$s)::text, max(%2$s)::text FROM '
        '(SELECT DISTINCT %1$I AS k FROM new_rows WHERE %1$I IS NOT NULL) AS d',
        TG_ARGV[0], CASE WHEN keytype = 'uuid'::regtype THEN 'k::text COLLATE "C"' ELSE 'k' END);
    IF keytype = 'uuid'::regtype THEN
        EXECUTE gather INTO uuids, low, high;
        wanted := coalesce(cardinality(uuids), 0);
        keys := '$1';
    ELSE
        EXECUTE gather INTO numbers, low, high;
        wanted := coalesce(cardinality(numbers), 0);
        keys := '$2';
    END IF;
    IF wanted = 0 THEN
        RETURN NULL;
    END IF;
    IF wanted <= ESCALATE_ABOVE THEN
        -- Each parent row locked as a foreign key's check locks it.
        EXECUTE format(
            'SELECT count(*) FROM (SELECT 1 FROM %1$I AS p '
            'WHERE p.id = ANY(%2$s) FOR KEY SHARE OF p) AS locked',
            TG_ARGV[1], keys)
        INTO found USING uuids, numbers;
    ELSE
        -- Lock escalation: one table lock in SHARE mode keeps all parents from changing until
        -- this transaction ends (row locks would rewrite every parent page).
        EXECUTE format('LOCK TABLE %I IN SHARE MODE', TG_ARGV[1]);
        EXECUTE format(
            'EXPLAIN (FORMAT JSON) SELECT 1 FROM %I AS p WHERE p.id BETWEEN %L AND %L',
            TG_ARGV[1], low, high)
        INTO plan;
        IF (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric <= SPAN_FACTOR * wanted THEN
            -- Neighbours: the range in one pass of the primary key, joined in a hash.
            nestloop := current_setting('enable_nestloop');
            PERFORM set_config('enable_nestloop', 'off', true);
            EXECUTE format(
                'SELECT count(*) FROM %1$I AS p WHERE p.id BETWEEN %2$L AND %3$L '
                'AND p.id IN (SELECT unnest(%4$s))',
                TG_ARGV[1], low, high, keys)
            INTO found USING uuids, numbers;
            PERFORM set_config('enable_nestloop', nestloop, true);
        ELSE
            -- Spread over the table: each looked up by its key, in key order.
            EXECUTE format(
                'SELECT count(*) FROM %1$I AS p WHERE p.id = ANY(%2$s)', TG_ARGV[1], keys)
            INTO found USING uuids, numbers;
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


def _function(template: str) -> str:
    """The function's text with the limits of migrations 0009 and 0013 in it."""
    limit = earlier_migration("20261123_0009_foreign_keys_per_statement.py").ESCALATE_ABOVE
    span = earlier_migration("20261130_0013_parents_checked_by_key_range.py").SPAN_FACTOR
    return template.replace("ESCALATE_ABOVE", str(limit)).replace("SPAN_FACTOR", str(span))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_function(PARENTS_EXIST))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        _function(earlier_migration("20261130_0013_parents_checked_by_key_range.py").PARENTS_EXIST)
    )
