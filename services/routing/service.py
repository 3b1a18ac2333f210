"""Routing at run time, and the work on a case: who sees it, contact attempts, transfer, closure.

* :func:`plan_routes` and :func:`mark_known_to_sdv` serve the monthly run, inside the run's
  transaction, for the cases it creates: the first applies :mod:`services.routing.rules` (the
  run inserts the cases with the result), the second marks the signals of households SDV
  already knows. A case's routing is kept on the case itself (route, team, ``routed_at``), so the
  run stores no event per case: the history shows the routing first, as
  :func:`routing_event` derives it (a transfer or closure keeps where the case came from).
* Visibility: the coordinator sees every case; SDV the cases routed to SDV; the budget coach its
  own; a wijkteam member only its own team's. Any other case id answers 404 (never "forbidden",
  which would confirm that the case exists).
* The outreach protocol of the pilot: a case may close as "Definitief geen contact kunnen krijgen"
  only after at least two home visits on different days or day-parts **and** two phone calls.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import polars as pl
from sqlalchemy import (
    JSON,
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    Text,
    bindparam,
    delete,
    false,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy import case as sql_case
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.orm import Session, aliased

from services.routing.rules import AreaMap, RoutingConfig, route
from shared.address import address_key_expr, house_number_parts, normalised_postcode, valid_postcode
from shared.auth import Principal
from shared.bulk import insert_frame
from shared.context import Context
from shared.crypto import signal_aad
from shared.errors import Conflict, NotFound, RowProblem, ValidationFailed
from shared.models import (
    Case,
    CaseCount,
    CaseEvent,
    CaseLink,
    CaseSignal,
    CaseStatus,
    ContactAttempt,
    Contactsoort,
    Dagdeel,
    Eindresultaat,
    Partner,
    Role,
    Route,
    Run,
    SdvClient,
    Signaalstatus,
    Signal,
    SignalState,
    Team,
    TeamArea,
    signal_status,
)
from shared.periods import local_today
from shared.person import person_key_expr
from shared.signal_states import set_status_of_cases

CASE_READERS = (Role.sdv, Role.wijkteam, Role.budgetcoach, Role.coordinator)
NO_CONTACT = Eindresultaat.geen_contact.value
SIGNAL_STATUS_VALUES = {s.value for s in Signaalstatus}
# What the case lists' conditions are written on: the cases, or their counts.
CaseKeys = type[Case] | type[CaseCount]


# --- routing a run's new cases ----------------------------------------------------------------- -


def area_map(session: Session, ctx: Context) -> AreaMap:
    """The teams' areas; PC6 entries are hashed with the address key, like the signals' PC6."""
    areas = session.execute(
        select(TeamArea.team_id, TeamArea.pc4_from, TeamArea.pc4_to, TeamArea.pc6)
    )
    ranges: list[tuple[str, str, str]] = []
    pc6s: list[tuple[str, str]] = []
    for team_id, low, high, pc6 in areas:
        if pc6:
            pc6s.append((str(team_id), ctx.hasher.hash("pc6", pc6)))
        elif low and high:
            ranges.append((str(team_id), low, high))
    default = session.scalar(select(Team.id).where(Team.is_default.is_(True)))
    return AreaMap.build(ranges, pc6s, str(default) if default else None)


def sdv_register(session: Session) -> tuple[pl.Series, pl.Series]:
    rows = session.execute(select(SdvClient.address_hash, SdvClient.person_hash)).all()
    addresses = pl.Series("address_hash", [r.address_hash for r in rows], dtype=pl.String)
    persons = pl.Series(
        "person_hash", [r.person_hash for r in rows if r.person_hash], dtype=pl.String
    )
    return addresses, persons


ROUTED_COLUMNS = ("route", "team_id", "known_to_sdv", "outside_areas", "due_date")


def plan_routes(session: Session, ctx: Context, run: Run, cases: pl.DataFrame) -> pl.DataFrame:
    """Where each of ``cases`` (new cases of ``run``) goes: ``case_id`` and ``ROUTED_COLUMNS``.

    Nothing is written: the monthly run puts these columns into the cases as it inserts them,
    so a million-signal month does not update every new case a second time.
    """
    if cases.is_empty():
        return pl.DataFrame()
    addresses, persons = sdv_register(session)
    config = RoutingConfig(
        run_date=run.run_date,
        due_days=ctx.settings.due_days,
        crisis_due_working_days=ctx.settings.crisis_due_working_days,
    )
    return route(
        cases,
        sdv_addresses=addresses,
        sdv_persons=persons,
        areas=area_map(session, ctx),
        config=config,
    )


def mark_known_to_sdv(session: Session, routed: pl.DataFrame) -> None:
    """Mark the signals of new cases whose household SDV already knows (``routed`` from
    :func:`plan_routes`). The cases' signals must be linked (``case_signals``) first.

    The routing itself is on the cases, written with them: no event is stored per case (at
    national scale that was a quarter of a million rows a month, 1.5 to 1.6 s of the run); the
    case's history derives it (:func:`routing_event`).
    """
    if routed.is_empty():
        return
    known = routed.filter("known_to_sdv")["case_id"].to_list()
    if known:
        set_status_of_cases(
            session,
            [uuid.UUID(c) for c in known],
            Signaalstatus.bekend_bij_shv.value,
        )


def restore_case_statuses(
    session: Session, cases: pl.DataFrame, run_statuses: Iterable[str]
) -> None:
    """After a rerun rewrote the statuses of the period's signals: give the signals of the
    period's remaining earlier ``cases`` back what those cases record, as the first run and the
    teams' work gave it, in the same order (``cases``: case_id, known_to_sdv, attempted, and
    resultaat when closed, from :func:`services.matcher.repository.existing_cases`):

    * a case whose household SDV already knows: its signals are "Inwoner al bekend bij
      schuldhulpverlening" (:func:`mark_known_to_sdv`);
    * a case with a contact attempt: its signals that carry a status a run gives
      (``run_statuses``) are "Opgepakt" (:func:`add_contact_attempt`);
    * a closed case: its signals carry its closure's status (:func:`close_case`).

    This holds for a signal the partner added since, and for one the rerun set aside while it
    kept the case because somebody had worked on it. Only those cases' signals are written.
    """

    def ids(frame: pl.DataFrame) -> list[uuid.UUID]:
        return [uuid.UUID(c) for c in frame["case_id"]]

    set_status_of_cases(
        session, ids(cases.filter("known_to_sdv")), Signaalstatus.bekend_bij_shv.value
    )
    opgepakt, only = Signaalstatus.opgepakt.value, sorted(run_statuses)
    set_status_of_cases(session, ids(cases.filter("attempted")), opgepakt, only=only)
    closed = cases.filter(pl.col("resultaat").is_not_null())
    for (resultaat,), group in sorted(closed.group_by("resultaat"), key=lambda g: str(g[0])):
        set_status_of_cases(session, ids(group), closure_status(str(resultaat)))


# --- the SDV client register ---------------------------------------------------------------------


def register_hashes(
    ctx: Context, entries: Sequence[dict[str, Any]]
) -> tuple[pl.DataFrame, list[RowProblem]]:
    """Keyed hashes (address_hash, person_hash) for register entries, and the entries' problems."""
    frame = pl.DataFrame(
        [
            {
                "postcode": _text(e.get("postcode")),
                "huisnummer": _text(e.get("huisnummer")),
                "huisletter": _text(e.get("huisletter")),
                "toevoeging": _text(e.get("huisnummertoevoeging")),
                "achternaam": _text(e.get("achternaam")),
                "geboortedatum": _text(e.get("geboortedatum")),
            }
            for e in entries
        ],
        schema=dict.fromkeys(
            ("postcode", "huisnummer", "huisletter", "toevoeging", "achternaam", "geboortedatum"),
            pl.String,
        ),
    )
    number, suffix = house_number_parts(
        pl.col("huisnummer"), pl.col("huisletter"), pl.col("toevoeging")
    )
    birth = pl.col("geboortedatum").str.to_date("%Y-%m-%d", strict=False)
    keyed = frame.with_row_index("row", offset=1).select(
        "row",
        normalised_postcode(pl.col("postcode")).alias("pc"),
        number.alias("number"),
        suffix.alias("suffix"),
        birth.alias("birth"),
        pl.col("geboortedatum").is_not_null().alias("birth_given"),
        person_key_expr(pl.col("achternaam"), birth).alias("person_key"),
    )
    keyed = keyed.with_columns(
        address_key_expr(pl.col("pc"), pl.col("number"), pl.col("suffix")).alias("address_key"),
        valid_postcode(pl.col("pc")).fill_null(False).alias("pc_ok"),
    )
    problems: list[RowProblem] = []
    for row, pc_ok, number_value, birth_value, birth_given in keyed.select(
        "row", "pc_ok", "number", "birth", "birth_given"
    ).iter_rows():
        if not pc_ok:
            problems.append(RowProblem(row, "postcode", "not a Dutch postcode"))
        if number_value is None:
            problems.append(RowProblem(row, "huisnummer", "not a house number"))
        if birth_given and birth_value is None:
            problems.append(RowProblem(row, "geboortedatum", "not a date (use 1980-05-31)"))
    hashes = pl.DataFrame(
        {
            "address_hash": ctx.hasher.hash_column("address", keyed["address_key"]),
            "person_hash": ctx.hasher.hash_column("person", keyed["person_key"]),
        },
        schema={"address_hash": pl.String, "person_hash": pl.String},
    ).with_columns(pl.col("person_hash").fill_null(""))
    return hashes.unique(maintain_order=True), problems


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _register_or_fail(ctx: Context, entries: Sequence[dict[str, Any]]) -> pl.DataFrame:
    hashes, problems = register_hashes(ctx, entries)
    if problems:
        raise ValidationFailed(
            f"{len(problems)} problem(s) in the register entries; nothing was changed",
            problems[: ctx.settings.max_reported_errors],
            total=len(problems),
        )
    return hashes


def replace_register(
    session: Session, ctx: Context, entries: Sequence[dict[str, Any]], now: datetime
) -> int:
    """Replace the whole SDV register (as SDV's own system exports it); all or nothing."""
    hashes = _register_or_fail(ctx, entries)
    session.execute(delete(SdvClient))
    insert_frame(
        session,
        cast(Table, SdvClient.__table__),
        hashes.with_columns(pl.lit(now).alias("created_at")),
    )
    return hashes.height


def add_to_register(session: Session, ctx: Context, entry: dict[str, Any], now: datetime) -> bool:
    """Add one household; False when it was registered already."""
    row = _register_or_fail(ctx, [entry]).row(0, named=True)
    exists = session.scalar(
        select(SdvClient.id).where(
            SdvClient.address_hash == row["address_hash"],
            SdvClient.person_hash == row["person_hash"],
        )
    )
    if exists is not None:
        return False
    session.add(SdvClient(**row, created_at=now))
    session.flush()
    return True


def remove_from_register(session: Session, ctx: Context, entry: dict[str, Any]) -> int:
    """Remove a household: every entry for the address (and for the person, when given)."""
    row = _register_or_fail(ctx, [entry]).row(0, named=True)
    query = delete(SdvClient).where(SdvClient.address_hash == row["address_hash"])
    if row["person_hash"]:
        query = query.where(SdvClient.person_hash == row["person_hash"])
    result = session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)


def register_size(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(SdvClient)) or 0)


# --- visibility ----------------------------------------------------------------------------------


def visibility(principal: Principal, cases: CaseKeys = Case) -> list[ColumnElement[bool]]:
    """The conditions on ``cases`` (or on the case counts) that keep to what ``principal`` may
    see."""
    return role_visibility(principal.role, principal.team_id, cases)


def role_visibility(
    role: str, team: uuid.UUID | ColumnElement[Any] | None, cases: CaseKeys = Case
) -> list[ColumnElement[bool]]:
    """What a role may see; ``team`` is a wijkteam member's team (a value or a bound parameter;
    every wijkteam member has one)."""
    if role == Role.coordinator:
        return []
    if role == Role.wijkteam:
        return [cases.route == Route.wijkteam.value, cases.team_id == team]
    if role in (Role.sdv, Role.budgetcoach):
        return [cases.route == role]
    return [false()]  # no case for any other role


def visible_cases(principal: Principal) -> Select[Case]:
    """The cases ``principal`` may see, as a query to filter further."""
    return select(Case).where(*visibility(principal))


def case_for(session: Session, principal: Principal, case_id: uuid.UUID) -> Case:
    case = session.scalar(visible_cases(principal).where(Case.id == case_id))
    if case is None:
        raise NotFound("no such case")
    return case


def is_overdue(status: str, due_date: date | None, today: date) -> bool:
    return status == CaseStatus.open and due_date is not None and due_date < today


@dataclass(frozen=True)
class CaseFilter:
    status: str | None = None
    route: str | None = None
    team: str | None = None
    overdue: bool | None = None
    period: str | None = None


# The list view's columns (no personal data: PC4 only), in the order :func:`summary` unpacks them.
SUMMARY_COLUMNS = (
    Case.id,
    Case.period,
    Case.status,
    Case.route,
    Case.team_id,
    Case.priority,
    Case.classification,
    Case.is_recidive,
    Case.has_rent,
    Case.has_crisis,
    Case.has_warm_handover,
    Case.known_to_sdv,
    Case.outside_areas,
    Case.partner_count,
    Case.signal_count,
    Case.total_cent,
    Case.kinds,
    Case.pc4,
    Case.due_date,
    Case.resultaat,
    Case.closed_at,
)
SUMMARY_WIDTH = len(SUMMARY_COLUMNS)


@dataclass(frozen=True)
class CasePage:
    """A page of list views as a JSON array (text, ready to send), and the total."""

    items_json: str
    total: int


@dataclass(frozen=True, slots=True)
class ListShape:
    """What a case list's statement depends on apart from values: the caller's role and which
    filters are set (and how the team is named). The values (the caller's team, the filters'
    values, today, the page) are bound when the statement runs."""

    role: str
    # The status filter's value itself: it decides which indexes the list reads (one pair per
    # status, see list_statuses), so it is written into the statement, never bound.
    status: str | None = None
    route: bool = False
    team: str | None = None  # "id" (a UUID, which may also be a team's name) or "name"
    period: bool = False
    overdue: bool | None = None


def _team_id(team: str) -> uuid.UUID | None:
    """The team filter as an id, when it is written as one."""
    try:
        return uuid.UUID(team)
    except ValueError:
        return None


def list_shape(principal: Principal, filters: CaseFilter) -> ListShape:
    team = None
    if filters.team:
        team = "id" if _team_id(filters.team) else "name"
    return ListShape(
        principal.role,
        status=CaseStatus(filters.status).value if filters.status else None,
        route=bool(filters.route),
        team=team,
        period=bool(filters.period),
        overdue=filters.overdue,
    )


def list_parameters(principal: Principal, filters: CaseFilter, today: date) -> dict[str, Any]:
    """The values for the bound parameters of :func:`case_conditions`."""
    values: dict[str, Any] = {"today": today}
    if principal.role == Role.wijkteam:
        values["viewer_team"] = principal.team_id
    if filters.route:
        values["route"] = filters.route
    if filters.team:
        values["team_name"] = filters.team.strip().lower()
        values["team_id"] = _team_id(filters.team)
    if filters.period:
        values["period"] = filters.period
    return values


def case_conditions(shape: ListShape, cases: CaseKeys = Case) -> list[ColumnElement[bool]]:
    """Visibility and the filters, as conditions on ``cases`` or, in the same words, on the case
    counts: only the columns the two share (route, team, status, period, due date). Values are
    bound parameters (:func:`list_parameters`)."""
    viewer_team = bindparam("viewer_team", type_=cases.team_id.type)
    conditions = role_visibility(shape.role, viewer_team, cases)
    if shape.status:
        conditions.append(cases.status == status_literal(shape.status))
    if shape.route:
        conditions.append(cases.route == bindparam("route", type_=cases.route.type))
    if shape.team:
        named = (
            select(Team.id)
            .where(Team.name == bindparam("team_name", type_=Team.name.type))
            .correlate(None)
        )
        by_name = cases.team_id.in_(named)
        conditions.append(
            (cases.team_id == bindparam("team_id", type_=cases.team_id.type)) | by_name
            if shape.team == "id"
            else by_name
        )
    if shape.period:
        conditions.append(cases.period == bindparam("period", type_=cases.period.type))
    if shape.overdue is not None:
        late = overdue_condition(cases)
        conditions.append(late if shape.overdue else ~late)
    return conditions


def overdue_condition(cases: Any) -> ColumnElement[bool]:
    """A case (of ``cases``: the table, a page of it or the case counts) open and past its due
    date (``today`` bound), as :func:`is_overdue` says in Python. Never NULL (a case without a
    due date is not overdue), so that its negation holds exactly the cases it leaves out; the
    list filter and the list view's ``overdue`` are this one test."""
    late: ColumnElement[bool] = (
        (cases.status == CaseStatus.open.value)
        & cases.due_date.is_not(None)
        & (cases.due_date < bindparam("today", type_=cases.due_date.type))
    )
    return late


# The list's order: most urgent first, then the earliest due date; the id makes it total.
PAGE_ORDER = (Case.priority, Case.due_date, Case.id)


def status_literal(status: str) -> ColumnElement[str]:
    """A case status written into a statement as a constant (a known status only), so that the
    plan of every statement with it, a generic one included, may use the indexes of that status
    (``ix_cases_queue_<status>``, ``ix_cases_order_<status>``; migration 0015)."""
    return literal_column(f"'{CaseStatus(status).value}'", String)


def list_statuses(shape: ListShape) -> tuple[str, ...]:
    """The statuses whose indexes a list of this shape reads: the filter's, only the open ones
    for the overdue cases (a closed case is never overdue), else both."""
    if shape.status:
        return (shape.status,)
    if shape.overdue:
        return (CaseStatus.open.value,)
    return (CaseStatus.open.value, CaseStatus.closed.value)


def _utc_text(column: Any) -> ColumnElement[str]:
    """A timestamp as :meth:`datetime.isoformat` writes a UTC one (PostgreSQL): seconds, the
    microseconds unless they are zero, ``+00:00``; NULL stays NULL."""
    utc = func.timezone("UTC", column)
    fraction = sql_case((func.date_trunc("second", utc) == utc, ""), else_=func.to_char(utc, ".US"))
    return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS') + fraction + "+00:00"


def _json_items(shape: ListShape, *, deep: bool) -> Select[Any]:
    """PostgreSQL writes each list view as JSON text (``row_to_json``), the same document as
    :func:`summary` makes; the page's order is kept outside the subquery too."""
    page = _page(_json_columns, shape, deep=deep).subquery("page")
    return select(sql_cast(func.row_to_json(page.table_valued()), Text).label("item")).order_by(
        *(page.c[column.key] for column in PAGE_ORDER)
    )


def _json_columns(cases: Any) -> list[Any]:
    """The list view's values (of the cases, or of a page of them) for :func:`row_to_json`, keys
    and order as in :func:`summary`."""
    # Written out, because json_build_object puts spaces around its colons; NULL without a team.
    team = sql_cast(
        literal('{"id":"')
        + sql_cast(cases.team_id, Text)
        + '","name":'
        + sql_cast(func.to_json(Team.name), Text)
        + "}",
        JSON,
    )
    kinds = func.coalesce(
        func.string_to_array(cases.kinds, ","), sql_cast(array([], type_=Text), ARRAY(Text))
    )
    columns: dict[str, Any] = {  # the keys and their order as in summary()
        "id": cases.id,
        "period": cases.period,
        "status": cases.status,
        "route": cases.route,
        "team": team,
        "priority": cases.priority,
        "classification": cases.classification,
        "is_recidive": cases.is_recidive,
        "has_rent": cases.has_rent,
        "has_crisis": cases.has_crisis,
        "has_warm_handover": cases.has_warm_handover,
        "known_to_sdv": cases.known_to_sdv,
        "outside_areas": cases.outside_areas,
        "partner_count": cases.partner_count,
        "signal_count": cases.signal_count,
        "total_cent": cases.total_cent,
        "kinds": kinds,
        "pc4": cases.pc4,
        "due_date": cases.due_date,
        "overdue": overdue_condition(cases),
        "resultaat": cases.resultaat,
        "closed_at": _utc_text(cases.closed_at),
    }
    return [value.label(name) for name, value in columns.items()]


def _summary_columns(cases: Any) -> list[Any]:
    """:data:`SUMMARY_COLUMNS` and the team's name, of the cases or of a page of them."""
    return [*(getattr(cases, c.key) for c in SUMMARY_COLUMNS), Team.name.label("team_name")]


# Up to this many rows before a page's end, a list of both statuses takes the whole rows from each
# side; past it, only their keys, then the page's rows by id (see _page).
SHALLOW_ROWS = 200


def _page(columns: Callable[[Any], list[Any]], shape: ListShape, *, deep: bool) -> Select[Any]:
    """One page of the cases a list of ``shape`` shows, in the list's order, with each case's
    team (``columns`` of the cases); offset and limit bound when it runs.

    A list of one status reads that status's cases in order. A list of both takes, from each
    status's cases in order, as many as the pages up to this one hold, merges the two and keeps
    this page: each side reads an index of its own, and the page is the same as one read of all
    cases in order would give. For the first pages the sides bring whole rows; for a ``deep`` one
    (more than :data:`SHALLOW_ROWS` rows up to its end) only their keys, read from the indexes
    alone, and then the page's rows by id.
    """
    conditions = case_conditions(shape)
    offset, limit = bindparam("offset", type_=Integer), bindparam("limit", type_=Integer)
    statuses = list_statuses(shape)
    if len(statuses) == 1:
        if not shape.status:  # the filter's own condition names it already
            conditions.append(Case.status == status_literal(statuses[0]))
        return (
            select(*columns(Case))
            .outerjoin(Team, Team.id == Case.team_id)
            .where(*conditions)
            .order_by(*PAGE_ORDER)
            .offset(offset)
            .limit(limit)
        )
    sides = [
        select(*(PAGE_ORDER if deep else [Case]))
        .where(*conditions, Case.status == status_literal(status))
        .order_by(*PAGE_ORDER)
        .limit(offset + limit)
        .subquery(f"side_{status}")
        for status in statuses
    ]
    merged = union_all(*(select(side) for side in sides)).subquery("sides")
    if not deep:
        cases = aliased(Case, merged)
        order = (cases.priority, cases.due_date, cases.id)
        return (
            select(*columns(cases))
            .outerjoin(Team, Team.id == cases.team_id)
            .order_by(*order)
            .offset(offset)
            .limit(limit)
        )
    page_keys = (
        select(merged.c.id)
        .order_by(merged.c.priority, merged.c.due_date, merged.c.id)
        .offset(offset)
        .limit(limit)
        .subquery("page_keys")
    )
    return (
        select(*columns(Case))
        .join(page_keys, page_keys.c.id == Case.id)
        .outerjoin(Team, Team.id == Case.team_id)
        .order_by(*PAGE_ORDER)
    )


@functools.lru_cache(maxsize=1024)
def list_statements(
    shape: ListShape, json_items: bool, deep: bool = False
) -> tuple[Select[Any], Select[Any]]:
    """The page (with its total) and the total alone, for a list of this shape; with
    ``json_items`` (PostgreSQL) each row is the case's list view as JSON text; ``deep`` for a
    page that ends more than :data:`SHALLOW_ROWS` rows into the list (see :func:`_page`).

    Built once per shape and kept: a statement object remembers its cache key, so running it
    again costs neither building nor keying the statement (about half a millisecond of CPU per
    request, the list being the most frequent call). At most 4 roles × 3 statuses × 2 × 3 × 2 × 3
    shapes, each first or deep, on one backend: 864 statements.
    """
    total = (
        select(func.coalesce(func.sum(CaseCount.n), 0))
        .where(*case_conditions(shape, CaseCount))
        .correlate(None)
        .scalar_subquery()
    )
    if json_items:
        page = _json_items(shape, deep=deep).add_columns(total.label("total"))
    else:
        page = _page(_summary_columns, shape, deep=deep).add_columns(total.label("total"))
    return page, select(total)


def list_cases(
    session: Session,
    principal: Principal,
    filters: CaseFilter,
    *,
    today: date,
    page: int,
    page_size: int,
) -> CasePage:
    """A page of visible cases (priority, then due date) as list views, and the total.

    Only the list view's columns are read, with each case's team name joined in. On PostgreSQL
    the database writes each list view as JSON (the list is the most frequent call, and turning
    rows into JSON was most of its CPU); elsewhere :func:`summary` does, from plain rows. The
    total comes with the page, in the same statement (one snapshot: the total is that of the
    cases the page was taken from), as the sum of the case counts under the same conditions
    (:class:`shared.models.CaseCount`), not a count of the cases. The statements run on the
    session's connection, not through the ORM's execution: their rows are plain columns (see
    :func:`shared.auth.authenticate` for what that saves).
    """
    json_items = session.get_bind().dialect.name == "postgresql"
    deep = page * page_size > SHALLOW_ROWS
    page_statement, total_statement = list_statements(
        list_shape(principal, filters), json_items, deep
    )
    values = list_parameters(principal, filters, today)
    rows = (
        session.connection()
        .execute(page_statement, {**values, "offset": (page - 1) * page_size, "limit": page_size})
        .all()
    )
    if json_items:
        items_json = "[" + ",".join(row.item for row in rows) + "]"
    else:
        items_json = json_text([summary(row, row.team_name, today) for row in rows])
    if rows:
        return CasePage(items_json, int(rows[0].total))
    total = 0 if page == 1 else int(session.connection().scalar(total_statement, values) or 0)
    return CasePage(items_json, total)


def json_text(doc: object) -> str:
    """Compact JSON, as FastAPI would send it (no spaces, non-ASCII as is)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


# --- the case in full ----------------------------------------------------------------------------


def case_detail(session: Session, ctx: Context, case: Case) -> dict[str, Any]:
    """Everything about a case, decrypted: address, persons, signals, history, attempts."""
    rows = session.execute(
        select(Signal, Partner.name, signal_status())
        .join(CaseSignal, CaseSignal.signal_id == Signal.id)
        .join(Partner, Partner.id == Signal.partner_id)
        .outerjoin(SignalState, SignalState.signal_id == Signal.id)
        .where(CaseSignal.case_id == case.id)
        .order_by(Signal.id)
    ).all()
    signals: list[dict[str, Any]] = []
    persons: dict[tuple[Any, ...], dict[str, Any]] = {}
    address: dict[str, Any] | None = None
    for signal, partner_name, status in rows:
        pii: dict[str, Any] = {}
        if signal.pii is not None and signal.pii_key_id is not None:
            pii = ctx.cipher.decrypt_json(
                signal.pii,
                signal_aad(str(signal.delivery_id), signal.row_number),
                signal.pii_key_id,
            )
        if address is None and pii:
            address = {
                k: pii.get(k)
                for k in ("straat", "huisnummer", "huisnummer_suffix", "postcode", "woonplaats")
            }
        if pii:
            person = {
                k: pii.get(k)
                for k in (
                    "voorletters",
                    "tussenvoegsel",
                    "achternaam",
                    "geboortedatum",
                    "telefoon",
                    "email",
                )
            }
            persons.setdefault(
                (person["achternaam"], person["voorletters"], person["geboortedatum"]), person
            )
        signals.append(
            {
                "id": signal.id,
                "partner": {"id": str(signal.partner_id), "name": partner_name},
                "kind": signal.kind,
                "bedrag_cent": signal.bedrag_cent,
                "achterstand_sinds": signal.achterstand_sinds.isoformat(),
                "signaaldatum": signal.signaaldatum.isoformat(),
                "crisis": signal.crisis,
                "warme_overdracht": signal.warme_overdracht,
                "eindelevering": signal.eindelevering,
                "status": status,
                "referentie": pii.get("referentie"),
            }
        )
    earlier = session.execute(
        select(Case.id, Case.period, Case.status, Case.resultaat, Case.route)
        .join(CaseLink, CaseLink.earlier_case_id == Case.id)
        .where(CaseLink.case_id == case.id)
        .order_by(Case.period)
    ).all()
    attempts = session.scalars(
        select(ContactAttempt)
        .where(ContactAttempt.case_id == case.id)
        .order_by(ContactAttempt.datum, ContactAttempt.created_at)
    ).all()
    events = session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
    ).all()
    teams = team_names(session)
    return {
        **case_summary(case, teams, local_today(ctx.now(), ctx.tz)),
        "address": address,
        "persons": list(persons.values()),
        "signals": signals,
        "recidive": [
            {
                "case_id": str(e.id),
                "period": e.period,
                "status": e.status,
                "route": e.route,
                "resultaat": e.resultaat,
            }
            for e in earlier
        ],
        "signalled_before": case.signalled_periods.split(",") if case.signalled_periods else [],
        "contact_attempts": [attempt_dict(ctx, a) for a in attempts],
        "history": [
            *routing_event(case, events, teams),
            *(event_dict(ctx, e, teams) for e in events),
        ],
    }


def case_summary(case: Case, teams: dict[uuid.UUID, str], today: date) -> dict[str, Any]:
    """The list view of a case: no personal data (PC4 only)."""
    values = [getattr(case, column.key) for column in SUMMARY_COLUMNS]
    return summary(values, teams.get(case.team_id) if case.team_id else None, today)


def summary(values: Sequence[Any], team_name: str | None, today: date) -> dict[str, Any]:
    """The list view of a case from the values of :data:`SUMMARY_COLUMNS`, in their order (a row
    unpacks many times faster than its attributes are read by name)."""
    (
        case_id,
        period,
        status,
        route,
        team_id,
        priority,
        classification,
        is_recidive,
        has_rent,
        has_crisis,
        has_warm_handover,
        known_to_sdv,
        outside_areas,
        partner_count,
        signal_count,
        total_cent,
        kinds,
        pc4,
        due_date,
        resultaat,
        closed_at,
    ) = values[:SUMMARY_WIDTH]
    return {
        "id": str(case_id),
        "period": period,
        "status": status,
        "route": route,
        "team": {"id": str(team_id), "name": team_name} if team_id else None,
        "priority": priority,
        "classification": classification,
        "is_recidive": is_recidive,
        "has_rent": has_rent,
        "has_crisis": has_crisis,
        "has_warm_handover": has_warm_handover,
        "known_to_sdv": known_to_sdv,
        "outside_areas": outside_areas,
        "partner_count": partner_count,
        "signal_count": signal_count,
        "total_cent": total_cent,
        "kinds": kinds.split(",") if kinds else [],
        "pc4": pc4,
        "due_date": due_date.isoformat() if due_date else None,
        "overdue": is_overdue(status, due_date, today),
        "resultaat": resultaat,
        "closed_at": closed_at.isoformat() if closed_at else None,
    }


def contact_note_aad(attempt_id: object) -> bytes:
    """Associated data binding a contact attempt's note to the attempt."""
    return f"contact:{attempt_id}".encode()


def transfer_reason_aad(case_id: object, at: datetime) -> bytes:
    """Associated data binding a transfer's reason to its case and moment."""
    return f"case-event:{case_id}:{at.isoformat()}".encode()


def attempt_dict(ctx: Context, attempt: ContactAttempt) -> dict[str, Any]:
    note = None
    if attempt.notitie is not None and attempt.notitie_key_id is not None:
        note = ctx.cipher.decrypt(
            attempt.notitie, contact_note_aad(attempt.id), attempt.notitie_key_id
        ).decode()
    return {
        "id": str(attempt.id),
        "soort": attempt.soort,
        "datum": attempt.datum.isoformat(),
        "dagdeel": attempt.dagdeel,
        "bereikt": attempt.bereikt,
        "notitie": note,
        "staff_id": str(attempt.staff_id) if attempt.staff_id else None,
        "created_at": attempt.created_at.isoformat(),
    }


def routing_event(
    case: Case, events: Sequence[CaseEvent], teams: dict[uuid.UUID, str]
) -> list[dict[str, Any]]:
    """The run's routing of the case, first in its history, derived from the case: where the run
    sent it is where the first later event (a transfer, a closure) found it, or, with none, where
    it is. Empty when a ``routed`` event is stored (cases routed before the run stopped storing
    one) or the case was never routed.
    """
    if case.routed_at is None or any(e.kind == "routed" for e in events):
        return []
    first = next((e for e in events if e.from_route is not None), None)
    route, team_id = (first.from_route, first.from_team_id) if first else (case.route, case.team_id)
    return [
        {
            "at": case.routed_at.isoformat(),
            "kind": "routed",
            "from_route": None,
            "from_team": None,
            "to_route": route,
            "to_team": teams.get(team_id) if team_id else None,
            "reason": None,
            "staff_id": None,
        }
    ]


def event_dict(ctx: Context, event: CaseEvent, teams: dict[uuid.UUID, str]) -> dict[str, Any]:
    reason = None
    if event.reason is not None and event.reason_key_id is not None:
        reason = ctx.cipher.decrypt(
            event.reason,
            transfer_reason_aad(event.case_id, event.at),
            event.reason_key_id,
        ).decode()
    return {
        "at": event.at.isoformat(),
        "kind": event.kind,
        "from_route": event.from_route,
        "from_team": teams.get(event.from_team_id) if event.from_team_id else None,
        "to_route": event.to_route,
        "to_team": teams.get(event.to_team_id) if event.to_team_id else None,
        "reason": reason,
        "staff_id": str(event.staff_id) if event.staff_id else None,
    }


# --- work on a case ------------------------------------------------------------------------------


def _require_open(case: Case) -> None:
    if case.status != CaseStatus.open:
        raise Conflict("the case is closed", case_status=case.status)


def add_contact_attempt(
    session: Session,
    ctx: Context,
    principal: Principal,
    case: Case,
    *,
    soort: Contactsoort,
    datum: date,
    dagdeel: Dagdeel | None,
    bereikt: bool,
    notitie: str | None,
) -> ContactAttempt:
    _require_open(case)
    today = local_today(ctx.now(), ctx.tz)
    if datum > today:
        raise ValidationFailed(
            "a contact attempt cannot lie in the future",
            [RowProblem(1, "datum", "after today")],
        )
    attempt_id = uuid.uuid4()
    attempt = ContactAttempt(
        id=attempt_id,
        case_id=case.id,
        soort=soort.value,
        datum=datum,
        dagdeel=dagdeel.value if dagdeel else None,
        bereikt=bereikt,
        staff_id=principal.staff_id,
        created_at=ctx.now(),
    )
    if notitie:
        attempt.notitie = ctx.cipher.encrypt(notitie.encode(), contact_note_aad(attempt_id))
        attempt.notitie_key_id = ctx.cipher.active_key_id
    session.add(attempt)
    case.updated_at = ctx.now()
    # The signals are now picked up ("Opgepakt"), unless they carry a more specific status.
    set_status_of_cases(
        session,
        [case.id],
        Signaalstatus.opgepakt.value,
        only=[Signaalstatus.nog_niet_opgepakt.value],
    )
    session.flush()
    return attempt


def transfer(
    session: Session,
    ctx: Context,
    principal: Principal,
    case: Case,
    *,
    to_route: Route,
    team: str | None,
    reason: str,
) -> CaseEvent:
    """Hand the case to another route or team (warm handover); the history keeps where it was."""
    from services.routing.admin import find_team

    _require_open(case)
    if to_route is Route.wijkteam and not team:
        raise ValidationFailed("a transfer to the wijkteam route names the team")
    if to_route is not Route.wijkteam and team:
        raise ValidationFailed("only the wijkteam route takes a team")
    team_id = find_team(session, team).id if team else None
    if case.route == to_route.value and case.team_id == team_id:
        raise Conflict("the case is there already")
    now = ctx.now()
    event = CaseEvent(
        case_id=case.id,
        at=now,
        kind="transfer",
        from_route=case.route,
        from_team_id=case.team_id,
        to_route=to_route.value,
        to_team_id=team_id,
        staff_id=principal.staff_id,
    )
    event.reason = ctx.cipher.encrypt(reason.encode(), transfer_reason_aad(case.id, now))
    event.reason_key_id = ctx.cipher.active_key_id
    session.add(event)
    case.route = to_route.value
    case.team_id = team_id
    case.outside_areas = False
    case.updated_at = now
    session.flush()
    return event


def protocol_missing(attempts: Sequence[ContactAttempt]) -> list[str]:
    """What the outreach protocol still needs before "Definitief geen contact kunnen krijgen"."""
    visits = {(a.datum, a.dagdeel) for a in attempts if a.soort == Contactsoort.huisbezoek.value}
    calls = [a for a in attempts if a.soort == Contactsoort.telefoon.value]
    missing = []
    if len(visits) < 2:
        missing.append(f"two home visits on different days or day-parts ({len(visits)} recorded)")
    if len(calls) < 2:
        missing.append(f"two phone calls ({len(calls)} recorded)")
    return missing


def close_case(
    session: Session, ctx: Context, principal: Principal, case: Case, resultaat: Eindresultaat
) -> Case:
    _require_open(case)
    if resultaat.value == NO_CONTACT:
        attempts = session.scalars(
            select(ContactAttempt).where(ContactAttempt.case_id == case.id)
        ).all()
        missing = protocol_missing(attempts)
        if missing:
            raise Conflict(
                "the outreach protocol is not complete: " + "; ".join(missing),
                missing=missing,
            )
    now = ctx.now()
    case.status = CaseStatus.closed.value
    case.resultaat = resultaat.value
    case.closed_at = now
    case.updated_at = now
    session.add(
        CaseEvent(
            case_id=case.id,
            at=now,
            kind="closed",
            from_route=case.route,
            from_team_id=case.team_id,
            staff_id=principal.staff_id,
        )
    )
    set_status_of_cases(session, [case.id], closure_status(resultaat.value))
    session.flush()
    return case


def closure_status(resultaat: str) -> str:
    """The status a closed case gives its signals: its outcome when that is a signal status
    (the household died, moved away, ...), else "Opgepakt"."""
    return resultaat if resultaat in SIGNAL_STATUS_VALUES else Signaalstatus.opgepakt.value


def team_names(session: Session) -> dict[uuid.UUID, str]:
    return {t.id: t.name for t in session.scalars(select(Team))}


# --- figures -------------------------------------------------------------------------------------


def open_and_overdue(session: Session, today: date) -> dict[str, dict[str, int]]:
    """Open and overdue cases per route (for the coordinator, the run figures and ``/metrics``),
    summed from the case counts: no case is read."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"open": 0, "overdue": 0})
    late = sql_case((CaseCount.due_date < today, CaseCount.n), else_=0)
    rows = session.execute(
        select(CaseCount.route, func.sum(CaseCount.n), func.sum(late))
        .where(CaseCount.status == CaseStatus.open.value)
        .group_by(CaseCount.route)
    ).all()
    for route_name, open_count, overdue in rows:
        key = route_name or "unrouted"
        counts[key]["open"] = int(open_count)
        counts[key]["overdue"] = int(overdue or 0)
    return dict(counts)


def figures_json(figures: dict[str, Any]) -> str:
    return json.dumps(figures, sort_keys=True)
