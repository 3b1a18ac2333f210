"""What the benchmark parts share: scales, periods and clocks, the child protocol, timers.

A part runs as ``python -m bench.<part> --scale S --data DIR --state FILE --result-file FILE``
with the scratch database and the keys in its environment (``VS_DATABASE_URL``,
``VS_ENCRYPTION_KEYS``, ``VS_ADDRESS_HASH_KEY``, ``VS_ENVIRONMENT=production``), exactly as the
services read them. It writes a JSON list of measurements to ``--result-file``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

AMSTERDAM = ZoneInfo("Europe/Amsterdam")

# The fresh month the matching run takes, and the period of the single large partner file. Fixed,
# so that cached data stays valid; both lie in the past, so the generator never clamps dates.
MONTH_PERIOD = "2026-09"
INGEST_PERIOD = "2026-10"
# Inside each period's delivery window (it closes at 00:00 on the 25th).
MONTH_INGEST_CLOCK = datetime(2026, 9, 24, 12, 0, tzinfo=AMSTERDAM)
INGEST_CLOCK = datetime(2026, 10, 24, 12, 0, tzinfo=AMSTERDAM)
# The night after the month's deadline: when the monthly run happens.
RUN_CLOCK = datetime(2026, 9, 25, 2, 0, tzinfo=AMSTERDAM)
RUN_DATE = date(2026, 9, 25)

INGEST_PARTNER = ("Zorgverzekeraar Landelijk", "zorg")  # delivers the single large file
NAIVE_PARTNER = ("Zorgverzekeraar Landelijk Naief", "zorg")  # the naive baseline's deliveries
PROFILE_PARTNER = ("Zorgverzekeraar Landelijk Profiel", "zorg")  # the profiled ingest


@dataclass(frozen=True)
class Scale:
    """How big one benchmark run is."""

    name: str
    ingest_rows: int  # the single partner file through the real pipeline and the COPY floor
    naive_rows: int  # the slice the naive pipeline gets (scaled to ingest_rows)
    profile_rows: int  # the slice the profiled ingest gets
    ingest_households: int  # generator population for the single file (cut to ingest_rows)
    ingest_signal_rate: float
    month_households: int  # generator population for the fresh month (about 1M signals)
    month_signal_rate: float
    history_months: int
    api_seconds: float
    api_rate: float
    child_timeout_s: float
    # How often the ingest, the raw COPY floor, the SQL baseline, the run and the case list's
    # load are measured: the median counts (a shared virtual machine's speed varies from minute
    # to minute; see bench.common.median_run and bench.run.REPEATED).
    repeats: int


SCALES = {
    "smoke": Scale("smoke", 10_000, 10_000, 10_000, 23_000, 0.5, 36_200, 0.24, 12, 5, 200, 600, 2),
    "medium": Scale(
        "medium", 250_000, 50_000, 50_000, 575_000, 0.5, 905_000, 0.24, 12, 20, 200, 2400, 3
    ),
    "full": Scale(
        "full", 1_000_000, 100_000, 100_000, 2_300_000, 0.5, 3_620_000, 0.24, 12, 20, 200, 3600, 3
    ),
}


class FixedClock:
    """A clock that stands still (the services call ``ctx.now()``)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def say(message: str) -> None:
    """Progress on stderr (stdout stays free); counts and timings only, never row values."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def process_peak_rss_bytes(pid: int) -> int | None:
    """Another process's peak RSS (``VmHWM``), while it runs."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far (``/proc/stat``: user, nice, system, idle, iowait, irq,
    softirq, steal), or None where there is no such file."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            first = stat.readline().split()
    except OSError:
        return None
    return [int(v) for v in first[1:9]] if first and first[0] == "cpu" else None


def _share_percent(
    before: list[int] | None, after: list[int] | None, fields: tuple[int, ...]
) -> float | None:
    """The share of the CPU time between two :func:`cpu_ticks` spent in ``fields``."""
    if before is None or after is None:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    return round(100 * sum(spent[i] for i in fields) / total, 1) if total > 0 else None


def steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of the CPU time between two :func:`cpu_ticks` that the hypervisor gave to other
    machines (steal): on a shared virtual machine the same code is that much slower."""
    return _share_percent(before, after, (7,))


def busy_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of the machine's CPU time between two :func:`cpu_ticks` that was spent working
    (neither idle nor waiting for I/O), over all cores."""
    return _share_percent(before, after, (0, 1, 2, 5, 6, 7))


def process_stats() -> Iterator[tuple[int, int, str, float]]:
    """(pid, parent pid, command name, CPU seconds so far) of every process, from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        yield int(entry.name), int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick


def _postgres_cpu() -> dict[int, float]:
    return {pid: cpu for pid, _parent, name, cpu in process_stats() if name == "postgres"}


class CpuMeter:
    """The CPU a measurement used, from its start to :meth:`read`: this process's (every thread;
    user and system apart), PostgreSQL's (every ``postgres`` process on the machine: the part's
    backends, the WAL writer, the checkpointer), other processes', and how busy the machine was
    over all its cores.

    Beside the wall time it shows whether a part waits or works: a part that keeps both cores
    busy cannot go faster by doing things side by side, only by doing less. A PostgreSQL process
    that ends before :meth:`read` is counted with the other processes (the parts keep their
    connections until then).
    """

    def __init__(self) -> None:
        self._times, self._postgres, self._ticks = os.times(), _postgres_cpu(), cpu_ticks()

    def read(self) -> dict[str, float | None]:
        times, postgres, ticks = os.times(), _postgres_cpu(), cpu_ticks()
        user, system = times.user - self._times.user, times.system - self._times.system
        database = sum(cpu - self._postgres.get(pid, 0.0) for pid, cpu in postgres.items())
        other = None
        if self._ticks is not None and ticks is not None:
            # The machine's working time (user, nice, system, irq, softirq) less the two above:
            # what other processes used. More than a little means something ran beside the
            # part, and its figures are disturbed.
            worked = sum(ticks[i] - self._ticks[i] for i in (0, 1, 2, 5, 6))
            other = max(0.0, worked / os.sysconf("SC_CLK_TCK") - user - system - database)
        return {
            "process_user_s": round(user, 2),
            "process_system_s": round(system, 2),
            "postgresql_s": round(database, 2),
            "other_processes_s": None if other is None else round(other, 2),
            "machine_busy_percent": busy_percent(self._ticks, ticks),
        }


def settle(*, vacuum: tuple[str, ...] = ()) -> float:
    """CHECKPOINT the scratch database (after VACUUM ANALYZE of ``vacuum``, if any); the seconds
    it took.

    The monthly run starts hours after the last delivery (the window closes at 00:00 on the
    25th, the run follows at 02:30 on the 26th): by then the server's checkpointer has long
    written what the uploads changed (every ``checkpoint_timeout``, 5 minutes by default). The
    benchmark's parts follow each other within seconds, so the run and the SQL baseline would
    otherwise share the machine with the writing out of the ingest parts' gigabyte of changes.
    """
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(psycopg_url(os.environ["VS_DATABASE_URL"]), autocommit=True) as conn:
        if vacuum:
            conn.execute(f"VACUUM (ANALYZE) {', '.join(vacuum)}")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def psycopg_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://...`` as a libpq URI."""
    import sqlalchemy as sa

    url = sa.engine.make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def measurement(
    part: str,
    label: str,
    *,
    rows: int | None,
    wall_s: float | None,
    peak_rss: int | None,
    **details: Any,
) -> dict[str, Any]:
    """One row of the results table."""
    return {
        "part": part,
        "label": label,
        "rows": rows,
        "wall_s": None if wall_s is None else round(wall_s, 4),
        "rows_per_s": round(rows / wall_s, 1) if rows and wall_s else None,
        "peak_rss_bytes": peak_rss,
        "details": details,
    }


def median_run(runs: list[dict[str, Any]], by: str = "wall_s") -> dict[str, Any]:
    """One measurement from several of the same (in the order they ran): the run of the median
    ``by`` (the wall time, or a figure of the details: the API's ``p99_ms``), with every run's
    figure in ``details["runs_<by>"]`` and the highest peak RSS of them. With an even number of
    runs, the higher of the middle two: the figure is one that was measured, and not the kinder
    one. A run without the figure (the API's, when requests failed) counts as the highest."""
    if len(runs) == 1:
        return runs[0]
    figures = [r[by] if by in r else r["details"].get(by) for r in runs]
    order = sorted(range(len(runs)), key=lambda i: _highest_if_none(figures[i]))
    chosen = dict(runs[order[len(runs) // 2]])
    chosen["details"] = {**chosen["details"], f"runs_{by}": figures}
    peaks = [r["peak_rss_bytes"] for r in runs if r["peak_rss_bytes"] is not None]
    chosen["peak_rss_bytes"] = max(peaks) if peaks else None
    return chosen


def _highest_if_none(value: float | None) -> float:
    return float("inf") if value is None else float(value)


def child_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", choices=sorted(SCALES), required=True)
    parser.add_argument("--data", type=Path, required=True, help="the data set's folder")
    parser.add_argument("--state", type=Path, required=True, help="the setup's state file")
    parser.add_argument("--result-file", type=Path, required=True)
    return parser


def write_results(path: Path, results: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_private_json(path: Path, data: Any) -> None:
    """A file readable by the owner only (the setup's state holds a bench API key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)


def manifest(data_dir: Path) -> dict[str, Any]:
    found: dict[str, Any] = read_json(data_dir / "manifest.json")
    return found


_END = object()


class Phases:
    """Wall time per named phase, from wrappers around the pipeline's own functions.

    The wrappers add a clock read per call (a handful of calls per batch), nothing per row.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Replace ``owner.attribute`` (a function) by a timed version, until :meth:`restore`."""
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timed(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def wrap_iterator(self, owner: Any, attribute: str, name: str) -> None:
        """Like :meth:`wrap`, for a function returning an iterator: each step is timed (a lazy
        reader does its work there, not in the call)."""
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            steps = iter(original(*args, **kwargs))
            while True:
                with self.timed(name):
                    item = next(steps, _END)
                if item is _END:
                    return
                yield item

        setattr(owner, attribute, timed)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def rounded(self) -> dict[str, float]:
        """Seconds per phase, largest first (names starting with ``_`` are internal)."""
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return {k: round(v, 3) for k, v in ranked if not k.startswith("_")}


class StatementTimer:
    """Time per SQL statement shape on an engine (SQLAlchemy cursor events).

    COPY runs on the driver connection directly and is not seen here; the wrapped bulk functions
    (:class:`Phases`) account for it.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: list[float] = []

    def attach(self, engine: Any) -> None:
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_args: Any) -> None:
        self._started.append(time.perf_counter())

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not self._started:
            return
        elapsed = time.perf_counter() - self._started.pop()
        shape = " ".join(statement.split())[:90]
        self.seconds[shape] += elapsed
        self.calls[shape] += 1

    def top(self, count: int = 8) -> list[dict[str, Any]]:
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:count]
        return [
            {"statement": shape, "seconds": round(sec, 3), "calls": self.calls[shape]}
            for shape, sec in ranked
        ]


T = TypeVar("T")


def timed_call(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started
