"""The foreign keys of the bulk-written tables, on each backend.

SQLite enforces them as constraints; PostgreSQL with statement triggers (migration 0009: one
check per statement instead of one per row, with row locks on the parents, or a table lock when
a statement refers to more than ``ESCALATE_ABOVE`` of them). Both must refuse a reference to a
missing parent, cascade or refuse deletes as declared, and keep a parent from being
deleted or changed while another transaction is storing rows that refer to it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.ingest.partners import add_partner
from services.ingest.service import ingest_with_retry
from services.matcher.service import run_period
from shared.context import Context
from shared.db import make_engine, unit_of_work
from shared.ids import time_ordered_uuids
from shared.models import Case, CaseEvent, CaseSignal, Delivery, Partner, Run, Signal, Team
from tests.conftest import Clock, _backends
from tests.helpers import csv_file, register, row

# Migration 0009: above this many distinct parents in one statement, PostgreSQL locks the
# parent table instead of each parent row.
ESCALATE_ABOVE = 10_000


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
    # Row 10,000 of the same delivery: its id in the delivery's block (shared.ids).
    values["id"] = signal.id - signal.row_number + 10_000
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
        bad = dict(good, id=int(good["id"]) + 1, delivery_id=uuid.uuid4(), row_number=10_001)  # type: ignore[call-overload]
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


def test_a_delivery_keeps_its_id(ctx: Context) -> None:
    delivery_id = _delivered(ctx)
    with ctx.sessions() as session:
        with pytest.raises(IntegrityError):
            session.execute(
                sa.update(Delivery).where(Delivery.id == delivery_id).values(id=uuid.uuid4())
            )
        session.rollback()
    assert _signal_count(ctx, delivery_id) == 3


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


def _refused_while_held(database_url: str, statement: sa.Executable) -> None:
    """Another connection's ``statement`` waits for the open transaction and gives up: on
    PostgreSQL at the parent's lock (``lock_timeout``), on SQLite at the database's write lock."""
    postgres = database_url.startswith("postgresql")
    engine = (
        make_engine(database_url)
        if postgres
        else sa.create_engine(database_url, connect_args={"timeout": 0.3})
    )
    try:
        with engine.connect() as other:
            if postgres:
                other.execute(sa.text("SET lock_timeout = '300ms'"))
            with pytest.raises(DBAPIError, match="lock timeout" if postgres else "locked"):
                other.execute(statement)
            other.rollback()
    finally:
        engine.dispose()


def test_a_delivery_is_not_deleted_while_its_signals_are_being_stored(
    ctx: Context, database_url: str
) -> None:
    delivery_id = _delivered(ctx)
    with ctx.sessions() as writer:
        writer.execute(sa.insert(Signal), [_copy_of_signal(writer, delivery_id)])
        # The writer's transaction is open: its check holds the delivery, as a foreign key would.
        _refused_while_held(database_url, sa.delete(Delivery).where(Delivery.id == delivery_id))
        writer.commit()
    assert _signal_count(ctx, delivery_id) == 4


# --- the monthly run's tables ----------------------------------------------------------------


def _november_cases(ctx: Context, clock: Clock) -> None:
    """Two cases (a zorg + energie address and a rent address) with their links and events."""
    for name, kind in (("Huur BV", "huur"), ("Energie NV", "energie"), ("Zorg UA", "zorg")):
        register(ctx, name, kind)
    clock.set_local(2026, 11, 10, 9, 0)
    for name, rows in (
        ("Zorg UA", [row("Z1", nummer="1")]),
        ("Energie NV", [row("E1", nummer="1")]),
        ("Huur BV", [row("H5", nummer="5")]),
    ):
        with ctx.sessions() as session:
            partner = session.scalars(sa.select(Partner.id).where(Partner.name == name)).one()
        ingest_with_retry(ctx, partner_id=partner, content=csv_file(*rows), filename="f.csv")
    clock.set_local(2026, 11, 26, 2, 0)
    assert run_period(ctx).figures["cases"] == 2
    # The run stores no event per case (the routing is on the case): one each, as work adds.
    with unit_of_work(ctx.sessions) as session:
        _insert_at_once(session, _notes(ctx, list(session.scalars(sa.select(Case.id)))))


def _count(ctx: Context, table: type[Any]) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_deleting_a_case_deletes_its_links_and_events(ctx: Context, clock: Clock) -> None:
    _november_cases(ctx, clock)
    assert (_count(ctx, CaseSignal), _count(ctx, CaseEvent)) == (3, 2)
    with unit_of_work(ctx.sessions) as session:
        case_id = session.scalars(sa.select(Case.id).where(Case.signal_count == 2)).one()
        session.execute(sa.delete(Case).where(Case.id == case_id))
    assert (_count(ctx, Case), _count(ctx, CaseSignal), _count(ctx, CaseEvent)) == (1, 1, 1)


def test_a_case_moves_only_to_an_existing_team_which_then_stays(ctx: Context, clock: Clock) -> None:
    _november_cases(ctx, clock)
    with ctx.sessions() as session:
        with pytest.raises(IntegrityError):
            session.execute(sa.update(Case).values(team_id=uuid.uuid4()))
        session.rollback()
        team = Team(name="Wijkteam Noord")
        session.add(team)
        session.flush()
        session.execute(sa.update(Case).values(team_id=team.id))
        session.commit()
    with ctx.sessions() as session:
        with pytest.raises(IntegrityError):
            session.execute(sa.delete(Team))
        session.rollback()
    assert _count(ctx, Team) == 1


def test_a_run_with_cases_cannot_be_deleted(ctx: Context, clock: Clock) -> None:
    _november_cases(ctx, clock)
    with ctx.sessions() as session:
        with pytest.raises(IntegrityError):
            session.execute(sa.delete(Run))
        session.rollback()
    assert _count(ctx, Run) == 1


def _many_cases(
    ctx: Context, count: int, ids: list[uuid.UUID] | None = None, period: str = "2026-10"
) -> list[uuid.UUID]:
    """``count`` more cases (October), like the first one; with ``ids`` if given."""
    with ctx.sessions() as session:
        template = session.execute(sa.select(Case).limit(1)).scalar_one()
        values = {
            c.key: getattr(template, c.key)
            for c in sa.inspect(Case).column_attrs
            if c.key not in ("id", "address_hash", "period")
        }
    ids = ids or [uuid.uuid4() for _ in range(count)]
    with unit_of_work(ctx.sessions) as session:
        session.execute(
            sa.insert(Case),
            [
                dict(values, id=case_id, address_hash=f"{i:064x}", period=period)
                for i, case_id in enumerate(ids)
            ],
        )
    return ids


def _notes(ctx: Context, case_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    return [{"case_id": case_id, "at": ctx.now(), "kind": "note"} for case_id in case_ids]


def _insert_at_once(session: sa.orm.Session, events: list[dict[str, Any]]) -> None:
    """The events in one statement, as the run's COPY stores them (an executemany would send
    them in statements of a thousand rows, each below the row-lock limit)."""
    session.execute(sa.insert(CaseEvent).values(events))


def _estimated_in_range(ctx: Context, ids: list[uuid.UUID]) -> float:
    """What PostgreSQL expects between the smallest and largest id: migration 0013 reads that
    range in one pass when it holds at most four rows per id, and looks the ids up otherwise."""
    with ctx.sessions() as session:
        session.execute(sa.text("ANALYZE cases"))
        plan = session.execute(
            sa.text("EXPLAIN (FORMAT JSON) SELECT 1 FROM cases WHERE id BETWEEN :low AND :high"),
            {"low": min(ids), "high": max(ids)},
        ).scalar_one()
        session.commit()
    return float(plan[0]["Plan"]["Plan Rows"])


@pytest.mark.parametrize("ids", ["neighbours", "spread"])
def test_links_to_many_parents_are_checked_together(ctx: Context, clock: Clock, ids: str) -> None:
    """More distinct parents than the row-lock limit (a table lock then): one missing fails all.

    On PostgreSQL the parents are then checked over their key range in one pass when they are
    neighbours (time-ordered ids, as one run makes them), or looked up one by one when they are
    spread over a table four times their number. The missing parent lies inside the range.
    """
    _november_cases(ctx, clock)
    count = ESCALATE_ABOVE + 5
    if ids == "neighbours":
        made = time_ordered_uuids(count + 1, ctx.now())
        missing = made.pop(count // 2)
        many = _many_cases(ctx, count, made)
    else:
        _many_cases(ctx, 4 * count, period="2026-09")
        many = _many_cases(ctx, count)
        missing = uuid.UUID(int=(min(many).int + max(many).int) // 2)
    if ctx.engine.dialect.name == "postgresql":
        in_range = _estimated_in_range(ctx, many)
        assert (in_range <= 4 * count) == (ids == "neighbours")
    events = _notes(ctx, many)
    with ctx.sessions() as session:
        with pytest.raises(IntegrityError):
            _insert_at_once(session, [*events, dict(events[0], case_id=missing)])
        session.rollback()
        _insert_at_once(session, events)
        session.commit()
    assert _count(ctx, CaseEvent) == 2 + len(many)


@pytest.mark.parametrize("parents", [1, ESCALATE_ABOVE + 1], ids=["row-locks", "table-lock"])
def test_cases_are_not_deleted_while_links_to_them_are_being_stored(
    ctx: Context, clock: Clock, database_url: str, parents: int
) -> None:
    _november_cases(ctx, clock)
    linked = _many_cases(ctx, parents)
    with ctx.sessions() as writer:
        _insert_at_once(writer, _notes(ctx, linked))
        _refused_while_held(database_url, sa.delete(Case).where(Case.id == linked[0]))
        writer.commit()
    assert _count(ctx, CaseEvent) == 2 + parents


@pytest.mark.parametrize("count", [3, ESCALATE_ABOVE + 5], ids=["row-locks", "table-lock"])
def test_links_to_signals_are_checked_by_their_numbers(
    ctx: Context, clock: Clock, count: int
) -> None:
    """A signal's key is a number (the other parents' are UUIDs): links to signals, few or more
    than the row-lock limit in one statement, are refused together when one signal is missing
    (from the middle of their range), and stored when all are there."""
    _november_cases(ctx, clock)
    with unit_of_work(ctx.sessions) as session:
        case_id = session.scalars(sa.select(Case.id)).first()
        signal = session.scalars(sa.select(Signal)).first()
        assert signal is not None
        values = {c.key: getattr(signal, c.key) for c in sa.inspect(Signal).column_attrs}
        first = values.pop("id") - signal.row_number  # the delivery's block (shared.ids)
        session.execute(
            sa.insert(Signal),
            [dict(values, id=first + 100 + i, row_number=100 + i) for i in range(count + 1)],
        )
    with ctx.sessions() as session:
        ids = sorted(session.scalars(sa.select(Signal.id).where(Signal.row_number >= 100)))
    missing = ids.pop(len(ids) // 2)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.delete(Signal).where(Signal.id == missing))
    links = [
        {"case_id": case_id, "signal_id": signal_id, "partner_id": values["partner_id"]}
        for signal_id in ids
    ]
    with ctx.sessions() as session:
        with pytest.raises(IntegrityError):
            session.execute(
                sa.insert(CaseSignal).values([*links, dict(links[0], signal_id=missing)])
            )
        session.rollback()
        session.execute(sa.insert(CaseSignal).values(links))
        session.commit()
        stored = session.scalar(
            sa.select(sa.func.count()).select_from(CaseSignal).where(CaseSignal.signal_id.in_(ids))
        )
    assert stored == count


@pytest.mark.parametrize(
    "database_url", [b for b in _backends() if b == "postgresql"], indirect=True
)
def test_a_parent_key_of_another_type_is_not_passed_unchecked(ctx: Context) -> None:
    """PostgreSQL: the statement check knows parents keyed by UUIDs and numbers (every parent
    table's); a table keyed otherwise that borrowed it would have its inserts refused, never
    let through unchecked."""
    with ctx.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE fk_probe_parent (id text PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE fk_probe_child (parent_id text)")
        conn.exec_driver_sql(
            "CREATE TRIGGER fk_probe AFTER INSERT ON fk_probe_child "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            "EXECUTE FUNCTION vs_parents_exist('parent_id', 'fk_probe_parent', 'fk_probe')"
        )
        conn.exec_driver_sql("INSERT INTO fk_probe_parent VALUES ('a')")
    try:
        with pytest.raises(DBAPIError, match="is not checked here"), ctx.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO fk_probe_child VALUES ('a')")
    finally:
        with ctx.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE fk_probe_child, fk_probe_parent")
