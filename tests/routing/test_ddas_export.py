"""The DDAS v1.2 export on a real database: data uploaded, matched and worked on, then exported.

Deliveries go through the ingest service and cases come from a real matching run; contact attempts
and the closing of a case are written as rows, the way the routing API will record them.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from jsonschema import Draft202012Validator

from services.ingest.service import ingest_with_retry
from services.matcher.service import run_period
from services.routing.ddas import build_export, ddas_datetime, euros, load_schema, write_export
from shared.context import Context
from shared.models import (
    Case,
    CaseStatus,
    ContactAttempt,
    Contactsoort,
    Dagdeel,
    Delivery,
    DeliveryStatus,
    Eindresultaat,
    Partner,
    PartnerKind,
    Signaalstatus,
    Signal,
    SignalState,
)
from tests.conftest import Clock
from tests.helpers import register, signal_ids_by_reference

HEADER = (
    "referentie;achternaam;voorletters;geboortedatum;bsn;huisnummer;huisletter;postcode;"
    "telefoon;bedrag;achterstand_sinds;signaaldatum;crisis;warme_overdracht"
)
NOTE = "Mevrouw wil graag gebeld worden na 17 uur"
START, END = date(2026, 10, 1), date(2026, 11, 30)


def line(
    ref: str,
    nummer: str,
    *,
    bsn: str = "",
    huisletter: str = "",
    geboren: str = "",
    bedrag: str = "250,00",
    signaal: str = "",
    crisis: str = "nee",
    warm: str = "nee",
) -> str:
    return (
        f"{ref};Jansen;J.;{geboren};{bsn};{nummer};{huisletter};2011 ab;0612345678;{bedrag};"
        f"01-09-2026;{signaal};{crisis};{warm}"
    )


def deliver(ctx: Context, partner: str, *lines: str) -> None:
    with ctx.sessions() as session:
        partner_id = session.scalars(sa.select(Partner.id).where(Partner.name == partner)).one()
    content = ("\n".join([HEADER, *lines]) + "\n").encode()
    ingest_with_retry(ctx, partner_id=partner_id, content=content, filename="levering.csv")


@dataclass
class Dataset:
    ids: dict[str, int]  # signal id by partner reference
    purged: int
    superseded: list[int]


@pytest.fixture
def dataset(ctx: Context, clock: Clock) -> Dataset:
    """Four partners' November deliveries, one replaced; a run; one case worked and closed."""
    register(ctx, "Huur BV", "huur")
    register(ctx, "Energie NV", "energie")
    register(ctx, "Zorg UA", "zorg")
    register(ctx, "Water NV", "water")

    clock.set_local(2026, 11, 10, 9, 0)
    deliver(
        ctx,
        "Zorg UA",
        line("Z1", "1", bsn="111222333", bedrag="99,50", signaal="05-11-2026"),
        # Stale at the run (older than 45 days), so not taken up: "andere reden".
        line("Z2", "7", huisletter="b", geboren="1980-05-01", bedrag="99,49", signaal="05-10-2026"),
        line("Z3", "3", signaal="20-09-2026"),  # before the export period
        line("Z4", "4", signaal="06-11-2026"),  # purged below
    )
    deliver(ctx, "Energie NV", line("E1", "1", bedrag="1.234,56", signaal="03-11-2026", warm="ja"))
    deliver(ctx, "Huur BV", line("H5", "5", bsn="123456782", crisis="ja"))
    deliver(ctx, "Water NV", line("W1", "9", signaal="02-11-2026"))
    deliver(ctx, "Water NV", line("W2", "11", signaal="02-11-2026"))  # replaces W1's delivery

    clock.set_local(2026, 11, 26, 2, 0)
    run_period(ctx)

    ids = signal_ids_by_reference(ctx)
    with ctx.sessions() as session, session.begin():
        superseded = session.scalars(
            sa.select(Signal.id)
            .join(Delivery, Delivery.id == Signal.delivery_id)
            .where(Delivery.status == DeliveryStatus.superseded)
        ).all()
        purged = session.get(Signal, ids["Z4"])
        assert purged is not None
        purged.pii, purged.pii_key_id, purged.purged_at = None, None, ctx.now()

        matched = session.scalars(sa.select(Case).where(~Case.has_rent)).one()
        rent = session.scalars(sa.select(Case).where(Case.has_rent)).one()
        note = ctx.cipher.encrypt(NOTE.encode(), b"note")
        for soort, day, dagdeel, bereikt in [
            (Contactsoort.huisbezoek, 30, Dagdeel.avond, True),
            (Contactsoort.telefoon, 27, Dagdeel.ochtend, False),
            (Contactsoort.brief, 28, None, False),
        ]:
            session.add(
                ContactAttempt(
                    case_id=matched.id,
                    soort=soort,
                    datum=date(2026, 11, day),
                    dagdeel=dagdeel,
                    bereikt=bereikt,
                    notitie=note,
                    notitie_key_id=ctx.cipher.active_key_id,
                )
            )
        session.add(
            ContactAttempt(
                case_id=rent.id,
                soort=Contactsoort.sms_whatsapp,
                datum=date(2026, 11, 29),
                dagdeel=Dagdeel.middag,
                bereikt=True,
            )
        )
        matched.status = CaseStatus.closed
        matched.resultaat = Eindresultaat.vervolghulp_financieel
        matched.closed_at = ctx.now()
        for ref in ("Z1", "E1"):
            session.merge(SignalState(signal_id=ids[ref], status=Signaalstatus.opgepakt))
    return Dataset(ids, ids["Z4"], list(superseded))


def export(ctx: Context, start: date = START, end: date = END) -> dict[str, Any]:
    with ctx.sessions() as session:
        return build_export(
            session, ctx.cipher, start=start, end=end, gemeentecode="0392", now=ctx.now()
        )


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(
        load_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["ID"]: s for s in document["leveringen"][0]["vroegsignalen"]}


def test_vendored_schema_is_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/v1.2/json_schema_Uitwisselmodel.json")
    Draft202012Validator.check_schema(schema)


def test_export_validates_and_maps_every_field(ctx: Context, dataset: Dataset) -> None:
    document = export(ctx)
    assert schema_errors(document) == []
    assert document["startdatumLevering"] == "2026-10-01"
    assert document["einddatumLevering"] == "2026-11-30"
    # 02:00 in Amsterdam on 26 November is 01:00 UTC; jsonschema cannot check date-time itself.
    assert document["aanleverdatumEnTijd"] == "2026-11-26T01:00:00Z"
    assert document["codeGegevensleverancier"] == "vroegsignaal"
    (levering,) = document["leveringen"]
    assert levering["teller"] == 1
    assert levering["gemeentecode"] == "0392"

    signals = by_id(document)
    ids = {ref: str(i) for ref, i in dataset.ids.items()}
    assert set(signals) == {ids[r] for r in ("Z1", "Z2", "E1", "H5", "W2")}
    assert ids["Z3"] not in signals  # dated before the period
    assert str(dataset.purged) not in signals
    assert not {str(i) for i in dataset.superseded} & set(signals)
    assert dataset.superseded == [dataset.ids["W1"]]

    partner = {ref: signals[ids[ref]]["signaalpartner"]["type"] for ref in ("Z1", "E1", "H5", "W2")}
    assert partner == {"Z1": "Zorg", "E1": "Energie", "H5": "Huur", "W2": "Water"}
    assert {PartnerKind(k).ddas for k in PartnerKind} == set(partner.values())

    status = {ref: signals[ids[ref]]["status"] for ref in ("Z1", "Z2", "E1", "H5", "W2")}
    assert status == {
        "Z1": "Opgepakt",
        "E1": "Opgepakt",
        "Z2": "Niet opgepakt: andere reden",
        "H5": "Nog niet opgepakt",
        "W2": "Nog niet opgepakt",
    }

    # With a BSN the schema allows nothing else; without one the address (and birth date).
    assert signals[ids["Z1"]]["client"] == {"burgerservicenummer": "111222333"}
    assert signals[ids["H5"]]["client"] == {"burgerservicenummer": "123456782"}
    assert signals[ids["Z2"]]["client"] == {
        "postcode": "2011AB",
        "huisnummer": "7",
        "huisnummertoevoeging": "B",
        "geboortedatum": "1980-05-01",
    }
    assert signals[ids["E1"]]["client"] == {"postcode": "2011AB", "huisnummer": "1"}

    z1, z2, e1, h5 = (signals[ids[r]] for r in ("Z1", "Z2", "E1", "H5"))
    assert (z1["bedrag"], z2["bedrag"], e1["bedrag"], h5["bedrag"]) == (100, 99, 1235, 250)
    assert z1["ontstaansdatum"] == "2026-09-01"
    assert z1["signaaldatum"] == "2026-11-05"
    assert h5["signaaldatum"] == "2026-11-10"  # none given: the upload day
    assert (h5["crisissignaal"], z1["crisissignaal"]) == (True, False)
    assert (e1["warmeOverdracht"], z1["warmeOverdracht"]) == (True, False)

    cases = levering["vroegsignaalzaken"]
    assert len(cases) == 2
    closed = next(c for c in cases if len(c["vroegsignalen"]) == 2)
    rent = next(c for c in cases if len(c["vroegsignalen"]) == 1)
    assert sorted(r["ID"] for r in closed["vroegsignalen"]) == sorted([ids["Z1"], ids["E1"]])
    assert closed["resultaat"] == "Vervolghulp en/of verwijzing financieel"
    assert closed["matchingsdatum"] == "2026-11-26"
    assert closed["startdatumMatchingperiode"] == "2026-11-01"
    assert closed["einddatumMatchingperiode"] == "2026-11-30"
    assert closed["datumOpgepakt"] == "2026-11-27"  # the first contact attempt
    assert closed["contactpogingen"] == [
        {"soort": "Telefoon", "bereikt": False, "datum": "2026-11-27", "dagdeel": "Ochtend"},
        {"soort": "Brief", "bereikt": False, "datum": "2026-11-28"},
        {"soort": "Huisbezoek", "bereikt": True, "datum": "2026-11-30", "dagdeel": "Avond"},
    ]
    assert rent["vroegsignalen"] == [{"ID": ids["H5"]}]
    assert "resultaat" not in rent  # still open
    assert rent["contactpogingen"] == [
        {"soort": "SMS/Whatsapp", "bereikt": True, "datum": "2026-11-29", "dagdeel": "Middag"}
    ]

    # Every case reference resolves; names, phone numbers and notes never leave.
    references = {r["ID"] for c in cases for r in c["vroegsignalen"]}
    assert references <= set(signals)
    text = json.dumps(document, ensure_ascii=False)
    for secret in ("Jansen", "0612345678", "notitie", NOTE):
        assert secret not in text


def test_case_lists_only_the_signals_in_the_period(ctx: Context, dataset: Dataset) -> None:
    document = export(ctx, date(2026, 11, 5), date(2026, 11, 5))
    assert schema_errors(document) == []
    (levering,) = document["leveringen"]
    assert list(by_id(document)) == [str(dataset.ids["Z1"])]
    (case,) = levering["vroegsignaalzaken"]  # the rent case has no signal in the period
    assert case["vroegsignalen"] == [{"ID": str(dataset.ids["Z1"])}]
    assert case["resultaat"] == "Vervolghulp en/of verwijzing financieel"


def test_empty_period_is_a_valid_document(ctx: Context) -> None:
    with ctx.sessions() as session:
        document = build_export(
            session,
            ctx.cipher,
            start=START,
            end=END,
            gemeentecode="1900",
            now=ctx.now(),
            supplier_code="LEVERANCIER-1",
            organisatie="Gemeente Súdwest-Fryslân",
        )
    assert schema_errors(document) == []
    levering = document["leveringen"][0]
    assert levering["aanleverendeOrganisatie"] == {"naam": "Gemeente Súdwest-Fryslân"}
    assert levering["vroegsignalen"] == levering["vroegsignaalzaken"] == []
    assert document["codeGegevensleverancier"] == "LEVERANCIER-1"


def test_arguments_are_checked(ctx: Context) -> None:
    now = ctx.now()
    with ctx.sessions() as session:
        with pytest.raises(ValueError, match="before it starts"):
            build_export(session, ctx.cipher, start=END, end=START, gemeentecode="0392", now=now)
        with pytest.raises(ValueError, match="timezone-aware"):
            build_export(
                session,
                ctx.cipher,
                start=START,
                end=END,
                gemeentecode="0392",
                now=now.replace(tzinfo=None),
            )
        with pytest.raises(ValueError, match="four-digit"):
            build_export(session, ctx.cipher, start=START, end=END, gemeentecode="392", now=now)


def test_write_export_is_atomic_private_json(
    ctx: Context, dataset: Dataset, tmp_path: Path
) -> None:
    document = export(ctx)
    document["leveringen"][0]["aanleverendeOrganisatie"] = {"naam": "Gemeente Súdwest-Fryslân"}
    folder = tmp_path / "export"
    folder.mkdir()
    out = folder / "ddas.json"
    out.write_text("old", encoding="utf-8")
    out.chmod(0o644)
    write_export(document, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    raw = out.read_bytes()
    assert "Súdwest-Fryslân".encode() in raw  # UTF-8, not \u escapes
    assert json.loads(raw.decode("utf-8")) == document
    assert raw.startswith(b'{\n  "startdatumLevering"')
    assert os.listdir(folder) == ["ddas.json"]  # no temporary file left behind


def test_write_export_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "ddas.json"
    out.write_text("old", encoding="utf-8")
    with pytest.raises(TypeError):
        write_export({"not serialisable": object()}, out)
    assert out.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["ddas.json"]


def test_amounts_and_moments() -> None:
    assert [euros(c) for c in (1, 49, 50, 149, 150, 99_49, 99_50, 123_456)] == [
        0,
        0,
        1,
        1,
        2,
        99,
        100,
        1235,
    ]
    moment = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=UTC)
    assert ddas_datetime(moment) == "2026-03-29T03:30:15Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ddas_datetime(moment))
