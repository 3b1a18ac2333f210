"""The benchmark harness's own logic, no database needed: how several runs of a part become one
figure, and what makes two runs of a seed comparable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bench.common import measurement, median_run
from bench.matching import same_as_first_run
from bench.run import address_hash_key, medians, units
from shared.settings import Settings


def _run(wall: float, rss: int | None = 100, **details: Any) -> dict[str, Any]:
    return measurement("part", "a part", rows=10, wall_s=wall, peak_rss=rss, **details)


def test_the_median_run_counts_with_every_time_listed() -> None:
    chosen = median_run([_run(3.0, 50), _run(1.0, 300), _run(2.0, None)])
    assert chosen["wall_s"] == 2.0
    assert chosen["details"]["runs_wall_s"] == [3.0, 1.0, 2.0]
    assert chosen["peak_rss_bytes"] == 300  # the highest of the runs


def test_of_two_runs_the_slower_counts() -> None:
    assert median_run([_run(1.0), _run(4.0)])["wall_s"] == 4.0
    assert median_run([_run(4.0), _run(1.0)])["wall_s"] == 4.0


def test_the_api_counts_by_its_p99_and_a_run_without_one_is_the_worst() -> None:
    runs = [_run(20.0, p99_ms=12.0), _run(20.0, p99_ms=None), _run(20.0, p99_ms=97.9)]
    chosen = median_run(runs, "p99_ms")
    assert chosen["details"]["p99_ms"] == 97.9
    assert chosen["details"]["runs_p99_ms"] == [12.0, None, 97.9]
    assert median_run(runs[:2], "p99_ms")["details"]["p99_ms"] is None


def test_one_run_is_itself() -> None:
    only = _run(1.5)
    assert median_run([only]) is only


def test_a_part_of_several_measurements_gets_a_median_for_each() -> None:
    def turn(query: float, write: float) -> list[dict[str, Any]]:
        return [
            measurement("sql_query", "q", rows=1, wall_s=query, peak_rss=1),
            measurement("sql_write", "w", rows=1, wall_s=write, peak_rss=None),
        ]

    found = medians([turn(15.6, 13.5), turn(14.2, 12.6), turn(13.9, 12.7)])
    assert [(r["part"], r["wall_s"]) for r in found] == [("sql_query", 14.2), ("sql_write", 12.7)]


def test_a_failed_run_is_reported_with_the_others_not_hidden_in_a_median() -> None:
    good = [_run(1.0)]
    failed = [{"part": "part", "error": "exit 1"}]
    assert medians([good, failed, good]) == [*good, *failed, *good]


def test_the_sql_baseline_and_the_run_take_turns_and_the_rest_stand_alone() -> None:
    assert units(["ingest", "copy", "sql", "matching", "api", "api_busy", "rerun"]) == [
        ("ingest",),
        ("copy",),
        ("sql", "matching"),
        ("api",),
        ("api_busy",),
        ("rerun",),
    ]
    assert units(["matching", "api"]) == [("matching",), ("api",)]


def test_the_address_hash_key_is_the_seeds_so_that_runs_build_the_same_history() -> None:
    assert address_hash_key(2026) == address_hash_key(2026)
    assert address_hash_key(2026) != address_hash_key(2027)
    # A key the service takes, of 256 bits.
    settings = Settings(address_hash_key=SecretStr(address_hash_key(2026)))
    assert len(settings.address_key()) == 32


def test_a_later_run_that_finds_other_figures_stops_the_benchmark(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    figures = {"cases": 2487, "classification": {"meervoudig": 1200}, "routes": ("a", "b")}
    same_as_first_run(figures, state)  # the first: recorded
    same_as_first_run(dict(figures), state)  # the same again (a tuple reads back as a list)
    with pytest.raises(SystemExit, match="other figures than the first"):
        same_as_first_run({**figures, "cases": 2486}, state)


def test_the_load_driver_starts_each_request_when_it_falls_due() -> None:
    """The open-loop driver (``bench.api.load``) makes a request's task when the request falls
    due, not every task beforehand: 4,000 waiting tasks made at the start kept its loop busy,
    and the first requests went out late, their lateness counted as the server's latency. Nor
    does it collect garbage while it measures (a full collection paused it, and the answers
    that came meanwhile were counted late); it collects again afterwards. A server in the same
    loop counts the driver's tasks as requests arrive, and sees whether collection is on."""
    import asyncio
    import gc
    import os

    from bench import api

    rate, seconds = 400.0, 1.0
    tasks_seen: list[int] = []
    handlers: set[asyncio.Task[Any]] = set()
    collecting: list[bool] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                tasks_seen.append(len(asyncio.all_tasks()))
                collecting.append(gc.isenabled())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()

    async def drive() -> dict[str, Any]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            outcome = await api.load("127.0.0.1", port, "key", rate, seconds, os.getpid())
            # The driver closed its connections: each handler sees the end and closes its own.
            await asyncio.wait(handlers, timeout=10)
            return outcome

    outcome = asyncio.run(drive())
    assert outcome["ok"] == outcome["requests"] == int(rate * seconds)
    # The warm-up's requests come first; then a handful of requests are open at any time (the
    # server's own tasks for the driver's connections included), never the whole run's.
    assert max(tasks_seen) < 100, max(tasks_seen)
    assert not any(collecting)
    assert gc.isenabled()


def test_busy_processes_keep_a_core_busy_each_and_are_gone_afterwards() -> None:
    """The slow hour's stand-in (``bench.api.busy_processes``): each process works while the
    block runs, and none is left when it ends, also when it ends by an error."""
    import os
    import time

    from bench import api

    def cpu_seconds(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    seen: list[int] = []
    worked: list[float] = []

    def load_that_fails() -> None:
        with api.busy_processes(2) as pids:
            seen.extend(pids)
            time.sleep(0.5)
            worked.extend(cpu_seconds(pid) for pid in pids)
            raise RuntimeError("the load failed")

    with pytest.raises(RuntimeError):
        load_that_fails()
    assert len(set(seen)) == 2
    assert all(seconds > 0.1 for seconds in worked), worked
    for pid in seen:
        assert not Path(f"/proc/{pid}").exists()


def test_a_figure_as_fast_as_the_query_is_not_faster_and_a_miss_says_by_how_much() -> None:
    """ "Faster" is strict: the run in exactly the query's time misses. A miss gives the factor
    and the share over the limit, small ones not rounded to nothing."""
    from bench.report import targets

    def part(name: str, wall: float) -> dict[str, Any]:
        return measurement(name, name, rows=10, wall_s=wall, peak_rss=1)

    def verdicts(run: float, query: float) -> dict[str, tuple[bool | None, str]]:
        found = targets([part("matching", run), part("sql_query", query), part("sql_write", 9)])
        return {t.name: (t.met, t.how_far) for t in found if "SQL" in t.name}

    tie = verdicts(9.0, 9.0)
    assert tie["Matching vs one SQL query (result fetched)"] == (
        False,
        "MISS: level with the limit, not past it",
    )
    assert tie["Matching vs one SQL query + INSERT … SELECT"][0] is False
    assert verdicts(9.0005, 9.0)["Matching vs one SQL query (result fetched)"] == (
        False,
        "MISS by 1.00× (0.0056 % over)",
    )
    assert verdicts(11.7, 9.0)["Matching vs one SQL query (result fetched)"] == (
        False,
        "MISS by 1.30× (30 % over)",
    )
    assert verdicts(8.1, 9.0)["Matching vs one SQL query (result fetched)"] == (
        True,
        "0.90× the limit",
    )


def test_the_ingest_is_told_the_least_time_its_cpu_allows_on_the_cores() -> None:
    """The report says whether "within 3× of COPY" is reachable by using both cores better: the
    ingest's CPU (ours and PostgreSQL's) over the cores, against the floor, and how much of that
    CPU the target leaves. Without the CPU or the cores, no such line."""
    from bench.report import where_time_goes

    cpu = {"process_user_s": 7.1, "process_system_s": 0.9, "postgresql_s": 3.8}
    ingest = measurement("ingest", "ingest", rows=10, wall_s=7.18, peak_rss=1, cpu=cpu)
    copy = measurement("copy", "copy", rows=10, wall_s=1.35, peak_rss=1)
    lines = where_time_goes([ingest, copy], cores=2)
    floor = [line for line in lines if "takes at least" in line]
    assert floor == [
        "  - on 2 cores it takes at least its CPU over the cores: (this process 8.0 s + "
        "PostgreSQL 3.8 s) / 2 = 5.90 s, 4.37× the floor's time; within 3× of the floor leaves "
        "8.1 s of CPU in all, 69% of what it used"
    ]
    assert not [line for line in where_time_goes([ingest, copy]) if "takes at least" in line]
    bare = measurement("ingest", "ingest", rows=10, wall_s=7.18, peak_rss=1)
    assert not [line for line in where_time_goes([bare, copy], cores=2) if "takes at least" in line]


def test_a_kept_report_is_named_by_its_scale_date_machine_and_minute() -> None:
    from bench.report import kept_name, machine_kind

    assert machine_kind("Intel(R) Xeon(R) Processor") == "xeon"
    assert machine_kind("AMD EPYC 7B13 64-Core Processor") == "epyc"
    assert machine_kind("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz") == "core"
    assert machine_kind("") == machine_kind(None) == "machine"
    doc = {"scale": "full", "machine": {"date": "2026-12-01T23:22:22+01:00", "cpu": "AMD EPYC"}}
    assert kept_name(doc) == "results-full-2026-12-01-epyc-2222"  # the header's time, in UTC


def test_keeping_a_report_never_replaces_an_earlier_one(tmp_path: Path) -> None:
    import json

    from bench.run import keep_report

    doc = {
        "scale": "smoke",
        "machine": {"date": "2026-12-01T22:46:12+00:00", "cpu": "Intel(R) Xeon(R) Processor"},
    }
    first = keep_report(tmp_path / "reports", doc, "first\n")
    second = keep_report(tmp_path / "reports", doc, "second\n")
    assert first.name == "results-smoke-2026-12-01-xeon-2246.md"
    assert second.name == "results-smoke-2026-12-01-xeon-2246-2.md"
    assert first.read_text() == "first\n"
    assert second.read_text() == "second\n"
    assert json.loads(first.with_suffix(".json").read_text())["scale"] == "smoke"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "results-smoke-2026-12-01-xeon-2246-2.json",
        "results-smoke-2026-12-01-xeon-2246-2.md",
        "results-smoke-2026-12-01-xeon-2246.json",
        "results-smoke-2026-12-01-xeon-2246.md",
    ]
