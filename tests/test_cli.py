"""The command line: partners and keys, schema, JSON output for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from services.cli import app
from shared.context import Context
from shared.db import unit_of_work
from shared.models import AuditEvent, Case, CaseCount
from shared.settings import get_settings, new_key_text
from tests.conftest import LiveServer
from tests.helpers import csv_file, row

runner = CliRunner()


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


def invoke(*args: str) -> dict | list:  # type: ignore[type-arg]
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_partner_lifecycle_with_json_output(cli_env: None) -> None:
    added = invoke("partners", "add", "--name", "Pré Wonen", "--kind", "huur", "--json")
    assert isinstance(added, dict)
    assert added["partner"]["kind"] == "huur"
    key = added["api_key"]
    assert key.startswith("vsp_")
    listing = invoke("partners", "list", "--json")
    assert isinstance(listing, list)
    assert listing[0]["name"] == "Pré Wonen"
    assert key not in json.dumps(listing)
    revoked = invoke("partners", "revoke-key", added["key_id"], "--json")
    assert isinstance(revoked, dict)
    assert revoked["revoked_at"] is not None


def test_duplicate_partner_and_bad_kind_fail_clearly(cli_env: None) -> None:
    invoke("partners", "add", "--name", "Dup", "--kind", "water", "--json")
    again = runner.invoke(app, ["partners", "add", "--name", "Dup", "--kind", "water"])
    assert again.exit_code == 1
    assert "exists already" in again.output
    bad = runner.invoke(app, ["partners", "add", "--name", "X", "--kind", "gas", "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.stderr)["status"] == 422


def test_db_current_reports_head(cli_env: None) -> None:
    current = invoke("db", "current", "--json")
    assert isinstance(current, dict)
    assert current["up_to_date"] is True


def test_revoked_key_stops_working_at_once(cli_env: None, live_server: LiveServer) -> None:
    # The live server and the CLI share the test database.
    added = invoke("partners", "add", "--name", "Energiek", "--kind", "energie", "--json")
    assert isinstance(added, dict)
    headers = {"Authorization": f"Bearer {added['api_key']}"}
    files = {"file": ("a.csv", csv_file(row()))}
    ok = httpx.post(f"{live_server.url}/api/v1/deliveries", files=files, headers=headers)
    assert ok.status_code == 201
    invoke("partners", "revoke-key", added["key_id"], "--json")
    gone = httpx.get(f"{live_server.url}/api/v1/deliveries", headers=headers)
    assert gone.status_code == 401


def test_db_recount_repairs_a_wrong_case_count_and_says_so(cli_env: None, ctx: Context) -> None:
    from tests.test_case_counts import Parents, _new_case

    parents = Parents(ctx)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.insert(Case), [_new_case(parents, (1, 0, 0, 1, 1)) for _ in range(2)])
    assert invoke("db", "recount", "--json") == {"keys": 1, "wrong": 0, "repaired": False}
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.update(CaseCount).values(n=5))  # as a load bypassing triggers might
    assert invoke("db", "recount", "--json") == {"keys": 1, "wrong": 1, "repaired": True}
    human = runner.invoke(app, ["db", "recount"])
    assert human.exit_code == 0
    assert human.stdout.strip() == "case counts: 1 keys, all correct"
    with ctx.sessions() as session:
        assert session.scalar(sa.select(CaseCount.n)) == 2
        recounts = sa.select(sa.func.count()).where(AuditEvent.action == "cases.recount")
        assert session.scalar(recounts) == 1


def test_an_unexpected_error_shows_its_type_and_place_never_its_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A driver's message may quote a statement's values or a row; cron keeps what is printed."""
    from services import cli

    def broken() -> None:
        raise RuntimeError("Jansen, 2011AB 7, 1234 euro")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 1
    shown = capsys.readouterr().err
    assert "unexpected RuntimeError" in shown
    assert "test_cli.py" in shown  # where it happened
    assert "Jansen" not in shown


def test_database_errors_never_quote_the_statements_values(database_url: str) -> None:
    from shared.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as failed:
            conn.execute(sa.text("SELECT * FROM no_such_table WHERE name = :n"), {"n": "Jansen"})
    finally:
        engine.dispose()
    assert "Jansen" not in str(failed.value)
    assert "hidden" in str(failed.value)


def test_serve_listens_where_the_settings_say_unless_told(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VS_API_HOST and VS_API_PORT, as the configuration table says; --host and --port win.
    (uvicorn, outside the project, is replaced: only where it is asked to listen matters.)"""
    import uvicorn

    asked: list[tuple[str, int]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: asked.append((kw["host"], kw["port"])))
    monkeypatch.setenv("VS_API_HOST", "127.0.0.2")
    monkeypatch.setenv("VS_API_PORT", "8123")
    get_settings.cache_clear()
    # Two workers: uvicorn is given the import string, so no application is built here.
    assert runner.invoke(app, ["serve", "--workers", "2"]).exit_code == 0
    assert runner.invoke(app, ["serve", "--workers", "2", "--port", "9000"]).exit_code == 0
    assert asked == [("127.0.0.2", 8123), ("127.0.0.2", 9000)]
