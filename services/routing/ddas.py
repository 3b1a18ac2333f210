"""Export to the national exchange format: DDAS Vroegsignalering v1.2 ("Uitwisselmodel").

One document holds one *levering* for one municipality (``gemeentecode``) over a reporting period
``[start, end]``:

* **vroegsignalen**: the signals of current deliveries (``deliveries.status = 'accepted'``) whose
  ``signaaldatum`` lies in the period. Superseded deliveries and purged signals (``pii`` is null)
  are left out. ``ID`` is the signal's integer id; ``signaalpartner.type`` is
  ``PartnerKind(kind).ddas``; ``status`` is stored as a DDAS ``EnumSignaalstatus`` value already;
  ``bedrag`` is whole euros (cents rounded half up, the schema's ``bedrag`` is an integer);
  ``ontstaansdatum`` is ``achterstand_sinds``; ``crisissignaal`` and ``warmeOverdracht`` are the
  partner's flags.
* **client**, from the decrypted envelope, in one of the schema's two shapes (``oneOf``): the BSN
  alone when the partner gave one (that branch allows no other field), else ``postcode`` +
  ``huisnummer`` (+ ``huisnummertoevoeging``: house letter and addition, as normalised at ingest)
  + ``geboortedatum`` when known. Names, street, phone and e-mail are never exported.
* **vroegsignaalzaken**: the cases built from those signals (``case_signals``). The schema gives a
  case no identifier: it is tied to its signals by ``vroegsignalen[].ID``, which lists only the
  signals exported in this document, so every reference resolves. ``matchingsdatum`` is the run
  date of the case's (latest) run; the matching period is the case's delivery month;
  ``datumOpgepakt`` is the date of the first contact attempt (the schema has no other moment the
  municipality demonstrably took the case up); ``resultaat`` only for a closed case. The schema has
  no field for the closing date, so ``closed_at`` is not exported.
* **contactpogingen**: ``soort``, ``datum``, ``dagdeel`` (when recorded) and ``bereikt`` of each
  attempt; the free-text note is never exported.

Everything is read in three queries (signals, case links, contact attempts); the case and attempt
queries select by a subquery on the same signal filter, so no long lists of ids are sent. The
vendored schema (``ddas_schema.json``, byte-for-byte the published v1.2 file) is what the tests
validate against; validation itself stays out of the runtime (``jsonschema`` is a dev dependency).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session

from shared.crypto import DecryptionError, PiiCipher, signal_aad
from shared.files import private_file
from shared.models import (
    Case,
    CaseSignal,
    CaseStatus,
    ContactAttempt,
    Contactsoort,
    Dagdeel,
    Delivery,
    DeliveryStatus,
    Eindresultaat,
    PartnerKind,
    Run,
    Signaalstatus,
    Signal,
    SignalState,
    signal_in_delivery,
    signal_status,
)
from shared.periods import Period

DDAS_VERSION = "1.2"
SCHEMA_FILE = "ddas_schema.json"
GEMEENTECODE_RE = re.compile(r"^[0-9]{4}$")


def load_schema() -> dict[str, Any]:
    """The vendored DDAS v1.2 JSON schema (draft 2020-12)."""
    text = resources.files("services.routing").joinpath(SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def build_export(
    session: Session,
    cipher: PiiCipher,
    *,
    start: date,
    end: date,
    gemeentecode: str,
    now: datetime,
    supplier_code: str = "vroegsignaal",
    organisatie: str | None = None,
) -> dict[str, Any]:
    """The DDAS document for the signals dated in ``[start, end]`` and their cases.

    ``organisatie`` is the name written as ``aanleverendeOrganisatie.naam`` (the object is
    required, its fields are not). Raises ``ValueError`` for an empty period, a naive ``now`` or
    a ``gemeentecode`` that is not the CBS four-digit code, and ``DecryptionError`` when an
    envelope does not open.
    """
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not GEMEENTECODE_RE.match(gemeentecode):
        raise ValueError("gemeentecode must be the four-digit CBS code, e.g. 0392")

    exported = _exported_signal_ids(start, end)
    signals = _vroegsignalen(session, cipher, exported)
    cases = _vroegsignaalzaken(session, exported)
    organisation: dict[str, Any] = {"naam": organisatie} if organisatie else {}
    return {
        "startdatumLevering": start.isoformat(),
        "einddatumLevering": end.isoformat(),
        "aanleverdatumEnTijd": ddas_datetime(now),
        "codeGegevensleverancier": supplier_code,
        "leveringen": [
            {
                "teller": 1,
                "gemeentecode": gemeentecode,
                "aanleverendeOrganisatie": organisation,
                "vroegsignalen": signals,
                "vroegsignaalzaken": cases,
            }
        ],
    }


def write_export(document: dict[str, Any], out: Path) -> None:
    """Write the document atomically as UTF-8 JSON, readable by its owner only (mode 0600):
    :func:`shared.files.private_file`."""
    with private_file(out) as handle:
        handle.write((json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def ddas_datetime(moment: datetime) -> str:
    """The schema's ``datum-tijd``: ``YYYY-MM-DDTHH:MM:SSZ`` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def euros(cents: int) -> int:
    """Whole euros, rounded half up (``bedrag`` is an integer; amounts are positive)."""
    return (cents + 50) // 100


def _exported_signal_ids(start: date, end: date) -> Select[int]:
    """Ids of the signals in the export: current deliveries, dated in the period, not purged."""
    return (
        select(Signal.id)
        .join(Delivery, signal_in_delivery())
        .where(
            Delivery.status == DeliveryStatus.accepted,
            Signal.signaaldatum >= start,
            Signal.signaaldatum <= end,
            Signal.pii.is_not(None),
        )
    )


def _vroegsignalen(
    session: Session, cipher: PiiCipher, exported: Select[int]
) -> list[dict[str, Any]]:
    rows = session.execute(
        select(
            Signal.id,
            Signal.delivery_id,
            Signal.row_number,
            Signal.kind,
            Signal.bedrag_cent,
            Signal.achterstand_sinds,
            Signal.signaaldatum,
            Signal.crisis,
            Signal.warme_overdracht,
            signal_status().label("status"),
            Signal.pii,
            Signal.pii_key_id,
        )
        .outerjoin(SignalState, SignalState.signal_id == Signal.id)
        .where(Signal.id.in_(exported))
        .order_by(Signal.id)
    ).all()
    signals = []
    for row in rows:
        assert row.pii is not None  # the filter leaves purged signals out
        if row.pii_key_id is None:
            raise DecryptionError(f"signal {row.id} has an envelope but no key id")
        pii = cipher.decrypt_json(
            row.pii, signal_aad(str(row.delivery_id), row.row_number), row.pii_key_id
        )
        signals.append(
            {
                "ID": str(row.id),
                "crisissignaal": row.crisis,
                "warmeOverdracht": row.warme_overdracht,
                "bedrag": euros(row.bedrag_cent),
                "ontstaansdatum": row.achterstand_sinds.isoformat(),
                "signaaldatum": row.signaaldatum.isoformat(),
                "status": Signaalstatus(row.status).value,
                "signaalpartner": {"type": PartnerKind(row.kind).ddas},
                "client": _client(pii),
            }
        )
    return signals


def _client(pii: dict[str, Any]) -> dict[str, str]:
    """The schema's ``client``: BSN alone, or the address (and birth date) without one."""
    bsn = (pii.get("bsn") or "").strip()
    if bsn:
        return {"burgerservicenummer": bsn}
    client = {"postcode": str(pii["postcode"]), "huisnummer": str(pii["huisnummer"])}
    if suffix := (pii.get("huisnummer_suffix") or "").strip():
        client["huisnummertoevoeging"] = suffix
    if born := pii.get("geboortedatum"):
        client["geboortedatum"] = date.fromisoformat(str(born)).isoformat()
    return client


def _vroegsignaalzaken(session: Session, exported: Select[int]) -> list[dict[str, Any]]:
    links = session.execute(
        select(
            CaseSignal.case_id,
            CaseSignal.signal_id,
            Case.period,
            Case.status,
            Case.resultaat,
            Run.run_date,
        )
        .join(Case, Case.id == CaseSignal.case_id)
        .join(Run, Run.id == Case.run_id)
        .where(CaseSignal.signal_id.in_(exported))
        .order_by(Case.period, CaseSignal.signal_id)
    ).all()
    attempts = _contactpogingen(session, exported)

    cases: dict[uuid.UUID, dict[str, Any]] = {}
    for link in links:
        if link.case_id not in cases:
            cases[link.case_id] = _case(link, attempts.get(link.case_id, []))
        cases[link.case_id]["vroegsignalen"].append({"ID": str(link.signal_id)})
    return list(cases.values())


def _case(
    link: Row[uuid.UUID, int, str, str, str | None, date], contacts: list[dict[str, Any]]
) -> dict[str, Any]:
    """One vroegsignaalzaak without its signal references (in the schema's field order)."""
    period = Period.parse(link.period)
    case: dict[str, Any] = {}
    if link.status == CaseStatus.closed and link.resultaat:
        case["resultaat"] = Eindresultaat(link.resultaat).value
    case["matchingsdatum"] = link.run_date.isoformat()
    case["startdatumMatchingperiode"] = period.first_day.isoformat()
    if contacts:
        case["datumOpgepakt"] = contacts[0]["datum"]
    case["einddatumMatchingperiode"] = period.last_day.isoformat()
    case["vroegsignalen"] = []
    case["contactpogingen"] = contacts
    return case


def _contactpogingen(
    session: Session, exported: Select[int]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Each exported case's attempts, oldest first; the note is not read."""
    exported_cases = select(CaseSignal.case_id).where(CaseSignal.signal_id.in_(exported))
    rows = session.execute(
        select(
            ContactAttempt.case_id,
            ContactAttempt.soort,
            ContactAttempt.datum,
            ContactAttempt.dagdeel,
            ContactAttempt.bereikt,
        )
        .where(ContactAttempt.case_id.in_(exported_cases))
        .order_by(
            ContactAttempt.case_id,
            ContactAttempt.datum,
            ContactAttempt.created_at,
            ContactAttempt.id,
        )
    ).all()
    attempts: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row in rows:
        attempt: dict[str, Any] = {
            "soort": Contactsoort(row.soort).value,
            "bereikt": row.bereikt,
            "datum": row.datum.isoformat(),
        }
        if row.dagdeel:
            attempt["dagdeel"] = Dagdeel(row.dagdeel).value
        attempts.setdefault(row.case_id, []).append(attempt)
    return attempts
