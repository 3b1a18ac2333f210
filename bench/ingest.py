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

from bench.common import (
    INGEST_CLOCK,
    INGEST_PARTNER,
    INGEST_PERIOD,
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
from shared.settings import Settings


def instrument(ctx: Context) -> Phases:
    """Timers around the pipeline's stages (restored by ``Phases.restore``)."""
    from services.ingest import repository, service

    phases = Phases()
    phases.wrap(service, "parse_upload", "parse (CSV to text columns)")
    phases.wrap(service, "validate", "validate and normalise")
    phases.wrap(service, "ingest_delivery", "_ingest_delivery")
    phases.wrap(ctx.cipher, "encrypt_many", "encrypt (AES-GCM per row)")
    phases.wrap(ctx.hasher, "hash_many", "hash (HMAC per key)")
    phases.wrap(repository, "insert_signals", "store (COPY into signals)")
    phases.wrap(service, "_store_signals", "_store_signals")
    return phases


def breakdown(phases: Phases, total: float, read: float) -> dict[str, float]:
    """Exclusive seconds per stage, the rest named for what it is."""
    s = phases.seconds
    store = s["_store_signals"]
    encrypt = s["encrypt (AES-GCM per row)"]
    hashing = s["hash (HMAC per key)"]
    copy = s["store (COPY into signals)"]
    delivery = s["_ingest_delivery"]
    parts = {
        "read file": read,
        "parse (CSV to text columns)": s["parse (CSV to text columns)"],
        "validate and normalise": s["validate and normalise"],
        "encrypt (AES-GCM per row)": encrypt,
        "hash (HMAC per key)": hashing,
        "store (COPY into signals)": copy,
        "build frames, JSON envelopes": store - encrypt - hashing - copy,
        "other (lookups, audit)": delivery
        - store
        - s["parse (CSV to text columns)"]
        - s["validate and normalise"],
        "commit": total - read - delivery,
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
    phases = instrument(ctx)
    say(f"ingest: {entry['rows']} rows ({entry['bytes'] / 1e6:.0f} MB) through the real pipeline")
    try:
        started = time.perf_counter()
        content = path.read_bytes()
        read = time.perf_counter() - started
        outcome = ingest_with_retry_call(ctx, partner_id, content, path.name)
        wall = time.perf_counter() - started
        rss = peak_rss_bytes()
        with ctx.engine.connect() as conn:
            from sqlalchemy import text

            stored = conn.execute(
                text("SELECT count(*) FROM signals WHERE delivery_id = :d"),
                {"d": outcome["delivery_id"]},
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
            )
        ],
    )


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
