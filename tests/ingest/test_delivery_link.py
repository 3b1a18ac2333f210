"""Every signal belongs to a delivery that exists, on each backend.

SQLite enforces it with a foreign key; PostgreSQL with statement triggers (migration 0009: one
check per upload instead of one per row). Both must refuse a signal of an unknown delivery,
delete a delivery's signals with it, and (PostgreSQL) keep a delivery from being deleted while
another transaction is storing signals of it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.ingest.partners import add_partner
from services.ingest.service import ingest_with_retry
from shared.context import Context
from shared.db import make_engine, unit_of_work
from shared.models import Delivery, Partner, Signal
from tests.helpers import csv_file, row


def _delivered(ctx: Context, rows: int = 3) -> uuid.UUID:
    with unit_of_work(ctx.sessions) as session:
        add_partner(session, name="Woonstichting Stroom", kind="huur", now=ctx.now())
        partner = session.scalar(sa.select(Partner).where(Partner.name == "Woonstichting Stroom"))
        assert partner is not None
    content = csv_file(*[row(ref=f"R{i}", nummer=str(i + 1)) for i in range(rows)])
    outcome = ingest_with_retry(ctx, partner_id=partner.id, content=content, filename="a.csv")
    return outcome.delivery.id


def _copy_of_signal(session: sa.orm.Session, delivery_id: uuid.UUID) -> dict[str, object]:
    signal = session.scalars(sa.select(Signal).where(Signal.delivery_id == delivery_id)).first()
    assert signal is not None
    values = {c.key: getattr(signal, c.key) for c in sa.inspect(Signal).column_attrs}
    values.pop("id")
    values["row_number"] = 10_000
    return values


def _signal_count(ctx: Context, delivery_id: uuid.UUID) -> int:
    with ctx.sessions() as session:
        counted = session.scalar(
            sa.select(sa.func.count()).select_from(Signal).where(Signal.delivery_id == delivery_id)
        )
        return int(counted or 0)


def test_a_signal_of_an_unknown_delivery_is_refused(ctx: Context) -> None:
    delivery_id = _delivered(ctx)
    with ctx.sessions() as session:
        values = _copy_of_signal(session, delivery_id)
        values["delivery_id"] = uuid.uuid4()
        with pytest.raises(IntegrityError):
            session.execute(sa.insert(Signal), [values])
        session.rollback()
    assert _signal_count(ctx, delivery_id) == 3


def test_many_signals_with_one_unknown_delivery_are_refused_together(ctx: Context) -> None:
    delivery_id = _delivered(ctx)
    with ctx.sessions() as session:
        good = _copy_of_signal(session, delivery_id)
        bad = dict(good, delivery_id=uuid.uuid4(), row_number=10_001)
        with pytest.raises(IntegrityError):
            session.execute(sa.insert(Signal), [good, bad])
        session.rollback()
    assert _signal_count(ctx, delivery_id) == 3


def test_deleting_a_delivery_deletes_its_signals(ctx: Context) -> None:
    kept = _delivered(ctx)
    with unit_of_work(ctx.sessions) as session:
        other = _copy_of_signal(session, kept)
        first = session.get(Delivery, kept)
        assert first is not None
        second = Delivery(
            partner_id=first.partner_id,
            period=first.period,
            status="superseded",
            file_format=first.file_format,
            content_sha256="0" * 64,
            size_bytes=1,
            row_count=1,
        )
        session.add(second)
        session.flush()
        session.execute(sa.insert(Signal), [dict(other, delivery_id=second.id)])
    assert _signal_count(ctx, second.id) == 1
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.delete(Delivery).where(Delivery.id == second.id))
    assert _signal_count(ctx, second.id) == 0
    assert _signal_count(ctx, kept) == 3


def test_a_signal_keeps_its_delivery(ctx: Context) -> None:
    delivery_id = _delivered(ctx)
    with ctx.sessions() as session:
        with pytest.raises(IntegrityError):
            session.execute(
                sa.update(Signal)
                .where(Signal.delivery_id == delivery_id)
                .values(delivery_id=uuid.uuid4())
            )
        session.rollback()
    assert _signal_count(ctx, delivery_id) == 3


def test_a_delivery_is_not_deleted_while_its_signals_are_being_stored(
    ctx: Context, database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks across connections: PostgreSQL only (SQLite locks the database)")
    delivery_id = _delivered(ctx)
    with ctx.sessions() as writer:
        writer.execute(sa.insert(Signal), [_copy_of_signal(writer, delivery_id)])
        # The writer's transaction is open: its check holds the delivery, as a foreign key would.
        engine = make_engine(database_url)
        try:
            with engine.connect() as other:
                other.execute(sa.text("SET lock_timeout = '300ms'"))
                with pytest.raises(DBAPIError, match="lock timeout"):
                    other.execute(sa.delete(Delivery).where(Delivery.id == delivery_id))
                other.rollback()
        finally:
            engine.dispose()
        writer.commit()
    assert _signal_count(ctx, delivery_id) == 4
