"""API: ``GET /api/v1/cases`` under a fixed request rate, from a process of its own, on loopback.

The server is ``vroegsignaal serve`` (uvicorn, one process, as deployed) in a subprocess, with the
production settings from the environment: the scratch database and the bench keys. The per-key
read limit (``VS_RATE_LIMIT_READS_PER_MINUTE``, 600 a minute by default) is switched off: the load
comes from one coordinator key, where real traffic comes from many staff keys.

This process drives it with httpx (asyncio, keep-alive connections, at most 64 in flight) at an
open-loop rate: request *i* is due at ``start + i / rate``, and its latency is counted from that
moment, so time spent waiting for a free connection counts too (no coordinated omission).
Requests still unanswered 15 s after the last one was due count as failed. The page asked for is
the coordinator's default view (page 1, 50 cases, most urgent first) over every case: the
fresh month's and twelve months of history.

Where the time goes: the endpoint's SQL statements are timed in this process on the same data,
and a short sequential run gives the latency without load.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    SCALES,
    StatementTimer,
    child_parser,
    measurement,
    peak_rss_bytes,
    process_peak_rss_bytes,
    read_json,
    say,
    write_results,
)

PATH = "/api/v1/cases"
MAX_IN_FLIGHT = 64
DRAIN_SECONDS = 15.0
WARMUP_REQUESTS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int) -> subprocess.Popen[bytes]:
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
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until_up(base: str, server: subprocess.Popen[bytes], seconds: float = 30) -> None:
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


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``inf`` entries (failed requests) sort last."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def load(base: str, key: str, rate: float, seconds: float) -> dict[str, Any]:
    """Open-loop load; latencies in seconds from each request's due time."""
    total = int(rate * seconds)
    latencies: list[float] = [math.inf] * total
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=DRAIN_SECONDS + seconds
    ) as client:
        warm_until = time.monotonic() + 5
        for _ in range(WARMUP_REQUESTS):  # connections, caches; not counted
            await client.get(PATH)
            if time.monotonic() > warm_until:
                break
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        finished: list[float] = []

        async def one(index: int) -> None:
            due = start + index / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            async with gate:
                try:
                    response = await client.get(PATH)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                    return
            now = loop.time()
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            if response.status_code == 200:
                latencies[index] = now - due
                finished.append(now)

        tasks = [asyncio.create_task(one(i)) for i in range(total)]
        _done, pending = await asyncio.wait(tasks, timeout=seconds + DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            statuses["unanswered"] = len(pending)
    ok = [v for v in latencies if v != math.inf]
    span = (max(finished) - start) if finished else math.inf
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
    }


def sequential(base: str, key: str, count: int = 30, budget_s: float = 10) -> float:
    """Median latency (ms) of requests one after another: the cost without load."""
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while len(times) < count and (len(times) < 3 or time.monotonic() < deadline):
            started = time.perf_counter()
            client.get(PATH).raise_for_status()
            times.append(time.perf_counter() - started)
    return percentile(times, 50) * 1000


def endpoint_sql() -> list[dict[str, Any]]:
    """The SQL of one ``GET /api/v1/cases`` (coordinator, default page), timed statement by
    statement over ten calls of the service function the endpoint uses."""
    from services.routing import service
    from shared.auth import Principal
    from shared.context import build_context
    from shared.periods import local_today
    from shared.settings import Settings

    ctx = build_context(Settings())
    timer = StatementTimer()
    try:
        principal = Principal(uuid.uuid4(), "bench", "coordinator")
        today = local_today(ctx.now(), ctx.tz)
        with ctx.sessions() as session:
            service.list_cases(
                session, principal, service.CaseFilter(), today=today, page=1, page_size=50
            )
            timer.attach(ctx.engine)
            for _ in range(10):
                service.list_cases(
                    session, principal, service.CaseFilter(), today=today, page=1, page_size=50
                )
    finally:
        ctx.engine.dispose()
    return [
        {**entry, "ms_per_request": round(entry["seconds"] * 1000 / 10, 2)}
        for entry in timer.top(4)
    ]


def main() -> None:
    args = child_parser(__doc__ or "api").parse_args()
    scale = SCALES[args.scale]
    state: dict[str, Any] = read_json(args.state)
    key = state["coordinator_key"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port)
    try:
        wait_until_up(base, server)
        unloaded = sequential(base, key)
        say(f"api: {scale.api_rate:.0f} req/s for {scale.api_seconds:.0f} s on {PATH}")
        outcome = asyncio.run(load(base, key, scale.api_rate, scale.api_seconds))
        server_rss = process_peak_rss_bytes(server.pid)
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
                "api",
                f"API: GET {PATH} (coordinator, page 1 of 50) at {scale.api_rate:.0f} req/s",
                rows=None,
                wall_s=scale.api_seconds,
                peak_rss=server_rss,
                load_rss_bytes=peak_rss_bytes(),
                unloaded_p50_ms=round(unloaded, 2),
                endpoint_sql=sql,
                **rounded,
            )
        ],
    )


if __name__ == "__main__":
    main()
