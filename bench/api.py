"""API: ``GET /api/v1/cases`` under a fixed request rate, from a process of its own, on loopback.

The server is ``vroegsignaal serve --workers 2`` (uvicorn, one worker process per core of the
2-core machine) in a subprocess, with the production settings from the environment: the scratch
database and the bench keys. The per-key read limit (``VS_RATE_LIMIT_READS_PER_MINUTE``, 600 a
minute by default) is switched off: the load comes from one coordinator key, where real traffic
comes from many staff keys.

This process drives it at an open-loop rate: request *i* is due at ``start + i / rate``, and its
latency is counted from that moment, so time spent waiting for a free connection counts too (no
coordinated omission). At most 64 requests are in flight, over keep-alive connections. Requests
still unanswered 15 s after the last one was due count as failed. The page asked for is the
coordinator's default view (page 1, 50 cases, most urgent first) over every case: the fresh
month's and twelve months of history.

The load driver is a minimal HTTP/1.1 client on asyncio streams, not httpx: on this machine the
driver shares the two cores with the server and PostgreSQL, and httpx spent about 7 ms of CPU per
request (more than the server), which starved the server it was measuring. The driver's own CPU
per request is reported (``load_cpu_ms_per_request``).

Where the time goes: the endpoint's SQL statements are timed in this process on the same data,
and a short sequential run gives the latency without load.

With ``--busy N`` (the part ``api_busy``, not a target) the same load runs with N processes
beside it that each keep a core busy: a slow hour on demand (see :func:`busy_processes`).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    SCALES,
    busy_percent,
    child_parser,
    cpu_ticks,
    measurement,
    peak_rss_bytes,
    process_peak_rss_bytes,
    process_stats,
    read_json,
    say,
    settle,
    write_results,
)

PATH = "/api/v1/cases"
WORKERS = 2
MAX_IN_FLIGHT = 64
DRAIN_SECONDS = 15.0
WARMUP_ROUNDS = 20
WARMUP_CONCURRENCY = 16


# A slow hour's stand-in. In hours in which a shared machine ran at about 60 % of its speed,
# the case list missed its p99; those hours cannot be had on demand. Processes that each keep a
# core busy, as another tenant of the machine would, take the cores away on purpose instead.
BUSY_LOOP = "while True: pass"


@contextmanager
def busy_processes(count: int) -> Iterator[list[int]]:
    """``count`` processes that each keep a core busy (a loop in Python) while the block runs;
    their process ids. They are killed when it ends, however it ends."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            started.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP]))  # noqa: S603
        yield [p.pid for p in started]
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, workers: int = WORKERS) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).with_name("vroegsignaal")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from services.cli import main; main()"]
    )
    env = dict(os.environ)
    env["VS_RATE_LIMIT_READS_PER_MINUTE"] = "0"
    env["VS_TRUSTED_HOSTS"] = "127.0.0.1"
    return subprocess.Popen(  # noqa: S603 (the project's own command, fixed arguments)
        [
            *command,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until_up(base: str, server: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the API server exited with {server.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the API server did not come up")


def server_peak_rss_bytes(pid: int) -> int | None:
    """Peak RSS of the server: its own and its worker processes' (``VmHWM``), added up."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    found = [rss for p in pids if (rss := process_peak_rss_bytes(p)) is not None]
    return sum(found) if found else None


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the API server (the process and its workers) and of PostgreSQL
    (every ``postgres`` process: the backends serving the workers, and the server's own)."""
    stats = list(process_stats())
    children: dict[int, list[int]] = {}
    for pid, parent, _name, _cpu in stats:
        children.setdefault(parent, []).append(pid)
    tree, todo = set(), [server_pid]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return {
        "server": sum(cpu for pid, _parent, _name, cpu in stats if pid in tree),
        "database": sum(cpu for _pid, _parent, name, cpu in stats if name == "postgres"),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``inf`` entries (failed requests) sort last."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class HttpError(Exception):
    """The server's answer could not be read (closed, or not HTTP/1.1)."""


class _StaleConnection(Exception):
    """The connection was closed before any byte of the answer came."""


class Connections:
    """Keep-alive HTTP/1.1 connections for one fixed GET, opened as needed (at most ``limit``).

    Just enough HTTP for this server's answers: a status line, headers, and a body of
    ``Content-Length`` bytes or chunked. A connection the server closes is dropped.
    """

    def __init__(self, host: str, port: int, key: str, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.request = (
            f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Accept: application/json\r\n\r\n"
        ).encode("ascii")
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.retried = 0

    async def get(self) -> tuple[int, int]:
        """One request: (status, body bytes).

        A kept-alive connection the server closed while it was idle (uvicorn closes them after
        5 s) fails before any byte of an answer arrives: the GET is sent again once on a new
        connection, as HTTP clients do for idempotent requests (RFC 9110, 9.2.2), and counted
        in ``retried``. The time it took still counts in the request's latency.
        """
        reused = bool(self.idle)
        try:
            return await self._get()
        except _StaleConnection:
            if not reused:
                raise HttpError("closed before answering") from None
            self.retried += 1
            return await self._get(fresh=True)

    async def _get(self, fresh: bool = False) -> tuple[int, int]:
        if self.idle and not fresh:
            reader, writer = self.idle.pop()
        else:
            if self.opened >= self.limit:
                raise HttpError("no free connection")  # the caller's semaphore prevents this
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        try:
            writer.write(self.request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                raise _StaleConnection from exc
            except ConnectionError as exc:
                raise _StaleConnection from exc
            if not head.startswith(b"HTTP/1.1 "):
                raise HttpError("not an HTTP/1.1 answer")
            status = int(head[9:12])
            headers = head.lower()
            size = 0
            if b"\r\ntransfer-encoding: chunked" in headers:
                while chunk := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    size += len(await reader.readexactly(chunk + 2)) - 2
                await reader.readuntil(b"\r\n")
            else:
                at = headers.find(b"\r\ncontent-length:")
                if at >= 0:
                    length = int(headers[at + 17 : headers.index(b"\r\n", at + 2)])
                    size = len(await reader.readexactly(length))
        except _StaleConnection:
            self.opened -= 1
            writer.close()
            raise
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.opened -= 1
            writer.close()
            raise HttpError(type(exc).__name__) from exc
        if b"\r\nconnection: close" in headers:
            self.opened -= 1
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, size

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def _count(statuses: dict[str, int], name: str) -> None:
    statuses[name] = statuses.get(name, 0) + 1


async def load(
    host: str, port: int, key: str, rate: float, seconds: float, server_pid: int
) -> dict[str, Any]:
    """Open-loop load; latencies in seconds from each request's due time. Also the CPU each
    request cost the server, PostgreSQL and this driver, and how busy the machine was."""
    total = int(rate * seconds)
    latencies: list[float] = [math.inf] * total
    statuses: dict[str, int] = {}
    connections = Connections(host, port, key, MAX_IN_FLIGHT)
    # No garbage collection in this process while it measures: a full collection paused the
    # driver's loop for 50 to 70 ms (at about the same point of every run), and the answers that
    # arrived meanwhile were counted late, as the server's latency. Reference counting still
    # frees almost everything; what cycles are left are collected afterwards.
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        # Not counted: keep-alive connections to every worker, their database connections and
        # prepared statements; as a server that has been up for a while.
        warm_until = time.monotonic() + 5
        for _ in range(WARMUP_ROUNDS):
            await asyncio.gather(*(connections.get() for _ in range(WARMUP_CONCURRENCY)))
            if time.monotonic() > warm_until:
                break
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        finished: list[float] = []
        cpu_before, others_before, ticks_before = os.times(), cpu_seconds(server_pid), cpu_ticks()
        start = loop.time() + 0.05

        async def one(index: int, due: float) -> None:
            async with gate:
                try:
                    status, _size = await connections.get()
                except HttpError as exc:
                    _count(statuses, str(exc))
                    return
            now = loop.time()
            _count(statuses, str(status))
            if status == 200:
                latencies[index] = now - due
                finished.append(now)

        # Each request is started when it falls due, not all at once beforehand: making and
        # first running 4,000 waiting tasks kept the loop busy for tens of milliseconds after the
        # start, and the first requests went out late (up to 50 ms, counted as the server's).
        tasks: list[asyncio.Task[None]] = []
        for index in range(total):
            due = start + index / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            tasks.append(asyncio.create_task(one(index, due)))
        _done, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        cpu_after, others_after, ticks_after = os.times(), cpu_seconds(server_pid), cpu_ticks()
        for task in pending:
            task.cancel()
        if pending:
            statuses["unanswered"] = len(pending)
    finally:
        connections.close()
        if collecting:
            gc.enable()
    ok = [v for v in latencies if v != math.inf]
    span = (max(finished) - start) if finished else math.inf
    driver_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "requests": total,
        "ok": len(ok),
        "statuses": statuses,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "throughput_rps": len(ok) / span if finished else 0.0,
        "offered_rps": rate,
        "load_cpu_ms_per_request": driver_cpu * 1000 / max(1, total),
        **{
            f"{owner}_cpu_ms_per_request": (others_after[owner] - others_before[owner])
            * 1000
            / max(1, total)
            for owner in others_before
        },
        "machine_busy_percent": busy_percent(ticks_before, ticks_after),
        "retried_stale_connections": connections.retried,
    }


async def _sequential(host: str, port: int, key: str, count: int, budget_s: float) -> float:
    connections = Connections(host, port, key, 1)
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    try:
        for _ in range(5):
            await connections.get()
        while len(times) < count and (len(times) < 3 or time.monotonic() < deadline):
            started = time.perf_counter()
            status, _size = await connections.get()
            if status != 200:
                raise SystemExit(f"the API answered {status}")
            times.append(time.perf_counter() - started)
    finally:
        connections.close()
    return percentile(times, 50) * 1000


def sequential(host: str, port: int, key: str, count: int = 100, budget_s: float = 10) -> float:
    """Median latency (ms) of requests one after another: the cost without load."""
    return asyncio.run(_sequential(host, port, key, count, budget_s))


@contextmanager
def _sql_seconds(engine: Any) -> Iterator[dict[str, list[Any]]]:
    """Seconds and calls per statement shape executed on ``engine`` inside the block."""
    from sqlalchemy import event

    seconds: dict[str, list[Any]] = {}
    started: list[float] = []

    def before(*_args: Any) -> None:
        started.append(time.perf_counter())

    def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        entry = seconds.setdefault(" ".join(statement.split())[:90], [0.0, 0])
        entry[0] += time.perf_counter() - started.pop()
        entry[1] += 1

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seconds
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def endpoint_sql() -> list[dict[str, Any]]:
    """The SQL of one ``GET /api/v1/cases`` (coordinator, default page), timed over ten calls of
    the service function the endpoint uses: the page and its total are one statement."""
    from services.routing import service
    from shared.auth import Principal
    from shared.context import build_context
    from shared.periods import local_today
    from shared.settings import Settings

    ctx = build_context(Settings())
    found: list[dict[str, Any]] = []
    try:
        principal = Principal(uuid.uuid4(), "bench", "coordinator")
        today = local_today(ctx.now(), ctx.tz)
        with ctx.sessions() as session:

            def one() -> None:
                service.list_cases(
                    session, principal, service.CaseFilter(), today=today, page=1, page_size=50
                )

            one()
            with _sql_seconds(ctx.engine) as seconds:
                for _ in range(10):
                    one()
            statement = max(seconds, key=lambda shape: seconds[shape][0])
            spent, calls = seconds[statement]
            found.append(
                {
                    "statement": statement,
                    "seconds": round(spent, 4),
                    "calls": calls,
                    "ms_per_request": round(spent * 1000 / 10, 2),
                }
            )
    finally:
        ctx.engine.dispose()
    return found


# What the monthly run writes. The run is nightly: by the working day autovacuum has long been
# through these tables and the checkpoint has written the run's pages.
RUN_TABLES = ("signals", "cases", "case_signals", "case_links", "case_events")


def main() -> None:
    parser = child_parser(__doc__ or "api")
    parser.add_argument(
        "--busy", type=int, default=0, help="processes keeping a core busy beside the load"
    )
    args = parser.parse_args()
    scale = SCALES[args.scale]
    state: dict[str, Any] = read_json(args.state)
    key = state["coordinator_key"]
    # The load test must not share the two cores with the cleanup of the run measured before it.
    seconds = settle(vacuum=RUN_TABLES)
    say(f"api: the database settled (VACUUM ANALYZE, CHECKPOINT) in {seconds:.1f} s")
    host, port = "127.0.0.1", free_port()
    base = f"http://{host}:{port}"
    server = start_server(port)
    try:
        wait_until_up(base, server)
        unloaded = sequential(host, port, key)
        say(
            f"api: {scale.api_rate:.0f} req/s for {scale.api_seconds:.0f} s on {PATH} "
            f"({WORKERS} workers)"
        )
        with busy_processes(args.busy) as busy:
            if busy:
                say(f"api: beside {len(busy)} processes that keep a core busy each")
            outcome = asyncio.run(
                load(host, port, key, scale.api_rate, scale.api_seconds, server.pid)
            )
        server_rss = server_peak_rss_bytes(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    sql = endpoint_sql()
    say(
        f"api: p50 {outcome['p50_ms']:.1f} ms, p99 {outcome['p99_ms']:.1f} ms, "
        f"{outcome['throughput_rps']:.0f} req/s answered"
    )
    # A percentile that fell on a failed request is unbounded: stored as null.
    rounded = {
        k: (None if v == math.inf else round(v, 2)) if isinstance(v, float) else v
        for k, v in outcome.items()
    }
    write_results(
        args.result_file,
        [
            measurement(
                "api_busy" if args.busy else "api",
                f"API: GET {PATH} (coordinator, page 1 of 50) at {scale.api_rate:.0f} req/s, "
                f"{WORKERS} workers"
                + (
                    f", beside {args.busy} processes that keep a core busy each (a slow hour's "
                    "stand-in; not a target)"
                    if args.busy
                    else ""
                ),
                rows=None,
                wall_s=scale.api_seconds,
                peak_rss=server_rss,
                load_rss_bytes=peak_rss_bytes(),
                unloaded_p50_ms=round(unloaded, 2),
                workers=WORKERS,
                busy_processes=args.busy,
                endpoint_sql=sql,
                **rounded,
            )
        ],
    )


if __name__ == "__main__":
    main()
