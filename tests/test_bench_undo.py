"""The benchmark's undo of the month's run (``bench.matching``), on both backends: what the SQL
baseline and the run measure in their second and third turns must be the month the first turn
found, and an undo that leaves something behind must stop the benchmark, not skew it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.common import MONTH_PERIOD
from bench.matching import month_before_run
from services.matcher.service import run_period
from shared.context import Context
from shared.db import unit_of_work
from shared.models import ARRIVED, Case, Run, Signal, SignalState
from tests.conftest import Clock
from tests.helpers import register, row
from tests.matcher.test_run import deliver

AS_OF = date(2026, 10, 15)  # the signals of 2026-08-27 are stale then (45 days), set aside
SINCE = "01-07-2026"


@pytest.fixture
def partners(ctx: Context) -> None:
    for name, kind in (("Zorg UA", "zorg"), ("Energie NV", "energie"), ("Water NV", "water")):
        register(ctx, name, kind)


def month(ctx: Context, clock: Clock) -> None:
    """Deliveries for the bench's month: an early one (stale at the run) and two that match."""
    clock.set_local(2026, 8, 27, 9, 0)
    deliver(ctx, "Water NV", row("W1", nummer="7", sinds=SINCE), row("W2", nummer="8", sinds=SINCE))
    clock.set_local(2026, 9, 20, 9, 0)
    deliver(ctx, "Zorg UA", row("Z1", nummer="1", sinds=SINCE), row("Z2", nummer="2", sinds=SINCE))
    deliver(
        ctx, "Energie NV", row("E1", nummer="1", sinds=SINCE), row("E2", nummer="3", sinds=SINCE)
    )
    clock.set_local(2026, 10, 15, 2, 0)


def count(ctx: Context, model: type[Case] | type[Run]) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def test_each_turn_finds_the_month_the_first_found(
    ctx: Context, clock: Clock, partners: None, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    month(ctx, clock)
    assert month_before_run(ctx.engine, state) is False  # nothing to undo: the month recorded
    first = run_period(ctx, period=MONTH_PERIOD, as_of=AS_OF).figures
    assert first["cases"] == 1
    assert first["stale"] == 2  # set aside: their outcome and status written
    assert month_before_run(ctx.engine, state) is True  # undone, and as the first turn found it
    assert count(ctx, Case) == count(ctx, Run) == 0
    again = run_period(ctx, period=MONTH_PERIOD, as_of=AS_OF)
    assert not again.already_done
    assert {k: again.figures[k] for k in ("cases", "stale")} == {"cases": 1, "stale": 2}


def test_an_undo_that_leaves_something_behind_stops_the_benchmark(
    ctx: Context, clock: Clock, partners: None, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    month(ctx, clock)
    month_before_run(ctx.engine, state)
    run_period(ctx, period=MONTH_PERIOD, as_of=AS_OF)
    assert month_before_run(ctx.engine, state) is True
    with unit_of_work(ctx.sessions) as session:  # a signal the undo did not give back
        first = session.scalar(sa.select(sa.func.min(Signal.id)))
        session.merge(SignalState(signal_id=first, status=ARRIVED, run_outcome="stale"))
    with pytest.raises(SystemExit, match="not as the first turn found it"):
        month_before_run(ctx.engine, state)
