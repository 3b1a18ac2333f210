"""Rerun: the monthly run again over the same month, as after a late redelivery (not a target).

Timed: :func:`services.matcher.service.run_period` with ``rerun=True`` for the fresh month, after
the matching part's run (if the month has no completed run yet, one is made first, untimed). The
deliveries are the same, so the cases come out the same: the rerun reads and matches everything
again, keeps every case and its id, relinks their signals, and writes only what changed. Phase
timers as in :mod:`bench.matching`, with the rerun's own steps.
"""

from __future__ import annotations

from bench.common import (
    MONTH_PERIOD,
    RUN_CLOCK,
    RUN_DATE,
    FixedClock,
    child_parser,
    measurement,
    say,
    write_results,
)
from bench.matching import instrument, timed_run
from shared.context import build_context
from shared.settings import Settings


def main() -> None:
    args = child_parser(__doc__ or "rerun").parse_args()
    ctx = build_context(Settings(), clock=FixedClock(RUN_CLOCK))
    from services.matcher import repository, service
    from services.matcher.service import run_period

    try:
        with ctx.sessions() as session:
            done = repository.completed_run(session, MONTH_PERIOD) is not None
        if not done:
            say(f"rerun: no completed run for {MONTH_PERIOD} yet: running it first (untimed)")
            run_period(ctx, period=MONTH_PERIOD, as_of=RUN_DATE)
        phases, statements = instrument(ctx)
        phases.wrap(repository, "existing_cases", "rerun: the period's cases and their work")
        phases.wrap(repository, "delete_cases", "rerun: delete cases that no longer qualify")
        phases.wrap(repository, "unlink_cases", "rerun: unlink the kept cases (DELETE)")
        phases.wrap(repository, "update_cases", "rerun: refresh the kept cases (UPDATE)")
        phases.wrap(service, "restore_case_statuses", "rerun: the kept cases' signal statuses")
        say(f"rerun: the monthly run for {MONTH_PERIOD} again")
        run = timed_run(ctx, phases, rerun=True)
        say(f"rerun: {run.report.figures['cases']} cases in {run.wall:.2f} s")
    finally:
        ctx.engine.dispose()
    write_results(
        args.result_file,
        [
            measurement(
                "rerun",
                "Rerun of the month on the same deliveries (not a target)",
                rows=int(run.report.figures["signals_in"]),
                wall_s=run.wall,
                peak_rss=run.rss,
                cases=run.report.figures["cases"],
                phases={k: round(v, 3) for k, v in run.phases.items() if v},
                top_statements=statements.top(),
                cpu=run.cpu,
            )
        ],
    )


if __name__ == "__main__":
    main()
