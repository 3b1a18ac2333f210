"""``make bench``: build the data (cached), measure everything side by side, write the results.

    python -m bench.run --scale full     # make bench: 1M-row file, 1M-signal month, 12M history
    python -m bench.run --scale smoke    # make bench-smoke: 10,000 rows, in seconds

Steps: the data set (:mod:`bench.data`, generated once per scale and seed); a scratch PostgreSQL
database on ``--server-url`` (created here, dropped at the end); :mod:`bench.setup`; then each
measurement in a subprocess of its own; then ``<results>/latest.json`` and ``latest.md`` (and a
copy named after the scale; with ``--keep-report`` one more in ``bench/reports/``, named by its
scale, date, machine and minute), the table also printed. Secrets for the run are made here and
reach the parts through their environment only. Exit status 1 when a part failed (a missed target
is a result, not a failure).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench import data as bench_data
from bench import report
from bench.common import (
    SCALES,
    cpu_ticks,
    median_run,
    psycopg_url,
    read_json,
    say,
    steal_percent,
)
from shared.settings import new_key_text

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_DIR = Path(__file__).resolve().parent
# Measurement order. The SQL baseline runs before the matching run, which rewrites the
# month's signals (their outcomes); the API after it, over every case, then again with busy
# processes beside it; the rerun after that, so that the API reads the cases as the first run
# left them.
PARTS = {
    "ingest": "bench.ingest",
    "naive": "bench.naive",
    "copy": "bench.copy_floor",
    "sql": "bench.sql_baseline",
    "matching": "bench.matching",
    "api": "bench.api",
    "api_busy": "bench.api",
    "rerun": "bench.rerun",
    "profile": "bench.profile",
}
NEEDS_HISTORY = {"sql", "matching", "api", "api_busy", "rerun"}
# A part's own arguments: the API's load again with two cores' worth of busy processes beside it
# (a slow hour on demand; measured as often as the API, not a target).
PART_ARGS = {"api_busy": ["--busy", "2"]}
# Parts measured more than once (Scale.repeats), the median counting: each group's parts in
# turn, as often as that. The ingest sets the run before aside itself (bench.ingest); the SQL
# baseline and the run, taken in turns, undo the run before (bench.matching.set_aside_runs), so
# that each reads the rows the first found. The API only reads. The raw COPY floor repeats
# itself (bench.copy_floor).
REPEATED = (("ingest",), ("sql", "matching"), ("api",), ("api_busy",))
# The figure a part's median is taken by (bench.common.median_run): the wall time, but for the
# API, whose load runs for a fixed time, its p99.
MEDIAN_BY = {"api": "p99_ms", "api_busy": "p99_ms"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--server-url",
        default=os.environ.get("VS_BENCH_SERVER_URL")
        or os.environ.get("VS_TEST_DATABASE_URL")
        or DEFAULT_SERVER,
        help="a PostgreSQL server URL (SQLAlchemy form); a scratch database is made on it",
    )
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma separated parts of: {', '.join(PARTS)}"
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the cProfile'd ingest (default: on except in the smoke scale)",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--keep-report",
        nargs="?",
        const=BENCH_DIR / "reports",
        type=Path,
        metavar="DIR",
        help="also keep the report (markdown and JSON) in DIR, default bench/reports/, named by "
        "its scale, date, kind of machine and time (never over an earlier one)",
    )
    return parser.parse_args(argv)


def server_info(url: str) -> dict[str, str]:
    with psycopg.connect(psycopg_url(url)) as conn:
        return {
            name: str(row[0]) if (row := conn.execute(f"SHOW {name}").fetchone()) else "?"
            for name in (
                "server_version",
                "shared_buffers",
                "work_mem",
                "max_wal_size",
                "synchronous_commit",
            )
        }


def create_database(server_url: str) -> tuple[str, str]:
    """(name, SQLAlchemy URL) of a new, empty database on the server."""
    import sqlalchemy as sa

    name = f"vs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(psycopg_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    return name, url


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(psycopg_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The environment every deployed process has besides its VS_ settings (deploy/Dockerfile, the
# systemd unit and the crontab carry the same). Polars' allocator (jemalloc) hands freed memory
# back to the system after 10 s by default; a batch is freed every second or so and the next
# one faults the same pages in again: 1.12 million page faults and 2.9 to 3.1 s of system time
# for the client's part of the million-row ingest. Kept for 30 s, the pages are reused (1.8 s;
# peak RSS 0.98 → 1.13 GB end to end).
DEPLOYED_ENV = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:30000"}


def address_hash_key(seed: int) -> str:
    """The benchmark's address hash key, the same for every run with the same seed.

    The setup picks the history's cases and signals by the addresses' hashes (``bench.setup``),
    so a random key gave each run another history: 248,957 cases in one run, 249,011 in the
    next. Derived from the seed, every run of a seed builds the same history and finds the same
    cases. A key for synthetic data in a scratch database only; the encryption key stays random.
    """
    digest = hashlib.sha256(f"vroegsignaal benchmark address key {seed}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def child_env(database_url: str, work: Path, seed: int) -> dict[str, str]:
    """The parts' environment: this process's, without any VS_ setting, plus the deployed
    processes' (:data:`DEPLOYED_ENV`) and the run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VS_")}
    env.update(DEPLOYED_ENV)
    env.update(
        {
            "VS_ENVIRONMENT": "production",
            "VS_DATABASE_URL": database_url,
            "VS_DATA_DIR": str(work / "data"),
            "VS_ENCRYPTION_KEYS": "bench1:" + new_key_text(),
            "VS_ADDRESS_HASH_KEY": address_hash_key(seed),
            "VS_TRUSTED_HOSTS": "127.0.0.1",
            "PYTHONPATH": os.pathsep.join(
                [str(BENCH_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    return env


def run_part(
    module: str,
    name: str,
    *,
    scale: str,
    data: Path,
    work: Path,
    env: dict[str, str],
    timeout: float,
    extra: list[str] | None = None,
) -> list[dict[str, Any]]:
    result_file = work / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        module,
        "--scale",
        scale,
        "--data",
        str(data),
        "--state",
        str(work / "state.json"),
        "--result-file",
        str(result_file),
        *(extra or []),
    ]
    started = time.perf_counter()
    ticks = cpu_ticks()
    try:
        completed = subprocess.run(  # noqa: S603 (our own modules, fixed arguments)
            command, env=env, timeout=timeout, check=False, cwd=BENCH_DIR.parent
        )
        code: int | str = completed.returncode
    except subprocess.TimeoutExpired:
        code = f"timed out after {timeout:.0f} s"
    say(f"{name}: done in {time.perf_counter() - started:.1f} s")
    if code == 0 and result_file.exists():
        found: list[dict[str, Any]] = read_json(result_file)
        steal = steal_percent(ticks, cpu_ticks())
        for result in found:
            result["cpu_steal_percent"] = steal
        return found
    return [{"part": name, "error": f"exit {code}"}]


def units(parts: list[str]) -> list[tuple[str, ...]]:
    """The parts in the order they run: those of a group of :data:`REPEATED` together (the
    wanted ones of it, where the first of them stands), every other part alone."""
    found: list[tuple[str, ...]] = []
    for name in parts:
        if any(name in unit for unit in found):
            continue
        group = next((g for g in REPEATED if name in g), (name,))
        found.append(tuple(p for p in group if p in parts))
    return found


def medians(runs: list[list[dict[str, Any]]], by: str = "wall_s") -> list[dict[str, Any]]:
    """One part's measurements from its runs: each measurement's median run by ``by``
    (:func:`bench.common.median_run`); a run that failed, or measured other things, is reported
    as it is, with every other run."""
    shapes = {tuple(r.get("part") for r in run) for run in runs}
    if len(runs) == 1 or len(shapes) > 1 or any("error" in r for run in runs for r in run):
        return [r for run in runs for r in run]
    return [median_run([run[i] for run in runs], by) for i in range(len(runs[0]))]


def keep_report(directory: Path, doc: dict[str, Any], text: str) -> Path:
    """Keep a report beside the earlier ones, by :func:`bench.report.kept_name`: the markdown and
    its JSON. A name already taken (two reports in one minute) gets ``-2``, ``-3``, … rather than
    replacing a kept report. Returns the markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = report.kept_name(doc)
    for n in range(1, 100):
        name = stem if n == 1 else f"{stem}-{n}"
        try:
            with (directory / f"{name}.md").open("x", encoding="utf-8") as out:
                out.write(text)
        except FileExistsError:
            continue
        (directory / f"{name}.json").write_text(report.json_text(doc), encoding="utf-8")
        return directory / f"{name}.md"
    raise SystemExit(f"no free name for the report in {directory} ({stem}-…)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = SCALES[args.scale]
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(unknown)}")
    profile = args.profile if args.profile is not None else scale.name != "smoke"
    parts = [p for p in PARTS if p in wanted and (p != "profile" or profile)]
    started = time.perf_counter()

    data = bench_data.ensure(args.data_dir.resolve(), scale, args.seed)
    info = server_info(args.server_url)
    name, url = create_database(args.server_url)
    say(f"scratch database {name} on PostgreSQL {info['server_version']}")
    work = Path(tempfile.mkdtemp(prefix="vs-bench-"))
    results_dir = args.results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    failed = False
    try:
        env = child_env(url, work, args.seed)
        if not NEEDS_HISTORY.intersection(parts):
            env["BENCH_NO_HISTORY"] = "1"

        def part(module: str, label: str, timeout: float, extra: list[str]) -> list[Any]:
            return run_part(
                module,
                label,
                scale=scale.name,
                data=data,
                work=work,
                env=env,
                timeout=timeout,
                extra=extra,
            )

        setup = part("bench.setup", "setup", scale.child_timeout_s * 2, [])
        results += setup
        if any("error" in r for r in setup):
            failed = True
        else:
            for unit in units(parts):
                times = scale.repeats if any(unit[0] in group for group in REPEATED) else 1
                runs: dict[str, list[list[dict[str, Any]]]] = {name_: [] for name_ in unit}
                for _ in range(times):
                    for name_ in unit:
                        out = ["--out", str(results_dir / "profile-ingest.txt")]
                        extra = out if name_ == "profile" else PART_ARGS.get(name_, [])
                        runs[name_].append(part(PARTS[name_], name_, scale.child_timeout_s, extra))
                for name_ in unit:
                    found = medians(runs[name_], MEDIAN_BY.get(name_, "wall_s"))
                    failed = failed or any("error" in r for r in found)
                    results += found
    finally:
        if args.keep_db:
            say(f"keeping the scratch database {name}")
        else:
            drop_database(args.server_url, name)
        shutil.rmtree(work, ignore_errors=True)

    doc = report.render(
        {
            "scale": scale.name,
            "seed": args.seed,
            "parameters": read_json(data / "manifest.json")["parameters"],
            "total_seconds": round(time.perf_counter() - started, 1),
            "machine": report.machine(info),
            "results": results,
        }
    )
    text = report.markdown(doc)
    for stem in ("latest", scale.name):
        (results_dir / f"{stem}.json").write_text(report.json_text(doc), encoding="utf-8")
        (results_dir / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)
    say(f"results in {results_dir}/latest.json and latest.md ({doc['total_seconds']} s)")
    if args.keep_report is not None:
        say(f"report kept as {keep_report(args.keep_report.resolve(), doc, text)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
