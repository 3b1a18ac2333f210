"""Matching: the monthly run over the fresh month, against twelve months of history.

Timed: :func:`services.matcher.service.run_period` for the fresh month, as the night after the
deadline runs it: read the month's signals, six months of earlier cases with their signals and of
earlier signalled addresses, apply the rules (freshness, minimum, repeat, grouping, recidive,
classification, priority), write the cases, their signals and recidive links, every signal's
outcome and the month's addresses, route the new cases (SDV, budget coach, wijkteam; due dates; a
``routed`` event each), audit, commit.

Where the time goes: the repository and bulk functions are wrapped with timers, SQL statements are
timed through SQLAlchemy's cursor events, and the commit through the session's events. After the
timed run (and after its peak RSS is taken), the rules alone are timed on frames in memory.

Measured more than once, in turns with the SQL baseline (``bench.run``): before each turn but the
first, the run before is undone and the month checked to be as the first turn found it
(:func:`month_before_run`). Not timed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Engine, delete, event, func, or_, select

from bench.common import (
    MONTH_PERIOD,
    RUN_CLOCK,
    RUN_DATE,
    CpuMeter,
    FixedClock,
    Phases,
    StatementTimer,
    child_parser,
    measurement,
    peak_rss_bytes,
    read_json,
    say,
    settle,
    write_results,
)
from shared.context import Context, build_context
from shared.models import (
    Case,
    Delivery,
    DeliveryStatus,
    Run,
    Signal,
    SignalState,
    signal_in_delivery,
    signal_status,
)
from shared.settings import Settings

if TYPE_CHECKING:
    from services.matcher.service import RunReport

SIDE_BY_SIDE = "_side by side: "
# The run's figures in the results (and compared between the runs of one benchmark).
KEEP = (
    "signals_in",
    "cases",
    "addresses_matched",
    "recidive",
    "recidive_signals_only",
    "repeat_signals",
    "stale",
    "singles",
    "signals_in_cases",
    "classification",
    "routes",
)
# What a run changes, vacuumed after it is undone (:func:`set_aside_runs`).
RUN_TABLES = ("cases", "case_signals", "case_links", "case_counts", "runs", "signal_states")


def instrument(ctx: Context) -> tuple[Phases, StatementTimer]:
    from services.matcher import repository, service, signalled

    phases = Phases()
    # The two reads run side by side (repository.inputs): the phase is both together; each
    # read's own time is kept apart (names starting with "_"), not added to the phases.
    phases.wrap(repository, "inputs", "read: the month's signals and the history (COPY out)")
    phases.wrap(repository, "period_signals", f"{SIDE_BY_SIDE}the month's signals")
    phases.wrap(repository, "history", f"{SIDE_BY_SIDE}earlier cases and their signals")
    phases.wrap(service, "prepare", f"{SIDE_BY_SIDE}the rules on the month's signals alone")
    phases.wrap(signalled, "before", "read: the earlier months' signalled addresses")
    phases.wrap(service, "finish", "match: the rules in Polars (after the reads)")
    phases.wrap(repository, "insert_cases", "write: cases (COPY)")
    phases.wrap(repository, "insert_case_signals", "write: case_signals (COPY)")
    phases.wrap(repository, "insert_case_links", "write: case_links (COPY)")
    phases.wrap(repository, "set_signal_outcomes", "write: set-aside signals' states")
    phases.wrap(signalled, "store", "write: the month's signalled addresses")
    phases.wrap(service, "plan_routes", "route: plan (SDV register, areas, due dates)")
    phases.wrap(service, "mark_known_to_sdv", "route: signals of households SDV knows")
    phases.wrap(repository, "partners_without_delivery", "other: partners without delivery")

    def before(_session: Any) -> None:
        phases.seconds["_commit_started"] = time.perf_counter()

    def after(_session: Any) -> None:
        started = phases.seconds.pop("_commit_started", None)
        if started is not None:
            phases.seconds["commit"] += time.perf_counter() - started

    event.listen(ctx.sessions, "before_commit", before)
    event.listen(ctx.sessions, "after_commit", after)
    statements = StatementTimer()
    statements.attach(ctx.engine)
    return phases, statements


@dataclass
class TimedRun:
    """One timed monthly run: its report, wall time, CPU, peak RSS and time per phase."""

    report: RunReport
    wall: float
    cpu: dict[str, float | None]
    rss: int
    phases: dict[str, float]


def timed_run(ctx: Context, phases: Phases, *, rerun: bool = False) -> TimedRun:
    """Run the fresh month (``rerun``: again) with the CPU meter; the phase timers end with it
    (whatever they did not account for is the run's bookkeeping and audit)."""
    from services.matcher.service import run_period

    meter = CpuMeter()
    started = time.perf_counter()
    report = run_period(ctx, period=MONTH_PERIOD, as_of=RUN_DATE, rerun=rerun)
    wall = time.perf_counter() - started
    cpu = meter.read()
    rss = peak_rss_bytes()
    phases.restore()
    accounted = sum(v for k, v in phases.seconds.items() if not k.startswith("_"))
    breakdown = {**phases.rounded(), "other (run bookkeeping, audit)": wall - accounted}
    return TimedRun(report, wall, cpu, rss, breakdown)


def month_signal_condition(conn: Connection) -> ColumnElement[bool]:
    """The condition for the fresh month's signals: those of its accepted deliveries."""
    deliveries = conn.execute(
        select(Delivery.id, Delivery.first_signal_id, Delivery.last_signal_id).where(
            Delivery.period == MONTH_PERIOD, Delivery.status == DeliveryStatus.accepted
        )
    ).all()
    return or_(*(signal_in_delivery(d) for d in deliveries))


def set_aside_runs(engine: Engine) -> bool:
    """Undo the month's run, if one was made (``bench.run`` measures the run more than once, with
    the SQL baseline before each): its cases go, and with them their signals' links, recidive
    links and routing (cascades) and their counts (the database's triggers); the month's
    signals' states go (``signal_states``: back to none and "nog niet opgepakt", as they arrived);
    the run's row goes. The audit trail keeps the run's event: it is append-only. Whether
    there was a run to undo; the caller vacuums :data:`RUN_TABLES` and takes a checkpoint."""
    with engine.begin() as conn:
        runs = conn.execute(select(Run.id).where(Run.period == MONTH_PERIOD)).scalars().all()
        if not runs:
            return False
        cases = conn.execute(delete(Case).where(Case.period == MONTH_PERIOD)).rowcount
        signals = conn.execute(
            delete(SignalState).where(
                SignalState.signal_id.in_(select(Signal.id).where(month_signal_condition(conn)))
            )
        ).rowcount
        conn.execute(delete(Run).where(Run.id.in_(runs)))
    say(f"the run before undone: {cases} cases removed, {signals} signals' states removed")
    return True


def month_before_run(engine: Engine, state: Path) -> bool:
    """:func:`set_aside_runs`, then the check that the month is as the first turn found it: the
    month's signals counted by status and outcome, its cases and runs (none), as recorded by the
    first turn beside the setup's ``state`` file. Whether a run was undone."""
    undone = set_aside_runs(engine)
    with engine.connect() as conn:
        signals = conn.execute(
            select(signal_status(), SignalState.run_outcome, func.count())
            .select_from(Signal)
            .outerjoin(SignalState, SignalState.signal_id == Signal.id)
            .where(month_signal_condition(conn))
            .group_by(signal_status(), SignalState.run_outcome)
            .order_by(signal_status(), SignalState.run_outcome)
        ).all()
        cases = conn.execute(select(func.count()).where(Case.period == MONTH_PERIOD)).scalar()
        runs = conn.execute(select(func.count()).where(Run.period == MONTH_PERIOD)).scalar()
    census = {"signals": [list(row) for row in signals], "cases": cases, "runs": runs}
    first = state.with_name("month-before-run.json")
    if not first.exists():
        write_results(first, [census])
    elif read_json(first) != [census]:
        raise SystemExit("the month is not as the first turn found it: the undo was incomplete")
    return undone


def same_as_first_run(figures: dict[str, Any], state: Path) -> None:
    """Every run of the month finds what the first found (else the undo left something behind):
    the first run's figures are recorded beside the setup's ``state`` file, a later run's
    compared with them, and a difference stops the part."""
    first = state.with_name("matching-figures.json")
    if not first.exists():
        write_results(first, [figures])
    elif read_json(first) != [json.loads(json.dumps(figures))]:
        raise SystemExit("the run found other figures than the first: the undo was incomplete")


def main() -> None:
    args = child_parser(__doc__ or "matching").parse_args()
    ctx = build_context(Settings(), clock=FixedClock(RUN_CLOCK))
    vacuum = RUN_TABLES if month_before_run(ctx.engine, args.state) else ()
    phases, statements = instrument(ctx)
    say(f"matching: the database settled (CHECKPOINT) in {settle(vacuum=vacuum):.1f} s")
    say(f"matching: the monthly run for {MONTH_PERIOD}")
    try:
        run = timed_run(ctx, phases)
        wall, figures = run.wall, run.report.figures
        say(f"matching: {figures['signals_in']} signals, {figures['cases']} cases in {wall:.2f} s")
        rules = rules_only(ctx)
    finally:
        phases.restore()
        ctx.engine.dispose()
    kept = {k: figures.get(k) for k in KEEP}
    same_as_first_run(kept, args.state)
    write_results(
        args.result_file,
        [
            measurement(
                "matching",
                "Matching: monthly run (read, rules, write cases and outcomes, route, commit)",
                rows=int(figures["signals_in"]),
                wall_s=wall,
                peak_rss=run.rss,
                figures=kept,
                history_rows=rules["history_rows"],
                phases={k: round(v, 3) for k, v in run.phases.items()},
                reads_side_by_side={
                    k.removeprefix(SIDE_BY_SIDE): round(v, 3)
                    for k, v in phases.seconds.items()
                    if k.startswith(SIDE_BY_SIDE)
                },
                top_statements=statements.top(),
                cpu=run.cpu,
            ),
            measurement(
                "matching_rules",
                "Matching: the rules alone on frames in memory (no database)",
                rows=int(figures["signals_in"]),
                wall_s=rules["match_s"],
                peak_rss=None,
                read_s=rules["read_s"],
                history_rows=rules["history_rows"],
            ),
        ],
    )


def rules_only(ctx: Context) -> dict[str, Any]:
    """Read the same frames again and time :func:`services.matcher.rules.match` alone."""
    from services.matcher import repository, signalled
    from services.matcher.rules import match
    from services.matcher.service import match_config
    from shared.periods import Period, months_before

    config = match_config(ctx, Period.parse(MONTH_PERIOD), RUN_DATE)
    with ctx.sessions() as session:
        started = time.perf_counter()
        signals = repository.period_signals(session, MONTH_PERIOD)
        earlier = repository.history(
            session,
            str(config.earliest_history_period),
            str(config.period),
            tz=ctx.settings.timezone,
        )
        addresses = signalled.before(
            session,
            str(config.earliest_history_period),
            str(config.period),
            check=signalled.key_check(ctx.hasher),
            intact_since=months_before(ctx.now(), ctx.settings.retention_months),
            keep=False,
        )
        read = time.perf_counter() - started
    started = time.perf_counter()
    match(signals, earlier, config, addresses.frame)
    return {
        "read_s": round(read, 3),
        "match_s": time.perf_counter() - started,
        "history_rows": earlier.height,
    }


if __name__ == "__main__":
    main()
