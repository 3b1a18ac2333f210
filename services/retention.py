"""Retention: personal data is removed when it is no longer needed (``vroegsignaal purge``).

No national retention period is set by law; municipalities choose, and six months after receipt
is common practice. The rules, with ``R = VS_RETENTION_MONTHS`` (6) and
``W = VS_RECIDIVE_MONTHS`` (6):

1. **Signals that led to no case** (singles, stale, repeats, below the minimum, and every signal of
   a superseded delivery that no case holds: a case being worked on that the replacing delivery no
   longer makes keeps the signals it was made from, and they go by rule 2): R months after the
   delivery was received, the envelope with names, address, contact details and BSN is deleted, and
   so are the keyed address, PC6 and person hashes. What stays is anonymous: partner, kind, amount,
   dates, PC4, status.
2. **Closed cases**: R months after closure, the same for their signals, and the notes of their
   contact attempts, the reasons of their transfers and the case's own keyed PC6 hash (it routed
   the case; recidivism does not need it) are deleted.
3. **What recidivism needs** (the case with its keyed address hash and its dates) is kept as long
   as the case can still make a later case "opeenvolgend": until its period is more than W months
   old (and, for a closed case, R months after closure). Then the case itself is deleted, with its
   links, contact attempts and history. The sets of each period's signalled addresses
   (``signalled_addresses``: 64-bit keys of the address hashes, the recidive rule's look-back
   at signals without a case) are kept as long and deleted then too: a signal without a case
   leaves its address key there after rule 1 removed its own hashes, until its period is more
   than W months old. A recurrent case keeps the periods its address was signalled in before
   (``cases.signalled_periods``, the reason for its classification) as long as the case.
4. **Open cases** are never purged: somebody is working on them.

Anonymous counts for reporting (the runs' figures) are kept. The purge runs daily by cron, can be
previewed with ``--dry-run``, and is an audit event with its counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, exists, func, select, update
from sqlalchemy.orm import Session

from services.matcher import signalled
from services.matcher.repository import delete_cases
from shared.context import Context
from shared.models import (
    Case,
    CaseEvent,
    CaseSignal,
    CaseStatus,
    ContactAttempt,
    Delivery,
    Signal,
    signal_in_delivery,
)
from shared.periods import Period, local_today, months_before


@dataclass
class PurgeReport:
    cutoff: str  # received or closed before this moment
    recidive_before_period: str  # cases of earlier periods are beyond the recidive window
    signals_without_case: int = 0
    signals_of_closed_cases: int = 0
    case_pc6_hashes: int = 0  # closed cases' own keyed PC6 hashes
    contact_notes: int = 0
    transfer_reasons: int = 0
    cases_deleted: int = 0
    signalled_address_sets: int = 0  # periods whose set of signalled addresses went
    dry_run: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _count(session: Session, query: Select[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def purge(ctx: Context, session: Session, *, dry_run: bool = False) -> PurgeReport:
    """Apply the retention rules in the caller's transaction; see the module docstring."""
    now = ctx.now()
    cutoff = months_before(now, ctx.settings.retention_months)
    today = local_today(now, ctx.tz)
    recidive_edge = Period(today.year, today.month).shift(-ctx.settings.recidive_months)
    report = PurgeReport(cutoff.isoformat(), str(recidive_edge), dry_run=dry_run)

    in_a_case = exists().where(CaseSignal.signal_id == Signal.id)
    of_old_delivery = exists().where(Delivery.received_at < cutoff, signal_in_delivery())
    without_case = select(Signal.id).where(Signal.purged_at.is_(None), ~in_a_case, of_old_delivery)
    closed_long_ago = select(Case.id).where(
        Case.status == CaseStatus.closed.value, Case.closed_at < cutoff
    )
    of_closed = select(Signal.id).where(
        Signal.purged_at.is_(None),
        Signal.id.in_(select(CaseSignal.signal_id).where(CaseSignal.case_id.in_(closed_long_ago))),
    )
    case_pc6 = select(Case.id).where(Case.id.in_(closed_long_ago), Case.pc6_hash.is_not(None))
    notes = select(ContactAttempt.id).where(
        ContactAttempt.case_id.in_(closed_long_ago), ContactAttempt.notitie.is_not(None)
    )
    reasons = select(CaseEvent.id).where(
        CaseEvent.case_id.in_(closed_long_ago), CaseEvent.reason.is_not(None)
    )
    expired_cases = select(Case.id).where(
        Case.id.in_(closed_long_ago), Case.period < str(recidive_edge)
    )
    report.signals_without_case = _count(session, without_case)
    report.signals_of_closed_cases = _count(session, of_closed)
    report.case_pc6_hashes = _count(session, case_pc6)
    report.contact_notes = _count(session, notes)
    report.transfer_reasons = _count(session, reasons)
    report.cases_deleted = _count(session, expired_cases)
    report.signalled_address_sets = signalled.purge_before(session, recidive_edge, dry_run=dry_run)
    if dry_run:
        return report

    scrubbed = {
        Signal.pii: None,
        Signal.pii_key_id: None,
        Signal.person_hash: None,
        Signal.address_hash: None,
        Signal.pc6_hash: None,
        Signal.purged_at: now,
    }
    # Materialise the ids first: the updates change what the subqueries select.
    for query in (without_case, of_closed):
        signal_ids = list(session.scalars(query))
        for start in range(0, len(signal_ids), 5000):
            chunk = signal_ids[start : start + 5000]
            session.execute(update(Signal).where(Signal.id.in_(chunk)).values(scrubbed))
    session.execute(
        update(Case)
        .where(Case.id.in_(case_pc6))
        .values(pc6_hash=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(ContactAttempt)
        .where(ContactAttempt.id.in_(notes))
        .values(notitie=None, notitie_key_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(CaseEvent)
        .where(CaseEvent.id.in_(reasons))
        .values(reason=None, reason_key_id=None)
        .execution_options(synchronize_session=False)
    )
    delete_cases(session, list(session.scalars(expired_cases)))
    session.flush()
    return report
