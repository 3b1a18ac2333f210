"""The benchmark's partner files, generated once per scale and seed and cached.

``bench/data/<scale>-<seed>/`` holds:

* ``ingest/`` the single large partner file (a national health insurer, CSV, exactly
  ``ingest_rows`` rows) and its first ``naive_rows`` / ``profile_rows`` rows as slices;
* ``month/<period>/`` one month of twelve national partners (three per kind, mixed CSV and JSON,
  about one million signals in the full scale), which the setup ingests as the fresh month;
* ``manifest.json``, written last: its presence (with the same parameters) means the cache is
  complete.

Both come from :func:`services.ingest.generate.generate` (``vroegsignaal generate``); the two
generators run side by side in subprocesses. The large file is generated a little larger than
needed and cut at a line boundary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import INGEST_PARTNER, INGEST_PERIOD, MONTH_PERIOD, SCALES, Scale, say

DATA_VERSION = 1
NATIONAL_PER_KIND = 3


def dataset_dir(root: Path, scale: Scale, seed: int) -> Path:
    return root / f"{scale.name}-{seed}"


def _parameters(scale: Scale, seed: int) -> dict[str, Any]:
    return {
        "version": DATA_VERSION,
        "scale": scale.name,
        "seed": seed,
        "ingest_rows": scale.ingest_rows,
        "naive_rows": scale.naive_rows,
        "profile_rows": scale.profile_rows,
        "ingest_households": scale.ingest_households,
        "ingest_signal_rate": scale.ingest_signal_rate,
        "month_households": scale.month_households,
        "month_signal_rate": scale.month_signal_rate,
        "month_period": MONTH_PERIOD,
        "ingest_period": INGEST_PERIOD,
    }


def ensure(root: Path, scale: Scale, seed: int) -> Path:
    """The data set's folder, generating it first when it is missing or stale."""
    folder = dataset_dir(root, scale, seed)
    wanted = _parameters(scale, seed)
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        found = json.loads(manifest_path.read_text(encoding="utf-8"))
        if found.get("parameters") == wanted:
            say(f"data: cached in {folder}")
            return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    say(f"data: generating {scale.name} data in {folder} (once; cached afterwards)")
    started = time.perf_counter()
    children = [
        subprocess.Popen(  # noqa: S603 (our own module, fixed arguments)
            [
                sys.executable,
                "-m",
                "bench.data",
                "--part",
                part,
                "--scale",
                scale.name,
                "--seed",
                str(seed),
                "--dir",
                str(folder),
            ]
        )
        for part in ("ingest", "month")
    ]
    codes = [child.wait() for child in children]
    if any(codes):
        raise RuntimeError(f"data generation failed (exit codes {codes})")
    parts = {
        part: json.loads((folder / f"{part}.json").read_text(encoding="utf-8"))
        for part in ("ingest", "month")
    }
    doc = {
        "parameters": wanted,
        "generated_seconds": round(time.perf_counter() - started, 1),
        **parts,
    }
    manifest_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    say(f"data: generated in {doc['generated_seconds']} s")
    return folder


def cut_rows(content: bytes, rows: int) -> bytes | None:
    """The header and the first ``rows`` lines of a CSV file; None when it has fewer."""
    position = content.find(b"\n")
    for _ in range(rows):
        if position < 0:
            return None
        position = content.find(b"\n", position + 1)
    if position < 0:
        # The last wanted line may end the file without a line break.
        lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
        return content if lines - 1 >= rows else None
    return content[: position + 1]


def _generate_ingest(folder: Path, scale: Scale, seed: int) -> dict[str, Any]:
    from services.ingest.generate import PartnerSpec, generate

    raw = folder / "raw-ingest"
    name, kind = INGEST_PARTNER
    files = generate(
        raw,
        households=scale.ingest_households,
        months=1,
        seed=seed,
        partners=[PartnerSpec(name, kind)],
        first_period=INGEST_PERIOD,
        formats="csv",
        signal_rate=scale.ingest_signal_rate,
    )
    if len(files) != 1:
        raise RuntimeError("the generator wrote no file for the ingest partner")
    content = files[0].path.read_bytes()
    out = folder / "ingest"
    out.mkdir()
    entries: dict[str, Any] = {"partner": name, "kind": kind, "period": INGEST_PERIOD}
    for label, rows in (
        ("file", scale.ingest_rows),
        ("naive_slice", scale.naive_rows),
        ("profile_slice", scale.profile_rows),
    ):
        cut = cut_rows(content, rows)
        if cut is None:
            raise RuntimeError(
                f"the generated file has {files[0].rows} rows, fewer than {rows}: "
                "raise ingest_households"
            )
        path = out / f"{files[0].path.stem}-{rows}.csv"
        path.write_bytes(cut)
        entries[label] = {"path": str(path.relative_to(folder)), "rows": rows, "bytes": len(cut)}
    shutil.rmtree(raw)
    return entries


def _generate_month(folder: Path, scale: Scale, seed: int) -> dict[str, Any]:
    from services.ingest.generate import generate, national_partners

    files = generate(
        folder / "month",
        households=scale.month_households,
        months=1,
        seed=seed,
        partners=national_partners(NATIONAL_PER_KIND),
        first_period=MONTH_PERIOD,
        signal_rate=scale.month_signal_rate,
    )
    return {
        "period": MONTH_PERIOD,
        "rows": sum(f.rows for f in files),
        "files": [
            {
                "partner": f.partner.name,
                "kind": f.partner.kind,
                "path": str(f.path.relative_to(folder)),
                "rows": f.rows,
                "bytes": f.path.stat().st_size,
            }
            for f in files
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate one part of the benchmark data.")
    parser.add_argument("--part", choices=("ingest", "month"), required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    scale = SCALES[args.scale]
    started = time.perf_counter()
    if args.part == "ingest":
        doc = _generate_ingest(args.dir, scale, args.seed)
    else:
        doc = _generate_month(args.dir, scale, args.seed)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    (args.dir / f"{args.part}.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    say(f"data: {args.part} part written in {doc['seconds']} s")


if __name__ == "__main__":
    main()
