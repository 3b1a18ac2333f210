"""The audit trail's hash chain: intact when untouched; a change, removal or swap is found."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shared import audit
from shared.context import Context
from shared.db import unit_of_work
from shared.models import AuditEvent


def _trail(ctx: Context, n: int = 5) -> None:
    with unit_of_work(ctx.sessions) as session:
        for i in range(n):
            audit.record(
                session, action="case.read", now=ctx.now(), object_type="case", object_id=i
            )


def _verify(ctx: Context) -> tuple[int, audit.Break | None]:
    with ctx.sessions() as session:
        return audit.verify(session)


def test_an_untouched_trail_verifies(ctx: Context) -> None:
    _trail(ctx)
    assert _verify(ctx) == (5, None)


def test_a_changed_event_is_found(ctx: Context) -> None:
    _trail(ctx)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.update(AuditEvent).where(AuditEvent.id == 3).values(object_id="99"))
    _, broken = _verify(ctx)
    assert broken == audit.Break(3, "its content was changed")


def test_a_removed_event_is_found(ctx: Context) -> None:
    _trail(ctx)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.delete(AuditEvent).where(AuditEvent.id == 2))
    _, broken = _verify(ctx)
    assert broken is not None
    assert broken.event_id == 3


def test_swapped_contents_are_found(ctx: Context) -> None:
    _trail(ctx)
    with unit_of_work(ctx.sessions) as session:
        # Swap the content of two events, keeping ids and hashes: the chain no longer matches.
        first = session.get(AuditEvent, 2)
        second = session.get(AuditEvent, 4)
        assert first is not None
        assert second is not None
        first.object_id, second.object_id = second.object_id, first.object_id
    _, broken = _verify(ctx)
    assert broken is not None
    assert broken.event_id == 2


def test_events_hold_no_personal_data_fields(ctx: Context) -> None:
    columns = {c.name for c in AuditEvent.__table__.columns}
    assert columns.isdisjoint({"achternaam", "postcode", "bsn", "email", "telefoon"})


def test_an_event_is_refused_outside_a_transaction(ctx: Context) -> None:
    """The chain's lock lasts as long as the transaction: a read-only request's session (in
    autocommit on PostgreSQL) cannot append, so two writers can never both extend the same last
    event. On SQLite a read's session is the usual one, and appends."""
    with ctx.read_sessions() as session:
        if ctx.engine.dialect.name == "postgresql":
            with pytest.raises(RuntimeError, match="in a transaction"):
                audit.record(session, action="case.read", now=ctx.now())
        else:
            audit.record(session, action="case.read", now=ctx.now())
            session.commit()
    assert _verify(ctx) == ((0, None) if ctx.engine.dialect.name == "postgresql" else (1, None))
