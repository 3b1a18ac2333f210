"""The case list's items are the cases' list views, byte for byte, on each backend.

On PostgreSQL the database writes each item as JSON (``row_to_json``); elsewhere Python does
(:func:`services.routing.service.summary`). Either way a page must be exactly the JSON of
:func:`services.routing.service.case_summary` of the same cases in the same order, the renderer
every other endpoint uses: for random cases at every field's edges (no team, a team name that
needs escaping, one kind or none, no due date, overdue or not, a closing time with and without
microseconds, large amounts) and every page, the last one past the end included; unfiltered,
and filtered by status or by being overdue (which decides whether the open and the closed cases
are read apart and merged, whole rows for the first pages, keys first for later ones; a case
without a due date is not overdue).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.routing import service
from services.routing.service import (
    CaseFilter,
    case_summary,
    json_text,
    list_cases,
    team_names,
)
from shared.auth import Principal
from shared.context import Context
from shared.models import Case, Eindresultaat, Team
from tests.helpers import finished_run

TODAY = dt.date(2026, 11, 25)
COORDINATOR = Principal(uuid.uuid4(), "k", "coordinator")
KINDS = ("huur", "energie", "water", "zorg")

# Names a team may have in the database: any text but NUL (which PostgreSQL refuses), quotes,
# backslashes, control characters and non-ASCII letters included.
team_name = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=12,
)
moments = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2099, 12, 31),
    timezones=st.just(dt.UTC),
)
cases = st.fixed_dictionaries(
    {
        "period": st.sampled_from(("2026-10", "2026-11")),
        "status": st.sampled_from(("open", "closed")),
        "route": st.sampled_from((None, "sdv", "wijkteam", "budgetcoach")),
        "team": st.sampled_from((None, 0, 1)),
        "priority": st.integers(1, 4),
        "classification": st.sampled_from(("enkelvoudig", "meervoudig", "opeenvolgend")),
        "is_recidive": st.booleans(),
        "has_rent": st.booleans(),
        "has_crisis": st.booleans(),
        "has_warm_handover": st.booleans(),
        "known_to_sdv": st.booleans(),
        "outside_areas": st.booleans(),
        "partner_count": st.integers(0, 9),
        "signal_count": st.integers(0, 99),
        "total_cent": st.integers(0, 10**15),
        "kinds": st.lists(st.sampled_from(KINDS), max_size=4, unique=True).map(",".join),
        "pc4": st.none() | st.from_regex(r"\A[1-9][0-9]{3}\Z"),
        "due_date": st.none() | st.dates(dt.date(2026, 11, 20), dt.date(2026, 11, 30)),
        "resultaat": st.none() | st.sampled_from([e.value for e in Eindresultaat]),
        # whole seconds as well as microseconds: isoformat leaves ".000000" out
        "closed_at": st.none() | moments | moments.map(lambda m: m.replace(microsecond=0)),
    }
)


# The filters that decide which statuses' indexes a list reads (open and closed ones are read
# apart and merged when the list shows both).
FILTERS = (
    CaseFilter(),
    CaseFilter(status="open"),
    CaseFilter(status="closed"),
    CaseFilter(overdue=True),
    CaseFilter(overdue=False),
)


def shown(case: Case, filters: CaseFilter) -> bool:
    overdue = case.status == "open" and case.due_date is not None and case.due_date < TODAY
    if filters.status and case.status != filters.status:
        return False
    return filters.overdue is None or filters.overdue == overdue


def test_each_page_is_the_cases_list_views_in_order(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = finished_run(ctx, "2026-11", TODAY)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(cases, min_size=1, max_size=12),
        st.lists(team_name, min_size=2, max_size=2, unique_by=str.lower),
        st.integers(1, 5),
        st.sampled_from(FILTERS),
        st.sampled_from((0, 10_000)),
    )
    def check(
        drawn: list[dict[str, Any]],
        names: list[str],
        page_size: int,
        filters: CaseFilter,
        shallow_rows: int,
    ) -> None:
        # Every page read as a deep one (the keys first), or as one of the first pages.
        monkeypatch.setattr(service, "SHALLOW_ROWS", shallow_rows)
        with ctx.sessions() as session:  # never committed
            teams = [Team(name=name) for name in names]
            session.add_all(teams)
            session.flush()
            rows = [
                {
                    **{k: v for k, v in case.items() if k != "team"},
                    "id": uuid.uuid4(),
                    "run_id": run_id,
                    "address_hash": uuid.uuid4().hex,
                    "team_id": None if case["team"] is None else teams[case["team"]].id,
                    "created_at": ctx.now(),
                    "updated_at": ctx.now(),
                }
                for case in drawn
            ]
            session.execute(sa.insert(Case), rows)
            ordered = [
                case
                for case in session.scalars(
                    sa.select(Case).order_by(Case.priority, Case.due_date, Case.id)
                )
                if shown(case, filters)
            ]
            known = team_names(session)
            last = (len(ordered) - 1) // page_size + 1
            for page in range(1, last + 2):
                found = list_cases(
                    session, COORDINATOR, filters, today=TODAY, page=page, page_size=page_size
                )
                expected = ordered[(page - 1) * page_size : page * page_size]
                assert found.items_json == json_text(
                    [case_summary(c, known, TODAY) for c in expected]
                )
                assert found.total == len(ordered)
            session.rollback()

    check()
