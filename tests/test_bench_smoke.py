"""The benchmark harness at smoke scale, end to end on PostgreSQL, so that it keeps working.

The numbers are not judged here (performance is measured by `make bench`, not asserted in
tests); the harness must run every part and write its results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    server = os.environ.get("VS_TEST_DATABASE_URL")
    if not server:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but VS_TEST_DATABASE_URL is not set: the bench smoke needs it")
        pytest.skip("the benchmark harness needs PostgreSQL (set VS_TEST_DATABASE_URL)")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--scale",
            "smoke",
            "--server-url",
            server,
            "--data-dir",
            str(tmp_path / "data"),
            "--results-dir",
            str(tmp_path / "results"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads((tmp_path / "results" / "latest.json").read_text(encoding="utf-8"))
    parts = {r["part"] for r in results["results"]}
    expected = {"ingest", "naive", "copy", "copy_ours", "copy_ours_unindexed", "sql_query"}
    assert expected | {"matching", "api", "api_busy", "rerun"} <= parts, parts
    report = (tmp_path / "results" / "latest.md").read_text(encoding="utf-8")
    # Where the time goes: the CPU of the ingest and the run, theirs and PostgreSQL's.
    for part in ("ingest", "matching", "rerun"):
        (found,) = [r for r in results["results"] if r["part"] == part]
        cpu = found["details"]["cpu"]
        assert cpu["process_user_s"] + cpu["process_system_s"] > 0, cpu
        assert cpu["postgresql_s"] > 0, cpu
        assert cpu["other_processes_s"] >= 0, cpu
    assert report.count("CPU while it ran: this process") == 3, report
    # The database's share of the ingest: its own rows copied again (the part checks the count).
    (again,) = [r for r in results["results"] if r["part"] == "copy_ours"]
    (ingest,) = [r for r in results["results"] if r["part"] == "ingest"]
    assert again["rows"] == ingest["rows"]
    assert again["details"]["cpu"]["postgresql_s"] > 0
    assert "the database's share: the same rows as stored" in report, report
    # The ingest, the raw COPY floor, the SQL baseline and the run measured twice at this scale,
    # the slower counting. (Each turn after the first undoes the run before, and stops if the
    # month is then not as the first turn found it, or the run finds other figures than the
    # first: bench.matching.month_before_run; tests/test_bench_undo.py.)
    twice = ("ingest", "copy", "sql_query", "sql_write", "matching", "matching_rules")
    for part in twice:
        (found,) = [r for r in results["results"] if r["part"] == part]
        runs = found["details"]["runs_wall_s"]
        assert len(runs) == 2, found
        assert found["wall_s"] == max(runs), found
    assert report.count("(the median of 2 runs: ") == len(twice), report
    # The API too, by its p99 (its load runs for a fixed time), and the same load with two busy
    # processes beside it, as often (not a target).
    for part in ("api", "api_busy"):
        (api,) = [r for r in results["results"] if r["part"] == part]
        p99s = api["details"]["runs_p99_ms"]
        assert len(p99s) == 2, api
        assert api["details"]["p99_ms"] == max(p99s), api
    assert report.count("(the median of 2 runs by p99: ") == 2, report
    (busy,) = [r for r in results["results"] if r["part"] == "api_busy"]
    assert busy["details"]["busy_processes"] == 2, busy
    assert busy["details"]["ok"] == busy["details"]["requests"] > 0, busy
    assert "with 2 busy processes beside them" in report, report
    assert not any(t["name"].startswith("API") and "busy" in t["name"] for t in results["targets"])
    assert "the run before undone" in completed.stderr + completed.stdout
    (rerun,) = [r for r in results["results"] if r["part"] == "rerun"]
    (matching,) = [r for r in results["results"] if r["part"] == "matching"]
    # The same deliveries: the rerun keeps every case.
    assert rerun["details"]["cases"] == matching["details"]["figures"]["cases"] > 0, rerun
