"""SQL of the matching run: read a period's signals and the history as frames, write the results."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar, cast

import polars as pl
from sqlalchemy import ColumnElement, Table, case, func, select, text
from sqlalchemy.orm import Session

from services.matcher.rules import HISTORY_SCHEMA, SIGNAL_SCHEMA
from shared.bulk import (
    delete_by_keys,
    insert_frame,
    is_postgres,
    read_frame,
    update_from_frame,
)
from shared.ids import owns_block
from shared.models import (
    Case,
    CaseEvent,
    CaseLink,
    CaseSignal,
    ContactAttempt,
    Delivery,
    DeliveryStatus,
    Partner,
    Run,
    RunKind,
    RunStatus,
)
from shared.signal_states import set_states

T = TypeVar("T")


def _uuid_text(session: Session, column: str) -> str:
    """A UUID column as text that compares equal across queries on the same backend."""
    return f"CAST({column} AS TEXT)" if is_postgres(session) else column


# Deliveries as (id, first and last signal id): what finds their signals (shared.ids).
Ranges = Sequence[tuple[Any, int | None, int | None]]


def current_deliveries(session: Session, period: str) -> Ranges:
    """Every partner's current delivery for the period, as (id, first and last signal id)."""
    return [
        (delivery_id, first, last)
        for delivery_id, first, last in session.execute(
            select(Delivery.id, Delivery.first_signal_id, Delivery.last_signal_id)
            .where(
                Delivery.period == period,
                Delivery.status == DeliveryStatus.accepted,
                Delivery.first_signal_id.is_not(None),
            )
            .order_by(Delivery.id)
        )
    ]


def _period_signals(
    session: Session, period: str, *, one_scan: bool = False, deliveries: Ranges | None = None
) -> str:
    """FROM and WHERE of the period's signals (as ``s``): those of every partner's current
    delivery (purged ones excluded), each delivery's in its range of ids
    (``Delivery.first_signal_id``); on PostgreSQL through :func:`signals_in_ranges`, or with
    ``one_scan`` through :func:`signal_ranges_condition` (for a subquery whose values the
    planner must count: see :func:`history`). On PostgreSQL ``deliveries`` are the current
    deliveries when the caller has them (:func:`current_deliveries`; the run reads them once,
    for both of its reads and its record). SQLite joins the deliveries in the statement: the
    run's transaction holds the database's one write lock there, so they are the same.
    """
    if not is_postgres(session):
        return """
            FROM deliveries d
            JOIN signals s ON s.id BETWEEN d.first_signal_id AND d.last_signal_id
                          AND s.delivery_id = d.id
            WHERE d.period = :period AND d.status = 'accepted' AND s.address_hash IS NOT NULL
        """
    current = current_deliveries(session, period) if deliveries is None else deliveries
    if one_scan:
        return f"FROM signals s WHERE ({signal_ranges_condition(current)}) AND {_KEPT}"
    return f"FROM {signals_in_ranges(current)}"


_KEPT = "s.address_hash IS NOT NULL"


def _range_conditions(deliveries: Iterable[tuple[Any, int | None, int | None]]) -> list[str]:
    """Per delivery (id, first and last signal id), the condition on a signal ``s`` of being
    one of its signals: in its range, and, for a range kept from before the blocks, the
    delivery's (see :func:`signals_in_ranges`). The text holds numbers and UUIDs made anew from
    the values given, nothing else."""
    found = []
    for delivery, low, high in deliveries:
        first, last = int(low or 0), int(high or 0)
        mine = (
            ""
            if owns_block(first, last)
            else f" AND s.delivery_id = '{uuid.UUID(str(delivery))}'::uuid"
        )
        found.append(f"s.id BETWEEN {first} AND {last}{mine}")
    return found


def signals_in_ranges(
    deliveries: Iterable[tuple[Any, int | None, int | None]], *, kept_only: bool = True
) -> str:
    """PostgreSQL: the signals of these deliveries (id, first and last signal id), as a
    subquery ``s``; with ``kept_only``, not those purged.

    Each delivery's range is written into the statement as numbers, one ``SELECT`` per delivery
    joined by ``UNION ALL``: then the planner reads each range of the primary key (a dozen at
    national scale). As a join on the ranges it cannot know how many signals a range holds, and
    read all 14 million signals instead (under EXPLAIN ANALYZE on the benchmark's database, with
    the check below on every range: the month's signals 0.70 s against 4.93 s, the history's
    query 4.80 s against 8.93 s). A whole block is the delivery's alone; only a range kept from
    before the blocks is checked on ``delivery_id`` (the planner takes the check for a
    narrowing: with it on every range it expected a few thousand signals and unique-ified the
    history's million addresses, on disk).
    """
    kept = f" AND {_KEPT}" if kept_only else ""
    ranges = [
        f"SELECT s.* FROM signals s WHERE {where}{kept}"  # noqa: S608
        for where in _range_conditions(deliveries)
    ]
    union = " UNION ALL ".join(ranges) or "SELECT s.* FROM signals s WHERE false"
    return f"({union}) AS s"


def signal_ranges_condition(deliveries: Iterable[tuple[Any, int | None, int | None]]) -> str:
    """PostgreSQL: the condition on a signal ``s`` of being one of these deliveries' (id, first
    and last signal id), the ranges joined by ``OR``: one scan of ``signals`` (a bitmap of the
    ranges), whose column statistics the planner then uses, where the rows of a ``UNION ALL``
    come without any (:func:`signals_in_ranges`)."""
    return " OR ".join(f"({where})" for where in _range_conditions(deliveries)) or "false"


# Memory for the run's sorts and hashes (per operation, for the run's transaction only): the
# history's semi-join hashes a month of addresses, a million at national scale, which at the
# default (4 MB) spills to disk in sixteen batches.
RUN_WORK_MEM = "64MB"


def period_signals(session: Session, period: str, deliveries: Ranges | None = None) -> pl.DataFrame:
    """The signals of every partner's current delivery for the period (purged ones excluded);
    ``deliveries`` as in :func:`_period_signals`."""
    query = f"""
        SELECT s.id AS signal_id, {_uuid_text(session, "s.partner_id")} AS partner_id, s.kind,
               s.address_hash, s.pc4, s.pc6_hash, s.person_hash, s.bedrag_cent,
               s.achterstand_sinds, s.signaaldatum, s.crisis, s.warme_overdracht
        {_period_signals(session, period, deliveries=deliveries)}
    """
    # On PostgreSQL the period is in the deliveries' ranges, written into the text.
    params = {} if is_postgres(session) else {"period": period}
    return read_frame(session, query, params, SIGNAL_SCHEMA)


def inputs(
    session: Session,
    first_period: str,
    period: str,
    prepare: Callable[[pl.DataFrame], T],
    *,
    tz: str,
    deliveries: Ranges | None = None,
) -> tuple[T, pl.DataFrame]:
    """The period's signals (:func:`period_signals`), put through ``prepare`` (the rules that
    need only them), and the history (:func:`history`); ``deliveries`` as in
    :func:`_period_signals`.

    On PostgreSQL the history is read on a connection of its own, side by side with the signals:
    each read keeps a server process busy, and the machine has two cores (at national scale
    5.0 to 5.5 s one after the other, 3.4 to 3.55 s side by side). The signals are in first (the
    history's query is the longer: it finds the month's addresses in them too), and ``prepare``
    runs while the history is still being read. Both are reads of committed rows, each statement
    with a snapshot of its own, as they were one after the other in the run's transaction, which
    has written nothing yet; the run's lock is held throughout.
    """
    if not is_postgres(session):
        prepared = prepare(period_signals(session, period))
        return prepared, history(session, first_period, period, tz=tz)
    if deliveries is None:
        deliveries = current_deliveries(session, period)
    # The run's own statements keep the run's work memory (history() sets it on its connection).
    session.execute(text(f"SET LOCAL work_mem = '{RUN_WORK_MEM}'"))
    engine = session.get_bind()

    def read_history() -> pl.DataFrame:
        with Session(engine) as other:
            other.execute(text("SET TRANSACTION READ ONLY"))
            # One server process: the other core is reading the signals. (On its own, the
            # planner's parallel plan builds the hash of the month's addresses once per process.)
            other.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
            return history(other, first_period, period, tz=tz, deliveries=deliveries)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-history") as pool:
        earlier = pool.submit(read_history)
        prepared = prepare(period_signals(session, period, deliveries))
        return prepared, earlier.result()


def history(
    session: Session, first_period: str, period: str, *, tz: str, deliveries: Ranges | None = None
) -> pl.DataFrame:
    """Earlier cases (periods in [first, period), and older ones still open: a signal is a
    repeat while an earlier case is open, :func:`services.matcher.rules.mark_repeats`) at the
    addresses of the period's signals, with their signals' partner, amount and date (kept with
    each link, so the signals themselves are not read) and whether the case had a crisis. A
    closed case's day of closing is the day in ``tz`` (the municipality's), worked out here from
    the moment in UTC that both backends give as text (SQLite has no time zones; its
    ``CAST(... AS DATE)`` gives the year alone).

    Only those addresses' history can matter to the run (:func:`services.matcher.rules.match`):
    at national scale one earlier case in sixteen. Choosing them on the server sends that much
    less (197,000 of 4.8 million rows: 11.5 s → 3.6 s with the transfer and the parsing).

    The month's addresses are read in one scan (:func:`signal_ranges_condition`), so that the
    planner knows roughly how many there are. From the ``UNION ALL`` of the ranges it took them
    for 200 and made them unique first, in a hash that spilled to disk (877,000 addresses of a
    million signals, done 2.7 s into the query's 6.9 s under EXPLAIN ANALYZE), before hashing
    them again for the join; now the join hashes the addresses as they are (a semi-join). At
    national scale, fetched alone, 4.19 to 5.49 s → 3.27 to 4.42 s (three pairs, alternating).
    """
    if is_postgres(session):
        session.execute(text(f"SET LOCAL work_mem = '{RUN_WORK_MEM}'"))
    query = f"""
        SELECT {_uuid_text(session, "c.id")} AS case_id, c.period, c.address_hash,
               {_uuid_text(session, "cs.partner_id")} AS partner_id, cs.bedrag_cent,
               cs.signaaldatum, CASE WHEN c.has_crisis THEN 1 ELSE 0 END AS has_crisis,
               CASE WHEN c.status = 'open' THEN 1 ELSE 0 END AS case_open,
               {_utc_text(session, "c.closed_at")} AS closed_utc
        FROM cases c
        JOIN case_signals cs ON cs.case_id = c.id
        WHERE c.period < :period AND (c.period >= :first OR c.status = 'open')
          AND c.address_hash IN (
              SELECT s.address_hash
              {_period_signals(session, period, one_scan=True, deliveries=deliveries)})
    """  # noqa: S608 (no user input in the text)
    schema = {n: t for n, t in HISTORY_SCHEMA.items() if n != "closed_on"}
    schema |= {"has_crisis": pl.Int8, "case_open": pl.Int8, "closed_utc": pl.String}
    frame = read_frame(session, query, {"first": first_period, "period": period}, schema)
    closed_on = (
        pl.col("closed_utc")
        .str.to_datetime(UTC_TEXT_FORMAT, time_zone="UTC")
        .dt.convert_time_zone(tz)
        .dt.date()
    )
    return frame.with_columns(
        pl.col("has_crisis").cast(pl.Boolean),
        pl.col("case_open").cast(pl.Boolean),
        closed_on.alias("closed_on"),
    ).select(list(HISTORY_SCHEMA))


# A moment as text in UTC, to the second (:func:`_utc_text`).
UTC_TEXT_FORMAT = "%Y-%m-%d %H:%M:%S"


def _utc_text(session: Session, column: str) -> str:
    """A timestamp column as its moment in UTC, ``YYYY-MM-DD HH:MM:SS`` (SQLite stores it so,
    in UTC, with the fraction of a second after it)."""
    if is_postgres(session):
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    return f"substr({column}, 1, 19)"


def completed_run(session: Session, period: str) -> Run | None:
    """The period's latest completed monthly run (or rerun), if any: crisis runs do not count."""
    return session.scalars(
        select(Run).where(*_monthly_runs(period)).order_by(Run.started_at.desc())
    ).first()


def first_completed_run(session: Session, period: str) -> Run | None:
    """The period's first completed monthly run (before any rerun)."""
    return session.scalars(
        select(Run).where(*_monthly_runs(period)).order_by(Run.started_at)
    ).first()


def _monthly_runs(period: str) -> tuple[ColumnElement[bool], ...]:
    return (
        Run.period == period,
        Run.status == RunStatus.completed,
        Run.kind == RunKind.monthly,
    )


def case_addresses(session: Session, period: str) -> pl.DataFrame:
    """The address hashes of the period's cases (column ``address_hash``)."""
    hashes = session.scalars(select(Case.address_hash).where(Case.period == period)).all()
    return pl.DataFrame({"address_hash": list(hashes)}, schema={"address_hash": pl.String})


def route_counts(session: Session, period: str) -> tuple[dict[str, int], int]:
    """The period's cases per route, and how many lie outside every team's area."""
    rows = session.execute(
        select(Case.route, func.count(), func.sum(case((Case.outside_areas, 1), else_=0)))
        .where(Case.period == period)
        .group_by(Case.route)
        .order_by(Case.route)
    ).all()
    return {str(route): int(n) for route, n, _ in rows}, sum(int(o or 0) for *_, o in rows)


def partners_without_delivery(session: Session, deliveries: Ranges) -> list[str]:
    """Names of active partners with none of these deliveries (the period's current ones, as
    the run read them: :func:`current_deliveries`)."""
    delivered = select(Delivery.partner_id).where(Delivery.id.in_([d[0] for d in deliveries]))
    return list(
        session.scalars(
            select(Partner.name)
            .where(Partner.active.is_(True), Partner.id.not_in(delivered))
            .order_by(Partner.name)
        )
    )


def existing_cases(session: Session, period: str) -> pl.DataFrame:
    """The period's cases: id, address hash, whether a crisis run made them, whether they are
    to be kept (``worked``: work was recorded on them, closed, a contact attempt, a transfer; or
    a crisis run made them, sent to a team that may be on its way), and what their signals'
    statuses derive from (known to SDV, a contact attempt, the closure's outcome when closed).
    Read as a frame (COPY on PostgreSQL): a quarter of a million rows at national scale.

    From here until the caller's transaction ends, the teams' writes on these cases wait for
    it (a contact attempt recorded meanwhile would otherwise be on a case that a rerun removes
    as untouched, or be missed by the statuses it restores). On PostgreSQL the cases are locked
    for update first, so that what is read includes all work committed before; on SQLite the
    caller holds the database's write lock already (a run writes its run row first).
    """
    if is_postgres(session):
        session.execute(
            text(
                "SELECT count(*) FROM "
                "(SELECT 1 FROM cases WHERE period = :period FOR UPDATE) AS locked"
            ),
            {"period": period},
        )
    query = f"""
        SELECT {_uuid_text(session, "c.id")} AS case_id, c.address_hash,
               CASE WHEN c.status <> 'open' THEN 1 ELSE 0 END AS closed,
               CASE WHEN EXISTS (SELECT 1 FROM contact_attempts a WHERE a.case_id = c.id)
                    THEN 1 ELSE 0 END AS attempted,
               -- Older runs stored a "routed" event per case: that is no work on the case.
               CASE WHEN EXISTS (SELECT 1 FROM case_events e
                                 WHERE e.case_id = c.id AND e.kind <> 'routed')
                    THEN 1 ELSE 0 END AS moved,
               CASE WHEN c.known_to_sdv THEN 1 ELSE 0 END AS known_to_sdv,
               CASE WHEN EXISTS (SELECT 1 FROM runs r WHERE r.id = c.run_id AND r.kind = 'crisis')
                    THEN 1 ELSE 0 END AS by_crisis_run,
               CASE WHEN c.status <> 'open' THEN c.resultaat END AS resultaat
        FROM cases c
        WHERE c.period = :period
    """  # noqa: S608 (no user input in the text)
    flags = ("closed", "attempted", "moved", "known_to_sdv", "by_crisis_run")
    # In the query's order: SQLite's rows are read by position.
    schema: dict[str, Any] = {"case_id": pl.String, "address_hash": pl.String}
    schema |= {flag: pl.Int8 for flag in flags} | {"resultaat": pl.String}
    frame = read_frame(session, query, {"period": period}, schema)
    return frame.with_columns(pl.col(flag).cast(pl.Boolean) for flag in flags).select(
        "case_id",
        "address_hash",
        (pl.col("closed") | pl.col("attempted") | pl.col("moved") | pl.col("by_crisis_run")).alias(
            "worked"
        ),
        "by_crisis_run",
        "known_to_sdv",
        "attempted",
        "resultaat",
    )


def delete_cases(session: Session, case_ids: Sequence[str | uuid.UUID]) -> None:
    """Delete cases with everything hanging off them: signal links, recidive links (both ways),
    contact attempts and history."""
    ids = [c if isinstance(c, uuid.UUID) else uuid.UUID(c) for c in case_ids]
    for model, column in (
        (CaseSignal, "case_id"),
        (ContactAttempt, "case_id"),
        (CaseEvent, "case_id"),
        (CaseLink, "case_id"),
        (CaseLink, "earlier_case_id"),
        (Case, "id"),
    ):
        delete_by_keys(session, cast(Table, model.__table__), column, ids)


def unlink_cases(session: Session, case_ids: Sequence[uuid.UUID]) -> None:
    """Remove the signal links and the recidive links of cases (a rerun links them anew)."""
    for table in (CaseSignal, CaseLink):
        delete_by_keys(session, cast(Table, table.__table__), "case_id", case_ids)


def insert_cases(session: Session, frame: pl.DataFrame) -> None:
    uuids = tuple(c for c in ("id", "run_id", "team_id") if c in frame.columns)
    insert_frame(session, cast(Table, Case.__table__), frame, uuid_columns=uuids)


# What a case records about its match that is not the match itself: written when it differs,
# without making the case count as matched again (see update_cases).
NOTES = ("signalled_periods",)


def update_cases(
    session: Session, frame: pl.DataFrame, *, run_id: uuid.UUID, now: datetime
) -> None:
    """Refresh the matched figures of existing cases (a rerun, or a monthly run taking in a
    crisis run's cases), leaving recorded work alone (``frame``: case_id, by_crisis_run and
    the figures).

    Only a case whose figures changed is written (with its :data:`NOTES`), and it then names
    this run as the one that matched it (its ``matchingsdatum`` in the national export), unless
    a crisis run made it: that was the day it was matched and picked up. A case that came out
    the same keeps its run and ``updated_at``. (At national scale a rerun on the same
    deliveries wrote all 249,000 cases again: 13 s.)
    """
    figures = [c for c in frame.columns if c not in ("case_id", "by_crisis_run", *NOTES)]
    table = cast(Table, Case.__table__)
    for by_crisis_run, part in frame.partition_by("by_crisis_run", as_dict=True).items():
        rows = part.select(
            pl.col("case_id").alias("id"), *figures, *NOTES, pl.lit(now).alias("updated_at")
        )
        if not by_crisis_run[0]:
            rows = rows.with_columns(pl.lit(str(run_id)).alias("run_id"))
        update_from_frame(session, table, "id", rows, changed=figures)
    # A note that differs while the figures do not (the first rerun of a period matched before
    # the note was kept, or after an earlier period's set became usable or was purged) is written
    # alone: not a new match. Only recurrent cases can hold one: a case that was recurrent and
    # is not any more changed its figures, and was written above.
    notes = frame.filter("is_recidive").select(pl.col("case_id").alias("id"), *NOTES)
    update_from_frame(session, table, "id", notes)


# What a case's link keeps of its signal (case_signals), for later runs' repeat rule.
SIGNAL_FACTS = ("signal_id", "partner_id", "bedrag_cent", "signaaldatum")


def insert_case_signals(session: Session, frame: pl.DataFrame) -> None:
    """Links of cases to signals (frame: case_id, signal_id, partner_id, bedrag_cent,
    signaaldatum: the signal's facts that later runs read)."""
    insert_frame(
        session,
        cast(Table, CaseSignal.__table__),
        frame.select("case_id", "signal_id", "partner_id", "bedrag_cent", "signaaldatum"),
        uuid_columns=("case_id", "partner_id"),
    )


def insert_case_links(session: Session, frame: pl.DataFrame) -> None:
    insert_frame(
        session, cast(Table, CaseLink.__table__), frame, uuid_columns=("case_id", "earlier_case_id")
    )


def set_signal_outcomes(session: Session, frame: pl.DataFrame) -> None:
    """Record the run's outcome and status for many signals (frame: signal_id, outcome, status)
    in ``signal_states``; only signals where either changes are written (a rerun gives all of
    the period's signals)."""
    set_states(session, frame.rename({"outcome": "run_outcome"}))


def add_run(session: Session, run: Run) -> None:
    session.add(run)
    session.flush()
