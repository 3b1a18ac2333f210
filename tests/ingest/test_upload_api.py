"""The partner portal over real HTTP on loopback, on each database backend."""

from __future__ import annotations

import concurrent.futures
import io
import zipfile

import pytest
import sqlalchemy as sa

from shared.crypto import signal_aad
from shared.models import Delivery, Signal
from tests.conftest import LiveServer
from tests.helpers import csv_file, json_file, register, row

PROBLEM = "application/problem+json"
PART_HEADER = (
    b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\n"
)


def upload(client, content: bytes, name: str = "arrears.csv", **data: str):
    return client.post("/api/v1/deliveries", files={"file": (name, content)}, data=data)


def counts(server: LiveServer) -> tuple[int, int]:
    with server.ctx.sessions() as session:
        deliveries = session.scalar(sa.select(sa.func.count()).select_from(Delivery))
        signals = session.scalar(sa.select(sa.func.count()).select_from(Signal))
    return deliveries or 0, signals or 0


def test_accepted_upload_stores_encrypted_signals(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    content = csv_file(row("R1", "Jansen", "12A"), row("R2", "Bakker", "3", telefoon=""))
    with live_server.client(key) as client:
        response = upload(client, content)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "accepted"
    assert body["period"] == "2026-11"
    assert body["rows"] == 2
    assert response.headers["location"] == f"/api/v1/deliveries/{body['id']}"
    assert {"row": 3, "column": "telefoon", "message": "no phone number and no e-mail address"} in (
        body["warnings"]
    )
    with live_server.ctx.sessions() as session:
        signals = session.scalars(sa.select(Signal).order_by(Signal.row_number)).all()
        assert [s.bedrag_cent for s in signals] == [25000, 25000]
        assert all(b"Jansen" not in (s.pii or b"") for s in signals)
        first = signals[0]
        assert first.pii is not None
        assert first.pii_key_id is not None
        data = live_server.ctx.cipher.decrypt_json(
            first.pii, signal_aad(body["id"], first.row_number), first.pii_key_id
        )
    assert data["achternaam"] == "Jansen"
    assert data["postcode"] == "2011AB"
    assert data["huisnummer_suffix"] == "A"
    assert first.address_hash == live_server.ctx.hasher.hash("address", "2011AB|12|A")
    assert first.pc4 == "2011"


def test_same_file_again_is_idempotent(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    content = csv_file(row("R1"), row("R2", nummer="14"))
    with live_server.client(key) as client:
        first = upload(client, content)
        again = upload(client, content)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert counts(live_server) == (1, 2)


def test_concurrent_identical_uploads_store_once(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    content = csv_file(*(row(f"R{i}", nummer=str(i + 1)) for i in range(50)))

    def send() -> tuple[int, str]:
        with live_server.client(key) as client:
            response = upload(client, content)
            return response.status_code, response.json()["id"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: send(), range(4)))
    assert sorted(status for status, _ in results) == [200, 200, 200, 201]
    assert len({delivery_id for _, delivery_id in results}) == 1
    assert counts(live_server) == (1, 50)


def test_new_file_replaces_the_current_delivery(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    with live_server.client(key) as client:
        first = upload(client, csv_file(row("R1"), row("R2", nummer="14"))).json()
        second_response = upload(client, csv_file(row("R1", bedrag="300")))
        second = second_response.json()
        old = client.get(f"/api/v1/deliveries/{first['id']}").json()
        listing = client.get("/api/v1/deliveries").json()
    assert second_response.status_code == 201
    assert second["replaces"] == first["id"]
    assert old["status"] == "superseded"
    assert old["superseded_by"] == second["id"]
    assert [d["status"] for d in listing["items"]] == ["accepted", "superseded"]
    with live_server.ctx.sessions() as session:
        current = session.scalars(
            sa.select(Signal.bedrag_cent)
            .join(Delivery, Delivery.id == Signal.delivery_id)
            .where(Delivery.status == "accepted")
        ).all()
    assert current == [30000]


def test_invalid_rows_store_nothing_and_report_every_problem(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    content = csv_file(
        row("R1"),
        row("R2", postcode="0123AB", bedrag="1.234"),
        row("R3", sinds="01-01-2027", geboren="31-02-1980"),
        row("R1", nummer="abc"),
    )
    with live_server.client(key) as client:
        response = upload(client, content)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"].endswith("/validation-failed")
    assert problem["error_count"] == 6
    assert {(e["row"], e["column"]) for e in problem["errors"]} == {
        (3, "postcode"),
        (3, "bedrag"),
        (4, "achterstand_sinds"),
        (4, "geboortedatum"),
        (5, "referentie"),
        (5, "huisnummer"),
    }
    assert "0123AB" not in response.text
    assert "1.234" not in response.text
    assert counts(live_server) == (0, 0)


def test_error_list_is_capped_with_the_total(live_server: LiveServer) -> None:
    live_server.ctx.settings.max_reported_errors = 10
    key = register(live_server.ctx)
    content = csv_file(*(row(f"R{i}", postcode="0000XX") for i in range(25)))
    with live_server.client(key) as client:
        problem = upload(client, content).json()
    assert len(problem["errors"]) == 10
    assert problem["error_count"] == 25


def test_json_uploads_wrapped_and_bare(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    item = {
        "referentie": "J1",
        "achternaam": "de Vries",
        "huisnummer": 7,
        "postcode": "2012 cd",
        "bedrag": 99.5,
        "achterstand_sinds": "2026-09-01",
        "email": "a@example.nl",
        "crisis": True,
    }
    with live_server.client(key) as client:
        wrapped = upload(client, json_file([item]), "a.json")
        bare = upload(client, json_file([item, {**item, "referentie": "J2"}], False), "b.json")
    assert wrapped.status_code == 201, wrapped.text
    assert wrapped.json()["format"] == "json"
    assert bare.status_code == 201
    assert bare.json()["rows"] == 2
    with live_server.ctx.sessions() as session:
        crisis = session.scalars(sa.select(Signal.crisis).where(Signal.row_number == 1)).all()
    assert crisis == [True, True]


def test_window_closes_at_midnight_amsterdam_on_the_25th(live_server: LiveServer, clock) -> None:
    key = register(live_server.ctx)
    clock.set_local(2026, 11, 24, 23, 59)
    with live_server.client(key) as client:
        assert upload(client, csv_file(row("R1"))).status_code == 201
        clock.set_local(2026, 11, 25, 0, 0)
        late = upload(client, csv_file(row("R1"), row("R2", nummer="3")), period="2026-11")
        default = upload(client, csv_file(row("R9")))
    assert late.status_code == 409
    assert late.headers["content-type"] == PROBLEM
    assert late.json()["period"] == "2026-11"
    assert late.json()["open_period"] == "2026-12"
    assert default.status_code == 201
    assert default.json()["period"] == "2026-12"
    assert counts(live_server)[0] == 2


def test_a_retry_after_the_deadline_finds_the_delivery_stored_before_it(
    live_server: LiveServer, clock
) -> None:
    """The answer to an upload just before midnight on the 24th was lost; the client sends the
    same file again just after. It is the same delivery, not a new one for December, and not a
    409 when the period is named."""
    key = register(live_server.ctx)
    content = csv_file(row("R1"), row("R2", nummer="14"))
    clock.set_local(2026, 11, 24, 23, 59)
    with live_server.client(key) as client:
        first = upload(client, content)
        clock.set_local(2026, 11, 25, 0, 1)
        again = upload(client, content)
        named = upload(client, content, period="2026-11")
        other = upload(client, csv_file(row("R3")), period="2026-11")
        clock.set_local(2026, 11, 26, 0, 1)  # a day later the same file is a December delivery
        next_day = upload(client, content)
    assert first.status_code == 201
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert (named.status_code, named.json()["id"]) == (200, first.json()["id"])
    assert other.status_code == 409  # a different file: the window is closed
    assert next_day.status_code == 201
    assert next_day.json()["period"] == "2026-12"
    assert counts(live_server) == (2, 4)


def test_future_period_is_not_open(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    with live_server.client(key) as client:
        response = upload(client, csv_file(row("R1")), period="2027-01")
    assert response.status_code == 409
    assert "not open yet" in response.json()["detail"]


def test_too_large_is_refused_before_storing(live_server: LiveServer) -> None:
    live_server.ctx.settings.max_upload_bytes = 2048
    key = register(live_server.ctx)
    content = csv_file(*(row(f"R{i}", nummer=str(i + 1)) for i in range(200)))
    with live_server.client(key) as client:
        response = upload(client, content)
        # Streamed without a Content-Length: the limit holds while the body arrives.
        chunked = client.post(
            "/api/v1/deliveries",
            content=iter([PART_HEADER] + [b"x" * 100_000] * 5),
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert chunked.status_code == 413
    assert counts(live_server) == (0, 0)


def test_not_csv_or_json_is_415(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", csv_file(row("R1")))
    with live_server.client(key) as client:
        response = upload(client, buffer.getvalue(), "arrears.csv")
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_empty_file_is_422(live_server: LiveServer, content: bytes) -> None:
    key = register(live_server.ctx)
    with live_server.client(key) as client:
        response = upload(client, content)
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"] == "empty file"


def test_windows_1252_file_with_semicolons_and_bom_variants(live_server: LiveServer) -> None:
    key = register(live_server.ctx)
    content = csv_file(row("R1", "Brouwer-Ménard")).decode().encode("cp1252")
    with live_server.client(key) as client:
        response = upload(client, content)
    assert response.status_code == 201


def test_missing_wrong_and_revoked_keys_are_401(live_server: LiveServer) -> None:
    from services.ingest.partners import revoke_key
    from shared.crypto import split_api_key
    from shared.db import unit_of_work

    key = register(live_server.ctx)
    with live_server.client() as anonymous:
        missing = anonymous.get("/api/v1/deliveries")
    with live_server.client(key[:-4] + "AAAA") as wrong:
        bad = wrong.get("/api/v1/deliveries")
    parts = split_api_key(key)
    assert parts is not None
    with unit_of_work(live_server.ctx.sessions) as session:
        revoke_key(session, parts[1], now=live_server.ctx.now())
    with live_server.client(key) as revoked:
        gone = revoked.post("/api/v1/deliveries", files={"file": ("a.csv", csv_file(row()))})
    for response in (missing, bad, gone):
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
    assert counts(live_server) == (0, 0)


def test_a_partner_never_sees_another_partners_delivery(live_server: LiveServer) -> None:
    key_a = register(live_server.ctx, "Partner A", "huur")
    key_b = register(live_server.ctx, "Partner B", "energie")
    with live_server.client(key_a) as a, live_server.client(key_b) as b:
        delivery = upload(a, csv_file(row("R1"))).json()
        assert b.get(f"/api/v1/deliveries/{delivery['id']}").status_code == 404
        assert b.get("/api/v1/deliveries").json()["items"] == []
        assert a.get(f"/api/v1/deliveries/{delivery['id']}").status_code == 200


def test_last_used_is_recorded(live_server: LiveServer) -> None:
    from shared.models import ApiKey

    key = register(live_server.ctx)
    with live_server.client(key) as client:
        client.get("/api/v1/deliveries")
    with live_server.ctx.sessions() as session:
        used = session.scalars(sa.select(ApiKey.last_used_at)).one()
    assert used == live_server.ctx.now()


def test_unknown_route_and_docs(live_server: LiveServer) -> None:
    with live_server.client() as client:
        missing = client.get("/api/v1/nothing")
        docs = client.get("/docs")
        health = client.get("/healthz")
        spec = client.get("/openapi.json")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    assert docs.status_code == 200
    assert health.json() == {"status": "ok"}
    assert "/api/v1/deliveries" in spec.json()["paths"]
