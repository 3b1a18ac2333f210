"""Retention (purge with a controlled clock) and encryption key rotation, on a real database."""

from __future__ import annotations

import uuid

import polars as pl
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from services.keys import key_usage, rotate
from services.matcher import signalled
from services.matcher.service import run_period
from services.retention import purge
from services.routing.service import add_contact_attempt, case_detail, close_case, transfer
from shared.auth import Principal
from shared.context import Context, build_context
from shared.db import Base, unit_of_work
from shared.models import (
    Case,
    CaseEvent,
    ContactAttempt,
    Contactsoort,
    Eindresultaat,
    Route,
    Signal,
    SignalledAddresses,
)
from shared.periods import months_before
from shared.settings import new_key_text
from tests.conftest import Clock, make_settings
from tests.helpers import register, row
from tests.matcher.test_run import deliver

COORDINATOR = Principal(uuid.uuid4(), "test", "coordinator")


@pytest.fixture
def october(ctx: Context, clock: Clock) -> dict[str, uuid.UUID]:
    """October: a single signal (water, number 20), a rent case (3, closed on 30 October with a
    note and a transfer) and a two-partner case (1, still open)."""
    register(ctx, "Huur BV", "huur")
    register(ctx, "Energie NV", "energie")
    register(ctx, "Zorg UA", "zorg")
    register(ctx, "Water NV", "water")
    clock.set_local(2026, 10, 10, 9, 0)
    deliver(ctx, "Huur BV", row("H3", nummer="3", naam="Verhuurd"))
    deliver(ctx, "Energie NV", row("E1", nummer="1", naam="Tweemaal"))
    deliver(ctx, "Zorg UA", row("Z1", nummer="1", naam="Tweemaal"))
    deliver(ctx, "Water NV", row("W20", nummer="20", naam="Alleenstaand"))
    clock.set_local(2026, 10, 26, 2, 0)
    run_period(ctx)
    clock.set_local(2026, 10, 30, 15, 0)
    with unit_of_work(ctx.sessions) as session:
        rent = session.scalars(sa.select(Case).where(Case.has_rent)).one()
        other = session.scalars(sa.select(Case).where(~Case.has_rent)).one()
        add_contact_attempt(
            session,
            ctx,
            COORDINATOR,
            rent,
            soort=Contactsoort.huisbezoek,
            datum=clock().astimezone(ctx.tz).date(),
            dagdeel=None,
            bereikt=True,
            notitie="geheime notitie",
        )
        transfer(
            session,
            ctx,
            COORDINATOR,
            rent,
            to_route=Route.budgetcoach,
            team=None,
            reason="wil een budgetcoach",
        )
        close_case(session, ctx, COORDINATOR, rent, Eindresultaat.advies_quick_fix)
        return {"rent": rent.id, "open": other.id}


def _signal(ctx: Context, name_ref: str) -> Signal:
    with ctx.sessions() as session:
        for signal in session.scalars(sa.select(Signal)):
            if signal.pii is None:
                continue
            pii = ctx.cipher.decrypt_json(
                signal.pii,
                f"signal:{signal.delivery_id}:{signal.row_number}".encode(),
                str(signal.pii_key_id),
            )
            if pii["referentie"] == name_ref:
                return signal
    raise AssertionError(name_ref)


def _everywhere(ctx: Context, needle: str) -> list[str]:
    """Every table.column whose text holds ``needle``."""
    found = []
    with ctx.sessions() as session:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if not isinstance(column.type, sa.String | sa.Text):
                    continue
                hit = session.scalar(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(sa.cast(column, sa.Text).contains(needle))
                )
                if hit:
                    found.append(f"{table.name}.{column.name}")
    return found


def _in_set(ctx: Context, period: str, address_hash: str) -> bool:
    """Whether the period's set of signalled addresses holds the address (none: False)."""
    with ctx.sessions() as session:
        stored = session.get(SignalledAddresses, period)
    keys = None if stored is None else signalled.decode(stored.address_keys)
    if keys is None:
        return False
    return bool(keys.is_in(signalled.address_keys(pl.Series([address_hash])).implode()).any())


def test_months_before_clamps_to_the_month_end() -> None:
    from datetime import UTC, datetime

    assert months_before(datetime(2027, 8, 31, tzinfo=UTC), 6) == datetime(2027, 2, 28, tzinfo=UTC)
    assert months_before(datetime(2027, 1, 15, tzinfo=UTC), 6) == datetime(2026, 7, 15, tzinfo=UTC)


def test_nothing_is_purged_too_early(
    ctx: Context, clock: Clock, october: dict[str, uuid.UUID]
) -> None:
    clock.set_local(2027, 4, 1, 3, 0)
    with unit_of_work(ctx.sessions) as session:
        report = purge(ctx, session)
    assert report.signals_without_case == 0
    assert report.cases_deleted == 0


def test_purge_removes_what_has_expired_and_keeps_open_work(
    ctx: Context, clock: Clock, october: dict[str, uuid.UUID]
) -> None:
    single = _signal(ctx, "W20")
    rent_signal = _signal(ctx, "H3")
    assert single.address_hash is not None
    single_hash, rent_hash = single.address_hash, str(rent_signal.address_hash)
    # 15 April 2027: six months after the October deliveries, not yet after the closure.
    clock.set_local(2027, 4, 15, 3, 0)
    with unit_of_work(ctx.sessions) as session:
        preview = purge(ctx, session, dry_run=True)
    assert preview.signals_without_case == 1
    assert preview.signals_of_closed_cases == 0
    assert preview.signalled_address_sets == 0  # October can still make April's cases recidive
    assert _everywhere(ctx, single_hash) == ["signals.address_hash"]  # dry run changed nothing
    with unit_of_work(ctx.sessions) as session:
        report = purge(ctx, session)
    assert report.signals_without_case == 1
    assert _everywhere(ctx, single_hash) == []
    # What recidivism needs stays until October is beyond the window: its set of addresses.
    assert _in_set(ctx, "2026-10", single_hash)
    with ctx.sessions() as session:
        scrubbed = session.get(Signal, single.id)
        assert scrubbed is not None
        assert (scrubbed.pii, scrubbed.person_hash, scrubbed.pc6_hash) == (None, None, None)
        assert scrubbed.purged_at is not None
        assert scrubbed.bedrag_cent > 0  # the anonymous part stays
    with ctx.sessions() as session:
        closed = session.get(Case, october["rent"])
        assert closed is not None
        assert closed.pc6_hash is not None  # closed on 30 October: not six months ago yet
    # 30 April 2027: the rent case was closed six months ago. October is still in the recidive
    # window, so the case stays with its address hash; its signal's data and its PC6 hash go.
    clock.set_local(2027, 4, 30, 18, 0)
    with unit_of_work(ctx.sessions) as session:
        report = purge(ctx, session)
    assert (report.signals_of_closed_cases, report.case_pc6_hashes) == (1, 1)
    assert report.cases_deleted == 0
    assert _everywhere(ctx, rent_hash) == ["cases.address_hash"]
    with ctx.sessions() as session:
        closed = session.get(Case, october["rent"])
        assert closed is not None
        assert closed.pc6_hash is None
    # 1 May 2027: the rent case is beyond the recidive window.
    clock.set_local(2027, 5, 1, 3, 0)
    with unit_of_work(ctx.sessions) as session:
        report = purge(ctx, session)
    assert report.signals_of_closed_cases == 0  # gone the day before
    assert report.cases_deleted == 1
    assert report.signalled_address_sets == 1  # October's addresses, beyond the window too
    assert _everywhere(ctx, rent_hash) == []
    with ctx.sessions() as session:
        assert session.get(Case, october["rent"]) is None
        for table in (ContactAttempt, CaseEvent):
            left = session.scalar(
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.case_id == october["rent"])
            )
            assert left == 0
        still_open = session.get(Case, october["open"])
        assert still_open is not None
        assert session.scalars(sa.select(SignalledAddresses.period)).all() == []
    assert not _in_set(ctx, "2026-10", single_hash)
    assert _signal(ctx, "E1").pii is not None  # an open case keeps its data
    with unit_of_work(ctx.sessions) as session:
        again = purge(ctx, session)
    assert (
        again.signals_without_case,
        again.signals_of_closed_cases,
        again.case_pc6_hashes,
        again.cases_deleted,
        again.signalled_address_sets,
    ) == (0, 0, 0, 0, 0)


def test_rotation_moves_every_envelope_to_the_new_key(
    ctx: Context, clock: Clock, october: dict[str, uuid.UUID], database_url: str
) -> None:
    old_keys = ctx.settings.encryption_keys
    assert old_keys is not None
    rotated_settings = make_settings(
        database_url,
        ctx.settings.data_dir,
        encryption_keys=SecretStr("k2:" + new_key_text() + "," + old_keys.get_secret_value()),
        address_hash_key=ctx.settings.address_hash_key,
    )
    rotated = build_context(rotated_settings, clock=clock)
    try:
        assert set(key_usage(rotated)["signals"]) == {"k1"}
        done = rotate(rotated, batch=2)
        assert done["signals"] == 4
        assert done["transfer_reasons"] == 1
        usage = key_usage(rotated)
        assert {k for counts in usage.values() for k in counts} == {"k2"}
        # Only the new key is needed now.
        new_only = make_settings(
            database_url,
            ctx.settings.data_dir,
            encryption_keys=SecretStr(
                rotated_settings.encryption_keys.get_secret_value().split(",")[0]  # type: ignore[union-attr]
            ),
            address_hash_key=ctx.settings.address_hash_key,
        )
        fresh = build_context(new_only, clock=clock)
        with fresh.sessions() as session:
            case = session.get(Case, october["open"])
            assert case is not None
            detail = case_detail(session, fresh, case)
        assert detail["persons"][0]["achternaam"] == "Tweemaal"
        fresh.engine.dispose()
    finally:
        rotated.engine.dispose()


def test_keys_appear_nowhere_in_the_openapi_document_or_settings_output(ctx: Context) -> None:
    import json

    from services.app import create_app

    keys = [
        str(ctx.settings.encryption_keys.get_secret_value()).split(":", 1)[1],  # type: ignore[union-attr]
        str(ctx.settings.address_hash_key.get_secret_value()),  # type: ignore[union-attr]
    ]
    document = json.dumps(create_app(ctx).openapi())
    shown = repr(ctx.settings) + str(ctx.settings.model_dump())
    for key in keys:
        assert key not in document
        assert key not in shown
