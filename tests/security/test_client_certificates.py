"""Partners authenticating with a client certificate forwarded by the TLS proxy (mutual TLS).

Every HTTP test runs a real uvicorn server on loopback, on each database backend, wired two ways:

* ``serve``: as ``vroegsignaal serve`` runs it (``services.deps.behind_proxies``, uvicorn's
  ``proxy_headers`` off), the production path;
* ``plain``: plain uvicorn with its defaults (it rewrites the client from ``X-Forwarded-For`` when
  the peer is 127.0.0.1), the way the tests' ``live_server`` and a careless deployment run it.

The test client plays the proxy: it sends the headers nginx would set. The certificates are
throwaway self-signed ones made here; the proxy's chain verification is represented by
``X-Client-Cert-Verify``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from typer.testing import CliRunner

from services.app import create_app
from services.cli import app as cli_app
from services.deps import behind_proxies, is_trusted_proxy
from services.ingest.partners import add_certificate, add_partner, revoke_certificate
from shared.auth import normalise_fingerprint
from shared.context import Context, build_context
from shared.db import unit_of_work
from shared.errors import ConfigurationError
from shared.models import AuditEvent, Delivery, Partner, PartnerCertificate
from shared.settings import Settings, get_settings, new_key_text
from tests.conftest import Clock, make_settings
from tests.helpers import csv_file, free_port, row

PROBLEM = "application/problem+json"
WIRINGS = ("serve", "plain")
runner = CliRunner()


# --- certificates -------------------------------------------------------------------------------


def make_pem(
    name: str = "Woonstichting Test", *, ca: bool = False, not_after: datetime | None = None
) -> bytes:
    """A throwaway self-signed certificate (P-256), PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after or datetime.now(UTC) + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.PEM)


def fingerprint_of(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def forwarded(pem: bytes, verify: str = "SUCCESS") -> dict[str, str]:
    """The headers nginx sets: $ssl_client_escaped_cert and $ssl_client_verify."""
    return {"X-Client-Cert": quote(pem.decode(), safe=""), "X-Client-Cert-Verify": verify}


@pytest.fixture(scope="module")
def pem() -> bytes:
    return make_pem()


# --- servers ------------------------------------------------------------------------------------


@contextmanager
def running(app: Any, **options: Any) -> Iterator[str]:
    """A real uvicorn server on a loopback port; yields its base URL."""
    port = free_port()
    values: dict[str, Any] = {"log_config": None, "access_log": False, "lifespan": "off"}
    values.update(options)
    values.update(host="127.0.0.1", port=port)
    server = uvicorn.Server(uvicorn.Config(app, **values))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(ctx: Context, wiring: str) -> Any:
    """A server for ``ctx``, wired as ``vroegsignaal serve`` does or as plain uvicorn does."""
    if wiring == "serve":
        app = behind_proxies(create_app(ctx), ctx.settings.trusted_proxies)
        return running(app, proxy_headers=False)
    return running(create_app(ctx))


def context(
    database_url: str, tmp_path: Path, clock: Clock, trusted: list[str], **overrides: Any
) -> Context:
    settings = make_settings(database_url, tmp_path / "data", trusted_proxies=trusted, **overrides)
    return build_context(settings, clock=clock)


@pytest.fixture
def world(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path, clock: Clock
) -> Iterator[tuple[Context, str]]:
    """A context trusting ``request.param`` (default 127.0.0.1) and no server yet."""
    trusted = getattr(request, "param", ["127.0.0.1"])
    ctx = context(database_url, tmp_path, clock, trusted)
    yield ctx, database_url
    ctx.engine.dispose()


def register_partner(ctx: Context, pem: bytes | None, name: str = "Woonstichting Test") -> str:
    """A partner (its API key returned) with ``pem`` registered as its certificate."""
    with unit_of_work(ctx.sessions) as session:
        new = add_partner(session, name=name, kind="huur", now=ctx.now())
        if pem is not None:
            add_certificate(session, new.partner, pem, label="test", now=ctx.now())
        return new.secret


def upload(url: str, headers: dict[str, str], ref: str = "R1") -> httpx.Response:
    files = {"file": (f"{ref}.csv", csv_file(row(ref)))}
    return httpx.post(f"{url}/api/v1/deliveries", files=files, headers=headers, timeout=30)


def failures(ctx: Context) -> list[dict[str, Any]]:
    """The details of the ``auth.failed`` audit events, oldest first."""
    with ctx.sessions() as session:
        events = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "auth.failed").order_by(AuditEvent.id)
        ).all()
        return [json.loads(e.details or "{}") | {"credential": e.credential} for e in events]


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"] == "Bearer"


def assert_no_certificate_recorded(ctx: Context, pem: bytes) -> None:
    """No audit event holds the certificate, its escaped form, its subject or its fingerprint."""
    fingerprint = fingerprint_of(pem)
    body = pem.decode().splitlines()[1]
    with ctx.sessions() as session:
        rows = session.execute(
            sa.select(AuditEvent.details, AuditEvent.credential).where(
                AuditEvent.action == "auth.failed"
            )
        ).all()
    for details, credential in rows:
        text = f"{details} {credential}"
        for secret in (fingerprint, fingerprint[:11], body[:20], "Woonstichting", "BEGIN"):
            assert secret not in text


# --- the forwarded certificate over HTTP --------------------------------------------------------


@pytest.mark.parametrize("wiring", WIRINGS)
def test_certificate_from_trusted_proxy_uploads_as_the_partner(
    world: tuple[Context, str], pem: bytes, wiring: str
) -> None:
    ctx, _ = world
    register_partner(ctx, pem)
    with serve(ctx, wiring) as url:
        created = upload(url, forwarded(pem))
        listed = httpx.get(f"{url}/api/v1/deliveries", headers=forwarded(pem))
    assert created.status_code == 201, created.text
    assert [d["id"] for d in listed.json()["items"]] == [created.json()["id"]]
    with ctx.sessions() as session:
        partner = session.scalars(sa.select(Partner)).one()
        delivery = session.get(Delivery, uuid.UUID(created.json()["id"]))
        assert delivery is not None
        assert delivery.partner_id == partner.id
        record = session.scalars(sa.select(PartnerCertificate)).one()
        assert record.last_used_at is not None
        event = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "delivery.upload")
        ).one()
    assert event.actor_type == "partner"
    assert event.actor_id == str(partner.id)
    assert event.role == "partner"
    assert event.credential == "cert:" + fingerprint_of(pem)[:11]
    assert failures(ctx) == []


@pytest.mark.parametrize("world", [["10.0.0.0/8"]], indirect=True)
@pytest.mark.parametrize("wiring", WIRINGS)
def test_headers_from_an_untrusted_peer_are_ignored_and_audited(
    world: tuple[Context, str], pem: bytes, wiring: str
) -> None:
    ctx, _ = world
    register_partner(ctx, pem)
    with serve(ctx, wiring) as url:
        response = upload(url, forwarded(pem))
    assert_401(response)
    assert "API key is required" in response.json()["detail"]
    assert [f["reason"] for f in failures(ctx)] == ["untrusted_peer"]
    assert failures(ctx)[0]["credential"] is None
    assert_no_certificate_recorded(ctx, pem)
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0
        assert session.scalars(sa.select(PartnerCertificate)).one().last_used_at is None


@pytest.mark.parametrize("world", [["10.0.0.0/8"]], indirect=True)
@pytest.mark.parametrize("wiring", WIRINGS)
def test_x_forwarded_for_does_not_make_an_untrusted_peer_trusted(
    world: tuple[Context, str], pem: bytes, wiring: str
) -> None:
    """The client claims to come from the trusted network; the peer is 127.0.0.1, untrusted."""
    ctx, _ = world
    register_partner(ctx, pem)
    claims = ["10.1.2.3", "10.1.2.3, 10.4.5.6", "127.0.0.1, 10.1.2.3"]
    with serve(ctx, wiring) as url:
        responses = [upload(url, forwarded(pem) | {"X-Forwarded-For": c}) for c in claims]
        forwarded_header = upload(url, forwarded(pem) | {"Forwarded": "for=10.1.2.3"})
    for response in [*responses, forwarded_header]:
        assert_401(response)
    assert {f["reason"] for f in failures(ctx)} == {"untrusted_peer"}
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0


@pytest.mark.parametrize("wiring", WIRINGS)
def test_revoked_unknown_unverified_and_unreadable_certificates_get_401(
    world: tuple[Context, str], pem: bytes, wiring: str
) -> None:
    ctx, _ = world
    register_partner(ctx, pem)
    stranger = make_pem("Onbekend BV")
    with serve(ctx, wiring) as url:
        unknown = upload(url, forwarded(stranger))
        failed = upload(url, forwarded(pem, "FAILED:certificate has expired"))
        none = upload(url, forwarded(pem, "NONE"))
        no_verify = upload(url, {"X-Client-Cert": forwarded(pem)["X-Client-Cert"]})
        garbage = upload(
            url, {"X-Client-Cert": "not-a-certificate", "X-Client-Cert-Verify": "SUCCESS"}
        )
        assert upload(url, forwarded(pem)).status_code == 201
        with unit_of_work(ctx.sessions) as session:
            partner = session.scalars(sa.select(Partner)).one()
            revoke_certificate(session, partner, fingerprint_of(pem), now=ctx.now())
        revoked = upload(url, forwarded(pem), ref="R2")
    for response in (unknown, failed, none, no_verify, garbage, revoked):
        assert_401(response)
        assert response.json()["detail"] == "the client certificate is not valid"
    assert [f["reason"] for f in failures(ctx)] == [
        "not_registered",
        "not_verified",
        "not_verified",
        "not_verified",
        "unreadable",
        "not_registered",
    ]
    assert_no_certificate_recorded(ctx, pem)


def test_certificate_of_an_inactive_partner_gets_401(
    world: tuple[Context, str], pem: bytes
) -> None:
    ctx, _ = world
    register_partner(ctx, pem)
    with unit_of_work(ctx.sessions) as session:
        session.scalars(sa.select(Partner)).one().active = False
    with serve(ctx, "serve") as url:
        assert_401(upload(url, forwarded(pem)))
    assert [f["reason"] for f in failures(ctx)] == ["not_registered"]


def test_a_bearer_key_takes_precedence_over_a_certificate(
    world: tuple[Context, str], pem: bytes
) -> None:
    ctx, _ = world
    key = register_partner(ctx, pem)
    other = register_partner(ctx, None, name="Energie NV")
    with serve(ctx, "serve") as url:
        with_key = upload(url, forwarded(pem) | {"Authorization": f"Bearer {key}"})
        wrong_key = upload(url, forwarded(pem) | {"Authorization": "Bearer vsp_nope_nope"})
        other_key = upload(url, forwarded(pem) | {"Authorization": f"Bearer {other}"}, "R9")
    assert with_key.status_code == 201
    assert_401(wrong_key)
    assert other_key.status_code == 201  # the key's partner, not the certificate's
    with ctx.sessions() as session:
        credentials = session.scalars(
            sa.select(AuditEvent.credential).where(AuditEvent.action == "delivery.upload")
        ).all()
    assert all(c and not c.startswith("cert:") for c in credentials)
    assert "reason" not in failures(ctx)[0]  # a failed key is audited as before


def test_no_certificate_is_an_anonymous_request_not_a_failure(
    world: tuple[Context, str],
) -> None:
    ctx, _ = world
    with serve(ctx, "serve") as url:
        response = upload(url, {"X-Client-Cert-Verify": "NONE"})
    assert_401(response)
    assert failures(ctx) == []


@pytest.mark.parametrize("wiring", WIRINGS)
def test_rate_limits_count_per_certificate_and_per_client_address(
    database_url: str, tmp_path: Path, clock: Clock, pem: bytes, wiring: str
) -> None:
    ctx = context(
        database_url,
        tmp_path,
        clock,
        ["127.0.0.1"],
        rate_limit_uploads_per_minute=2,
        rate_limit_auth_failures_per_minute=2,
    )
    try:
        register_partner(ctx, pem)
        stranger = forwarded(make_pem("Onbekend BV"))
        with serve(ctx, wiring) as url:
            statuses = [upload(url, forwarded(pem), ref=f"R{i}").status_code for i in range(3)]
            bad = [upload(url, stranger).status_code for _ in range(3)]
        assert statuses == [201, 201, 429]
        assert bad == [401, 401, 429]
    finally:
        ctx.engine.dispose()


def test_behind_the_proxy_failures_count_against_the_forwarded_client(
    database_url: str, tmp_path: Path, clock: Clock, pem: bytes
) -> None:
    """As ``serve`` runs it, X-Forwarded-For from the trusted proxy names the client for the
    per-address limit, while the certificate check still looks at the proxy itself."""
    ctx = context(
        database_url, tmp_path, clock, ["127.0.0.1"], rate_limit_auth_failures_per_minute=1
    )
    try:
        register_partner(ctx, pem)
        stranger = forwarded(make_pem("Onbekend BV"))
        with serve(ctx, "serve") as url:
            first = upload(url, stranger | {"X-Forwarded-For": "203.0.113.7"})
            blocked = upload(url, stranger | {"X-Forwarded-For": "203.0.113.7"})
            other_client = upload(url, forwarded(pem) | {"X-Forwarded-For": "198.51.100.2"})
        assert first.status_code == 401
        assert blocked.status_code == 429
        assert other_client.status_code == 201, other_client.text
    finally:
        ctx.engine.dispose()


# --- `vroegsignaal serve` wires the application as tested above --------------------------------


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("VS_DATABASE_URL", database_url)
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VS_ENVIRONMENT", "test")
    monkeypatch.setenv("VS_ENCRYPTION_KEYS", "c1:" + new_key_text())
    monkeypatch.setenv("VS_ADDRESS_HASH_KEY", new_key_text())
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def invoke(*args: str) -> Any:
    result = runner.invoke(cli_app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def served_context(app: Any) -> Context:
    """The context of the FastAPI application inside the wrapped one ``serve`` runs."""
    while not isinstance(app, FastAPI):
        app = app.app
    context: Context = app.state.context
    return context


def test_serve_believes_forwarded_headers_from_trusted_proxies_only(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pem: bytes
) -> None:
    """Run the application exactly as ``vroegsignaal serve`` hands it to uvicorn."""
    monkeypatch.setenv("VS_TRUSTED_PROXIES", "10.0.0.0/8")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # uvicorn's own setting must play no part
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(app=app, options=kw))
    invoke("partners", "add", "--name", "Pré Wonen", "--kind", "huur", "--json")
    pem_file = tmp_path / "partner.pem"
    pem_file.write_bytes(pem)
    invoke("partners", "add-cert", "Pré Wonen", "--pem", str(pem_file), "--json")
    result = runner.invoke(cli_app, ["serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert captured["options"]["proxy_headers"] is False
    options = {k: v for k, v in captured["options"].items() if k not in ("host", "port")}
    with running(captured["app"], **options) as url:
        spoofed = upload(url, forwarded(pem) | {"X-Forwarded-For": "10.1.2.3"})
    served_context(captured["app"]).engine.dispose()
    assert_401(spoofed)

    monkeypatch.setenv("VS_TRUSTED_PROXIES", "127.0.0.1")
    get_settings.cache_clear()
    result = runner.invoke(cli_app, ["serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    with running(captured["app"], **options) as url:
        accepted = upload(url, forwarded(pem) | {"X-Forwarded-For": "203.0.113.7"})
    served_context(captured["app"]).engine.dispose()
    assert accepted.status_code == 201, accepted.text


# --- the command line ---------------------------------------------------------------------------


def test_add_list_and_revoke_certificates_from_the_command_line(
    cli_env: None, tmp_path: Path, pem: bytes
) -> None:
    invoke("partners", "add", "--name", "Pré Wonen", "--kind", "huur", "--json")
    pem_file = tmp_path / "partner.pem"
    pem_file.write_bytes(pem)
    added = invoke(
        "partners", "add-cert", "Pré Wonen", "--pem", str(pem_file), "--label", "PKIo", "--json"
    )
    fingerprint = fingerprint_of(pem)
    assert added["fingerprint"] == fingerprint
    assert added["key_id"] == "cert:" + fingerprint[:11]
    assert added["label"] == "PKIo"
    assert added["revoked_at"] is None
    human = runner.invoke(cli_app, ["partners", "certs", "Pré Wonen"])
    assert fingerprint in human.stdout
    assert "active" in human.stdout

    again = runner.invoke(cli_app, ["partners", "add-cert", "Pré Wonen", "--pem", str(pem_file)])
    assert again.exit_code == 1
    assert "registered already" in again.output

    listed = invoke("partners", "certs", "Pré Wonen", "--json")
    assert [c["fingerprint"] for c in listed] == [fingerprint]
    partners = invoke("partners", "list", "--json")
    assert partners[0]["certificates"][0]["fingerprint"] == fingerprint

    colons = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    revoked = invoke("partners", "revoke-cert", "Pré Wonen", colons, "--json")
    assert revoked["revoked_at"] is not None
    assert invoke("partners", "revoke-cert", "Pré Wonen", fingerprint, "--json")["revoked_at"]
    assert invoke("partners", "certs", "Pré Wonen", "--json")[0]["revoked_at"] is not None

    ctx = build_context(get_settings())
    try:
        with ctx.sessions() as session:
            events = session.execute(
                sa.select(AuditEvent.action, AuditEvent.actor_id, AuditEvent.details).where(
                    AuditEvent.action.like("certificate.%")
                )
            ).all()
    finally:
        ctx.engine.dispose()
    assert [e.action for e in events] == [
        "certificate.add",
        "certificate.revoke",
        "certificate.revoke",
    ]
    assert all(e.actor_id == "cli" and fingerprint in (e.details or "") for e in events)


def test_add_cert_refuses_what_is_not_one_partner_certificate(
    cli_env: None, tmp_path: Path, pem: bytes
) -> None:
    invoke("partners", "add", "--name", "Pré Wonen", "--kind", "huur", "--json")
    invoke("partners", "add", "--name", "Energie NV", "--kind", "energie", "--json")
    cases = {
        "garbage": (b"hello", "not a PEM certificate"),
        "chain": (make_pem() + make_pem("CA"), "holds 2 certificates"),
        "ca": (make_pem("CA", ca=True), "CA certificate"),
        "expired": (make_pem(not_after=datetime(2021, 1, 1, tzinfo=UTC)), "expired"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(content)
        result = runner.invoke(
            cli_app, ["partners", "add-cert", "Pré Wonen", "--pem", str(path), "--json"]
        )
        assert result.exit_code == 1, name
        problem = json.loads(result.stderr)
        assert problem["status"] == 422
        assert message in problem["detail"], name
    missing = runner.invoke(
        cli_app, ["partners", "add-cert", "Pré Wonen", "--pem", str(tmp_path / "none.pem")]
    )
    assert missing.exit_code == 2

    good = tmp_path / "good.pem"
    good.write_bytes(pem)
    invoke("partners", "add-cert", "Pré Wonen", "--pem", str(good), "--json")
    # Another partner cannot revoke it, nor can a malformed fingerprint.
    other = runner.invoke(
        cli_app, ["partners", "revoke-cert", "Energie NV", fingerprint_of(pem), "--json"]
    )
    assert other.exit_code == 1
    assert json.loads(other.stderr)["status"] == 404
    malformed = runner.invoke(cli_app, ["partners", "revoke-cert", "Pré Wonen", "abc", "--json"])
    assert json.loads(malformed.stderr)["status"] == 422


# --- pieces -------------------------------------------------------------------------------------


def test_fingerprints_are_normalised() -> None:
    value = "ab" * 32
    assert normalise_fingerprint(value.upper()) == value
    assert normalise_fingerprint(":".join(["AB"] * 32)) == value
    assert normalise_fingerprint("SHA256 Fingerprint=" + ":".join(["ab"] * 32)) == value
    assert normalise_fingerprint("sha256:" + value) == value
    for bad in ("", "ab" * 31, "zz" * 32, "ab" * 33):
        assert normalise_fingerprint(bad) is None


def test_trusted_proxy_addresses() -> None:
    trusted = Settings(trusted_proxies="127.0.0.1,10.0.0.0/8,fd00::/8").trusted_proxies
    assert is_trusted_proxy("127.0.0.1", trusted)
    assert is_trusted_proxy("10.200.1.1", trusted)
    assert is_trusted_proxy("::ffff:10.1.1.1", trusted)
    assert is_trusted_proxy("fd12::1", trusted)
    for host in ("127.0.0.2", "11.0.0.1", "::1", "", None, "unknown", "testclient"):
        assert not is_trusted_proxy(host, trusted)
    assert not is_trusted_proxy("127.0.0.1", [])


def test_trusted_proxies_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().trusted_proxies == []
    monkeypatch.setenv("VS_TRUSTED_PROXIES", '["192.168.10.0/24", "::1"]')
    assert [str(n) for n in Settings().trusted_proxies] == ["192.168.10.0/24", "::1/128"]
    monkeypatch.setenv("VS_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    assert [str(n) for n in Settings().trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8"]
    for bad in ("*", "0.0.0.0/0", "::/0", "10.0.0.1/8", "proxy.local"):
        monkeypatch.setenv("VS_TRUSTED_PROXIES", bad)
        with pytest.raises(ConfigurationError):
            Settings()
