"""The floor: PostgreSQL COPY of the same rows, unvalidated and unencrypted.

The raw CSV bytes of the large partner file go into a table of text columns without indexes or
constraints, with psycopg's COPY, and are committed. Timed from reading the file to the commit.
Nothing is parsed, checked, normalised, encrypted or hashed: this is what the disk, the server and
the wire cost at the least.
"""

from __future__ import annotations

import codecs
import csv
import io
import time

import psycopg

from bench.common import (
    child_parser,
    manifest,
    measurement,
    peak_rss_bytes,
    psycopg_url,
    say,
    write_results,
)
from shared.settings import Settings

CHUNK = 8 * 1024 * 1024


def header_of(content: bytes) -> tuple[list[str], str, str]:
    """(columns, separator, PostgreSQL encoding name) of a CSV file."""
    try:
        # Incremental: a character cut at the end of the sample is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(content[: 4 * 1024 * 1024], final=False)
        encoding = "UTF8"
    except UnicodeDecodeError:
        encoding = "WIN1252"
    first = content.split(b"\n", 1)[0].decode("utf-8" if encoding == "UTF8" else "cp1252")
    first = first.lstrip("\ufeff").rstrip("\r")
    separator = max((";", ",", "\t"), key=first.count)
    columns = next(csv.reader(io.StringIO(first), delimiter=separator))
    return columns, separator, encoding


def main() -> None:
    args = child_parser(__doc__ or "copy floor").parse_args()
    entry = manifest(args.data)["ingest"]["file"]
    path = args.data / entry["path"]
    settings = Settings()
    assert settings.database_url is not None
    columns, separator, encoding = header_of(path.read_bytes()[: 1024 * 1024])
    table = "bench_copy_floor"
    definition = ", ".join(f"c{i} text" for i in range(len(columns)))
    with psycopg.connect(psycopg_url(settings.database_url)) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({definition})")
        conn.commit()
        say(f"copy floor: {entry['rows']} rows into an unindexed table of text columns")
        started = time.perf_counter()
        content = path.read_bytes()
        statement = (
            f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true, "
            f"DELIMITER '{separator}', ENCODING '{encoding}')"
        )
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            view = memoryview(content)
            for offset in range(0, len(content), CHUNK):
                copy.write(view[offset : offset + CHUNK])
        conn.commit()
        wall = time.perf_counter() - started
        rss = peak_rss_bytes()
        found = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        stored = int(found[0]) if found else 0
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    if stored != entry["rows"]:
        raise SystemExit(f"COPY stored {stored} rows, expected {entry['rows']}")
    say(f"copy floor: {stored} rows in {wall:.2f} s ({stored / wall:,.0f} rows/s)")
    write_results(
        args.result_file,
        [
            measurement(
                "copy",
                "Floor: psycopg COPY of the raw CSV into an unindexed text table",
                rows=stored,
                wall_s=wall,
                peak_rss=rss,
                columns=len(columns),
            )
        ],
    )


if __name__ == "__main__":
    main()
