"""SQL for partners, keys, deliveries and signals. Object-level access lives in these queries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from shared.bulk import FrameWriter, frame_writer, is_postgres
from shared.ids import signal_block_after, signal_id_range
from shared.models import (
    SIGNAL_BLOCKS,
    ApiKey,
    Delivery,
    DeliveryStatus,
    Partner,
    PartnerCertificate,
    Signal,
)

SIGNAL_COLUMNS = (
    "id",
    "delivery_id",
    "partner_id",
    "period",
    "row_number",
    "kind",
    "address_hash",
    "person_hash",
    "pc4",
    "pc6_hash",
    "bedrag_cent",
    "achterstand_sinds",
    "signaaldatum",
    "crisis",
    "warme_overdracht",
    "eindelevering",
    "pii",
    "pii_key_id",
    "created_at",
)


def partner_by_id(session: Session, partner_id: uuid.UUID) -> Partner | None:
    return session.get(Partner, partner_id)


def partner_by_name(session: Session, name: str) -> Partner | None:
    return session.scalars(select(Partner).where(Partner.name == name)).first()


def list_partners(session: Session) -> Sequence[Partner]:
    return session.scalars(select(Partner).order_by(Partner.name)).all()


def api_key_by_key_id(session: Session, key_id: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).first()


def keys_of_partner(session: Session, partner_id: uuid.UUID) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey).where(ApiKey.partner_id == partner_id).order_by(ApiKey.created_at)
    ).all()


def certificate_by_fingerprint(session: Session, fingerprint: str) -> PartnerCertificate | None:
    return session.scalars(
        select(PartnerCertificate).where(PartnerCertificate.fingerprint == fingerprint)
    ).first()


def certificates_of_partner(
    session: Session, partner_id: uuid.UUID
) -> Sequence[PartnerCertificate]:
    return session.scalars(
        select(PartnerCertificate)
        .where(PartnerCertificate.partner_id == partner_id)
        .order_by(PartnerCertificate.created_at, PartnerCertificate.id)
    ).all()


def current_delivery(session: Session, partner_id: uuid.UUID, period: str) -> Delivery | None:
    """The partner's delivery that counts for the period, if any."""
    return session.scalars(
        select(Delivery).where(
            Delivery.partner_id == partner_id,
            Delivery.period == period,
            Delivery.status == DeliveryStatus.accepted,
        )
    ).first()


def recent_delivery_of_file(
    session: Session, partner_id: uuid.UUID, content_sha256: str, since: datetime
) -> Delivery | None:
    """The partner's current delivery of the same file received since ``since``, the newest."""
    return session.scalars(
        select(Delivery)
        .where(
            Delivery.partner_id == partner_id,
            Delivery.content_sha256 == content_sha256,
            Delivery.status == DeliveryStatus.accepted,
            Delivery.received_at >= since,
        )
        .order_by(Delivery.received_at.desc())
    ).first()


def supersede(session: Session, delivery: Delivery, at: datetime) -> bool:
    """Mark a current delivery superseded; False when another writer got there first."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.status == DeliveryStatus.accepted)
        .values(status=DeliveryStatus.superseded, superseded_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def link_successor(session: Session, old_id: uuid.UUID, new_id: uuid.UUID) -> None:
    """Record which delivery replaced an older one (after the new one is flushed)."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == old_id)
        .values(superseded_by_id=new_id)
        .execution_options(synchronize_session=False)
    )


def deliveries_of_partner(
    session: Session, partner_id: uuid.UUID, *, period: str | None, limit: int, offset: int
) -> Sequence[Delivery]:
    query = select(Delivery).where(Delivery.partner_id == partner_id)
    if period:
        query = query.where(Delivery.period == period)
    query = query.order_by(Delivery.received_at.desc(), Delivery.status, Delivery.id)
    query = query.limit(limit).offset(offset)
    return session.scalars(query).all()


def delivery_of_partner(
    session: Session, partner_id: uuid.UUID, delivery_id: uuid.UUID
) -> Delivery | None:
    """A delivery only if it belongs to the partner: another partner's id is simply not found."""
    return session.scalars(
        select(Delivery).where(Delivery.id == delivery_id, Delivery.partner_id == partner_id)
    ).first()


def assign_signal_block(session: Session, delivery: Delivery) -> int:
    """Give a new delivery (already flushed) its block of signal ids (``shared.ids``); returns
    the first id: a signal's id is that plus its row.

    PostgreSQL draws the block's number from its sequence. SQLite has none: the block after the
    highest in use, read after the delivery's own insert, which holds the database's write lock
    until the commit, so that two uploads cannot take the same block.
    """
    if is_postgres(session):
        block = int(session.execute(select(SIGNAL_BLOCKS.next_value())).scalar_one())
    else:
        # The delivery's own range is still empty (NULL), which max() passes over.
        highest = session.execute(select(func.max(Delivery.last_signal_id))).scalar_one()
        block = signal_block_after(highest)
    delivery.first_signal_id, delivery.last_signal_id = signal_id_range(block)
    return delivery.first_signal_id


@contextmanager
def signal_writer(session: Session) -> Iterator[FrameWriter]:
    """Bulk insert of signals, a batch per call, into one COPY on PostgreSQL (see
    :func:`shared.bulk.frame_writer`); never one ORM object per row."""
    with frame_writer(
        session,
        cast(Table, Signal.__table__),
        SIGNAL_COLUMNS,
        uuid_columns=("delivery_id", "partner_id"),
    ) as write:
        yield write
