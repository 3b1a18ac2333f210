"""The results as a table: the machine, every measurement, the targets (PASS/MISS), the misses.

Targets are the issue's, defined for the full scale on a 2-core machine; at another scale they
are shown all the same and marked as such.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GB = 1024**3
MB = 1024**2


def machine(server_info: dict[str, str]) -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python, PostgreSQL and the date."""
    cpu = "unknown"
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines()
        ):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    import polars

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": ram,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "polars": polars.__version__,
        "postgresql": server_info,
        "commit": _commit(),
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 (read-only)
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# Words of a processor's name that do not tell its kind.
_NOT_A_KIND = frozenset({"intel", "amd", "cpu", "processor"})


def machine_kind(cpu: str | None) -> str:
    """The kind of machine by its processor's name, for a kept report's file name: the first word
    that is not the maker's or a filler ("Intel(R) Xeon(R) Processor" is ``xeon``, "AMD EPYC 7B13"
    is ``epyc``); ``machine`` when none is left."""
    name = re.sub(r"\((?:r|tm)\)", " ", (cpu or "").lower())
    words = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", name)
    return next((w for w in words if w not in _NOT_A_KIND), "machine")


def kept_name(doc: dict[str, Any]) -> str:
    """The name a report is kept under (``bench/reports/``): its scale, the date and the minute of
    its header in UTC and the kind of machine, e.g. ``results-full-2026-12-01-xeon-2246``."""
    when = datetime.fromisoformat(doc["machine"]["date"]).astimezone(UTC)
    kind = machine_kind(doc["machine"].get("cpu"))
    return f"results-{doc['scale']}-{when:%Y-%m-%d}-{kind}-{when:%H%M}"


@dataclass
class Target:
    name: str
    wanted: str
    measured: str
    met: bool | None  # None: could not be evaluated (a part failed or did not run)
    how_far: str = ""


def _by_part(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["part"]: r for r in results if "error" not in r}


def _ratio_note(met: bool, value: float, limit: float, higher_is_better: bool) -> str:
    """How far a figure is from its target, as a factor; a miss of a limit also in percent
    over it (a throughput that falls short is given as the factor alone)."""
    factor = value / limit if limit else 0.0
    if met:
        return f"{factor:.2f}× the {'target' if higher_is_better else 'limit'}"
    if value == limit:
        return "MISS: level with the limit, not past it"
    if higher_is_better:
        return f"MISS by {limit / value:.2f}×" if value else "MISS"
    return f"MISS by {factor:.2f}× ({_percent(factor - 1)} over)"


def _percent(share: float) -> str:
    """A share as a percentage, small ones not rounded away (0.005 % is not "0.0 %")."""
    percent = share * 100
    return f"{percent:.0f} %" if percent >= 10 else f"{percent:.2g} %"


def targets(results: list[dict[str, Any]]) -> list[Target]:
    parts = _by_part(results)
    out: list[Target] = []

    def check(
        name: str,
        wanted: str,
        needs: tuple[str, ...],
        value: Callable[[], float],
        limit: Callable[[], float],
        higher_is_better: bool,
        show: Callable[[float], str],
        *,
        strictly: bool = False,
    ) -> None:
        """One target; with ``strictly``, a figure equal to the limit misses it ("faster")."""
        if not all(p in parts for p in needs):
            out.append(Target(name, wanted, "not measured", None))
            return
        v, lim = value(), limit()
        if strictly:
            met = v > lim if higher_is_better else v < lim
        else:
            met = v >= lim if higher_is_better else v <= lim
        out.append(Target(name, wanted, show(v), met, _ratio_note(met, v, lim, higher_is_better)))

    def rows_per_s(part: str) -> float:
        return float(parts[part]["rows_per_s"] or 0)

    def wall(part: str) -> float:
        return float(parts[part]["wall_s"] or 0)

    def rss(part: str) -> float:
        return float(parts[part]["peak_rss_bytes"] or 0)

    check(
        "Ingest throughput",
        "≥ 100,000 rows/s",
        ("ingest",),
        lambda: rows_per_s("ingest"),
        lambda: 100_000,
        True,
        lambda v: f"{v:,.0f} rows/s",
    )
    check(
        "Ingest vs the COPY floor",
        "within 3× of COPY",
        ("ingest", "copy"),
        lambda: wall("ingest") / wall("copy"),
        lambda: 3.0,
        False,
        lambda v: f"{v:.2f}× the floor's time",
    )
    check(
        "Ingest vs the naive pipeline",
        "≥ 10× faster",
        ("ingest", "naive"),
        lambda: rows_per_s("ingest") / rows_per_s("naive"),
        lambda: 10.0,
        True,
        lambda v: f"{v:.1f}× faster",
    )
    check(
        "Ingest peak RSS",
        "< 1.5 GB",
        ("ingest",),
        lambda: rss("ingest") / GB,
        lambda: 1.5,
        False,
        lambda v: f"{v:.2f} GB",
    )
    check(
        "Matching wall time (with reads and writes)",
        "≤ 15 s",
        ("matching",),
        lambda: wall("matching"),
        lambda: 15.0,
        False,
        lambda v: f"{v:.2f} s",
    )
    check(
        "Matching vs one SQL query (result fetched)",
        "faster",
        ("matching", "sql_query"),
        lambda: wall("matching") / wall("sql_query"),
        lambda: 1.0,
        False,
        lambda v: f"{v:.2f}× the query's time",
        strictly=True,
    )
    check(
        "Matching vs one SQL query + INSERT … SELECT",
        "faster",
        ("matching", "sql_write"),
        lambda: wall("matching") / wall("sql_write"),
        lambda: 1.0,
        False,
        lambda v: f"{v:.2f}× the query's time",
        strictly=True,
    )
    check(
        "Matching peak RSS",
        "≤ 3 GB",
        ("matching",),
        lambda: rss("matching") / GB,
        lambda: 3.0,
        False,
        lambda v: f"{v:.2f} GB",
    )
    api = parts.get("api", {})
    p99 = api.get("details", {}).get("p99_ms")
    if "api" in parts:
        met = p99 is not None and p99 <= 50
        shown = f"{p99:.1f} ms" if p99 is not None else "unbounded (requests failed)"
        note = (
            _ratio_note(True, p99, 50.0, False)
            if met and p99 is not None
            else (f"MISS by {p99 / 50:.1f}×" if p99 is not None else "MISS")
        )
        out.append(Target("API p99 latency at 200 req/s", "≤ 50 ms", shown, met, note))
        details = api["details"]
        answered = float(details.get("throughput_rps") or 0)
        offered = float(details.get("offered_rps") or 0)
        share = details.get("ok", 0) / max(1, details.get("requests", 1))
        met = share >= 0.99 and answered >= 0.97 * offered
        out.append(
            Target(
                "API throughput",
                f"{offered:.0f} req/s answered",
                f"{answered:.0f} req/s, {share:.1%} answered OK",
                met,
                "" if met else f"MISS: {offered / max(answered, 1e-9):.1f}× short",
            )
        )
    else:
        out.append(Target("API p99 latency at 200 req/s", "≤ 50 ms", "not measured", None))
    return out


def _runs(r: dict[str, Any]) -> str:
    """`` (the median of N runs: …)`` for a measurement taken more than once (the API's: by
    its p99)."""
    walls, p99s = r["details"].get("runs_wall_s"), r["details"].get("runs_p99_ms")
    if p99s:
        shown = ", ".join("unbounded" if p is None else f"{p:.1f} ms" for p in p99s)
        return f" (the median of {len(p99s)} runs by p99: {shown})"
    if not walls:
        return ""
    return f" (the median of {len(walls)} runs: {', '.join(_fmt_wall(w) for w in walls)})"


def _fmt_rows(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def _fmt_wall(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else "–"


def _fmt_rate(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "–"


def _fmt_rss(value: Any) -> str:
    return f"{value / MB:,.0f} MB" if isinstance(value, int | float) else "–"


def _top(mapping: dict[str, float], count: int, total: float | None = None) -> str:
    ranked = sorted(mapping.items(), key=lambda kv: -kv[1])[:count]
    if total:
        return "; ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in ranked)
    return "; ".join(f"{k} {v:.2f} s" for k, v in ranked)


def _own_cpu(cpu: dict[str, float]) -> float:
    """The part's own process's CPU seconds (user and system, all its threads)."""
    return cpu["process_user_s"] + cpu["process_system_s"]


def _cpu_line(r: dict[str, Any]) -> list[str]:
    """Where a part's CPU went while it ran (bench.common.CpuMeter), if it was measured."""
    cpu = r["details"].get("cpu")
    if not cpu:
        return []
    user, system = cpu["process_user_s"], cpu["process_system_s"]
    busy, other = cpu.get("machine_busy_percent"), cpu.get("other_processes_s")
    return [
        f"  - CPU while it ran: this process {_own_cpu(cpu):.1f} s (user {user:.1f}, "
        f"system {system:.1f}), PostgreSQL {cpu['postgresql_s']:.1f} s"
        + (f", other processes {other:.1f} s" if other is not None else "")
        + f", in {r['wall_s']:.2f} s of wall time"
        + (f"; the machine was {busy:.0f}% busy over all its cores" if busy is not None else "")
    ]


def _phases_and_cpu(title: str, note: str, r: dict[str, Any]) -> list[str]:
    """A part's largest phases and, below them, where its CPU went."""
    phases = _top(r["details"].get("phases", {}), 6, r["wall_s"])
    return [f"- **{title}** ({r['wall_s']:.2f} s{note}): {phases}", *_cpu_line(r)]


def _database_share(parts: dict[str, dict[str, Any]]) -> list[str]:
    """The ingest's stored rows copied again (bench.copy_floor), beside the ingest and the floor:
    the server's part, with no Python work left."""
    if not all(p in parts for p in ("ingest", "copy", "copy_ours", "copy_ours_unindexed")):
        return []
    ingest, floor = parts["ingest"]["wall_s"], parts["copy"]["wall_s"]
    ours, unindexed = parts["copy_ours"], parts["copy_ours_unindexed"]
    cpu = ours["details"]["cpu"]["postgresql_s"]
    return [
        f"  - the database's share: the same rows as stored (sealed, hashed, typed) copied again "
        f"into `signals` take {ours['wall_s']:.2f} s ({ours['wall_s'] / floor:.2f}× the "
        f"floor's time; PostgreSQL {cpu:.1f} s CPU), {unindexed['wall_s']:.2f} s into a table "
        f"of its columns without indexes ({unindexed['wall_s'] / floor:.2f}×); within 3× of the "
        f"floor is {3 * floor:.2f} s, the ingest took {ingest:.2f} s"
    ]


def _cores_floor(parts: dict[str, dict[str, Any]], cores: int | None) -> list[str]:
    """The least time the ingest's CPU allows on the machine's cores (all of them busy all the
    time), against the raw COPY floor: whether the part can meet "within 3×" by using the cores
    better, or only by doing less work."""
    if not cores or not all(p in parts for p in ("ingest", "copy")):
        return []
    cpu = parts["ingest"]["details"].get("cpu")
    if not cpu:
        return []
    ours = _own_cpu(cpu)
    used = ours + cpu["postgresql_s"]
    floor = parts["copy"]["wall_s"]
    least, budget = used / cores, 3 * floor * cores
    return [
        f"  - on {cores} cores it takes at least its CPU over the cores: (this process "
        f"{ours:.1f} s + PostgreSQL {cpu['postgresql_s']:.1f} s) / {cores} = {least:.2f} s, "
        f"{least / floor:.2f}× the floor's time; within 3× of the floor leaves {budget:.1f} s "
        f"of CPU in all, {budget / used:.0%} of what it used"
    ]


def where_time_goes(results: list[dict[str, Any]], cores: int | None = None) -> list[str]:
    """One paragraph per part with a breakdown, from the phase timers, statements and profile;
    ``cores``: the machine's, for the ingest's least time on them."""
    parts = _by_part(results)
    lines: list[str] = []
    if "ingest" in parts:
        lines += _phases_and_cpu("Ingest", "", parts["ingest"])
        sealing = parts["ingest"]["details"].get("sealing")
        if sealing:
            lines.append(
                "  - beside it, in the second thread: "
                + "; ".join(f"{k} {v:.2f} s" for k, v in sealing.items())
            )
        lines += _database_share(parts)
        lines += _cores_floor(parts, cores)
    if "profile" in parts:
        top = parts["profile"]["details"]["top_own_time"][:6]
        lines.append(
            "- **Ingest profile** (cProfile, own time): "
            + "; ".join(f"`{t['function']}` {t['share']:.0%}" for t in top)
        )
    if "matching" in parts:
        r = parts["matching"]
        lines += _phases_and_cpu("Matching", "", r)
        reads = r["details"].get("reads_side_by_side", {})
        if reads:
            lines.append(
                "  - the reads, side by side on two connections: "
                + "; ".join(f"{k} {v:.2f} s" for k, v in reads.items())
            )
        statements = r["details"].get("top_statements", [])[:3]
        if statements:
            lines.append(
                "  - slowest SQL (outside COPY): "
                + "; ".join(f"`{s['statement'][:70]}…` {s['seconds']:.2f} s" for s in statements)
            )
    if "matching_rules" in parts:
        r = parts["matching_rules"]
        lines.append(
            f"  - the rules alone on frames in memory: {r['wall_s']:.2f} s "
            f"({r['rows']:,} signals, {r['details']['history_rows']:,} history rows; "
            f"reading them took {r['details']['read_s']:.2f} s)"
        )
    if "rerun" in parts:
        lines += _phases_and_cpu("Rerun", ", not a target", parts["rerun"])
    if "api" in parts:
        d = parts["api"]["details"]
        sql = "; ".join(
            f"`{s['statement'][:60]}…` {s['ms_per_request']:.1f} ms"
            for s in d.get("endpoint_sql", [])
        )
        cpu = ", ".join(
            f"{owner} {d[key]:.1f} ms"
            for owner, key in (
                ("the server", "server_cpu_ms_per_request"),
                ("PostgreSQL", "database_cpu_ms_per_request"),
                ("the load driver", "load_cpu_ms_per_request"),
            )
            if d.get(key) is not None
        )
        busy = d.get("machine_busy_percent")
        lines.append(
            f"- **API**: one request alone takes {d['unloaded_p50_ms']:.1f} ms (p50, no load); "
            f"its SQL per request: {sql}; CPU per request under load: {cpu}"
            + (f"; the machine was {busy:.0f}% busy (both cores)" if busy is not None else "")
        )
    return lines


def _api_summary(title: str, api: dict[str, Any]) -> str:
    """One load test's figures, as a sentence."""
    d = api["details"]

    def ms(value: Any) -> str:
        return f"{value:.1f} ms" if isinstance(value, int | float) else "unbounded"

    busy = d.get("busy_processes") or 0
    machine = d.get("machine_busy_percent")
    return (
        f"{title}: {d['requests']:,} requests offered at {d['offered_rps']:.0f} req/s"
        + (f" with {busy} busy processes beside them" if busy else "")
        + f", {d['ok']:,} answered 200; p50 {ms(d['p50_ms'])}, p95 {ms(d['p95_ms'])}, "
        f"p99 {ms(d['p99_ms'])}, max {ms(d['max_ms'])}; "
        f"{d['throughput_rps']:.0f} req/s answered; statuses {d['statuses']}; "
        f"{d.get('retried_stale_connections', 0)} sent again on a new connection after the "
        "server had closed the idle one; "
        f"server peak RSS {_fmt_rss(api['peak_rss_bytes'])}, "
        f"load driver {_fmt_rss(d['load_rss_bytes'])}"
        + (f"; the machine {machine:.0f}% busy" if machine is not None else "")
        + "."
    )


def json_text(doc: dict[str, Any]) -> str:
    """The results document as the JSON written beside its markdown."""
    return json.dumps(doc, indent=2, default=str) + "\n"


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    pg = m["postgresql"]
    ram = f"{m['ram_bytes'] / GB:.1f} GB" if m.get("ram_bytes") else "unknown"
    out = [
        f"# vroegsignaal benchmarks — scale `{doc['scale']}`, seed {doc['seed']}",
        "",
        f"{m['date']} · {m['cpu']} · {m['cores']} cores · {ram} RAM · Python {m['python']} · "
        f"Polars {m['polars']} · PostgreSQL {pg.get('server_version', '?')} "
        f"(shared_buffers {pg.get('shared_buffers', '?')}, "
        f"max_wal_size {pg.get('max_wal_size', '?')}, "
        f"synchronous_commit {pg.get('synchronous_commit', '?')}) · {m['os']}"
        + (f" · commit {m['commit']}" if m.get("commit") else ""),
        "",
        "| Measurement | Rows | Wall | Rows/s | Peak RSS | CPU steal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        if "error" in r:
            out.append(f"| {r['part']}: FAILED ({r['error']}) | – | – | – | – | – |")
            continue
        steal = r.get("cpu_steal_percent")
        out.append(
            f"| {r['label']}{_runs(r)} | {_fmt_rows(r['rows'])} | {_fmt_wall(r['wall_s'])} | "
            f"{_fmt_rate(r['rows_per_s'])} | {_fmt_rss(r['peak_rss_bytes'])} | "
            f"{'–' if steal is None else f'{steal:.0f}%'} |"
        )
    for part, title in (
        ("api", "API"),
        ("api_busy", "API beside processes that keep a core busy each (not a target)"),
    ):
        api = _by_part(doc["results"]).get(part)
        if api:
            out += ["", _api_summary(title, api)]
    note = "" if doc["scale"] == "full" else " (targets are defined for the full scale)"
    out += ["", f"## Targets{note}", "", "| Target | Wanted | Measured | Result |"]
    out.append("|---|---|---|---|")
    for t in doc["targets"]:
        how = f" — {t['how_far']}" if t["how_far"] else ""
        status = "PASS" if t["met"] else ("n/a" if t["met"] is None else "MISS")
        out.append(f"| {t['name']} | {t['wanted']} | {t['measured']} | **{status}**{how} |")
    out += ["", "## Where the time goes", "", *doc["where_time_goes"]]
    out += ["", "## Method", "", *[f"- {line}" for line in METHOD]]
    return "\n".join(out) + "\n"


METHOD = (
    "Each measurement runs in a subprocess of its own; peak RSS is that process's "
    "`ru_maxrss` (the API's: the server process's `VmHWM`). PostgreSQL's own memory is not "
    "included.",
    "One scratch database per run (created, migrated, dropped). Before the measurements it "
    "holds the fresh month (ingested through the real pipeline) and twelve months of history "
    "built in SQL, vacuumed and analysed. The history is picked by the addresses' hashes, "
    "whose key is derived from the seed: every run of a seed builds the same history.",
    "Ingest: from reading the file to the commit, into the indexed `signals` table of that "
    "database, measured three times (twice at the smoke scale), each run a fresh upload after "
    "the run before was set aside (its signals removed, the table vacuumed) and a checkpoint; "
    "the median counts (of two, the slower), its peak RSS the highest of the runs, and the "
    "other figures are the median run's. The raw COPY floor is measured as often, the median "
    "counting. "
    "Phase times come from timers around the pipeline's own functions; the sealing "
    "(envelopes, AES-GCM, HMAC) and the encoding of the rows for the server run in a second "
    "thread beside them, their times listed apart. "
    "Every part runs with the deployed processes' allocator setting (`_RJEM_MALLOC_CONF`).",
    "Naive: measured on a slice, scaled linearly to the full file. COPY floor: raw CSV into an "
    "unindexed table of text columns. Floors for our table and our rows (after the ingest): the "
    "rows the ingest stored, exported in the binary COPY format to a file and copied from it "
    "into `signals` (indexes and keys, a delivery of their own, committed, then removed and "
    "vacuumed) and into an unindexed table of its columns: the server's part alone.",
    "SQL baseline: run before the matching run (so it reads the same, unupdated rows), with "
    "work_mem 256MB; it omits the repeat rule, the per-signal outcomes and the routing. Before "
    "it and before the run a checkpoint is taken: the run starts hours after the last upload, "
    "when the server has long written the uploads' changes out. The two are measured in turns, "
    "as often as the ingest, the median of each counting: before each turn but the first the "
    "run before is undone (its cases removed, the month's signals' states removed, so that "
    "they are as they arrived, its row removed; the tables vacuumed), so that each turn finds "
    "the rows the first found.",
    "API: open-loop load; latency counts from each request's due time; the driver starts each "
    "request when it falls due and collects no garbage while it measures (its own pauses "
    "would count as the server's); the per-key read limit is off for the load test. Before it "
    "the run's tables are vacuumed and analysed and a checkpoint is taken, as the nightly run's "
    "would be by the working day. Measured as often as the ingest, the run of the median p99 "
    "counting (of two, the higher).",
    "API beside busy processes (not a target): the same load once more, with processes beside "
    "it (as many as its line above says) that each keep a core busy (a loop in Python), started "
    "just before the load and killed after it: a shared machine's slow hour, on demand. "
    "Measured as often as the API, the run of the median p99 counting.",
    "Rerun (not a target): after the API part, the month's run again with the same deliveries "
    "(as after a late redelivery): every case kept, only what changed written.",
    "CPU while it ran (ingest, matching, rerun): this process's user and system time (all its "
    "threads), PostgreSQL's (every `postgres` process on the machine, from `/proc`, over the "
    "same span; right only with the server on the same machine, as here), other processes' "
    "(the machine's working time less those two: more than a little means something ran beside "
    "the part and disturbed it) and how busy the machine was. Both cores busy means the part can "
    "only go faster by doing less work.",
    "CPU steal: the share of the machine's CPU time during each part that the hypervisor gave "
    "to other virtual machines (`/proc/stat`). On a shared virtual machine the same work takes "
    "that much longer; compare runs with similar steal.",
)


def render(doc: dict[str, Any]) -> dict[str, Any]:
    """Add targets and the breakdown to a results document."""
    doc["targets"] = [t.__dict__ for t in targets(doc["results"])]
    doc["where_time_goes"] = where_time_goes(doc["results"], doc.get("machine", {}).get("cores"))
    return doc
