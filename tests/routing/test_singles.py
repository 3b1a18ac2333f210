"""The work list of single signals (``GET /api/v1/singles``) over real HTTP: what it lists, for
whom, and after a late or replaced delivery; the runs' record of the deliveries they read."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from services.ingest.service import ingest_with_retry
from services.matcher.service import RunReport, crisis_run, run_period
from services.routing.singles import singles_page
from shared import migrate
from shared.context import Context
from shared.models import ARRIVED, AuditEvent, Case, Delivery, Partner, Run, Signal, SignalState
from tests.conftest import AMSTERDAM, Clock
from tests.helpers import csv_file, row, signal_ids_by_reference
from tests.matcher.test_run import deliver, november, partner_id, partners
from tests.routing.test_cases_api import World, world

__all__ = ["partners", "world"]

# Before November's deadline: when the file was written (over SFTP).
WRITTEN_IN_TIME = datetime(2026, 11, 24, 12, tzinfo=AMSTERDAM).astimezone(UTC)


def _singles(world: World, who: str = "sdv", **params: Any) -> Any:
    response = world.get(who, "/api/v1/singles", **params)
    assert response.status_code == 200, response.text
    return response.json()


def _late(ctx: Context, partner: str, *rows: str) -> None:
    """A delivery written over SFTP before November's deadline, ingested now."""
    ingest_with_retry(
        ctx,
        partner_id=partner_id(ctx, partner),
        content=csv_file(*rows),
        filename="late.csv",
        source="sftp",
        received_at=WRITTEN_IN_TIME,
    )


def test_sdv_gets_the_single_addresses_with_what_a_letter_needs(world: World, ctx: Context) -> None:
    """November: the energy signal at number 4 made no case (one partner, not rent, no crisis).
    It is listed with its address, the person and the signal; no birth date, no BSN. As many
    addresses as the run counted. The read is audited."""
    body = _singles(world)
    with ctx.sessions() as session:
        run = session.scalars(sa.select(Run).where(Run.period == "2026-11")).one()
    assert (body["period"], body["run_id"], body["run_date"]) == (
        "2026-11",
        str(run.id),
        "2026-11-26",
    )
    assert body["total"] == json.loads(run.figures)["singles"] == 1
    assert body["deliveries_since_run"] == 0
    [item] = body["items"]
    assert item["address"] == {
        "straat": "Kerkstraat",
        "huisnummer": "4",
        "huisnummer_suffix": "",
        "postcode": "2011AB",
        "woonplaats": "Haarlem",
    }
    assert item["persons"] == [
        {
            "voorletters": "J.",
            "tussenvoegsel": None,
            "achternaam": "Jansen",
            "telefoon": "0612345678",
            "email": None,
        }
    ]
    [signal] = item["signals"]
    assert signal["partner"]["name"] == "Energie NV"
    assert (signal["kind"], signal["bedrag_cent"], signal["referentie"]) == (
        "energie",
        25_000,
        "E4",
    )
    assert (signal["achterstand_sinds"], signal["signaaldatum"]) == ("2026-09-01", "2026-11-10")
    assert not signal["warme_overdracht"]
    assert not signal["eindelevering"]
    assert "geboortedatum" not in str(body)
    assert "bsn" not in str(body)
    with ctx.sessions() as session:
        event = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "singles.read")
        ).one()
    assert (event.role, event.object_type, event.object_id) == ("sdv", "run", str(run.id))
    assert json.loads(event.details or "{}") == {"period": "2026-11", "addresses": 1}


def test_only_sdv_and_the_coordinator_may_read_it(world: World) -> None:
    assert _singles(world, "coordinator")["total"] == 1
    for who in ("noord", "budgetcoach", "admin", "Huur BV"):
        assert world.get(who, "/api/v1/singles").status_code == 403, who
    with world.server.client() as anonymous:
        assert anonymous.get("/api/v1/singles").status_code == 401


def test_a_period_by_name_pages_and_a_period_without_a_run(world: World) -> None:
    october = _singles(world, period="2026-10")  # rent at number 3 alone: a case
    assert (october["period"], october["total"], october["items"]) == ("2026-10", 0, [])
    missing = world.get("sdv", "/api/v1/singles", period="2026-09")
    assert missing.status_code == 404
    assert "2026-09" in missing.json()["detail"]
    assert world.get("sdv", "/api/v1/singles", period="2026-13").status_code == 422
    past_the_end = _singles(world, page=2, page_size=1)
    assert (past_the_end["total"], past_the_end["items"]) == (1, [])


def _on_postgres(ctx: Context) -> bool:
    return ctx.engine.dialect.name == "postgresql"


def _during_the_run(ctx: Context, deliver: Callable[[], None]) -> RunReport:
    """November's first run, with ``deliver`` called in another thread while it matches (after
    its reads, before its writes). On PostgreSQL the delivery is stored then, for November: an
    SFTP file written before the deadline, and November has no run yet. On SQLite it waits for
    the run's write lock, and then November has had its run: it goes to December."""
    stored = threading.Thread(target=deliver)

    def progress(message: str) -> None:
        if message.startswith("matching"):
            stored.start()
            if _on_postgres(ctx):
                stored.join()

    report = run_period(ctx, progress=progress)
    stored.join()
    return report


def _singles_of(ctx: Context) -> tuple[list[str], int]:
    """The house numbers on November's list, and the deliveries since its run."""
    with ctx.sessions() as session:
        page = singles_page(session, ctx, "2026-11", page=1, page_size=50)
    numbers = sorted(item["address"]["huisnummer"] for item in page.items)
    assert page.total == len(numbers)
    return numbers, page.deliveries_since_run


def test_a_delivery_stored_during_the_run_waits_for_the_rerun(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """November: cases at 1 (health and energy) and 5 (rent); single at 2, 3 and 9. A water
    signal at 2 stored while the run matches was not judged by it: 2 stays single, and the
    delivery is counted as since the run, until the rerun makes a case of 2."""
    november(ctx, clock)
    report = _during_the_run(ctx, lambda: _late(ctx, "Water NV", row("W2", nummer="2")))
    assert report.figures["singles"] == 3
    numbers, since = _singles_of(ctx)
    assert numbers == ["2", "3", "9"]
    with ctx.sessions() as session:
        water = session.scalars(
            sa.select(Delivery.period).join(Partner).where(Partner.name == "Water NV")
        ).one()
    if water == "2026-12":  # SQLite: the delivery waited for the run, then went to December
        assert not _on_postgres(ctx)
        assert since == 0
        return
    assert (water, since) == ("2026-11", 1)
    rerun = run_period(ctx, period="2026-11", rerun=True)
    assert rerun.figures["singles"] == 2
    assert _singles_of(ctx) == (["3", "9"], 0)


def test_a_delivery_replaced_during_the_run_drops_out(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """The energy partner replaces its file while the run matches, without number 9: those
    arrears are withdrawn from the list; the new file waits for the rerun."""
    november(ctx, clock)
    _during_the_run(ctx, lambda: _late(ctx, "Energie NV", row("E1", nummer="1")))
    expected = (["2", "3"], 1) if _on_postgres(ctx) else (["2", "3", "9"], 0)
    assert _singles_of(ctx) == expected


def test_each_run_records_the_deliveries_it_read_and_0024_fills_earlier_runs(
    ctx: Context, clock: Clock, partners: None, database_url: str
) -> None:
    """The monthly run keeps the ids of the deliveries it read: not the health insurer's file
    that a second one replaced before the run. Runs made before migration 0024 get those
    current when they started (down to 0023, the column goes, and up again); a crisis run
    keeps none."""
    november(ctx, clock)
    clock.set_local(2026, 11, 20, 9, 0)
    deliver(ctx, "Zorg UA", row("Z1", nummer="1"))
    deliver(ctx, "Water NV", row("W7", nummer="7", crisis="ja"))
    clock.set_local(2026, 11, 25, 7, 0)
    assert [r.figures["cases"] for r in crisis_run(ctx) if r.run is not None] == [1]
    clock.set_local(2026, 11, 26, 2, 0)
    report = run_period(ctx)
    with ctx.sessions() as session:
        rows = session.execute(
            sa.text("SELECT id, status FROM deliveries WHERE period = '2026-11'")
        ).all()
    # Text of 32 hex digits on SQLite.
    expected = sorted(str(uuid.UUID(str(d))) for d, status in rows if status == "accepted")
    assert (len(rows), len(expected)) == (5, 4)
    assert json.loads(report.run.delivery_ids or "[]") == expected
    ctx.engine.dispose()
    migrate.downgrade(database_url, "0023")
    migrate.upgrade(database_url)
    with ctx.sessions() as session:
        filled = dict(session.execute(sa.select(Run.kind, Run.delivery_ids)).all())
    assert filled.keys() == {"crisis", "monthly"}
    assert filled["crisis"] is None
    assert json.loads(filled["monthly"] or "[]") == expected


def test_only_the_deliveries_the_run_read_count(ctx: Context, clock: Clock, partners: None) -> None:
    """A current delivery that is not in the run's record (as one stored while it matched, on
    PostgreSQL) is not listed, and counted as since the run: on either backend."""
    november(ctx, clock)
    report = run_period(ctx)
    assert _singles_of(ctx) == (["2", "3", "9"], 0)
    with ctx.sessions() as session, session.begin():
        energy = session.scalars(
            sa.select(Delivery.id).join(Partner).where(Partner.name == "Energie NV")
        ).one()
        read = [i for i in json.loads(report.run.delivery_ids or "[]") if i != str(energy)]
        session.execute(
            sa.update(Run).where(Run.id == report.run.id).values(delivery_ids=json.dumps(read))
        )
    assert _singles_of(ctx) == (["2", "3"], 1)


def test_persons_at_one_address_are_told_apart_by_birth_date(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """At number 20 two signals of the same person are one person; two people of one name (a
    father and a son) are two, each with his own phone number. Number 21 is a case."""
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(
        ctx,
        "Zorg UA",
        row("Z1", nummer="20"),
        row("Z2", nummer="20", geboren="2005-02-03", telefoon="0687654321"),
        row("Z4", nummer="20", bedrag="300,00"),
        row("Z3", nummer="21"),
    )
    deliver(ctx, "Energie NV", row("E1", nummer="21"))
    clock.set_local(2026, 11, 26, 2, 0)
    assert run_period(ctx).figures["cases"] == 1  # number 21: two partners
    with ctx.sessions() as session:
        page = singles_page(session, ctx, None, page=1, page_size=50)
    [item] = page.items
    assert [p["telefoon"] for p in item["persons"]] == ["0612345678", "0687654321"]
    assert [s["referentie"] for s in item["signals"]] == ["Z1", "Z2", "Z4"]


def test_set_aside_signals_and_addresses_with_a_case_are_not_listed(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """After November's run (single at 2, 3 and 9): a signal the run set aside (here number 3's,
    as stale) is not listed, while the outcomes runs before 2026-11-23 stored for every signal
    ("single", "matched") are no reason (number 2's); an address where the period has a case
    (number 9, as one a rerun kept for its work) is not listed."""
    november(ctx, clock)
    run_period(ctx)
    refs = signal_ids_by_reference(ctx)
    with ctx.sessions() as session, session.begin():
        session.add_all(
            [
                SignalState(signal_id=refs["Z3"], status=ARRIVED, run_outcome="stale"),
                SignalState(signal_id=refs["Z2"], status=ARRIVED, run_outcome="single"),
            ]
        )
        nine = session.get_one(Signal, refs["E9"]).address_hash
        one = session.get_one(Signal, refs["E1"]).address_hash
        session.execute(sa.update(Case).where(Case.address_hash == one).values(address_hash=nine))
    assert _singles_of(ctx) == (["2"], 0)


def test_a_person_without_a_birth_date_is_one_person(
    ctx: Context, clock: Clock, partners: None
) -> None:
    """Without a birth date (no keyed hash of the person) a person is told apart by initials
    and surname: one person, with the phone number one of the signals gave."""
    clock.set_local(2026, 11, 10, 9, 0)
    deliver(ctx, "Zorg UA", row("Z1", nummer="30", geboren=""), row("Z2", nummer="30", geboren=""))
    clock.set_local(2026, 11, 26, 2, 0)
    run_period(ctx)
    with ctx.sessions() as session:
        [item] = singles_page(session, ctx, None, page=1, page_size=50).items
        hashes = session.scalars(sa.select(Signal.person_hash)).all()
    assert hashes == [None, None]
    assert [(p["achternaam"], p["telefoon"]) for p in item["persons"]] == [("Jansen", "0612345678")]
