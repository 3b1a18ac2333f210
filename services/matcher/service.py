"""The monthly run: read a closed period's signals, apply the rules, write cases; one transaction.

* **Exactly once.** On PostgreSQL the run takes a transaction-level advisory lock for its period
  (released when the transaction ends, also when the process dies); on SQLite an exclusive file
  lock beside the database. A second run of the same period at the same moment fails at once with
  :class:`RunInProgress`. A period that already has a completed run is reported as done, unless
  ``rerun`` is asked for.
* **All or nothing.** Matching, writing cases and routing them (``services.routing``) happen in one
  transaction: a run completes or leaves no trace.
* **Rerun** refreshes the period's cases from the current deliveries. A case for an address that is
  still a case keeps its id and the work recorded on it; a case for an address that no longer
  qualifies is removed if nobody has worked on it, and kept (unchanged) if somebody has. The
  signals' freshness is judged as of the run date of the period's first run (unless ``as_of``
  says otherwise): what a rerun finds depends on the deliveries and the settings, not on the day
  it is done, so that a rerun weeks later does not drop cases because their signals have aged
  meanwhile. A case it makes for the first time is due counted from the day it is made.
* **Crisis runs** (:func:`crisis_run`, daily) make the cases of crisis signals before the monthly
  run; the monthly run takes them in as a rerun takes its earlier cases.
"""

from __future__ import annotations

import fcntl
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlalchemy.orm import Session

from services.matcher import repository, signalled
from services.matcher.rules import (
    OUTCOME_BELOW_MINIMUM,
    OUTCOME_MATCHED,
    OUTCOME_REPEAT,
    OUTCOME_SINGLE,
    OUTCOME_STALE,
    MatchConfig,
    Prepared,
    finish,
    prepare,
)
from services.routing.service import (
    ROUTED_COLUMNS,
    mark_known_to_sdv,
    plan_routes,
    restore_case_statuses,
)
from shared import audit
from shared.bulk import is_postgres
from shared.context import Context
from shared.errors import Conflict
from shared.ids import time_ordered_uuid_texts
from shared.models import Run, RunKind, RunStatus, Signaalstatus
from shared.periods import Period, last_closed_period, local_today, months_before, open_period

# What a partner's signal status becomes after the run (DDAS EnumSignaalstatus).
STATUS_AFTER_RUN = {
    OUTCOME_MATCHED: Signaalstatus.nog_niet_opgepakt.value,
    OUTCOME_SINGLE: Signaalstatus.nog_niet_opgepakt.value,
    OUTCOME_REPEAT: Signaalstatus.herhaalde_melding.value,
    OUTCOME_STALE: Signaalstatus.andere_reden.value,
    OUTCOME_BELOW_MINIMUM: Signaalstatus.andere_reden.value,
}


class RunInProgress(Conflict):
    slug = "run-in-progress"
    title = "Another run is in progress"


@dataclass
class RunReport:
    """What a run did; ``already_done``: the period had a completed run and no rerun was asked."""

    run: Run
    figures: dict[str, Any]
    cases: pl.DataFrame = field(default_factory=pl.DataFrame)
    already_done: bool = False


def match_config(ctx: Context, period: Period, run_date: date) -> MatchConfig:
    s = ctx.settings
    return MatchConfig(
        period=period,
        run_date=run_date,
        freshness_days=s.freshness_days,
        recidive_months=s.recidive_months,
        min_amount_cents={str(kind): cents for kind, cents in s.min_amount_cents.items()},
        standalone_kinds=frozenset(str(kind) for kind in s.standalone_kinds),
        crisis_standalone=s.crisis_standalone,
    )


def _advisory_key(period: Period) -> int:
    # A fixed namespace in the high bits keeps clear of other users of advisory locks.
    return (0x5653 << 32) | (period.year * 100 + period.month)


@contextmanager
def _file_lock(ctx: Context, period: Period) -> Iterator[None]:
    """SQLite: an exclusive lock file per period beside the database (one host by nature)."""
    if ctx.engine.dialect.name != "sqlite":
        yield
        return
    lock_dir = ctx.settings.data_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"run-{period}.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(f"another run for {period} is in progress") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def period_session(ctx: Context, target: Period) -> Iterator[Session]:
    """A session that holds the period's run lock (a monthly run, a rerun and a crisis run of the
    same period never overlap; :class:`RunInProgress` when another holds it), rolled back at the
    end unless committed."""
    with _file_lock(ctx, target):
        session = ctx.sessions()
        try:
            if is_postgres(session):
                locked = session.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _advisory_key(target)}
                ).scalar()
                if not locked:
                    raise RunInProgress(f"another run for {target} is in progress")
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def run_period(
    ctx: Context,
    *,
    period: str | None = None,
    as_of: date | None = None,
    rerun: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> RunReport:
    """Match one closed period and store its cases; see the module docstring."""
    now = ctx.now()
    deadline_day, tz = ctx.settings.delivery_deadline_day, ctx.tz
    target = Period.parse(period) if period else last_closed_period(now, deadline_day, tz)
    current = open_period(now, deadline_day, tz)
    if target >= current:
        closes = target.deadline(deadline_day, tz).astimezone(tz)
        raise Conflict(
            f"the delivery window for {target} is still open until {closes.isoformat()}; "
            "run after it closes",
            period=str(target),
        )
    run_date = as_of or local_today(now, tz)
    started = time.perf_counter()
    with period_session(ctx, target) as session:
        done = repository.completed_run(session, str(target))
        if done is not None and not rerun:
            session.rollback()
            return RunReport(run=done, figures=json.loads(done.figures), already_done=True)
        # A rerun judges freshness as the period's first run did (see the module text).
        first = repository.first_completed_run(session, str(target)) if done else None
        matched_as_of = as_of or (first.run_date if first is not None else run_date)
        config = match_config(ctx, target, matched_as_of)
        progress(f"reading the signals of {target}")
        deliveries = repository.current_deliveries(session, str(target))
        prepared, earlier, addresses = _inputs(
            session, ctx, config, keep=True, deliveries=deliveries
        )
        signals = prepared.signals
        progress(f"matching {signals.height} signals against {earlier.height} earlier ones")
        result = finish(prepared, earlier, addresses.frame)
        figures = dict(result.figures)
        figures["recidive_periods"] = addresses.periods
        missing = repository.partners_without_delivery(session, deliveries)
        figures["partners_without_delivery"] = missing
        run = _new_run(session, config, RunKind.monthly, run_date, now, rerun=done is not None)
        # What it judged: the list of single signals is read from these (services.routing.singles).
        run.delivery_ids = json.dumps(sorted(str(d[0]) for d in deliveries))
        progress(f"writing {result.cases.height} cases")
        # A rerun's earlier cases, or the cases crisis runs made before the monthly run: kept
        # with their ids, work, route and due date, and given this run's signals.
        found = repository.existing_cases(session, run.period)
        existing = None if found.is_empty() else found
        cases, routed = _write_cases(
            session,
            run,
            result.cases,
            existing=existing,
            now=now,
            plan=lambda fresh: plan_routes(session, ctx, run, fresh),
            facts=signals.select(*repository.SIGNAL_FACTS),
        )
        repository.set_signal_outcomes(
            session, _outcomes_to_store(result.outcomes, rerun=run.rerun)
        )
        # For the recidive rule of the next periods' runs.
        signalled.store(
            session,
            run.period,
            signals["address_hash"],
            check=signalled.key_check(ctx.hasher),
            intact_since=_purge_cutoff(ctx),
        )
        progress("marking the signals of households SDV already knows")
        mark_known_to_sdv(session, routed)
        if existing is not None:
            # The earlier cases that are still there: matched again, or kept for their work.
            remaining = existing.filter(
                pl.col("worked") | pl.col("address_hash").is_in(cases["address_hash"].implode())
            )
            restore_case_statuses(session, remaining, STATUS_AFTER_RUN.values())
        if existing is None:
            figures["routes"] = _route_counts(routed)
            figures["outside_areas"] = (
                int(routed["outside_areas"].sum()) if not routed.is_empty() else 0
            )
        else:
            # Earlier cases kept (a rerun's, a crisis run's): the period's cases, all of them.
            figures["routes"], figures["outside_areas"] = repository.route_counts(
                session, run.period
            )
        audit.record(
            session,
            action="run.rerun" if run.rerun else "run.completed",
            now=now,
            system_actor="matcher",
            object_type="run",
            object_id=run.id,
            details={"period": run.period, "cases": figures.get("cases", 0)},
        )
        run.duration_ms = int((time.perf_counter() - started) * 1000)
        run.finished_at = ctx.now()
        run.figures = json.dumps(figures, sort_keys=True)
        session.commit()
        return RunReport(run=run, figures=figures, cases=cases)


@dataclass
class CrisisReport:
    """What a crisis run did for one period: ``run`` is None when it made no case."""

    period: str
    run: Run | None
    figures: dict[str, Any] = field(default_factory=dict)


def crisis_run(
    ctx: Context, *, as_of: date | None = None, progress: Callable[[str], None] = lambda _: None
) -> list[CrisisReport]:
    """Make the cases of the crisis signals delivered so far, at once (daily, ``vroegsignaal
    crisis``): the Wgs gives a household facing eviction or disconnection a first talk within
    three working days of the report, not of the monthly run after the deadline.

    For the open period, and for the period whose window closed last while its monthly run is
    still to come: the period's signals so far go through the same rules as in the monthly run
    (freshness, minimum, repeats, recidive), and each address whose signals make a case with a
    crisis signal among them, and that has no case of the period yet, gets one now, routed
    like the monthly run's and due ``VS_CRISIS_DUE_WORKING_DAYS`` working days from today.
    Nothing else is written: the monthly run decides the other signals, and takes these cases
    in as a rerun takes earlier ones (id, work, route and due date kept, later signals linked).
    A period with its monthly run done is left alone, and so, until the next crisis run, is one
    whose lock another run holds. Each period's run holds the period's lock and is one
    transaction, an audit event and a row of ``runs`` (kind ``crisis``) when it made cases; run
    twice, the second finds nothing new. The monthly run keeps the cases a crisis run made,
    also one whose signals no longer make a case then (a team may be on its way), and their
    run: the day they were matched.
    """
    now = ctx.now()
    deadline_day, tz = ctx.settings.delivery_deadline_day, ctx.tz
    today = as_of or local_today(now, tz)
    periods = [last_closed_period(now, deadline_day, tz), open_period(now, deadline_day, tz)]
    reports = []
    for target in periods:
        try:
            reports.append(_crisis_cases(ctx, target, today, now, progress))
        except RunInProgress:
            # Another run of the period (a rerun, say) holds its lock: the other period's crisis
            # cases are still made; this one's at the next crisis run.
            reports.append(CrisisReport(str(target), None, {"run_in_progress": True}))
    return reports


def _crisis_cases(
    ctx: Context, target: Period, today: date, now: datetime, progress: Callable[[str], None]
) -> CrisisReport:
    started = time.perf_counter()
    with ctx.sessions() as session:  # first without the lock: a done period needs none
        if repository.completed_run(session, str(target)) is not None:
            return CrisisReport(str(target), None, {"monthly_run_done": True})
    with period_session(ctx, target) as session:
        if repository.completed_run(session, str(target)) is not None:
            return CrisisReport(str(target), None, {"monthly_run_done": True})
        config = match_config(ctx, target, today)
        progress(f"reading the signals of {target} delivered so far")
        prepared, earlier, addresses = _inputs(session, ctx, config, keep=False)
        result = finish(prepared, earlier, addresses.frame)
        made = repository.case_addresses(session, str(target))
        new = result.cases.filter(pl.col("has_crisis")).join(made, on="address_hash", how="anti")
        figures: dict[str, Any] = {
            "crisis_signals": int(prepared.signals["crisis"].sum()),
            "cases": new.height,
            "cases_before": made.height,
            "recidive_periods": addresses.periods,
        }
        if new.is_empty():
            return CrisisReport(str(target), None, figures)
        run = _new_run(session, config, RunKind.crisis, today, now, rerun=False)
        progress(f"writing {new.height} crisis cases")
        signals = prepared.signals
        _, routed = _write_cases(
            session,
            run,
            new,
            existing=None,
            now=now,
            plan=lambda fresh: plan_routes(session, ctx, run, fresh),
            facts=signals.select(*repository.SIGNAL_FACTS),
        )
        mark_known_to_sdv(session, routed)
        figures["routes"] = _route_counts(routed)
        audit.record(
            session,
            action="run.crisis",
            now=now,
            system_actor="matcher",
            object_type="run",
            object_id=run.id,
            details={"period": run.period, "cases": new.height},
        )
        run.duration_ms = int((time.perf_counter() - started) * 1000)
        run.finished_at = ctx.now()
        run.figures = json.dumps(figures, sort_keys=True)
        session.commit()
        return CrisisReport(str(target), run, figures)


def _inputs(
    session: Session,
    ctx: Context,
    config: MatchConfig,
    *,
    keep: bool,
    deliveries: repository.Ranges | None = None,
) -> tuple[Prepared, pl.DataFrame, signalled.Earlier]:
    """The period's signals (of ``deliveries``, when given: its current deliveries), put
    through the rules that need only them, its history (the earlier cases), and the addresses
    signalled in the earlier periods (with ``keep``, the sets built for periods that had none
    are stored)."""
    first, period = str(config.earliest_history_period), str(config.period)
    prepared, earlier = repository.inputs(
        session,
        first,
        period,
        lambda signals: prepare(signals, config),
        tz=ctx.settings.timezone,
        deliveries=deliveries,
    )
    addresses = signalled.before(
        session,
        first,
        period,
        check=signalled.key_check(ctx.hasher),
        intact_since=_purge_cutoff(ctx),
        keep=keep,
    )
    return prepared, earlier, addresses


def _purge_cutoff(ctx: Context) -> datetime:
    """The purge's cutoff for signals without a case (``services.retention``): the addresses of
    deliveries received before it may be gone."""
    return months_before(ctx.now(), ctx.settings.retention_months)


def _new_run(
    session: Session,
    config: MatchConfig,
    kind: RunKind,
    run_date: date,
    now: datetime,
    *,
    rerun: bool,
) -> Run:
    """A completed run's row, added; its figures and duration are filled in at its end."""
    run = Run(
        id=uuid.uuid4(),
        period=str(config.period),
        kind=kind,
        run_date=run_date,
        status=RunStatus.completed,
        rerun=rerun,
        parameters=json.dumps(_parameters(config), sort_keys=True),
        figures="{}",
        started_at=now,
        finished_at=now,
        duration_ms=0,
    )
    repository.add_run(session, run)
    return run


def _outcomes_to_store(outcomes: pl.DataFrame, *, rerun: bool) -> pl.DataFrame:
    """The signals whose stored outcome and status (``signal_states``) the run must write.

    ``run_outcome`` records why the run set a signal aside (repeat, stale, below the minimum);
    signals it used are in ``case_signals`` and the rest were single, so both keep no outcome and
    the status they arrived with. A first run therefore writes only the signals it set aside (a
    few percent: at a million signals, updating every row was most of the run). A rerun gives all of
    the period's signals, so that what the earlier run set aside and this one did not is reset;
    only those whose outcome or status changes are written (:func:`repository.set_signal_outcomes`),
    and then the cases' own statuses are given back (:func:`restore_case_statuses`).
    """
    stored = outcomes.select(
        "signal_id",
        pl.when(pl.col("outcome").is_in([OUTCOME_MATCHED, OUTCOME_SINGLE]))
        .then(None)
        .otherwise(pl.col("outcome"))
        .alias("outcome"),
        pl.col("outcome").replace_strict(STATUS_AFTER_RUN).alias("status"),
    )
    return stored if rerun else stored.filter(pl.col("outcome").is_not_null())


def _route_counts(routed: pl.DataFrame) -> dict[str, int]:
    if routed.is_empty():
        return {}
    counts = routed.group_by("route").len().sort("route")
    return {str(r): int(n) for r, n in counts.iter_rows()}


def _parameters(config: MatchConfig) -> dict[str, Any]:
    return {
        "period": str(config.period),
        "run_date": config.run_date.isoformat(),
        "freshness_days": config.freshness_days,
        "recidive_months": config.recidive_months,
        "min_amount_cents": config.min_amount_cents,
        "standalone_kinds": sorted(config.standalone_kinds),
        "crisis_standalone": config.crisis_standalone,
    }


CASE_FIELDS = (
    "pc4",
    "pc6_hash",
    "priority",
    "classification",
    "is_recidive",
    "signalled_periods",
    "has_rent",
    "has_crisis",
    "has_warm_handover",
    "partner_count",
    "signal_count",
    "total_cent",
    "kinds",
)


def _write_cases(
    session: Session,
    run: Run,
    matched: pl.DataFrame,
    *,
    existing: pl.DataFrame | None,
    now: datetime,
    plan: Callable[[pl.DataFrame], pl.DataFrame],
    facts: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Insert (or, on a rerun, reconcile with the ``existing`` ones) the period's cases and
    their links.

    New cases are routed first (``plan``: SDV, budget coach or wijkteam, team, due date) and
    inserted with their route, so they are written once. Each link carries its signal's partner,
    amount and date (``facts``), which later runs read instead of the signals. Returns the cases and
    the routing.
    """
    cases = matched.with_columns(
        pl.col("kinds").list.join(",").alias("kinds"),
        pl.col("partner_count").cast(pl.Int32),
        pl.col("signal_count").cast(pl.Int32),
    )
    if existing is not None and not existing.is_empty():
        cases = cases.join(
            existing.select("address_hash", "case_id", "by_crisis_run"),
            on="address_hash",
            how="left",
        )
        gone = existing.join(cases.select("address_hash"), on="address_hash", how="anti")
        repository.delete_cases(session, gone.filter(~pl.col("worked"))["case_id"].to_list())
        kept = cases.filter(pl.col("case_id").is_not_null())
        repository.unlink_cases(session, [uuid.UUID(c) for c in kept["case_id"]])
        repository.update_cases(
            session, kept.select("case_id", "by_crisis_run", *CASE_FIELDS), run_id=run.id, now=now
        )
    else:
        cases = cases.with_columns(pl.lit(None, dtype=pl.String).alias("case_id"))

    fresh = cases.filter(pl.col("case_id").is_null())
    fresh = fresh.with_columns(
        pl.Series("case_id", time_ordered_uuid_texts(fresh.height, now), dtype=pl.String),
        pl.lit(True).alias("is_new"),
    )
    kept = cases.filter(pl.col("case_id").is_not_null()).with_columns(pl.lit(False).alias("is_new"))
    cases = pl.concat([kept, fresh])
    routed = plan(fresh)
    routes = (
        fresh.select("case_id").join(routed, on="case_id", how="left", maintain_order="left")
        if not routed.is_empty()
        else fresh.select("case_id")
    )
    repository.insert_cases(
        session,
        fresh.select(
            pl.col("case_id").alias("id"),
            pl.lit(str(run.id)).alias("run_id"),
            pl.lit(run.period).alias("period"),
            "address_hash",
            *CASE_FIELDS,
            pl.lit("open").alias("status"),
            pl.lit(now).alias("created_at"),
            pl.lit(now).alias("updated_at"),
        ).hstack(
            routes.select(*ROUTED_COLUMNS, pl.lit(now).alias("routed_at")).get_columns()
            if not routed.is_empty()
            else []
        ),
    )
    repository.insert_case_signals(
        session,
        cases.select("case_id", pl.col("signal_ids").alias("signal_id"))
        .explode("signal_id")
        .join(facts, on="signal_id", how="left"),
    )
    repository.insert_case_links(
        session,
        cases.select("case_id", pl.col("earlier_case_ids").alias("earlier_case_id"))
        .explode("earlier_case_id")
        .drop_nulls("earlier_case_id"),
    )
    return cases.sort("priority"), routed
