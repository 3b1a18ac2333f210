"""The teams' endpoints over real HTTP: who sees which case, the protocol, transfers, feedback."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from services.ingest.partners import revoke_key
from services.matcher.service import run_period
from services.routing.admin import add_staff, add_team
from services.routing.service import (
    CaseFilter,
    list_cases,
    replace_register,
)
from shared import audit
from shared.auth import Principal
from shared.context import Context
from shared.crypto import split_api_key
from shared.db import unit_of_work
from shared.models import ApiKey, AuditEvent, Case, CaseEvent, Signal, SignalState, Staff
from shared.periods import local_today
from tests.conftest import Clock, LiveServer
from tests.helpers import register, row
from tests.matcher.test_run import deliver

ROLES = ("sdv", "noord", "zuid", "budgetcoach", "coordinator", "admin")
ADVICE = "(Budget)advies en/of quick fix"


@dataclass
class World:
    server: LiveServer
    keys: dict[str, str]
    partner_keys: dict[str, str]
    cases: dict[str, str]  # label -> case id

    def get(self, who: str, path: str, **params: Any) -> Any:
        key = self.keys.get(who) or self.partner_keys.get(who)
        with self.server.client(key) as client:
            return client.get(path, params=params)

    def post(self, who: str, path: str, body: dict[str, Any]) -> Any:
        with self.server.client(self.keys[who]) as client:
            return client.post(path, json=body)


def _staff(ctx: Context) -> dict[str, str]:
    with unit_of_work(ctx.sessions) as session:
        add_team(session, name="noord", postcodes="2011-2015", default=False, now=ctx.now())
        add_team(session, name="zuid", postcodes="2020-2029", default=True, now=ctx.now())
        specs = {
            "sdv": ("sdv", None),
            "noord": ("wijkteam", "noord"),
            "zuid": ("wijkteam", "zuid"),
            "budgetcoach": ("budgetcoach", None),
            "coordinator": ("coordinator", None),
            "admin": ("admin", None),
        }
        return {
            label: add_staff(session, name=label, role=role, team=team, now=ctx.now()).secret
            for label, (role, team) in specs.items()
        }


@pytest.fixture
def world(ctx: Context, clock: Clock, live_server: LiveServer) -> World:
    partner_keys = {
        "Huur BV": register(ctx, "Huur BV", "huur"),
        "Energie NV": register(ctx, "Energie NV", "energie"),
        "Zorg UA": register(ctx, "Zorg UA", "zorg"),
    }
    keys = _staff(ctx)
    # October: rent arrears at number 3, which will come back in November (recidive).
    clock.set_local(2026, 10, 10, 9, 0)
    deliver(ctx, "Huur BV", row("H3", nummer="3", bedrag="500,00"))
    clock.set_local(2026, 10, 26, 2, 0)
    run_period(ctx)
    # SDV already helps the household at number 7.
    with unit_of_work(ctx.sessions) as session:
        replace_register(session, ctx, [{"postcode": "2011 ab", "huisnummer": "7"}], ctx.now())
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(
        ctx,
        "Huur BV",
        row("H3", nummer="3", bedrag="900,00"),
        row("H7", nummer="7"),
        row("H5", nummer="5", postcode="2021XY", crisis="ja"),
        row("H9", nummer="9", postcode="9999ZZ"),
    )
    deliver(ctx, "Energie NV", row("E1", nummer="1"), row("E4", nummer="4", postcode="2011AB"))
    deliver(ctx, "Zorg UA", row("Z1", nummer="1", naam="Bakker"))
    clock.set_local(2026, 11, 26, 2, 0)  # a Thursday
    run_period(ctx)
    labels = _label_cases(ctx)
    return World(live_server, keys, partner_keys, labels)


def _label_cases(ctx: Context) -> dict[str, str]:
    """Label the cases by where the rules should have sent them."""
    with ctx.sessions() as session:
        cases = session.scalars(sa.select(Case)).all()
    labels = {}
    for case in cases:
        if case.period == "2026-10":
            labels["oktober"] = str(case.id)
        elif case.route == "sdv":
            labels["sdv"] = str(case.id)
        elif case.route == "budgetcoach":
            labels["budgetcoach"] = str(case.id)
        elif case.has_crisis:
            labels["zuid_crisis"] = str(case.id)
        elif case.outside_areas:
            labels["outside"] = str(case.id)
        else:
            labels["noord"] = str(case.id)
    return labels


def test_the_run_routes_every_case(world: World, ctx: Context) -> None:
    assert set(world.cases) == {"oktober", "sdv", "budgetcoach", "zuid_crisis", "outside", "noord"}
    with ctx.sessions() as session:
        crisis = session.get(Case, uuid.UUID(world.cases["zuid_crisis"]))
        noord = session.get(Case, uuid.UUID(world.cases["noord"]))
        outside = session.get(Case, uuid.UUID(world.cases["outside"]))
    assert crisis is not None
    assert noord is not None
    assert outside is not None
    # Thursday 26 November + 3 working days = Tuesday 1 December; others 28 days.
    assert str(crisis.due_date) == "2026-12-01"
    assert str(noord.due_date) == "2026-12-24"
    assert outside.outside_areas
    assert outside.team_id is not None


VISIBLE = {
    "sdv": {"sdv"},
    "noord": {"noord", "oktober"},
    "zuid": {"zuid_crisis", "outside"},
    "budgetcoach": {"budgetcoach"},
    "coordinator": {"oktober", "sdv", "budgetcoach", "zuid_crisis", "outside", "noord"},
}


@pytest.mark.parametrize("who", ROLES)
def test_each_role_sees_only_its_own_cases(world: World, who: str) -> None:
    listing = world.get(who, "/api/v1/cases")
    if who == "admin":
        assert listing.status_code == 403
        case_id = world.cases["noord"]
        assert world.get(who, f"/api/v1/cases/{case_id}").status_code == 403
        attempt = {"soort": "Brief", "datum": "2026-11-26"}
        assert (
            world.post(who, f"/api/v1/cases/{case_id}/contact-attempts", attempt).status_code == 403
        )
        return
    assert listing.status_code == 200
    seen = {item["id"] for item in listing.json()["items"]}
    expected = {world.cases[label] for label in VISIBLE[who]}
    assert seen == expected
    attempt = {"soort": "Brief", "datum": "2026-11-26"}
    for label, case_id in world.cases.items():
        expected_status = 200 if label in VISIBLE[who] else 404
        detail = world.get(who, f"/api/v1/cases/{case_id}")
        assert detail.status_code == expected_status, (who, label)
        added = world.post(who, f"/api/v1/cases/{case_id}/contact-attempts", attempt)
        assert added.status_code == (201 if label in VISIBLE[who] else 404), (who, label)
        if label not in VISIBLE[who]:
            assert added.json()["detail"] == "no such case"


def test_partners_and_strangers_get_no_cases(world: World) -> None:
    assert world.get("Huur BV", "/api/v1/cases").status_code == 403
    with world.server.client() as anonymous:
        assert anonymous.get("/api/v1/cases").status_code == 401
    with world.server.client("vss_000000000000_wrong") as wrong:
        assert wrong.get("/api/v1/cases").status_code == 401


def test_list_is_ordered_and_filterable(world: World, clock: Clock) -> None:
    items = world.get("coordinator", "/api/v1/cases", period="2026-11").json()["items"]
    assert [i["priority"] for i in items] == sorted(i["priority"] for i in items)
    assert items[0]["has_crisis"]
    assert "address" not in items[0]  # the list holds no personal data
    zuid = world.get("coordinator", "/api/v1/cases", team="zuid").json()
    assert {i["id"] for i in zuid["items"]} == {world.cases["zuid_crisis"], world.cases["outside"]}
    page = world.get("coordinator", "/api/v1/cases", page=2, page_size=2).json()
    assert page["total"] == 6
    assert len(page["items"]) == 2
    late = world.get("coordinator", "/api/v1/cases", overdue=True).json()["items"]
    assert [i["id"] for i in late] == [world.cases["oktober"]]  # due 23 November
    november = {"overdue": True, "period": "2026-11"}
    assert world.get("coordinator", "/api/v1/cases", **november).json()["total"] == 0
    clock.set_local(2026, 12, 2, 9, 0)  # past the crisis case's due date
    overdue = world.get("coordinator", "/api/v1/cases", **november).json()
    assert [i["id"] for i in overdue["items"]] == [world.cases["zuid_crisis"]]
    assert overdue["items"][0]["overdue"] is True


def test_list_parameters_are_documented_and_refused_by_name(world: World) -> None:
    """The list's query parameters (validated as one model) keep their OpenAPI description and
    their 422 answers name the parameter, as when each was declared on its own."""
    with world.server.client(None) as anonymous:
        document = anonymous.get("/openapi.json").json()
    parameters = document["paths"]["/api/v1/cases"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in parameters] == [
        (name, "query", False)
        for name in ("status", "route", "team", "overdue", "period", "page", "page_size")
    ]
    by_name = {p["name"]: p["schema"] for p in parameters}

    def enum(name: str) -> list[str]:
        ref = by_name[name]["anyOf"][0]["$ref"].rsplit("/", 1)[1]
        values: list[str] = document["components"]["schemas"][ref]["enum"]
        return values

    assert enum("status") == ["open", "closed"]
    assert enum("route") == ["sdv", "wijkteam", "budgetcoach"]
    assert by_name["period"]["anyOf"][0]["pattern"] == r"^\d{4}-(0[1-9]|1[0-2])$"
    assert (by_name["page"]["minimum"], by_name["page"]["maximum"]) == (1, 100_000)
    assert (by_name["page_size"]["minimum"], by_name["page_size"]["maximum"]) == (1, 500)
    assert (by_name["page"]["default"], by_name["page_size"]["default"]) == (1, 50)
    for params, columns in (
        ({"page": 0}, ["query.page"]),
        ({"page_size": 501}, ["query.page_size"]),
        ({"period": "2026-13", "status": "nope"}, ["query.status", "query.period"]),
        ({"overdue": "maybe", "route": "elders"}, ["query.route", "query.overdue"]),
    ):
        answer = world.get("coordinator", "/api/v1/cases", **params)
        assert answer.status_code == 422, params
        assert [e["column"] for e in answer.json()["errors"]] == columns


def test_list_pages_past_the_end_and_shows_each_case_as_its_detail_does(world: World) -> None:
    past = world.get("coordinator", "/api/v1/cases", page=4, page_size=2)
    assert past.status_code == 200
    assert past.headers["content-type"] == "application/json"
    assert past.json() == {"items": [], "total": 6, "page": 4, "page_size": 2}
    listing = world.get("coordinator", "/api/v1/cases", page_size=500).json()
    assert listing["total"] == len(listing["items"]) == 6
    for item in listing["items"]:
        detail = world.get("coordinator", f"/api/v1/cases/{item['id']}").json()
        assert {key: detail[key] for key in item} == item
    zuid = next(i["team"] for i in listing["items"] if (i["team"] or {}).get("name") == "zuid")
    by_id = world.get("coordinator", "/api/v1/cases", team=zuid["id"]).json()
    assert by_id == world.get("coordinator", "/api/v1/cases", team="zuid").json()
    assert by_id["total"] == 2
    assert world.get("noord", "/api/v1/cases", team="zuid").json()["total"] == 0


def test_the_total_is_exact_after_every_change(world: World, ctx: Context) -> None:
    """The totals are kept by the database: any committed write shows at once, also one that
    bypasses the application."""

    def total(**params: Any) -> int:
        found: int = world.get("coordinator", "/api/v1/cases", **params).json()["total"]
        return found

    assert total() == total() == 6
    assert total(status="open") == 6
    closed = world.post(
        "coordinator", f"/api/v1/cases/{world.cases['noord']}/close", {"resultaat": ADVICE}
    )
    assert closed.status_code == 200, closed.text
    assert total(status="open") == 5
    assert total() == 6
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.delete(Case).where(Case.id == uuid.UUID(world.cases["outside"])))
    assert total() == 5
    assert total(status="open") == 4


def test_the_page_and_its_total_are_one_statement_that_counts_no_case(
    world: World, ctx: Context
) -> None:
    """The total is summed from the case counts in the page's own statement (one snapshot for
    both); past the last page one more statement sums it alone."""
    principal = Principal(uuid.uuid4(), "k", "coordinator")
    today = local_today(ctx.now(), ctx.tz)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().lower().startswith("select"):  # not SQLite's "begin immediate"
            statements.append(" ".join(statement.lower().split()))

    def listed(page: int) -> int:
        with ctx.sessions() as session:
            found = list_cases(
                session, principal, CaseFilter(), today=today, page=page, page_size=4
            )
            return found.total

    sa.event.listen(ctx.engine, "before_cursor_execute", seen)
    try:
        assert listed(1) == 6
        assert len(statements) == 1
        assert "from case_counts" in statements[0]
        assert "count(" not in statements[0]
        assert listed(3) == 6  # past the end: no rows to carry the total
        assert len(statements) == 3
        assert "from cases" not in statements[2]
    finally:
        sa.event.remove(ctx.engine, "before_cursor_execute", seen)


def _autocommit(dbapi_connection: Any) -> bool:
    """Whether a driver connection runs each statement on its own (psycopg's flag; SQLite's
    connections here never do)."""
    return getattr(dbapi_connection, "autocommit", None) is True


def test_a_read_takes_one_connection_and_no_transaction_round_trips(
    world: World, ctx: Context
) -> None:
    """Authentication runs in the endpoint's own session: one checkout. On PostgreSQL the read's
    statements run in autocommit (no ``BEGIN``, no ``COMMIT``); a write after it gets its
    connection back in the usual mode, all its statements in one transaction."""
    world.get("coordinator", "/api/v1/cases")  # stamps the key's last use (once a minute)
    seen: dict[str, list[bool]] = {"checkout": [], "statement": []}

    def checkout(dbapi_connection: Any, *_args: object) -> None:
        seen["checkout"].append(_autocommit(dbapi_connection))

    def statement(conn: sa.Connection, *_args: object) -> None:
        seen["statement"].append(_autocommit(conn.connection.dbapi_connection))

    def watched(call: Any) -> dict[str, list[bool]]:
        seen["checkout"].clear()
        seen["statement"].clear()
        sa.event.listen(ctx.engine, "checkout", checkout)
        sa.event.listen(ctx.engine, "before_cursor_execute", statement)
        try:
            call()
        finally:
            sa.event.remove(ctx.engine, "checkout", checkout)
            sa.event.remove(ctx.engine, "before_cursor_execute", statement)
        return {k: list(v) for k, v in seen.items()}

    postgres = ctx.engine.dialect.name == "postgresql"
    read = watched(lambda: world.get("coordinator", "/api/v1/cases").raise_for_status())
    # The pool hands every connection out in the usual mode; the read then switches it.
    assert read["checkout"] == [False]
    assert len(read["statement"]) >= 2  # the key, the page (and SQLite's BEGIN IMMEDIATE)
    assert all(mode is postgres for mode in read["statement"])
    attempt = {"soort": "Brief", "datum": "2026-11-26"}
    path = f"/api/v1/cases/{world.cases['noord']}/contact-attempts"
    for _ in range(3):  # more than once: the pool hands out the read's connection again
        write = watched(lambda: world.post("coordinator", path, attempt).raise_for_status())
        assert write["checkout"] == [False]
        assert len(write["statement"]) > 2
        assert not any(write["statement"])


@pytest.mark.parametrize(("who", "status"), [("coordinator", 404), ("admin", 403)])
def test_the_last_use_is_stamped_when_the_request_then_fails(
    world: World, ctx: Context, clock: Clock, who: str, status: int
) -> None:
    parts = split_api_key(world.keys[who])
    assert parts is not None
    clock.set_local(2026, 11, 27, 9, 0)  # later than any stamp so far
    assert world.get(who, f"/api/v1/cases/{uuid.uuid4()}").status_code == status
    with ctx.sessions() as session:
        used = session.scalar(sa.select(ApiKey.last_used_at).where(ApiKey.key_id == parts[1]))
    assert used == ctx.now()


def test_a_revoked_or_deactivated_staff_key_stops_at_once(world: World, ctx: Context) -> None:
    assert world.get("noord", "/api/v1/cases").status_code == 200
    assert world.get("zuid", "/api/v1/cases").status_code == 200
    noord = split_api_key(world.keys["noord"])
    zuid = split_api_key(world.keys["zuid"])
    assert noord is not None
    assert zuid is not None
    with unit_of_work(ctx.sessions) as session:
        revoke_key(session, noord[1], now=ctx.now())
        key = session.scalars(sa.select(ApiKey).where(ApiKey.key_id == zuid[1])).one()
        session.execute(sa.update(Staff).where(Staff.id == key.staff_id).values(active=False))
    assert world.get("noord", "/api/v1/cases").status_code == 401
    assert world.get("zuid", "/api/v1/cases").status_code == 401


def test_case_detail_is_complete_and_audited(world: World, ctx: Context) -> None:
    response = world.get("budgetcoach", f"/api/v1/cases/{world.cases['budgetcoach']}")
    assert response.status_code == 200
    case = response.json()
    assert case["address"]["postcode"] == "2011AB"
    assert case["address"]["huisnummer"] == "3"
    assert case["persons"][0]["achternaam"] == "Jansen"
    assert case["signals"][0]["bedrag_cent"] == 90_000
    assert case["signals"][0]["partner"]["name"] == "Huur BV"
    assert case["is_recidive"]
    assert [r["period"] for r in case["recidive"]] == ["2026-10"]
    assert case["signalled_before"] == ["2026-10"]  # the earlier case's signals
    routed = case["history"][0]
    assert (routed["kind"], routed["to_route"], routed["to_team"]) == (
        "routed",
        "budgetcoach",
        None,
    )
    with ctx.sessions() as session:  # derived from the case: the run stores no event for it
        stored = session.get(Case, uuid.UUID(world.cases["budgetcoach"]))
        assert stored is not None
        assert stored.routed_at is not None
        assert routed["at"] == stored.routed_at.isoformat()
        assert session.scalar(sa.select(sa.func.count()).select_from(CaseEvent)) == 0
    with ctx.sessions() as session:
        event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "case.read")).one()
        assert event.object_id == world.cases["budgetcoach"]
        assert event.role == "budgetcoach"
        assert event.request_id
        assert audit.verify(session)[1] is None


def test_a_case_outside_the_callers_reach_is_404_and_audited_as_denied(
    world: World, ctx: Context
) -> None:
    """Another team's case and a case that does not exist answer alike; both leave a trace."""
    for case_id in (world.cases["zuid_crisis"], str(uuid.uuid4())):
        assert world.get("noord", f"/api/v1/cases/{case_id}").status_code == 404
    with ctx.sessions() as session:
        events = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "case.read").order_by(AuditEvent.id)
        ).all()
        assert [(e.outcome, e.role) for e in events] == [("denied", "wijkteam")] * 2
        assert events[0].object_id == world.cases["zuid_crisis"]
        assert audit.verify(session)[1] is None
    assert world.get("noord", f"/api/v1/cases/{world.cases['noord']}").status_code == 200
    # A change asked for on another team's case: the same, under the change's own action.
    other = world.cases["zuid_crisis"]
    closing = {"resultaat": "(Budget)advies en/of quick fix"}
    assert world.post("noord", f"/api/v1/cases/{other}/close", closing).status_code == 404
    with ctx.sessions() as session:
        refused = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "case.close")
        ).one()
        assert (refused.outcome, refused.object_id) == ("denied", other)


def test_the_outreach_protocol_guards_no_contact(world: World, ctx: Context) -> None:
    path = f"/api/v1/cases/{world.cases['noord']}"
    no_contact = {"resultaat": "Definitief geen contact kunnen krijgen"}
    early = world.post("noord", f"{path}/close", no_contact)
    assert early.status_code == 409
    assert early.headers["content-type"].startswith("application/problem+json")
    assert len(early.json()["missing"]) == 2
    attempts = [
        {"soort": "Huisbezoek", "datum": "2026-11-26", "dagdeel": "Ochtend"},
        {"soort": "Huisbezoek", "datum": "2026-11-26", "dagdeel": "Ochtend"},  # same visit slot
        {"soort": "Telefoon", "datum": "2026-11-26", "dagdeel": "Middag"},
        {"soort": "Telefoon", "datum": "2026-11-26", "dagdeel": "Avond", "notitie": "voicemail"},
    ]
    for attempt in attempts:
        assert world.post("noord", f"{path}/contact-attempts", attempt).status_code == 201
    still = world.post("noord", f"{path}/close", no_contact)
    assert still.status_code == 409
    assert still.json()["missing"] == [
        "two home visits on different days or day-parts (1 recorded)"
    ]
    another = {"soort": "Huisbezoek", "datum": "2026-11-26", "dagdeel": "Avond"}
    assert world.post("noord", f"{path}/contact-attempts", another).status_code == 201
    closed = world.post("noord", f"{path}/close", no_contact)
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert world.post("noord", f"{path}/close", no_contact).status_code == 409
    assert world.post("noord", f"{path}/contact-attempts", another).status_code == 409
    detail = world.get("noord", path).json()
    assert len(detail["contact_attempts"]) == 5
    assert any(a["notitie"] == "voicemail" for a in detail["contact_attempts"])
    assert {s["status"] for s in detail["signals"]} == {"Opgepakt"}


def test_bad_contact_attempts_are_rejected(world: World) -> None:
    path = f"/api/v1/cases/{world.cases['noord']}/contact-attempts"
    bad_soort = world.post("noord", path, {"soort": "Duif", "datum": "2026-11-26"})
    assert bad_soort.status_code == 422
    future = world.post("noord", path, {"soort": "Brief", "datum": "2027-01-01"})
    assert future.status_code == 422
    other_team = world.post("zuid", path, {"soort": "Brief", "datum": "2026-11-26"})
    assert other_team.status_code == 404


def test_transfer_hands_over_and_keeps_history(world: World) -> None:
    case_id = world.cases["noord"]
    body = {"route": "budgetcoach", "reason": "bewoner vraagt om budgetcoach"}
    moved = world.post("noord", f"/api/v1/cases/{case_id}/transfer", body)
    assert moved.status_code == 200
    assert moved.json()["route"] == "budgetcoach"
    assert world.get("noord", f"/api/v1/cases/{case_id}").status_code == 404
    detail = world.get("budgetcoach", f"/api/v1/cases/{case_id}").json()
    routed, transfer = detail["history"]
    # Where the run sent the case stays first in its history, though the case has moved on.
    assert (routed["kind"], routed["to_route"], routed["to_team"]) == (
        "routed",
        "wijkteam",
        "noord",
    )
    assert transfer["kind"] == "transfer"
    assert transfer["from_team"] == "noord"
    assert transfer["reason"] == "bewoner vraagt om budgetcoach"
    back = world.post(
        "budgetcoach",
        f"/api/v1/cases/{case_id}/transfer",
        {"route": "wijkteam", "team": "zuid", "reason": "terug"},
    )
    assert back.status_code == 200
    assert back.json()["team"]["name"] == "zuid"
    again = world.post(
        "zuid",
        f"/api/v1/cases/{case_id}/transfer",
        {"route": "wijkteam", "team": "zuid", "reason": "x"},
    )
    assert again.status_code == 409
    no_team = world.post(
        "zuid", f"/api/v1/cases/{case_id}/transfer", {"route": "wijkteam", "reason": "x"}
    )
    assert no_team.status_code == 422


def test_feedback_tells_a_partner_only_about_its_own_signals(world: World) -> None:
    deliveries = world.get("Huur BV", "/api/v1/deliveries").json()["items"]
    november = next(d for d in deliveries if d["period"] == "2026-11")
    feedback = world.get("Huur BV", f"/api/v1/deliveries/{november['id']}/feedback")
    assert feedback.status_code == 200
    body = feedback.json()
    statuses = {s["referentie"]: s["status"] for s in body["signals"]}
    # H7's household is already in debt help: a creditor is not told so.
    assert statuses["H7"] == "Niet opgepakt"
    assert statuses["H3"] == "Nog niet opgepakt"
    assert "Inwoner al bekend bij schuldhulpverlening" not in feedback.text
    assert set(body["signals"][0]) == {"row", "referentie", "status"}
    # Audited: every envelope of the delivery was opened.
    (read,) = world.get("coordinator", "/api/v1/audit", action="delivery.feedback").json()["items"]
    assert read["object_id"] == november["id"]
    assert read["details"] == {"signals": len(body["signals"])}
    other = world.get("Energie NV", f"/api/v1/deliveries/{november['id']}/feedback")
    assert other.status_code == 404
    assert (
        world.get("coordinator", f"/api/v1/deliveries/{november['id']}/feedback").status_code == 403
    )


def test_feedback_hides_the_reason_for_not_picking_up(world: World, ctx: Context) -> None:
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.delete(SignalState))
        every = sa.select(Signal.id, sa.literal("Niet opgepakt: andere reden"))
        session.execute(sa.insert(SignalState).from_select(["signal_id", "status"], every))
    deliveries = world.get("Zorg UA", "/api/v1/deliveries").json()["items"]
    body = world.get("Zorg UA", f"/api/v1/deliveries/{deliveries[0]['id']}/feedback").json()
    assert {s["status"] for s in body["signals"]} == {"Niet opgepakt"}


def test_sdv_register_endpoints(world: World) -> None:
    assert world.get("sdv", "/api/v1/sdv/clients").json() == {"count": 1}
    entries = [
        {"postcode": "2011AB", "huisnummer": "7"},
        {
            "postcode": "2012 cd",
            "huisnummer": "12-A",
            "achternaam": "Smit",
            "geboortedatum": "1970-01-31",
        },
    ]
    with world.server.client(world.keys["sdv"]) as client:
        replaced = client.put("/api/v1/sdv/clients", json={"clients": entries})
        assert replaced.status_code == 200
        assert replaced.json() == {"count": 2}
        bad = client.put(
            "/api/v1/sdv/clients", json={"clients": [{"postcode": "0000XX", "huisnummer": "1"}]}
        )
        assert bad.status_code == 422
        assert bad.json()["errors"] == [
            {"row": 1, "column": "postcode", "message": "not a Dutch postcode"}
        ]
        added = client.post("/api/v1/sdv/clients", json={"postcode": "2013EF", "huisnummer": "1"})
        assert added.status_code == 201
        assert added.json() == {"added": True, "count": 3}
        removed = client.request(
            "DELETE", "/api/v1/sdv/clients", json={"postcode": "2013 ef", "huisnummer": "1"}
        )
        assert removed.json() == {"removed": 1, "count": 2}
    with world.server.client(world.keys["noord"]) as client:
        assert client.put("/api/v1/sdv/clients", json={"clients": []}).status_code == 403


def test_runs_for_the_coordinator(world: World) -> None:
    runs = world.get("coordinator", "/api/v1/runs")
    assert runs.status_code == 200
    body = runs.json()
    assert [r["period"] for r in body["items"]] == ["2026-11", "2026-10"]
    november = body["items"][0]
    assert november["figures"]["cases"] == 5
    assert november["figures"]["routes"] == {"budgetcoach": 1, "sdv": 1, "wijkteam": 3}
    assert november["figures"]["outside_areas"] == 1
    assert body["open_cases"]["wijkteam"]["open"] == 4  # October's case is open too
    one = world.get("coordinator", f"/api/v1/runs/{november['id']}")
    assert one.json()["figures"] == november["figures"]
    assert one.json()["open_cases"] == body["open_cases"]
    assert world.get("sdv", "/api/v1/runs").status_code == 403
    assert world.get("coordinator", f"/api/v1/runs/{uuid.uuid4()}").status_code == 404


def test_audit_trail_for_coordinator_and_admin(world: World) -> None:
    world.get("noord", f"/api/v1/cases/{world.cases['noord']}")
    for who in ("coordinator", "admin"):
        reads = world.get(who, "/api/v1/audit", action="case.read").json()
        assert reads["total"] == 1
        event = reads["items"][0]
        assert event["object_id"] == world.cases["noord"]
        assert event["role"] == "wijkteam"
        assert len(event["hash"]) == 64
    by_object = world.get("coordinator", "/api/v1/audit", object_type="run").json()
    assert {e["action"] for e in by_object["items"]} == {"run.completed"}
    uploads = world.get("coordinator", "/api/v1/audit", action="delivery.upload").json()
    assert uploads["total"] >= 4
    for who in ("sdv", "noord", "budgetcoach"):
        assert world.get(who, "/api/v1/audit").status_code == 403
    assert world.get("Huur BV", "/api/v1/audit").status_code == 403


def test_delivery_monitor_for_the_coordinator(world: World) -> None:
    body = world.get("coordinator", "/api/v1/monitor/deliveries", period="2026-11").json()
    flags = {p["partner"]["name"]: p["flag"] for p in body["partners"]}
    assert flags == {"Energie NV": "new", "Huur BV": "ok", "Zorg UA": "new"}
    assert world.get("noord", "/api/v1/monitor/deliveries").status_code == 403
    assert world.get("Huur BV", "/api/v1/monitor/deliveries").status_code == 403
