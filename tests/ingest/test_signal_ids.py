"""Signals' ids: a block per delivery (``shared.ids``, migration 0018).

A delivery's signals are found in its range of ids (``shared.models.signal_in_delivery``), with no
index by delivery: each takes ``first_signal_id + row``; blocks never overlap; a file longer than a
block is refused; and signals stored before the migration, whose ids were drawn per row by uploads
side by side, are still found by their own delivery, and only by it.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
import sqlalchemy as sa

from services.ingest import service
from services.ingest.partners import add_partner
from services.ingest.service import ingest_with_retry
from services.matcher.repository import (
    period_signals,
    signal_ranges_condition,
    signals_in_ranges,
)
from shared import migrate
from shared.context import Context
from shared.db import unit_of_work
from shared.errors import ValidationFailed
from shared.ids import (
    ROWS_PER_DELIVERY,
    SIGNAL_BLOCK_BITS,
    owns_block,
    signal_block_after,
    signal_id_range,
)
from shared.models import Delivery, Partner, Signal, signal_in_delivery
from tests.helpers import csv_file, row


def _partner(ctx: Context, name: str) -> uuid.UUID:
    with unit_of_work(ctx.sessions) as session:
        add_partner(session, name=name, kind="huur", now=ctx.now())
        found = session.scalar(sa.select(Partner.id).where(Partner.name == name))
        assert found is not None
        return found


def _upload(ctx: Context, partner: uuid.UUID, rows: int, start: int = 0) -> uuid.UUID:
    content = csv_file(*[row(ref=f"R{i}", nummer=str(i + 1)) for i in range(start, start + rows)])
    outcome = ingest_with_retry(ctx, partner_id=partner, content=content, filename="a.csv")
    return outcome.delivery.id


def _found(ctx: Context, delivery_id: uuid.UUID) -> list[tuple[int, int]]:
    """(id, row) of the signals ``signal_in_delivery`` finds for the delivery."""
    with ctx.sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        query = sa.select(Signal.id, Signal.row_number).where(signal_in_delivery(delivery))
        return sorted((i, r) for i, r in session.execute(query).all())


def _found_by_the_run(ctx: Context, delivery_id: uuid.UUID) -> list[tuple[int, int]]:
    """(id, row) of the delivery's signals as the run reads them on PostgreSQL, the same both
    ways (:func:`signals_in_ranges` and :func:`signal_ranges_condition`)."""
    with ctx.sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        ranges = [(delivery.id, delivery.first_signal_id, delivery.last_signal_id)]
        ways = (
            f"SELECT s.id, s.row_number FROM {signals_in_ranges(ranges)}",
            f"SELECT s.id, s.row_number FROM signals s WHERE {signal_ranges_condition(ranges)}"
            " AND s.address_hash IS NOT NULL",
        )
        found = [sorted(tuple(r) for r in session.execute(sa.text(way)).all()) for way in ways]
    assert found[0] == found[1]
    return found[0]


def _stored(ctx: Context, delivery_id: uuid.UUID) -> list[tuple[int, int]]:
    """(id, row) of the delivery's signals, found by a plain scan."""
    with ctx.sessions() as session:
        query = sa.select(Signal.id, Signal.row_number).where(Signal.delivery_id == delivery_id)
        return sorted((i, r) for i, r in session.execute(query).all())


def test_block_arithmetic() -> None:
    assert signal_id_range(1) == (1 << SIGNAL_BLOCK_BITS, (2 << SIGNAL_BLOCK_BITS) - 1)
    assert signal_block_after(None) == 1
    assert signal_block_after((1 << SIGNAL_BLOCK_BITS) - 1) == 1
    assert signal_block_after(1 << SIGNAL_BLOCK_BITS) == 2
    with pytest.raises(ValueError, match="from 1"):
        signal_id_range(0)
    assert owns_block(*signal_id_range(3))
    first, last = signal_id_range(3)
    assert not owns_block(first - 1, last)  # a range kept from before the blocks
    assert not owns_block(first, last - 1)


def test_each_delivery_takes_its_rows_in_a_block_of_its_own(ctx: Context) -> None:
    first = _upload(ctx, _partner(ctx, "Woonstichting A"), 3)
    second = _upload(ctx, _partner(ctx, "Woonstichting B"), 2)
    replaced = _upload(ctx, _partner(ctx, "Woonstichting C"), 2)
    with ctx.sessions() as session:
        partner_c = session.scalar(sa.select(Partner.id).where(Partner.name == "Woonstichting C"))
    assert partner_c is not None
    replacement = _upload(ctx, partner_c, 4, start=10)
    ranges = []
    for delivery_id in (first, second, replaced, replacement):
        with ctx.sessions() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            low, high = delivery.first_signal_id, delivery.last_signal_id
        assert low is not None
        assert high == low + ROWS_PER_DELIVERY
        assert low % (1 << SIGNAL_BLOCK_BITS) == 0
        stored = _stored(ctx, delivery_id)
        assert stored
        assert [i for i, _ in stored] == [low + r for _, r in stored]
        assert _found(ctx, delivery_id) == stored
        ranges.append((low, high))
    ordered = sorted(ranges)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ordered))
    # The month's run reads the current deliveries' signals: each exactly once.
    with ctx.sessions() as session:
        period = session.scalar(sa.select(Delivery.period).where(Delivery.id == first))
        assert period is not None
        month = period_signals(session, period)
    expected = [i for d in (first, second, replacement) for i, _ in _stored(ctx, d)]
    assert sorted(month["signal_id"].to_list()) == sorted(expected)


def test_a_file_longer_than_a_block_is_refused_and_nothing_stored(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = _partner(ctx, "Woonstichting A")
    monkeypatch.setattr(service, "ROWS_PER_DELIVERY", 3)  # rows 2, 3 and 4 of the file
    with pytest.raises(ValidationFailed) as refused:
        _upload(ctx, partner, 3)
    assert "at most 3 rows: split the file" in str(refused.value)
    assert refused.value.problems[0].row == 4
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Signal)) == 0
    monkeypatch.setattr(service, "ROWS_PER_DELIVERY", 4)
    assert len(_stored(ctx, _upload(ctx, partner, 3))) == 3


def test_signals_stored_before_the_migration_are_found_by_their_delivery(
    ctx: Context, database_url: str
) -> None:
    """Before 0018 ids came from a sequence, a row at a time: a delivery's ids could enclose
    another's. After the migration each delivery's range is its smallest to its largest id,
    which may hold the other's signals; the check of ``delivery_id`` leaves those out."""
    first = _upload(ctx, _partner(ctx, "Woonstichting A"), 3)
    second = _upload(ctx, _partner(ctx, "Woonstichting B"), 2)
    aligned_one = _upload(ctx, _partner(ctx, "Woonstichting D"), 2)
    migrate.downgrade(database_url, "0017")
    with unit_of_work(ctx.sessions) as session:
        # A late row of the first delivery, drawn after the second's: its ids now enclose them.
        # The table's columns at that revision (a later one moved some out).
        stored = sa.inspect(session.connection()).get_columns("signals")
        copied = [c["name"] for c in stored if c["name"] not in ("id", "row_number")]
        names = ", ".join(copied)
        session.execute(
            sa.text(
                f"INSERT INTO signals ({names}, row_number) SELECT {names}, 99 FROM signals "
                "WHERE delivery_id = :d AND row_number = 2"
            ),
            {"d": first.hex if database_url.startswith("sqlite") else first},
        )
        # The fourth's two signals moved to ids that span exactly a block's width, from a
        # block's start: a kept range that would look like a whole block of its own.
        aligned = 7 << SIGNAL_BLOCK_BITS
        key = aligned_one.hex if database_url.startswith("sqlite") else aligned_one
        for new_id, new_row in ((aligned, 50), (aligned + ROWS_PER_DELIVERY, 51)):
            session.execute(
                sa.text(
                    f"INSERT INTO signals (id, {names}, row_number) SELECT :i, {names}, :r "
                    "FROM signals WHERE delivery_id = :d AND row_number = 2"
                ),
                {"i": new_id, "r": new_row, "d": key},
            )
        session.execute(
            sa.text("DELETE FROM signals WHERE delivery_id = :d AND row_number < 50"), {"d": key}
        )
    migrate.upgrade(database_url)
    stored_first, stored_second = _stored(ctx, first), _stored(ctx, second)
    assert len(stored_first) == 4
    assert len(stored_second) == 2
    with ctx.sessions() as session:
        widened = session.get(Delivery, aligned_one)
        assert widened is not None
        assert (widened.first_signal_id, widened.last_signal_id) == (
            aligned - 1,
            aligned + ROWS_PER_DELIVERY,
        )
        assert not owns_block(widened.first_signal_id, widened.last_signal_id)
    assert [r for _, r in _found(ctx, aligned_one)] == [50, 51]
    with ctx.sessions() as session:
        delivery = session.get(Delivery, first)
        assert delivery is not None
        assert (delivery.first_signal_id, delivery.last_signal_id) == (
            stored_first[0][0],
            stored_first[-1][0],
        )
        # The second delivery's signals lie inside the first's range ...
        assert delivery.first_signal_id < stored_second[0][0] < delivery.last_signal_id
    # ... and are found only by their own.
    assert _found(ctx, first) == stored_first
    assert _found(ctx, second) == stored_second
    if not database_url.startswith("sqlite"):
        # So too by the run's two ways of reading a month's signals on PostgreSQL (a UNION ALL
        # of the ranges, and the ranges joined by OR for the history's addresses).
        for delivery_id in (first, second, aligned_one):
            assert _found_by_the_run(ctx, delivery_id) == _stored(ctx, delivery_id)
        with ctx.sessions() as session:  # no delivery: no signal, either way
            for way in (
                f"SELECT count(*) FROM {signals_in_ranges([])}",
                f"SELECT count(*) FROM signals s WHERE {signal_ranges_condition([])}",
            ):
                assert session.scalar(sa.text(way)) == 0
    # A new delivery's block lies above every id in use.
    third = _upload(ctx, _partner(ctx, "Woonstichting C"), 2)
    assert min(i for i, _ in _stored(ctx, third)) > aligned + ROWS_PER_DELIVERY
    assert _found(ctx, third) == _stored(ctx, third)
