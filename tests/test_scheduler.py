"""The scheduler's clock arithmetic and its loop (with a fake clock and a recording runner)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler import Job, loop, next_job, next_purge, next_run
from shared.context import Context
from tests.conftest import Clock

AMS = ZoneInfo("Europe/Amsterdam")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=AMS)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(2026, 11, 23, 12, 0), at(2026, 11, 26, 2, 30)),
        (at(2026, 11, 26, 2, 30), at(2026, 11, 27, 2, 30)),
        (at(2026, 11, 27, 3, 0), at(2026, 12, 26, 2, 30)),
        (at(2026, 12, 28, 0, 0), at(2027, 1, 26, 2, 30)),
    ],
)
def test_next_run(now: datetime, expected: datetime) -> None:
    assert next_run(now, 25, AMS) == expected


def test_next_run_rolls_over_short_months() -> None:
    # Deadline on the 28th: the safety-net run of February falls on 2 March.
    assert next_run(at(2027, 3, 1, 3, 0), 28, AMS) == at(2027, 3, 2, 2, 30)


def test_next_purge_and_which_job_comes_first() -> None:
    assert next_purge(at(2026, 11, 23, 3, 15), AMS) == at(2026, 11, 24, 3, 15)
    assert next_purge(at(2026, 11, 23, 1, 0), AMS) == at(2026, 11, 23, 3, 15)
    assert next_job(at(2026, 11, 26, 1, 0), 25, AMS).name == "run"
    assert next_job(at(2026, 11, 26, 2, 45), 25, AMS).name == "purge"
    assert next_job(at(2026, 11, 26, 3, 30), 25, AMS) == Job("crisis", at(2026, 11, 26, 7, 0))
    # Across the change to winter time the local hour stays 03:15.
    assert next_purge(at(2026, 10, 25, 4, 0), AMS).astimezone(UTC).hour == 2


def test_loop_runs_each_job_when_due(ctx: Context, clock: Clock) -> None:
    clock.set_local(2026, 11, 26, 2, 29)
    ran: list[tuple[str, str]] = []
    stop = threading.Event()

    def wait(seconds: float) -> bool:  # time passes at once
        clock.current += timedelta(seconds=seconds)
        return stop.is_set()

    def runner(_ctx: Context, name: str) -> None:
        ran.append((name, clock().astimezone(AMS).strftime("%d %H:%M")))
        if len(ran) == 4:
            stop.set()

    loop(ctx, stop, runner, wait)
    assert ran == [
        ("run", "26 02:30"),
        ("purge", "26 03:15"),
        ("crisis", "26 07:00"),
        ("run", "27 02:30"),
    ]
