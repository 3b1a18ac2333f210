"""PostgreSQL's binary ``COPY`` format, built from Polars frames a column at a time.

In the text formats the server parses every value: at a million signals an upload is 659 bytes of
CSV a row, which the server splits into fields and reads as UUIDs, dates, timestamps and the
envelope's hex: reading the rows was 19.0 % of the machine's profile during an upload, of 37.8 %
in PostgreSQL altogether (bench/HISTORY.md). In the binary format each
field arrives as its length and the value as stored, and the server copies it.

A row is a 16-bit field count, then per field a 32-bit length (-1 for NULL) and the value in its
type's binary form, in network byte order. Rows are put together from whole columns, with no
Python object per value:

* fixed-width values (integers, dates, timestamps, booleans, UUIDs) without NULLs form one block
  of equal-length rows: a row template holding the parts every row shares (the field count, the
  lengths, the values that are the same in every row of the frame) repeated, and the varying
  bytes set one byte position at a time over all rows (a strided copy);
* text and ``bytea`` values are joined per row in Polars behind their lengths (a table of the
  lengths that occur), as is a fixed-width column that holds NULLs;
* the block and the joined parts are concatenated per row in Polars.

Only the types below are written this way; a table with a column of any other type is copied as
CSV (``shared.bulk``). A frame's Polars type is converted to the column's where Polars can
(strictly: a value that does not convert is an error, never a wrong value).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import polars as pl

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)
# Rows per piece of :meth:`BinaryRows.encode`'s output (a few hundred kilobytes at most).
CHUNK_ROWS = 256

# Days and microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
_EPOCH_DAYS = (date(2000, 1, 1) - date(1970, 1, 1)).days
_EPOCH_US = _EPOCH_DAYS * 86_400 * 1_000_000

# Fixed-width types: (array type code, or None; width in bytes).
FIXED: dict[str, tuple[str | None, int]] = {
    "int2": ("h", 2),
    "int4": ("i", 4),
    "int8": ("q", 8),
    "float4": ("f", 4),
    "float8": ("d", 8),
    "date": ("i", 4),
    "timestamptz": ("q", 8),
    "timestamp": ("q", 8),
    "bool": ("B", 1),
    "uuid": (None, 16),
}
# Types whose binary form is their bytes as they are (text in the database's encoding, UTF-8).
VARIABLE = frozenset({"text", "varchar", "bpchar", "bytea"})


def supported(types: Mapping[str, str]) -> bool:
    """Whether columns of these PostgreSQL types (by ``pg_type.typname``) can be written here."""
    return all(t in FIXED or t in VARIABLE for t in types.values())


class BinaryRows:
    """Frames as rows of one binary ``COPY`` into columns of the given types.

    The fields of a row come in :attr:`columns` order, which the ``COPY`` statement must name
    in that order. It is taken from the first frame (:meth:`order_for`), so that the pieces
    that join cheaply are next to each other: fixed-width columns without NULLs (one block),
    then those with NULLs, then text without NULLs and with lengths below 128 (whose length
    prefixes are ASCII: one text join), then the rest. Any later frame is written correctly
    in that order too, if perhaps in more pieces.
    """

    def __init__(self, types: Mapping[str, str]) -> None:
        if not supported(types):
            raise ValueError("a column's type has no binary form here")
        self.types = dict(types)
        self.columns = list(types)

    def _converted(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The frame's columns in the Polars types their PostgreSQL types are built from. A
        value that does not convert is an error that names no value (Polars' own would quote
        it, and the values are personal data)."""
        try:
            return frame.select(_as_column_type(frame, c, self.types[c]) for c in self.columns)
        except pl.exceptions.PolarsError:
            raise ValueError("a value does not convert to its column's type") from None

    def order_for(self, frame: pl.DataFrame) -> list[str]:
        """Settle :attr:`columns` from a frame like those to come; returns them."""
        columns = self._converted(frame)
        nulls = columns.null_count().row(0, named=True)
        variable = [c for c in self.columns if self.types[c] in VARIABLE]
        longest = columns.select(_size(pl.col(c)).max() for c in variable)
        lengths = longest.row(0, named=True) if variable else {}

        def rank(name: str) -> int:
            if self.types[name] in FIXED:
                return 0 if nulls[name] == 0 else 1
            plain = self.types[name] != "bytea" and nulls[name] == 0
            return 2 if plain and (lengths[name] or 0) < 0x80 else 3

        self.columns = sorted(self.columns, key=rank)
        return self.columns

    def encode(self, frame: pl.DataFrame) -> list[bytes]:
        """The frame's rows (its columns by name), without the format's header or trailer, in
        pieces of :data:`CHUNK_ROWS` rows (small enough to stay in the processor's cache while
        they are joined and sent: one piece of the whole frame was slower)."""
        n = frame.height
        if n == 0:
            return []
        columns = self._converted(frame)
        variable = [c for c in self.columns if self.types[c] in VARIABLE]
        found = columns.select(
            _size(pl.col(c)).unique().drop_nulls().sort().implode() for c in variable
        )
        sizes = found.row(0, named=True) if variable else {}
        template = bytearray(struct.pack(">h", len(self.columns)))
        places: list[tuple[int, list[bytes]]] = []
        blocks: dict[str, pl.Series] = {}
        pieces: list[pl.Expr] = []
        text: list[pl.Expr] = []

        def block(rows: bytearray, at: list[tuple[int, list[bytes]]]) -> pl.Expr:
            """A block of rows as a column beside the frame's, for the row expression."""
            name = f"__pgcopy_block{len(blocks)}"
            blocks[name] = _block(n, rows, at).alias(name)
            return pl.col(name)

        def close_block() -> None:
            if template:
                pieces.append(block(template, places))
            template.clear()
            places.clear()

        def close_text() -> None:
            if text:
                pieces.append(pl.concat_str(text).cast(pl.Binary))
            text.clear()

        for name in self.columns:
            pgtype, series, col = self.types[name], columns.get_column(name), pl.col(name)
            nulls = series.null_count()
            if pgtype in FIXED:
                close_text()
                width = FIXED[pgtype][1]
                if nulls == n:
                    template += NULL
                elif nulls == 0 and _constant(series):
                    first = _planes(series.head(1), pgtype)
                    template += struct.pack(">i", width) + bytes(p[0] for p in first)
                elif nulls == 0:
                    template += struct.pack(">i", width)
                    places.append((len(template), _planes(series, pgtype)))
                    template += bytes(width)
                else:
                    close_block()
                    filled = series.fill_null(series.drop_nulls().first())
                    value = bytearray(struct.pack(">i", width) + bytes(width))
                    pieces.append(_or_null(col, block(value, [(4, _planes(filled, pgtype))])))
                continue
            close_block()
            if nulls == n:
                close_text()
                pieces.append(pl.lit(NULL))
                continue
            lengths = sizes[name]
            prefixes = [struct.pack(">i", size) for size in lengths]
            if series.dtype == pl.String and nulls == 0 and all(max(p) < 0x80 for p in prefixes):
                # Lengths whose four bytes are all ASCII join as text, with the run's others.
                text += [_prefix(col, lengths, [p.decode() for p in prefixes], pl.String), col]
                continue
            close_text()
            pieces.append(
                _or_null(col, _prefix(col, lengths, prefixes, pl.Binary) + col.cast(pl.Binary))
            )
        close_block()
        close_text()
        rows = columns.with_columns(blocks.values()).select(_joined(pieces).alias("row"))
        values = rows.to_series().to_list()
        return [b"".join(values[i : i + CHUNK_ROWS]) for i in range(0, n, CHUNK_ROWS)]


def _joined(pieces: Sequence[pl.Expr]) -> pl.Expr:
    """The pieces' concatenation, as a balanced tree (each byte copied fewer times)."""
    if len(pieces) == 1:
        return pieces[0]
    middle = len(pieces) // 2
    return _joined(pieces[:middle]) + _joined(pieces[middle:])


def _or_null(col: pl.Expr, field: pl.Expr) -> pl.Expr:
    return pl.when(col.is_null()).then(pl.lit(NULL)).otherwise(field)


def _as_column_type(frame: pl.DataFrame, name: str, pgtype: str) -> pl.Expr:
    """The column in the Polars type its PostgreSQL type is built from."""
    col, dtype = pl.col(name), frame.schema[name]
    if pgtype in ("int2", "int4", "int8"):
        return col if dtype.is_integer() else col.cast(pl.Int64, strict=True)
    if pgtype in ("float4", "float8"):
        return col.cast(pl.Float64, strict=True)
    if pgtype == "bool":
        return col.cast(pl.Boolean, strict=True)
    if pgtype == "date":
        if dtype == pl.String:
            return col.str.to_date("%Y-%m-%d", strict=True)
        return col if dtype == pl.Date else col.cast(pl.Date, strict=True)
    if pgtype in ("timestamptz", "timestamp"):
        if not isinstance(dtype, pl.Datetime):
            raise TypeError(f"column {name}: a timestamp needs a Datetime column")
        return col
    if pgtype == "uuid":
        return col.cast(pl.String, strict=True)
    if pgtype == "bytea":
        return col.cast(pl.Binary, strict=True)
    return col if dtype == pl.String else col.cast(pl.String, strict=True)


def _constant(series: pl.Series) -> bool:
    return bool(series.eq(series.first()).all()) if len(series) > 1 else True


def _planes(series: pl.Series, pgtype: str) -> list[bytes]:
    """The values of a column without NULLs in their binary form, as planes: plane ``k`` holds
    byte ``k`` of every value (the form a strided copy into the rows takes)."""
    code, width = FIXED[pgtype]
    if pgtype == "uuid":
        raw = series.str.replace_all("-", "", literal=True).str.decode("hex", strict=False)
        if raw.null_count() or (raw.bin.size() != width).any():
            raise ValueError("a value of a uuid column is not a UUID")
        flat = _contiguous(raw.cast(pl.List(pl.UInt8)).explode())
        return [flat[k::width] for k in range(width)]
    if pgtype in ("float4", "float8"):
        assert code is not None
        values = array(code, series.to_list())
        if sys.byteorder == "little":
            values.byteswap()
        flat = values.tobytes()
        return [flat[k::width] for k in range(width)]
    if pgtype == "date":
        number = series.cast(pl.Int64) - _EPOCH_DAYS
    elif pgtype in ("timestamptz", "timestamp"):
        number = series.dt.epoch("us")
        number = number - _EPOCH_US
    else:
        number = series.cast(pl.Int64)
    if width < 8:
        bound = 1 << (8 * width - 1)
        low, high = number.min(), number.max()
        if not (isinstance(low, int) and isinstance(high, int) and -bound <= low <= high < bound):
            raise ValueError(f"a value is out of range for {pgtype}")
    # Two's complement in 64 bits, whose last ``width`` bytes are the value's own.
    unsigned = number.reinterpret(signed=False).alias("v")
    planes = unsigned.to_frame().select(
        (pl.col("v") // (1 << (8 * (width - 1 - k))) % 256).cast(pl.UInt8).alias(str(k))
        for k in range(width)
    )
    return [_contiguous(plane) for plane in planes.iter_columns()]


def _contiguous(octets: pl.Series) -> bytes:
    """A series of UInt8 as the bytes it holds."""
    data: bytes = octets.implode().cast(pl.Binary).item()
    return data


def _block(n: int, template: bytearray, places: Sequence[tuple[int, Sequence[bytes]]]) -> pl.Series:
    """``n`` rows of the template, with each place's planes (a byte of every row each) from its
    offset on."""
    step = len(template)
    block = template * n
    for offset, planes in places:
        for k, plane in enumerate(planes):
            block[offset + k :: step] = plane
    flat = pl.Series([bytes(block)], dtype=pl.Binary).cast(pl.List(pl.UInt8)).explode()
    return flat.reshape((n, step)).arr.to_list().cast(pl.Binary)


def _size(col: pl.Expr) -> pl.Expr:
    return col.cast(pl.Binary).bin.size()


def _prefix(col: pl.Expr, sizes: list[int], prefixes: Sequence[object], dtype: Any) -> pl.Expr:
    """Each value's length prefix (``prefixes[i]`` for ``sizes[i]``), as ``dtype``."""
    if len(sizes) == 1:
        return pl.lit(prefixes[0], dtype=dtype)
    return _size(col).replace_strict(sizes, prefixes, return_dtype=dtype)
