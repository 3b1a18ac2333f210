"""The database restarts under load: the API answers clean 503s, recovers by itself, and stores
every upload completely or not at all.

The restart happens on a private PostgreSQL cluster (``tests/pgcluster.py``), never on the shared
test server. The test does not use the ``database_url`` fixture: it runs once, on PostgreSQL only
(the SQLite backend has no server to restart).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from services.app import create_app
from services.matcher.service import run_period
from services.routing.admin import add_staff
from shared import audit, migrate
from shared.context import Context, build_context
from shared.db import CONNECT_TIMEOUT_S, make_engine, unit_of_work
from shared.models import AuditEvent, Case, Delivery, Signal
from tests.conftest import Clock, make_settings
from tests.helpers import csv_file, free_port, register, row
from tests.matcher.test_run import deliver
from tests.pgcluster import PgCluster, private_cluster

PROBLEM = "application/problem+json"
UPLOADERS = ("Energie NV", "Water NV", "Zorg UA")
READERS = 3
OUTAGE_SECONDS = 1.5
RECOVERY_LIMIT = 5.0  # seconds after the database is back
REQUEST_TIMEOUT = 10.0  # a request slower than this counts as hung
PACE = 0.02  # between a client's requests
BACKOFF = 0.2  # after a refusal (a real client would wait for Retry-After)


# --- what the clients saw --------------------------------------------------------------------


@dataclass
class Call:
    kind: str  # "read", "upload", "healthz", "readyz"
    started: float
    ended: float
    status: int | None = None
    error: str | None = None  # transport error or timeout: a hung or dropped request
    content_type: str = ""
    retry_after: str | None = None
    body: Any = field(default=None, repr=False)
    # uploads only
    partner: str = ""
    content: bytes = field(default=b"", repr=False)
    rows: int = 0

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)


@dataclass
class Record:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def of(self, *kinds: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.kind in kinds]


def _call(
    client: httpx.Client, kind: str, send: Callable[[], httpx.Response], **extra: Any
) -> Call:
    started = time.monotonic()
    try:
        response = send()
    except httpx.HTTPError as exc:
        return Call(kind, started, time.monotonic(), error=type(exc).__name__, **extra)
    ended = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = None
    return Call(
        kind,
        started,
        ended,
        status=response.status_code,
        content_type=response.headers.get("content-type", ""),
        retry_after=response.headers.get("retry-after"),
        body=body,
        **extra,
    )


def _upload(client: httpx.Client, content: bytes) -> httpx.Response:
    return client.post("/api/v1/deliveries", files={"file": ("arrears.csv", content)})


# --- the world: a private cluster, seeded, and the API on it ---------------------------------


@dataclass
class World:
    cluster: PgCluster
    ctx: Context
    url: str  # the API's base URL
    staff_key: str
    partner_keys: dict[str, str]
    cases: int


@contextlib.contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """The application under a real uvicorn server on a loopback port (in a thread)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with private_cluster() as cluster:
        url = cluster.url()
        migrate.upgrade(url)  # what `vroegsignaal db upgrade` does
        clock = Clock()
        settings = make_settings(
            url,
            tmp_path / "data",
            rate_limit_uploads_per_minute=0,
            rate_limit_reads_per_minute=0,
        )
        ctx = build_context(settings, clock=clock)
        try:
            # October: rent arrears at five addresses, matched into five cases.
            register(ctx, "Huur BV", "huur")
            clock.set_local(2026, 10, 10, 9, 0)
            deliver(ctx, "Huur BV", *(row(f"H{n}", nummer=str(n)) for n in range(1, 6)))
            clock.set_local(2026, 10, 26, 2, 0)
            run_period(ctx)
            # November's window is open: the partners upload during the restart.
            clock.set_local(2026, 11, 10, 10, 0)
            partner_keys = {
                name: register(ctx, name, name.split()[0].lower()) for name in UPLOADERS
            }
            with unit_of_work(ctx.sessions) as session:
                staff_key = add_staff(
                    session, name="Coordinator", role="coordinator", team=None, now=ctx.now()
                ).secret
                cases = session.scalar(sa.select(sa.func.count()).select_from(Case)) or 0
            assert cases == 5
            with _serve(create_app(ctx)) as base:
                yield World(cluster, ctx, base, staff_key, partner_keys, cases)
        finally:
            ctx.engine.dispose()


# --- the load -------------------------------------------------------------------------------


def _reader(world: World, record: Record, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {world.staff_key}"}
    with httpx.Client(base_url=world.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        while not stop.is_set():
            call = _call(client, "read", lambda: client.get("/api/v1/cases"))
            record.add(call)
            time.sleep(PACE if call.ok else BACKOFF)


def _uploader(world: World, partner: str, record: Record, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {world.partner_keys[partner]}"}
    tag = partner.split()[0][0]
    with httpx.Client(base_url=world.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        n = 0
        while not stop.is_set():
            n += 1
            rows = 1 + n % 3
            content = csv_file(
                *(
                    row(f"{tag}{n}-{i}", nummer=str(10 + i), bedrag=f"{100 + n},{i:02d}")
                    for i in range(rows)
                )
            )
            call = _call(
                client,
                "upload",
                functools.partial(_upload, client, content),
                partner=partner,
                content=content,
                rows=rows,
            )
            record.add(call)
            time.sleep(PACE if call.ok else BACKOFF)


def _prober(world: World, record: Record, stop: threading.Event) -> None:
    with httpx.Client(base_url=world.url, timeout=REQUEST_TIMEOUT) as client:
        while not stop.is_set():
            for path in ("/healthz", "/readyz"):
                record.add(_call(client, path.strip("/"), functools.partial(client.get, path)))
            time.sleep(0.05)


def _recovered_at(record: Record, since: float) -> float | None:
    """When reads, uploads and /readyz had all succeeded again after ``since``."""
    firsts = []
    for kind in ("read", "upload", "readyz"):
        done = [c.ended for c in record.of(kind) if c.started >= since and c.ok]
        if not done:
            return None
        firsts.append(min(done))
    return max(firsts)


# --- the test -------------------------------------------------------------------------------


def _clean_503(call: Call) -> bool:
    return (
        call.status == 503
        and call.content_type.startswith(PROBLEM)
        and isinstance(call.body, dict)
        and call.body.get("status") == 503
        and call.retry_after is not None
        and call.retry_after.isdigit()
    )


def _describe(call: Call) -> str:
    what = call.error or f"{call.status} {call.content_type} {call.body!r:.200}"
    return f"{call.kind} at {call.started:.2f}: {what}"


@pytest.mark.postgres_only
def test_api_survives_a_database_restart_under_load(world: World) -> None:
    record = Record()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_reader, args=(world, record, stop), daemon=True)
        for _ in range(READERS)
    ]
    threads += [
        threading.Thread(target=_uploader, args=(world, name, record, stop), daemon=True)
        for name in UPLOADERS
    ]
    threads.append(threading.Thread(target=_prober, args=(world, record, stop), daemon=True))
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)  # the load runs against a healthy database first
        stop_called = time.monotonic()
        world.cluster.stop("fast")
        down = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        start_called = time.monotonic()
        world.cluster.start()
        up = time.monotonic()
        deadline = up + RECOVERY_LIMIT + 5
        recovered = _recovered_at(record, up)
        while recovered is None and time.monotonic() < deadline:
            time.sleep(0.05)
            recovered = _recovered_at(record, up)
        time.sleep(1.5)  # and the load runs on after the recovery
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
    assert not any(t.is_alive() for t in threads), "a client thread hung"

    calls = record.of("read", "upload")
    before = [c for c in calls if c.ended < stop_called]
    assert before
    assert all(c.ok for c in before), "the load failed before the restart"

    # (a) Every answer is a success or a clean 503; no 500, no hung or dropped request.
    bad = [c for c in calls if not (c.ok or _clean_503(c))]
    assert not bad, "answers other than success or a clean 503:\n" + "\n".join(
        map(_describe, bad[:10])
    )
    reads = [c for c in calls if c.kind == "read" and c.ok]
    assert all(c.body["total"] == world.cases for c in reads), "a read saw a partial state"
    refused = [c for c in calls if c.status == 503]
    assert refused, "no request met the outage: the test did not test anything"
    for call in refused:
        text = repr(call.body)
        assert "127.0.0.1" not in text
        assert "psycopg" not in text.lower()
        assert "SELECT" not in text
        assert "INSERT" not in text
        assert "COPY" not in text
    inside = [c for c in calls if c.started >= down and c.ended <= start_called]
    assert inside
    assert all(c.status == 503 for c in inside)

    # (b) /healthz stays 200; /readyz is 503 while the database is down and 200 again after;
    # the API recovers by itself, quickly, and then keeps succeeding.
    health = record.of("healthz")
    assert health
    assert all(c.status == 200 for c in health), "/healthz failed during the outage"
    ready_down = [c for c in record.of("readyz") if c.started >= down and c.ended <= start_called]
    assert ready_down
    assert all(c.status == 503 for c in ready_down)
    assert all(c.content_type.startswith(PROBLEM) for c in ready_down)
    assert recovered is not None, f"no recovery within {RECOVERY_LIMIT + 5:.0f} s"
    recovery = recovered - up
    print(
        f"\ndatabase down {start_called - down:.2f} s (stop took {down - stop_called:.2f} s); "
        f"API recovered {recovery:.2f} s after the database was back; "
        f"{len(calls)} requests, {len(refused)} answered 503"
    )
    assert recovery < RECOVERY_LIMIT
    settled = [c for c in calls + record.of("readyz") if c.started >= recovered + 0.5]
    assert settled
    late = [c for c in settled if not c.ok]
    assert not late, "failures after the recovery:\n" + "\n".join(map(_describe, late[:10]))

    # (c) No half-written state.
    uploads = record.of("upload")
    succeeded = [c for c in uploads if c.ok]
    failed = [c for c in uploads if not c.ok]
    assert succeeded
    assert failed
    _assert_consistent(world, succeeded, failed)

    # ... and a failed upload, sent again, is stored (nothing of the first attempt is in the way).
    for call in failed:
        with httpx.Client(
            base_url=world.url,
            headers={"Authorization": f"Bearer {world.partner_keys[call.partner]}"},
            timeout=REQUEST_TIMEOUT,
        ) as client:
            again = _call(client, "upload", functools.partial(_upload, client, call.content))
        assert again.status == 201, _describe(again)
        assert again.body["rows"] == call.rows
        again.partner, again.content, again.rows = call.partner, call.content, call.rows
        succeeded.append(again)
    _assert_consistent(world, succeeded, [])

    with httpx.Client(
        base_url=world.url,
        headers={"Authorization": f"Bearer {world.staff_key}"},
        timeout=REQUEST_TIMEOUT,
    ) as client:
        assert client.get("/api/v1/cases").json()["total"] == world.cases
        assert client.get("/readyz").status_code == 200


def _assert_consistent(world: World, succeeded: list[Call], failed: list[Call]) -> None:
    """Each success fully stored, each failure absent, nothing else; the audit chain intact."""
    engine = sa.create_engine(world.cluster.url())
    try:
        with engine.connect() as conn:
            deliveries = {
                d.id: d
                for d in conn.execute(
                    sa.select(
                        Delivery.id, Delivery.content_sha256, Delivery.row_count, Delivery.period
                    )
                )
            }
            signals = dict(
                conn.execute(
                    sa.select(Signal.delivery_id, sa.func.count()).group_by(Signal.delivery_id)
                ).all()
            )
            uploaded = set(
                conn.scalars(
                    sa.select(AuditEvent.object_id).where(
                        AuditEvent.action.in_(["delivery.upload", "delivery.replace"]),
                        AuditEvent.outcome == "ok",
                    )
                )
            )
        with world.ctx.sessions() as session:
            checked, broken = audit.verify(session)
    finally:
        engine.dispose()
    assert broken is None, f"audit chain broken: {broken}"
    assert checked > 0

    # Every delivery has exactly its rows as signals; no signal without its delivery.
    assert set(signals) <= set(deliveries), "signals without a delivery"
    for delivery in deliveries.values():
        assert signals.get(delivery.id, 0) == delivery.row_count, "a delivery lost signals"
    # Every delivery was recorded in the audit trail with it, and the other way round.
    assert uploaded == {str(d) for d in deliveries}

    by_id = {uuid.UUID(c.body["id"]): c for c in succeeded}
    for delivery_id, call in by_id.items():
        stored = deliveries.get(delivery_id)
        assert stored is not None, "a confirmed upload is not in the database"
        assert stored.content_sha256 == hashlib.sha256(call.content).hexdigest()
        assert stored.row_count == call.rows == call.body["rows"]
    seeded = [d for d in deliveries.values() if d.period == "2026-10"]
    assert len(seeded) == 1
    assert set(deliveries) == set(by_id) | {d.id for d in seeded}, "a delivery nobody was told of"
    stored_digests = {d.content_sha256 for d in deliveries.values()}
    for call in failed:
        assert hashlib.sha256(call.content).hexdigest() not in stored_digests, (
            "a refused upload left a delivery behind"
        )


def _connect_parameters(engine: sa.Engine) -> dict[str, Any]:
    """The parameters the engine would connect with (the attempt is stopped before it is made)."""
    seen: dict[str, Any] = {}

    @sa.event.listens_for(engine, "do_connect")
    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise RuntimeError("not connecting")

    try:
        with pytest.raises(RuntimeError):
            engine.connect()
    finally:
        engine.dispose()
    return seen


def test_postgres_pool_replaces_dead_connections() -> None:
    """Pre-ping on, and a connection attempt that gets no answer gives up (never a hung request)."""
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert engine.pool._pre_ping
    seen = _connect_parameters(engine)
    assert seen["connect_timeout"] == CONNECT_TIMEOUT_S
    assert seen["options"] == "-c jit=off"


def test_a_url_with_its_own_options_keeps_them() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?options=-c%20jit%3Don")
    assert _connect_parameters(engine)["options"] == "-c jit=on"


def test_the_service_sessions_settings(database_url: str) -> None:
    """What make_engine sets, read back from a real session of each backend."""
    engine = make_engine(database_url)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
        else:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


# --- the mapping, without a database ---------------------------------------------------------

SECRET = "host=db.internal password=hunter2 Jansen"


def _invalidated() -> Exception:
    return sa.exc.DBAPIError(
        "SELECT 1 -- " + SECRET, {"naam": SECRET}, Exception(SECRET), connection_invalidated=True
    )


DATABASE_DOWN: dict[str, Callable[[], Exception]] = {
    "operational": lambda: sa.exc.OperationalError(
        "SELECT 1 -- " + SECRET, {"naam": SECRET}, Exception(SECRET)
    ),
    "interface": lambda: sa.exc.InterfaceError("SELECT 1", {"naam": SECRET}, Exception(SECRET)),
    "invalidated": _invalidated,
    "driver operational": lambda: psycopg.OperationalError(SECRET),
    "driver interface": lambda: psycopg.InterfaceError(SECRET),
    "pool timeout": lambda: sa.exc.TimeoutError(SECRET),
}


@pytest.fixture
def failing_app(tmp_path: Path) -> Iterator[tuple[str, dict[str, Exception]]]:
    """The real application with one extra route that raises whatever the test puts in."""
    ctx = build_context(
        make_settings(f"sqlite:///{tmp_path / 'unused.sqlite'}", tmp_path / "data"),
        clock=Clock(),
    )
    app = create_app(ctx)
    raised: dict[str, Exception] = {}

    @app.get("/boom")
    def boom() -> None:
        raise raised["exc"]

    with _serve(app) as base:
        yield base, raised
    ctx.engine.dispose()


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        r.getMessage() + " " + " ".join(map(str, vars(r).values())) for r in caplog.records
    )


@pytest.mark.parametrize("kind", list(DATABASE_DOWN))
def test_database_unavailable_is_a_clean_503(
    failing_app: tuple[str, dict[str, Exception]],
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, raised = failing_app
    raised["exc"] = DATABASE_DOWN[kind]()
    response = httpx.get(f"{base}/boom", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["status"] == 503
    assert body["title"] == "Database unavailable"
    assert body["instance"] == "/boom"
    assert "retry" in body["detail"]
    logged = _log_text(caplog)
    for leak in ("db.internal", "hunter2", "Jansen", "SELECT"):
        assert leak not in response.text
        assert leak not in logged


def test_other_database_errors_stay_500(
    failing_app: tuple[str, dict[str, Exception]], caplog: pytest.LogCaptureFixture
) -> None:
    base, raised = failing_app
    secret = "password=hunter2"  # a bug's 500 is not this test's business: no personal value
    raised["exc"] = sa.exc.ProgrammingError("SELECT nope", {"p": secret}, Exception(secret))
    response = httpx.get(f"{base}/boom", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 500
    assert "retry-after" not in response.headers
    assert "hunter2" not in response.text
    unhandled = [r for r in caplog.records if r.getMessage() == "unhandled_error"]
    assert unhandled
    assert "hunter2" not in " ".join(map(str, vars(unhandled[0]).values()))
