"""Settings refuse unsafe secrets outside development; periods close on the 25th in Amsterdam."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import get_args
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from shared.errors import ConfigurationError
from shared.periods import Period, last_closed_period, open_period
from shared.settings import PartnerKindName, Settings, new_key_text, parse_keyring

AMS = ZoneInfo("Europe/Amsterdam")


def test_production_refuses_missing_secrets() -> None:
    with pytest.raises(ConfigurationError, match="VS_ENCRYPTION_KEYS"):
        Settings(environment="production", database_url="postgresql+psycopg://x/y")


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(ConfigurationError, match="placeholder"):
        Settings(
            environment="production",
            database_url="postgresql+psycopg://x/y",
            encryption_keys=SecretStr("k1:changeme"),
            address_hash_key=SecretStr(new_key_text()),
        )


def test_production_reads_secrets_from_files(tmp_path: Path) -> None:
    enc, mac = tmp_path / "enc", tmp_path / "mac"
    enc.write_text("k2:" + new_key_text() + "\nk1:" + new_key_text() + "\n")
    mac.write_text(new_key_text())
    settings = Settings(
        environment="production",
        database_url="postgresql+psycopg://x/y",
        encryption_keys_file=enc,
        address_hash_key_file=mac,
    )
    assert list(settings.encryption_keyring()) == ["k2", "k1"]
    assert len(settings.address_key()) == 32


def test_development_creates_local_keys_once(tmp_path: Path) -> None:
    settings = Settings(environment="development", data_dir=tmp_path)
    first = settings.encryption_keyring()
    assert settings.encryption_keyring() == first
    assert (tmp_path / "secrets" / "encryption.keys").stat().st_mode & 0o077 == 0


def test_keyring_rejects_bad_entries() -> None:
    with pytest.raises(ConfigurationError):
        parse_keyring("k1:" + new_key_text() + ",k1:" + new_key_text(), "X")
    with pytest.raises(ConfigurationError):
        parse_keyring("k1:short", "X")
    with pytest.raises(ConfigurationError):
        parse_keyring("", "X")


@pytest.mark.parametrize(
    ("local", "expected_open"),
    [
        ((2026, 11, 24, 23, 59), "2026-11"),
        ((2026, 11, 25, 0, 0), "2026-12"),
        ((2026, 12, 31, 23, 0), "2027-01"),
        ((2026, 3, 25, 0, 30), "2026-04"),  # the night summer time starts
        ((2026, 10, 24, 23, 59), "2026-10"),
    ],
)
def test_open_period_follows_the_amsterdam_deadline(
    local: tuple[int, ...], expected_open: str
) -> None:
    now = datetime(*local, tzinfo=AMS).astimezone(UTC)  # type: ignore[misc]
    assert str(open_period(now, 25, AMS)) == expected_open
    assert last_closed_period(now, 25, AMS) == Period.parse(expected_open).shift(-1)


def test_deadline_is_midnight_local_time() -> None:
    assert Period(2026, 11).deadline(25, AMS) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert Period(2026, 7).deadline(25, AMS) == datetime(2026, 7, 24, 22, 0, tzinfo=UTC)
    assert Period(2026, 1).shift(-1) == Period(2025, 12)
    assert Period(2024, 2).last_day.day == 29


def test_database_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("s3cret\n")
    settings = Settings(
        database_url="postgresql+psycopg://app@db:5432/vs", database_password_file=secret
    )
    assert settings.resolved_database_url == "postgresql+psycopg://app:s3cret@db:5432/vs"
    given = Settings(
        database_url="postgresql+psycopg://app:other@db/vs", database_password_file=secret
    )
    assert given.resolved_database_url == "postgresql+psycopg://app:other@db/vs"


def test_a_real_key_that_happens_to_contain_a_marker_is_accepted(tmp_path: Path) -> None:
    # A real, random key may contain "xXx" by chance: it is a key, not a placeholder.
    key = new_key_text()
    lucky = key[:10] + "xXx" + key[13:]
    settings = Settings(
        environment="production",
        database_url="postgresql+psycopg://x/y",
        encryption_keys=SecretStr("k1:" + lucky),
        address_hash_key=SecretStr(lucky),
    )
    assert len(settings.address_key()) == 32
    with pytest.raises(ConfigurationError, match="placeholder"):
        Settings(
            environment="production",
            database_url="postgresql+psycopg://x/y",
            encryption_keys=SecretStr("k1:changeme"),
            address_hash_key=SecretStr(key),
        )


def test_matching_settings_name_the_partner_kinds_as_written() -> None:
    """A minimum under a key spelt otherwise ("Energie", as DDAS writes it) would set none at all:
    refused at start, as a negative minimum is."""
    from pydantic import ValidationError

    from shared.models import PartnerKind

    assert set(get_args(PartnerKindName)) == {k.value for k in PartnerKind}
    ok = Settings(min_amount_cents={"energie": 7500}, standalone_kinds=["huur", "water"])
    assert ok.min_amount_cents == {"energie": 7500}
    for wrong in (
        {"min_amount_cents": {"Energie": 7500}},
        {"min_amount_cents": {"zorg": -1}},
        {"standalone_kinds": ["Huur"]},
    ):
        with pytest.raises(ValidationError):
            Settings(**wrong)
