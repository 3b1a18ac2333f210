"""Ingest: the single large partner file through the real pipeline into PostgreSQL.

Timed from reading the file to the commit: :func:`services.ingest.service.ingest_with_retry`
(parse, validate, normalise, encrypt, hash, COPY into ``signals``, audit, commit), exactly what the
API and the SFTP drop run. The pipeline's own functions are wrapped with timers (a clock read per
batch, nothing per row) to show where the time goes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import delete, func, select, text, update

from bench.common import (
    INGEST_CLOCK,
    INGEST_PARTNER,
    INGEST_PERIOD,
    CpuMeter,
    FixedClock,
    Phases,
    child_parser,
    manifest,
    measurement,
    peak_rss_bytes,
    read_json,
    say,
    write_results,
)
from shared.context import Context, build_context
from shared.models import Delivery, DeliveryStatus, Signal, signal_in_delivery
from shared.settings import Settings


def instrument(ctx: Context) -> Phases:
    """Timers around the pipeline's stages (restored by ``Phases.restore``)."""
    from services.ingest import parsing, service, validation
    from shared import bulk, pgcopy

    phases = Phases()
    phases.wrap(service, "parse_upload", "check format and header")
    phases.wrap_iterator(parsing.ParsedFile, "batches", "read CSV (a batch at a time)")
    phases.wrap(validation.Validator, "check", "validate and normalise")
    phases.wrap(service, "_unsealed", "texts and associated data to seal")
    phases.wrap(service, "_signal_frame", "_signal_frame")
    phases.wrap(ctx.cipher, "encrypt_many", "encrypt (AES-GCM per row)")
    phases.wrap(ctx.hasher, "hash_column", "hash (HMAC per key)")
    phases.wrap(pgcopy.BinaryRows, "encode", "rows for the server")
    phases.wrap(bulk, "csv_text", "rows for the server")
    phases.wrap(service, "_store_signals", "_store_signals")
    phases.wrap(service, "ingest_delivery", "_ingest_delivery")
    return phases


def breakdown(phases: Phases, total: float, read: float) -> dict[str, float]:
    """Exclusive seconds per stage of the caller's thread, the rest named for what it is.

    The caller's thread reads and validates each batch, makes the texts its envelopes will seal,
    and hands the rows that a second thread prepared to the database; that thread seals the
    batch before (envelopes, AES-GCM, HMAC: see ``services.ingest.service``) and encodes its
    rows for the server (the binary COPY format, ``shared.pgcopy``), while the caller validates
    the next one. The database stores each batch
    while both prepare the next. So neither the second thread's work nor the server's own time
    is a stage here: they show as waiting, when one of them is the slower (the second thread's
    own times are in :func:`sealing`).
    """
    s = phases.seconds
    stages = {
        "read file": read,
        "check format and header": s["check format and header"],
        "read CSV (a batch at a time)": s["read CSV (a batch at a time)"],
        "validate and normalise": s["validate and normalise"],
        "texts and associated data to seal": s["texts and associated data to seal"],
    }
    waiting = s["_store_signals"] - sum(
        stages[k]
        for k in (
            "read CSV (a batch at a time)",
            "validate and normalise",
            "texts and associated data to seal",
        )
    )
    parts = {
        **stages,
        "waiting for the sealing thread or the server": waiting,
        "other (lookups, audit)": s["_ingest_delivery"]
        - s["_store_signals"]
        - s["check format and header"],
        "commit": total - read - s["_ingest_delivery"],
    }
    return {k: round(v, 3) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}


def sealing(phases: Phases) -> dict[str, float]:
    """Seconds in the sealing thread, beside the caller's stages."""
    s = phases.seconds
    encrypt, hashing = s["encrypt (AES-GCM per row)"], s["hash (HMAC per key)"]
    parts = {
        "encrypt (AES-GCM per row)": encrypt,
        "hash (HMAC per key)": hashing,
        "build rows": s["_signal_frame"] - encrypt - hashing,
        "rows for the server": s["rows for the server"],
    }
    return {k: round(v, 3) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}


def main() -> None:
    args = child_parser(__doc__ or "ingest").parse_args()
    data = manifest(args.data)
    state: dict[str, Any] = read_json(args.state)
    entry = data["ingest"]["file"]
    path = args.data / entry["path"]
    partner_id = uuid.UUID(state["partners"][INGEST_PARTNER[0]])
    ctx = build_context(Settings(), clock=FixedClock(INGEST_CLOCK))
    set_aside_earlier(ctx, partner_id)
    phases = instrument(ctx)
    say(f"ingest: {entry['rows']} rows ({entry['bytes'] / 1e6:.0f} MB) through the real pipeline")
    try:
        meter = CpuMeter()
        started = time.perf_counter()
        content = path.read_bytes()
        read = time.perf_counter() - started
        outcome = ingest_with_retry_call(ctx, partner_id, content, path.name)
        wall = time.perf_counter() - started
        cpu = meter.read()
        rss = peak_rss_bytes()
        with ctx.engine.connect() as conn:
            stored = conn.execute(
                select(func.count())
                .select_from(Signal)
                .join(Delivery, signal_in_delivery())
                .where(Delivery.id == outcome["delivery_id"])
            ).scalar_one()
    finally:
        phases.restore()
        ctx.engine.dispose()
    if stored != entry["rows"]:
        raise SystemExit(f"ingest stored {stored} rows, expected {entry['rows']}")
    say(f"ingest: {stored} rows in {wall:.2f} s ({stored / wall:,.0f} rows/s)")
    write_results(
        args.result_file,
        [
            measurement(
                "ingest",
                "Ingest: real pipeline (parse, validate, normalise, encrypt, hash, COPY, commit)",
                rows=int(stored),
                wall_s=wall,
                peak_rss=rss,
                file_bytes=entry["bytes"],
                warnings=outcome["warnings"],
                batch_rows=ctx.settings.ingest_batch_rows,
                phases=breakdown(phases, wall, read),
                sealing=sealing(phases),
                cpu=cpu,
            )
        ],
    )


def set_aside_earlier(ctx: Context, partner_id: uuid.UUID) -> None:
    """Before each run (``bench.run`` measures the ingest more than once): the run before's
    delivery of the file superseded, its signals removed by their range and the table vacuumed,
    so that each run is a fresh upload into the table as the setup left it; then a checkpoint,
    so that no run shares the machine with the writing out of what came before. Not timed."""
    with ctx.engine.begin() as conn:
        found = conn.execute(
            update(Delivery)
            .where(
                Delivery.partner_id == partner_id,
                Delivery.period == INGEST_PERIOD,
                Delivery.status == DeliveryStatus.accepted,
            )
            .values(status=DeliveryStatus.superseded, superseded_at=ctx.now())
            .returning(Delivery.id, Delivery.first_signal_id, Delivery.last_signal_id)
        ).first()
        removed = 0
        if found is not None:
            removed = conn.execute(delete(Signal).where(signal_in_delivery(found))).rowcount
    with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if found is not None:
            conn.execute(text("VACUUM (ANALYZE) signals, deliveries"))
            say(f"ingest: the run before set aside ({removed} signals removed, table vacuumed)")
        conn.execute(text("CHECKPOINT"))


def ingest_with_retry_call(
    ctx: Context, partner_id: uuid.UUID, content: bytes, filename: str
) -> dict[str, Any]:
    from services.ingest.service import ingest_with_retry

    outcome = ingest_with_retry(
        ctx,
        partner_id=partner_id,
        content=content,
        filename=filename,
        period=INGEST_PERIOD,
        source="sftp",
    )
    if not outcome.created:
        raise SystemExit("the ingest partner's file was stored before: not a fresh ingest")
    return {"delivery_id": outcome.delivery.id, "warnings": outcome.delivery.warning_count}


if __name__ == "__main__":
    main()
