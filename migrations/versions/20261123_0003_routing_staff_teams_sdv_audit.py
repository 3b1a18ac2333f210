"""routing staff teams sdv audit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:53:14.775405
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("credential", sa.String(length=16), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=True),
        sa.Column("object_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_events_hash")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_actor", ["actor_id"], unique=False)
        batch_op.create_index("ix_audit_object", ["object_type", "object_id"], unique=False)

    op.create_table(
        "sdv_clients",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("person_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sdv_clients")),
    )
    with op.batch_alter_table("sdv_clients", schema=None) as batch_op:
        batch_op.create_index("ix_sdv_clients_person", ["person_hash"], unique=False)
        batch_op.create_index("uq_sdv_clients_entry", ["address_hash", "person_hash"], unique=True)

    op.create_table(
        "teams",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_table(
        "staff",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(role = 'wijkteam') = (team_id IS NOT NULL)",
            name=op.f("ck_staff_staff_team_only_for_wijkteam"),
        ),
        sa.CheckConstraint(
            "role IN ('sdv', 'wijkteam', 'budgetcoach', 'coordinator', 'admin')",
            name=op.f("ck_staff_role_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_staff_team_id_teams"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
        sa.UniqueConstraint("name", name=op.f("uq_staff_name")),
    )
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_team_id"), ["team_id"], unique=False)

    op.create_table(
        "team_areas",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("pc4_from", sa.String(length=4), nullable=True),
        sa.Column("pc4_to", sa.String(length=4), nullable=True),
        sa.Column("pc6", sa.String(length=6), nullable=True),
        sa.CheckConstraint(
            "(pc6 IS NULL AND pc4_from IS NOT NULL AND pc4_to IS NOT NULL AND pc4_from <= pc4_to) OR (pc6 IS NOT NULL AND pc4_from IS NULL AND pc4_to IS NULL)",
            name=op.f("ck_team_areas_team_areas_shape"),
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_team_areas_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_areas")),
        sa.UniqueConstraint("pc6", name=op.f("uq_team_areas_pc6")),
    )
    with op.batch_alter_table("team_areas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_team_areas_team_id"), ["team_id"], unique=False)

    op.create_table(
        "case_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("from_route", sa.String(length=16), nullable=True),
        sa.Column("from_team_id", sa.Uuid(), nullable=True),
        sa.Column("to_route", sa.String(length=16), nullable=True),
        sa.Column("to_team_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.LargeBinary(), nullable=True),
        sa.Column("reason_key_id", sa.String(length=16), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_events_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff.id"],
            name=op.f("fk_case_events_staff_id_staff"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
    )
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.create_index("ix_case_events_case", ["case_id", "at"], unique=False)

    op.create_table(
        "contact_attempts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("soort", sa.String(length=32), nullable=False),
        sa.Column("datum", sa.Date(), nullable=False),
        sa.Column("dagdeel", sa.String(length=16), nullable=True),
        sa.Column("bereikt", sa.Boolean(), nullable=False),
        sa.Column("notitie", sa.LargeBinary(), nullable=True),
        sa.Column("notitie_key_id", sa.String(length=16), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "dagdeel IN ('Ochtend', 'Middag', 'Avond')",
            name=op.f("ck_contact_attempts_dagdeel_valid"),
        ),
        sa.CheckConstraint(
            "soort IN ('Administratief', 'Afspraak op locatie', 'Brief', 'Huisbezoek', 'Kaartje', 'Mail', 'Onbekend', 'Overige', 'SMS/Whatsapp', 'Telefoon')",
            name=op.f("ck_contact_attempts_soort_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_contact_attempts_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff.id"],
            name=op.f("fk_contact_attempts_staff_id_staff"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_attempts")),
    )
    with op.batch_alter_table("contact_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_contact_attempts_case", ["case_id", "datum"], unique=False)

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("staff_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_keys_staff_id"), ["staff_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_api_keys_staff_id_staff"),
            "staff",
            ["staff_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_check_constraint(
            "api_keys_one_owner", "(partner_id IS NULL) <> (staff_id IS NULL)"
        )

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pc6_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("route", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("team_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("known_to_sdv", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("outside_areas", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("due_date", sa.Date(), nullable=True))
        batch_op.add_column(
            sa.Column("routed_at", shared.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_cases_team_id"), ["team_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_cases_team_id_teams"), "teams", ["team_id"], ["id"], ondelete="RESTRICT"
        )

    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pc6_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_column("pc6_hash")

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_cases_team_id_teams"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_cases_team_id"))
        batch_op.drop_column("routed_at")
        batch_op.drop_column("due_date")
        batch_op.drop_column("outside_areas")
        batch_op.drop_column("known_to_sdv")
        batch_op.drop_column("team_id")
        batch_op.drop_column("route")
        batch_op.drop_column("pc6_hash")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_api_keys_api_keys_one_owner"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_api_keys_staff_id_staff"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_keys_staff_id"))
        batch_op.drop_column("staff_id")

    with op.batch_alter_table("contact_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_attempts_case")

    op.drop_table("contact_attempts")
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.drop_index("ix_case_events_case")

    op.drop_table("case_events")
    with op.batch_alter_table("team_areas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_team_areas_team_id"))

    op.drop_table("team_areas")
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_team_id"))

    op.drop_table("staff")
    op.drop_table("teams")
    with op.batch_alter_table("sdv_clients", schema=None) as batch_op:
        batch_op.drop_index("uq_sdv_clients_entry")
        batch_op.drop_index("ix_sdv_clients_person")

    op.drop_table("sdv_clients")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_object")
        batch_op.drop_index("ix_audit_actor")

    op.drop_table("audit_events")
