"""Rate limits over real HTTP: per API key for uploads and reads, per address for failed keys.

The limits here are small (3 uploads, 5 reads, 4 failed keys a minute) so the tests stay quick;
time moves by the test clock, never by sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from services.ratelimit import RateLimited, RateLimits, TokenBuckets
from shared import audit
from shared.auth import Principal
from shared.context import Context, build_context
from shared.crypto import split_api_key
from shared.models import AuditEvent
from shared.settings import Settings
from tests.conftest import Clock, LiveServer, make_settings
from tests.helpers import csv_file, register, row

PROBLEM = "application/problem+json"
UPLOADS, READS, FAILURES = 3, 5, 4


@pytest.fixture
def ctx(database_url: str, tmp_path: Path, clock: Clock) -> Iterator[Context]:
    """The test context with small limits (overrides the conftest fixture for this module)."""
    settings = make_settings(
        database_url,
        tmp_path / "data",
        rate_limit_uploads_per_minute=UPLOADS,
        rate_limit_reads_per_minute=READS,
        rate_limit_auth_failures_per_minute=FAILURES,
    )
    context = build_context(settings, clock=clock)
    yield context
    context.engine.dispose()


def upload(client: httpx.Client, content: bytes) -> httpx.Response:
    return client.post("/api/v1/deliveries", files={"file": ("a.csv", content)})


def assert_429(response: httpx.Response) -> int:
    assert response.status_code == 429
    assert response.headers["content-type"].startswith(PROBLEM)
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    body = response.json()
    assert body["status"] == 429
    assert body["detail"]
    assert body["retry_after"] == int(retry_after)
    assert response.headers["x-content-type-options"] == "nosniff"
    return int(retry_after)


def audit_events(ctx: Context, action: str) -> list[AuditEvent]:
    with ctx.sessions() as session:
        return list(
            session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def test_over_the_upload_limit_answers_429_and_refills(
    live_server: LiveServer, clock: Clock
) -> None:
    partner_a = register(live_server.ctx, "Huur BV", "huur")
    partner_b = register(live_server.ctx, "Energie NV", "energie")
    content = csv_file(row("R1"))
    with live_server.client(partner_a) as a:
        statuses = [upload(a, content).status_code for _ in range(UPLOADS)]
        assert statuses == [201, 200, 200]
        wait = assert_429(upload(a, content))
        assert wait == 20  # one token of 3 a minute: 20 seconds
        # Reads have their own bucket: the partner can still look at its deliveries.
        assert a.get("/api/v1/deliveries").status_code == 200
        # Another partner is not affected.
        with live_server.client(partner_b) as b:
            assert upload(b, content).status_code == 201
        clock.current += timedelta(seconds=wait - 1)
        assert_429(upload(a, content))
        clock.current += timedelta(seconds=1)
        assert upload(a, content).status_code == 200
        assert_429(upload(a, content))
        clock.current += timedelta(minutes=5)  # a full bucket, never more than a minute's worth
        assert [upload(a, content).status_code for _ in range(UPLOADS + 1)] == [200] * UPLOADS + [
            429
        ]


def test_over_the_read_limit_answers_429_per_key(live_server: LiveServer, clock: Clock) -> None:
    partner_a = register(live_server.ctx, "Huur BV", "huur")
    partner_b = register(live_server.ctx, "Energie NV", "energie")
    with live_server.client(partner_a) as a, live_server.client(partner_b) as b:
        assert [a.get("/api/v1/deliveries").status_code for _ in range(READS)] == [200] * READS
        assert_429(a.get("/api/v1/deliveries"))
        assert_429(a.get("/api/v1/deliveries/00000000-0000-0000-0000-000000000000"))
        assert b.get("/api/v1/deliveries").status_code == 200
        assert upload(a, csv_file(row("R1"))).status_code == 201  # the upload bucket is apart
        clock.current += timedelta(seconds=12)  # 5 a minute: one token every 12 seconds
        assert a.get("/api/v1/deliveries").status_code == 200
        assert_429(a.get("/api/v1/deliveries"))


def test_repeated_bad_keys_from_one_address_are_limited_and_audited(
    live_server: LiveServer, clock: Clock
) -> None:
    ctx = live_server.ctx
    good = register(ctx, "Huur BV", "huur")
    # Garbage, a well-formed unknown key and a real key id with a wrong secret.
    good_id = split_api_key(good)
    assert good_id is not None
    bad_keys = [
        "not-a-key",
        "vsp_000000000000_" + "x" * 43,
        f"vsp_{good_id[1]}_" + "y" * 43,
        "vss_abcdefabcdef_" + "z" * 43,
    ]
    attacker = {"X-Forwarded-For": "203.0.113.7"}  # uvicorn trusts loopback as a proxy
    neighbour = {"X-Forwarded-For": "198.51.100.9"}
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        for number, key in enumerate(bad_keys):
            response = client.get(
                "/api/v1/cases",
                headers={
                    **attacker,
                    "Authorization": f"Bearer {key}",
                    "X-Request-ID": f"bad-{number}",
                },
            )
            assert response.status_code == 401
        blocked = client.get(
            "/api/v1/cases", headers={**attacker, "Authorization": f"Bearer {bad_keys[0]}"}
        )
        wait = assert_429(blocked)
        assert wait == 15  # 4 a minute
        # While blocked, even the right key is not looked at from that address.
        assert_429(
            client.get(
                "/api/v1/deliveries", headers={**attacker, "Authorization": f"Bearer {good}"}
            )
        )
        # Another address is not affected, and neither is a request without any key.
        other = client.get(
            "/api/v1/deliveries", headers={**neighbour, "Authorization": f"Bearer {bad_keys[1]}"}
        )
        assert other.status_code == 401
        assert client.get("/api/v1/deliveries", headers=attacker).status_code == 401
        clock.current += timedelta(seconds=wait)
        assert (
            client.get(
                "/api/v1/deliveries", headers={**attacker, "Authorization": f"Bearer {good}"}
            ).status_code
            == 200
        )

    events = audit_events(ctx, "auth.failed")
    assert len(events) == len(bad_keys) + 1  # the attacker's four and the neighbour's one
    assert [e.request_id for e in events[: len(bad_keys)]] == [f"bad-{n}" for n in range(4)]
    for event in events:
        assert event.outcome == "denied"
        assert event.credential is None
        assert event.role is None
        assert event.actor_id == "unauthenticated"
        stored = " ".join(str(v) for v in (event.actor_id, event.object_id, event.details))
        for key in bad_keys:
            assert key not in stored
            for part in key.split("_"):
                assert part not in stored
        assert "203.0.113.7" not in stored  # no client address either
    assert events[0].details is not None
    assert "/api/v1/cases" in events[0].details
    with ctx.sessions() as session:
        assert audit.verify(session)[1] is None


def test_a_missing_key_is_neither_counted_nor_audited(live_server: LiveServer) -> None:
    with live_server.client() as anonymous:
        for _ in range(FAILURES * 3):
            assert anonymous.get("/api/v1/cases").status_code == 401
    assert audit_events(live_server.ctx, "auth.failed") == []


def test_a_revoked_key_is_a_failed_authentication(live_server: LiveServer) -> None:
    from services.ingest.partners import revoke_key
    from shared.db import unit_of_work

    ctx = live_server.ctx
    key = register(ctx)
    parts = split_api_key(key)
    assert parts is not None
    with unit_of_work(ctx.sessions) as session:
        revoke_key(session, parts[1], now=ctx.now())
    with live_server.client(key) as client:
        statuses = [client.get("/api/v1/deliveries").status_code for _ in range(FAILURES + 1)]
    assert statuses == [401] * FAILURES + [429]
    assert len(audit_events(ctx, "auth.failed")) == FAILURES


# --- the buckets themselves ----------------------------------------------------------------------


class Seconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_minute_burst_then_refills_evenly() -> None:
    seconds = Seconds()
    buckets = TokenBuckets(60, seconds)
    assert all(buckets.take("k") is None for _ in range(60))
    assert buckets.take("k") == 1
    assert buckets.take("other") is None
    seconds.now += 0.5
    assert buckets.waiting("k") == 1  # half a token: wait the rest, rounded up to 1 s
    seconds.now += 0.5
    assert buckets.waiting("k") is None
    assert buckets.take("k") is None
    assert buckets.take("k") == 1


def test_a_clock_stepping_back_refills_nothing() -> None:
    seconds = Seconds()
    buckets = TokenBuckets(2, seconds)
    assert buckets.take("k") is None
    assert buckets.take("k") is None
    seconds.now -= 3600
    assert buckets.take("k") == 30
    seconds.now += 30
    assert buckets.take("k") is None


def test_zero_switches_a_limit_off_and_the_tracked_keys_are_bounded() -> None:
    seconds = Seconds()
    off = TokenBuckets(0, seconds)
    assert all(off.take("k") is None for _ in range(1000))
    assert off.waiting("k") is None
    bounded = TokenBuckets(1, seconds, max_tracked=3)
    for key in ("a", "b", "c", "d"):
        assert bounded.take(key) is None
    assert bounded.waiting("a") is None  # forgotten: the least recently seen went first
    assert bounded.waiting("d") == 60


def test_limits_from_settings_and_the_upload_route() -> None:
    settings = Settings(
        environment="test",
        rate_limit_uploads_per_minute=1,
        rate_limit_reads_per_minute=0,
        rate_limit_auth_failures_per_minute=1,
    )
    limits = RateLimits.from_settings(settings, Seconds())
    principal = Principal(uuid.uuid4(), "abcdefabcdef", "partner", partner_id=uuid.uuid4())
    limits.admit(principal, "POST", "/api/v1/deliveries")
    with pytest.raises(RateLimited) as raised:
        limits.admit(principal, "post", "/api/v1/deliveries")
    assert raised.value.retry_after == 60
    for _ in range(100):  # reads are switched off
        limits.admit(principal, "GET", "/api/v1/deliveries")
    limits.refuse_if_blocked("10.0.0.1")
    limits.count_failure("10.0.0.1")
    with pytest.raises(RateLimited):
        limits.refuse_if_blocked("10.0.0.1")
    limits.refuse_if_blocked("10.0.0.2")


def test_default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "VS_RATE_LIMIT_UPLOADS_PER_MINUTE",
        "VS_RATE_LIMIT_READS_PER_MINUTE",
        "VS_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(environment="test")
    assert settings.rate_limit_uploads_per_minute == 30
    assert settings.rate_limit_reads_per_minute == 600
    assert settings.rate_limit_auth_failures_per_minute == 20
    monkeypatch.setenv("VS_RATE_LIMIT_UPLOADS_PER_MINUTE", "0")
    assert Settings(environment="test").rate_limit_uploads_per_minute == 0
