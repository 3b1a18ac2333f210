"""Settings: one pydantic-settings class, environment variables with the prefix ``VS_``.

Secrets (the encryption keys for personal data and the key for address hashes) come from an
environment variable or from a file named by ``VS_<NAME>_FILE`` (the usual way to mount a secret
in a container). Outside ``development`` and ``test`` the service refuses to start when a secret is
missing or still a placeholder.

``VS_TRUSTED_PROXIES`` names the reverse proxies (IP addresses or CIDR networks, JSON list or comma
separated: ``127.0.0.1,10.20.0.0/16``) whose forwarded headers the API believes: the client
certificate a proxy verified (mutual TLS, ``X-Client-Cert``) and the client address
(``X-Forwarded-For``, for the per-address rate limit). It is compared with the connection's own
peer, never with a forwarded address. Empty (the default): no forwarded header is believed, and a
partner authenticates only with its API key.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigurationError

Environment = Literal["development", "test", "production"]

DEFAULT_DATA_DIR = Path("data")
PLACEHOLDER_MARKERS = ("changeme", "change-me", "placeholder", "example", "xxx")


# The partner kinds (shared.models.PartnerKind, not imported here: settings come before models).
PartnerKindName = Literal["huur", "energie", "water", "zorg"]


def _read_secret(value: SecretStr | None, file: Path | None, name: str) -> str | None:
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the secret file for {name}") from exc
    return value.get_secret_value().strip() if value is not None else None


def _decode_key(text: str, name: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{name} is not base64") from exc
    if len(raw) != 32:
        raise ConfigurationError(f"{name} must be 32 bytes (base64 of 32 random bytes)")
    return raw


def _is_placeholder(text: str, name: str) -> bool:
    """A text with a placeholder marker that is not a real key.

    A real random key can contain a marker by chance ("xXx" in about 1 of 800 keys: 41 places,
    each (2/64)^3), so a text that reads as a valid key or keyring is never a placeholder.
    """
    if not any(marker in text.lower() for marker in PLACEHOLDER_MARKERS):
        return False
    try:
        if name == "VS_ENCRYPTION_KEYS":
            parse_keyring(text, name)
        else:
            _decode_key(text, name)
    except ConfigurationError:
        return True
    return False


def parse_keyring(text: str, name: str) -> dict[str, bytes]:
    """Parse ``id:base64key`` entries (comma or newline separated); the first is the active key."""
    ring: dict[str, bytes] = {}
    for entry in text.replace(",", "\n").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, key = entry.partition(":")
        if not sep or not key_id.isalnum() or len(key_id) > 16:
            raise ConfigurationError(
                f"{name}: each entry is 'id:base64key' with an alphanumeric id"
            )
        if key_id in ring:
            raise ConfigurationError(f"{name}: key id {key_id!r} appears twice")
        ring[key_id] = _decode_key(key, name)
    if not ring:
        raise ConfigurationError(f"{name} holds no key")
    return ring


def _host_list(value: Any) -> Any:
    """``VS_TRUSTED_HOSTS`` as a JSON list or comma separated: ``api.gemeente.nl,*.gemeente.nl``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _checked_hosts(hosts: list[str]) -> list[str]:
    """Host patterns as TrustedHostMiddleware takes them: a name, ``*.domain`` or ``*``."""
    if not hosts:
        raise ConfigurationError("VS_TRUSTED_HOSTS holds no host name (use * to allow any)")
    for host in hosts:
        if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
            raise ConfigurationError(
                "VS_TRUSTED_HOSTS: a wildcard is only allowed as '*' or a leading '*.'"
            )
    return hosts


HostList = Annotated[
    list[str], NoDecode, BeforeValidator(_host_list), AfterValidator(_checked_hosts)
]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted_networks(value: Any) -> Any:
    """``VS_TRUSTED_PROXIES`` (a JSON list or comma separated) as ``ip_network`` objects.

    A network with host bits set (a typo such as ``10.0.0.1/8``) and the network of every address
    (``0.0.0.0/0``, ``::/0``) are refused.
    """
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list | tuple):
        return value  # pydantic reports the wrong type
    networks: list[IPNetwork] = []
    for entry in value:
        if isinstance(entry, str) and not entry.strip():
            continue
        try:
            network = ipaddress.ip_network(str(entry).strip())
        except ValueError:
            raise ConfigurationError(
                "VS_TRUSTED_PROXIES: each entry is an IP address or a network such as 10.0.0.0/8"
            ) from None
        if network.prefixlen == 0:
            raise ConfigurationError(
                "VS_TRUSTED_PROXIES: trusting every address would let anyone claim a certificate"
            )
        networks.append(network)
    return networks


NetworkList = Annotated[list[IPNetwork], NoDecode, BeforeValidator(_trusted_networks)]


class Settings(BaseSettings):
    """Everything the services read from the environment."""

    model_config = SettingsConfigDict(env_prefix="VS_", extra="ignore")

    environment: Environment = "development"
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default an SQLite file in data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    database_password_file: Path | None = None
    # PostgreSQL connection pool per process, and the requests let in at once (keep it at or below
    # pool's size: see services/concurrency.py). Above it, under load each worker opened and
    # closed connections beyond the pool (about 130 new sessions in a 5 s load test, 0-20 at 10).
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    max_concurrent_requests: int = Field(default=10, ge=1, le=1000)
    # How long ``vroegsignaal serve`` keeps an idle keep-alive connection open. Longer than the
    # proxy in front keeps its idle connections to the API (nginx's upstream keepalive_timeout,
    # 60 s in deploy/proxy/nginx.conf): otherwise the API may close a connection just as the
    # proxy sends a request on it, which the client sees as a 502 (uvicorn's own default is 5 s).
    http_keep_alive_seconds: int = Field(default=75, ge=1, le=3600)

    encryption_keys: SecretStr | None = None
    encryption_keys_file: Path | None = None
    address_hash_key: SecretStr | None = None
    address_hash_key_file: Path | None = None

    # Delivery window: a period YYYY-MM closes at 00:00 Europe/Amsterdam on this day of the month.
    delivery_deadline_day: int = Field(default=25, ge=2, le=28)
    timezone: str = "Europe/Amsterdam"
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_reported_errors: int = Field(default=1000, ge=1)
    amount_warning_ceiling_cents: int = Field(default=2_500_000, ge=1)
    max_age_years_warning: int = 110
    ingest_batch_rows: int = Field(default=100_000, ge=1)

    # Matching (the monthly run).
    freshness_days: int = Field(default=45, ge=1)
    recidive_months: int = Field(default=6, ge=1, le=36)
    # Keys and kinds as the CLI and the API write them (shared.models.PartnerKind): a key spelt
    # otherwise ("Energie", as DDAS writes it) would set no minimum at all, so it is refused.
    min_amount_cents: dict[PartnerKindName, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description='per partner kind, e.g. {"zorg": 7500}'
    )
    standalone_kinds: list[PartnerKindName] = Field(
        default_factory=lambda: list[PartnerKindName](["huur"]),
        description="partner kinds whose signal makes a case on its own",
    )
    crisis_standalone: bool = True

    # Routing (services.routing): deadlines from the run date.
    due_days: int = Field(default=28, ge=1, le=365)
    crisis_due_working_days: int = Field(default=3, ge=1, le=30)

    # Retention (services.retention): personal data of signals without a case and of closed cases
    # is removed this many months after receipt or closure.
    retention_months: int = Field(default=6, ge=1, le=120)

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    # Rate limits of the API (services.ratelimit), per API process; 0 switches a limit off.
    rate_limit_uploads_per_minute: int = Field(
        default=30, ge=0, description="uploads (POST /api/v1/deliveries) per API key"
    )
    rate_limit_reads_per_minute: int = Field(
        default=600, ge=0, description="every other request per API key"
    )
    rate_limit_auth_failures_per_minute: int = Field(
        default=20, ge=0, description="failed authentications per client address"
    )
    # Host names the API answers to (the Host header), e.g. api.vroegsignaal.gemeente.nl; other
    # hosts get 400. The default "*" allows any host: fine for development, set it in production.
    trusted_hosts: HostList = Field(default_factory=lambda: ["*"])
    # The reverse proxies whose forwarded client certificate and client address are believed (see
    # the module docstring and services.deps); compared with the connection's peer. Empty: none.
    trusted_proxies: NetworkList = Field(
        default_factory=list,
        description="IP addresses or networks of the TLS proxies whose X-Client-Cert and "
        "X-Forwarded-For headers are believed; empty: never",
    )

    # The SFTP drop (services.sftp): one folder per partner (its id) under the root.
    sftp_root: Path | None = None  # default: <data_dir>/sftp
    sftp_host_key_file: Path | None = None  # default: <data_dir>/sftp-host-key (made once)
    sftp_host: str = "127.0.0.1"
    sftp_port: int = Field(default=2222, ge=1, le=65535)
    # sftp-watch: a file is complete when its size and time have not changed for this long.
    sftp_settle_seconds: float = Field(default=5.0, ge=0)
    # Processed originals (personal data in the clear) are deleted after this many days.
    sftp_keep_processed_days: int = Field(default=7, ge=0, le=366)

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.environment in ("development", "test"):
            return self
        for name, text in (
            ("VS_ENCRYPTION_KEYS", self._encryption_text()),
            ("VS_ADDRESS_HASH_KEY", self._hash_key_text()),
        ):
            if not text:
                raise ConfigurationError(
                    f"{name} (or {name}_FILE) must be set in {self.environment}"
                )
            if _is_placeholder(text, name):
                raise ConfigurationError(f"{name} is a placeholder; generate a real key")
        if self.database_url is None:
            raise ConfigurationError(f"VS_DATABASE_URL must be set in {self.environment}")
        return self

    def _encryption_text(self) -> str | None:
        return _read_secret(self.encryption_keys, self.encryption_keys_file, "VS_ENCRYPTION_KEYS")

    def _hash_key_text(self) -> str | None:
        return _read_secret(
            self.address_hash_key, self.address_hash_key_file, "VS_ADDRESS_HASH_KEY"
        )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file under the data folder.

        ``VS_DATABASE_PASSWORD_FILE`` supplies the password from a mounted secret when the URL
        carries none.
        """
        if not self.database_url:
            return f"sqlite:///{(self.data_dir / 'vroegsignaal.sqlite').as_posix()}"
        if self.database_password_file is None:
            return self.database_url
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        if url.password:
            return self.database_url
        password = self.database_password_file.read_text(encoding="utf-8").strip()
        return url.set(password=password).render_as_string(hide_password=False)

    @property
    def resolved_sftp_root(self) -> Path:
        return self.sftp_root or self.data_dir / "sftp"

    @property
    def resolved_sftp_host_key_file(self) -> Path:
        return self.sftp_host_key_file or self.data_dir / "sftp-host-key"

    def encryption_keyring(self) -> dict[str, bytes]:
        """The encryption keys by id; the first is the one new data is written with."""
        text = self._encryption_text()
        if not text:
            text = self._development_secret("encryption.keys", "dev1:")
        return parse_keyring(text, "VS_ENCRYPTION_KEYS")

    def address_key(self) -> bytes:
        """The HMAC key for address and person hashes."""
        text = self._hash_key_text()
        if not text:
            text = self._development_secret("address-hash.key", "")
        return _decode_key(text, "VS_ADDRESS_HASH_KEY")

    def _development_secret(self, filename: str, prefix: str) -> str:
        """Create (once) and read a local key file; only in development and test."""
        if self.environment not in ("development", "test"):
            raise ConfigurationError(f"no key configured for {filename} in {self.environment}")
        path = self.data_dir / "secrets" / filename
        if not path.exists():
            write_new_key_file(path, prefix)
        return path.read_text(encoding="utf-8").strip()


def new_key_text() -> str:
    """A fresh random 256-bit key, base64 encoded."""
    import secrets

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def write_new_key_file(path: Path, prefix: str = "") -> bool:
    """Create a key file readable by the owner only; never overwrites one that exists.

    Returns False when the file was already there (another process may have won the race).
    """
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(prefix + new_key_text() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()``)."""
    return Settings()
