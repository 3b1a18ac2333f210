"""Prepare the scratch database: schema, partners, teams, the fresh month, twelve months of history.

1. ``alembic upgrade head`` on the (empty) scratch database.
2. The partners (twelve national ones and the benchmark's own), three wijkteams (as the demo has
   them) and a coordinator's API key for the load test.
3. The fresh month: the generated files of the twelve partners through the real pipeline
   (:func:`services.ingest.service.ingest_with_retry`), timed: a measurement of its own.
4. History, built in SQL (generating twelve million rows through CSV and the pipeline would take
   longer than everything else together). Each earlier month copies the fresh month's signals
   with the same shape (partners, kinds, amounts, crisis flags, several partners per address) and
   remaps the addresses: a realistic share recurs (20 % of the fresh month's addresses were
   signalled the month before, 7 % two months before, 4 % three, 2 % in each earlier month; about
   a third of the fresh addresses have an earlier signal in the last six months, as the pilot
   saw), the rest become addresses of their own. In half of the months in which an address recurs
   it had only one of its signals (arrears grow: one bill unpaid at first, the others later), and
   most of those months made no case there: a fresh case at an address whose earlier months in
   the window made none is recurrent by an earlier signal alone (``recidive_signals_only`` in
   the run's figures). Amounts
   shrink into the past for most and are higher for a quarter (a partial payment since: the
   repeat rule). Personal data are random bytes of the real envelopes' lengths. The month's cases
   are grouped in SQL by the rules (two or more partners, rent, crisis), with priority,
   classification, route, team, due date; older cases are mostly closed; the signals of closed
   cases are picked up, and one in thirty of the others was set aside (``signal_states``); each
   month's set of signalled addresses is kept as its run keeps it (``signalled_addresses``).
   Secondary indexes are dropped for the load and rebuilt, then VACUUM ANALYZE.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import polars as pl
import psycopg

from bench.common import (
    INGEST_PARTNER,
    MONTH_INGEST_CLOCK,
    MONTH_PERIOD,
    NAIVE_PARTNER,
    PROFILE_PARTNER,
    SCALES,
    FixedClock,
    Scale,
    child_parser,
    manifest,
    measurement,
    peak_rss_bytes,
    psycopg_url,
    say,
    write_private_json,
    write_results,
)
from services.ingest.partners import add_partner
from services.ingest.service import ingest_with_retry
from services.matcher import signalled
from services.routing.admin import add_staff, add_team, recount_cases
from shared import migrate
from shared.context import Context, build_context
from shared.db import unit_of_work
from shared.ids import SIGNAL_BLOCK_BITS
from shared.periods import Period
from shared.settings import Settings

TEAMS = {"noord": "2011-2019", "midden": "2020-2029", "zuid": "2030-2037"}
DEFAULT_TEAM = "midden"
# Share (per 10,000) of the fresh month's addresses that were signalled d months before.
KEEP_PER_10000 = {1: 2000, 2: 700, 3: 400}
KEEP_OTHERWISE = 200
# Share (per 100) of a recurring address's earlier months cut down to one of its signals (with
# the addresses that had one signal only anyway, more than this share of months has one).
SINGLE_PER_100 = 50
HISTORY_TABLES = ("signals", "cases", "case_signals")
CLOSED_RESULTS = (
    "Vervolghulp en/of verwijzing",
    "Inwoner regelt het zelf/hoeft geen hulp vanuit vroegsignalering",
    "(Budget)advies en/of quick fix",
    "Definitief geen contact kunnen krijgen",
    "Inwoner heeft zelf al betaald/betalingsregeling getroffen",
)


def register(ctx: Context, month_partners: list[tuple[str, str]]) -> dict[str, Any]:
    """Partners, teams and a coordinator key; returns ids (and the key) for the other parts."""
    now = ctx.now()
    partners: dict[str, str] = {}
    with unit_of_work(ctx.sessions) as session:
        for name, kind in [*month_partners, INGEST_PARTNER, NAIVE_PARTNER, PROFILE_PARTNER]:
            partners[name] = str(add_partner(session, name=name, kind=kind, now=now).partner.id)
        for team, postcodes in TEAMS.items():
            add_team(session, name=team, postcodes=postcodes, default=team == DEFAULT_TEAM, now=now)
        coordinator = add_staff(
            session, name="Bench coordinator", role="coordinator", team=None, now=now
        )
    return {"partners": partners, "coordinator_key": coordinator.secret}


def ingest_month(
    ctx: Context, data: Path, files: list[dict[str, Any]], partners: dict[str, str]
) -> tuple[int, float]:
    """The fresh month's files through the real pipeline; (rows, seconds)."""
    import uuid

    rows = 0
    started = time.perf_counter()
    for entry in files:
        path = data / entry["path"]
        outcome = ingest_with_retry(
            ctx,
            partner_id=uuid.UUID(partners[entry["partner"]]),
            content=path.read_bytes(),
            filename=path.name,
            period=MONTH_PERIOD,
            source="sftp",
        )
        rows += outcome.delivery.row_count
    return rows, time.perf_counter() - started


# --- history in SQL --------------------------------------------------------------------------

# Every abs(hashtext(...)) widens to bigint first: hashtext can return -2^31, whose absolute value
# is no integer. With a new hash key per run, about 30 million values are hashed, so now and then
# one of them does (a run of 2026-11-30 failed on it: "integer out of range").
_SOURCE = """
CREATE TEMP TABLE hsrc ON COMMIT DROP AS
SELECT f.id AS src_id, f.partner_id, f.kind, f.row_number, keep.kept,
       CASE WHEN keep.kept THEN f.address_hash
            ELSE encode(sha256(convert_to(f.address_hash || ':' || %(d)s::text, 'UTF8')), 'hex')
       END AS address_hash,
       CASE WHEN keep.kept OR f.person_hash IS NULL THEN f.person_hash
            ELSE encode(sha256(convert_to(f.person_hash || ':' || %(d)s::text, 'UTF8')), 'hex')
       END AS person_hash,
       f.pc4, f.pc6_hash,
       greatest(1, CASE WHEN abs(hashtext(f.address_hash || '#' || %(d)s::text)::bigint) %% 100 < 25
                        THEN f.bedrag_cent * (100 + abs(hashtext(f.address_hash)::bigint) %% 20)
                             / 100
                        ELSE f.bedrag_cent * greatest(40, 100 - 8 * %(d)s::int) / 100
                   END)::bigint AS bedrag_cent,
       (f.achterstand_sinds - make_interval(months => %(d)s::int))::date AS achterstand_sinds,
       (f.signaaldatum - make_interval(months => %(d)s::int))::date AS signaaldatum,
       f.crisis, f.warme_overdracht, f.eindelevering,
       coalesce(octet_length(f.pii), 0) AS pii_len
FROM signals f
JOIN deliveries fd ON fd.id = f.delivery_id
CROSS JOIN LATERAL (
    SELECT abs(hashtext(f.address_hash || ':' || %(d)s::text)::bigint) %% 10000 < %(keep)s AS kept
) keep
WHERE fd.period = %(fresh)s AND fd.status = 'accepted' AND f.address_hash IS NOT NULL
"""

# A recurring address's month with one signal only (SINGLE_PER_100): its other signals go,
# one that is neither rent nor crisis kept where it has one (one of those alone makes a case).
_SINGLE = """
DELETE FROM hsrc h USING (
    SELECT src_id, row_number() OVER (PARTITION BY address_hash
                                      ORDER BY (kind = 'huur' OR crisis), src_id) AS n
    FROM hsrc
    WHERE kept
      AND abs(hashtext(address_hash || '/single/' || %(d)s::text)::bigint) %% 100 < %(single)s
) one
WHERE one.src_id = h.src_id AND one.n > 1
"""

_DELIVERIES = """
CREATE TEMP TABLE hdel ON COMMIT DROP AS
SELECT gen_random_uuid() AS id, d.partner_id, d.source, d.file_format, d.size_bytes,
       coalesce(n.row_count, 0) AS row_count,
       nextval('signal_blocks') * %(block)s AS first_signal_id
FROM deliveries d
LEFT JOIN (SELECT partner_id, count(*) AS row_count FROM hsrc GROUP BY partner_id) n
       ON n.partner_id = d.partner_id
WHERE d.period = %(fresh)s AND d.status = 'accepted'
"""

_DELIVERIES_INSERT = """
INSERT INTO deliveries (id, partner_id, period, status, source, file_format, filename,
                        content_sha256, size_bytes, row_count, warning_count, warnings, received_at,
                        first_signal_id, last_signal_id)
SELECT id, partner_id, %(period)s, 'accepted', source, file_format, NULL,
       encode(sha256(convert_to(id::text, 'UTF8')), 'hex'), size_bytes, row_count, 0, '[]',
       %(received)s, first_signal_id, first_signal_id + %(block)s - 1
FROM hdel
"""

_GROUPS = """
CREATE TEMP TABLE hgrp ON COMMIT DROP AS
SELECT address_hash,
       count(DISTINCT partner_id) AS partner_count, count(*) AS signal_count,
       sum(bedrag_cent) AS total_cent,
       bool_or(kind = 'huur') AS has_rent, bool_or(crisis) AS has_crisis,
       bool_or(warme_overdracht) AS has_warm,
       string_agg(DISTINCT kind, ',' ORDER BY kind) AS kinds,
       min(pc4) AS pc4, min(pc6_hash) AS pc6_hash,
       (count(DISTINCT partner_id) >= 2 OR bool_or(kind = 'huur') OR bool_or(crisis)) AS is_case
FROM hsrc GROUP BY address_hash
"""

# The new signals' ids go to a temporary table (RETURNING), so the case links need no scan of
# the growing signals table.
_SIGNALS = """
WITH ins AS (
    INSERT INTO signals (id, delivery_id, partner_id, period, row_number, kind, address_hash,
                         person_hash, pc4, pc6_hash, bedrag_cent, achterstand_sinds, signaaldatum,
                         crisis, warme_overdracht, eindelevering, pii,
                         pii_key_id, created_at)
    SELECT hd.first_signal_id + h.row_number, hd.id, h.partner_id, %(period)s, h.row_number,
           h.kind, h.address_hash, h.person_hash,
           h.pc4, h.pc6_hash, h.bedrag_cent, h.achterstand_sinds, h.signaaldatum, h.crisis,
           h.warme_overdracht, h.eindelevering,
           substring(p.blob FROM 1 FOR h.pii_len), %(key_id)s, %(received)s
    FROM hsrc h
    JOIN hdel hd ON hd.partner_id = h.partner_id
    JOIN hpool p ON p.i = h.src_id %% 1021
    RETURNING id, address_hash, partner_id, bedrag_cent, signaaldatum
)
INSERT INTO hsig SELECT id, address_hash, partner_id, bedrag_cent, signaaldatum FROM ins
"""

_RUN = """
INSERT INTO runs (id, period, run_date, status, rerun, parameters, figures, started_at,
                  finished_at, duration_ms)
VALUES (%(run_id)s, %(period)s, %(run_date)s, 'completed', false, '{"synthetic": true}', '{}',
        %(run_at)s, %(run_at)s, 0)
"""

_CASES = """
WITH recidive AS (
    SELECT DISTINCT address_hash FROM hcases_all
    WHERE period >= %(recidive_from)s AND period < %(period)s
), decided AS (
    SELECT g.*, r.address_hash IS NOT NULL AS is_recidive,
           (abs(hashtext(g.address_hash || '/status')::bigint) %% 100)::int AS roll,
           coalesce((SELECT ta.team_id FROM team_areas ta
                     WHERE ta.pc6 IS NULL AND g.pc4 BETWEEN ta.pc4_from AND ta.pc4_to
                     LIMIT 1), %(default_team)s::uuid) AS team_id
    FROM hgrp g LEFT JOIN recidive r ON r.address_hash = g.address_hash
    WHERE g.is_case
), ins AS (
    INSERT INTO cases (id, run_id, period, address_hash, pc4, pc6_hash, priority, classification,
                       is_recidive, has_rent, has_crisis, has_warm_handover, partner_count,
                       signal_count, total_cent, kinds, status, route, team_id, known_to_sdv,
                       outside_areas, due_date, routed_at, created_at, updated_at, closed_at,
                       resultaat)
    SELECT gen_random_uuid(), %(run_id)s, %(period)s, d.address_hash, d.pc4, d.pc6_hash,
           row_number() OVER (ORDER BY d.has_crisis DESC, d.has_rent DESC, d.partner_count DESC,
                              d.total_cent DESC, d.address_hash),
           CASE WHEN d.is_recidive THEN 'opeenvolgend'
                WHEN d.signal_count >= 2 THEN 'meervoudig' ELSE 'enkelvoudig' END,
           d.is_recidive, d.has_rent, d.has_crisis, d.has_warm, d.partner_count, d.signal_count,
           d.total_cent, d.kinds,
           CASE WHEN d.closed THEN 'closed' ELSE 'open' END,
           CASE WHEN d.is_recidive THEN 'budgetcoach' ELSE 'wijkteam' END,
           CASE WHEN d.is_recidive THEN NULL ELSE d.team_id END,
           false, false, %(run_date)s::date + 28, %(run_at)s, %(run_at)s, %(run_at)s,
           CASE WHEN d.closed
                THEN %(run_at)s::timestamptz + make_interval(days => 5 + d.roll %% 40) END,
           CASE WHEN d.closed THEN (%(results)s::text[])[1 + d.roll %% %(result_count)s] END
    FROM (SELECT *, (%(months_ago)s > 2 OR roll >= 60) AS closed FROM decided) d
    RETURNING id, address_hash
)
INSERT INTO hcase SELECT id, address_hash FROM ins
"""


# What became of the month's signals (``signal_states``): those of its closed cases were picked up
# (the same choice of closed cases as in _CASES); of the rest, one in thirty was set aside as
# stale, about the share a run sets aside. The others stay as they arrived, without a row.
_STATES = """
INSERT INTO signal_states (signal_id, status, run_outcome)
SELECT s.id,
       CASE WHEN c.id IS NULL THEN 'Niet opgepakt: andere reden' ELSE 'Opgepakt' END,
       CASE WHEN c.id IS NULL THEN 'stale' END
FROM hsig s LEFT JOIN hcase c ON c.address_hash = s.address_hash
WHERE CASE WHEN c.id IS NULL
           THEN abs(hashtext(s.address_hash || '/set-aside')::bigint) %% 30 = 0
           ELSE %(months_ago)s > 2
                OR abs(hashtext(s.address_hash || '/status')::bigint) %% 100 >= 60
      END
"""


def _month_params(
    period: Period, months_ago: int, fresh: str, key_id: str, default_team: str | None
) -> dict[str, Any]:
    import datetime as dt
    import uuid

    run_date = dt.date(period.year, period.month, 25)
    return {
        "d": months_ago,
        "months_ago": months_ago,
        "keep": KEEP_PER_10000.get(months_ago, KEEP_OTHERWISE),
        "single": SINGLE_PER_100,
        "fresh": fresh,
        "period": str(period),
        "received": dt.datetime(period.year, period.month, 20, 10, tzinfo=dt.UTC),
        "run_id": uuid.uuid4(),
        "run_date": run_date,
        "run_at": dt.datetime(run_date.year, run_date.month, run_date.day, 1, tzinfo=dt.UTC),
        "recidive_from": str(period.shift(-6)),
        "key_id": key_id,
        "default_team": default_team,
        "results": list(CLOSED_RESULTS),
        "result_count": len(CLOSED_RESULTS),
        # Each delivery's signals take ids in a block of its own (shared.ids).
        "block": 1 << SIGNAL_BLOCK_BITS,
    }


def _keep_signalled_addresses(cur: psycopg.Cursor[Any], period: str, check: str) -> None:
    """The month's set of signalled addresses, as its monthly run keeps it
    (:mod:`services.matcher.signalled`): what the recidive rule of the fresh month reads."""
    cur.execute("SELECT DISTINCT address_hash FROM hsig WHERE address_hash IS NOT NULL")
    hashes = pl.Series("address_hash", [h for (h,) in cur.fetchall()], dtype=pl.String)
    keys = signalled.address_keys(hashes)
    cur.execute(
        "INSERT INTO signalled_addresses "
        "(period, address_count, address_keys, hash_key_check, created_at) "
        "VALUES (%s, %s, %s, %s, now())",
        (period, keys.len(), signalled.encode(keys), check),
    )


def build_history(url: str, months: int, key_id: str, key_check: str) -> dict[str, Any]:
    """Twelve (``months``) earlier months of signals and cases; see the module docstring."""
    fresh = Period.parse(MONTH_PERIOD)
    timings: dict[str, float] = {}
    counts = {"signals": 0, "cases": 0, "case_signals": 0, "signal_states": 0}
    with psycopg.connect(url) as conn:
        superuser = conn.execute("SHOW is_superuser").fetchone()
        if superuser and superuser[0] == "on":
            # The rows are consistent by construction: skip the per-row foreign-key triggers.
            conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET work_mem = '256MB'")
        started = time.perf_counter()
        indexes = conn.execute(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)
              AND i.indexname NOT IN (SELECT conname FROM pg_constraint)
            """,
            (list(HISTORY_TABLES),),
        ).fetchall()
        for name, _definition in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        default_team = conn.execute("SELECT id FROM teams WHERE is_default").fetchone()
        conn.execute("CREATE TEMP TABLE hpool (i int PRIMARY KEY, blob bytea NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO hpool VALUES (%s, %s)", [(i, os.urandom(1024)) for i in range(1021)]
            )
        conn.execute("CREATE TEMP TABLE hcases_all (period text, address_hash text)")
        conn.execute(
            "CREATE TEMP TABLE hsig (id bigint, address_hash text, partner_id uuid, "
            "bedrag_cent bigint, signaaldatum date) ON COMMIT DELETE ROWS"
        )
        conn.execute("CREATE TEMP TABLE hcase (id uuid, address_hash text) ON COMMIT DELETE ROWS")
        conn.commit()
        timings["drop_indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        team = str(default_team[0]) if default_team else None
        for months_ago in range(months, 0, -1):
            period = fresh.shift(-months_ago)
            params = _month_params(period, months_ago, str(fresh), key_id, team)
            with conn.cursor() as cur:
                statements = (_SOURCE, _SINGLE, _DELIVERIES, _DELIVERIES_INSERT, _GROUPS, _SIGNALS)
                for statement in statements:
                    cur.execute(statement, params)
                cur.execute(_RUN, params)
                cur.execute(_CASES, params)
                cur.execute(
                    "INSERT INTO hcases_all SELECT %s, address_hash FROM hcase", (str(period),)
                )
                cur.execute(
                    """
                    INSERT INTO case_signals (case_id, signal_id, partner_id, bedrag_cent,
                                              signaaldatum)
                    SELECT c.id, s.id, s.partner_id, s.bedrag_cent, s.signaaldatum
                    FROM hsig s JOIN hcase c ON c.address_hash = s.address_hash
                    """
                )
                linked = cur.rowcount
                _keep_signalled_addresses(cur, str(period), key_check)
                cur.execute(_STATES, params)
                counts["signal_states"] += cur.rowcount
                found = cur.execute(
                    "SELECT (SELECT count(*) FROM hsig), (SELECT count(*) FROM hcase)"
                ).fetchone()
            conn.commit()
            signals, cases = (int(found[0]), int(found[1])) if found else (0, 0)
            counts["signals"] += signals
            counts["cases"] += cases
            counts["case_signals"] += linked
            say(f"setup: history {period}: {signals} signals, {cases} cases")
        timings["insert_history"] = time.perf_counter() - started
        started = time.perf_counter()
        for name, definition in indexes:
            say(f"setup: rebuilding index {name}")
            conn.execute(definition)
        conn.commit()
        timings["rebuild_indexes"] = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "VACUUM (ANALYZE) signals, cases, case_signals, signal_states, deliveries, runs"
        )
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    timings["vacuum_analyze"] = time.perf_counter() - started
    return {
        "counts": counts,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "database_bytes": int(size[0]) if size else None,
    }


def main() -> None:
    args = child_parser(__doc__ or "setup").parse_args()
    parser_scale: Scale = SCALES[args.scale]
    data = manifest(args.data)
    settings = Settings()
    assert settings.database_url is not None
    url = settings.database_url
    started = time.perf_counter()
    migrate.upgrade(url)
    say(f"setup: schema migrated in {time.perf_counter() - started:.1f} s")
    ctx = build_context(settings, clock=FixedClock(MONTH_INGEST_CLOCK))
    try:
        month_partners = sorted({(f["partner"], f["kind"]) for f in data["month"]["files"]})
        state = register(ctx, month_partners)
        write_private_json(args.state, state)
        say(f"setup: ingesting the fresh month {MONTH_PERIOD} ({data['month']['rows']} rows)")
        rows, seconds = ingest_month(ctx, args.data, data["month"]["files"], state["partners"])
        rss = peak_rss_bytes()
        say(f"setup: fresh month ingested: {rows} rows in {seconds:.1f} s")
        key_id = ctx.cipher.active_key_id
        key_check = signalled.key_check(ctx.hasher)
    finally:
        ctx.engine.dispose()
    results = [
        measurement(
            "ingest_month",
            f"Ingest, fresh month: {len(data['month']['files'])} partner files (CSV+JSON)",
            rows=rows,
            wall_s=seconds,
            peak_rss=rss,
            files=len(data["month"]["files"]),
        )
    ]
    if parser_scale.history_months and os.environ.get("BENCH_NO_HISTORY") != "1":
        say(f"setup: building {parser_scale.history_months} months of history in SQL")
        started = time.perf_counter()
        history = build_history(psycopg_url(url), parser_scale.history_months, key_id, key_check)
        # The history went in without the triggers that keep the case lists' totals: what
        # ``vroegsignaal db recount`` does after such a load.
        recounted = time.perf_counter()
        ctx = build_context(settings)
        try:
            with unit_of_work(ctx.sessions) as session:
                counts = recount_cases(session)
        finally:
            ctx.engine.dispose()
        history["seconds"]["recount_cases"] = round(time.perf_counter() - recounted, 2)
        say(f"setup: case counts rebuilt ({counts.keys} keys)")
        results.append(
            measurement(
                "history",
                f"Setup: {parser_scale.history_months} months of history (SQL, not a target)",
                rows=history["counts"]["signals"],
                wall_s=time.perf_counter() - started,
                peak_rss=peak_rss_bytes(),
                **history,
            )
        )
    write_results(args.result_file, results)


if __name__ == "__main__":
    main()
