"""Baseline: the month's grouping as one SQL statement in PostgreSQL.

The statement: the fresh month's current signals (fresh by ``signaaldatum``), grouped per address
with partner count, signal count, total, rent / crisis / warm hand-over flags, kinds and the signal
ids; the addresses with two or more partners, a rent signal or a crisis signal; joined to the
previous six periods' cases for recidive (with the earlier case ids); numbered by priority.

It does less than the run: no repeat-signal rule (that needs the earlier cases' signals), no
recidive by an earlier signal that made no case (the run reads each period's set of signalled
addresses), no outcome per signal, no routing, no case_signals or links. Two variants, each
timed by wall clock through psycopg (no EXPLAIN ANALYZE):

* **query**: the result fetched to the client;
* **query + write**: ``INSERT INTO bench_sql_cases SELECT ...`` (a cases-shaped table) and commit.

The session gets ``work_mem = 256MB`` (the server default of 4 MB would spill the grouping to
disk): the baseline at its best.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg

from bench.common import (
    MONTH_PERIOD,
    RUN_DATE,
    child_parser,
    measurement,
    peak_rss_bytes,
    psycopg_url,
    say,
    settle,
    write_results,
)
from bench.matching import RUN_TABLES, month_before_run
from services.matcher.repository import signals_in_ranges
from shared.db import make_engine
from shared.periods import Period
from shared.settings import Settings

WORK_MEM = "256MB"

QUERY = """
WITH fresh AS (
    SELECT s.id, s.partner_id, s.kind, s.address_hash, s.bedrag_cent, s.crisis,
           s.warme_overdracht, s.pc4, s.pc6_hash
    FROM MONTH_SIGNALS
    WHERE s.signaaldatum >= %(fresh_from)s
), grouped AS (
    SELECT address_hash,
           count(DISTINCT partner_id) AS partner_count,
           count(*) AS signal_count,
           sum(bedrag_cent) AS total_cent,
           bool_or(kind = 'huur') AS has_rent,
           bool_or(crisis) AS has_crisis,
           bool_or(warme_overdracht) AS has_warm_handover,
           string_agg(DISTINCT kind, ',' ORDER BY kind) AS kinds,
           min(pc4) AS pc4,
           min(pc6_hash) AS pc6_hash,
           array_agg(id ORDER BY id) AS signal_ids
    FROM fresh
    GROUP BY address_hash
    HAVING count(DISTINCT partner_id) >= 2 OR bool_or(kind = 'huur') OR bool_or(crisis)
), earlier AS (
    SELECT address_hash, array_agg(id ORDER BY id) AS earlier_case_ids
    FROM cases
    WHERE period >= %(recidive_from)s AND period < %(period)s
    GROUP BY address_hash
)
SELECT row_number() OVER (ORDER BY g.has_crisis DESC, g.has_rent DESC, g.partner_count DESC,
                                   g.total_cent DESC, g.address_hash) AS priority,
       g.address_hash, g.pc4, g.pc6_hash, g.partner_count, g.signal_count, g.total_cent,
       g.has_rent, g.has_crisis, g.has_warm_handover, g.kinds, g.signal_ids,
       e.earlier_case_ids, e.address_hash IS NOT NULL AS is_recidive,
       CASE WHEN e.address_hash IS NOT NULL THEN 'opeenvolgend'
            WHEN g.signal_count >= 2 THEN 'meervoudig' ELSE 'enkelvoudig' END AS classification
FROM grouped g LEFT JOIN earlier e ON e.address_hash = g.address_hash
"""

RESULT_TABLE = """
CREATE TABLE bench_sql_cases (
    priority bigint, address_hash varchar(64), pc4 varchar(4), pc6_hash varchar(64),
    partner_count bigint, signal_count bigint, total_cent numeric, has_rent boolean,
    has_crisis boolean, has_warm_handover boolean, kinds text, signal_ids bigint[],
    earlier_case_ids uuid[], is_recidive boolean, classification text
)
"""


def month_signals(conn: psycopg.Connection[Any], *, purged_too: bool = False) -> str:
    """The month's signals as ``s``, read as the run reads them
    (:func:`services.matcher.repository.signals_in_ranges`: as a join on the deliveries' ranges
    the planner reads the whole table, and the query would be slower for a reason that is not
    the query's)."""
    current = conn.execute(
        "SELECT id, first_signal_id, last_signal_id FROM deliveries"
        " WHERE period = %s AND status = 'accepted' AND first_signal_id IS NOT NULL",
        (MONTH_PERIOD,),
    ).fetchall()
    return signals_in_ranges(current, kept_only=not purged_too)


def main() -> None:
    args = child_parser(__doc__ or "sql baseline").parse_args()
    settings = Settings()
    assert settings.database_url is not None
    period = Period.parse(MONTH_PERIOD)
    params = {
        "period": MONTH_PERIOD,
        "fresh_from": RUN_DATE - timedelta(days=settings.freshness_days),
        "recidive_from": str(period.shift(-settings.recidive_months)),
    }
    # After a run (bench.run measures both more than once): the rows as the run found them.
    engine = make_engine(settings.resolved_database_url)
    try:
        vacuum = RUN_TABLES if month_before_run(engine, args.state) else ()
    finally:
        engine.dispose()
    say(f"sql baseline: the database settled (CHECKPOINT) in {settle(vacuum=vacuum):.1f} s")
    results = []
    with psycopg.connect(psycopg_url(settings.database_url)) as conn:
        conn.execute(f"SET work_mem = '{WORK_MEM}'")
        query = QUERY.replace("MONTH_SIGNALS", month_signals(conn))
        signals = conn.execute(
            "SELECT count(*) FROM " + month_signals(conn, purged_too=True)  # noqa: S608
        ).fetchone()
        rows_in = int(signals[0]) if signals else 0
        conn.commit()

        say("sql baseline: the grouping as one query, result fetched")
        started = time.perf_counter()
        fetched = conn.execute(query, params).fetchall()
        query_s = time.perf_counter() - started
        conn.commit()
        results.append(
            measurement(
                "sql_query",
                "Baseline: one SQL query (grouping + recidive join), result fetched",
                rows=rows_in,
                wall_s=query_s,
                peak_rss=peak_rss_bytes(),
                cases=len(fetched),
                work_mem=WORK_MEM,
            )
        )
        del fetched

        say("sql baseline: the same query written with INSERT ... SELECT")
        conn.execute("DROP TABLE IF EXISTS bench_sql_cases")
        conn.execute(RESULT_TABLE)
        conn.commit()
        started = time.perf_counter()
        written = conn.execute("INSERT INTO bench_sql_cases " + query, params).rowcount
        conn.commit()
        write_s = time.perf_counter() - started
        conn.execute("DROP TABLE bench_sql_cases")
        conn.commit()
        results.append(
            measurement(
                "sql_write",
                "Baseline: the same SQL query + INSERT … SELECT of its result, commit",
                rows=rows_in,
                wall_s=write_s,
                peak_rss=None,
                cases=written,
                work_mem=WORK_MEM,
            )
        )
    say(f"sql baseline: query {query_s:.2f} s, query + write {write_s:.2f} s")
    write_results(args.result_file, results)


if __name__ == "__main__":
    main()
