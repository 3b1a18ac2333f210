"""The floor: PostgreSQL COPY of the same rows, unvalidated and unencrypted.

The raw CSV bytes of the large partner file go into a table of text columns without indexes or
constraints, with psycopg's COPY, and are committed. Timed from reading the file to the commit.
Nothing is parsed, checked, normalised, encrypted or hashed: this is what the disk, the server and
the wire cost at the least.

Beside it, the database's share of the real ingest (when the ingest part ran first): the rows it
stored, as they are stored (sealed, hashed, typed), written to a file in the binary COPY format
and copied again, from that file, into ``signals`` (with its indexes and keys, under a delivery
of their own, committed, then removed) and into a table of the same columns without indexes.
No Python work is left in these: what remains is the server's, for rows of our width into our
table. The ingest can be no faster than the first, whatever its own code does.
"""

from __future__ import annotations

import codecs
import csv
import io
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    INGEST_PARTNER,
    INGEST_PERIOD,
    SCALES,
    CpuMeter,
    child_parser,
    manifest,
    measurement,
    median_run,
    peak_rss_bytes,
    psycopg_url,
    read_json,
    say,
    write_results,
)
from services.ingest.repository import SIGNAL_COLUMNS
from shared.ids import SIGNAL_BLOCK_BITS
from shared.settings import Settings

CHUNK = 8 * 1024 * 1024
FLOOR_TABLE = "bench_copy_floor"


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
    statement = (
        f"COPY {FLOOR_TABLE} FROM STDIN WITH (FORMAT csv, HEADER true, "
        f"DELIMITER '{separator}', ENCODING '{encoding}')"
    )
    runs = []
    with psycopg.connect(psycopg_url(settings.database_url)) as conn:
        for _ in range(SCALES[args.scale].repeats):
            say(f"copy floor: {entry['rows']} rows into an unindexed table of text columns")
            wall, stored = raw_copy(conn, path, len(columns), statement)
            if stored != entry["rows"]:
                raise SystemExit(f"COPY stored {stored} rows, expected {entry['rows']}")
            say(f"copy floor: {stored} rows in {wall:.2f} s ({stored / wall:,.0f} rows/s)")
            runs.append(
                measurement(
                    "copy",
                    "Floor: psycopg COPY of the raw CSV into an unindexed text table",
                    rows=stored,
                    wall_s=wall,
                    peak_rss=peak_rss_bytes(),
                    columns=len(columns),
                )
            )
    results = [median_run(runs)]
    partner = read_json(args.state)["partners"][INGEST_PARTNER[0]]
    with psycopg.connect(psycopg_url(settings.database_url)) as conn:
        results += database_share(conn, uuid.UUID(partner))
    write_results(args.result_file, results)


def raw_copy(
    conn: psycopg.Connection[Any], path: Path, columns: int, statement: str
) -> tuple[float, int]:
    """The file's bytes through ``statement`` into a new table of ``columns`` text columns,
    committed: (seconds from reading the file to the commit, rows stored). The table is dropped
    afterwards."""
    definition = ", ".join(f"c{i} text" for i in range(columns))
    conn.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
    conn.execute(f"CREATE TABLE {FLOOR_TABLE} ({definition})")
    conn.commit()
    started = time.perf_counter()
    content = path.read_bytes()
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        view = memoryview(content)
        for offset in range(0, len(content), CHUNK):
            copy.write(view[offset : offset + CHUNK])
    conn.commit()
    wall = time.perf_counter() - started
    found = conn.execute(f"SELECT count(*) FROM {FLOOR_TABLE}").fetchone()  # noqa: S608
    conn.execute(f"DROP TABLE {FLOOR_TABLE}")
    conn.commit()
    return wall, int(found[0]) if found else 0


def database_share(conn: psycopg.Connection[Any], partner_id: uuid.UUID) -> list[dict[str, Any]]:
    """The ingest's stored rows copied again into ``signals`` and into an unindexed table of
    its columns (see the module's docstring); nothing if the ingest part did not run."""
    found = conn.execute(
        "SELECT id, row_count, first_signal_id, last_signal_id FROM deliveries"
        " WHERE partner_id = %s AND period = %s AND status = 'accepted'",
        (partner_id, INGEST_PERIOD),
    ).fetchone()
    if found is None:
        say("copy floor: no ingested delivery to copy again (the ingest part did not run)")
        return []
    source, rows, first, last = found
    # The copy: a delivery of its own, with a block of signal ids of its own (shared.ids).
    copy_of, block = uuid.uuid4(), 1 << SIGNAL_BLOCK_BITS
    drawn = conn.execute("SELECT nextval('signal_blocks')").fetchone()
    copy_first = int(drawn[0]) * block  # type: ignore[index]
    replaced = {
        "id": sql.SQL("id + {} AS id").format(copy_first - first),
        "delivery_id": sql.SQL("{}::uuid AS delivery_id").format(str(copy_of)),
    }
    columns = ", ".join(SIGNAL_COLUMNS)
    chosen = sql.SQL(", ").join(replaced.get(c, sql.Identifier(c)) for c in SIGNAL_COLUMNS)
    copied = (copy_first, copy_first + block - 1, copy_of)
    results = []
    with tempfile.TemporaryDirectory(prefix="vs-bench-copy-") as folder:
        path = Path(folder) / "signals.bin"
        export = sql.SQL(
            "COPY (SELECT {} FROM signals WHERE id BETWEEN {} AND {} AND delivery_id = {}"
            " ORDER BY id) TO STDOUT (FORMAT binary)"
        ).format(chosen, first, last, str(source))
        with path.open("wb") as out, conn.cursor() as cursor, cursor.copy(export) as copy:
            for chunk in copy:
                out.write(chunk)
        conn.commit()
        say(f"copy floor: the ingest's {rows} stored rows ({path.stat().st_size / 1e6:.0f} MB)")
        delivery = (
            "INSERT INTO deliveries (id, partner_id, period, status, source, file_format,"
            " filename, content_sha256, size_bytes, row_count, warning_count, received_at,"
            " first_signal_id, last_signal_id) VALUES (%s, %s, %s, 'superseded', 'sftp', 'csv',"
            " 'bench-copy', '', 0, %s, 0, now(), %s, %s)",
            (copy_of, partner_id, INGEST_PERIOD, rows, copy_first, copy_first + block - 1),
        )
        results.append(
            _timed_copy(
                conn,
                (
                    "copy_ours",
                    "Floor for our table: the ingest's stored rows copied again into signals",
                ),
                f"COPY signals ({columns}) FROM STDIN (FORMAT binary)",
                path,
                rows,
                before=delivery,
            )
        )
        if _count(conn, *copied) != rows:
            raise SystemExit("the copy into signals did not store every row")
        # Its signals removed by their range (the delivery, superseded, stays: removing it
        # would look for its signals through the whole table, which has no index by delivery).
        conn.execute("DELETE FROM signals WHERE id BETWEEN %s AND %s", copied[:2])
        if _count(conn, *copied):
            raise SystemExit("the copied rows were not removed")
        conn.execute("CREATE TABLE bench_copy_ours AS SELECT * FROM signals LIMIT 0")
        conn.commit()
        results.append(
            _timed_copy(
                conn,
                (
                    "copy_ours_unindexed",
                    "Floor for our rows: the same, into a table of signals' columns, no indexes",
                ),
                f"COPY bench_copy_ours ({columns}) FROM STDIN (FORMAT binary)",
                path,
                rows,
            )
        )
        conn.execute("DROP TABLE bench_copy_ours")
        conn.commit()
    # The removed rows' space, for the parts after this one (as the setup left the table).
    conn.autocommit = True
    conn.execute("VACUUM (ANALYZE) signals, deliveries")
    conn.execute("CHECKPOINT")
    return results


def _timed_copy(
    conn: psycopg.Connection[Any],
    part: tuple[str, str],
    statement: str,
    path: Path,
    rows: int,
    *,
    before: tuple[str, tuple[Any, ...]] | None = None,
) -> dict[str, Any]:
    """After a checkpoint: ``before`` (a statement and its values), the file's rows through
    ``statement``, the commit; timed, with the CPU it took."""
    conn.execute("CHECKPOINT")
    conn.commit()
    meter, started = CpuMeter(), time.perf_counter()
    if before is not None:
        conn.execute(*before)
    _copy_file(conn, statement, path)
    conn.commit()
    wall, cpu = time.perf_counter() - started, meter.read()
    say(f"copy floor: {part[0]} in {wall:.2f} s")
    return measurement(*part, rows=rows, wall_s=wall, peak_rss=None, cpu=cpu)


def _count(conn: psycopg.Connection[Any], first: int, last: int, delivery: uuid.UUID) -> int:
    found = conn.execute(
        "SELECT count(*) FROM signals WHERE id BETWEEN %s AND %s AND delivery_id = %s",
        (first, last, delivery),
    )
    return int(found.fetchone()[0])  # type: ignore[index]


def _copy_file(conn: psycopg.Connection[Any], statement: str, path: Path) -> None:
    with path.open("rb") as source, conn.cursor() as cursor, cursor.copy(statement) as copy:
        while chunk := source.read(CHUNK):
            copy.write(chunk)


if __name__ == "__main__":
    main()
