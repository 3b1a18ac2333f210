"""The single signals of a period: the households owed an offer of help by letter.

The Wgs obliges the municipality to offer help to every household a partner signals, not only to
those with several arrears. The run makes a case of an address with signals of two or more
partners, or with rent arrears or a crisis (``services.matcher.rules``); the other addresses with
a fresh signal are *single* (the national monitor's "enkelvoudig"): no team visits them, and the
municipality offers its help another way, by letter or a phone call (the domain: letters alone
reach about 6 %, a phone call 59 %). This is their work list, one item per address.

* **What counts**: the signals of the deliveries the period's latest monthly run read
  (``runs.delivery_ids``, migration 0024) that are still current and not purged, that the run
  did not set aside (stale, below the minimum, a repeat: ``signal_states.run_outcome``) and that
  are in no case, at addresses without a case in the period. Right after the run the number of
  addresses is the run's ``singles`` figure, less any address where a case stands that a rerun
  kept for the work done on it though the rerun found the address single.
  A delivery the run did not read (stored while it was matching: a file over SFTP written
  before the deadline) is judged by a rerun; until then its signals are not listed, and
  ``deliveries_since_run`` says how many such deliveries the period has (once a period has had
  its run, a late file goes to the next period: ``services.ingest.service``). A delivery
  replaced since the run drops out (the partner withdrew those arrears; its replacement waits
  for the rerun).
* **What an item holds**: the address and the persons named in its signals (initials, name,
  phone and e-mail: what a letter or a call needs; no birth date, no BSN), and per signal the
  partner, kind, amount, dates, the partner's flags and its own reference. Ordered by the
  four-digit postcode (a letter run by area), then by the address's key.
* **Who**: ``sdv`` (who makes the offer) and ``coordinator``. Each page read is an audit event
  (``singles.read``, with the period and the number of addresses): it opens the envelopes of
  households that have no case.
* **A letter run**: ``vroegsignaal export singles`` writes the whole list, read as one stream
  (:func:`each_single`), as a file for a mail merge (:func:`write_csv`), audited as
  ``export.singles`` (with the number of addresses counted before the file is written).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import ColumnElement, Row, Select, and_, exists, false, func, or_, select
from sqlalchemy.orm import Session

from services.matcher import repository as runs
from services.matcher.rules import OUTCOME_MATCHED, OUTCOME_SINGLE
from shared.bulk import is_postgres
from shared.context import Context
from shared.crypto import signal_aad
from shared.errors import NotFound
from shared.ids import owns_block
from shared.models import (
    Case,
    CaseSignal,
    Partner,
    Role,
    Run,
    RunKind,
    RunStatus,
    Signal,
    SignalState,
)

SINGLES_READERS = (Role.sdv, Role.coordinator)
ADDRESS_FIELDS = ("straat", "huisnummer", "huisnummer_suffix", "postcode", "woonplaats")
# What a letter or a call needs of a person: no birth date, no BSN.
CONTACT_FIELDS = ("voorletters", "tussenvoegsel", "achternaam", "telefoon", "email")


@dataclass(frozen=True)
class SinglesPage:
    run: Run
    total: int
    deliveries_since_run: int
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class Judged:
    """A period's latest monthly run, the condition on a signal of being single after it, and
    how many of the period's current deliveries it did not read."""

    run: Run
    single: ColumnElement[bool]
    deliveries_since_run: int


def latest_run(session: Session, period: str | None) -> Run:
    """The period's latest completed monthly run (without a period: of the latest period that
    has one); NotFound when there is none."""
    if period is not None:
        found = runs.completed_run(session, period)
    else:
        found = session.scalars(
            select(Run)
            .where(Run.status == RunStatus.completed, Run.kind == RunKind.monthly)
            .order_by(Run.period.desc(), Run.started_at.desc())
        ).first()
    if found is None:
        raise NotFound(
            f"no completed run for {period}" if period else "no completed run yet",
            period=period,
        )
    return found


def judged(session: Session, period: str | None) -> Judged:
    """What the period's latest monthly run judged (see the module text)."""
    run = latest_run(session, period)
    read = {uuid.UUID(i) for i in json.loads(run.delivery_ids or "[]")}
    current = runs.current_deliveries(session, run.period)
    kept = [(d, first, last) for d, first, last in current if d in read]
    return Judged(run, _single_signal(run, kept), len(current) - len(kept))


def singles_page(
    session: Session, ctx: Context, period: str | None, *, page: int, page_size: int
) -> SinglesPage:
    """One page of the work list (see the module text).

    The period's signals are read once: grouped by address, the page's addresses come with
    their signals' ids and the number of addresses in all (a window over the groups); the
    signals are then read by their ids. (With the number counted apart, and the page's signals
    found by address, each of the three read the month's signals: at national scale, 606,000
    single addresses of a million signals, 3.0 to 3.2 s a page.)
    """
    found = judged(session, period)
    ids = func.array_agg(Signal.id) if is_postgres(session) else func.group_concat(Signal.id)
    grouped = session.execute(
        select(Signal.address_hash, ids.label("ids"), func.count().over().label("total"))
        .where(found.single)
        .group_by(Signal.address_hash)
        .order_by(func.min(Signal.pc4), Signal.address_hash)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    # Past the end: the groups counted alone.
    total = int(grouped[0].total) if grouped else count_addresses(session, found)
    wanted = [int(i) for g in grouped for i in _id_list(g.ids)]
    by_address: dict[str, list[Row[Any]]] = {g.address_hash: [] for g in grouped}
    for row in session.execute(_signals(Signal.id.in_(wanted))) if wanted else ():
        by_address[row.address_hash].append(row)
    items = [_item(ctx, signals) for signals in by_address.values()]
    return SinglesPage(found.run, total, found.deliveries_since_run, items)


def count_addresses(session: Session, found: Judged) -> int:
    """How many addresses the work list holds."""
    addresses = select(Signal.address_hash).where(found.single).distinct().subquery()
    return int(session.scalar(select(func.count()).select_from(addresses)) or 0)


def _id_list(ids: Any) -> list[Any]:
    """An aggregate of ids: a list on PostgreSQL (``array_agg``), text on SQLite
    (``group_concat``, comma separated)."""
    return list(ids) if isinstance(ids, list) else str(ids).split(",")


def each_single(session: Session, ctx: Context, found: Judged) -> Iterator[dict[str, Any]]:
    """Every item of the work list, in its order, read as one stream (a letter run's export:
    at national scale half a million addresses, not held in memory at once)."""
    rows = session.execute(
        _signals(found.single).order_by(None).order_by(Signal.pc4, Signal.address_hash, Signal.id),
        execution_options={"yield_per": 2_000},
    )
    for _, signals in itertools.groupby(rows, key=lambda r: r.address_hash):
        yield _item(ctx, list(signals))


def _signals(*conditions: ColumnElement[bool]) -> Select[*tuple[Any, ...]]:
    """The columns an item is built from, of the signals that meet the conditions."""
    return (
        select(
            Signal.id,
            Signal.delivery_id,
            Signal.row_number,
            Signal.partner_id,
            Signal.address_hash,
            Signal.person_hash,
            Signal.kind,
            Signal.bedrag_cent,
            Signal.achterstand_sinds,
            Signal.signaaldatum,
            Signal.warme_overdracht,
            Signal.eindelevering,
            Signal.pii,
            Signal.pii_key_id,
            Partner.name.label("partner_name"),
        )
        .join(Partner, Partner.id == Signal.partner_id)
        .where(*conditions)
        .order_by(Signal.id)
    )


def _single_signal(run: Run, deliveries: runs.Ranges) -> ColumnElement[bool]:
    """The condition on a signal of being single after ``run``: of one of these deliveries
    (each in its range of ids; a range kept from before the blocks also by its delivery), not
    purged, not set aside by the run, in no case, and at an address without a case in the
    period (a case kept by a rerun for its work, whose address the rerun found single: that
    household has its case)."""
    in_deliveries = or_(
        false(),
        *(
            Signal.id.between(first, last)
            if owns_block(int(first or 0), int(last or 0))
            else and_(Signal.id.between(first, last), Signal.delivery_id == delivery_id)
            for delivery_id, first, last in deliveries
        ),
    )
    # Set aside: stale, below the minimum, a repeat. (Runs before 2026-11-23 stored "matched"
    # and "single" as well; those are no reason.)
    set_aside = exists().where(
        SignalState.signal_id == Signal.id,
        SignalState.run_outcome.is_not(None),
        SignalState.run_outcome.not_in((OUTCOME_MATCHED, OUTCOME_SINGLE)),
    )
    in_case = exists().where(CaseSignal.signal_id == Signal.id)
    address_has_case = exists().where(
        Case.period == run.period, Case.address_hash == Signal.address_hash
    )
    return and_(
        in_deliveries,
        Signal.address_hash.is_not(None),
        ~set_aside,
        ~in_case,
        ~address_has_case,
    )


def _item(ctx: Context, signals: list[Row[Any]]) -> dict[str, Any]:
    """One address: where, who, and its signals."""
    address: dict[str, Any] | None = None
    persons: dict[Any, dict[str, Any]] = {}
    listed = []
    for signal in signals:
        pii: dict[str, Any] = {}
        if signal.pii is not None and signal.pii_key_id is not None:
            aad = signal_aad(str(signal.delivery_id), signal.row_number)
            pii = ctx.cipher.decrypt_json(signal.pii, aad, signal.pii_key_id)
        if address is None and pii:
            address = {k: pii.get(k) for k in ADDRESS_FIELDS}
        if pii:
            # One person per initials and keyed hash of surname and birth date (a father and a
            # son of one name stay two, and so do twins), or per initials and surname where the
            # birth date is not known; what one signal lacks is taken from another.
            person = {k: pii.get(k) for k in CONTACT_FIELDS}
            who = (signal.person_hash or person["achternaam"], person["voorletters"])
            known = persons.setdefault(who, person)
            known.update({k: v for k, v in person.items() if known[k] is None})
        listed.append(
            {
                "id": signal.id,
                "partner": {"id": str(signal.partner_id), "name": signal.partner_name},
                "kind": signal.kind,
                "bedrag_cent": signal.bedrag_cent,
                "achterstand_sinds": signal.achterstand_sinds.isoformat(),
                "signaaldatum": signal.signaaldatum.isoformat(),
                "warme_overdracht": signal.warme_overdracht,
                "eindelevering": signal.eindelevering,
                "referentie": pii.get("referentie"),
            }
        )
    return {"address": address, "persons": list(persons.values()), "signals": listed}


# The letter run's file: one line per address, for a mail merge (the columns in Dutch, as the
# letters are; ';' and a byte order mark, as Dutch spreadsheet programs read CSV).
CSV_COLUMNS = (
    "postcode",
    "huisnummer",
    "huisnummer_toevoeging",
    "straat",
    "woonplaats",
    "namen",
    "telefoon",
    "email",
    "partners",
    "soorten",
    "bedrag",
    "referenties",
)
# A cell a spreadsheet would take for a formula starts with one of these: written after a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_line(item: dict[str, Any]) -> list[str]:
    """An item as the letter file's columns (:data:`CSV_COLUMNS`)."""
    address = item["address"] or {}
    persons, signals = item["persons"], item["signals"]

    def joined(values: Iterable[Any]) -> str:
        return " / ".join(dict.fromkeys(str(v) for v in values if v))

    name = joined(
        " ".join(p[k] for k in ("voorletters", "tussenvoegsel", "achternaam") if p[k])
        for p in persons
    )
    cents = sum(s["bedrag_cent"] for s in signals)
    cells = [
        address.get("postcode"),
        address.get("huisnummer"),
        address.get("huisnummer_suffix"),
        address.get("straat"),
        address.get("woonplaats"),
        name,
        joined(_national(p["telefoon"]) for p in persons),
        joined(p["email"] for p in persons),
        joined(s["partner"]["name"] for s in signals),
        joined(s["kind"] for s in signals),
        f"{cents // 100},{cents % 100:02d}",
        joined(s["referentie"] for s in signals),
    ]
    return [_cell(c) for c in cells]


def _national(phone: str | None) -> str | None:
    """A number in international form as dialled from the Netherlands (``+31612345678`` →
    ``0612345678``, ``+4915112345678`` → ``004915112345678``): in the file it would otherwise
    start with ``+`` and be written after a quote (:func:`_cell`), which a letter would show."""
    digits = phone[1:] if phone and phone.startswith("+") else ""
    if not (digits.isascii() and digits.isdigit()):
        return phone
    return "0" + digits[2:] if digits.startswith("31") and len(digits) == 11 else "00" + digits


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(items: Iterable[dict[str, Any]], handle: BinaryIO) -> int:
    """The letter file (UTF-8 with a byte order mark, ';'), one line per item; how many."""
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="", write_through=True)
    writer = csv.writer(text, delimiter=";")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for item in items:
        writer.writerow(csv_line(item))
        count += 1
    text.flush()
    text.detach()
    return count
