"""The CLI of the monthly cycle: run (human, --json, exit codes), teams, staff, export, audit."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from services.cli import EXIT_RUN_IN_PROGRESS, app
from services.ingest.service import ingest_with_retry
from services.routing.singles import CSV_COLUMNS, csv_line
from shared.context import build_context
from shared.models import AuditEvent, Partner, SignalledAddresses
from shared.settings import get_settings
from tests.conftest import AMSTERDAM
from tests.helpers import csv_file, row
from tests.test_cli import cli_env, invoke

runner = CliRunner()
__all__ = ["cli_env"]


@pytest.fixture
def october(cli_env: None) -> None:
    """Two partners delivered for 2026-10 (its window closed on 25 October)."""
    invoke("partners", "add", "--name", "Huur BV", "--kind", "huur", "--json")
    invoke("partners", "add", "--name", "Zorg UA", "--kind", "zorg", "--json")
    ctx = build_context(
        get_settings(), clock=lambda: datetime(2026, 10, 10, 9, tzinfo=AMSTERDAM).astimezone(UTC)
    )
    with ctx.sessions() as session:
        ids = {name: pid for name, pid in session.execute(sa.select(Partner.name, Partner.id))}
    ingest_with_retry(ctx, partner_id=ids["Huur BV"], content=csv_file(row("H1")), filename="h.csv")
    ingest_with_retry(
        ctx, partner_id=ids["Zorg UA"], content=csv_file(row("Z1", nummer="2")), filename="z.csv"
    )
    ctx.engine.dispose()


def test_a_set_the_run_cannot_use_is_logged_with_its_period(october: None) -> None:
    """The warning reaches the run's log (a JSON line on stderr, as cron keeps it) with the
    period and the reason: the operator sees which set was built again."""
    assert invoke("run", "--period", "2026-10", "--as-of", "2026-10-26", "--json")
    ctx = build_context(get_settings())
    with ctx.sessions() as session, session.begin():
        session.execute(sa.update(SignalledAddresses).values(hash_key_check="0" * 16))
    ctx.engine.dispose()
    result = runner.invoke(app, ["run", "--period", "2026-11", "--json"])
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [warning] = [e for e in logged if e.get("message") == "set of signalled addresses not used"]
    assert (warning["period"], warning["reason"]) == ("2026-10", "another address hash key")
    assert json.loads(result.stdout)["figures"]["recidive_periods"] == ["2026-10"]


def test_run_prints_figures_then_reports_done(october: None) -> None:
    human = runner.invoke(app, ["run", "--period", "2026-10", "--as-of", "2026-10-26"])
    assert human.exit_code == 0, human.output
    assert "cases                             1" in human.stdout
    assert "... reading the signals of 2026-10" in human.stderr  # progress goes to stderr
    again = invoke("run", "--period", "2026-10", "--json")
    assert isinstance(again, dict)
    assert again["status"] == "already_done"
    rerun = invoke("run", "--period", "2026-10", "--as-of", "2026-10-26", "--rerun", "--json")
    assert isinstance(rerun, dict)
    assert rerun["status"] == "completed"
    assert rerun["rerun"] is True
    assert rerun["figures"]["cases"] == 1
    assert rerun["figures"]["singles"] == 1


def test_a_second_run_at_the_same_time_exits_3(october: None, database_url: str) -> None:
    settings = get_settings()
    if database_url.startswith("postgresql"):
        engine = sa.create_engine(database_url)
        with engine.connect() as other:
            other.execute(sa.text("SELECT pg_advisory_lock((22099 :: bigint << 32) | 202610)"))
            result = runner.invoke(app, ["run", "--period", "2026-10", "--json"])
            other.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        engine.dispose()
    else:
        lock = settings.data_dir / "locks" / "run-2026-10.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            result = runner.invoke(app, ["run", "--period", "2026-10", "--json"])
    assert result.exit_code == EXIT_RUN_IN_PROGRESS
    assert "in progress" in json.loads(result.stderr)["detail"]


def test_bad_arguments_fail_clearly(cli_env: None) -> None:
    bad_date = runner.invoke(app, ["run", "--as-of", "26-10-2026"])
    assert bad_date.exit_code == 2
    assert "YYYY-MM-DD" in bad_date.stderr
    open_window = runner.invoke(app, ["run", "--period", "2099-01", "--json"])
    assert open_window.exit_code == 1
    assert json.loads(open_window.stderr)["status"] == 409


def test_teams_and_staff(cli_env: None) -> None:
    team = invoke(
        "teams", "add", "--name", "noord", "--postcodes", "2011-2015,2021,2024AB", "--json"
    )
    assert isinstance(team, dict)
    assert team["postcodes"] == ["2011-2015", "2021", "2024AB"]
    overlap = runner.invoke(app, ["teams", "add", "--name", "zuid", "--postcodes", "2015-2019"])
    assert overlap.exit_code == 1
    assert "overlaps 2011-2015 of team noord" in overlap.stderr
    member = invoke(
        "staff", "add", "--name", "Anna", "--role", "wijkteam", "--team", "noord", "--json"
    )
    assert isinstance(member, dict)
    assert member["api_key"].startswith("vss_")
    assert member["staff"]["team_id"] == team["id"]
    no_team = runner.invoke(app, ["staff", "add", "--name", "Bob", "--role", "wijkteam", "--json"])
    assert no_team.exit_code == 1
    assert json.loads(no_team.stderr)["status"] == 422
    listed = invoke("staff", "list", "--json")
    assert [s["name"] for s in listed] == ["Anna"]  # type: ignore[index]
    assert "api_key" not in json.dumps(listed)
    revoked = invoke("staff", "revoke-key", member["key_id"], "--json")
    assert isinstance(revoked, dict)
    assert revoked["revoked_at"]
    teams = invoke("teams", "list", "--json")
    assert [t["name"] for t in teams] == ["noord"]  # type: ignore[index]


def test_export_and_audit_verify(october: None, tmp_path: Path) -> None:
    invoke("run", "--period", "2026-10", "--as-of", "2026-10-26", "--json")
    out = tmp_path / "ddas.json"
    written = invoke(
        "export",
        "ddas",
        "--from",
        "2026-10-01",
        "--to",
        "2026-10-31",
        "--gemeentecode",
        "0392",
        "--out",
        str(out),
        "--json",
    )
    assert isinstance(written, dict)
    assert written["vroegsignalen"] == 2
    assert written["vroegsignaalzaken"] == 1
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert json.loads(out.read_text(encoding="utf-8"))["leveringen"][0]["gemeentecode"] == "0392"
    bad = runner.invoke(
        app,
        [
            "export",
            "ddas",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-31",
            "--gemeentecode",
            "392",
            "--out",
            str(out),
        ],
    )
    assert bad.exit_code == 2
    verified = invoke("audit", "verify", "--json")
    assert isinstance(verified, dict)
    assert verified["intact"] is True
    assert verified["events"] >= 3  # two partners added, one export


def test_purge_and_keys_commands(october: None) -> None:
    preview = invoke("purge", "--dry-run", "--json")
    assert isinstance(preview, dict)
    assert preview["dry_run"] is True
    assert preview["signals_without_case"] == 0  # received in October, kept six months
    done = invoke("purge", "--json")
    assert isinstance(done, dict)
    assert done["dry_run"] is False
    status = invoke("keys", "status", "--json")
    assert isinstance(status, dict)
    assert status["usage"]["signals"] == {status["active"]: 2}
    assert "c1:" not in json.dumps(status)  # no key material, only ids
    entry = runner.invoke(app, ["keys", "new", "--id", "k2027"])
    assert entry.exit_code == 0
    assert entry.stdout.startswith("k2027:")
    rotated = invoke("keys", "rotate", "--json")
    assert isinstance(rotated, dict)
    assert rotated["re_encrypted"]["signals"] == 0  # everything is under the active key already
    bad = runner.invoke(app, ["keys", "new", "--id", "bad id!"])
    assert bad.exit_code == 2


def test_deliveries_status_command(october: None) -> None:
    status = invoke("deliveries", "status", "--period", "2026-10", "--json")
    assert isinstance(status, dict)
    assert {p["flag"] for p in status["partners"]} == {"new"}
    human = runner.invoke(app, ["deliveries", "status", "--period", "2026-10"])
    assert "window closed" in human.stdout
    assert runner.invoke(app, ["deliveries", "status", "--period", "2026"]).exit_code == 2


def test_the_crisis_command_reports_each_period_it_looked_at(cli_env: None) -> None:
    reports = invoke("crisis", "--json")
    assert isinstance(reports, list)
    assert len(reports) == 2  # the period closed last (no monthly run yet) and the open one
    assert [(r["cases"], r["run_id"]) for r in reports] == [(0, None), (0, None)]
    human = runner.invoke(app, ["crisis", "--as-of", "2026-12-01"])
    assert human.exit_code == 0, human.output
    assert human.stdout.count("no new crisis case (0 crisis signals)") == 2
    bad = runner.invoke(app, ["crisis", "--as-of", "1-12-2026"])
    assert bad.exit_code == 2


@pytest.mark.parametrize(
    ("export", "name"),
    [
        (
            ["ddas", "--from", "2026-10-01", "--to", "2026-10-31", "--gemeentecode", "0392"],
            "d.json",
        ),
        (["singles"], "brieven.csv"),
    ],
)
def test_an_export_whose_audit_event_fails_writes_no_file(
    october: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export: list[str], name: str
) -> None:
    """The audit event commits before the file is written: no export is on disk without it."""
    import services.cli

    invoke("run", "--period", "2026-10", "--as-of", "2026-10-26", "--json")

    def failing_audit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the audit trail could not be written")

    monkeypatch.setattr(services.cli, "_audit", failing_audit)
    out = tmp_path / name
    result = runner.invoke(app, ["export", *export, "--out", str(out)])
    assert isinstance(result.exception, RuntimeError)
    assert not out.exists()
    assert list(tmp_path.glob(f".{name}.*")) == []  # nor a half-written one


def test_a_letter_file_that_fails_to_be_written_leaves_its_event_and_no_file(
    october: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event is in the trail before a byte is written: a file that then fails is gone,
    half-written too, and its event stays. A folder that cannot be written is refused first."""
    import services.routing.singles

    invoke("run", "--period", "2026-10", "--as-of", "2026-10-26", "--json")

    def failing_write(*args: object, **kwargs: object) -> int:
        raise OSError("no space left on device")

    monkeypatch.setattr(services.routing.singles, "write_csv", failing_write)
    out = tmp_path / "brieven.csv"
    result = runner.invoke(app, ["export", "singles", "--out", str(out)])
    assert isinstance(result.exception, OSError)
    assert not out.exists()
    assert list(tmp_path.glob(".brieven.csv.*")) == []
    assert _letter_file_events() == [{"period": "2026-10", "addresses": 1}]
    elsewhere = runner.invoke(app, ["export", "singles", "--out", str(tmp_path / "no" / "f.csv")])
    assert elsewhere.exit_code == 2
    assert "cannot write in" in elsewhere.stderr


def test_export_singles_writes_the_letter_file(october: None, tmp_path: Path) -> None:
    """October: rent at number 12 made a case; the health insurer's signal at number 2 is
    single. One line for it, with what a letter needs; private, audited, and the period must
    have had its run."""
    out = tmp_path / "brieven.csv"
    before = runner.invoke(app, ["export", "singles", "--period", "2026-10", "--out", str(out)])
    assert before.exit_code == 1
    assert "no completed run for 2026-10" in before.stderr
    assert not out.exists()
    invoke("run", "--period", "2026-10", "--as-of", "2026-10-26", "--json")
    written = invoke("export", "singles", "--out", str(out), "--json")
    assert isinstance(written, dict)
    assert (written["period"], written["addresses"], written["deliveries_since_run"]) == (
        "2026-10",
        1,
        0,
    )
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # a byte order mark: spreadsheets read it as UTF-8
    header, line = raw.decode("utf-8-sig").splitlines()
    assert header.split(";") == list(CSV_COLUMNS)
    assert dict(zip(CSV_COLUMNS, line.split(";"), strict=True)) == {
        "postcode": "2011AB",
        "huisnummer": "2",
        "huisnummer_toevoeging": "",
        "straat": "Kerkstraat",
        "woonplaats": "Haarlem",
        "namen": "J. Jansen",
        "telefoon": "0612345678",
        "email": "",
        "partners": "Zorg UA",
        "soorten": "zorg",
        "bedrag": "250,00",
        "referenties": "Z1",
    }
    assert _letter_file_events() == [{"period": "2026-10", "addresses": 1}]
    assert (
        runner.invoke(
            app, ["export", "singles", "--period", "10-2026", "--out", str(out)]
        ).exit_code
        == 2
    )


def test_a_letter_file_cell_a_spreadsheet_would_run_is_written_as_text() -> None:
    """A value that starts as a formula would (an e-mail "@...", a reference "-1") gets a quote
    before it; a phone number in international form is written as dialled from the Netherlands,
    so it needs none; several persons and signals at one address are joined."""
    person = {"voorletters": "A.", "tussenvoegsel": "de", "achternaam": "=HYPERLINK(1)"}
    item = {
        "address": {"postcode": "2011AB", "huisnummer": "2", "huisnummer_suffix": "A"},
        "persons": [
            person | {"telefoon": None, "email": None},
            {"voorletters": "B.", "tussenvoegsel": None, "achternaam": "Bos"}
            | {"telefoon": "+4915112345678", "email": "@b.nl"},
        ],
        "signals": [
            {
                "partner": {"name": "Zorg UA"},
                "kind": "zorg",
                "bedrag_cent": 1005,
                "referentie": "-1",
            },
            {"partner": {"name": "Zorg UA"}, "kind": "zorg", "bedrag_cent": 99, "referentie": "Z2"},
        ],
    }
    cells = dict(zip(CSV_COLUMNS, csv_line(item), strict=True))
    assert cells["namen"] == "A. de =HYPERLINK(1) / B. Bos"
    assert cells["telefoon"] == "004915112345678"  # as dialled from the Netherlands
    dutch = item | {"persons": [person | {"telefoon": "+31612345678", "email": None}]}
    assert dict(zip(CSV_COLUMNS, csv_line(dutch), strict=True))["telefoon"] == "0612345678"
    assert cells["email"] == "'@b.nl"
    assert (cells["partners"], cells["soorten"], cells["bedrag"]) == ("Zorg UA", "zorg", "11,04")
    assert cells["referenties"] == "'-1 / Z2"
    assert (cells["straat"], cells["huisnummer_toevoeging"]) == ("", "A")


def _letter_file_events() -> list[object]:
    """The details of the trail's ``export.singles`` events."""
    ctx = build_context(get_settings())
    with ctx.sessions() as session:
        details = session.scalars(
            sa.select(AuditEvent.details).where(AuditEvent.action == "export.singles")
        ).all()
    ctx.engine.dispose()
    return [json.loads(d or "{}") for d in details]
