"""``vroegsignaal scheduler``: the monthly run, the daily crisis run and purge, without cron.

Where cron or a Kubernetes CronJob is available, use those (``deploy/cron/``, ``deploy/k8s/``).
Docker Compose has neither, so ``compose.yaml`` runs this loop. The schedule is the same:

* the **run** at 02:30 Amsterdam time on the day after the delivery deadline (the 26th) and again
  on the day after that as a safety net (a completed period answers "already done");
* the **purge** every night at 03:15;
* the **crisis run** every morning at 07:00 (the cases of the crisis signals delivered so far).

Every job is safe to start twice (the runs take their per-period lock and find nothing new; the
purge finds nothing left), so a restart of the scheduler at the wrong moment does no harm.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.context import Context
from shared.errors import AppError

log = logging.getLogger("vroegsignaal.scheduler")

RUN_AT = time(2, 30)
PURGE_AT = time(3, 15)
CRISIS_AT = time(7, 0)


@dataclass(frozen=True)
class Job:
    name: str
    due: datetime


def next_run(after: datetime, deadline_day: int, tz: ZoneInfo) -> datetime:
    """The first monthly-run moment strictly after ``after``: 02:30 on deadline+1 and +2."""
    local = after.astimezone(tz)
    # Start a month back: the safety-net run of the previous period may still lie ahead.
    year, month = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    for _ in range(4):
        deadline = date(year, month, deadline_day)
        for days_after in (1, 2):
            moment = datetime.combine(deadline + timedelta(days=days_after), RUN_AT, tz)
            if moment > local:
                return moment
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable")


def next_daily(after: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The first moment strictly after ``after`` at local time ``at``."""
    local = after.astimezone(tz)
    moment = datetime.combine(local.date(), at, tz)
    return moment if moment > local else datetime.combine(local.date() + timedelta(days=1), at, tz)


def next_purge(after: datetime, tz: ZoneInfo) -> datetime:
    return next_daily(after, PURGE_AT, tz)


def next_job(after: datetime, deadline_day: int, tz: ZoneInfo) -> Job:
    """The job due first (on a tie, in this order: run, purge, crisis)."""
    jobs = (
        Job("run", next_run(after, deadline_day, tz)),
        Job("purge", next_purge(after, tz)),
        Job("crisis", next_daily(after, CRISIS_AT, tz)),
    )
    return min(jobs, key=lambda job: job.due)


def run_job(ctx: Context, name: str) -> None:
    """One job; failures are logged (by type) and retried at the next slot."""
    from services.matcher.service import crisis_run, run_period
    from services.retention import purge
    from shared import audit
    from shared.db import unit_of_work

    try:
        if name == "run":
            report = run_period(ctx)
            log.info(
                "scheduled run",
                extra={"period": report.run.period, "already_done": report.already_done},
            )
        elif name == "crisis":
            made = {r.period: r.figures.get("cases", 0) for r in crisis_run(ctx) if r.run}
            log.info("scheduled crisis run", extra={"cases": sum(made.values())})
        else:
            with unit_of_work(ctx.sessions) as session:
                result = purge(ctx, session)
                audit.record(
                    session,
                    action="retention.purge",
                    now=ctx.now(),
                    object_type="retention",
                    details=result.as_dict(),
                    system_actor="scheduler",
                )
            log.info("scheduled purge", extra={"cases_deleted": result.cases_deleted})
    except AppError as exc:
        log.warning("scheduled job refused", extra={"job": name, "status": exc.status})
    except Exception as exc:
        log.error("scheduled job failed", extra={"job": name, "error": type(exc).__name__})


def loop(
    ctx: Context,
    stop: threading.Event | None = None,
    runner: Callable[[Context, str], None] = run_job,
    wait: Callable[[float], bool] | None = None,
) -> None:
    """Sleep until the next job, run it, repeat; ``stop`` ends the loop (also mid-sleep)."""
    stop = stop or threading.Event()
    wait = wait or stop.wait
    while not stop.is_set():
        job = next_job(ctx.now(), ctx.settings.delivery_deadline_day, ctx.tz)
        log.info("next job", extra={"job": job.name, "at": job.due.isoformat()})
        seconds = (job.due - ctx.now()).total_seconds()
        if wait(max(0.0, min(seconds, 3600.0))):
            return
        if ctx.now() >= job.due:
            runner(ctx, job.name)
