"""What became of signals (``signal_states``, migration 0019), on each backend: the move of the
states out of ``signals`` and back, the writes that touch only what changes, and the key."""

from __future__ import annotations

import uuid

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.matcher.service import run_period
from services.routing.service import add_contact_attempt
from shared import migrate
from shared.auth import Principal
from shared.context import Context
from shared.db import unit_of_work
from shared.models import (
    ARRIVED,
    Case,
    CaseSignal,
    Contactsoort,
    Delivery,
    Signaalstatus,
    Signal,
    SignalState,
    signal_status,
)
from shared.signal_states import set_states
from tests.conftest import Clock
from tests.helpers import row_versions
from tests.matcher import test_run
from tests.matcher.test_run import november

STALE = Signaalstatus.andere_reden.value
PICKED_UP = Signaalstatus.opgepakt.value

partners = test_run.partners  # the fixture: four partners, one of each kind


def _states(ctx: Context) -> dict[int, tuple[str, str | None]]:
    with ctx.sessions() as session:
        rows = session.execute(
            sa.select(SignalState.signal_id, SignalState.status, SignalState.run_outcome)
        ).all()
    return {signal_id: (status, outcome) for signal_id, status, outcome in rows}


def _worked_month(ctx: Context, clock: Clock) -> None:
    """November matched, one case's household tried (its signals "Opgepakt"), and one signal
    set aside by hand, as a run does."""
    november(ctx, clock)
    run_period(ctx)
    with unit_of_work(ctx.sessions) as session:
        case = session.scalars(sa.select(Case).order_by(Case.priority)).first()
        assert case is not None
        add_contact_attempt(
            session,
            ctx,
            Principal(uuid.uuid4(), "test", "coordinator"),
            case,
            soort=Contactsoort.telefoon,
            datum=clock().astimezone(ctx.tz).date(),
            dagdeel=None,
            bereikt=False,
            notitie=None,
        )
        single = session.scalar(
            sa.select(sa.func.max(Signal.id)).where(
                Signal.id.not_in(sa.select(CaseSignal.signal_id))
            )
        )
        assert single is not None
        session.add(SignalState(signal_id=single, status=STALE, run_outcome="stale"))


def test_the_states_move_into_signals_and_back_with_nothing_lost(
    ctx: Context, clock: Clock, partners: None
) -> None:
    _worked_month(ctx, clock)
    states = _states(ctx)
    assert sorted(states.values()) == [(STALE, "stale"), (PICKED_UP, None)]
    with ctx.sessions() as session:
        links = session.execute(sa.select(CaseSignal.case_id, CaseSignal.signal_id)).all()
        count = session.scalar(sa.select(sa.func.count()).select_from(Signal))
    ctx.engine.dispose()
    url = ctx.settings.resolved_database_url

    migrate.downgrade(url, "0018")
    with ctx.engine.connect() as conn:
        before = conn.execute(
            sa.text("SELECT id, status, run_outcome FROM signals ORDER BY id")
        ).all()
    ctx.engine.dispose()
    moved = {i: (s, o) for i, s, o in before if (s, o) != (ARRIVED, None)}
    assert moved == states
    assert len(before) == count

    migrate.upgrade(url)
    assert _states(ctx) == states
    with ctx.sessions() as session:
        # SQLite copies ``signals`` to drop the columns: the links to them must survive it.
        assert session.execute(sa.select(CaseSignal.case_id, CaseSignal.signal_id)).all() == links
        assert session.scalar(sa.select(sa.func.count()).select_from(Signal)) == count


def test_a_write_adds_or_changes_only_the_states_that_change(
    ctx: Context, clock: Clock, partners: None
) -> None:
    november(ctx, clock)
    with ctx.sessions() as session:
        ids = session.scalars(sa.select(Signal.id).order_by(Signal.id)).all()
    first, second, third = ids[:3]

    def write(*rows: tuple[int, str, str | None]) -> None:
        frame = pl.DataFrame(
            rows,
            schema={"signal_id": pl.Int64, "status": pl.String, "run_outcome": pl.String},
            orient="row",
        )
        with unit_of_work(ctx.sessions) as session:
            set_states(session, frame)

    # As it arrived: no row is added for it.
    write((first, ARRIVED, None), (second, STALE, "stale"))
    assert _states(ctx) == {second: (STALE, "stale")}
    versions = row_versions(ctx, "signal_states", "signal_id")
    write((second, STALE, "stale"), (third, PICKED_UP, None))
    assert _states(ctx) == {second: (STALE, "stale"), third: (PICKED_UP, None)}
    if versions is not None:  # PostgreSQL: the unchanged row was not written again
        assert row_versions(ctx, "signal_states", "signal_id")[second] == versions[second]  # type: ignore[index]
    # Back to as it arrived: the row stays, saying so.
    write((second, ARRIVED, None))
    assert _states(ctx)[second] == (ARRIVED, None)
    with ctx.sessions() as session:
        shown = session.execute(
            sa.select(Signal.id, signal_status())
            .outerjoin(SignalState, SignalState.signal_id == Signal.id)
            .where(Signal.id.in_([first, second, third]))
            .order_by(Signal.id)
        ).all()
    assert [tuple(r) for r in shown] == [(first, ARRIVED), (second, ARRIVED), (third, PICKED_UP)]


def test_a_state_needs_its_signal_and_goes_with_it(
    ctx: Context, clock: Clock, partners: None
) -> None:
    november(ctx, clock)
    with ctx.sessions() as session:
        missing = int(session.scalar(sa.select(sa.func.max(Signal.id))) or 0) + 1
    with pytest.raises((IntegrityError, DBAPIError)), unit_of_work(ctx.sessions) as session:
        session.add(SignalState(signal_id=missing, status=STALE, run_outcome="stale"))
    run_period(ctx, as_of=clock().date().replace(month=12, day=31))  # every signal stale
    assert len(_states(ctx)) == 6
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.delete(Case))
        session.execute(sa.delete(Delivery))  # and with them their signals
    assert _states(ctx) == {}
