"""Operations endpoints: ``/readyz`` (ready to serve) and ``/metrics`` (Prometheus text).

``/healthz`` (the process is alive) lives in the app itself. ``/readyz`` answers 200 only when the
database answers and its schema is at the migrations' head, so a rolling update never sends
traffic to a replica whose database is behind. ``/metrics`` combines in-process counters (uploads,
rows, API latency) with figures read from the database at scrape time (the last run, open and
overdue cases per route, deliveries of the open period per partner kind). Keep it internal: the
TLS proxy does not forward it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from services.deps import AppContext
from services.routing.service import open_and_overdue
from shared import migrate
from shared.metrics import REGISTRY, gauge_lines
from shared.models import Delivery, DeliveryStatus, Partner, Run, RunKind, RunStatus
from shared.periods import local_today, open_period

router = APIRouter(tags=["operations"])


@router.get("/readyz", summary="Ready: database reachable and schema at head")
def readyz(ctx: AppContext) -> JSONResponse:
    problem = None
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = migrate.current_revision(ctx.engine)
        head = migrate.head_revision(ctx.settings.resolved_database_url)
        if current != head:
            problem = f"database schema at {current}, migrations at {head}: run db upgrade"
    except SQLAlchemyError as exc:
        problem = f"database not reachable ({type(exc).__name__})"
    if problem:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": "Not ready",
            "status": 503,
            "detail": problem,
        }
        return JSONResponse(body, status_code=503, media_type="application/problem+json")
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(ctx: AppContext) -> PlainTextResponse:
    lines = list(REGISTRY.render())
    try:
        lines += _database_gauges(ctx)
        up = 1
    except SQLAlchemyError:
        up = 0
    lines += gauge_lines("vroegsignaal_database_up", "Whether the database answered", [((), up)])
    return PlainTextResponse(
        "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def _database_gauges(ctx: AppContext) -> list[str]:
    now = ctx.now()
    today = local_today(now, ctx.tz)
    period = str(open_period(now, ctx.settings.delivery_deadline_day, ctx.tz))
    lines: list[str] = []
    with ctx.sessions() as session:
        cases = open_and_overdue(session, today)
        lines += gauge_lines(
            "vroegsignaal_cases_open",
            "Open cases per route",
            [((("route", r),), c["open"]) for r, c in sorted(cases.items())],
        )
        lines += gauge_lines(
            "vroegsignaal_cases_overdue",
            "Open cases past their due date per route",
            [((("route", r),), c["overdue"]) for r, c in sorted(cases.items())],
        )
        delivered = session.execute(
            select(
                Partner.kind,
                func.count(Delivery.id),
                func.coalesce(func.sum(Delivery.row_count), 0),
            )
            .join(Delivery, Delivery.partner_id == Partner.id)
            .where(Delivery.period == period, Delivery.status == DeliveryStatus.accepted)
            .group_by(Partner.kind)
        ).all()
        lines += gauge_lines(
            "vroegsignaal_open_period_deliveries",
            "Current deliveries for the open period per partner kind",
            [((("kind", k),), n) for k, n, _ in delivered],
        )
        lines += gauge_lines(
            "vroegsignaal_open_period_rows",
            "Rows in the open period's current deliveries per partner kind",
            [((("kind", k),), rows) for k, _, rows in delivered],
        )
        last = session.scalars(
            select(Run)
            .where(Run.status == RunStatus.completed, Run.kind == RunKind.monthly)
            .order_by(Run.finished_at.desc())
        ).first()
        if last is not None:
            figures = json.loads(last.figures)
            lines += gauge_lines(
                "vroegsignaal_last_run_duration_seconds",
                "Duration of the last completed run",
                [((), last.duration_ms / 1000)],
            )
            lines += gauge_lines(
                "vroegsignaal_last_run_finished_timestamp_seconds",
                "When the last completed run finished",
                [((), last.finished_at.timestamp())],
            )
            lines += gauge_lines(
                "vroegsignaal_last_run_figure",
                "Figures of the last completed run",
                [
                    ((("figure", name),), float(value))
                    for name, value in sorted(figures.items())
                    if isinstance(value, int | float) and not isinstance(value, bool)
                ],
            )
    return lines
