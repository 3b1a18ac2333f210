"""Small builders shared by tests."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from services.ingest.partners import add_partner
from shared.context import Context
from shared.db import unit_of_work

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
