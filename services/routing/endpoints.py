"""The teams' JSON endpoints: cases, contact attempts, transfers, closures; the SDV register; runs;
and the partners' feedback on their own signals.

Who may call what (least privilege):

============================  ==========================================================
``GET /api/v1/cases[/{id}]``   sdv, wijkteam (own team), budgetcoach, coordinator (all)
case actions (POST)            sdv, wijkteam, budgetcoach on their own cases; coordinator
``/api/v1/sdv/clients``        sdv
``GET /api/v1/runs[/{id}]``    coordinator
``GET /api/v1/singles``        sdv, coordinator
``GET .../{id}/feedback``      the partner that made the delivery
============================  ==========================================================

A case outside the caller's reach answers 404, as an unknown id does. Reading a case in full and
every change are audit events.
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from services.deps import AppContext, DbSession, PartnerPrincipal, ReadSession, require_roles
from services.routing import service, singles
from shared import audit
from shared.auth import Principal
from shared.crypto import signal_aad
from shared.errors import NotFound
from shared.models import (
    AuditEvent,
    Case,
    CaseStatus,
    Contactsoort,
    Dagdeel,
    Delivery,
    Eindresultaat,
    Role,
    Route,
    Run,
    Signaalstatus,
    Signal,
    SignalState,
    signal_in_delivery,
    signal_status,
)
from shared.periods import local_today

router = APIRouter(prefix="/api/v1", tags=["cases"])
# A period in the query (as documented in the OpenAPI document).
PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"

CaseReader = Annotated[Principal, Depends(require_roles(*service.CASE_READERS))]
SdvStaff = Annotated[Principal, Depends(require_roles(Role.sdv))]
Coordinator = Annotated[Principal, Depends(require_roles(Role.coordinator))]
AuditReader = Annotated[Principal, Depends(require_roles(Role.coordinator, Role.admin))]
SinglesReader = Annotated[Principal, Depends(require_roles(*singles.SINGLES_READERS))]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"content": {"application/problem+json": {}}, "description": text}
    for status, text in (
        (401, "no valid API key"),
        (403, "the role may not do this"),
        (404, "no such object within the caller's reach"),
    )
}


LIST_RESPONSE: dict[str, Any] = {
    "description": "a page of cases (each item a case's list view) and the total",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["items", "total", "page", "page_size"],
                "properties": {
                    "items": {"type": "array", "items": {"type": "object"}},
                    "total": {"type": "integer"},
                    "page": {"type": "integer"},
                    "page_size": {"type": "integer"},
                },
            }
        }
    },
}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _audit(
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: Principal,
    action: str,
    object_type: str,
    object_id: object,
    **details: Any,
) -> None:
    audit.record(
        session,
        action=action,
        now=ctx.now(),
        actor=principal,
        object_type=object_type,
        object_id=object_id,
        request_id=_request_id(request),
        details=details or None,
    )


# --- cases ---------------------------------------------------------------------------------------


def _page() -> Any:
    """A list's page number (the case list's and the single signals')."""
    return Field(1, ge=1, le=100_000)


def _page_size() -> Any:
    return Field(50, ge=1, le=500)


class CaseQuery(BaseModel):
    """The case list's query parameters, validated as one model (once per request, not once per
    parameter)."""

    status: CaseStatus | None = None
    route: Route | None = None
    team: str | None = Field(None, description="team name or id")
    overdue: bool | None = None
    period: str | None = Field(None, pattern=PERIOD_PATTERN)
    page: int = _page()
    page_size: int = _page_size()


@router.get(
    "/cases",
    response_class=Response,
    responses={200: LIST_RESPONSE, **PROBLEMS},
    summary="The caller's cases, most urgent first",
)
def list_cases(
    ctx: AppContext,
    session: ReadSession,
    principal: CaseReader,
    query: Annotated[CaseQuery, Query()],
) -> Response:
    """Sorted by priority (1 is the most urgent), then due date. No personal data in the list.

    The answer is built from plain rows and encoded here (the list is the most frequent call):
    ``{items, total, page, page_size}``, each item a case's list view.
    """
    today = local_today(ctx.now(), ctx.tz)
    filters = service.CaseFilter(
        status=query.status.value if query.status else None,
        route=query.route.value if query.route else None,
        team=query.team,
        overdue=query.overdue,
        period=query.period,
    )
    page, page_size = query.page, query.page_size
    found = service.list_cases(
        session, principal, filters, today=today, page=page, page_size=page_size
    )
    body = (
        f'{{"items":{found.items_json},"total":{found.total},'
        f'"page":{page},"page_size":{page_size}}}'
    )
    return Response(body.encode(), media_type="application/json")


@router.get("/cases/{case_id}", responses=PROBLEMS, summary="One case in full (audited)")
def get_case(
    case_id: uuid.UUID,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: CaseReader,
) -> dict[str, Any]:
    case = _case_for(request, ctx, session, principal, case_id, "case.read")
    detail = service.case_detail(session, ctx, case)
    _audit(request, ctx, session, principal, "case.read", "case", case_id)
    return detail


def _case_for(
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: Principal,
    case_id: uuid.UUID,
    action: str,
) -> Case:
    """The case, if the caller may reach it; otherwise NotFound (404, whether it does not exist
    or lies outside the caller's reach), with an ``action`` event of outcome ``denied``, so that
    a key trying other teams' case ids leaves a trace. The event is written in a transaction of
    its own: the request's is rolled back with the error."""
    try:
        return service.case_for(session, principal, case_id)
    except NotFound:
        session.rollback()  # gives up its connection (on SQLite the write lock) first
        audit.record_apart(
            ctx.sessions,
            action=action,
            now=ctx.now(),
            actor=principal,
            object_type="case",
            object_id=case_id,
            outcome="denied",
            request_id=_request_id(request),
        )
        raise


class ContactAttemptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soort: Contactsoort
    datum: date
    dagdeel: Dagdeel | None = None
    bereikt: bool = False
    notitie: str | None = Field(default=None, max_length=4000)


@router.post(
    "/cases/{case_id}/contact-attempts",
    status_code=201,
    responses={**PROBLEMS, 409: PROBLEMS[404] | {"description": "the case is closed"}},
    summary="Record a contact attempt (DDAS soort and dagdeel)",
)
def add_contact_attempt(
    case_id: uuid.UUID,
    body: ContactAttemptIn,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: CaseReader,
) -> dict[str, Any]:
    case = _case_for(request, ctx, session, principal, case_id, "case.contact_attempt")
    attempt = service.add_contact_attempt(
        session,
        ctx,
        principal,
        case,
        soort=body.soort,
        datum=body.datum,
        dagdeel=body.dagdeel,
        bereikt=body.bereikt,
        notitie=body.notitie,
    )
    _audit(
        request,
        ctx,
        session,
        principal,
        "case.contact_attempt",
        "case",
        case.id,
        attempt=str(attempt.id),
        soort=attempt.soort,
    )
    return service.attempt_dict(ctx, attempt)


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: Route
    team: str | None = Field(default=None, description="team name or id (route wijkteam)")
    reason: str = Field(min_length=1, max_length=2000)


@router.post(
    "/cases/{case_id}/transfer",
    responses={**PROBLEMS, 409: PROBLEMS[404] | {"description": "closed, or there already"}},
    summary="Hand the case to another route or team (warm handover)",
)
def transfer_case(
    case_id: uuid.UUID,
    body: TransferIn,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: CaseReader,
) -> dict[str, Any]:
    case = _case_for(request, ctx, session, principal, case_id, "case.transfer")
    from_route, from_team = case.route, case.team_id
    service.transfer(
        session, ctx, principal, case, to_route=body.route, team=body.team, reason=body.reason
    )
    _audit(
        request,
        ctx,
        session,
        principal,
        "case.transfer",
        "case",
        case.id,
        from_route=from_route,
        from_team=str(from_team) if from_team else None,
        to_route=case.route,
        to_team=str(case.team_id) if case.team_id else None,
    )
    teams = service.team_names(session)
    return service.case_summary(case, teams, local_today(ctx.now(), ctx.tz))


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resultaat: Eindresultaat


@router.post(
    "/cases/{case_id}/close",
    responses={
        **PROBLEMS,
        409: PROBLEMS[404] | {"description": "closed already, or the protocol is not complete"},
    },
    summary="Close the case with a DDAS Eindresultaat",
)
def close_case(
    case_id: uuid.UUID,
    body: CloseIn,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: CaseReader,
) -> dict[str, Any]:
    case = _case_for(request, ctx, session, principal, case_id, "case.close")
    service.close_case(session, ctx, principal, case, body.resultaat)
    _audit(
        request,
        ctx,
        session,
        principal,
        "case.close",
        "case",
        case.id,
        resultaat=body.resultaat.value,
    )
    teams = service.team_names(session)
    return service.case_summary(case, teams, local_today(ctx.now(), ctx.tz))


# --- the SDV client register ---------------------------------------------------------------------


class SdvClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    postcode: str = Field(max_length=16)
    huisnummer: str = Field(max_length=16)
    huisletter: str | None = Field(default=None, max_length=8)
    huisnummertoevoeging: str | None = Field(default=None, max_length=16)
    achternaam: str | None = Field(default=None, max_length=200)
    geboortedatum: date | None = None


class SdvRegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[SdvClientIn] = Field(max_length=1_000_000)


def _entries(clients: list[SdvClientIn]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in clients]


@router.put("/sdv/clients", responses=PROBLEMS, tags=["sdv"], summary="Replace the register")
def replace_register(
    body: SdvRegisterIn,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: SdvStaff,
) -> dict[str, Any]:
    """The whole list as SDV's own system exports it; stored as keyed hashes only."""
    count = service.replace_register(session, ctx, _entries(body.clients), ctx.now())
    _audit(request, ctx, session, principal, "sdv.replace", "sdv_register", None, count=count)
    return {"count": count}


@router.post(
    "/sdv/clients", status_code=201, responses=PROBLEMS, tags=["sdv"], summary="Add a household"
)
def add_client(
    body: SdvClientIn,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: SdvStaff,
) -> dict[str, Any]:
    added = service.add_to_register(session, ctx, body.model_dump(mode="json"), ctx.now())
    _audit(request, ctx, session, principal, "sdv.add", "sdv_register", None, added=added)
    return {"added": added, "count": service.register_size(session)}


@router.delete("/sdv/clients", responses=PROBLEMS, tags=["sdv"], summary="Remove a household")
def remove_client(
    body: SdvClientIn,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: SdvStaff,
) -> dict[str, Any]:
    removed = service.remove_from_register(session, ctx, body.model_dump(mode="json"))
    _audit(request, ctx, session, principal, "sdv.remove", "sdv_register", None, removed=removed)
    return {"removed": removed, "count": service.register_size(session)}


@router.get("/sdv/clients", responses=PROBLEMS, tags=["sdv"], summary="The register's size")
def register_size(session: ReadSession, principal: SdvStaff) -> dict[str, Any]:
    """Only the count: the register holds keyed hashes, which mean nothing outside matching."""
    return {"count": service.register_size(session)}


# --- runs ----------------------------------------------------------------------------------------


def run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "period": run.period,
        "run_date": run.run_date.isoformat(),
        "kind": run.kind,
        "status": run.status,
        "rerun": run.rerun,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "duration_ms": run.duration_ms,
        "parameters": json.loads(run.parameters),
        "figures": json.loads(run.figures),
    }


@router.get("/runs", responses=PROBLEMS, tags=["runs"], summary="The matching runs, newest first")
def list_runs(
    ctx: AppContext,
    session: ReadSession,
    principal: Coordinator,
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    query = select(Run)
    if period:
        query = query.where(Run.period == period)
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    runs = session.scalars(
        query.order_by(Run.started_at.desc()).offset((page - 1) * page_size).limit(page_size)
    )
    today = local_today(ctx.now(), ctx.tz)
    return {
        "items": [run_dict(r) for r in runs],
        "total": total,
        "page": page,
        "page_size": page_size,
        "open_cases": service.open_and_overdue(session, today),
    }


@router.get("/runs/{run_id}", responses=PROBLEMS, tags=["runs"], summary="One run's figures")
def get_run(
    run_id: uuid.UUID, ctx: AppContext, session: ReadSession, principal: Coordinator
) -> dict[str, Any]:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound("no such run")
    today = local_today(ctx.now(), ctx.tz)
    return {**run_dict(run), "open_cases": service.open_and_overdue(session, today)}


# --- feedback to partners ------------------------------------------------------------------------

# What a partner may learn of its own signal: picked up, not yet, a repeat report, a wrong signal,
# the resident deceased or not (or no longer) a resident. For "Niet opgepakt: andere reden" only
# that the signal was not picked up, not why. Nor does it learn that the resident is already in
# the municipality's debt help ("Inwoner al bekend bij schuldhulpverlening"): that is about the
# resident, not the signal, and a creditor has no business knowing it; it reads "Niet opgepakt"
# (the signal is not picked up as an early signal: the resident has help already).
NOT_PICKED_UP = "Niet opgepakt"
WITHHELD_FROM_PARTNERS = frozenset({Signaalstatus.andere_reden, Signaalstatus.bekend_bij_shv})


def partner_status(status: str) -> str:
    return NOT_PICKED_UP if status in WITHHELD_FROM_PARTNERS else status


@router.get(
    "/deliveries/{delivery_id}/feedback",
    responses=PROBLEMS,
    tags=["deliveries"],
    summary="What became of each of the delivery's signals (audited)",
)
def delivery_feedback(
    delivery_id: uuid.UUID,
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: PartnerPrincipal,
) -> dict[str, Any]:
    """Per signal (by row and the partner's own reference) its status in the national vocabulary;
    nothing about other partners' signals, amounts, contact details or the household. Audited
    (``delivery.feedback``, with the number of signals): it opens every envelope of the
    delivery and says what the municipality did about each household."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.partner_id != principal.partner_id:
        raise NotFound("no such delivery")
    rows = session.execute(
        select(Signal.row_number, signal_status(), Signal.pii, Signal.pii_key_id)
        .outerjoin(SignalState, SignalState.signal_id == Signal.id)
        .where(signal_in_delivery(delivery))
        .order_by(Signal.row_number)
    ).all()
    counts: dict[str, int] = {}
    items = []
    for row_number, status, pii, key_id in rows:
        shown = partner_status(status)
        counts[shown] = counts.get(shown, 0) + 1
        # The partner's own reference, so it can find the signal in its own system.
        reference = None
        if pii is not None and key_id is not None:
            aad = signal_aad(str(delivery.id), row_number)
            reference = ctx.cipher.decrypt_json(pii, aad, key_id).get("referentie")
        items.append({"row": row_number, "referentie": reference, "status": shown})
    _audit(
        request,
        ctx,
        session,
        principal,
        "delivery.feedback",
        "delivery",
        delivery.id,
        signals=len(items),
    )
    return {
        "delivery_id": str(delivery.id),
        "period": delivery.period,
        "delivery_status": delivery.status,
        "counts": counts,
        "signals": items,
    }


# --- single signals -------------------------------------------------------------------------------


class SinglesQuery(BaseModel):
    period: str | None = Field(
        None,
        pattern=PERIOD_PATTERN,
        description="the period (default: the latest with a completed run)",
    )
    page: int = _page()
    page_size: int = _page_size()


@router.get(
    "/singles",
    responses=PROBLEMS,
    tags=["singles"],
    summary="Addresses with a single signal, owed an offer of help by letter (audited)",
)
def list_singles(
    request: Request,
    ctx: AppContext,
    session: DbSession,
    principal: SinglesReader,
    query: Annotated[SinglesQuery, Query()],
) -> dict[str, Any]:
    """The period's addresses whose signals made no case (``services.routing.singles``), with
    the contact details a letter or a call needs, ordered by four-digit postcode. 404 when the
    period has no completed run. Each page read is audited (``singles.read``)."""
    found = singles.singles_page(
        session, ctx, query.period, page=query.page, page_size=query.page_size
    )
    _audit(
        request,
        ctx,
        session,
        principal,
        "singles.read",
        "run",
        found.run.id,
        period=found.run.period,
        addresses=len(found.items),
    )
    return {
        "period": found.run.period,
        "run_id": str(found.run.id),
        "run_date": found.run.run_date.isoformat(),
        "deliveries_since_run": found.deliveries_since_run,
        "items": found.items,
        "total": found.total,
        "page": query.page,
        "page_size": query.page_size,
    }


# --- the audit trail ------------------------------------------------------------------------------


@router.get("/audit", responses=PROBLEMS, tags=["audit"], summary="The audit trail, newest first")
def list_audit(
    session: ReadSession,
    principal: AuditReader,
    object_type: str | None = None,
    object_id: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Who did what, when, to which object (no personal data is in an event)."""
    query = select(AuditEvent)
    if object_type:
        query = query.where(AuditEvent.object_type == object_type)
    if object_id:
        query = query.where(AuditEvent.object_id == object_id)
    if actor_id:
        query = query.where(AuditEvent.actor_id == actor_id)
    if action:
        query = query.where(AuditEvent.action == action)
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    events = session.scalars(
        query.order_by(AuditEvent.id.desc()).offset((page - 1) * page_size).limit(page_size)
    )
    return {
        "items": [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "actor_type": e.actor_type,
                "actor_id": e.actor_id,
                "credential": e.credential,
                "role": e.role,
                "action": e.action,
                "object_type": e.object_type,
                "object_id": e.object_id,
                "request_id": e.request_id,
                "outcome": e.outcome,
                "details": json.loads(e.details) if e.details else None,
                "hash": e.hash,
            }
            for e in events
        ],
        "total": total,
        "page": page,
        "page_size": page_size,
    }


# --- the delivery monitor ----------------------------------------------------------------------


@router.get(
    "/monitor/deliveries",
    responses=PROBLEMS,
    tags=["runs"],
    summary="Per partner: has this period's file arrived, and how does it compare",
)
def monitor_deliveries(
    ctx: AppContext,
    session: ReadSession,
    principal: Coordinator,
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
) -> dict[str, Any]:
    from services.ingest.monitor import delivery_status
    from shared.periods import Period

    return delivery_status(session, ctx, Period.parse(period) if period else None)
