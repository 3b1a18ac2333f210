"""Registering partners and managing their API keys."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest import repository
from shared.auth import new_api_key
from shared.crypto import PARTNER_KEY_PREFIX
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import ApiKey, Partner, PartnerKind


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
