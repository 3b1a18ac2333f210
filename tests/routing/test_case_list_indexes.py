"""The case lists read the indexes of the statuses they show (migration 0015).

Each list index is kept per status (partial indexes over the open and over the closed cases), so
a run's new cases go in among the open ones only. A list can use such an index only when its
statement names the status as a constant: a bound status would leave every generic plan a scan
of all cases. Here each list's statement is checked to name its statuses and never bind one, and
its plan (with the planner told to avoid reading whole tables or sorting where it can) to read
exactly the indexes of the statuses it shows, on both backends.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.routing.service import (
    CaseFilter,
    list_parameters,
    list_shape,
    list_statements,
)
from shared.auth import Principal
from shared.context import Context
from shared.models import Case, Team
from tests.helpers import finished_run

TODAY = dt.date(2026, 11, 25)
COORDINATOR = Principal(uuid.uuid4(), "k", "coordinator")
BOTH = {"open", "closed"}

# A list's filters and the statuses whose list indexes (queue or order) its plan must read.
LISTS = [
    (CaseFilter(), BOTH),
    (CaseFilter(status="open"), {"open"}),
    (CaseFilter(status="closed"), {"closed"}),
    (CaseFilter(overdue=True), {"open"}),
    (CaseFilter(overdue=False), BOTH),
]


def _as_stored(value: Any) -> Any:
    """A value as SQLite stores it (the values do not change its plan: the statuses are
    constants)."""
    if isinstance(value, uuid.UUID):
        return value.hex
    return value.isoformat() if isinstance(value, dt.date) else value


def _plan_statuses(
    session: sa.orm.Session, statement: sa.Select[Any], values: dict[str, Any]
) -> set[str]:
    """The statuses of the list indexes the statement's plan reads (each is one status's)."""
    connection = session.connection()
    compiled = statement.compile(dialect=connection.dialect)
    params = {**compiled.params, **values}
    if connection.dialect.name == "postgresql":
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            connection.exec_driver_sql(f"SET LOCAL {setting} = off")
        plan = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", params).scalar_one()
        names: set[str] = set()

        def walk(node: dict[str, Any]) -> None:
            if "Index Name" in node:
                names.add(node["Index Name"])
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
    else:
        positional = tuple(_as_stored(params[name]) for name in compiled.positiontup or ())
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional).all()
        names = {word for row in rows for word in str(row[-1]).split() if word.startswith("ix_")}
    lists = {name for name in names if name.startswith(("ix_cases_order_", "ix_cases_queue_"))}
    return {name.rsplit("_", 1)[1] for name in lists}


@pytest.mark.parametrize("deep", [False, True], ids=["first pages", "deep page"])
def test_each_list_reads_the_indexes_of_its_statuses(ctx: Context, deep: bool) -> None:
    run_id = finished_run(ctx, "2026-11", TODAY)
    with ctx.sessions() as session:
        team = Team(name="noord")
        session.add(team)
        session.flush()
        session.execute(
            sa.insert(Case),
            [
                {
                    "id": uuid.uuid4(),
                    "run_id": run_id,
                    "period": "2026-11",
                    "address_hash": uuid.uuid4().hex,
                    "priority": i % 7,
                    "classification": "meervoudig",
                    "partner_count": 2,
                    "signal_count": 2,
                    "total_cent": 100,
                    "kinds": "huur,water",
                    "status": "open" if i % 3 else "closed",
                    "route": "wijkteam",
                    "team_id": team.id,
                    "due_date": TODAY + dt.timedelta(days=i % 5 - 2),
                    "created_at": ctx.now(),
                    "updated_at": ctx.now(),
                }
                for i in range(300)
            ],
        )
        session.execute(sa.text("ANALYZE"))
        member = Principal(uuid.uuid4(), "k", "wijkteam", team_id=team.id)
        for principal, filters, wanted in [
            *((COORDINATOR, f, w) for f, w in LISTS),
            (member, CaseFilter(), BOTH),
        ]:
            statement, _ = list_statements(
                list_shape(principal, filters),
                session.connection().dialect.name == "postgresql",
                deep,
            )
            text = str(statement.compile(dialect=session.connection().dialect))
            for status in ("open", "closed"):
                named = f"cases.status = '{status}'" in text
                assert named == (status in wanted)
            values = {**list_parameters(principal, filters, TODAY), "offset": 0, "limit": 20}
            assert "status" not in values
            assert _plan_statuses(session, statement, values) == wanted, (principal.role, filters)
        session.rollback()
