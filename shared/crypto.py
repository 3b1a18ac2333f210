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

    def encrypt_many(self, plaintexts: Iterable[bytes], aads: Iterable[bytes]) -> list[bytes]:
        """Envelopes for many rows at once (the ingest hot path)."""
        enc = self._active.encrypt
        urandom = os.urandom
        out = []
        for plaintext, aad in zip(plaintexts, aads, strict=True):
            nonce = urandom(NONCE_BYTES)
            out.append(nonce + enc(nonce, plaintext, aad))
        return out

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
        result: dict[str, Any] = json.loads(self.decrypt(envelope, aad, key_id))
        return result


def signal_aad(delivery_id: str, row: int) -> bytes:
    """Associated data that binds a signal's envelope to its delivery and row."""
    return f"signal:{delivery_id}:{row}".encode()


class KeyedHasher:
    """HMAC-SHA256 of normalised keys, hex encoded, with a domain per kind of key.

    The domain (``address``, ``person``) is part of the message, so an address key and a person
    key can never produce the same hash.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def hash(self, domain: str, value: str) -> str:
        return hmac.digest(self._key, f"{domain}:{value}".encode(), "sha256").hex()

    def hash_many(self, domain: str, values: Sequence[str | None]) -> list[str | None]:
        """Hashes for many values; None stays None."""
        key, digest, prefix = self._key, hmac.digest, f"{domain}:"
        return [
            None if v is None else digest(key, (prefix + v).encode(), "sha256").hex()
            for v in values
        ]


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
