"""Hostile and broken files through the real API: each gets a clear problem report (4xx,
``application/problem+json`` with a detail), nothing is stored, and the service stays up."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa

from shared.crypto import signal_aad
from shared.models import Delivery, Signal
from tests.conftest import LiveServer
from tests.helpers import HEADER, csv_file, json_file, register, row

PROBLEM = "application/problem+json"
MB = 1024 * 1024
FORMULA = "=cmd|' /C calc'!A0"


def signal(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "referentie": "R1",
        "achternaam": "Jansen",
        "voorletters": "J.",
        "geboortedatum": "1980-05-01",
        "straat": "Kerkstraat",
        "huisnummer": "12",
        "postcode": "2011AB",
        "woonplaats": "Haarlem",
        "telefoon": "0612345678",
        "bedrag": "250,00",
        "achterstand_sinds": "2026-09-01",
    }
    base.update(overrides)
    return base


def _zip_named_csv() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("arrears.csv", csv_file(row("R1")))
    return buffer.getvalue()


def _late_nul() -> bytes:
    rows = [row(f"R{i}", nummer=str(i + 1)) for i in range(1000)]  # about 100 KB before the NUL
    return csv_file(*rows, "R9;Jan\x00sen;;J.;;x;1;2011AB;;;;1,00;01-09-2026;nee")


def _duplicate_keys() -> bytes:
    one = json.dumps(signal())[:-1] + ', "achternaam": "Smit"}'
    return ('{"signalen": [' + one + "]}").encode()


def _deep_object() -> bytes:
    depth = 100_000
    return b'{"signalen": [' + b'{"a": ' * depth + b"1" + b"}" * depth + b"]}"


# name -> (filename, content maker, expected status, what the detail says)
HOSTILE: dict[str, tuple[str, Callable[[], bytes], int, str]] = {
    "invalid utf-8 in a row": (
        "a.csv",
        lambda: csv_file(row("R1")) + b"R2;Jans\x81\x8den;;J.;;x;1;2011AB;;;;1,00;01-09-2026;nee\n",
        422,
        "neither UTF-8 nor Windows-1252",
    ),
    "invalid utf-8 throughout": (
        "a.csv",
        lambda: bytes(range(0x80, 0x100)) * 4096,
        422,
        "neither UTF-8 nor Windows-1252",
    ),
    "nul byte early": (
        "a.csv",
        lambda: csv_file(row("R1", naam="Jan\x00sen")),
        415,
        "not CSV or JSON",
    ),
    "nul byte after 64 KiB": ("a.csv", _late_nul, 415, "NUL bytes"),
    "a 10 MB single line": ("a.csv", lambda: b"a" * (10 * MB), 422, "longer than 64 KiB"),
    "a 10 MB row after a good header": (
        "a.csv",
        lambda: (HEADER + "\n" + "x" * (10 * MB) + "\n").encode(),
        422,
        "not well-formed CSV",
    ),
    "a 10 MB name in a good row": (
        "a.csv",
        lambda: csv_file(row("R1", naam="J" * (10 * MB))),
        422,
        "problem(s) in the file",
    ),
    "a million columns": (
        "a.csv",
        lambda: b";" * 1_000_000 + b"\n" + b"1;2\n",
        422,
        "longer than 64 KiB",
    ),
    "a million columns, tab separated": (
        "a.csv",
        lambda: (HEADER.replace(";", "\t") + "\t" * 1_000_000 + "\n").encode(),
        422,
        "longer than 64 KiB",
    ),
    "deeply nested json list": (
        "a.json",
        lambda: b"[" * 100_000 + b"]" * 100_000,
        422,
        "nested too deeply",
    ),
    "deeply nested json object": ("a.json", _deep_object, 422, "nested too deeply"),
    "json with duplicate keys": ("a.json", _duplicate_keys, 422, "same key twice"),
    "json number 1e309": (
        "a.json",
        lambda: json_file([signal(bedrag=1e308)]).replace(b"1e+308", b"1e309"),
        422,
        "problem(s) in the file",
    ),
    "json NaN": (
        "a.json",
        lambda: json_file([signal()]).replace(b'"250,00"', b"NaN"),
        422,
        "not valid JSON",
    ),
    "csv amount 1e309": (
        "a.csv",
        lambda: csv_file(row("R1", bedrag="1e309")),
        422,
        "problem(s) in the file",
    ),
    "a zip renamed to .csv": ("arrears.csv", _zip_named_csv, 415, "binary file"),
    "an xlsx-like zip without a name": ("upload", _zip_named_csv, 415, "binary file"),
    "an empty file": ("a.csv", lambda: b"", 422, "empty"),
    "only blank lines": ("a.csv", lambda: b"\r\n\n  \n", 422, "empty"),
    "only a byte order mark": ("a.csv", lambda: b"\xef\xbb\xbf", 422, "empty"),
    "a header and no rows": ("a.csv", lambda: (HEADER + "\n").encode(), 422, "no rows"),
    "json that is not a list": ("a.json", lambda: b'{"signalen": "x"}', 422, "signalen"),
    "json that is truncated": ("a.json", lambda: json_file([signal()])[:-5], 422, "not valid JSON"),
}


def counts(server: LiveServer) -> tuple[int, int]:
    with server.ctx.sessions() as session:
        deliveries = session.scalar(sa.select(sa.func.count()).select_from(Delivery))
        signals = session.scalar(sa.select(sa.func.count()).select_from(Signal))
    return deliveries or 0, signals or 0


def upload(client: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return client.post("/api/v1/deliveries", files={"file": (name, content)})


def assert_clear_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert len(response.content) < 64 * 1024  # a report, not an echo of the file
    errors = body.get("errors", [])
    assert isinstance(errors, list)
    for error in errors:
        assert set(error) == {"row", "column", "message"}
        assert len(str(error["column"])) <= 40
    return body


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_gets_a_clear_answer_and_nothing_is_stored(
    live_server: LiveServer, case: str
) -> None:
    filename, make, status, says = HOSTILE[case]
    key = register(live_server.ctx)
    with live_server.client(key) as client:
        response = upload(client, filename, make())
        body = assert_clear_problem(response, status)
        assert says in str(body["detail"])
        assert "Jansen" not in response.text
        assert "\x00" not in json.dumps(body)
        assert counts(live_server) == (0, 0)
        assert client.get("/healthz").status_code == 200
        # And the service still takes a good file from the same partner afterwards.
        assert upload(client, "good.csv", csv_file(row("R1"))).status_code == 201


@pytest.mark.parametrize("file_format", ["csv", "json"])
def test_a_formula_in_a_name_is_stored_encrypted_as_plain_text(
    live_server: LiveServer, file_format: str
) -> None:
    """The service neither runs nor rewrites a spreadsheet formula: it is a name like any other,
    stored in the encrypted envelope byte for byte and given back only as data."""
    key = register(live_server.ctx)
    if file_format == "csv":
        content, name = csv_file(row("R1", naam=FORMULA)), "a.csv"
    else:
        content, name = json_file([signal(achternaam=FORMULA, referentie="=1+1")]), "a.json"
    with live_server.client(key) as client:
        response = upload(client, name, content)
        assert response.status_code == 201, response.text[:500]
        assert FORMULA not in response.text
        delivery_id = response.json()["id"]
        assert client.get("/healthz").status_code == 200
    assert counts(live_server) == (1, 1)
    with live_server.ctx.sessions() as session:
        stored = session.scalars(sa.select(Signal)).one()
    assert stored.pii is not None
    assert stored.pii_key_id is not None
    assert b"cmd" not in stored.pii
    assert b"calc" not in stored.pii
    pii = live_server.ctx.cipher.decrypt_json(
        stored.pii, signal_aad(delivery_id, stored.row_number), stored.pii_key_id
    )
    assert pii["achternaam"] == FORMULA


def test_a_nul_character_in_a_query_is_a_clear_422(live_server: LiveServer) -> None:
    from services.routing.admin import add_staff
    from shared.db import unit_of_work

    with unit_of_work(live_server.ctx.sessions) as session:
        key = add_staff(
            session, name="Auditor", role="coordinator", team=None, now=live_server.ctx.now()
        ).secret
    with live_server.client(key) as client:
        for path in ("/api/v1/audit?actor_id=a%00b", "/api/v1/cases?team=x%00y"):
            response = client.get(path)
            # SQLite stores NUL characters; PostgreSQL refuses them, which must be a clear 422.
            postgres = live_server.ctx.engine.dialect.name == "postgresql"
            assert response.status_code == (422 if postgres else 200), path
            if response.status_code == 422:
                assert response.headers["content-type"].startswith("application/problem+json")
                assert "NUL" in response.json()["detail"]
        assert client.get("/healthz").status_code == 200
