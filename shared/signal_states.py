"""What became of signals: their status and why a run set them aside (``signal_states``).

A signal without a row in ``signal_states`` is as it arrived (``shared.models.ARRIVED``, no
outcome); writers here add or change rows only where a signal's state changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import cast

import polars as pl
from sqlalchemy import Table, literal, select
from sqlalchemy.orm import Session

from shared.bulk import dialect_insert, upsert_from_frame
from shared.models import ARRIVED, CaseSignal, SignalState, signal_status


def set_states(session: Session, frame: pl.DataFrame) -> None:
    """Give signals a status and a run outcome (frame: signal_id, status, run_outcome); only
    those whose state changes are written."""
    upsert_from_frame(
        session,
        cast(Table, SignalState.__table__),
        "signal_id",
        frame.select("signal_id", "status", "run_outcome"),
        absent={"status": ARRIVED, "run_outcome": None},
    )


def set_status_of_cases(
    session: Session,
    case_ids: Sequence[uuid.UUID],
    status: str,
    only: Sequence[str] | None = None,
) -> None:
    """Give the signals of ``case_ids`` ``status`` (their run outcome stays); with ``only``,
    those whose status is one of these."""
    insert = dialect_insert(session)
    for start in range(0, len(case_ids), 1000):
        chunk = list(case_ids[start : start + 1000])
        current = signal_status()
        conditions = [CaseSignal.case_id.in_(chunk), current != status]
        if only is not None:
            conditions.append(current.in_(only))
        chosen = (
            select(CaseSignal.signal_id, literal(status))
            .select_from(CaseSignal)
            .outerjoin(SignalState, SignalState.signal_id == CaseSignal.signal_id)
            .where(*conditions)
        )
        statement = insert(SignalState).from_select(["signal_id", "status"], chosen)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[SignalState.signal_id],
                set_={"status": statement.excluded.status},
            )
        )
