"""Reading partner files: CSV or JSON, as real ERP and spreadsheet exports produce them.

* Encoding: UTF-8 with or without BOM; otherwise Windows-1252 (what Dutch Excel writes).
* CSV: separator ``;``, ``,`` or tab, detected from the header line; header names case-insensitive,
  with space, ``-`` and ``_`` equivalent (``Achterstand sinds`` = ``achterstand_sinds``).
* JSON: ``{"signalen": [...]}`` or a bare list of objects with the same field names. Duplicate keys,
  ``NaN``/``Infinity`` and numbers out of range are refused, not guessed at.
* Rows are numbered as a spreadsheet shows them (header = row 1); for JSON the 1-based position.

The result is read in batches of text columns (canonical names, absent optional columns as
nulls) plus a ``row`` column; :mod:`services.ingest.validation` turns the text into values. A CSV
file is streamed: only the header is read up front, and the rows are parsed a batch at a time
while they are validated and stored, so memory does not grow with the number of rows (the upload
itself is bounded by ``VS_MAX_UPLOAD_BYTES``). A JSON file is parsed whole, then batched.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

import polars as pl

from services.ingest.validation import CONTROL_CHARS
from shared.errors import RowProblem, UnsupportedMediaType, ValidationFailed

FileFormat = Literal["csv", "json"]
FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

REQUIRED_FIELDS = (
    "referentie",
    "achternaam",
    "huisnummer",
    "postcode",
    "bedrag",
    "achterstand_sinds",
)
OPTIONAL_FIELDS = (
    "tussenvoegsel",
    "voorletters",
    "geboortedatum",
    "bsn",
    "straat",
    "huisletter",
    "huisnummertoevoeging",
    "woonplaats",
    "telefoon",
    "email",
    "signaaldatum",
    "crisis",
    "warme_overdracht",
    "eindelevering",
)
ALL_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
MAX_COLUMNS = 200
# Magic numbers of formats people upload by mistake (zip/xlsx, pdf, xls, gzip, png, jpeg).
BINARY_MAGIC = (
    b"PK\x03\x04",
    b"%PDF",
    b"\xd0\xcf\x11\xe0",
    b"\x1f\x8b",
    b"\x89PNG",
    b"\xff\xd8\xff",
)
_SEPARATOR_CANDIDATES = (";", ",", "\t")
_FIRST_CONTENT = re.compile(rb"[^ \t\r\n\xef\xbb\xbf]")
_BARE_CR = re.compile(rb"\r(?!\n)")
# Every byte but the control characters the validation refuses (all ASCII): deleting these
# from a file leaves its control characters.
_NOT_CONTROL = bytes(b for b in range(256) if not re.match(CONTROL_CHARS, chr(b)))


def squash(name: str) -> str:
    """A header name compared case-insensitively, with space, '-' and '_' ignored."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


FIELD_BY_SQUASHED = {squash(name): name for name in ALL_FIELDS}


class ParsedFile:
    """The rows of an upload as text, with file-level warnings (such as ignored columns).

    :meth:`batches` yields the rows a batch at a time (CSV is parsed lazily, as the batches are
    asked for); :attr:`frame` is all of them at once, for small files and tests.
    """

    def __init__(
        self,
        rows: pl.LazyFrame | pl.DataFrame,
        file_format: FileFormat,
        warnings: list[RowProblem] | None = None,
        on_error: Callable[[], list[RowProblem]] | None = None,
        control_free: bool = False,
    ) -> None:
        self._rows = rows
        self.file_format: FileFormat = file_format
        self.warnings = warnings or []
        self._on_error = on_error
        # True when no value can hold a control character: a CSV file none of whose bytes is
        # one (tab, line feed and carriage return aside). JSON can write them as escapes, so a
        # JSON file is never known to be free of them.
        self.control_free = control_free

    def batches(self, batch_rows: int) -> Iterator[pl.DataFrame]:
        """The rows in order, at most ``batch_rows`` per frame; a malformed CSV raises a
        ValidationFailed naming the rows, when the reader meets it."""
        if isinstance(self._rows, pl.DataFrame):
            for offset in range(0, self._rows.height, batch_rows):
                yield self._rows.slice(offset, batch_rows)
            return
        try:
            yield from self._rows.collect_batches(chunk_size=batch_rows, maintain_order=True)
        except pl.exceptions.PolarsError as exc:
            problems = self._on_error() if self._on_error else []
            raise ValidationFailed(
                "the file is not well-formed CSV",
                problems or [RowProblem(2, "", "the file could not be read as CSV")],
            ) from exc

    @property
    def frame(self) -> pl.DataFrame:
        """Every row in one frame."""
        batches = list(self.batches(1_000_000))
        return pl.concat(batches) if batches else _empty_frame()


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema={"row": pl.Int64, **{name: pl.String for name in ALL_FIELDS}})


_CHECK_CHUNK = 4 * 1024 * 1024


def as_utf8(content: bytes) -> bytes:
    """The file as UTF-8 bytes: as it is (BOM and all) when it is UTF-8, checked a chunk at a
    time so that no text copy of the whole file is made; else read as Windows-1252 and
    re-encoded."""
    checker = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(content)
    try:
        for offset in range(0, len(view), _CHECK_CHUNK):
            checker.decode(view[offset : offset + _CHECK_CHUNK], final=False)
        checker.decode(b"", final=True)
    except UnicodeDecodeError:
        pass
    else:
        return content
    try:
        # Windows-1252 maps byte to character one to one, so it is re-encoded a chunk at a time.
        return b"".join(
            bytes(view[offset : offset + _CHECK_CHUNK]).decode("cp1252").encode("utf-8")
            for offset in range(0, len(view), _CHECK_CHUNK)
        )
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            "the file is neither UTF-8 nor Windows-1252 text",
            [RowProblem(1, "", "unreadable text encoding")],
        ) from exc


def sniff_format(content: bytes, filename: str | None, content_type: str | None) -> FileFormat:
    """CSV or JSON, from the content first; 415 for anything that is not text."""
    # The first character that is not white space or a byte of the BOM, found without copying
    # the file (stripping a 130 MB upload copied it twice, a quarter of a second).
    first = _FIRST_CONTENT.search(content)
    if first is None:
        raise ValidationFailed("the file is empty", [RowProblem(1, "", "empty file")])
    if content.startswith(BINARY_MAGIC) or b"\x00" in content[:65536]:
        raise UnsupportedMediaType("the file is not CSV or JSON text (it looks like a binary file)")
    if first.group() in (b"{", b"["):
        return "json"
    return "csv"


def parse_upload(content: bytes, filename: str | None, content_type: str | None) -> ParsedFile:
    """Read an uploaded file into text columns, or raise a problem report."""
    file_format = sniff_format(content, filename, content_type)
    if b"\x00" in content:
        raise UnsupportedMediaType("the file contains NUL bytes: not a CSV or JSON text file")
    data = as_utf8(content)
    if file_format == "json":
        return _parse_json(data.decode("utf-8-sig"))
    return _parse_csv(data)


def _map_headers(raw: list[str]) -> tuple[list[str | None], list[RowProblem], list[RowProblem]]:
    """Canonical name per column (None: ignored), problems, warnings."""
    problems: list[RowProblem] = []
    warnings: list[RowProblem] = []
    if len(raw) > MAX_COLUMNS:
        raise ValidationFailed(
            f"the file has {len(raw)} columns; at most {MAX_COLUMNS} are read",
            [RowProblem(1, "", "too many columns")],
        )
    mapped: list[str | None] = []
    seen: set[str] = set()
    for position, name in enumerate(raw, start=1):
        canonical = FIELD_BY_SQUASHED.get(squash(name))
        label = _safe_label(name, position)
        if canonical is None:
            if name.strip():
                warnings.append(RowProblem(1, label, "unknown column, ignored"))
            mapped.append(None)
        elif canonical in seen:
            problems.append(RowProblem(1, canonical, "column appears twice"))
            mapped.append(None)
        else:
            seen.add(canonical)
            mapped.append(canonical)
    for required in REQUIRED_FIELDS:
        if required not in seen:
            problems.append(RowProblem(1, required, "required column is missing"))
    return mapped, problems, warnings


def _safe_label(name: str, position: int) -> str:
    """A header name fit to echo back: short and printable, else its position."""
    cleaned = name.strip()
    if cleaned and len(cleaned) <= 40 and cleaned.isprintable():
        return cleaned
    return f"column {position}"


def _detect_separator(header_line: str) -> str:
    counts = {sep: header_line.count(sep) for sep in _SEPARATOR_CANDIDATES}
    best = max(_SEPARATOR_CANDIDATES, key=lambda sep: counts[sep])
    return best if counts[best] > 0 else ";"


def _parse_csv(data: bytes) -> ParsedFile:
    # Old Mac and some Excel exports end lines with a bare CR (rare: only then is a copy made).
    # One search for a CR not followed by LF (counting both took twice as long).
    if _BARE_CR.search(data):
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    first_line_end = data.find(b"\n")
    header_bytes = data if first_line_end < 0 else data[:first_line_end]
    if len(header_bytes) > 64 * 1024:
        raise ValidationFailed(
            "the header line is longer than 64 KiB", [RowProblem(1, "", "header line too long")]
        )
    header_line = header_bytes.decode("utf-8").removeprefix("\ufeff").removesuffix("\r")
    separator = _detect_separator(header_line)
    header = next(csv.reader([header_line], delimiter=separator))
    mapped, problems, warnings = _map_headers(header)
    if problems:
        raise ValidationFailed("the header row is not usable", problems)
    names = [name if name else f"_ignored_{i}" for i, name in enumerate(mapped)]
    body = memoryview(data)[first_line_end + 1 :] if first_line_end >= 0 else memoryview(b"")
    if _blank(body):
        raise ValidationFailed("the file has a header but no rows", [RowProblem(2, "", "no rows")])
    # The reader skips the header line itself: no copy of the body is made for it.
    rows = pl.scan_csv(
        io.BytesIO(data),
        skip_lines=1,
        has_header=False,
        new_columns=names,
        schema={name: pl.String for name in names},
        separator=separator,
        quote_char='"',
        extra_columns="raise",
        missing_columns="raise",
        row_index_name="row",
        row_index_offset=2,
    )
    rows = rows.select("row", *[n for n in names if not n.startswith("_ignored_")])
    rows = _with_all_fields(_blank_rows_dropped(rows))

    def locate() -> list[RowProblem]:
        text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8", newline="")
        return _locate_csv_problems(text, separator, len(names))

    # One pass over the bytes (55 ms for a million rows) spares the validation a pattern per
    # column per row (1.1 s of CPU for a million rows) when, as nearly always, there is none.
    control_free = not data.translate(None, _NOT_CONTROL)
    return ParsedFile(rows, "csv", warnings, on_error=locate, control_free=control_free)


def _blank(view: memoryview) -> bool:
    """Whether the bytes are only whitespace (usually decided by the first few)."""
    return all(
        not bytes(view[offset : offset + 65536]).strip() for offset in range(0, len(view), 65536)
    )


def _blank_rows_dropped(frame: FrameT) -> FrameT:
    """Exports often end with empty lines or rows of separators only: they are not rows."""
    fields = [c for c in frame.collect_schema().names() if c != "row"]
    if not fields:
        return frame
    blank = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in fields]
    )
    return frame.filter(~blank)


def _locate_csv_problems(body: Iterable[str], separator: str, width: int) -> list[RowProblem]:
    """Row-level reasons why the CSV reader gave up (only run when it did)."""
    problems: list[RowProblem] = []
    reader = csv.reader(body, delimiter=separator, strict=True)
    try:
        for index, record in enumerate(reader, start=2):
            if record and len(record) != width and any(cell.strip() for cell in record):
                problems.append(
                    RowProblem(index, "", f"{len(record)} fields where the header has {width}")
                )
    except csv.Error:
        problems.append(RowProblem(reader.line_num + 1, "", "unbalanced quotes"))
    return problems or [RowProblem(2, "", "the file could not be read as CSV")]


def _with_all_fields(frame: FrameT) -> FrameT:
    present = frame.collect_schema().names()
    missing = [pl.lit(None, dtype=pl.String).alias(f) for f in ALL_FIELDS if f not in present]
    return (
        frame.with_columns(missing)
        .select("row", *ALL_FIELDS)
        .with_columns(pl.col("row").cast(pl.Int64))
    )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey
    return dict(pairs)


class _DuplicateKey(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _parse_json(text: str) -> ParsedFile:
    try:
        data = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except _DuplicateKey as exc:
        raise ValidationFailed(
            "the JSON has an object with the same key twice", [RowProblem(1, "", "duplicate key")]
        ) from exc
    except RecursionError as exc:
        raise ValidationFailed(
            "the JSON is nested too deeply", [RowProblem(1, "", "nesting too deep")]
        ) from exc
    except ValueError as exc:
        raise ValidationFailed(
            "the file is not valid JSON", [RowProblem(1, "", "not valid JSON")]
        ) from exc
    if isinstance(data, dict):
        if set(data) != {"signalen"} or not isinstance(data["signalen"], list):
            raise ValidationFailed(
                'a JSON object must be {"signalen": [...]}',
                [RowProblem(1, "signalen", 'expected one key "signalen" holding a list')],
            )
        data = data["signalen"]
    if not isinstance(data, list):
        raise ValidationFailed("expected a list of signals", [RowProblem(1, "", "not a list")])
    if not data:
        raise ValidationFailed("the file holds no signals", [RowProblem(1, "", "no rows")])
    return _json_rows_to_frame(data)


def _json_scalar(value: Any) -> tuple[str | None, str | None]:
    """(text, problem) for a JSON value in a field."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, "number out of range"
        return repr(value), None
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return None, "not valid text (a lone surrogate escape)"
        return value, None
    return None, "must be text, a number or true/false"


def _json_rows_to_frame(rows: Iterable[Any]) -> ParsedFile:
    columns: dict[str, list[str | None]] = {name: [] for name in ALL_FIELDS}
    problems: list[RowProblem] = []
    warnings: list[RowProblem] = []
    unknown_seen: set[str] = set()
    count = 0
    for position, item in enumerate(rows, start=1):
        count = position
        if not isinstance(item, dict):
            problems.append(RowProblem(position, "", "each signal must be an object"))
            for values in columns.values():
                values.append(None)
            continue
        record: dict[str, str | None] = {}
        for key, value in item.items():
            canonical = FIELD_BY_SQUASHED.get(squash(key))
            if canonical is None:
                label = _safe_label(key, 0)
                if label not in unknown_seen and len(unknown_seen) < 50:
                    unknown_seen.add(label)
                    warnings.append(RowProblem(position, label, "unknown field, ignored"))
                continue
            if canonical in record:
                problems.append(RowProblem(position, canonical, "field appears twice"))
                continue
            text, problem = _json_scalar(value)
            if problem:
                problems.append(RowProblem(position, canonical, problem))
            record[canonical] = text
        for name, values in columns.items():
            values.append(record.get(name))
    if problems:
        raise ValidationFailed(f"{len(problems)} problem(s) in the file", problems)
    frame = pl.DataFrame(columns, schema={name: pl.String for name in ALL_FIELDS})
    frame = frame.with_columns(pl.int_range(1, count + 1, dtype=pl.Int64).alias("row"))
    return ParsedFile(frame.select("row", *ALL_FIELDS), "json", warnings)
