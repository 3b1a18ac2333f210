"""SSH public keys of partners for the SFTP drop: register, list, revoke, look up at login."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime

import asyncssh
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.auth import CERTIFICATE_KEY_HEX, PARTNER_ROLE, Principal
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Partner, PartnerSshKey

ALLOWED_ALGORITHMS = (b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp384", b"ssh-rsa")
MIN_RSA_BITS = 3072


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA... comment``); ValidationFailed otherwise."""
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise ValidationFailed(
            "not an SSH public key (expected one line like ssh-ed25519 AAAA...)"
        ) from None
    if key.algorithm not in ALLOWED_ALGORITHMS:
        raise ValidationFailed("use an ed25519, ECDSA or RSA (3072 bits or more) key")
    if key.algorithm == b"ssh-rsa":
        bits = int(getattr(getattr(key, "pyca_key", None), "key_size", 0) or 0)
        if bits and bits < MIN_RSA_BITS:
            raise ValidationFailed(f"an RSA key needs at least {MIN_RSA_BITS} bits")
    return key


def add_ssh_key(
    session: Session, partner: Partner, key_text: str, *, label: str | None, now: datetime
) -> PartnerSshKey:
    key = parse_public_key(key_text)
    fingerprint = key.get_fingerprint("sha256")
    if session.scalar(select(PartnerSshKey).where(PartnerSshKey.fingerprint == fingerprint)):
        raise Conflict("this SSH key is registered already")
    record = PartnerSshKey(
        id=uuid.uuid4(),
        partner_id=partner.id,
        fingerprint=fingerprint,
        public_key=" ".join(key.export_public_key("openssh").decode().split()[:2]),
        label=label,
        created_at=now,
    )
    session.add(record)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("this SSH key is registered already") from None
    return record


def find_ssh_key(session: Session, ref: str) -> PartnerSshKey:
    """A key by id or fingerprint."""
    record = None
    with contextlib.suppress(ValueError):
        record = session.get(PartnerSshKey, uuid.UUID(ref))
    record = record or session.scalar(
        select(PartnerSshKey).where(PartnerSshKey.fingerprint == ref.strip())
    )
    if record is None:
        raise NotFound("no such SSH key")
    return record


def revoke_ssh_key(session: Session, ref: str, *, now: datetime) -> PartnerSshKey:
    record = find_ssh_key(session, ref)
    if record.revoked_at is None:
        record.revoked_at = now
        session.flush()
    return record


def keys_of_partner(session: Session, partner_id: uuid.UUID) -> list[PartnerSshKey]:
    return list(
        session.scalars(
            select(PartnerSshKey)
            .where(PartnerSshKey.partner_id == partner_id)
            .order_by(PartnerSshKey.created_at)
        )
    )


def ssh_key_id(fingerprint: str) -> str:
    """A key's public id in the audit trail (``ssh:`` and the start of its SHA-256 fingerprint),
    as a certificate's is ``cert:`` and an API key's its own id."""
    return "ssh:" + fingerprint.removeprefix("SHA256:")[:CERTIFICATE_KEY_HEX]


def partner_for_key(session: Session, fingerprint: str) -> Principal | None:
    """The active partner a presented key belongs to, or None (an unknown or revoked key, an
    inactive partner). Its use is recorded only once the login succeeds (:func:`record_key_use`):
    a client may ask whether a key would do without proving it holds the private half."""
    row = session.execute(
        select(PartnerSshKey.id, PartnerSshKey.partner_id, PartnerSshKey.revoked_at, Partner.active)
        .join(Partner, Partner.id == PartnerSshKey.partner_id)
        .where(PartnerSshKey.fingerprint == fingerprint)
    ).first()
    if row is None:
        return None
    key_id, partner_id, revoked_at, active = row
    if revoked_at is not None or not active:
        return None
    return Principal(key_id, ssh_key_id(fingerprint), PARTNER_ROLE, partner_id=partner_id)


def record_key_use(session: Session, fingerprint: str, now: datetime) -> None:
    """A login with this key succeeded: its last use is now."""
    session.execute(
        update(PartnerSshKey)
        .where(PartnerSshKey.fingerprint == fingerprint)
        .values(last_used_at=now)
    )
