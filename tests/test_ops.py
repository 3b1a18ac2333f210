"""/healthz, /readyz and /metrics over real HTTP."""

from __future__ import annotations

import logging
import re

import pytest

from services.matcher.service import run_period
from shared import migrate
from shared.context import Context
from tests.conftest import Clock, LiveServer
from tests.helpers import csv_file, register, row


def test_health_and_readiness(live_server: LiveServer, ctx: Context) -> None:
    with live_server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        url = ctx.settings.resolved_database_url
        migrate.downgrade(url, "-1")
        try:
            behind = client.get("/readyz")
            assert behind.status_code == 503
            assert "run db upgrade" in behind.json()["detail"]
        finally:
            migrate.upgrade(url)
        assert client.get("/readyz").status_code == 200


def test_metrics_count_uploads_latency_runs_and_cases(
    live_server: LiveServer, ctx: Context, clock: Clock
) -> None:
    key = register(ctx, "Huur BV", "huur")
    with live_server.client(key) as client:
        accepted = client.post(
            "/api/v1/deliveries", files={"file": ("a.csv", csv_file(row(), row("R2", nummer="7")))}
        )
        assert accepted.status_code == 201
        bad = client.post(
            "/api/v1/deliveries", files={"file": ("b.csv", csv_file(row(postcode="0000XX")))}
        )
        assert bad.status_code == 422
    clock.set_local(2026, 11, 26, 2, 0)
    run_period(ctx)
    with live_server.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text

    def value(pattern: str) -> float:
        match = re.search(rf"^{pattern} (\S+)$", text, flags=re.MULTILINE)
        assert match, pattern
        return float(match.group(1))

    assert value(r'vroegsignaal_uploads_total\{kind="huur",outcome="accepted",source="api"\}') >= 1
    assert value(r'vroegsignaal_uploads_total\{kind="huur",outcome="rejected",source="api"\}') >= 1
    assert value(r'vroegsignaal_upload_rows_total\{kind="huur"\}') >= 2
    assert (
        value(
            r'vroegsignaal_http_request_duration_seconds_count\{method="POST",'
            r'route="/api/v1/deliveries",status="201"\}'
        )
        >= 1
    )
    assert value(r'vroegsignaal_cases_open\{route="wijkteam"\}') == 2
    assert value(r'vroegsignaal_last_run_figure\{figure="cases"\}') == 2
    assert value("vroegsignaal_database_up") == 1
    for personal in ("Jansen", "Kerkstraat", "2011AB", "0612345678"):
        assert personal not in text


def test_the_request_log_names_routes_never_paths(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A path that matches no route may hold anything (an id, a postcode): the request's log
    line names the route's template, or ``unmatched``, as the metrics do."""
    with caplog.at_level(logging.INFO, logger="vroegsignaal.http"), live_server.client() as client:
        assert client.get("/api/v1/no-such-thing/9999ZZ-1").status_code == 404
        assert client.get("/healthz").status_code == 200
    lines = [r for r in caplog.records if r.name == "vroegsignaal.http" and r.msg == "request"]
    assert [getattr(r, "route", None) for r in lines] == ["unmatched", "/healthz"]
    assert not any("9999ZZ" in str(vars(r)) for r in lines)
