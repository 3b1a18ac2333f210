"""Security headers on every response, no CORS, and trusted hosts, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.context import Context, build_context
from tests.conftest import Clock, LiveServer, make_settings
from tests.helpers import register

HOST = "api.vroegsignaal.invalid"
EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


@pytest.fixture
def ctx(database_url: str, tmp_path: Path, clock: Clock) -> Iterator[Context]:
    """Only the loopback address and one name are trusted hosts; uploads up to 1 KiB."""
    settings = make_settings(
        database_url,
        tmp_path / "data",
        trusted_hosts=["127.0.0.1", HOST],
        max_upload_bytes=1024,
    )
    context = build_context(settings, clock=clock)
    yield context
    context.engine.dispose()


def assert_secured(response: httpx.Response, csp: str = API_CSP) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get_list(name) == [value], name
    assert response.headers.get_list("content-security-policy") == [csp]
    assert response.headers["x-request-id"]
    assert "access-control-allow-origin" not in response.headers


def test_every_kind_of_response_carries_the_headers(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    with live_server.client() as anonymous, live_server.client(key) as partner:
        responses = [
            anonymous.get("/healthz"),
            anonymous.get("/openapi.json"),
            anonymous.get("/api/v1/cases"),  # 401
            anonymous.get("/no/such/path"),  # 404
            anonymous.delete("/healthz"),  # 405
            partner.get("/api/v1/cases"),  # 403
            partner.get("/api/v1/deliveries", params={"limit": 0}),  # 422
            partner.get("/api/v1/deliveries"),  # 200
            partner.post("/api/v1/deliveries", files={"file": ("a.csv", b"x" * 200_000)}),  # 413
        ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 401, 404, 405, 403, 422, 200, 413]
    for response in responses:
        assert_secured(response)


def test_the_docs_get_a_policy_that_lets_them_load(live_server: LiveServer) -> None:
    with live_server.client() as client:
        docs = client.get("/docs")
        redoc = client.get("/redoc")
    assert docs.status_code == 200
    assert "cdn.jsdelivr.net" in docs.text
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline' cdn.jsdelivr.net" in csp
    assert "frame-ancestors 'none'" in csp
    assert docs.headers["x-frame-options"] == "DENY"
    assert redoc.headers["content-security-policy"] == csp


def test_no_cors(live_server: LiveServer) -> None:
    origin = {"Origin": "https://evil.example"}
    with live_server.client() as client:
        preflight = client.options(
            "/api/v1/deliveries",
            headers={**origin, "Access-Control-Request-Method": "POST"},
        )
        simple = client.get("/healthz", headers=origin)
    assert preflight.status_code in (400, 405)
    for response in (preflight, simple):
        assert not any(name.startswith("access-control-") for name in response.headers)


def test_only_trusted_hosts_are_answered(live_server: LiveServer) -> None:
    with live_server.client() as client:
        assert client.get("/healthz", headers={"Host": HOST}).status_code == 200
        assert client.get("/healthz").status_code == 200  # 127.0.0.1:<port>
        for host in ("evil.example", f"www.{HOST}", "127.0.0.2"):
            refused = client.get("/healthz", headers={"Host": host})
            assert refused.status_code == 400, host
            assert "location" not in refused.headers
            assert_secured(refused)
