"""After a whole demo: no personal value of the demo is stored in plaintext in the database, and
none appears in what the demo printed or logged."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path

import pytest

from services.demo import DEMO_DIR, run_demo
from shared.crypto import PiiCipher, signal_aad
from shared.settings import Settings

FIELDS = ("achternaam", "straat", "telefoon", "email", "bsn", "geboortedatum", "postcode")


def _demo_values(db: Path, cipher: PiiCipher) -> set[str]:
    """Every personal value the demo stored, decrypted from the envelopes."""
    values: set[str] = set()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT pii, pii_key_id, delivery_id, row_number FROM signals WHERE pii IS NOT NULL"
        ).fetchall()
    for pii, key_id, delivery_id, row_number in rows:
        delivery = str(uuid.UUID(str(delivery_id)))  # SQLite keeps UUIDs as 32 hex characters
        data = cipher.decrypt_json(pii, signal_aad(delivery, row_number), key_id)
        for field in FIELDS:
            value = data.get(field)
            if value and len(str(value)) >= 5:
                values.add(str(value))
    return values


def test_no_plaintext_personal_data_after_the_demo(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("VS_DATABASE_URL", "VS_ENCRYPTION_KEYS", "VS_ADDRESS_HASH_KEY"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.DEBUG):
        assert run_demo() == 0
    printed = capsys.readouterr()
    settings = Settings(environment="development", data_dir=DEMO_DIR)
    cipher = PiiCipher(settings.encryption_keyring())
    db = tmp_path / DEMO_DIR / "vroegsignaal.sqlite"
    values = _demo_values(db, cipher)
    assert len(values) > 1000  # the demo's households, really decrypted
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = db.read_bytes()
    stored = [v for v in values if v.encode() in raw]
    assert stored == [], f"{len(stored)} personal values in plaintext in the database"
    logged = printed.out + printed.err + "\n".join(r.getMessage() for r in caplog.records)
    logged += "\n".join(str(r.__dict__) for r in caplog.records)
    shown = [v for v in values if v in logged]
    assert shown == [], f"{len(shown)} personal values in the demo's output or logs"
