"""signals → deliveries checked once per statement on PostgreSQL, not once per row

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:40:00.000000

A foreign key checks each inserted row on its own: for an upload of a million signals that is a
million look-ups and row locks of the same delivery, measured at 9.6 s of the database's 26.4 s
(a million stored signals copied in on the server, 2-core machine). Every row of an upload has
the same delivery, so the check is done once per statement instead, with the same guarantees:

* after each ``INSERT``/``COPY`` into ``signals``, a statement trigger locks the distinct
  deliveries of the new rows ``FOR KEY SHARE`` (as the foreign key's check does, so that no
  other transaction can delete them until this one ends) and fails with
  ``foreign_key_violation`` when one of them does not exist;
* a signal's ``delivery_id`` never changes (a row trigger refuses it; nothing changes it);
* deleting deliveries deletes their signals (the foreign key's ``ON DELETE CASCADE``), and a
  delivery's id never changes.

SQLite, the embedded default for a few thousand signals a month, keeps the plain foreign key.
The constraint stays declared on the model (``shared.models.Signal``); the schema comparison
knows it is enforced by these triggers on PostgreSQL (``shared.db.TRIGGER_ENFORCED_FOREIGN_KEYS``).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_signals_delivery_id_deliveries"

UPGRADE = """
CREATE FUNCTION vs_signals_delivery_exists() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted uuid[];
    found integer;
BEGIN
    SELECT array_agg(DISTINCT delivery_id) INTO wanted FROM new_signals;
    IF wanted IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT count(*) INTO found
    FROM (SELECT 1 FROM deliveries WHERE id = ANY (wanted) FOR KEY SHARE) AS locked;
    IF found < cardinality(wanted) THEN
        RAISE EXCEPTION 'insert or update on table "signals" violates foreign key constraint "%"',
            'fk_signals_delivery_id_deliveries'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER signals_delivery_exists
    AFTER INSERT ON signals
    REFERENCING NEW TABLE AS new_signals
    FOR EACH STATEMENT EXECUTE FUNCTION vs_signals_delivery_exists();

CREATE FUNCTION vs_key_unchanged() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% cannot change', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'foreign_key_violation';
END;
$$;

CREATE TRIGGER signals_delivery_unchanged
    BEFORE UPDATE ON signals
    FOR EACH ROW WHEN (OLD.delivery_id IS DISTINCT FROM NEW.delivery_id)
    EXECUTE FUNCTION vs_key_unchanged('delivery_id');

CREATE TRIGGER deliveries_id_unchanged
    BEFORE UPDATE ON deliveries
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION vs_key_unchanged('id');

CREATE FUNCTION vs_deliveries_delete_signals() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM signals WHERE delivery_id IN (SELECT id FROM old_deliveries);
    RETURN NULL;
END;
$$;

CREATE TRIGGER deliveries_delete_signals
    AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS old_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION vs_deliveries_delete_signals();
"""

DOWNGRADE = """
DROP TRIGGER deliveries_delete_signals ON deliveries;
DROP FUNCTION vs_deliveries_delete_signals();
DROP TRIGGER deliveries_id_unchanged ON deliveries;
DROP TRIGGER signals_delivery_unchanged ON signals;
DROP FUNCTION vs_key_unchanged();
DROP TRIGGER signals_delivery_exists ON signals;
DROP FUNCTION vs_signals_delivery_exists();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint(FOREIGN_KEY, "signals", type_="foreignkey")
    op.execute(UPGRADE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(DOWNGRADE)
    op.create_foreign_key(
        FOREIGN_KEY, "signals", "deliveries", ["delivery_id"], ["id"], ondelete="CASCADE"
    )
