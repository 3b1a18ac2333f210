"""Frames into tables: every value comes back as it went in, on each backend.

On PostgreSQL the rows travel in the binary COPY format (``shared.pgcopy``) wherever the table's
types allow, and as CSV otherwise; on SQLite by ``executemany``. Either way the stored rows must
be the frame's, NULLs, empty values, long and multi-byte text, bytes of every value and the
extremes of each type included.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared import bulk, pgcopy
from shared.context import Context
from shared.db import UTCDateTime
from tests.conftest import _backends

TYPES = sa.Table(
    "pgcopy_probe",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("small", sa.SmallInteger),
    sa.Column("number", sa.Integer),
    sa.Column("big", sa.BigInteger),
    sa.Column("flag", sa.Boolean),
    sa.Column("day", sa.Date),
    sa.Column("stamp", UTCDateTime),
    sa.Column("ident", sa.Uuid),
    sa.Column("label", sa.String(40)),
    sa.Column("note", sa.Text),
    sa.Column("blob", sa.LargeBinary),
    sa.Column("ratio", sa.Float),
)
SCHEMA: dict[str, Any] = {
    "id": pl.Int32,
    "small": pl.Int16,
    "number": pl.Int32,
    "big": pl.Int64,
    "flag": pl.Boolean,
    "day": pl.Date,
    "stamp": pl.Datetime("us", "UTC"),
    "ident": pl.String,
    "label": pl.String,
    "note": pl.String,
    "blob": pl.Binary,
    "ratio": pl.Float64,
}

# Text as PostgreSQL holds it: any character but NUL (and no lone surrogates, which UTF-8 lacks).
TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def _int(bits: int) -> st.SearchStrategy[int]:
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


ROW = st.tuples(
    st.none() | _int(16),
    st.none() | _int(32),
    st.none() | _int(64),
    st.none() | st.booleans(),
    st.none() | st.dates(date(1800, 1, 1), date(2999, 12, 31)),
    st.none()
    | st.datetimes(datetime(1900, 1, 1), datetime(2199, 12, 31)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    st.none() | st.uuids().map(str),
    st.none() | st.text(TEXT, max_size=40),
    st.none() | st.text(TEXT, max_size=200) | st.text(TEXT, min_size=130, max_size=300),
    st.none() | st.binary(max_size=300),
    st.none() | st.floats(allow_nan=False, allow_infinity=False, width=64),
)


@pytest.fixture
def probe(ctx: Context) -> Iterator[sa.Table]:
    TYPES.create(ctx.engine)
    yield TYPES
    TYPES.drop(ctx.engine)


def _frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame([(i, *row) for i, row in enumerate(rows)], schema=SCHEMA, orient="row")


def _stored(ctx: Context, table: sa.Table) -> list[tuple[Any, ...]]:
    with ctx.sessions() as session:
        found = session.execute(sa.select(table).order_by(table.c.id)).all()
    return [tuple(row) for row in found]


def _expected(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return [
        tuple(uuid.UUID(v) if name == "ident" and v is not None else v for name, v in row.items())
        for row in frame.to_dicts()
    ]


# Long text in every row (lengths of 128 bytes and more, whose prefixes are not ASCII) and
# multi-byte text: the cases the text join must leave to the byte join.
LONG = (1, 2, 3, True, date(2026, 11, 30), None, None, "é" * 40, "x" * 128, b"\xff" * 300, 0.5)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(rows=[LONG, (*LONG[:8], "y" * 300, *LONG[9:])], repeat=1, piece=1)
@example(rows=[LONG, (*LONG[:8], "z" * 127, *LONG[9:])], repeat=2, piece=30)
@given(
    rows=st.lists(ROW, min_size=1, max_size=25),
    repeat=st.integers(1, 3),
    piece=st.integers(1, 30),
)
def test_every_value_comes_back_as_it_went_in(
    ctx: Context, probe: sa.Table, rows: list[tuple[Any, ...]], repeat: int, piece: int
) -> None:
    """Rows repeated (so that columns are now and then constant, or all NULL) go in and come
    back the same; on PostgreSQL in the binary format, never as CSV, and in pieces of any size:
    the field order is settled by the first piece, whose constant and NULL columns need not be
    those of the next."""
    frame = _frame(rows * repeat)
    with ctx.sessions.begin() as session:
        session.execute(sa.delete(probe))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bulk, "csv_text", _no_csv)
        patch.setattr(bulk, "COPY_PIECE_ROWS", piece)
        with ctx.sessions.begin() as session:
            bulk.insert_frame(session, probe, frame, uuid_columns=("ident",))
    assert _stored(ctx, probe) == _expected(frame)


def _no_csv(frame: pl.DataFrame) -> str:
    raise AssertionError("every type of this table has a binary form: no CSV")


@pytest.mark.parametrize(
    "database_url", [b for b in _backends() if b == "postgresql"], indirect=True
)
def test_a_frame_is_converted_to_the_column_types(ctx: Context, probe: sa.Table) -> None:
    """PostgreSQL: frames with other Polars types (text dates and numbers) are converted
    strictly; a value that does not convert fails the insert with an error that names no value,
    and nothing is stored. (SQLite takes what it is given.)"""
    frame = pl.DataFrame(
        {"id": [1, 2], "number": ["7", "-8"], "day": ["2026-11-30", "1999-12-31"]},
        schema={"id": pl.Int64, "number": pl.String, "day": pl.String},
    )
    with ctx.sessions.begin() as session:
        bulk.insert_frame(session, probe, frame)
    stored = [(r[0], r[2], r[5]) for r in _stored(ctx, probe)]
    assert stored == [(1, 7, date(2026, 11, 30)), (2, -8, date(1999, 12, 31))]

    bad = frame.with_columns(pl.col("id") + 10, pl.Series("number", ["9", "nine"]))
    with pytest.raises(ValueError, match="convert") as refused, ctx.sessions.begin() as session:
        bulk.insert_frame(session, probe, bad)
    # The values are personal data in practice: the error names none (Polars' own would).
    assert "nine" not in str(refused.value)
    assert refused.value.__suppress_context__

    # Numbers beyond the column's width, and text that is not a UUID, are refused as such.
    wide = pl.DataFrame({"id": [20], "small": [40_000]}, schema={"id": pl.Int64, "small": pl.Int64})
    with pytest.raises(ValueError, match="out of range"), ctx.sessions.begin() as session:
        bulk.insert_frame(session, probe, wide)
    not_uuid = pl.DataFrame({"id": [21], "ident": ["not-a-uuid"]})
    with pytest.raises(ValueError, match="not a UUID"), ctx.sessions.begin() as session:
        bulk.insert_frame(session, probe, not_uuid)
    assert len(_stored(ctx, probe)) == 2
    assert len(_stored(ctx, probe)) == 2


OTHER = sa.Table(
    "pgcopy_other",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("amount", sa.Numeric(12, 2)),
    sa.Column("label", sa.String(10)),
)


def test_a_table_with_a_type_without_a_binary_form_is_copied_as_csv(ctx: Context) -> None:
    OTHER.create(ctx.engine)
    try:
        frame = pl.DataFrame(
            {"id": [1, 2], "amount": ["12.50", None], "label": ["a", None]},
            schema={"id": pl.Int64, "amount": pl.String, "label": pl.String},
        )
        with ctx.sessions.begin() as session:
            bulk.insert_frame(session, OTHER, frame)
        assert _stored(ctx, OTHER) == [(1, Decimal("12.50"), "a"), (2, None, None)]
    finally:
        OTHER.drop(ctx.engine)


def test_which_types_have_a_binary_form() -> None:
    assert pgcopy.supported({"a": "int4", "b": "uuid", "c": "bytea", "d": "timestamptz"})
    assert not pgcopy.supported({"a": "int4", "b": "numeric"})
    assert not pgcopy.supported({"a": "jsonb"})
    types = {"t": "text", "m": "text", "b": "bytea", "x": "int4", "n": "int8", "u": "uuid"}
    rows = pgcopy.BinaryRows(types)
    first = pl.DataFrame(
        {
            "t": ["a", "b"],
            "m": ["a", None],
            "b": [b"\x00", b"\xff"],
            "x": [1, None],
            "n": [1, 2],
            "u": [str(uuid.uuid4())] * 2,
        }
    )
    # Fixed-width without NULLs, with NULLs, then short text without NULLs, then the rest.
    assert rows.order_for(first) == ["n", "u", "x", "t", "m", "b"]
