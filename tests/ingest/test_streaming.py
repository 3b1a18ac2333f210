"""The ingest a batch at a time: same outcome as one batch, all-or-nothing across batches, the
compact envelope and the fast keyed hash, on each database backend."""

from __future__ import annotations

import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.ingest import service
from services.ingest.partners import add_partner
from services.ingest.service import ingest_with_retry
from shared.context import Context, build_context
from shared.crypto import (
    SIGNAL_PII_TEXT_PREFIX,
    KeyedHasher,
    PiiCipher,
    signal_aad,
    unpack_signal_pii,
)
from shared.db import unit_of_work
from shared.errors import ValidationFailed
from shared.models import Delivery, Partner, Signal
from tests.conftest import Clock, make_settings
from tests.helpers import csv_file, row

BATCH = 7  # rows per batch: the files below span several batches


@pytest.fixture
def small_batches(database_url: str, tmp_path: Path, clock: Clock) -> Context:
    settings_ = make_settings(database_url, tmp_path / "data", ingest_batch_rows=BATCH)
    return build_context(settings_, clock=clock)


def _partner(ctx: Context) -> uuid.UUID:
    with unit_of_work(ctx.sessions) as session:
        add_partner(session, name="Woonstichting Stroom", kind="huur", now=ctx.now())
        partner = session.scalar(sa.select(Partner).where(Partner.name == "Woonstichting Stroom"))
        assert partner is not None
        return partner.id


def _ingest(ctx: Context, partner_id: uuid.UUID, content: bytes) -> Delivery:
    outcome = ingest_with_retry(ctx, partner_id=partner_id, content=content, filename="a.csv")
    return outcome.delivery


def _stored(ctx: Context) -> tuple[int, int]:
    with ctx.sessions() as session:
        deliveries = session.scalar(sa.select(sa.func.count()).select_from(Delivery)) or 0
        signals = session.scalar(sa.select(sa.func.count()).select_from(Signal)) or 0
    return deliveries, signals


def test_a_file_of_many_batches_is_stored_whole_with_its_row_numbers(
    small_batches: Context,
) -> None:
    ctx = small_batches
    partner_id = _partner(ctx)
    rows = [
        row(f"R{i}", nummer=str(i + 1), telefoon="" if i % 5 == 0 else "0612345678")
        for i in range(30)
    ]
    delivery = _ingest(ctx, partner_id, csv_file(*rows))
    assert delivery.row_count == 30
    assert delivery.warning_count == 6  # rows 0, 5, ..., 25 have no phone and no e-mail
    with ctx.sessions() as session:
        stored = session.scalars(sa.select(Signal).order_by(Signal.row_number)).all()
        assert [s.row_number for s in stored] == list(range(2, 32))
        last = stored[-1]
        assert last.pii is not None
        assert last.pii_key_id is not None
        data = ctx.cipher.decrypt_json(
            last.pii, signal_aad(str(delivery.id), last.row_number), last.pii_key_id
        )
    assert data["referentie"] == "R29"
    assert data["huisnummer"] == "30"
    ctx.engine.dispose()


def test_an_error_in_a_late_batch_stores_nothing_and_reports_every_batch(
    small_batches: Context,
) -> None:
    ctx = small_batches
    partner_id = _partner(ctx)
    rows = [row(f"R{i}", nummer=str(i + 1)) for i in range(30)]
    rows[3] = row("R3", postcode="ABCDEF")  # batch 1
    rows[27] = row("R27", bedrag="-5")  # batch 4, after three batches were stored
    with pytest.raises(ValidationFailed) as info:
        _ingest(ctx, partner_id, csv_file(*rows))
    found = {(p.row, p.column) for p in info.value.problems}
    assert found == {(5, "postcode"), (29, "bedrag")}
    assert _stored(ctx) == (0, 0)
    ctx.engine.dispose()


def test_a_duplicate_reference_is_found_across_batches(small_batches: Context) -> None:
    ctx = small_batches
    partner_id = _partner(ctx)
    rows = [row(f"R{i}", nummer=str(i + 1)) for i in range(20)]
    rows[18] = row("R2", nummer="99")  # R2 is on row 4, two batches earlier
    with pytest.raises(ValidationFailed) as info:
        _ingest(ctx, partner_id, csv_file(*rows))
    assert [(p.row, p.column, p.message) for p in info.value.problems] == [
        (20, "referentie", "duplicate reference: also on row 4")
    ]
    assert _stored(ctx) == (0, 0)
    ctx.engine.dispose()


def test_a_malformed_line_in_a_late_batch_stores_nothing(small_batches: Context) -> None:
    ctx = small_batches
    partner_id = _partner(ctx)
    rows = [row(f"R{i}", nummer=str(i + 1)) for i in range(30)]
    rows[25] = rows[25] + ";one;too;many"
    with pytest.raises(ValidationFailed) as info:
        _ingest(ctx, partner_id, csv_file(*rows))
    assert any(p.row == 27 for p in info.value.problems)
    assert _stored(ctx) == (0, 0)
    # And the same partner's corrected file is then accepted (nothing was left half-done).
    rows[25] = row("R25", nummer="26")
    assert _ingest(ctx, partner_id, csv_file(*rows)).row_count == 30
    ctx.engine.dispose()


def test_only_blank_lines_after_the_header_is_no_rows(small_batches: Context) -> None:
    ctx = small_batches
    partner_id = _partner(ctx)
    with pytest.raises(ValidationFailed) as info:
        _ingest(ctx, partner_id, csv_file(";;;;;;;;;;;;;", ";;;;;;;;;;;;;"))
    assert [p.message for p in info.value.problems] == ["no rows"]
    assert _stored(ctx) == (0, 0)
    ctx.engine.dispose()


# --- the compact envelope ---------------------------------------------------------------------

awkward_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=30,
) | st.sampled_from(
    [
        '","a":"',
        '\\",',
        "}",
        "[2,",
        ',"b":null',
        "\\",
        '"',
        "é€ß",
        "a\tb",
        "\x1f",
        "a\x00",
        "\x00",
        "3",
    ]
)


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.tuples(awkward_text, awkward_text), min_size=1, max_size=4))
@example(names=[("Jansen", "Dorpsstraat"), ("Jan\x1fsen", ""), ("", "\x00"), ("3", "x")])
def test_awkward_text_survives_the_compact_envelope(names: list[tuple[str, str]]) -> None:
    """Every value comes back exactly, whatever it holds: in format 3 (values joined by a unit
    separator, NUL for none) when no value holds either character, in format 2 (JSON, built by
    cutting keys out of JSON text: quotes, commas, braces and key-like text inside the values)
    when one does, row by row within one batch."""
    cipher = PiiCipher({"k1": b"\x01" * 32})
    fake_ctx = SimpleNamespace(cipher=cipher, hasher=KeyedHasher(b"\x02" * 32))
    n = len(names)
    frame = pl.DataFrame(
        {
            "row": list(range(2, n + 2)),
            "referentie": [f"R{i}" for i in range(n)],
            "achternaam": [a for a, _ in names],
            "tussenvoegsel": [None] * n,
            "voorletters": ["J."] * n,
            "geboortedatum": [None] * n,
            "bsn": [None] * n,
            "straat": [b for _, b in names],
            "huisnummer": [12] * n,
            "huisnummer_suffix": ["A"] * n,
            "postcode": ["2011AB"] * n,
            "woonplaats": ["Haarlem"] * n,
            "telefoon": [None] * n,
            "email": [None] * n,
            "bedrag_cent": [100] * n,
            "achterstand_sinds": [None] * n,
            "signaaldatum": [None] * n,
            "crisis": [False] * n,
            "warme_overdracht": [False] * n,
            "eindelevering": [False] * n,
            "address_key": ["2011AB|12|A"] * n,
            "person_key": [None] * n,
        },
        schema_overrides={
            "geboortedatum": pl.Date,
            "tussenvoegsel": pl.String,
            "bsn": pl.String,
            "telefoon": pl.String,
            "email": pl.String,
            "achterstand_sinds": pl.Date,
            "signaaldatum": pl.Date,
            "person_key": pl.String,
        },
    )

    delivery = SimpleNamespace(id=uuid.UUID(int=1), period="2026-11", first_signal_id=1 << 24)
    partner = SimpleNamespace(id=uuid.UUID(int=2), kind="huur")
    batch = service._unsealed(delivery, frame)  # type: ignore[arg-type]
    out = service._signal_frame(fake_ctx, delivery, partner, batch, datetime.now(UTC))  # type: ignore[arg-type]
    # Each row's id: the delivery's block plus the row (shared.ids).
    assert out["id"].to_list() == [(1 << 24) + i + 2 for i in range(len(names))]
    for i, (achternaam, straat) in enumerate(names):
        aad = signal_aad(str(delivery.id), i + 2)
        plain = cipher.decrypt(out["pii"][i], aad, "k1")
        unsafe = any(c in v for v in (achternaam, straat) for c in "\x00\x1f")
        if unsafe:
            assert json.loads(plain)[0] == 2
            assert len(json.loads(plain)) == 14
        else:
            assert plain.startswith(SIGNAL_PII_TEXT_PREFIX)
        data = cipher.decrypt_json(out["pii"][i], aad, "k1")
        assert data["referentie"] == f"R{i}"
        assert data["achternaam"] == achternaam
        assert data["straat"] == straat
        assert data["huisnummer"] == "12"
        assert data["tussenvoegsel"] is None
        assert data["email"] is None


def test_envelopes_of_the_first_format_still_read() -> None:
    named = {"referentie": "R1", "achternaam": "Jansen"}
    assert unpack_signal_pii(named) == named
    assert unpack_signal_pii({"note": "a contact note"}) == {"note": "a contact note"}


# --- the keyed hash ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=200),
    values=st.lists(st.none() | st.text(max_size=80), max_size=5),
)
@example(key=b"\xff" * 64, values=["2011AB|12|A", None, ""])  # a key of one block exactly
@example(key=b"\x80" * 65, values=["é" * 80])  # a key longer than a block is hashed first
def test_fast_keyed_hash_is_hmac_sha256(key: bytes, values: list[str | None]) -> None:
    """The hashes (from primed SHA-256 states) are HMAC-SHA256 as the standard library computes
    it, for any key and any value, one at a time as well as many, from Python's strings and from
    a column."""
    hasher = KeyedHasher(key)
    expected = [
        None if v is None else hmac.digest(key, f"address:{v}".encode(), "sha256").hex()
        for v in values
    ]
    assert hasher.hash_many("address", values) == expected
    assert hasher.hash_column("address", pl.Series(values, dtype=pl.String)) == expected
    assert [None if v is None else hasher.hash("address", v) for v in values] == expected


def test_the_ingest_hashes_each_key_as_a_single_value_would_be() -> None:
    """A batch's address and person hashes, and its postcodes' (hashed once per distinct
    value), are each row's own; a missing key stays missing."""
    ctx = SimpleNamespace(hasher=KeyedHasher(b"\x07" * 32))
    h = ctx.hasher.hash
    keys = pl.Series(["jansen|1980-05-01", None, "de vries|"])
    postcodes = pl.Series(["2011AB", "9999ZZ", "2011AB", None])
    person = service._hashed(ctx, "person", keys)  # type: ignore[arg-type]
    pc6 = service._hashed(ctx, "pc6", postcodes, distinct=True)  # type: ignore[arg-type]
    assert (person.name, pc6.name) == ("person_hash", "pc6_hash")
    assert person.to_list() == [None if k is None else h("person", k) for k in keys]
    assert pc6.to_list() == [None if p is None else h("pc6", p) for p in postcodes]


def test_envelopes_of_the_second_format_still_read() -> None:
    """Format 2, the JSON array every signal stored before format 3 holds, reads as before."""
    cipher = PiiCipher({"k1": b"\x01" * 32})
    aad = signal_aad(str(uuid.UUID(int=1)), 2)
    envelope = cipher.encrypt(b'[2,"R1","Jansen",null,"J."]', aad)
    data = cipher.decrypt_json(envelope, aad, "k1")
    assert data["referentie"] == "R1"
    assert data["achternaam"] == "Jansen"
    assert data["voorletters"] == "J."
    assert data["tussenvoegsel"] is None
    assert data["email"] is None
