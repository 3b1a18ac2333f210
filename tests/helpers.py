"""Small builders shared by tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from services.ingest.partners import add_partner
from shared.context import Context
from shared.crypto import signal_aad
from shared.db import unit_of_work
from shared.models import Run, Signal

HEADER = (
    "referentie;achternaam;tussenvoegsel;voorletters;geboortedatum;straat;huisnummer;postcode;"
    "woonplaats;telefoon;email;bedrag;achterstand_sinds;crisis"
)


def csv_file(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode("utf-8")


def row(
    ref: str = "R1",
    naam: str = "Jansen",
    nummer: str = "12",
    postcode: str = "2011AB",
    bedrag: str = "250,00",
    sinds: str = "01-09-2026",
    telefoon: str = "0612345678",
    geboren: str = "1980-05-01",
    crisis: str = "nee",
) -> str:
    return (
        f"{ref};{naam};;J.;{geboren};Kerkstraat;{nummer};{postcode};Haarlem;{telefoon};;"
        f"{bedrag};{sinds};{crisis}"
    )


def register(ctx: Context, name: str = "Woonstichting Test", kind: str = "huur") -> str:
    """Register a partner and return its API key."""
    with unit_of_work(ctx.sessions) as session:
        return add_partner(session, name=name, kind=kind, now=ctx.now()).secret


def finished_run(ctx: Context, period: str, run_date: date) -> uuid.UUID:
    """A finished, empty run of ``period`` for cases to refer to; its id."""
    now = ctx.now()
    with unit_of_work(ctx.sessions) as session:
        run = Run(
            period=period,
            run_date=run_date,
            parameters="{}",
            figures="{}",
            started_at=now,
            finished_at=now,
            duration_ms=1,
        )
        session.add(run)
        session.flush()
        return run.id


def json_file(rows: list[dict[str, Any]], wrapped: bool = True) -> bytes:
    return json.dumps({"signalen": rows} if wrapped else rows).encode()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free at the moment of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(ctx: Context, database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment for a ``vroegsignaal`` subprocess using the test context's settings."""
    settings = ctx.settings
    assert settings.encryption_keys is not None
    assert settings.address_hash_key is not None
    return {
        **os.environ,
        "VS_ENVIRONMENT": "test",
        "VS_DATABASE_URL": database_url,
        "VS_DATA_DIR": str(tmp_path / "data"),
        "VS_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "VS_ADDRESS_HASH_KEY": settings.address_hash_key.get_secret_value(),
    }


@contextmanager
def serving(
    env: dict[str, str], *options: str, startup_s: float = 30
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``vroegsignaal serve`` in a process of its own on a free loopback port, once its
    ``/healthz`` answers: (the process, its base URL). Stopped afterwards if it still runs."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from services.cli import main; main()",
            "serve",
            "--port",
            str(port),
            *options,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            assert server.poll() is None, "the server exited"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield server, base
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def signal_ids_by_reference(ctx: Context) -> dict[str, int]:
    """Every signal's id by its partner reference (read from the envelopes; purged ones absent)."""
    with ctx.sessions() as session:
        rows = session.execute(
            sa.select(
                Signal.id, Signal.delivery_id, Signal.row_number, Signal.pii, Signal.pii_key_id
            )
        ).all()
    ids = {}
    for row in rows:
        if row.pii is not None and row.pii_key_id is not None:
            aad = signal_aad(str(row.delivery_id), row.row_number)
            ids[ctx.cipher.decrypt_json(row.pii, aad, row.pii_key_id)["referentie"]] = row.id
    return ids


def row_versions(ctx: Context, table: str, key: str) -> dict[Any, str] | None:
    """Each row's version on PostgreSQL (``xmin``: a write makes a new one), by ``key``; None on
    SQLite, which keeps none. A test compares them before and after to show rows not written."""
    if ctx.engine.dialect.name != "postgresql":
        return None
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {key}, xmin::text FROM {table}")).all()
    return {row_key: version for row_key, version in rows}
