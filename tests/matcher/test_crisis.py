"""Crisis runs: the cases of crisis signals made at once, and taken in by the monthly run."""

from __future__ import annotations

import fcntl
import uuid
from datetime import date

import sqlalchemy as sa

from services.ingest.service import ingest_with_retry
from services.matcher.service import crisis_run, run_period
from services.routing.service import add_contact_attempt
from shared.auth import Principal
from shared.context import Context
from shared.db import unit_of_work
from shared.models import AuditEvent, Case, CaseSignal, Contactsoort, Run
from tests.conftest import Clock
from tests.helpers import HEADER, csv_file, row
from tests.matcher.test_run import (  # noqa: F401 (partners: a fixture)
    _signalled,
    _statuses,
    deliver,
    partner_id,
    partners,
)


def _cases(ctx: Context) -> list[Case]:
    with ctx.sessions() as session:
        return list(session.scalars(sa.select(Case).order_by(Case.created_at)))


def _signals_of(ctx: Context, case_id: uuid.UUID) -> int:
    with ctx.sessions() as session:
        query = sa.select(sa.func.count()).where(CaseSignal.case_id == case_id)
        return int(session.scalar(query) or 0)


def test_a_crisis_signal_makes_its_case_at_once(
    ctx: Context,
    clock: Clock,
    partners: None,  # noqa: F811
) -> None:
    """Delivered on Tuesday 10 November: the case is there that day, due on Friday the 13th
    (three working days), not after the run of the 26th. Other signals wait for that run."""
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", crisis="ja"), row("H2", nummer="2"))
    deliver(ctx, "Energie NV", row("E3", nummer="3"), row("E4", nummer="4"))
    deliver(ctx, "Zorg UA", row("Z4", nummer="4"))
    reports = crisis_run(ctx)
    # October's window closed last and it has no monthly run: looked at too, nothing in it.
    assert [(r.period, r.figures.get("cases")) for r in reports] == [
        ("2026-10", 0),
        ("2026-11", 1),
    ]
    [case] = _cases(ctx)
    assert (case.period, case.has_crisis, case.due_date) == ("2026-11", True, date(2026, 11, 13))
    assert case.route == "wijkteam"
    with ctx.sessions() as session:
        run = session.get(Run, case.run_id)
        assert run is not None
        assert run.kind == "crisis"
        actions = session.scalars(sa.select(AuditEvent.action)).all()
    assert "run.crisis" in actions
    # Run again (the next morning): nothing new, no second case, no empty run.
    clock.set_local(2026, 11, 11, 7, 0)
    assert [r.run for r in crisis_run(ctx)] == [None, None]
    assert len(_cases(ctx)) == 1
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1


def test_the_monthly_run_takes_the_crisis_case_in(
    ctx: Context,
    clock: Clock,
    partners: None,  # noqa: F811
) -> None:
    """The crisis case keeps its id, due date, route and the work on it; the signals delivered
    at its address since are linked to it; the other cases are made as always."""
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", crisis="ja"), row("H2", nummer="2"))
    crisis_run(ctx)
    [crisis] = _cases(ctx)
    staff = Principal(uuid.uuid4(), "test", "coordinator")
    with unit_of_work(ctx.sessions) as session:
        case = session.get(Case, crisis.id)
        assert case is not None
        add_contact_attempt(
            session,
            ctx,
            staff,
            case,
            soort=Contactsoort.huisbezoek,
            datum=clock().date(),
            dagdeel=None,
            bereikt=True,
            notitie=None,
        )
    clock.set_local(2026, 11, 20, 9, 0)
    deliver(ctx, "Energie NV", row("E1", nummer="1"), row("E2", nummer="2"))
    clock.set_local(2026, 11, 26, 2, 30)
    report = run_period(ctx)
    assert not report.run.rerun
    assert report.run.kind == "monthly"
    assert report.figures["cases"] == 2
    cases = {c.id: c for c in _cases(ctx)}
    kept = cases[crisis.id]
    assert (kept.due_date, kept.route, kept.status) == (crisis.due_date, crisis.route, "open")
    assert _signals_of(ctx, crisis.id) == 2  # its rent signal and the energy one since
    assert _statuses(ctx)["H1"] == "Opgepakt"  # the home visit's mark stays
    assert sum(report.figures["routes"].values()) == report.figures["cases"]  # the crisis one too
    assert kept.run_id == crisis.run_id  # matched on the crisis run's day (DDAS matchingsdatum)
    [other] = [c for c in cases.values() if c.id != crisis.id]
    assert other.has_rent
    assert not other.has_crisis
    assert other.due_date == date(2026, 12, 24)  # the run date + 28 days
    # The period is done: the next crisis run leaves it alone, and the run is not repeated.
    clock.set_local(2026, 11, 27, 7, 0)
    assert [r.figures.get("monthly_run_done") for r in crisis_run(ctx)] == [True, None]
    assert run_period(ctx).already_done


def test_a_crisis_delivered_before_the_deadline_is_made_before_the_monthly_run(
    ctx: Context,
    clock: Clock,
    partners: None,  # noqa: F811
) -> None:
    """On the 25th the window has closed and the monthly run is still to come: the crisis run
    makes the closed period's crisis cases, and the monthly run then counts them as its own."""
    clock.set_local(2026, 11, 24, 22, 0)
    deliver(ctx, "Water NV", row("W1", nummer="1", crisis="ja"))
    clock.set_local(2026, 11, 25, 7, 0)
    made = {r.period: r.figures.get("cases") for r in crisis_run(ctx)}
    assert made == {"2026-11": 1, "2026-12": 0}
    [case] = _cases(ctx)
    assert case.due_date == date(2026, 11, 30)  # Wednesday 25th + 3 working days
    clock.set_local(2026, 11, 26, 2, 30)
    report = run_period(ctx)
    assert report.figures["cases"] == 1
    assert [c.id for c in _cases(ctx)] == [case.id]


def test_the_monthly_run_keeps_a_crisis_case_whose_signal_has_aged_since(
    ctx: Context,
    clock: Clock,
    partners: None,  # noqa: F811
) -> None:
    """Dated 1 October, the crisis signal is fresh on 10 November (40 days) and stale at the run
    of the 26th (56 days): the case made on the 10th was sent to a team and stays, untouched."""
    clock.set_local(2026, 11, 10, 9, 0)
    dated = csv_file(
        row("H1", nummer="1", crisis="ja", sinds="01-08-2026") + ";01-10-2026",
        header=HEADER + ";signaaldatum",
    )
    ingest_with_retry(
        ctx, partner_id=partner_id(ctx, "Huur BV"), content=dated, filename="huur.csv"
    )
    [made] = [r for r in crisis_run(ctx) if r.run is not None]
    [crisis] = _cases(ctx)
    clock.set_local(2026, 11, 26, 2, 30)
    report = run_period(ctx)
    assert report.figures["stale"] == 1
    assert report.figures["routes"] == {"wijkteam": 1}  # the period's cases: the kept one
    [kept] = _cases(ctx)
    assert (kept.id, kept.run_id, kept.due_date) == (crisis.id, made.run.id, crisis.due_date)
    assert _signals_of(ctx, crisis.id) == 1


def test_a_period_whose_lock_is_held_does_not_stop_the_other(
    ctx: Context,
    clock: Clock,
    partners: None,  # noqa: F811
) -> None:
    """A rerun of October holds its lock at 07:00: November's crisis case is still made."""
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", crisis="ja"))
    if ctx.engine.dialect.name == "postgresql":
        with ctx.engine.connect() as other:  # the rerun's lock, held by another connection
            other.execute(sa.text("SELECT pg_advisory_lock((22099 :: bigint << 32) | 202610)"))
            reports = {r.period: r for r in crisis_run(ctx)}
            other.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    else:  # the rerun's lock file (another process's; SQLite has one writer at a time anyway)
        lock = ctx.settings.data_dir / "locks" / "run-2026-10.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            reports = {r.period: r for r in crisis_run(ctx)}
    assert reports["2026-10"].figures == {"run_in_progress": True}
    assert reports["2026-11"].figures["cases"] == 1


def test_a_crisis_case_at_an_address_signalled_before_goes_to_the_budget_coach(
    ctx: Context,
    clock: Clock,
    partners: None,  # noqa: F811
) -> None:
    """The crisis run applies the recidive rule as the monthly run does: an energy signal in
    September (a single, no case) makes November's crisis case at the address recurrent. The set
    of September's addresses is built from its signals for the crisis run, not kept by it."""
    clock.set_local(2026, 9, 10, 9, 0)
    deliver(ctx, "Energie NV", row("E1", nummer="1"))
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", crisis="ja"), row("H2", nummer="2", crisis="ja"))
    crisis_run(ctx)
    cases = {c.is_recidive: c for c in _cases(ctx)}
    assert cases[True].route == "budgetcoach"
    assert cases[True].classification == "opeenvolgend"
    assert cases[True].signalled_periods == "2026-09"
    assert cases[False].route == "wijkteam"
    assert _signalled(ctx) == {}  # the crisis run writes its cases only; the monthly run keeps
