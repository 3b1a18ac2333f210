"""The case counts (migration 0012) agree with the cases after any change, on each backend.

The database keeps ``case_counts`` itself: statement triggers on PostgreSQL, row triggers on
SQLite. Whatever a transaction does to cases (inserted one by one or by ``COPY``, updated in
any column, deleted, rolled back, truncated, or changed by two transactions at once) the counts
must equal the cases grouped by their key, no key may linger at zero, and every case list's
total must equal a count of the cases it lists.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from typing import Any

import polars as pl
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from services.matcher.repository import insert_cases
from services.routing.admin import Recount, recount_cases
from services.routing.service import (
    CaseFilter,
    case_conditions,
    list_cases,
    list_parameters,
    list_shape,
    open_and_overdue,
)
from shared import migrate
from shared.auth import Principal
from shared.context import Context
from shared.db import unit_of_work
from shared.models import CASE_COUNT_KEY, Case, CaseCount, Team
from tests.helpers import finished_run
from tests.test_foreign_keys import _refused_while_held

TODAY = dt.date(2026, 11, 25)
ROUTES = (None, "sdv", "wijkteam", "budgetcoach")
STATUSES = ("open", "closed")
PERIODS = ("2026-10", "2026-11")
DUE = (None, dt.date(2026, 11, 20), dt.date(2026, 11, 25), dt.date(2026, 12, 1))


class Parents:
    """A run and two teams for the cases to refer to."""

    def __init__(self, ctx: Context) -> None:
        self.run_id = finished_run(ctx, "2026-11", TODAY)
        with unit_of_work(ctx.sessions) as session:
            teams = [Team(name="noord"), Team(name="zuid")]
            session.add_all(teams)
            session.flush()
            self.teams: tuple[uuid.UUID | None, ...] = (None, teams[0].id, teams[1].id)


# One case's key: indexes into ROUTES, teams, STATUSES, PERIODS, DUE.
keys = st.tuples(
    st.integers(0, len(ROUTES) - 1),
    st.integers(0, 2),
    st.integers(0, len(STATUSES) - 1),
    st.integers(0, len(PERIODS) - 1),
    st.integers(0, len(DUE) - 1),
)
operations = st.one_of(
    st.tuples(st.just("insert"), st.lists(keys, min_size=1, max_size=8)),
    st.tuples(st.just("copy"), st.lists(keys, min_size=1, max_size=8)),
    # which cases (by position, modulo how many there are), and what they become: any part of
    # the key changed, or (None) only a column outside the key
    st.tuples(st.just("update"), st.lists(st.integers(0, 50), max_size=6), st.none() | keys),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 50), max_size=6)),
)


def _values(parents: Parents, key: tuple[int, ...]) -> dict[str, Any]:
    route, team, status, period, due = key
    return {
        "route": ROUTES[route],
        "team_id": parents.teams[team],
        "status": STATUSES[status],
        "period": PERIODS[period],
        "due_date": DUE[due],
    }


def _new_case(parents: Parents, key: tuple[int, ...]) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "run_id": parents.run_id,
        "address_hash": uuid.uuid4().hex,
        "priority": 1,
        "classification": "meervoudig",
        "partner_count": 2,
        "signal_count": 2,
        "total_cent": 1000,
        "kinds": "huur,energie",
        "is_recidive": False,
        "has_rent": True,
        "has_crisis": False,
        "has_warm_handover": False,
        "known_to_sdv": False,
        "outside_areas": False,
        "created_at": dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
        **_values(parents, key),
    }


def _copy(session: Session, cases: list[dict[str, Any]]) -> None:
    """The monthly run's way in: ``COPY`` on PostgreSQL."""
    frame = pl.DataFrame(
        [
            {
                **case,
                "id": str(case["id"]),
                "run_id": str(case["run_id"]),
                "team_id": None if case["team_id"] is None else str(case["team_id"]),
            }
            for case in cases
        ]
    )
    insert_cases(session, frame)


def _apply(session: Session, parents: Parents, operation: tuple[Any, ...]) -> None:
    ids = session.scalars(sa.select(Case.id).order_by(Case.id)).all()
    kind = operation[0]
    if kind == "insert":
        session.execute(sa.insert(Case), [_new_case(parents, key) for key in operation[1]])
    elif kind == "copy":
        _copy(session, [_new_case(parents, key) for key in operation[1]])
    elif ids:
        chosen = {ids[i % len(ids)] for i in operation[1]}
        where = Case.id.in_(chosen)
        if kind == "delete":
            session.execute(sa.delete(Case).where(where))
        elif operation[2] is None:
            session.execute(sa.update(Case).where(where).values(priority=Case.priority + 1))
        else:
            session.execute(sa.update(Case).where(where).values(**_values(parents, operation[2])))


def _counted(session: Session) -> Counter[tuple[Any, ...]]:
    keys = [getattr(Case, column) for column in CASE_COUNT_KEY]
    return Counter(
        {
            tuple(r[:-1]): r[-1]
            for r in session.execute(sa.select(*keys, sa.func.count()).group_by(*keys))
        }
    )


def _stored(session: Session) -> list[tuple[tuple[Any, ...], int]]:
    keys = [getattr(CaseCount, column) for column in CASE_COUNT_KEY]
    return [(tuple(r[:-1]), r[-1]) for r in session.execute(sa.select(*keys, CaseCount.n))]


def assert_counts_agree(ctx: Context) -> None:
    with ctx.sessions() as session:
        stored = _stored(session)
        assert all(n > 0 for _, n in stored), "a key left at zero or below"
        assert len({key for key, _ in stored}) == len(stored), "a key stored twice"
        assert Counter(dict(stored)) == _counted(session)


PRINCIPALS = (
    Principal(uuid.uuid4(), "k", "coordinator"),
    Principal(uuid.uuid4(), "k", "sdv"),
    Principal(uuid.uuid4(), "k", "budgetcoach"),
    Principal(uuid.uuid4(), "k", "admin"),
)
FILTERS = (
    CaseFilter(),
    CaseFilter(status="open"),
    CaseFilter(route="wijkteam", period="2026-11"),
    CaseFilter(team="noord"),
    CaseFilter(overdue=True),
    CaseFilter(overdue=False, status="open"),
)


def assert_totals_are_counts(ctx: Context, parents: Parents) -> None:
    """Every list's total (the sum of counts) equals a count of the cases under its conditions,
    and so do the open and overdue figures per route."""
    team_members = [
        Principal(uuid.uuid4(), "k", "wijkteam", team_id=team) for team in parents.teams[1:]
    ]
    with ctx.sessions() as session:
        by_id = CaseFilter(team=str(parents.teams[2]), overdue=True)
        for principal in (*PRINCIPALS, *team_members):
            for filters in (*FILTERS, by_id):
                conditions = case_conditions(list_shape(principal, filters))
                expected = session.scalar(
                    sa.select(sa.func.count()).select_from(Case).where(*conditions),
                    list_parameters(principal, filters, TODAY),
                )
                for page in (1, 99):
                    found = list_cases(
                        session, principal, filters, today=TODAY, page=page, page_size=3
                    )
                    assert found.total == expected, (principal.role, filters, page)
        direct: dict[str, dict[str, int]] = {}
        for route, status, due_date in session.execute(
            sa.select(Case.route, Case.status, Case.due_date)
        ):
            if status == "open":
                figures = direct.setdefault(route or "unrouted", {"open": 0, "overdue": 0})
                figures["open"] += 1
                figures["overdue"] += due_date is not None and due_date < TODAY
        assert open_and_overdue(session, TODAY) == direct


transactions = st.lists(
    st.tuples(st.lists(operations, min_size=1, max_size=4), st.booleans()),
    min_size=1,
    max_size=5,
)


def test_counts_agree_with_the_cases_after_any_changes(ctx: Context) -> None:
    """Random transactions of inserts, copies, updates and deletes, committed or rolled back."""
    parents = Parents(ctx)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(transactions)
    def check(done: list[tuple[list[tuple[Any, ...]], bool]]) -> None:
        for steps, commit in done:
            with ctx.sessions() as session:
                for step in steps:
                    _apply(session, parents, step)
                if commit:
                    session.commit()
                else:
                    session.rollback()
            assert_counts_agree(ctx)
        assert_totals_are_counts(ctx, parents)
        with unit_of_work(ctx.sessions) as session:
            session.execute(sa.delete(Case))
        with ctx.sessions() as session:
            assert _stored(session) == []

    check()


def test_emptying_the_cases_empties_the_counts(ctx: Context) -> None:
    """``TRUNCATE`` on PostgreSQL; an unqualified ``DELETE`` on SQLite (which would otherwise
    empty the table without visiting its rows)."""
    parents = Parents(ctx)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.insert(Case), [_new_case(parents, (1, 0, 0, 1, 1)) for _ in range(3)])
    with ctx.sessions() as session:
        assert [n for _, n in _stored(session)] == [3]
    emptying = (
        "TRUNCATE cases CASCADE" if ctx.engine.dialect.name == "postgresql" else "DELETE FROM cases"
    )
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.text(emptying))
    with ctx.sessions() as session:
        assert _stored(session) == []


def test_two_transactions_changing_the_same_keys_at_once_both_count(ctx: Context) -> None:
    """Two writers move cases between the same two keys in opposite directions, at the same
    time, each in many small transactions: no update is lost and neither deadlocks."""
    parents = Parents(ctx)
    first, second = (1, 1, 0, 1, 1), (1, 1, 1, 1, 1)
    with unit_of_work(ctx.sessions) as session:
        cases = [_new_case(parents, first if i % 2 else second) for i in range(40)]
        session.execute(sa.insert(Case), cases)
    ids = [case["id"] for case in cases]
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(mine: list[uuid.UUID]) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(5):
                for case_id in mine:
                    with unit_of_work(ctx.sessions) as session:
                        status = session.scalar(sa.select(Case.status).where(Case.id == case_id))
                        flipped = "closed" if status == "open" else "open"
                        session.execute(
                            sa.update(Case).where(Case.id == case_id).values(status=flipped)
                        )
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(ids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    assert_counts_agree(ctx)


def test_the_migration_counts_the_cases_there_are(database_url: str, ctx: Context) -> None:
    parents = Parents(ctx)
    with unit_of_work(ctx.sessions) as session:
        session.execute(
            sa.insert(Case),
            [
                _new_case(parents, key)
                for key in [(0, 0, 0, 0, 0), (2, 1, 0, 1, 2), (2, 1, 0, 1, 2)]
            ],
        )
    migrate.downgrade(database_url, "0011")
    migrate.upgrade(database_url)
    assert_counts_agree(ctx)
    with ctx.sessions() as session:
        assert sorted(n for _, n in _stored(session)) == [1, 2]


def test_recount_repairs_counts_a_bulk_load_left_wrong(ctx: Context) -> None:
    parents = Parents(ctx)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.insert(Case), [_new_case(parents, (1, 0, 0, 1, 1)) for _ in range(3)])
        session.execute(sa.insert(Case), [_new_case(parents, (3, 0, 1, 0, 0))])
    with unit_of_work(ctx.sessions) as session:
        assert recount_cases(session).wrong == 0
        # as if a load had bypassed the triggers: one count wrong, one missing, one left over
        session.execute(sa.update(CaseCount).where(CaseCount.route == "sdv").values(n=7))
        session.execute(sa.delete(CaseCount).where(CaseCount.route == "budgetcoach"))
        session.add(
            CaseCount(
                route="wijkteam", team_id=None, status="open", period="2026-11", due_date=None, n=2
            )
        )
    with unit_of_work(ctx.sessions) as session:
        assert recount_cases(session) == Recount(keys=2, wrong=3)
    assert_counts_agree(ctx)
    with unit_of_work(ctx.sessions) as session:
        assert recount_cases(session) == Recount(keys=2, wrong=0)


def test_writes_to_cases_wait_while_a_recount_runs(ctx: Context, database_url: str) -> None:
    """No change to a case can fall between the recount's count and its rebuild."""
    parents = Parents(ctx)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.insert(Case), [_new_case(parents, (1, 0, 0, 1, 1))])
    with ctx.sessions() as recounting:
        recount_cases(recounting)
        _refused_while_held(database_url, sa.update(Case).values(status="closed"))
        recounting.commit()
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.update(Case).values(status="closed"))
    assert_counts_agree(ctx)
