"""A function-level profile of the real ingest: cProfile over ``profile_rows`` rows (100,000).

The same pipeline as :mod:`bench.ingest` (another partner, so it is a fresh delivery), under
cProfile. cProfile slows Python-level code down, so its total is not a measurement; the shares
say where the time goes. The top functions by own time go into the results and the full listing
into ``profile-ingest.txt`` beside them.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    INGEST_CLOCK,
    INGEST_PERIOD,
    PROFILE_PARTNER,
    FixedClock,
    child_parser,
    manifest,
    measurement,
    peak_rss_bytes,
    read_json,
    say,
    write_results,
)
from shared.context import build_context
from shared.settings import Settings

TOP = 12


def label(key: tuple[str, int, str]) -> str:
    """``module:function`` for a pstats key; built-ins as pstats names them."""
    filename, line, name = key
    if filename == "~":
        return name
    path = Path(filename)
    parts = path.parts
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{'/'.join(parts[-3:])}:{line}:{name}"


def main() -> None:
    parser = child_parser(__doc__ or "profile")
    parser.add_argument("--out", type=Path, required=True, help="where the listing goes")
    args = parser.parse_args()
    entry = manifest(args.data)["ingest"]["profile_slice"]
    state: dict[str, Any] = read_json(args.state)
    path = args.data / entry["path"]
    ctx = build_context(Settings(), clock=FixedClock(INGEST_CLOCK))
    from services.ingest.service import ingest_with_retry

    say(f"profile: cProfile over the ingest of {entry['rows']} rows")
    profiler = cProfile.Profile()
    try:
        started = time.perf_counter()
        profiler.enable()
        ingest_with_retry(
            ctx,
            partner_id=uuid.UUID(state["partners"][PROFILE_PARTNER[0]]),
            content=path.read_bytes(),
            filename=path.name,
            period=INGEST_PERIOD,
            source="sftp",
        )
        profiler.disable()
        wall = time.perf_counter() - started
    finally:
        ctx.engine.dispose()
    stats = pstats.Stats(profiler)
    listing = io.StringIO()
    pstats.Stats(profiler, stream=listing).sort_stats("tottime").print_stats(40)
    args.out.write_text(listing.getvalue(), encoding="utf-8")
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in raw.values())
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:TOP]
    top = [
        {
            "function": label(key),
            "own_s": round(row[2], 3),
            "share": round(row[2] / total, 3) if total else None,
            "calls": row[1],
        }
        for key, row in ranked
    ]
    write_results(
        args.result_file,
        [
            measurement(
                "profile",
                f"Profile: real ingest of {entry['rows']:,} rows under cProfile (not a target)",
                rows=entry["rows"],
                wall_s=wall,
                peak_rss=peak_rss_bytes(),
                top_own_time=top,
                listing=args.out.name,
            )
        ],
    )


if __name__ == "__main__":
    main()
