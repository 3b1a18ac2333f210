"""Registering partners and managing their API keys and client certificates."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest import repository
from shared.auth import certificate_fingerprint, new_api_key, normalise_fingerprint
from shared.crypto import PARTNER_KEY_PREFIX
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import ApiKey, Partner, PartnerCertificate, PartnerKind


@dataclass(frozen=True)
class NewKey:
    """A key just issued: ``secret`` is shown to the user once and never stored."""

    partner: Partner
    key: ApiKey
    secret: str


def add_partner(session: Session, *, name: str, kind: str, now: datetime) -> NewKey:
    """Register a partner and issue its first API key."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationFailed("a partner name is 1 to 200 characters")
    try:
        partner_kind = PartnerKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in PartnerKind)
        raise ValidationFailed(f"kind must be one of: {kinds}") from None
    if repository.partner_by_name(session, name) is not None:
        raise Conflict("a partner with this name exists already")
    partner = Partner(id=uuid.uuid4(), name=name, kind=partner_kind.value, created_at=now)
    session.add(partner)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("a partner with this name exists already") from None
    return new_partner_key(session, partner, now=now, label="initial")


def find_partner(session: Session, ref: str) -> Partner:
    """A partner by id or by exact name."""
    partner = None
    with contextlib.suppress(ValueError):
        partner = repository.partner_by_id(session, uuid.UUID(ref))
    partner = partner or repository.partner_by_name(session, ref)
    if partner is None:
        raise NotFound("no such partner")
    return partner


def new_partner_key(
    session: Session, partner: Partner, *, now: datetime, label: str | None = None
) -> NewKey:
    """Issue another key for a partner (for rotation: issue, switch over, revoke the old one)."""
    key, secret = new_api_key(
        session, prefix=PARTNER_KEY_PREFIX, now=now, label=label, partner_id=partner.id
    )
    return NewKey(partner=partner, key=key, secret=secret)


def revoke_key(session: Session, key_id: str, *, now: datetime) -> ApiKey:
    """Revoke a key by its public id (the part after the prefix); idempotent."""
    key = repository.api_key_by_key_id(session, key_id)
    if key is None:
        raise NotFound("no such key")
    if key.revoked_at is None:
        key.revoked_at = now
        session.flush()
    return key


def read_certificate(pem: bytes, now: datetime) -> x509.Certificate:
    """The one certificate in a PEM file; ValidationFailed for anything else.

    Refused: no certificate, several (a chain: give the partner's own certificate only), a CA
    certificate, and one that has expired.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValidationFailed(
            "not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ) from None
    if len(certificates) != 1:
        raise ValidationFailed(
            f"the file holds {len(certificates)} certificates; give only the partner's own"
        )
    certificate = certificates[0]
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        pass
    else:
        if constraints.value.ca:
            raise ValidationFailed(
                "this is a CA certificate; register the partner's own (client) certificate"
            )
    if certificate.not_valid_after_utc <= now:
        raise ValidationFailed("the certificate has expired")
    return certificate


def add_certificate(
    session: Session, partner: Partner, pem: bytes, *, label: str | None, now: datetime
) -> PartnerCertificate:
    """Register a client certificate for a partner (mutual TLS through the proxy).

    Only the SHA-256 fingerprint of its DER encoding is stored. A certificate belongs to one
    partner; registering it again (even a revoked one) is a Conflict.
    """
    if label is not None and len(label) > 200:
        raise ValidationFailed("a label is at most 200 characters")
    fingerprint = certificate_fingerprint(read_certificate(pem, now))
    if repository.certificate_by_fingerprint(session, fingerprint) is not None:
        raise Conflict("this certificate is registered already")
    record = PartnerCertificate(
        id=uuid.uuid4(),
        partner_id=partner.id,
        fingerprint=fingerprint,
        label=label,
        created_at=now,
    )
    session.add(record)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("this certificate is registered already") from None
    return record


def revoke_certificate(
    session: Session, partner: Partner, fingerprint: str, *, now: datetime
) -> PartnerCertificate:
    """Revoke one of the partner's certificates by its SHA-256 fingerprint (colons and upper case
    accepted); idempotent. Another partner's certificate is NotFound."""
    normalised = normalise_fingerprint(fingerprint)
    if normalised is None:
        raise ValidationFailed("a fingerprint is the SHA-256 of the certificate: 64 hex digits")
    record = repository.certificate_by_fingerprint(session, normalised)
    if record is None or record.partner_id != partner.id:
        raise NotFound("no such certificate for this partner")
    if record.revoked_at is None:
        record.revoked_at = now
        session.flush()
    return record
