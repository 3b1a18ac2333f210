"""Each period's signalled addresses, for the recidive rule (``signalled_addresses``).

The national monitor calls a case *opeenvolgend* when its address had a signal in the previous
six months, whether or not that signal made a case (a single energy signal in May makes the
August case at that address recurrent). The run needs, for the addresses of its cases, whether
any earlier period's signals were about them.

A period's addresses are kept as one set (:class:`shared.models.SignalledAddresses`): the first
64 bits of each address hash, unique and sorted, as one Arrow IPC column. Two different addresses
share those bits with a chance of one in 2^64 per pair: at national scale (a month's 250,000
cases against six months of 877,000 addresses) about one false match in a million years of
monthly runs. The set is written by the period's monthly run (and again by a rerun).

A period in the window without a usable set (run before migration 0021; its set made with an
address hash key since rotated; a set that cannot be read) gets one built from its signals, if
none of their addresses can have been purged yet: every delivery of the period was received
after the purge's cutoff for signals without a case (``VS_RETENTION_MONTHS``). A monthly run
keeps what it builds; a crisis run only uses it (it writes nothing but its cases). A period whose
addresses may be partly purged is left out: the run's figures name the periods it looked at
(``recidive_periods``), so a shorter look-back shows.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import polars as pl
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.matcher.repository import period_signals
from services.matcher.rules import ADDRESS_KEY
from shared.bulk import dialect_insert, is_postgres
from shared.crypto import KeyedHasher
from shared.db import utcnow
from shared.models import Delivery, DeliveryStatus, SignalledAddresses
from shared.periods import Period

_COLUMN = "address_key"
_REPLACED = ("address_count", "address_keys", "hash_key_check", "created_at")

log = logging.getLogger("vroegsignaal.matcher")


def key_check(hasher: KeyedHasher) -> str:
    """A mark of the address hash key, not the key: which key made a set."""
    return hasher.hash("signalled-addresses", "key check")[:16]


def address_keys(hashes: pl.Series) -> pl.Series:
    """The set of address keys of these address hashes (nulls left out), sorted."""
    frame = hashes.rename("address_hash").to_frame().drop_nulls()
    return frame.select(ADDRESS_KEY.alias(_COLUMN)).to_series().unique().sort()


def encode(keys: pl.Series) -> bytes:
    buffer = io.BytesIO()
    keys.rename(_COLUMN).to_frame().write_ipc(buffer, compression="uncompressed")
    return buffer.getvalue()


def decode(blob: bytes) -> pl.Series | None:
    """The keys :func:`encode` wrote, or None for bytes it did not write."""
    try:
        keys = pl.read_ipc(io.BytesIO(blob)).to_series()
    except Exception:  # Polars' own errors for bytes that are not Arrow IPC
        return None
    return keys if keys.name == _COLUMN and keys.dtype == pl.UInt64 else None


def store(
    session: Session, period: str, hashes: pl.Series, *, check: str, intact_since: datetime
) -> int | None:
    """Keep the period's set of addresses (its monthly run's signals), replacing an earlier one;
    returns its size. Not when some of the period's addresses may have been purged already
    (a rerun months later: :func:`_intact`): the set kept before stays; returns None."""
    if not _intact(session, period, period, intact_since).get(period, True):
        return None
    keys = address_keys(hashes)
    _keep(session, period, keys, check)
    return keys.len()


def _intact(session: Session, first: str, period: str, since: datetime) -> dict[str, bool]:
    """For each period in ``[first, period]`` with accepted deliveries: whether all of them were
    received on or after ``since`` (the purge's cutoff for signals without a case), so that none
    of their addresses has been removed."""
    received = session.execute(
        select(Delivery.period, func.min(Delivery.received_at))
        .where(
            Delivery.period >= first,
            Delivery.period <= period,
            Delivery.status == DeliveryStatus.accepted,
        )
        .group_by(Delivery.period)
    ).all()
    return {p: earliest >= since for p, earliest in received}


def _keep(session: Session, period: str, keys: pl.Series, check: str) -> None:
    """Insert or replace the period's set. Two monthly runs may build an earlier period's set at
    once (on PostgreSQL the second waits for the first's commit, then writes the same set)."""
    insert = dialect_insert(session)
    statement = insert(SignalledAddresses).values(
        period=period,
        address_count=keys.len(),
        address_keys=encode(keys),
        hash_key_check=check,
        created_at=utcnow(),
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[SignalledAddresses.period],
            set_={c: statement.excluded[c] for c in _REPLACED},
        )
    )


@dataclass
class Earlier:
    """The addresses signalled in the earlier periods of a run's window (:func:`by_period`), and
    which periods were looked at."""

    frame: pl.DataFrame
    periods: list[str]


def by_period(sets: Mapping[str, pl.Series]) -> pl.DataFrame:
    """Each period's keys with the period (``address_key``, ``period``: a key signalled in two
    periods is there twice), for :func:`services.matcher.rules.link_recidive`. The period is an
    Enum of the periods in order: a byte a key, not a text (six months at national scale are
    5.3 million keys)."""
    periods = pl.Enum(sorted(sets))
    frames = [
        keys.rename(_COLUMN).to_frame().with_columns(pl.lit(period, dtype=periods).alias("period"))
        for period, keys in sorted(sets.items())
    ]
    if not frames:
        return pl.DataFrame(schema={_COLUMN: pl.UInt64, "period": periods})
    return pl.concat(frames)


def before(
    session: Session,
    first: str,
    period: str,
    *,
    check: str,
    intact_since: datetime,
    keep: bool,
) -> Earlier:
    """The keys of the addresses signalled in the periods ``[first, period)``. A period there
    with accepted deliveries but no usable set gets one from its signals when all its deliveries
    were received after ``intact_since`` (the purge's cutoff: none of their addresses removed);
    with ``keep`` (the monthly run) it is stored, and a stored set that can be neither used nor
    built again is deleted. See the module docstring."""
    sets: dict[str, pl.Series] = {}
    unusable: list[str] = []
    for stored_period, stored_check, blob in _stored(session, first, period):
        keys = decode(blob) if stored_check == check else None
        if keys is None:
            # No personal data: the period, and which of the two it was.
            why = "another address hash key" if stored_check != check else "unreadable"
            log.warning(
                "set of signalled addresses not used",
                extra={"period": stored_period, "reason": why},
            )
            unusable.append(stored_period)
            continue
        sets[stored_period] = keys
    last = Period.parse(period).shift(-1)
    for missing, intact in sorted(_intact(session, first, str(last), intact_since).items()):
        if missing in sets or not intact:
            continue
        keys = address_keys(period_signals(session, missing)["address_hash"])
        if keep:
            _keep(session, missing, keys, check)
        sets[missing] = keys
    stale = [p for p in unusable if p not in sets]
    if keep and stale:
        # Matching nothing and not to be built again: gone, so the warning is not repeated.
        session.execute(delete(SignalledAddresses).where(SignalledAddresses.period.in_(stale)))
    return Earlier(by_period(sets), sorted(sets))


def _stored(session: Session, first: str, period: str) -> list[tuple[str, str, bytes]]:
    """The stored sets of the periods ``[first, period)``. On PostgreSQL fetched in the binary
    format: as text each byte comes as two hex digits, for the client to turn back (six sets
    of 7 MB, 0.26 against 0.09 s in a trial)."""
    if not is_postgres(session):
        query = select(
            SignalledAddresses.period,
            SignalledAddresses.hash_key_check,
            SignalledAddresses.address_keys,
        ).where(SignalledAddresses.period >= first, SignalledAddresses.period < period)
        return [(p, c, bytes(b)) for p, c, b in session.execute(query).all()]
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor(binary=True) as cursor:
        cursor.execute(
            "SELECT period, hash_key_check, address_keys FROM signalled_addresses "
            "WHERE period >= %s AND period < %s",
            (first, period),
        )
        return [(p, c, bytes(b)) for p, c, b in cursor.fetchall()]


def purge_before(session: Session, edge: Period, *, dry_run: bool = False) -> int:
    """Delete the sets of periods before ``edge`` (no run looks them up any more); returns how
    many."""
    old = SignalledAddresses.period < str(edge)
    count = len(session.scalars(select(SignalledAddresses.period).where(old)).all())
    if count and not dry_run:
        session.execute(delete(SignalledAddresses).where(old))
    return count
