"""Small builders shared by tests."""

from __future__ import annotations

import json
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
