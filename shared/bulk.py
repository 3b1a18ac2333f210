"""Bulk reads and writes between Polars frames and the database, never row by row through the ORM.

PostgreSQL moves data with ``COPY``: into tables in the binary format (``shared.pgcopy``) where
every column's type has one there, else as CSV; out of them as CSV. SQLite, the embedded default
for small municipalities, with ``executemany``.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl
from psycopg import Copy
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import Table, Uuid, bindparam, delete, insert, or_, text, update
from sqlalchemy import column as column_clause
from sqlalchemy import table as table_clause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared import pgcopy
from shared.pgcopy import BinaryRows


def is_postgres(session: Session) -> bool:
    return session.connection().dialect.name == "postgresql"


def dialect_insert(session: Session) -> Any:
    """The backend's ``insert`` construct (with ``on_conflict_do_update`` / ``_do_nothing``)."""
    return postgresql.insert if is_postgres(session) else sqlite.insert


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns written the way PostgreSQL's CSV COPY reads them."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype == pl.Binary:
            exprs.append((pl.lit("\\x") + col.bin.encode("hex")).alias(name))
        elif isinstance(dtype, pl.Datetime):
            exprs.append(col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.f+00:00"))
        elif isinstance(dtype, pl.List):
            raise TypeError(f"column {name}: lists cannot be copied")
        else:
            exprs.append(col)
    return frame.select(exprs)


def csv_text(frame: pl.DataFrame) -> str:
    """A frame as the CSV text a COPY reads (no header)."""
    return _csv_ready(frame).write_csv(include_header=False)


# Rows per piece of a single frame's COPY: the server stores one piece while the caller encodes
# the next (the run's 249,000 new cases: 0.3 s of CSV when they went as CSV, no longer before the
# server can start).
COPY_PIECE_ROWS = 50_000


def copy_into(session: Session, table: str, frame: pl.DataFrame) -> None:
    """COPY a frame into a PostgreSQL table (columns by name), a piece at a time."""
    if frame.is_empty():
        return
    with _copy_writer(session, table, frame.columns) as write:
        for start in range(0, frame.height, COPY_PIECE_ROWS):
            write(frame.slice(start, COPY_PIECE_ROWS))


class CopyAborted(Exception):
    """Sent to the server when a COPY is abandoned: its text reaches the server's log, so it
    says nothing about why (the caller's own exception goes on up, unchanged)."""


@dataclass(frozen=True)
class FrameWriter:
    """Inserts frames into one table, many times over (:func:`frame_writer`).

    Calling it with a frame inserts the frame. The two halves can also run apart: ``prepare``
    turns a frame into what ``send`` hands to the database (on PostgreSQL the encoded rows), and
    may run on another thread than the one that sends, so that one batch is encoded while the
    database stores the one before. Frames must be prepared one at a time, and sent in the
    order they were prepared in.
    """

    prepare: Callable[[pl.DataFrame], Any]
    send: Callable[[Any], None]

    def __call__(self, frame: pl.DataFrame) -> None:
        self.send(self.prepare(frame))


@contextmanager
def frame_writer(
    session: Session, table: Table, columns: Sequence[str], uuid_columns: Sequence[str] = ()
) -> Iterator[FrameWriter]:
    """A writer (:class:`FrameWriter`) of frames (with ``columns``) into ``table``.

    On PostgreSQL one ``COPY`` stays open for all of them, fed by a background writer: while the
    server stores one batch, the caller prepares the next (the two cores work side by side). An
    exception in the block abandons the COPY, so nothing of it is stored, and goes on up.
    SQLite: :func:`insert_frame` per frame.
    """
    if not is_postgres(session):
        yield FrameWriter(
            lambda frame: frame.select(columns),
            lambda frame: insert_frame(session, table, frame, uuid_columns),
        )
        return
    with _copy_writer(session, table.name, columns) as write:
        yield FrameWriter(lambda frame: write.prepare(frame.select(columns)), write.send)


@contextmanager
def _copy_writer(session: Session, table: str, columns: Sequence[str]) -> Iterator[FrameWriter]:
    """One open ``COPY`` into ``table`` (``columns``), fed by a background writer; see
    :func:`frame_writer`. In PostgreSQL's binary format where every column's type has one here
    (``shared.pgcopy``: the server then reads no text), else CSV."""
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None
    types = column_types(session, table, columns)
    binary = BinaryRows(types) if pgcopy.supported(types) else None
    with dbapi.cursor() as cursor:
        stack = ExitStack()
        copy: Copy | None = None
        ordered = False

        def prepare(frame: pl.DataFrame) -> list[bytes] | list[memoryview]:
            """The frame's rows as the COPY reads them, in pieces. The binary format's field
            order is settled by the first rows (``BinaryRows.order_for``)."""
            nonlocal ordered
            if frame.is_empty():
                return []
            if binary is None:
                # A view: the writer hands it on in slices, which of bytes would be copies.
                return [memoryview(csv_text(frame).encode())]
            if not ordered:
                binary.order_for(frame)
                ordered = True
            return binary.encode(frame)

        def send(pieces: list[bytes] | list[memoryview]) -> None:
            """Prepared rows to the server; the COPY is opened with the first of them."""
            nonlocal copy
            if not pieces:
                return
            if copy is None:
                names = ", ".join(binary.columns if binary else columns)
                form = "binary" if binary else "csv"
                copy = stack.enter_context(
                    cursor.copy(
                        f"COPY {table} ({names}) FROM STDIN WITH (FORMAT {form})",
                        writer=QueuedLibpqWriter(cursor),
                    )
                )
                if binary:
                    copy.write(pgcopy.HEADER)
            for piece in pieces:
                copy.write(piece)

        try:
            yield FrameWriter(prepare, send)
        except BaseException:
            aborted = CopyAborted("the rows were not stored")
            stack.__exit__(CopyAborted, aborted, None)
            raise
        if binary and copy is not None:
            copy.write(pgcopy.TRAILER)
        stack.close()


def column_types(session: Session, table: str, columns: Sequence[str]) -> dict[str, str]:
    """PostgreSQL's type names (``pg_type.typname``) of a table's columns, in ``columns`` order."""
    rows = session.execute(
        text(
            "SELECT a.attname, t.typname FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 "
            "AND NOT a.attisdropped"
        ),
        {"table": table},
    )
    found = {name: typname for name, typname in rows}
    return {name: found[name] for name in columns}


def insert_frame(
    session: Session, table: Table, frame: pl.DataFrame, uuid_columns: Sequence[str] = ()
) -> None:
    """Insert every row of ``frame`` into ``table``: COPY on PostgreSQL, executemany on SQLite.

    ``uuid_columns`` hold UUIDs as text in the frame (Polars has no UUID type).
    """
    if frame.is_empty():
        return
    if is_postgres(session):
        copy_into(session, table.name, frame)
        return
    rows = frame.to_dicts()
    for column in uuid_columns:
        for row in rows:
            if row[column] is not None:
                row[column] = uuid.UUID(row[column])
    session.connection().execute(insert(table), rows)


def read_frame(
    session: Session,
    query: str,
    params: dict[str, Any],
    schema: dict[str, Any],
) -> pl.DataFrame:
    """The result of a SELECT as a typed frame (COPY on PostgreSQL, a cursor on SQLite).

    ``query`` uses ``:name`` parameters; on PostgreSQL they are bound by the server first.
    """
    if is_postgres(session):
        literal = str(
            text(query)
            .bindparams(**params)
            .compile(dialect=session.connection().dialect, compile_kwargs={"literal_binds": True})
        )
        buffer = io.BytesIO()
        dbapi = session.connection().connection.driver_connection
        assert dbapi is not None
        with (
            dbapi.cursor() as cursor,
            cursor.copy(f"COPY ({literal}) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy,
        ):
            for chunk in copy:
                buffer.write(chunk)
        if buffer.tell() == 0:
            return pl.DataFrame(schema=schema)
        buffer.seek(0)
        # PostgreSQL writes booleans as t/f in CSV: read them as text, then convert.
        booleans = [name for name, dtype in schema.items() if dtype == pl.Boolean]
        read_schema = {n: (pl.String if n in booleans else d) for n, d in schema.items()}
        frame = pl.read_csv(buffer, schema=read_schema, has_header=True)
        return frame.with_columns([(pl.col(n) == "t").alias(n) for n in booleans])
    result = session.connection().execute(text(query), params)
    rows = result.fetchall()
    raw = pl.DataFrame(
        [tuple(r) for r in rows],
        schema={name: _sqlite_raw(dtype) for name, dtype in schema.items()},
        orient="row",
    )
    return raw.with_columns([_sqlite_cast(name, dtype) for name, dtype in schema.items()])


def _sqlite_raw(dtype: Any) -> Any:
    return pl.String if dtype in (pl.Date, pl.String) else dtype


def _sqlite_cast(name: str, dtype: Any) -> pl.Expr:
    if dtype == pl.Date:
        return pl.col(name).str.to_date("%Y-%m-%d")
    return pl.col(name).cast(dtype)


def _staged(session: Session, table: Table, frame: pl.DataFrame, purpose: str) -> str:
    """PostgreSQL: ``frame`` in a temporary table with ``table``'s types for its columns (dropped
    at commit at the latest), analysed so that the planner knows its size; returns its name."""
    temp = f"tmp_{purpose}_{table.name}"
    names = ", ".join(frame.columns)
    session.execute(
        text(
            f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS "  # noqa: S608 (names from the model)
            f"SELECT {names} FROM {table.name} WITH NO DATA"
        )
    )
    copy_into(session, temp, frame)
    session.execute(text(f"ANALYZE {temp}"))
    return temp


def delete_by_keys(session: Session, table: Table, column: str, keys: Sequence[Any]) -> None:
    """``DELETE FROM table WHERE column IN keys``, for any number of keys.

    PostgreSQL: the keys are copied into a temporary table (analysed) and deleted by one join, so
    a rerun unlinks a quarter of a million cases in one statement instead of hundreds of
    statements of a thousand bound values each (3.8 s of a national rerun). SQLite: in chunks
    of a thousand.
    """
    if not keys:
        return
    if is_postgres(session):
        keyframe = pl.DataFrame({column: [str(k) for k in keys]})
        temp = _staged(session, table, keyframe, "delete")
        session.execute(
            text(
                f"DELETE FROM {table.name} USING {temp} d "  # noqa: S608
                f"WHERE {table.name}.{column} = d.{column}"
            )
        )
        session.execute(text(f"DROP TABLE {temp}"))
        return
    for start in range(0, len(keys), 1000):
        chunk = list(keys[start : start + 1000])
        session.execute(delete(table).where(table.c[column].in_(chunk)))


# Integer keys count as neighbours when their range is at most this many times the frame's rows.
DENSE_SPAN = 4


def update_from_frame(
    session: Session,
    table: Table,
    key: str,
    frame: pl.DataFrame,
    *,
    changed: Sequence[str] | None = None,
) -> None:
    """``UPDATE table SET <other columns> WHERE table.key = frame.key`` for the rows of ``frame``
    whose ``changed`` columns (default: all the others) differ from the table's, NULL being a
    value like any other: a row that would stay the same is not written at all (no new row
    version, no index entries, nothing in the write-ahead log).

    PostgreSQL: COPY into a temporary table shaped like ``table``, analysed, then one
    ``UPDATE ... FROM``. When the frame's keys are neighbours (all of a month's signals, a run's
    cases), the statement is bounded by the smallest and largest of them, so that the planner
    reads that range of the table's key only: at national scale, a rerun's million signals were
    otherwise joined by reading all 13 million (9.5 to 12 s). A few keys spread over a wide
    range (the signals a first run sets aside, one in thirty of the month's) are left to
    look-ups by key: bounded, the planner reads the whole range instead (32,500 of a month in the
    middle of the table, under ``EXPLAIN ANALYZE``: 1.76 s against 1.25 s).

    SQLite: ``executemany``. Columns holding UUIDs as text must be named in the table as
    ``Uuid``; they are converted here.
    """
    if frame.is_empty():
        return
    columns = [c for c in frame.columns if c != key]
    compared = list(changed) if changed is not None else columns
    if is_postgres(session):
        temp = _staged(session, table, frame, "update")
        assignments = ", ".join(f"{c} = t.{c}" for c in columns)
        differs = " OR ".join(f"{table.name}.{c} IS DISTINCT FROM t.{c}" for c in compared)
        low, high = frame.select(
            pl.col(key).min().alias("low"), pl.col(key).max().alias("high")
        ).row(0)
        bounds, values = "", {}
        if not isinstance(low, int) or high - low < DENSE_SPAN * frame.height:
            bounds, values = (
                f"AND {table.name}.{key} BETWEEN :low AND :high ",
                {"low": low, "high": high},
            )
        session.execute(
            text(
                f"UPDATE {table.name} SET {assignments} FROM {temp} t "  # noqa: S608
                f"WHERE {table.name}.{key} = t.{key} {bounds}AND ({differs})"
            ),
            values,
        )
        session.execute(text(f"DROP TABLE {temp}"))
        return
    uuid_columns = [c for c in frame.columns if isinstance(table.c[c].type, Uuid)]
    rows = frame.to_dicts()
    for row in rows:
        for column in uuid_columns:
            if row[column] is not None:
                row[column] = uuid.UUID(row[column])
    statement = (
        update(table)
        .where(
            table.c[key] == bindparam(f"b_{key}"),
            or_(*(table.c[c].is_distinct_from(bindparam(f"b_{c}")) for c in compared)),
        )
        .values({c: bindparam(f"b_{c}") for c in columns})
    )
    session.connection().execute(
        statement, [{f"b_{name}": value for name, value in row.items()} for row in rows]
    )


def upsert_from_frame(
    session: Session, table: Table, key: str, frame: pl.DataFrame, *, absent: dict[str, Any]
) -> None:
    """Give the rows of ``table`` keyed by ``frame[key]`` the frame's other columns: insert a
    missing row, update a present one, and write only where a value differs, a missing row
    counting as holding ``absent`` (a value per column). Columns of the table that the frame
    does not name keep what they hold.

    Both backends stage the frame in a temporary table (``COPY`` on PostgreSQL) and write with
    one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. The table's rows are looked up within
    the frame's range of keys: a run's signals are one month's range, and the planner then reads
    only that part of the table's key instead of all of it (the signals a first run sets aside,
    33,000 of a month, against twelve months of states at national scale: 1.5 s with the whole
    table read).
    """
    if frame.is_empty():
        return
    columns = [c for c in frame.columns if c != key]
    postgres = is_postgres(session)
    if postgres:
        temp = _staged(session, table, frame, "upsert")
    else:
        temp = f"tmp_upsert_{table.name}"
        names = ", ".join(frame.columns)
        session.execute(text(f"DROP TABLE IF EXISTS temp.{temp}"))
        session.execute(
            text(
                f"CREATE TEMP TABLE {temp} AS "  # noqa: S608 (names from the model)
                f"SELECT {names} FROM {table.name} WHERE 0"
            )
        )
        staged = table_clause(temp, *(column_clause(c) for c in frame.columns))
        session.execute(insert(staged), frame.to_dicts())
    distinct = "IS DISTINCT FROM" if postgres else "IS NOT"
    differs = " OR ".join(
        f"coalesce(x.{c}, :absent_{c}) {distinct} t.{c}"
        if absent.get(c) is not None
        else f"x.{c} {distinct} t.{c}"
        for c in columns
    )
    names = ", ".join([key, *columns])
    low, high = frame.select(pl.col(key).min(), pl.col(key).max().alias("high")).row(0)
    values = {f"absent_{c}": v for c, v in absent.items() if c in columns and v is not None}
    session.execute(
        text(
            f"INSERT INTO {table.name} ({names}) "  # noqa: S608 (names from the model)
            f"SELECT t.{key}, {', '.join(f't.{c}' for c in columns)} FROM {temp} t "
            f"LEFT JOIN {table.name} x ON x.{key} = t.{key} "
            f"AND x.{key} BETWEEN :low AND :high WHERE {differs} "
            f"ON CONFLICT ({key}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns)
        ),
        values | {"low": low, "high": high},
    )
    session.execute(text(f"DROP TABLE {temp}"))
