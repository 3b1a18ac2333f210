"""foreign keys of the bulk-written tables checked once per statement on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:40:00.000000

A foreign key checks, and locks, each inserted row's parent on its own: for an upload of a million
signals a million look-ups of the same delivery, and for the monthly run a look-up per case, per
case link and per recidive link. Measured on the 2-core machine (a month copied in on the server,
into tables of national size): 9.6 s of 26.4 s for a million signals; 3.4 s of 25.2 s for 271,118
cases (their run and team); 401,921 case links took 31.2 s with their two per-row checks, 10.9 s
with the statement triggers below and 6.2 s with no check at all.

Here the same rules are kept by statement triggers, which check all rows of a statement at once:

* after an ``INSERT`` or ``COPY`` into the child, the distinct parents of the new rows are locked
  ``FOR KEY SHARE`` (as a foreign key's check locks them, so that no other transaction deletes
  them until this one ends) and counted; a missing one fails the statement with
  ``foreign_key_violation``;
* a child's reference that may change (a case's team and run) is checked the same way after an
  ``UPDATE``; one that never changes (a signal's delivery, a link's case) is refused if changed;
* deleting parents deletes their children (``ON DELETE CASCADE``) or fails while children exist
  (``RESTRICT``), once per statement; a parent's id never changes.

The functions run as their owner (as PostgreSQL runs foreign key checks), with the search path of
this migration. With READ COMMITTED, the isolation the service uses, every guarantee of the
foreign key holds. SQLite, the embedded default for a few thousand signals a month, keeps the
plain foreign keys. The models still declare them (``shared.models``); the schema comparison
knows which are kept by triggers here (``shared.db.TRIGGER_ENFORCED_FOREIGN_KEYS``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


@dataclass(frozen=True)
class Link:
    child: str
    column: str
    parent: str
    on_delete: str  # CASCADE or RESTRICT
    changes: bool = False  # whether the reference may be updated

    @property
    def name(self) -> str:
        return f"fk_{self.child}_{self.column}_{self.parent}"


# Above this many distinct parents in one statement, the parent table is locked (SHARE) instead
# of each parent row (FOR KEY SHARE).
ESCALATE_ABOVE = 10000

# Every parent's key is its "id" column.
LINKS = (
    Link("signals", "delivery_id", "deliveries", "CASCADE"),
    Link("cases", "run_id", "runs", "RESTRICT", changes=True),
    Link("cases", "team_id", "teams", "RESTRICT", changes=True),
    Link("case_signals", "case_id", "cases", "CASCADE"),
    Link("case_signals", "signal_id", "signals", "CASCADE"),
    Link("case_links", "case_id", "cases", "CASCADE"),
    Link("case_links", "earlier_case_id", "cases", "CASCADE"),
    Link("case_events", "case_id", "cases", "CASCADE"),
)

FUNCTIONS = """
CREATE FUNCTION vs_parents_exist() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
-- The parents are found by their primary key, never by reading a whole table.
SET enable_seqscan = off AS $$
DECLARE
    wanted bigint;
    found bigint;
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
        -- Lock escalation: for this many parents (the monthly run's links to a month of signals
        -- and cases), row locks would rewrite every parent page; one table lock in SHARE mode
        -- keeps all parents from changing until this transaction ends.
        EXECUTE format('LOCK TABLE %I IN SHARE MODE', TG_ARGV[1]);
        EXECUTE format(
            'SELECT count(*) FROM %2$I AS p WHERE p.id IN (SELECT %1$I FROM new_rows)',
            TG_ARGV[0], TG_ARGV[1])
        INTO found;
    END IF;
    IF found < wanted THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"',
            TG_TABLE_NAME, TG_ARGV[2]
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION vs_key_unchanged() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% cannot change', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'foreign_key_violation';
END;
$$;

CREATE FUNCTION vs_delete_children() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- TG_ARGV: the child table, its column.
    EXECUTE format('DELETE FROM %I WHERE %I IN (SELECT id FROM old_rows)', TG_ARGV[0], TG_ARGV[1]);
    RETURN NULL;
END;
$$;

CREATE FUNCTION vs_refuse_if_children() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    referenced boolean;
BEGIN
    -- TG_ARGV: the child table, its column, the constraint's name.
    EXECUTE format(
        'SELECT EXISTS (SELECT 1 FROM %I WHERE %I IN (SELECT id FROM old_rows))',
        TG_ARGV[0], TG_ARGV[1])
    INTO referenced;
    IF referenced THEN
        RAISE EXCEPTION 'update or delete on table "%" violates foreign key constraint "%"',
            TG_TABLE_NAME, TG_ARGV[2]
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
"""


def _link_triggers(link: Link) -> str:
    child, column, parent, name = link.child, link.column, link.parent, link.name
    checks = f"""
CREATE TRIGGER {child}_{column}_exists AFTER INSERT ON {child}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION vs_parents_exist('{column}', '{parent}', '{name}');
"""
    if link.changes:
        checks += f"""
CREATE TRIGGER {child}_{column}_exists_after_update AFTER UPDATE ON {child}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION vs_parents_exist('{column}', '{parent}', '{name}');
"""
    else:
        checks += f"""
CREATE TRIGGER {child}_{column}_unchanged BEFORE UPDATE ON {child}
    FOR EACH ROW WHEN (OLD.{column} IS DISTINCT FROM NEW.{column})
    EXECUTE FUNCTION vs_key_unchanged('{column}');
"""
    if link.on_delete == "CASCADE":
        function = f"vs_delete_children('{child}', '{column}')"
    else:
        function = f"vs_refuse_if_children('{child}', '{column}', '{name}')"
    return (
        checks
        + f"""
CREATE TRIGGER {parent}_delete_{child}_{column} AFTER DELETE ON {parent}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION {function};
"""
    )


def _parents() -> list[str]:
    return sorted({link.parent for link in LINKS})


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for link in LINKS:
        op.drop_constraint(link.name, link.child, type_="foreignkey")
    op.execute(FUNCTIONS.replace("ESCALATE_ABOVE", str(ESCALATE_ABOVE)))
    for link in LINKS:
        op.execute(_link_triggers(link))
    for parent in _parents():
        op.execute(
            f"CREATE TRIGGER {parent}_id_unchanged BEFORE UPDATE ON {parent} "
            "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) "
            "EXECUTE FUNCTION vs_key_unchanged('id')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for parent in _parents():
        op.execute(f"DROP TRIGGER {parent}_id_unchanged ON {parent}")
    for link in LINKS:
        child, column, parent = link.child, link.column, link.parent
        op.execute(f"DROP TRIGGER {parent}_delete_{child}_{column} ON {parent}")
        op.execute(f"DROP TRIGGER {child}_{column}_exists ON {child}")
        second = "exists_after_update" if link.changes else "unchanged"
        op.execute(f"DROP TRIGGER {child}_{column}_{second} ON {child}")
    for function in (
        "vs_refuse_if_children",
        "vs_delete_children",
        "vs_key_unchanged",
        "vs_parents_exist",
    ):
        op.execute(f"DROP FUNCTION {function}()")
    for link in LINKS:
        op.create_foreign_key(
            link.name,
            link.child,
            link.parent,
            [link.column],
            ["id"],
            ondelete=link.on_delete,
        )
