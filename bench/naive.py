"""Baseline: the naive pipeline a typical team writes, on a slice of the same file.

Row by row, as such code usually looks: ``csv.DictReader``; one pydantic v2 model per row with
validators for the postcode, the amount, the dates, the booleans and the BSN; the address and
person keys built in Python and hashed with the project's :class:`~shared.crypto.KeyedHasher`;
the personal data encrypted per row with the project's :class:`~shared.crypto.PiiCipher`; one
SQLAlchemy ORM object (:class:`shared.models.Signal`) per row, ``session.add`` and one commit at
the end (all or nothing, like the real pipeline). It writes into the same ``signals`` table.

Measured on ``naive_rows`` rows (100,000 in the full scale); the time for the full file is that,
scaled linearly (it is linear: nothing in it depends on the file size but the row count).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
import unicodedata
import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.common import (
    INGEST_CLOCK,
    INGEST_PERIOD,
    NAIVE_PARTNER,
    FixedClock,
    child_parser,
    manifest,
    measurement,
    peak_rss_bytes,
    read_json,
    say,
    write_results,
)
from services.ingest.repository import assign_signal_block
from shared.context import build_context
from shared.crypto import signal_aad
from shared.models import Delivery, DeliveryStatus, Signal
from shared.settings import Settings

POSTCODE = re.compile(r"^[1-9][0-9]{3}[A-Z]{2}$")
HOUSE_NUMBER = re.compile(r"^\s*([0-9]+)(.*)$")
DATE_FORMATS = ("%Y-%m-%d", "%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y")
TRUE = {"ja", "j", "true", "1", "yes", "y"}
FALSE = {"nee", "n", "false", "0", "no", ""}
TODAY = INGEST_CLOCK.date()


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    text = str(value).strip()[:10]
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    text = re.sub(r"\b(\d)\b", r"0\1", text)  # 5-9-2026
    try:
        return datetime.strptime(text, "%d-%m-%Y").date()
    except ValueError:
        raise ValueError("not a date") from None


class SignalRow(BaseModel):
    """One row of a partner file, validated."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")

    referentie: str = Field(min_length=1, max_length=100)
    achternaam: str = Field(min_length=1, max_length=200)
    tussenvoegsel: str | None = Field(default=None, max_length=20)
    voorletters: str | None = Field(default=None, max_length=30)
    geboortedatum: date | None = None
    bsn: str | None = None
    straat: str | None = Field(default=None, max_length=200)
    huisnummer: str
    huisletter: str | None = None
    huisnummertoevoeging: str | None = None
    postcode: str
    woonplaats: str | None = Field(default=None, max_length=100)
    telefoon: str | None = None
    email: str | None = None
    bedrag: int
    achterstand_sinds: date
    signaaldatum: date | None = None
    crisis: bool = False
    warme_overdracht: bool = False
    eindelevering: bool = False

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str) -> str:
        code = value.replace(" ", "").upper()
        if not POSTCODE.match(code) or code[4:] in ("SA", "SD", "SS"):
            raise ValueError("not a Dutch postcode")
        return code

    @field_validator("bedrag", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> int:
        text = str(value).replace("€", "").replace(" ", "")
        if "," in text and "." in text:
            if text.rfind(",") > text.rfind("."):
                text = text.replace(".", "").replace(",", ".")
            else:
                text = text.replace(",", "")
        elif "," in text:
            text = text.replace(",", ".")
        try:
            cents = int(Decimal(text) * 100)
        except InvalidOperation:
            raise ValueError("not an amount") from None
        if cents <= 0:
            raise ValueError("must be more than 0")
        return cents

    @field_validator("geboortedatum", "achterstand_sinds", "signaaldatum", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> date | None:
        parsed = _date(value)
        if parsed is not None and parsed > TODAY:
            raise ValueError("lies in the future")
        return parsed

    @field_validator("crisis", "warme_overdracht", "eindelevering", mode="before")
    @classmethod
    def _yes_no(cls, value: Any) -> bool:
        word = str(value or "").strip().lower()
        if word in TRUE:
            return True
        if word in FALSE:
            return False
        raise ValueError("expected ja or nee")

    @field_validator("bsn")
    @classmethod
    def _elfproef(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = re.sub(r"[\s.\-]", "", value)
        weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
        if len(digits) != 9 or not digits.isdigit():
            raise ValueError("not a BSN")
        if sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11:
            raise ValueError("not a BSN")
        return digits

    def address_key(self) -> str:
        match = HOUSE_NUMBER.match(self.huisnummer)
        if not match:
            raise ValueError("not a house number")
        suffix = "".join(
            re.sub(r"[^0-9A-Za-z]", "", part or "").upper()
            for part in (match.group(2), self.huisletter, self.huisnummertoevoeging)
        )
        return f"{self.postcode}|{int(match.group(1))}|{suffix}"

    def person_key(self) -> str | None:
        if self.geboortedatum is None:
            return None
        plain = unicodedata.normalize("NFKD", self.achternaam)
        name = re.sub(r"[^a-z0-9]", "", plain.encode("ascii", "ignore").decode().lower())
        return f"{name}|{self.geboortedatum.isoformat()}"


def _header(name: str) -> str:
    return name.strip().lstrip("\ufeff").lower().replace(" ", "_").replace("-", "_")


def naive_ingest(content: bytes, partner_id: uuid.UUID, filename: str) -> tuple[int, int]:
    """The whole naive pipeline for one file; (rows stored, problems)."""
    ctx = build_context(Settings(), clock=FixedClock(INGEST_CLOCK))
    now = ctx.now()
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("cp1252")
    first_line = text.split("\n", 1)[0]
    separator = max((";", ",", "\t"), key=first_line.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=separator)
    reader.fieldnames = [_header(n) for n in reader.fieldnames or []]
    session = ctx.sessions()
    try:
        delivery = Delivery(
            id=uuid.uuid4(),
            partner_id=partner_id,
            period=INGEST_PERIOD,
            status=DeliveryStatus.accepted,
            source="api",
            file_format="csv",
            filename=filename,
            content_sha256=hashlib.sha256(content).hexdigest(),
            size_bytes=len(content),
            row_count=0,
            received_at=now,
        )
        session.add(delivery)
        session.flush()
        # The schema's rule, not an optimisation: a delivery's signals take ids in its block.
        first_id = assign_signal_block(session, delivery)
        problems: list[tuple[int, str]] = []
        count = 0
        for number, raw in enumerate(reader, start=2):
            try:
                row = SignalRow.model_validate(raw)
                address = row.address_key()
            except (ValidationError, ValueError) as exc:
                problems.append((number, type(exc).__name__))
                continue
            pii = {
                "referentie": row.referentie,
                "achternaam": row.achternaam,
                "tussenvoegsel": row.tussenvoegsel,
                "voorletters": row.voorletters,
                "geboortedatum": row.geboortedatum.isoformat() if row.geboortedatum else None,
                "bsn": row.bsn,
                "straat": row.straat,
                "huisnummer": row.huisnummer,
                "postcode": row.postcode,
                "woonplaats": row.woonplaats,
                "telefoon": row.telefoon,
                "email": row.email,
            }
            person = row.person_key()
            session.add(
                Signal(
                    id=first_id + number,
                    delivery_id=delivery.id,
                    partner_id=partner_id,
                    period=INGEST_PERIOD,
                    row_number=number,
                    kind="zorg",
                    address_hash=ctx.hasher.hash("address", address),
                    person_hash=ctx.hasher.hash("person", person) if person else None,
                    pc4=row.postcode[:4],
                    pc6_hash=ctx.hasher.hash("pc6", row.postcode),
                    bedrag_cent=row.bedrag,
                    achterstand_sinds=row.achterstand_sinds,
                    signaaldatum=row.signaaldatum or TODAY,
                    crisis=row.crisis,
                    warme_overdracht=row.warme_overdracht,
                    eindelevering=row.eindelevering,
                    pii=ctx.cipher.encrypt_json(pii, signal_aad(str(delivery.id), number)),
                    pii_key_id=ctx.cipher.active_key_id,
                    created_at=now,
                )
            )
            count += 1
        if problems:
            session.rollback()
            return 0, len(problems)
        delivery.row_count = count
        session.commit()
        return count, 0
    finally:
        session.close()
        ctx.engine.dispose()


def main() -> None:
    args = child_parser(__doc__ or "naive").parse_args()
    data = manifest(args.data)
    state: dict[str, Any] = read_json(args.state)
    entry = data["ingest"]["naive_slice"]
    full_rows = int(data["ingest"]["file"]["rows"])
    path = args.data / entry["path"]
    partner_id = uuid.UUID(state["partners"][NAIVE_PARTNER[0]])
    say(f"naive: {entry['rows']} rows, a pydantic model and an ORM object per row")
    started = time.perf_counter()
    stored, problems = naive_ingest(path.read_bytes(), partner_id, path.name)
    wall = time.perf_counter() - started
    rss = peak_rss_bytes()
    if problems or stored != entry["rows"]:
        raise SystemExit(f"naive pipeline: {stored} rows stored, {problems} rows refused")
    say(f"naive: {stored} rows in {wall:.2f} s ({stored / wall:,.0f} rows/s)")
    scaled = wall * full_rows / stored
    write_results(
        args.result_file,
        [
            measurement(
                "naive",
                f"Baseline: naive pipeline (pydantic + ORM per row), measured on {stored:,} rows",
                rows=stored,
                wall_s=wall,
                peak_rss=rss,
            ),
            measurement(
                "naive_scaled",
                f"Baseline: naive pipeline, scaled to {full_rows:,} rows",
                rows=full_rows,
                wall_s=scaled,
                peak_rss=None,
                scaled_from_rows=stored,
                rss_note="RSS grows with the rows held by the session until the commit",
            ),
        ],
    )


if __name__ == "__main__":
    main()
