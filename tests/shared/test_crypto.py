"""PII envelopes, keyed hashes and API keys."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.crypto import (
    NONCE_BYTES,
    PARTNER_KEY_PREFIX,
    STAFF_KEY_PREFIX,
    DecryptionError,
    KeyedHasher,
    PiiCipher,
    api_key_matches,
    hash_api_key,
    issue_api_key,
    signal_aad,
    split_api_key,
)

PROPERTY = settings(max_examples=50, deadline=None, database=None)


@pytest.fixture
def cipher() -> PiiCipher:
    return PiiCipher({"k2": os.urandom(32), "k1": os.urandom(32)})


def test_active_key_is_the_first(cipher: PiiCipher) -> None:
    assert cipher.active_key_id == "k2"
    assert cipher.key_ids == ["k2", "k1"]


def test_empty_keyring_is_refused() -> None:
    with pytest.raises(ValueError):
        PiiCipher({})


@PROPERTY
@given(st.binary(max_size=2000), st.binary(max_size=100))
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    cipher = PiiCipher({"k1": bytes(range(32))})
    envelope = cipher.encrypt(plaintext, aad)
    assert len(envelope) == NONCE_BYTES + len(plaintext) + 16
    assert cipher.decrypt(envelope, aad, "k1") == plaintext


def test_round_trip_json(cipher: PiiCipher) -> None:
    data = {"achternaam": "Özdemir", "bsn": "111222333", "n": 3, "x": None}
    aad = signal_aad("d-1", 7)
    assert cipher.decrypt_json(cipher.encrypt_json(data, aad), aad, "k2") == data


def test_encrypt_many(cipher: PiiCipher) -> None:
    plaintexts = [b"a", b"", b"c" * 100]
    aads = [signal_aad("d", i) for i in range(3)]
    envelopes = cipher.encrypt_many(plaintexts, aads)
    assert [cipher.decrypt(e, a, "k2") for e, a in zip(envelopes, aads, strict=True)] == plaintexts
    with pytest.raises(ValueError):
        cipher.encrypt_many([b"a"], [])


def test_old_key_still_decrypts() -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    envelope = PiiCipher({"old": old_key}).encrypt(b"geheim", b"aad")
    rotated = PiiCipher({"new": new_key, "old": old_key})
    assert rotated.decrypt(envelope, b"aad", "old") == b"geheim"
    with pytest.raises(DecryptionError):
        rotated.decrypt(envelope, b"aad", "new")


def test_two_encryptions_differ(cipher: PiiCipher) -> None:
    first = cipher.encrypt(b"Jansen", b"aad")
    second = cipher.encrypt(b"Jansen", b"aad")
    assert first != second
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES]


@PROPERTY
@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_tampered_byte_fails(plaintext: bytes, data: st.DataObject) -> None:
    cipher = PiiCipher({"k1": bytes(32)})
    envelope = bytearray(cipher.encrypt(plaintext, b"aad"))
    position = data.draw(st.integers(0, len(envelope) - 1))
    envelope[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionError):
        cipher.decrypt(bytes(envelope), b"aad", "k1")


@pytest.mark.parametrize("length", [0, 1, 7, 8, 11, NONCE_BYTES, NONCE_BYTES + 15, 33])
def test_truncated_envelope_fails(cipher: PiiCipher, length: int) -> None:
    """A damaged (short) stored envelope is a DecryptionError like any other damage."""
    envelope = cipher.encrypt(b"Jansen", b"aad")
    assert len(envelope) == 34
    with pytest.raises(DecryptionError):
        cipher.decrypt(envelope[:length], b"aad", "k2")


def test_wrong_aad_fails(cipher: PiiCipher) -> None:
    envelope = cipher.encrypt(b"Jansen", signal_aad("d-1", 2))
    with pytest.raises(DecryptionError):
        cipher.decrypt(envelope, signal_aad("d-1", 3), "k2")
    with pytest.raises(DecryptionError):
        cipher.decrypt(envelope, signal_aad("d-2", 2), "k2")


def test_unknown_key_id_fails(cipher: PiiCipher) -> None:
    envelope = cipher.encrypt(b"Jansen", b"aad")
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(envelope, b"aad", "k9")
    assert b"Jansen".decode() not in str(info.value)


def test_signal_aad() -> None:
    assert signal_aad("abc", 12) == b"signal:abc:12"


# --- keyed hashes ----------------------------------------------------------------------------


@PROPERTY
@given(st.text(max_size=50))
def test_keyed_hash_is_deterministic_per_key(value: str) -> None:
    key = b"k" * 32
    assert KeyedHasher(key).hash("address", value) == KeyedHasher(key).hash("address", value)
    digest = KeyedHasher(key).hash("address", value)
    assert len(digest) == 64
    assert all(c in "0123456789abcdef" for c in digest)


@PROPERTY
@given(st.text(max_size=50))
def test_keyed_hash_differs_per_key_and_domain(value: str) -> None:
    first, second = KeyedHasher(b"a" * 32), KeyedHasher(b"b" * 32)
    assert first.hash("address", value) != second.hash("address", value)
    assert first.hash("address", value) != first.hash("person", value)


def test_keyed_hash_differs_per_value() -> None:
    hasher = KeyedHasher(os.urandom(32))
    assert hasher.hash("address", "2011AB|12|") != hasher.hash("address", "2011AB|12|A")


def test_hash_many_matches_hash() -> None:
    hasher = KeyedHasher(os.urandom(32))
    values = ["2011AB|12|A", None, "", "jansen|1980-05-01"]
    assert hasher.hash_many("address", values) == [
        None if v is None else hasher.hash("address", v) for v in values
    ]


# --- API keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [PARTNER_KEY_PREFIX, STAFF_KEY_PREFIX])
def test_issued_key_format(prefix: str) -> None:
    issued = issue_api_key(prefix)
    assert issued.secret.startswith(f"{prefix}_{issued.key_id}_")
    assert len(issued.key_id) == 12
    assert split_api_key(issued.secret) == (prefix, issued.key_id)
    assert issued.key_hash == hash_api_key(issued.secret)
    assert issued.secret not in issued.key_hash
    assert api_key_matches(issued.secret, issued.key_hash)


def test_issued_keys_differ() -> None:
    first, second = issue_api_key("vsp"), issue_api_key("vsp")
    assert first.secret != second.secret
    assert first.key_id != second.key_id
    assert first.key_hash != second.key_hash


def test_api_key_mismatch() -> None:
    issued = issue_api_key("vsp")
    other = issue_api_key("vsp")
    assert not api_key_matches(other.secret, issued.key_hash)
    assert not api_key_matches(issued.secret[:-1], issued.key_hash)
    assert not api_key_matches(issued.secret + "x", issued.key_hash)
    assert not api_key_matches("", issued.key_hash)


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "vsp",
        "vsp_abc",
        "xyz_0123456789ab_" + "a" * 43,  # unknown prefix
        "vsp_0123456789a_" + "a" * 43,  # key id too short
        "vsp_0123456789abc_" + "a" * 43,  # key id too long
        "vsp_0123456789ab_" + "a" * 31,  # secret part too short
        "VSP_0123456789ab_" + "a" * 43,
    ],
)
def test_split_api_key_refuses_malformed_keys(secret: str) -> None:
    assert split_api_key(secret) is None


def test_split_api_key_accepts_underscores_in_the_secret_part() -> None:
    secret = "vss_0123456789ab_" + "a_b-" * 11
    assert split_api_key(secret) == ("vss", "0123456789ab")
