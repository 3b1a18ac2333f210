"""Reading uploaded files (CSV/JSON, encodings, separators, headers) and validating their rows."""

from __future__ import annotations

import csv
import io
import json
import string
from datetime import date
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.ingest.parsing import ALL_FIELDS, REQUIRED_FIELDS, ParsedFile, parse_upload
from services.ingest.validation import ValidationResult, ValidationRules, Validator, validate
from shared.errors import RowProblem, UnsupportedMediaType, ValidationFailed
from shared.person import person_key

TODAY = date(2026, 10, 1)
RULES = ValidationRules(today=TODAY)
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NO_CRASH = settings(PROPERTY, max_examples=200)

ROWS: list[dict[str, str]] = [
    {
        "referentie": "R1",
        "achternaam": "Jansen",
        "voorletters": "J.",
        "geboortedatum": "01-05-1980",
        "huisnummer": "12A",
        "postcode": "2011 ab",
        "woonplaats": "Haarlem",
        "telefoon": "0612345678",
        "bedrag": "1.234,56",
        "achterstand_sinds": "15-09-2026",
        "crisis": "nee",
    },
    {
        "referentie": "R2",
        "achternaam": "Özdemir",
        "voorletters": "A.",
        "geboortedatum": "1975-12-31",
        "huisnummer": "3",
        "postcode": "1234AB",
        "woonplaats": "Zaandam",
        "telefoon": "",
        "bedrag": "99,5",
        "achterstand_sinds": "2026-08-01",
        "crisis": "ja",
    },
    {
        "referentie": "R3",
        "achternaam": "Hélène de Vries",
        "voorletters": "",
        "geboortedatum": "",
        "huisnummer": "7-2",
        "postcode": "9999zz",
        "woonplaats": "Groningen",
        "telefoon": "020-1234567",
        "bedrag": "€ 10,00",
        "achterstand_sinds": "1/7/2026",
        "crisis": "",
    },
]
COLUMNS = list(ROWS[0])


def csv_bytes(
    rows: list[dict[str, str]],
    *,
    separator: str = ";",
    encoding: str = "utf-8",
    header: list[str] | None = None,
    line_end: str = "\n",
) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, lineterminator=line_end)
    columns = list(rows[0])
    writer.writerow(header or columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return out.getvalue().encode(encoding)


def json_bytes(rows: list[dict[str, Any]], *, wrapped: bool = True) -> bytes:
    return json.dumps({"signalen": rows} if wrapped else rows).encode()


def parse(content: bytes, filename: str = "signalen.csv") -> ParsedFile:
    return parse_upload(content, filename, None)


def parse_and_validate(content: bytes) -> ValidationResult:
    return validate(parse(content).frame, RULES)


def values(parsed: ParsedFile) -> list[dict[str, Any]]:
    """The rows without row numbers, blanks as null (CSV has no difference between them)."""
    frame = parsed.frame.drop("row").with_columns(
        pl.when(pl.col(c).str.len_chars() > 0).then(pl.col(c)).alias(c) for c in ALL_FIELDS
    )
    return frame.to_dicts()


def failure(content: bytes) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        parse_and_validate(content)
    return info.value


# --- separators, encodings, headers ----------------------------------------------------------


def test_reference_file_parses_and_validates() -> None:
    parsed = parse(csv_bytes(ROWS))
    assert parsed.file_format == "csv"
    assert parsed.frame.columns == ["row", *ALL_FIELDS]
    assert parsed.frame["row"].to_list() == [2, 3, 4]
    result = validate(parsed.frame, RULES)
    assert result.errors == []
    assert result.rows["postcode"].to_list() == ["2011AB", "1234AB", "9999ZZ"]
    assert result.rows["bedrag_cent"].to_list() == [123456, 9950, 1000]
    assert result.rows["achterstand_sinds"].to_list() == [
        date(2026, 9, 15),
        date(2026, 8, 1),
        date(2026, 7, 1),
    ]
    assert result.rows["address_key"].to_list() == ["2011AB|12|A", "1234AB|3|", "9999ZZ|7|2"]
    assert result.rows["crisis"].to_list() == [False, True, False]


@pytest.mark.parametrize("separator", [";", ",", "\t"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_separators_and_encodings_give_the_same_rows(
    separator: str, encoding: str, line_end: str
) -> None:
    reference = values(parse(csv_bytes(ROWS)))
    content = csv_bytes(ROWS, separator=separator, encoding=encoding, line_end=line_end)
    parsed = parse(content)
    assert values(parsed) == reference
    assert parsed.frame["achternaam"].to_list() == ["Jansen", "Özdemir", "Hélène de Vries"]
    assert validate(parsed.frame, RULES).errors == []


def test_cp1252_really_is_not_utf8() -> None:
    content = csv_bytes(ROWS, encoding="cp1252")
    with pytest.raises(UnicodeDecodeError):
        content.decode("utf-8")
    assert "Özdemir" in parse(content).frame["achternaam"].to_list()


def test_old_mac_line_endings_are_read_or_refused_cleanly() -> None:
    """Excel's "CSV (Macintosh)" ends lines with a bare CR: a clean answer, never a crash."""
    content = csv_bytes(ROWS, line_end="\r")
    try:
        parsed = parse(content)
    except ValidationFailed:
        return
    assert values(parsed) == values(parse(csv_bytes(ROWS)))


@pytest.mark.parametrize(
    "name",
    [
        "achterstand_sinds",
        "Achterstand sinds",
        "ACHTERSTAND-SINDS",
        "achterstand sinds",
        " Achterstand_Sinds ",
        "achterstand - sinds",
        "AchterstandSinds",
    ],
)
def test_header_spellings(name: str) -> None:
    header = [name if c == "achterstand_sinds" else c.upper() for c in COLUMNS]
    parsed = parse(csv_bytes(ROWS, header=header))
    assert values(parsed) == values(parse(csv_bytes(ROWS)))


def test_unknown_columns_are_ignored_with_a_warning() -> None:
    rows = [{**row, "Opmerking": "geheim"} for row in ROWS]
    parsed = parse(csv_bytes(rows))
    assert values(parsed) == values(parse(csv_bytes(ROWS)))
    assert parsed.warnings == [RowProblem(1, "Opmerking", "unknown column, ignored")]


def test_quoted_fields_with_separators_and_newlines() -> None:
    rows = [dict(row, straat="") for row in ROWS]
    rows[0].update(achternaam='Jansen; "de oude"', straat="Kerk\nstraat")
    parsed = parse(csv_bytes(rows))
    assert parsed.frame["achternaam"].to_list()[0] == 'Jansen; "de oude"'
    assert parsed.frame["straat"].to_list()[0] == "Kerk\nstraat"
    assert parsed.frame["row"].to_list() == [2, 3, 4]


# --- JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [True, False])
def test_json_gives_the_same_rows_as_csv(wrapped: bool) -> None:
    parsed = parse(json_bytes(ROWS, wrapped=wrapped), "signalen.json")
    assert parsed.file_format == "json"
    assert parsed.frame["row"].to_list() == [1, 2, 3]
    assert values(parsed) == values(parse(csv_bytes(ROWS)))


def test_json_numbers_and_booleans_become_text() -> None:
    row = dict(ROWS[0], huisnummer=12, bedrag=1234.5, crisis=True, telefoon=None)
    parsed = parse(json_bytes([row]))
    first = parsed.frame.row(0, named=True)
    assert (first["huisnummer"], first["bedrag"], first["crisis"]) == ("12", "1234.5", "true")
    assert first["telefoon"] is None
    result = validate(parsed.frame, RULES)
    assert result.errors == []
    assert result.rows["bedrag_cent"].to_list() == [123450]
    assert result.rows["crisis"].to_list() == [True]


def test_json_with_bom_and_header_spellings() -> None:
    rows = [
        {("Achterstand sinds" if k == "achterstand_sinds" else k): v for k, v in r.items()}
        for r in ROWS
    ]
    parsed = parse(b"\xef\xbb\xbf" + json_bytes(rows))
    assert values(parsed) == values(parse(csv_bytes(ROWS)))


# --- file-level errors -----------------------------------------------------------------------


@pytest.mark.parametrize("missing", REQUIRED_FIELDS)
def test_missing_required_column(missing: str) -> None:
    rows = [{k: v for k, v in row.items() if k != missing} for row in ROWS]
    error = failure(csv_bytes(rows))
    assert RowProblem(1, missing, "required column is missing") in error.problems
    assert all(p.row == 1 for p in error.problems)


def test_column_twice() -> None:
    header = [*COLUMNS[:-1], "bedrag"]
    error = failure(csv_bytes(ROWS, header=header))
    assert RowProblem(1, "bedrag", "column appears twice") in error.problems


def test_ragged_rows_are_row_level_errors() -> None:
    content = csv_bytes(ROWS).decode()
    lines = content.splitlines()
    lines[1] += ";extra"
    lines[3] = lines[3].rsplit(";", 2)[0]
    error = failure(("\n".join(lines) + "\n").encode())
    rows = sorted(p.row for p in error.problems)
    assert rows == [2, 4]
    assert all(p.message.endswith(f"where the header has {len(COLUMNS)}") for p in error.problems)


def test_unbalanced_quote() -> None:
    content = csv_bytes(ROWS).decode().replace("Haarlem", '"Haarlem')
    error = failure(content.encode())
    assert error.problems
    assert all(p.row >= 2 for p in error.problems)


@pytest.mark.parametrize(
    "content",
    [
        b'{"signalen": [{"referentie": "R1", "referentie": "R2"}]}',
        b'[{"bedrag": NaN}]',
        b'[{"bedrag": Infinity}]',
        b'[{"bedrag": -Infinity}]',
        b"[" * 100_000,
        b'{"signalen": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[1" + b"0" * 5000 + b"]",
        b'[{"referentie": "R1"',
        b"[]",
        b'{"signalen": []}',
        b'{"rows": []}',
        b'{"signalen": [], "extra": 1}',
        b'{"signalen": {"referentie": "R1"}}',
        b"[1, 2, 3]",
        b'["R1"]',
    ],
)
def test_bad_json_is_refused(content: bytes) -> None:
    error = failure(content)
    assert error.problems
    assert error.status == 422


def test_json_number_out_of_range() -> None:
    row = json.dumps(dict(ROWS[0])).replace('"1.234,56"', "1e309")
    error = failure(f"[{row}]".encode())
    assert error.problems == [RowProblem(1, "bedrag", "number out of range")]


def test_json_nested_value_in_a_field() -> None:
    row = dict(ROWS[0], bedrag={"waarde": 12})
    error = failure(json_bytes([ROWS[1], row]))
    assert error.problems == [RowProblem(2, "bedrag", "must be text, a number or true/false")]


def test_json_field_twice_in_different_spellings() -> None:
    row = dict(ROWS[0], **{"Achterstand sinds": "01-09-2026"})
    error = failure(json_bytes([row]))
    assert error.problems == [RowProblem(1, "achterstand_sinds", "field appears twice")]


@pytest.mark.parametrize("field", ["referentie", "achternaam", "Opmerking"])
def test_json_lone_surrogate_is_refused(field: str) -> None:
    """``"\\ud800"`` is valid JSON but not text: a 422, not a crash while building the frame."""
    row = json.dumps(dict(ROWS[0], **{field: "X"})).replace('"X"', '"\\ud800"')
    content = f"[{row}]".encode()
    assert b"\\ud800" in content
    outcome = attempt(content)
    assert not isinstance(outcome, UnsupportedMediaType)
    if isinstance(outcome, ValidationFailed):
        assert outcome.problems


@pytest.mark.parametrize(
    "content",
    [
        b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40,
        b"%PDF-1.7\n",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        b"\x1f\x8b\x08\x00",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0",
        b"referentie;achternaam\nR1\x00;x\n",
        csv_bytes(ROWS) + b"\x00",
    ],
)
def test_binary_files_are_unsupported(content: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        parse(content)
    assert info.value.status == 415


@pytest.mark.parametrize("content", [b"", b" ", b"\n\r\n\t", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n"])
def test_empty_file(content: bytes) -> None:
    error = failure(content)
    assert error.problems == [RowProblem(1, "", "empty file")]


def test_header_only() -> None:
    header_only = csv_bytes(ROWS).decode().splitlines()[0] + "\n;;;\n\n"
    error = failure(header_only.encode())
    assert [p.row for p in error.problems] == [2]


def test_undecodable_bytes() -> None:
    # 0x81 is undefined in Windows-1252 and invalid UTF-8.
    error = failure(csv_bytes(ROWS).replace(b"Jansen", b"Jan\x81sen"))
    assert error.problems == [RowProblem(1, "", "unreadable text encoding")]


# --- row numbering ---------------------------------------------------------------------------


def test_csv_error_on_third_data_row_is_row_4() -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["postcode"] = "0123AB"
    result = parse_and_validate(csv_bytes(rows))
    assert result.errors == [RowProblem(4, "postcode", "not a Dutch postcode")]


def test_json_error_on_third_object_is_row_3() -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["postcode"] = "0123AB"
    result = parse_and_validate(json_bytes(rows))
    assert result.errors == [RowProblem(3, "postcode", "not a Dutch postcode")]


def test_blank_lines_keep_spreadsheet_numbering() -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["bedrag"] = "1.234"
    lines = csv_bytes(rows).decode().splitlines()
    content = "\n".join([lines[0], lines[1], "", lines[2], ";;;", lines[3], "", ""])
    result = parse_and_validate(content.encode())
    # Spreadsheet rows: header 1, R1 2, blank 3, R2 4, separators 5, R3 6.
    assert result.rows["row"].to_list() == [2, 4, 6]
    assert result.errors == [
        RowProblem(6, "bedrag", "ambiguous amount: more than two digits after the last separator")
    ]


def test_multiline_quoted_field_counts_as_one_spreadsheet_row() -> None:
    rows = [dict(r) for r in ROWS]
    rows[0]["woonplaats"] = "Haar\nlem"
    rows[2]["postcode"] = "x"
    result = parse_and_validate(csv_bytes(rows))
    assert result.errors == [RowProblem(4, "postcode", "not a Dutch postcode")]


def test_duplicate_reference_names_the_first_row() -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["referentie"] = "R1"
    result = parse_and_validate(csv_bytes(rows))
    assert result.errors == [RowProblem(4, "referentie", "duplicate reference: also on row 2")]


def test_huge_amount_in_a_file_is_rejected() -> None:
    """2e17 euro does not fit in Int64 cents; the row must be refused, not stored as another sum."""
    rows = [dict(ROWS[0], bedrag="200000000000000000")]
    result = parse_and_validate(csv_bytes(rows))
    assert [(e.row, e.column) for e in result.errors] == [(2, "bedrag")]


# --- property: no input crashes the parser ---------------------------------------------------


def attempt(content: bytes) -> ValidationResult | ValidationFailed | UnsupportedMediaType:
    """parse + validate; a refusal is returned, any other exception is a test failure."""
    try:
        return validate(parse_upload(content, "upload", None).frame, RULES)
    except (ValidationFailed, UnsupportedMediaType) as exc:
        return exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # PanicException from Polars is a BaseException
        raise AssertionError(f"parse_upload crashed: {type(exc).__module__}.{exc!r}") from exc


def no_crash(content: bytes) -> None:
    """parse + validate return, or raise ValidationFailed / UnsupportedMediaType; nothing else."""
    outcome = attempt(content)
    if isinstance(outcome, ValidationResult):
        assert all(p.row >= 1 for p in outcome.errors)
        return
    assert outcome.status in (415, 422)
    if isinstance(outcome, ValidationFailed):
        assert outcome.problems
        assert all(isinstance(p.row, int) and p.row >= 1 for p in outcome.problems)


HEADER_LINE = ";".join(REQUIRED_FIELDS)
CSV_ALPHABET = st.sampled_from(list(';,\t"\r\n -/.€éÖ0123456789abAB')) | st.characters(
    codec="utf-8"
)


@NO_CRASH
@given(st.binary(max_size=400))
@example(b"\r0")  # a bare CR in the header line (see test_old_mac_line_endings_...)
def test_no_crash_on_arbitrary_bytes(content: bytes) -> None:
    no_crash(content)


@NO_CRASH
@given(st.text(max_size=300))
@example("\r0")
def test_no_crash_on_arbitrary_text(text: str) -> None:
    no_crash(text.encode("utf-8"))


@NO_CRASH
@given(st.text(CSV_ALPHABET, max_size=300), st.sampled_from(["", HEADER_LINE + "\n"]))
@example("\r0", "")
def test_no_crash_on_csv_like_text(text: str, header: str) -> None:
    no_crash((header + text).encode("utf-8"))


# JSON text may carry any code point as a \\u escape, lone surrogates included.
json_text = st.text(st.characters(), max_size=20)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | json_text
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
field_names = st.sampled_from([*ALL_FIELDS, "Achterstand sinds", "BEDRAG", "x"]) | st.text(
    max_size=10
)


@NO_CRASH
@given(
    st.lists(
        st.dictionaries(field_names, json_values | st.text(CSV_ALPHABET, max_size=20)), max_size=5
    ),
    st.booleans(),
)
@example([{"referentie": "\ud800"}], False)  # a lone surrogate, written as a \u escape
def test_no_crash_on_json_lists_of_objects(rows: list[dict[str, Any]], wrapped: bool) -> None:
    no_crash(json.dumps({"signalen": rows} if wrapped else rows).encode())


# --- property: valid rows round-trip ---------------------------------------------------------

NAME_CHARS = string.ascii_letters + "éëïöüÖÉç '-"
LETTERS = string.ascii_uppercase


@st.composite
def valid_rows(draw: st.DrawFn, index: int) -> tuple[dict[str, str], dict[str, Any]]:
    """(the row as a partner writes it, the values validation must produce)."""
    digits = draw(st.integers(1000, 9999))
    pair = draw(
        st.text(LETTERS, min_size=2, max_size=2).filter(lambda s: s not in {"SA", "SD", "SS"})
    )
    postcode = f"{digits}{pair}"
    postcode_text = draw(
        st.sampled_from(
            [postcode, f"{digits} {pair}", f"{digits}{pair.lower()}", f"{digits} {pair.lower()}"]
        )
    )
    number = draw(st.integers(1, 99999))
    letter = draw(st.none() | st.sampled_from(LETTERS))
    number_text = str(number) + (
        draw(st.sampled_from(["", "-", " "])) + letter.lower() if letter else ""
    )
    cents = draw(st.integers(1, 10**9))
    euros, rest = divmod(cents, 100)
    amount = draw(
        st.sampled_from(
            [
                f"{euros},{rest:02d}",
                f"{euros}.{rest:02d}",
                "€ " + f"{euros:,}".replace(",", ".") + f",{rest:02d}",
                f"{euros:,}.{rest:02d}",
            ]
        )
    )
    since = draw(st.dates(min_value=date(2020, 1, 1), max_value=TODAY))
    since_text = draw(
        st.sampled_from(
            [
                since.isoformat(),
                f"{since:%d-%m-%Y}",
                f"{since:%d/%m/%Y}",
                f"{since.day}-{since.month}-{since.year}",
            ]
        )
    )
    signal = draw(st.none() | st.dates(min_value=since, max_value=TODAY))
    born = draw(st.none() | st.dates(min_value=date(1930, 1, 1), max_value=TODAY))
    bsn = draw(st.none() | st.sampled_from(["111222333", "123456782", "999999990"]))
    crisis = draw(
        st.sampled_from(
            [
                ("ja", True),
                ("nee", False),
                ("1", True),
                ("0", False),
                ("true", True),
                ("FALSE", False),
                ("", False),
            ]
        )
    )
    surname = draw(st.text(NAME_CHARS, min_size=1, max_size=30).map(str.strip).filter(bool))
    written = {
        "referentie": f"REF-{index}",
        "achternaam": surname,
        "huisnummer": number_text,
        "postcode": postcode_text,
        "bedrag": amount,
        "achterstand_sinds": since_text,
        "signaaldatum": f"{signal:%d-%m-%Y}" if signal else "",
        "geboortedatum": born.isoformat() if born else "",
        "bsn": bsn or "",
        "crisis": crisis[0],
        "email": "info@example.nl",
    }
    expected = {
        "referentie": f"REF-{index}",
        "achternaam": surname,
        "huisnummer": number,
        "huisnummer_suffix": letter or "",
        "postcode": postcode,
        "bedrag_cent": cents,
        "achterstand_sinds": since,
        "signaaldatum": signal or TODAY,
        "geboortedatum": born,
        "bsn": bsn,
        "crisis": crisis[1],
        "address_key": f"{postcode}|{number}|{letter or ''}",
        "person_key": person_key(surname, born),
    }
    return written, expected


@st.composite
def valid_files(draw: st.DrawFn) -> list[tuple[dict[str, str], dict[str, Any]]]:
    count = draw(st.integers(1, 6))
    return [draw(valid_rows(i)) for i in range(count)]


@PROPERTY
@given(
    valid_files(),
    st.sampled_from([";", ",", "\t"]),
    st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]),
)
def test_valid_rows_round_trip(
    rows: list[tuple[dict[str, str], dict[str, Any]]], separator: str, encoding: str
) -> None:
    content = csv_bytes([w for w, _ in rows], separator=separator, encoding=encoding)
    result = parse_and_validate(content)
    assert result.errors == []
    got = result.rows.to_dicts()
    assert [g["row"] for g in got] == list(range(2, len(rows) + 2))
    for produced, (_, expected) in zip(got, rows, strict=True):
        assert {k: produced[k] for k in expected} == expected


@PROPERTY
@given(valid_files())
def test_valid_rows_round_trip_as_json(rows: list[tuple[dict[str, str], dict[str, Any]]]) -> None:
    result = parse_and_validate(json_bytes([w for w, _ in rows]))
    assert result.errors == []
    for produced, (_, expected) in zip(result.rows.to_dicts(), rows, strict=True):
        assert {k: produced[k] for k in expected} == expected


# --- property: error messages never carry the offending value --------------------------------

tokens = st.one_of(
    st.from_regex(r"[A-Za-z0-9]{10,16}", fullmatch=True),
    st.from_regex(r"[0-9]{9,12}", fullmatch=True),
    st.from_regex(r"[1-9][0-9]{3} ?(SA|SD|SS|sa)", fullmatch=True),
    st.from_regex(r"(3[2-9]|[4-9][0-9])-(1[3-9]|[2-9][0-9])-[0-9]{4}", fullmatch=True),
    st.from_regex(r"[0-9]{1,6}[.,][0-9]{3,5}", fullmatch=True),
    st.from_regex(r"-[0-9]{6,9}", fullmatch=True),
)
SENSITIVE = ("postcode", "bsn", "geboortedatum", "bedrag", "achterstand_sinds", "huisnummer")


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(SENSITIVE), tokens, min_size=1),
    st.sampled_from(["csv", "json", "json_numbers"]),
)
def test_error_messages_never_contain_the_value(bad: dict[str, str], file_format: str) -> None:
    rows = [dict(row, bsn="111222333") for row in ROWS]
    rows[1].update(bad)
    rows[2].update(bad)
    if file_format == "csv":
        content = csv_bytes(rows)
    elif file_format == "json":
        content = json_bytes(rows)
    else:
        numeric = {k: int(v) for k, v in bad.items() if v.isdigit()}
        content = json_bytes([dict(rows[0]), dict(rows[1], **numeric), dict(rows[2], **numeric)])
    outcome = attempt(content)
    if isinstance(outcome, ValidationResult):
        problems = outcome.errors + outcome.warnings
    else:
        problems = getattr(outcome, "problems", [])
        assert all(v.strip() not in outcome.detail for v in bad.values())
    for problem in problems:
        for value in bad.values():
            assert value.strip() not in problem.message, (problem, value)
            assert value.strip() not in problem.column, (problem, value)


# --- a file in batches: the same problems as in one piece -----------------------------------


@PROPERTY
@given(
    references=st.lists(
        st.sampled_from(["R1", "R2", "R3", "R4", " R2 ", "", "R\x01"]), min_size=1, max_size=25
    ),
    bad_postcodes=st.sets(st.integers(min_value=0, max_value=24), max_size=4),
    batch_rows=st.integers(min_value=1, max_value=9),
    limit=st.integers(min_value=1, max_value=6),
)
def test_batches_find_the_problems_of_the_whole_file(
    references: list[str], bad_postcodes: set[int], batch_rows: int, limit: int
) -> None:
    """Duplicates across batches are found at the end: the same (row, column) problems and the
    same count as the file checked in one piece, the first ``limit`` of them in row order, and
    every duplicate names an earlier row with the same reference."""
    rows = [
        dict(ROWS[0], referentie=ref, postcode="x" if i in bad_postcodes else "2011AB")
        for i, ref in enumerate(references)
    ]
    frame = parse(csv_bytes(rows)).frame
    whole = validate(frame, RULES, max_problems=10_000)
    validator = Validator(RULES, max_problems=limit)
    for start in range(0, frame.height, batch_rows):
        validator.check(frame.slice(start, batch_rows))
    validator.finish()

    everything = [(p.row, p.column) for p in whole.errors]
    assert validator.error_count == len(everything)
    assert [(p.row, p.column) for p in validator.errors] == everything[:limit]
    for problem in validator.errors:
        if problem.message.startswith("duplicate reference"):
            earlier = int(problem.message.rsplit(" ", 1)[1])
            assert earlier < problem.row
            assert references[earlier - 2].strip() == references[problem.row - 2].strip()


# --- control characters: searched for only where the file may hold them ----------------------


def test_a_csv_file_is_known_to_be_free_of_control_characters_only_when_it_is() -> None:
    clean = csv_bytes(ROWS)
    assert parse(clean).control_free
    assert parse(csv_bytes(ROWS, separator="\t", line_end="\r\n")).control_free
    # (A NUL makes the file binary, refused before it is read.)
    for character in ("\x01", "\x0b", "\x1f", "\x7f"):
        dirty = csv_bytes([ROWS[0], dict(ROWS[1], woonplaats=f"Zaan{character}dam")])
        assert not parse(dirty).control_free, repr(character)
    # JSON writes them as escapes (\u0001): a JSON file is always searched.
    assert not parse(json_bytes(ROWS), "signalen.json").control_free


CONTROL_SAMPLES = ["", "\x01", "a\x0bb", "\x1f", "x\x7f", "gewoon", "met\ttab"]


@PROPERTY
@given(
    placed=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=11),
            st.sampled_from(COLUMNS),
            st.sampled_from(CONTROL_SAMPLES),
        ),
        max_size=4,
    ),
    batch_rows=st.integers(min_value=1, max_value=12),
)
def test_leaving_out_the_search_for_control_characters_never_hides_one(
    placed: list[tuple[int, str, str]], batch_rows: int
) -> None:
    """Whatever control characters a CSV file holds, and wherever: validated in batches as the
    upload does (searching only when the file's bytes hold one), it has the same problems as
    with the search in every value."""
    rows = [dict(ROWS[i % 3], referentie=f"R{i}") for i in range(12)]
    for index, column, value in placed:
        rows[index][column] = value
    parsed = parse(csv_bytes(rows))
    frame = parsed.frame
    whole = validate(frame, RULES, max_problems=10_000)
    validator = Validator(RULES, max_problems=10_000, control_free=parsed.control_free)
    for start in range(0, frame.height, batch_rows):
        validator.check(frame.slice(start, batch_rows))
    validator.finish()
    assert sorted((p.row, p.column, p.message) for p in validator.errors) == sorted(
        (p.row, p.column, p.message) for p in whole.errors
    )
