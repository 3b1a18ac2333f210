"""Encryption of personal data, keyed hashes for matching, and API keys.

* Personal data (names, birth date, BSN, phone, e-mail, street, city, the partner's own reference)
  is stored as one AES-256-GCM envelope per signal: ``nonce (12 bytes) || ciphertext+tag``. The
  envelope is bound to its row by associated data (``signal:<delivery id>:<row>``), so a ciphertext
  copied to another row does not decrypt. The key id is stored beside the envelope, so that key
  rotation can find what is still under an old key.
* Addresses (and, for the SDV register, persons) are stored as HMAC-SHA256 under a separate key:
  matching and recidivism compare these hashes only, never plaintext.
* API keys are random, prefixed (``vsp_`` for partners, ``vss_`` for staff, so a leaked key is easy
  to spot in a repository or a log), shown once, and stored only as a SHA-256 hash. Their public
  ``key_id`` part finds the row; the hash is then compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import AppError

NONCE_BYTES = 12


class DecryptionError(AppError):
    slug = "decryption-failed"
    title = "Stored data could not be decrypted"


class PiiCipher:
    """AES-GCM envelopes under a keyring whose first key is the active one."""

    def __init__(self, keyring: dict[str, bytes]) -> None:
        if not keyring:
            raise ValueError("empty keyring")
        self._keys = {key_id: AESGCM(key) for key_id, key in keyring.items()}
        self.active_key_id = next(iter(keyring))
        self._active = self._keys[self.active_key_id]

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """One envelope under the active key."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._active.encrypt(nonce, plaintext, aad)

    def encrypt_many(self, plaintexts: Sequence[bytes], aads: Sequence[bytes]) -> list[bytes]:
        """Envelopes for many rows at once (the ingest hot path): the random nonces are drawn
        in one call and cut, 12 bytes each."""
        if len(plaintexts) != len(aads):
            raise ValueError("one associated data per plaintext")
        enc = self._active.encrypt
        randomness = os.urandom(NONCE_BYTES * len(plaintexts))
        nonces = [randomness[i : i + NONCE_BYTES] for i in range(0, len(randomness), NONCE_BYTES)]
        return [n + enc(n, p, a) for n, p, a in zip(nonces, plaintexts, aads, strict=True)]

    def decrypt(self, envelope: bytes, aad: bytes, key_id: str) -> bytes:
        """Open an envelope; a wrong key, row or tampered byte raises DecryptionError."""
        aes = self._keys.get(key_id)
        if aes is None:
            raise DecryptionError(f"key {key_id!r} is not in the keyring")
        if len(envelope) < NONCE_BYTES + 16:
            raise DecryptionError("envelope too short")
        try:
            return aes.decrypt(envelope[:NONCE_BYTES], envelope[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("envelope failed authentication") from exc

    def encrypt_json(self, data: dict[str, Any], aad: bytes) -> bytes:
        return self.encrypt(json.dumps(data, separators=(",", ":")).encode(), aad)

    def decrypt_json(self, envelope: bytes, aad: bytes, key_id: str) -> dict[str, Any]:
        """An envelope's JSON object; a signal's compact forms come back with their field names."""
        plain = self.decrypt(envelope, aad, key_id)
        if plain.startswith(SIGNAL_PII_TEXT_PREFIX):
            return unpack_signal_text(plain)
        result: dict[str, Any] = unpack_signal_pii(json.loads(plain))
        return result


def signal_aad(delivery_id: str, row: int) -> bytes:
    """Associated data that binds a signal's envelope to its delivery and row."""
    return f"signal:{delivery_id}:{row}".encode()


# A signal's personal data, in the order of the compact stored form (format 2). The order is part
# of the format: append new fields at the end, never reorder.
SIGNAL_PII_FIELDS = (
    "referentie",
    "achternaam",
    "tussenvoegsel",
    "voorletters",
    "geboortedatum",
    "bsn",
    "straat",
    "huisnummer",
    "huisnummer_suffix",
    "postcode",
    "woonplaats",
    "telefoon",
    "email",
)
SIGNAL_PII_FORMAT = 2

# Format 3 (written since 2026-11-30; less than half the cost of building format 2): the values
# as text, in SIGNAL_PII_FIELDS order after the format's number, separated by the unit separator;
# a missing value is a lone NUL. Both characters are control characters, which the ingest refuses
# in every field, so they cannot occur in a value; a row whose values hold one anyway is written
# in format 2 (services.ingest.service). No JSON text starts with "3" and a unit separator.
SIGNAL_PII_TEXT_FORMAT = 3
SIGNAL_PII_SEPARATOR = "\x1f"
SIGNAL_PII_NULL = "\x00"
SIGNAL_PII_TEXT_PREFIX = f"{SIGNAL_PII_TEXT_FORMAT}{SIGNAL_PII_SEPARATOR}".encode()


def unpack_signal_text(plain: bytes) -> dict[str, Any]:
    """A signal's personal data by field name, from format 3 (see above)."""
    values = plain.decode().split(SIGNAL_PII_SEPARATOR)[1:]
    return {
        name: None if i >= len(values) or values[i] == SIGNAL_PII_NULL else values[i]
        for i, name in enumerate(SIGNAL_PII_FIELDS)
    }


def unpack_signal_pii(data: Any) -> Any:
    """A signal's personal data by field name, from either stored form.

    Format 2 (written since the ingest was streamed) is the JSON array ``[2, value, ...]`` with
    the values in :data:`SIGNAL_PII_FIELDS` order: less than half the bytes of the named form,
    which matters at a million rows a month. Envelopes of the first format are the named object
    itself and come back unchanged, as does every other kind of envelope (all are objects).
    """
    if isinstance(data, list) and data and data[0] == SIGNAL_PII_FORMAT:
        values = data[1:]
        return {
            name: values[i] if i < len(values) else None for i, name in enumerate(SIGNAL_PII_FIELDS)
        }
    return data


class KeyedHasher:
    """HMAC-SHA256 of normalised keys, hex encoded, with a domain per kind of key.

    The domain (``address``, ``person``) is part of the message, so an address key and a person
    key can never produce the same hash.

    HMAC is computed from SHA-256 states primed with the padded key (RFC 2104: ``H(K ^ opad ||
    H(K ^ ipad || m))``), copied per message: the same digests as :func:`hmac.digest`, at a third
    of the cost per call, which is most of the ingest's hashing at a million rows.
    """

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def hash(self, domain: str, value: str) -> str:
        digest = self.hash_many(domain, [value])[0]
        assert digest is not None
        return digest

    def hash_many(self, domain: str, values: Sequence[str | None]) -> list[str | None]:
        """Hashes for many values; None stays None."""
        prefix = f"{domain}:"
        return self._hashes(None if v is None else (prefix + v).encode() for v in values)

    def hash_column(self, domain: str, values: pl.Series) -> list[str | None]:
        """:meth:`hash_many` for a column of text: Polars puts the messages together and encodes
        them, a column at a time, not Python a value at a time (1.43 to 1.50 against 1.65 to
        1.68 µs a hash for 200,000 keys, bench/HISTORY.md); a null stays None."""
        messages = pl.select(
            pl.concat_str([pl.lit(f"{domain}:"), pl.lit(values.cast(pl.String))]).cast(pl.Binary)
        ).to_series()
        return self._hashes(messages.to_list())

    def _hashes(self, messages: Iterable[bytes | None]) -> list[str | None]:
        inner, outer = self._inner.copy, self._outer.copy

        def one(message: bytes) -> str:
            step = inner()
            step.update(message)
            result = outer()
            result.update(step.digest())
            return result.hexdigest()

        return [None if m is None else one(m) for m in messages]


PARTNER_KEY_PREFIX = "vsp"
STAFF_KEY_PREFIX = "vss"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly made API key: ``secret`` is shown once; only ``key_hash`` is stored."""

    key_id: str
    secret: str
    key_hash: str


def issue_api_key(prefix: str) -> IssuedKey:
    """A new API key of the form ``<prefix>_<key id>_<secret>``."""
    key_id = secrets.token_hex(6)
    secret = f"{prefix}_{key_id}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key_id=key_id, secret=secret, key_hash=hash_api_key(secret))


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(secret: str) -> tuple[str, str] | None:
    """(prefix, key id) of a well-formed key, else None."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] not in (PARTNER_KEY_PREFIX, STAFF_KEY_PREFIX):
        return None
    if len(parts[1]) != 12 or len(parts[2]) < 32:
        return None
    return parts[0], parts[1]


def api_key_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_api_key(secret), stored_hash)
