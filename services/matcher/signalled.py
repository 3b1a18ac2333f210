"""Each period's signalled addresses, for the recidive rule (``signalled_addresses``).

The national monitor calls a case *opeenvolgend* when its address had a signal in the previous
six months, whether or not that signal made a case (a single energy signal in May makes the
August case at that address recurrent). The run needs, for the addresses of its cases, whether
any earlier period's signals were about them.

A period's addresses are kept as one set (:class:`shared.models.SignalledAddresses`): the first
64 bits of each address hash, unique and sorted, as one Arrow IPC column. Two different addresses
share those bits with a chance of one in 2^64 per pair: at national scale (a month's 250,000
cases against six months of 877,000 addresses) about one false match in a million years of
monthly runs. The set is written by the period's monthly run (and again by a rerun). A period in
the window without a set (before migration 0021, or after the address hash key was rotated and
the sets deleted) gets one built from its signals the first time a run needs it, and kept; not a
period beyond the retention edge, whose addresses the purge has removed.
"""

from __future__ import annotations

import io

import polars as pl
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.matcher.repository import period_signals
from services.matcher.rules import ADDRESS_KEY
from shared.bulk import is_postgres
from shared.db import utcnow
from shared.models import Delivery, DeliveryStatus, SignalledAddresses
from shared.periods import Period

_COLUMN = "address_key"
_REPLACED = ("address_count", "address_keys", "created_at")


def address_keys(hashes: pl.Series) -> pl.Series:
    """The set of address keys of these address hashes (nulls left out), sorted."""
    frame = hashes.rename("address_hash").to_frame().drop_nulls()
    return frame.select(ADDRESS_KEY.alias(_COLUMN)).to_series().unique().sort()


def encode(keys: pl.Series) -> bytes:
    buffer = io.BytesIO()
    keys.rename(_COLUMN).to_frame().write_ipc(buffer, compression="uncompressed")
    return buffer.getvalue()


class UnreadableSet(ValueError):
    """A stored set that is not one :func:`encode` wrote."""

    def __init__(self, period: str) -> None:
        super().__init__(
            f"the set of signalled addresses of {period} cannot be read; delete its row of "
            "signalled_addresses and the next run builds it again from the period's signals"
        )


def decode(blob: bytes, period: str = "a period") -> pl.Series:
    try:
        keys = pl.read_ipc(io.BytesIO(blob)).to_series()
    except Exception as exc:  # Polars' own errors for bytes that are not Arrow IPC
        raise UnreadableSet(period) from exc
    if keys.name != _COLUMN or keys.dtype != pl.UInt64:
        raise UnreadableSet(period)
    return keys


def store(session: Session, period: str, hashes: pl.Series) -> int:
    """Keep the period's set of addresses (its monthly run's signals), replacing an earlier one;
    returns its size."""
    keys = address_keys(hashes)
    _keep(session, period, keys, replace=True)
    return keys.len()


def _build(session: Session, period: str) -> pl.Series:
    """A period's set from its signals (its partners' current deliveries), kept for later runs.
    Two runs may build the same period at once (a monthly run and a crisis run of the next
    period): the first one's set is kept, the same."""
    keys = address_keys(period_signals(session, period)["address_hash"])
    _keep(session, period, keys, replace=False)
    return keys


def _keep(session: Session, period: str, keys: pl.Series, *, replace: bool) -> None:
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    statement = insert(SignalledAddresses).values(
        period=period, address_count=keys.len(), address_keys=encode(keys), created_at=utcnow()
    )
    key = [SignalledAddresses.period]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=key, set_={c: statement.excluded[c] for c in _REPLACED}
        )
        if replace
        else statement.on_conflict_do_nothing(index_elements=key)
    )


def before(session: Session, first: str, period: str, *, build_from: str) -> pl.Series:
    """The address keys signalled in the periods ``[first, period)``, each period's once (a key
    signalled in two periods is there twice); a period there without a set, from ``build_from``
    on, gets one from its signals (:func:`_build`)."""
    stored = _stored(session, first, period)
    sets = [decode(blob, p) for p, blob in stored]
    delivered = session.scalars(
        select(Delivery.period)
        .distinct()
        .where(
            Delivery.period >= max(first, build_from),
            Delivery.period < period,
            Delivery.status == DeliveryStatus.accepted,
        )
    ).all()
    have = {p for p, _ in stored}
    sets += [_build(session, p) for p in sorted(set(delivered) - have)]
    if not sets:
        return pl.Series(_COLUMN, [], dtype=pl.UInt64)
    return pl.concat(sets)


def _stored(session: Session, first: str, period: str) -> list[tuple[str, bytes]]:
    """The stored sets of the periods ``[first, period)``. On PostgreSQL fetched in the binary
    format: as text each byte comes as two hex digits, for the client to turn back (six sets
    of 7 MB, 0.26 against 0.09 s in a trial)."""
    if not is_postgres(session):
        query = select(SignalledAddresses.period, SignalledAddresses.address_keys).where(
            SignalledAddresses.period >= first, SignalledAddresses.period < period
        )
        return [(p, bytes(b)) for p, b in session.execute(query).all()]
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor(binary=True) as cursor:
        cursor.execute(
            "SELECT period, address_keys FROM signalled_addresses "
            "WHERE period >= %s AND period < %s",
            (first, period),
        )
        return [(p, bytes(b)) for p, b in cursor.fetchall()]


def purge_before(session: Session, edge: Period, *, dry_run: bool = False) -> int:
    """Delete the sets of periods before ``edge`` (no run looks them up any more); returns how
    many."""
    old = SignalledAddresses.period < str(edge)
    count = len(session.scalars(select(SignalledAddresses.period).where(old)).all())
    if count and not dry_run:
        session.execute(delete(SignalledAddresses).where(old))
    return count
