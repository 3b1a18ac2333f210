"""Fuzzing the OpenAPI contract (schemathesis, a bounded number of examples per operation).

Every operation is called on the real server with generated parameters and bodies, with a key
that may use it (a partner's for the deliveries, SDV's for the register, the coordinator's for
the rest): whatever is generated, the answer is never a server error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error

from services.app import create_app
from services.routing.admin import add_staff
from shared.context import Context, build_context
from shared.db import unit_of_work
from shared.settings import Settings, new_key_text
from tests.conftest import LiveServer
from tests.helpers import register


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an application that never touches its database."""
    scratch = Settings(
        environment="test",
        database_url="sqlite://",
        data_dir=Path("data/openapi-only"),
        encryption_keys=SecretStr("k1:" + new_key_text()),
        address_hash_key=SecretStr(new_key_text()),
    )
    context = build_context(scratch)
    try:
        return create_app(context).openapi()
    finally:
        context.engine.dispose()


schema = schemathesis.openapi.from_dict(_document())


@pytest.fixture
def keys(ctx: Context) -> dict[str, str]:
    partner = register(ctx, "Fuzz Wonen", "huur")
    with unit_of_work(ctx.sessions) as session:
        sdv = add_staff(session, name="SDV", role="sdv", team=None, now=ctx.now()).secret
        coordinator = add_staff(
            session, name="Coordinator", role="coordinator", team=None, now=ctx.now()
        ).secret
    return {"partner": partner, "sdv": sdv, "coordinator": coordinator}


def _key_for(path: str, keys: dict[str, str]) -> str:
    if path.startswith("/api/v1/deliveries"):
        return keys["partner"]
    if path.startswith("/api/v1/sdv"):
        return keys["sdv"]
    return keys["coordinator"]


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
def test_no_server_errors(case: Any, live_server: LiveServer, keys: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {_key_for(case.path, keys)}"}
    response = case.call(base_url=live_server.url, headers=headers, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
