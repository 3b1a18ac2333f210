"""The monthly run against a real database: figures, exactly-once, rerun, recidive, lock."""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import logging
import uuid
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.ingest.service import ingest_with_retry
from services.matcher import repository, signalled
from services.matcher.service import RunInProgress, run_period
from services.routing.service import (
    add_contact_attempt,
    case_detail,
    close_case,
    replace_register,
)
from shared.auth import Principal
from shared.context import Context
from shared.db import unit_of_work
from shared.errors import Conflict
from shared.models import (
    Case,
    CaseEvent,
    CaseLink,
    CaseSignal,
    ContactAttempt,
    Contactsoort,
    Eindresultaat,
    Partner,
    Run,
    Signal,
    SignalledAddresses,
    SignalState,
    signal_status,
)
from tests.conftest import Clock
from tests.helpers import csv_file, register, row, row_versions, signal_ids_by_reference

OUTCOME = SignalState.run_outcome
TZ = "Europe/Amsterdam"
STATUS = signal_status()


def _of_signals(*columns: Any) -> sa.Select[Any]:
    """A query of the signals with their state (``signal_states``, where they have one)."""
    return (
        sa.select(*columns)
        .select_from(Signal)
        .outerjoin(SignalState, SignalState.signal_id == Signal.id)
    )


ADVICE = Eindresultaat.advies_quick_fix


def partner_id(ctx: Context, name: str):  # type: ignore[no-untyped-def]
    with ctx.sessions() as session:
        return session.scalars(sa.select(Partner.id).where(Partner.name == name)).one()


def deliver(ctx: Context, name: str, *rows: str) -> None:
    ingest_with_retry(
        ctx, partner_id=partner_id(ctx, name), content=csv_file(*rows), filename="f.csv"
    )


@pytest.fixture
def partners(ctx: Context) -> None:
    register(ctx, "Huur BV", "huur")
    register(ctx, "Energie NV", "energie")
    register(ctx, "Zorg UA", "zorg")
    register(ctx, "Water NV", "water")


def november(ctx: Context, clock: Clock) -> None:
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Zorg UA", row("Z1", nummer="1"), row("Z2", nummer="2"), row("Z3", nummer="3"))
    deliver(ctx, "Energie NV", row("E1", nummer="1"), row("E9", nummer="9"))
    deliver(ctx, "Huur BV", row("H5", nummer="5"))
    clock.set_local(2026, 11, 26, 2, 0)


def test_a_replaced_delivery_no_longer_counts(ctx: Context, clock: Clock, partners: None) -> None:
    """Only each partner's current delivery is read: the energy file that would have made
    address 2 a case was replaced by one without it before the deadline."""
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Zorg UA", row("Z1", nummer="1"), row("Z2", nummer="2"))
    deliver(ctx, "Energie NV", row("E1", nummer="1"), row("E2", nummer="2"))
    deliver(ctx, "Energie NV", row("E1", nummer="1"))
    clock.set_local(2026, 11, 26, 2, 0)
    with ctx.sessions() as session:
        assert repository.period_signals(session, "2026-11").height == 3
    report = run_period(ctx)
    assert (report.figures["signals_in"], report.figures["cases"]) == (3, 1)


def test_run_makes_cases_and_records_figures(ctx: Context, clock: Clock, partners: None) -> None:
    november(ctx, clock)
    report = run_period(ctx)
    assert report.run.period == "2026-11"
    f = report.figures
    assert f["signals_in"] == 6
    assert f["cases"] == 2  # number 1 (zorg + energie) and number 5 (rent alone)
    assert f["addresses_matched"] == 1
    assert f["rent_only"] == 1
    assert f["singles"] == 3
    assert f["partners_without_delivery"] == ["Water NV"]
    with ctx.sessions() as session:
        cases = session.scalars(sa.select(Case).order_by(Case.priority)).all()
        assert [c.has_rent for c in cases] == [True, False]
        assert session.scalar(sa.select(sa.func.count()).select_from(CaseSignal)) == 3
        outcomes = dict(
            session.execute(_of_signals(OUTCOME, sa.func.count()).group_by(OUTCOME)).all()
        )
        stored = session.scalars(sa.select(Run)).one()
    # Only a signal the run sets aside gets an outcome; used ones are in case_signals.
    assert outcomes == {None: 6}
    assert json.loads(stored.figures)["cases"] == 2
    assert json.loads(stored.parameters)["freshness_days"] == 45


def test_second_run_reports_done_and_duplicates_nothing(
    ctx: Context, clock: Clock, partners: None
) -> None:
    november(ctx, clock)
    first = run_period(ctx)
    again = run_period(ctx)
    assert again.already_done
    assert again.run.id == first.run.id
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Case)) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1


def test_rerun_keeps_worked_cases_and_their_ids(ctx: Context, clock: Clock, partners: None) -> None:
    november(ctx, clock)
    run_period(ctx)
    with ctx.sessions() as session, session.begin():
        rent = session.scalars(sa.select(Case).where(Case.has_rent)).one()
        other = session.scalars(sa.select(Case).where(~Case.has_rent)).one()
        rent.status = "closed"
        rent_id, other_id = rent.id, other.id
    # A later run date makes every signal stale: nothing qualifies any more.
    report = run_period(ctx, rerun=True, as_of=clock().date().replace(month=12, day=31))
    assert report.figures["cases"] == 0
    assert report.run.rerun
    with ctx.sessions() as session:
        remaining = session.scalars(sa.select(Case.id)).all()
        set_aside = session.execute(_of_signals(OUTCOME, STATUS).distinct()).all()
    assert remaining == [rent_id]  # worked on: kept; untouched: removed
    assert other_id not in remaining
    assert set_aside == [("stale", "Niet opgepakt: andere reden")]
    again = run_period(ctx, rerun=True)
    assert again.figures["cases"] == 2
    with ctx.sessions() as session:
        ids = set(session.scalars(sa.select(Case.id)).all())
        # What the stale run set aside is reset by the rerun that uses the signals again.
        outcomes = set(session.scalars(_of_signals(OUTCOME)).all())
    assert rent_id in ids
    assert outcomes == {None}


def test_recidive_across_periods(ctx: Context, clock: Clock, partners: None) -> None:
    clock.set_local(2026, 10, 5, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", bedrag="400"))
    clock.set_local(2026, 10, 26, 2, 0)
    october = run_period(ctx)
    assert october.figures["cases"] == 1
    november(ctx, clock)
    report = run_period(ctx)
    with ctx.sessions() as session:
        case = session.scalars(sa.select(Case).where(Case.period == "2026-11", Case.is_recidive))
        recidive = case.one()
        link = session.scalars(sa.select(CaseLink)).one()
        earlier = session.get(Case, link.earlier_case_id)
    assert recidive.classification == "opeenvolgend"
    assert recidive.signalled_periods == "2026-10"  # the earlier case's signal
    assert link.case_id == recidive.id
    assert earlier is not None
    assert earlier.period == "2026-10"
    assert report.figures["recidive"] == 1


def _october_single_energy_signal(ctx: Context, clock: Clock) -> None:
    """October: one energy signal at number 1, which makes no case (a single)."""
    clock.set_local(2026, 10, 5, 9, 0)
    deliver(ctx, "Energie NV", row("E1", nummer="1"))
    clock.set_local(2026, 10, 26, 2, 0)
    october = run_period(ctx)
    assert (october.figures["cases"], october.figures["singles"]) == (0, 1)


def _signalled(ctx: Context) -> dict[str, int]:
    with ctx.sessions() as session:
        rows = session.execute(
            sa.select(SignalledAddresses.period, SignalledAddresses.address_count)
        ).all()
    return {period: count for period, count in rows}


def test_an_earlier_signal_without_a_case_makes_the_case_recidive(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """The national monitor's *opeenvolgend*: a signal at the address in the previous six
    months, though it made no case; such a case goes to the budget coach, with no earlier case
    to link."""
    _october_single_energy_signal(ctx, clock)
    assert _signalled(ctx) == {"2026-10": 1}
    november(ctx, clock)  # number 1: zorg and energie again; number 5: rent
    report = run_period(ctx)
    assert _signalled(ctx) == {"2026-10": 1, "2026-11": 5}
    with ctx.sessions() as session:
        cases = {c.has_rent: c for c in session.scalars(sa.select(Case)).all()}
        links = session.scalars(sa.select(CaseLink)).all()
        # The case's detail says why it is recurrent: no earlier case, a signal in October.
        detail = case_detail(session, ctx, cases[False])
    assert cases[False].is_recidive
    assert cases[False].classification == "opeenvolgend"
    assert cases[False].route == "budgetcoach"
    assert (detail["recidive"], detail["signalled_before"]) == ([], ["2026-10"])
    assert not cases[True].is_recidive
    assert cases[True].signalled_periods is None
    assert links == []
    assert report.figures["recidive"] == 1
    assert report.figures["classification"]["opeenvolgend"] == 1


def test_a_rerun_notes_the_signalled_periods_without_matching_the_case_again(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """A case matched before its signalled periods were kept (migration 0022) gets them from its
    period's next rerun, which does not make it count as matched again: it keeps its run (the
    national export's matching date) and ``updated_at``. The same periods are not written again."""
    _october_single_energy_signal(ctx, clock)
    november(ctx, clock)
    first = run_period(ctx)
    recurrent = Case.is_recidive.is_(True)

    def recorded() -> tuple[str | None, uuid.UUID, Any]:
        with ctx.sessions() as session:
            case = session.scalars(sa.select(Case).where(recurrent)).one()
            return case.signalled_periods, case.run_id, case.updated_at

    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.update(Case).where(recurrent).values(signalled_periods=None))
    _, run_id, updated_at = recorded()
    assert run_id == first.run.id
    clock.set_local(2026, 11, 27, 2, 0)
    run_period(ctx, rerun=True)
    assert recorded() == ("2026-10", run_id, updated_at)
    # Once noted, not written again: on PostgreSQL the row keeps its version (xmin).
    versions = row_versions(ctx, "cases", "id")
    clock.set_local(2026, 11, 28, 2, 0)
    run_period(ctx, rerun=True)
    assert recorded() == ("2026-10", run_id, updated_at)
    assert row_versions(ctx, "cases", "id") == versions


def test_a_period_without_its_set_of_addresses_gets_one_from_its_signals(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """A period run before the sets were kept (or whose set was deleted): the first run that
    needs it builds it from the period's signals, and keeps it."""
    _october_single_energy_signal(ctx, clock)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.delete(SignalledAddresses))
    november(ctx, clock)
    report = run_period(ctx)
    assert report.figures["recidive"] == 1
    assert report.figures["recidive_periods"] == ["2026-10"]
    assert _signalled(ctx) == {"2026-10": 1, "2026-11": 5}


@pytest.mark.parametrize("spoilt", ["another key", "unreadable"])
def test_a_set_of_another_hash_key_or_unreadable_is_built_again(
    ctx: Context, clock: Clock, partners: None, spoilt: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A set made with an address hash key since rotated matches nothing; one that cannot be
    read is no set. Either is built again from the period's signals, with a warning that names
    the period only."""
    _october_single_energy_signal(ctx, clock)
    with unit_of_work(ctx.sessions) as session:
        change = {"hash_key_check": "0" * 16} if spoilt == "another key" else {"address_keys": b"x"}
        session.execute(sa.update(SignalledAddresses).values(**change))
    november(ctx, clock)
    with caplog.at_level(logging.WARNING, logger="vroegsignaal.matcher"):
        assert run_period(ctx).figures["recidive"] == 1
    [warning] = [r for r in caplog.records if r.name == "vroegsignaal.matcher"]
    assert (warning.period, warning.reason) == (  # type: ignore[attr-defined]
        "2026-10",
        "another address hash key" if spoilt == "another key" else "unreadable",
    )
    with ctx.sessions() as session:
        october = session.get(SignalledAddresses, "2026-10")
        assert october is not None
        assert october.hash_key_check == signalled.key_check(ctx.hasher)
        assert signalled.decode(october.address_keys) is not None


def test_a_period_whose_addresses_may_be_purged_gets_no_set(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """The purge removes the addresses of signals without a case from deliveries received before
    its cutoff: a set built from what is left would miss them, and is not built."""
    clock.set_local(2026, 10, 5, 9, 0)
    deliver(ctx, "Energie NV", row("E1", nummer="1"))
    received = clock()
    check = signalled.key_check(ctx.hasher)
    with ctx.sessions() as session:
        later = received + timedelta(seconds=1)
        gone = signalled.before(
            session, "2026-05", "2026-11", check=check, intact_since=later, keep=True
        )
        assert (gone.periods, gone.frame.height) == ([], 0)
        found = signalled.before(
            session, "2026-05", "2026-11", check=check, intact_since=received, keep=False
        )
        assert (found.periods, found.frame.height) == (["2026-10"], 1)
        session.commit()
    assert _signalled(ctx) == {}  # neither was kept: the first had nothing, the second keep=False


def test_a_monthly_run_deletes_a_set_it_cannot_use_or_build_again(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """A set of a rotated key whose period's addresses may be partly purged: a crisis run leaves
    it, the monthly run deletes it (it matches nothing; its warning is not repeated)."""
    _october_single_energy_signal(ctx, clock)
    with unit_of_work(ctx.sessions) as session:
        session.execute(sa.update(SignalledAddresses).values(hash_key_check="0" * 16))
    check = signalled.key_check(ctx.hasher)
    after = clock() + timedelta(days=400)
    for keep in (False, True):
        with unit_of_work(ctx.sessions) as session:
            found = signalled.before(
                session, "2026-05", "2026-11", check=check, intact_since=after, keep=keep
            )
        assert found.periods == []
        assert _signalled(ctx) == ({"2026-10": 1} if not keep else {})


def test_a_rerun_after_the_purge_cutoff_keeps_the_periods_set(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """Months later the addresses of the period's signals without a case may be purged: the
    rerun does not replace the full set with what is left."""
    november(ctx, clock)
    run_period(ctx)
    with ctx.sessions() as session:
        first = session.get(SignalledAddresses, "2026-11")
        assert first is not None
        made = first.created_at
    clock.set_local(2027, 6, 1, 9, 0)
    run_period(ctx, period="2026-11", rerun=True)
    with ctx.sessions() as session:
        kept = session.get(SignalledAddresses, "2026-11")
        assert kept is not None
        assert (kept.created_at, kept.address_count) == (made, 5)


def test_a_rerun_replaces_the_periods_set_of_addresses(
    ctx: Context, clock: Clock, partners: None
) -> None:
    november(ctx, clock)
    run_period(ctx)
    assert _signalled(ctx) == {"2026-11": 5}
    with unit_of_work(ctx.sessions) as session:  # a set that is not the period's
        session.execute(sa.update(SignalledAddresses).values(address_count=0, address_keys=b"x"))
    run_period(ctx, period="2026-11", rerun=True)
    assert _signalled(ctx) == {"2026-11": 5}
    with ctx.sessions() as session:
        stored = session.get(SignalledAddresses, "2026-11")
        assert stored is not None
        keys = signalled.decode(stored.address_keys)
        assert keys is not None
        assert keys.len() == 5


def test_history_holds_the_earlier_cases_of_the_periods_addresses_only(
    ctx: Context, clock: Clock, partners: None
) -> None:
    clock.set_local(2026, 10, 5, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", bedrag="400"), row("H4", nummer="4"))
    clock.set_local(2026, 10, 26, 2, 0)
    assert run_period(ctx).figures["cases"] == 2
    november(ctx, clock)  # signals at numbers 1, 2, 3, 5 and 9: not at number 4
    with ctx.sessions() as session:
        october = {c.address_hash: str(c.id) for c in session.scalars(sa.select(Case)).all()}
        november_addresses = session.scalars(
            sa.select(Signal.address_hash).where(Signal.period == "2026-11")
        ).all()
        earlier = repository.history(session, "2026-01", "2026-11", tz=TZ)
        before_october = repository.history(session, "2026-01", "2026-10", tz=TZ)
    kept = set(october).intersection(november_addresses)
    assert len(kept) == 1  # number 1 had a case in October and signals in November
    assert set(earlier["address_hash"]) == kept
    assert {uuid.UUID(c) for c in earlier["case_id"]} == {uuid.UUID(str(october[h])) for h in kept}
    assert earlier.height == 1  # the one link of that case (its one signal)
    assert before_october.is_empty()


def test_the_run_reads_the_same_inputs_side_by_side(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """PostgreSQL reads the history on a second, read-only connection while the signals come in
    on the run's own; what the rules get is what the two reads give one after the other."""
    clock.set_local(2026, 10, 5, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", bedrag="400"), row("H4", nummer="4"))
    clock.set_local(2026, 10, 26, 2, 0)
    run_period(ctx)
    november(ctx, clock)
    statements: list[tuple[int, str]] = []

    def seen(_conn: sa.Connection, cursor: Any, statement: str, *_: object) -> None:
        statements.append((cursor.connection.info.backend_pid, statement))

    postgres = ctx.engine.dialect.name == "postgresql"
    with ctx.sessions() as session:
        own = session.scalar(sa.text("SELECT pg_backend_pid()")) if postgres else None
        if postgres:
            sa.event.listen(ctx.engine, "before_cursor_execute", seen)
        try:
            signals, earlier = repository.inputs(session, "2026-01", "2026-11", lambda s: s, tz=TZ)
        finally:
            if postgres:
                sa.event.remove(ctx.engine, "before_cursor_execute", seen)
        work_mem = session.scalar(sa.text("SHOW work_mem")) if postgres else None
        alone = repository.period_signals(session, "2026-11")
        alone_earlier = repository.history(session, "2026-01", "2026-11", tz=TZ)
    assert signals.height == 6
    assert earlier.height == 1
    assert signals.sort("signal_id").equals(alone.sort("signal_id"))
    assert earlier.sort("case_id").equals(alone_earlier.sort("case_id"))
    if postgres:
        others = {pid for pid, _ in statements if pid != own}
        assert len(others) == 1
        other = others.pop()
        on_other = [text for pid, text in statements if pid == other]
        assert on_other[0] == "SET TRANSACTION READ ONLY"
        assert "SET LOCAL max_parallel_workers_per_gather = 0" in on_other  # one server process
        assert work_mem == repository.RUN_WORK_MEM  # the run's own transaction keeps it


def test_open_window_cannot_be_run(ctx: Context, clock: Clock) -> None:
    clock.set_local(2026, 11, 24, 23, 0)
    with pytest.raises(Conflict, match="still open"):
        run_period(ctx, period="2026-11")


def test_a_held_lock_stops_a_second_run(ctx: Context, clock: Clock, partners: None) -> None:
    november(ctx, clock)
    if ctx.engine.dialect.name == "postgresql":
        with ctx.engine.connect() as other:
            other.execute(sa.text("SELECT pg_advisory_lock((22099 :: bigint << 32) | 202611)"))
            with pytest.raises(RunInProgress):
                run_period(ctx)
            other.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    else:
        lock = ctx.settings.data_dir / "locks" / "run-2026-11.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            with pytest.raises(RunInProgress):
                run_period(ctx)
    assert run_period(ctx).figures["cases"] == 2


def test_concurrent_runs_one_proceeds(ctx: Context, clock: Clock, partners: None) -> None:
    november(ctx, clock)

    def attempt() -> str:
        try:
            report = run_period(ctx)
        except RunInProgress:
            return "in progress"
        return "done before" if report.already_done else "completed"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: attempt(), range(4)))
    assert results.count("completed") == 1
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(Case)) == 2


def test_a_failing_run_leaves_no_trace(
    ctx: Context, clock: Clock, partners: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    november(ctx, clock)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("routing failed")

    monkeypatch.setattr("services.matcher.service.mark_known_to_sdv", broken)
    with pytest.raises(RuntimeError):
        run_period(ctx)
    with ctx.sessions() as session:
        for table in (Run, Case, CaseSignal, CaseEvent):
            assert session.scalar(sa.select(sa.func.count()).select_from(table)) == 0
        assert session.scalars(_of_signals(OUTCOME).distinct()).all() == [None]
    monkeypatch.undo()
    assert run_period(ctx).figures["cases"] == 2


def test_rerun_keeps_contact_attempts_and_routing(
    ctx: Context, clock: Clock, partners: None
) -> None:
    november(ctx, clock)
    run_period(ctx)
    with ctx.sessions() as session, session.begin():
        case = session.scalars(sa.select(Case).where(~Case.has_rent)).one()
        session.add(
            ContactAttempt(case_id=case.id, soort="Telefoon", datum=clock().date(), bereikt=False)
        )
        case_id, route, due = case.id, case.route, case.due_date
    stale_date = clock().date().replace(month=12, day=31)
    assert run_period(ctx, rerun=True, as_of=stale_date).figures["cases"] == 0
    with ctx.sessions() as session:
        kept = session.get(Case, case_id)
        assert kept is not None
        assert (kept.route, kept.due_date) == (route, due)
        attempts = session.scalar(sa.select(sa.func.count()).select_from(ContactAttempt))
        assert attempts == 1
        stored = session.execute(
            _of_signals(OUTCOME, STATUS, sa.func.count()).group_by(OUTCOME, STATUS).order_by(STATUS)
        ).all()
    # The rerun set every signal aside, but the two of the case somebody tried to reach are
    # picked up: that is what their partners hear.
    assert stored == [("stale", "Niet opgepakt: andere reden", 4), ("stale", "Opgepakt", 2)]


def test_a_first_run_stores_the_outcome_of_what_it_sets_aside(
    ctx: Context, clock: Clock, partners: None
) -> None:
    november(ctx, clock)
    report = run_period(ctx, as_of=clock().date().replace(month=12, day=31))
    assert report.figures["stale"] == 6
    with ctx.sessions() as session:
        stored = session.execute(
            _of_signals(OUTCOME, STATUS, sa.func.count()).group_by(OUTCOME, STATUS)
        ).all()
    assert stored == [("stale", "Niet opgepakt: andere reden", 6)]


def test_a_rerun_keeps_what_the_signals_of_kept_cases_record(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """A rerun refreshes the period from the deliveries, but a signal's status that records the
    household (known to SDV) or work on its case (picked up after a contact attempt) stays, also
    for a signal the partner added since: the partner's feedback never goes back to "not yet
    picked up" for a household that was."""
    november(ctx, clock)
    with unit_of_work(ctx.sessions) as session:
        # SDV already helps the household at number 5 (rent).
        replace_register(session, ctx, [{"postcode": "2011AB", "huisnummer": "5"}], ctx.now())
    run_period(ctx)
    with unit_of_work(ctx.sessions) as session:
        visited = session.scalars(sa.select(Case).where(~Case.has_rent)).one()
        add_contact_attempt(
            session,
            ctx,
            Principal(uuid.uuid4(), "test", "coordinator"),
            visited,
            soort=Contactsoort.huisbezoek,
            datum=clock().astimezone(ctx.tz).date(),
            dagdeel=None,
            bereikt=True,
            notitie=None,
        )
    before = _statuses(ctx)
    assert before == {
        "Z1": "Opgepakt",
        "E1": "Opgepakt",
        "H5": "Inwoner al bekend bij schuldhulpverlening",
        "Z2": "Nog niet opgepakt",
        "Z3": "Nog niet opgepakt",
        "E9": "Nog niet opgepakt",
    }
    # The rerun after a late delivery: the water company reports both households too.
    clock.set_local(2026, 11, 20, 9, 0)
    deliver(ctx, "Water NV", row("W1", nummer="1"), row("W5", nummer="5"))
    clock.set_local(2026, 11, 27, 2, 0)
    report = run_period(ctx, rerun=True)
    assert report.figures["cases"] == 2
    after = _statuses(ctx)
    assert after == {
        **before,
        "W1": "Opgepakt",
        "W5": "Inwoner al bekend bij schuldhulpverlening",
    }


def test_a_rerun_keeps_the_status_a_closure_gave(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """A closed case's signals carry its closure's status after a rerun, over what the run and
    the register would give them."""
    november(ctx, clock)
    with unit_of_work(ctx.sessions) as session:
        replace_register(session, ctx, [{"postcode": "2011AB", "huisnummer": "5"}], ctx.now())
    run_period(ctx)
    coordinator = Principal(uuid.uuid4(), "test", "coordinator")
    with unit_of_work(ctx.sessions) as session:
        for case, resultaat in (
            (session.scalars(sa.select(Case).where(~Case.has_rent)).one(), Eindresultaat.overleden),
            (session.scalars(sa.select(Case).where(Case.has_rent)).one(), ADVICE),
        ):
            close_case(session, ctx, coordinator, case, resultaat)
    clock.set_local(2026, 11, 20, 9, 0)
    deliver(ctx, "Water NV", row("W1", nummer="1"), row("W5", nummer="5"))
    clock.set_local(2026, 11, 27, 2, 0)
    run_period(ctx, rerun=True)
    statuses = _statuses(ctx)
    assert {ref: statuses[ref] for ref in ("Z1", "E1", "W1", "H5", "W5")} == {
        "Z1": "Inwoner is overleden",
        "E1": "Inwoner is overleden",
        "W1": "Inwoner is overleden",
        # Advice is no signal status: picked up, over "known to SDV".
        "H5": "Opgepakt",
        "W5": "Opgepakt",
    }


def test_a_rerun_writes_only_what_changed(ctx: Context, clock: Clock, partners: None) -> None:
    """A case that comes out of a rerun the same keeps the run that matched it (its matching
    date in the national export) and its ``updated_at``; one whose figures change names the
    rerun. A signal's stored outcome and status are written only where they change."""
    november(ctx, clock)
    first = run_period(ctx)

    def cases() -> dict[bool, tuple[uuid.UUID, Any]]:
        with ctx.sessions() as session:
            rows = session.execute(sa.select(Case.has_rent, Case.run_id, Case.updated_at)).all()
        return {r.has_rent: (r.run_id, r.updated_at) for r in rows}

    before = cases()
    clock.set_local(2026, 11, 27, 2, 0)
    same = run_period(ctx, rerun=True)
    assert cases() == before
    assert all(run_id == first.run.id for run_id, _ in before.values())
    clock.set_local(2026, 11, 20, 9, 0)
    deliver(ctx, "Water NV", row("W1", nummer="1"))
    clock.set_local(2026, 11, 28, 2, 0)
    changed = run_period(ctx, rerun=True)
    after = cases()
    assert after[True] == before[True]  # the rent case at number 5: unchanged
    assert after[False][0] == changed.run.id != same.run.id
    assert after[False][1] > before[False][1]


def _statuses(ctx: Context) -> dict[str, str]:
    """Each signal's status by the partner's reference."""
    ids = signal_ids_by_reference(ctx)
    with ctx.sessions() as session:
        status = {i: s for i, s in session.execute(_of_signals(Signal.id, STATUS))}
    return {reference: status[signal_id] for reference, signal_id in ids.items()}


def _month_of_rent(
    ctx: Context, clock: Clock, month: int, ref: str, *, sinds: str | None = None
) -> Any:
    """One rent signal at number 1 delivered in ``month`` of 2026 (arrears since the first of
    the month before, or ``sinds``) and that month's run."""
    clock.set_local(2026, month, 5, 9, 0)
    since = sinds or f"01-{month - 1:02d}-2026"
    deliver(ctx, "Huur BV", row(ref, nummer="1", bedrag="400", sinds=since))
    clock.set_local(2026, month, 26, 2, 0)
    return run_period(ctx)


def test_a_case_closed_within_the_window_makes_the_same_report_a_repeat(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """The history's closing days are read on both backends (on SQLite a closed case once made
    the next run fail: its closing moment came back as the year alone)."""
    assert _month_of_rent(ctx, clock, 9, "H-sep").figures["cases"] == 1
    coordinator = Principal(uuid.uuid4(), "test", "coordinator")
    clock.set_local(2026, 10, 1, 1, 30)  # 23:30 UTC on 30 September: 1 October in Amsterdam
    with unit_of_work(ctx.sessions) as session:
        close_case(session, ctx, coordinator, session.scalars(sa.select(Case)).one(), ADVICE)
    october = _month_of_rent(ctx, clock, 10, "H-oct")
    assert october.figures["cases"] == 0
    assert _statuses(ctx)["H-oct"] == "Niet opgepakt: herhaalde melding"
    with ctx.sessions() as session:
        september = repository.history(session, "2026-09", "2026-10", tz=TZ)
    assert september["closed_on"].to_list() == [date(2026, 10, 1)]  # the day in Amsterdam
    assert september["case_open"].to_list() == [False]


def test_a_case_still_open_from_before_the_window_makes_the_same_report_a_repeat(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """A repeat is a repeat while an earlier case is open, however long ago it was made: the
    same arrears (since January), reported again. Arrears that arose after the earlier report
    are other arrears: picked up."""
    january = "01-01-2026"
    assert _month_of_rent(ctx, clock, 2, "H-feb", sinds=january).figures["cases"] == 1
    october = _month_of_rent(ctx, clock, 10, "H-oct", sinds=january)  # window: April-September
    assert october.figures["cases"] == 0
    assert _statuses(ctx)["H-oct"] == "Niet opgepakt: herhaalde melding"
    november = _month_of_rent(ctx, clock, 11, "H-nov")  # arrears since 1 October
    assert november.figures["cases"] == 1
    assert november.figures["repeat_signals"] == 0


def test_migration_0023_gives_each_case_link_its_signals_date(
    ctx: Context, clock: Clock, partners: None, database_url: str
) -> None:
    """Links made before 0023 get their signal's date from ``signals`` (the repeat rule reads
    it): down to 0022 (the column goes) and up again."""
    from shared import migrate

    assert _month_of_rent(ctx, clock, 9, "H-sep").figures["cases"] == 1
    ctx.engine.dispose()
    migrate.downgrade(database_url, "0022")
    migrate.upgrade(database_url)
    with ctx.sessions() as session:
        dates = session.execute(
            sa.select(CaseSignal.signaaldatum, Signal.signaaldatum).join(
                Signal, Signal.id == CaseSignal.signal_id
            )
        ).all()
    assert len(dates) == 1
    assert all(link is not None and link == signal for link, signal in dates)


def test_a_rerun_weeks_later_judges_freshness_as_the_run_before(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """The same deliveries give the same cases whenever the rerun is done: the signals are not
    stale for having aged since the run before. A case the rerun makes for the first time is
    due counted from the rerun's day."""
    clock.set_local(2026, 10, 5, 9, 0)
    deliver(ctx, "Huur BV", row("H1", nummer="1", bedrag="400"))
    clock.set_local(2026, 10, 26, 2, 0)
    assert run_period(ctx, period="2026-10").figures["cases"] == 1
    clock.set_local(2026, 12, 20, 9, 0)  # the signal is now more than 45 days old
    rerun = run_period(ctx, period="2026-10", rerun=True)
    assert rerun.figures["cases"] == 1
    assert json.loads(rerun.run.parameters)["run_date"] == "2026-10-26"
    assert rerun.run.run_date == date(2026, 12, 20)
    again = run_period(ctx, period="2026-10", rerun=True)  # a rerun of the rerun: still October
    assert json.loads(again.run.parameters)["run_date"] == "2026-10-26"


def test_work_recorded_during_a_rerun_waits_for_it(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """Once a rerun has read which of the period's cases were worked on, a contact attempt on
    one of them waits until the rerun ends (here: gives up after a short wait) instead of landing
    on a case the rerun may remove as untouched."""
    november(ctx, clock)
    run_period(ctx)
    with ctx.sessions() as session:
        case_id = session.scalars(sa.select(Case.id).where(~Case.has_rent)).one()
    rerun = ctx.sessions()
    try:
        # What a rerun does first: its run row, then the period's cases and their work.
        rerun.execute(sa.update(Run).values(rerun=True))
        assert repository.existing_cases(rerun, "2026-11").height == 2
        postgres = ctx.engine.dialect.name == "postgresql"
        # The team's connection waits a short while only (SQLite: its busy timeout).
        waiting = (
            ctx.engine
            if postgres
            else sa.create_engine(ctx.engine.url, connect_args={"timeout": 0.3})
        )
        with waiting.connect() as team:
            if postgres:
                team.execute(sa.text("SET lock_timeout = '300ms'"))
            with pytest.raises(sa.exc.OperationalError):
                team.execute(
                    sa.insert(ContactAttempt).values(
                        id=uuid.uuid4(),
                        case_id=case_id,
                        soort="Telefoon",
                        datum=clock().date(),
                        bereikt=False,
                        created_at=ctx.now(),
                    )
                )
            team.rollback()
    finally:
        rerun.rollback()
        rerun.close()
