"""Who may call what: every route of the application against every kind of caller, over HTTP.

``EXPECTED`` holds one row per route (method and path) with the status each caller gets. The
completeness test walks ``app.routes`` and the OpenAPI document: a new endpoint without a row
fails it, so least privilege is decided for every endpoint, not assumed.

One world per backend for the whole module (building it runs a month's matching). The cells do
not disturb each other: the uploads go to the next period, the case actions are refused by the
protocol (409) once authorisation has let them through, and the register edits touch addresses
no other cell reads. Rate limits are switched off here; they have their own tests.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from services.app import create_app
from services.ingest.partners import revoke_key
from services.matcher.service import run_period
from services.routing.admin import add_staff, add_team
from shared.context import Context, build_context
from shared.crypto import split_api_key
from shared.db import Base, unit_of_work
from shared.models import Case, Delivery, Partner, Run, Team
from tests.conftest import Clock, _backends, make_settings
from tests.helpers import csv_file, free_port, register, row
from tests.matcher.test_run import deliver

PARTNERS = ("partner_a", "partner_b")
STAFF = ("sdv", "noord", "zuid", "budgetcoach", "coordinator", "admin")
PRINCIPALS = (*PARTNERS, *STAFF, "anonymous", "revoked")
PROBLEM = "application/problem+json"

CASE = "/api/v1/cases/{case_id}"
DELIVERY = "/api/v1/deliveries/{delivery_id}"


def public(status: int = 200) -> dict[str, int]:
    return dict.fromkeys(PRINCIPALS, status)


def only(**allowed: int) -> dict[str, int]:
    """403 for every authenticated caller not named, 401 without a (valid) key."""
    table = dict.fromkeys((*PARTNERS, *STAFF), 403)
    table.update(anonymous=401, revoked=401)
    table.update(allowed)
    return table


# A case of wijkteam noord: its team and the coordinator reach it; the other teams and roles get
# 404, exactly as for an id that does not exist (cross-team access).
NOORD_CASE = {"noord": 200, "coordinator": 200, "zuid": 404, "sdv": 404, "budgetcoach": 404}
# Partner A's delivery: partner B gets 404 (cross-partner access).
A_DELIVERY = {"partner_a": 200, "partner_b": 404}

EXPECTED: dict[tuple[str, str], dict[str, int]] = {
    ("GET", "/healthz"): public(),
    ("GET", "/readyz"): public(),
    # Unauthenticated by design (Prometheus scrapes it); the TLS proxy must not forward it.
    ("GET", "/metrics"): public(),
    ("GET", "/openapi.json"): public(),
    ("GET", "/docs"): public(),
    ("GET", "/docs/oauth2-redirect"): public(),
    ("GET", "/redoc"): public(),
    ("POST", "/api/v1/deliveries"): only(partner_a=201, partner_b=201),
    ("GET", "/api/v1/deliveries"): only(partner_a=200, partner_b=200),
    ("GET", DELIVERY): only(**A_DELIVERY),
    ("GET", DELIVERY + "/feedback"): only(**A_DELIVERY),
    ("GET", "/api/v1/cases"): only(sdv=200, noord=200, zuid=200, budgetcoach=200, coordinator=200),
    ("GET", CASE): only(**NOORD_CASE),
    ("POST", CASE + "/contact-attempts"): only(**NOORD_CASE | {"noord": 201, "coordinator": 201}),
    ("POST", CASE + "/transfer"): only(**NOORD_CASE | {"noord": 409, "coordinator": 409}),
    ("POST", CASE + "/close"): only(**NOORD_CASE | {"noord": 409, "coordinator": 409}),
    ("GET", "/api/v1/sdv/clients"): only(sdv=200),
    ("PUT", "/api/v1/sdv/clients"): only(sdv=200),
    ("POST", "/api/v1/sdv/clients"): only(sdv=201),
    ("DELETE", "/api/v1/sdv/clients"): only(sdv=200),
    ("GET", "/api/v1/runs"): only(coordinator=200),
    ("GET", "/api/v1/runs/{run_id}"): only(coordinator=200),
    ("GET", "/api/v1/monitor/deliveries"): only(coordinator=200),
    ("GET", "/api/v1/singles"): only(sdv=200, coordinator=200),
    ("GET", "/api/v1/audit"): only(coordinator=200, admin=200),
}

# Request bodies: valid ones, so that a refusal can only come from authorisation (or, for the
# case actions, from the case's state once authorisation has let the caller through).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", CASE + "/contact-attempts"): {"soort": "Brief", "datum": "2026-11-26"},
    ("POST", CASE + "/transfer"): {"route": "wijkteam", "team": "noord", "reason": "matrix"},
    ("POST", CASE + "/close"): {"resultaat": "Definitief geen contact kunnen krijgen"},
    ("PUT", "/api/v1/sdv/clients"): {"clients": [{"postcode": "2011AB", "huisnummer": "7"}]},
    ("POST", "/api/v1/sdv/clients"): {"postcode": "2011AB", "huisnummer": "98"},
    ("DELETE", "/api/v1/sdv/clients"): {"postcode": "2011AB", "huisnummer": "97"},
}


@dataclass
class World:
    url: str
    app: FastAPI
    ctx: Context
    keys: dict[str, str]
    ids: dict[str, str]  # case_id, delivery_id, run_id, and partner B's delivery

    def request(self, who: str, method: str, path: str) -> httpx.Response:
        key = self.keys.get(who)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = path.format(**self.ids)
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            if (method, path) == ("POST", "/api/v1/deliveries"):
                content = csv_file(row(f"{who}-1", nummer="40"))
                return client.post(url, files={"file": ("december.csv", content)})
            return client.request(method, url, json=BODIES.get((method, path)))


def _build(ctx: Context, clock: Clock) -> tuple[dict[str, str], dict[str, str]]:
    keys = {
        "partner_a": register(ctx, "Huur BV", "huur"),
        "partner_b": register(ctx, "Energie NV", "energie"),
    }
    with unit_of_work(ctx.sessions) as session:
        add_team(session, name="noord", postcodes="2011-2015", default=False, now=ctx.now())
        add_team(session, name="zuid", postcodes="2020-2029", default=True, now=ctx.now())
        specs = {
            "sdv": ("sdv", None),
            "noord": ("wijkteam", "noord"),
            "zuid": ("wijkteam", "zuid"),
            "budgetcoach": ("budgetcoach", None),
            "coordinator": ("coordinator", None),
            "admin": ("admin", None),
            "revoked": ("coordinator", None),
        }
        for label, (role, team) in specs.items():
            keys[label] = add_staff(session, name=label, role=role, team=team, now=ctx.now()).secret
        revoked = split_api_key(keys["revoked"])
        assert revoked is not None
        revoke_key(session, revoked[1], now=ctx.now())
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Huur BV", row("H7", nummer="7"))  # rent arrears alone: a case for noord
    deliver(ctx, "Energie NV", row("E1", nummer="1", postcode="2021XY"))
    clock.set_local(2026, 11, 26, 2, 0)
    run_period(ctx)
    clock.set_local(2026, 11, 26, 10, 0)
    with ctx.sessions() as session:
        noord = session.scalars(sa.select(Team).where(Team.name == "noord")).one()
        case = session.scalars(sa.select(Case).where(Case.team_id == noord.id)).one()
        run = session.scalars(sa.select(Run)).one()
        deliveries = {
            name: str(delivery_id)
            for delivery_id, name in session.execute(
                sa.select(Delivery.id, Partner.name).join(
                    Partner, Partner.id == Delivery.partner_id
                )
            )
        }
    ids = {
        "case_id": str(case.id),
        "run_id": str(run.id),
        "delivery_id": deliveries["Huur BV"],
        "b_delivery_id": deliveries["Energie NV"],
    }
    return keys, ids


@pytest.fixture(scope="module", params=_backends())
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[World]:
    import uvicorn

    folder = tmp_path_factory.mktemp("matrix")
    if request.param == "sqlite":
        shutil.copy(sqlite_template, folder / "test.sqlite")
        database_url = f"sqlite:///{folder / 'test.sqlite'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    clock = Clock()
    settings = make_settings(
        database_url,
        folder / "data",
        rate_limit_uploads_per_minute=0,
        rate_limit_reads_per_minute=0,
        rate_limit_auth_failures_per_minute=0,
    )
    ctx = build_context(settings, clock=clock)
    keys, ids = _build(ctx, clock)
    app = create_app(ctx)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield World(f"http://127.0.0.1:{port}", app, ctx, keys, ids)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if request.param != "sqlite":
            tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
            with ctx.engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
        ctx.engine.dispose()


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route, the included routers' ones too."""
    try:  # FastAPI includes routers lazily; this walks into them.
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        contexts: Iterable[Any] = app.routes
    else:
        contexts = iter_route_contexts(app.routes)
    routes = set()
    for route in contexts:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        assert path, f"a route without a path: {route!r}"
        assert methods, f"a route that is not a plain HTTP route: {path}"
        routes.update((method, path) for method in set(methods) - {"HEAD"})
    return routes


def test_every_route_has_a_row_and_every_row_a_route(world: World) -> None:
    routes = app_routes(world.app)
    missing = routes - set(EXPECTED)
    assert not missing, f"routes without an entry in EXPECTED: {sorted(missing)}"
    stale = set(EXPECTED) - routes
    assert not stale, f"entries in EXPECTED without a route: {sorted(stale)}"
    document = world.app.openapi()
    in_document = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert in_document <= set(EXPECTED)
    for table in EXPECTED.values():
        assert set(table) == set(PRINCIPALS)


@pytest.mark.parametrize(
    ("method", "path", "who"),
    [(method, path, who) for (method, path) in EXPECTED for who in PRINCIPALS],
    ids=lambda value: str(value),
)
def test_matrix(world: World, method: str, path: str, who: str) -> None:
    response = world.request(who, method, path)
    expected = EXPECTED[(method, path)][who]
    assert response.status_code == expected, (method, path, who, response.text[:300])
    if expected >= 400:
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["detail"]
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_cross_partner_and_cross_team_look_like_unknown_ids(world: World) -> None:
    """Another partner's delivery and another team's case answer exactly as a missing id."""
    unknown = str(uuid.uuid4())
    pairs = [
        ("partner_b", f"/api/v1/deliveries/{world.ids['delivery_id']}"),
        ("partner_a", f"/api/v1/deliveries/{world.ids['b_delivery_id']}"),
        ("partner_b", f"/api/v1/deliveries/{world.ids['delivery_id']}/feedback"),
        ("zuid", f"/api/v1/cases/{world.ids['case_id']}"),
    ]
    for who, path in pairs:
        other = world.request(who, "GET", path)
        missing = world.request(who, "GET", path.replace(path.split("/")[4], unknown))
        assert other.status_code == missing.status_code == 404
        assert other.json() | {"instance": None} == missing.json() | {"instance": None}
