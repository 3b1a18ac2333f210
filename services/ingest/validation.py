"""Validation and normalisation of signal rows, vectorised in Polars.

Three levels, as the national platforms' batch checks have them:

* **error** – the row cannot be used (no valid postcode, amount not above 0, a future date, a BSN
  that fails the elfproef, …). One error anywhere rejects the whole delivery.
* **warning** – valid but doubtful (no phone and no e-mail, a birth date that makes the person older
  than 110, an amount above the configured ceiling): accepted, and reported.

Messages name the row and the column, never the value: error reports must not leak personal data.

Values are read as partners write them:

* dates ``2026-09-15``, ``15-09-2026``, ``15/09/2026``, ``5-9-2026`` (a time part after an ISO date
  is ignored);
* amounts ``1234.56``, ``1234,56``, ``1.234,56``, ``1,234.56``, ``€ 1.234,56``; more than two digits
  after the last separator (``1.234``) is ambiguous and an error; stored in integer cents;
* booleans ``ja/nee``, ``j/n``, ``true/false``, ``1/0``, ``yes/no``; empty means no.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from shared.address import (
    MAX_SUFFIX_LENGTH,
    address_key_expr,
    house_number_groups,
    house_number_parts,
    normalised_postcode,
    valid_postcode,
)
from shared.errors import RowProblem
from shared.person import normalised_surname, person_key_of_surname

TEXT_LIMITS = {
    "referentie": 100,
    "achternaam": 200,
    "tussenvoegsel": 20,
    "voorletters": 30,
    "straat": 200,
    "woonplaats": 100,
    "telefoon": 40,
    "email": 254,
    "huisletter": 4,
    "huisnummertoevoeging": 8,
}
TRUE_WORDS = ["ja", "j", "true", "1", "yes", "y", "waar"]
FALSE_WORDS = ["nee", "n", "false", "0", "no", "onwaar"]
BOOLEAN_FIELDS = ("crisis", "warme_overdracht", "eindelevering")
CONTROL_CHARS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9]{8,15}$"
BSN_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)
# The weighted sums that pass: the multiples of 11 but 0, from the lowest sum (-9) to the highest.
_ELFPROEF_SUMS = list(range(11, 9 * sum(BSN_WEIGHTS[:-1]) + 1, 11))

# Columns of the validated frame, in order.
OUTPUT_COLUMNS = (
    "row",
    "referentie",
    "achternaam",
    "tussenvoegsel",
    "voorletters",
    "geboortedatum",
    "bsn",
    "straat",
    "huisnummer",
    "huisnummer_suffix",
    "postcode",
    "woonplaats",
    "telefoon",
    "email",
    "bedrag_cent",
    "achterstand_sinds",
    "signaaldatum",
    "crisis",
    "warme_overdracht",
    "eindelevering",
    "address_key",
    "person_key",
)


@dataclass(frozen=True)
class ValidationRules:
    """What the checks compare against: today (Europe/Amsterdam) and configured limits."""

    today: date
    amount_warning_ceiling_cents: int = 2_500_000
    max_age_years: int = 110


@dataclass
class ValidationResult:
    rows: pl.DataFrame  # OUTPUT_COLUMNS, only meaningful when ``errors`` is empty
    errors: list[RowProblem]
    warnings: list[RowProblem]
    error_count: int
    warning_count: int = 0


def trimmed(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text column (all but ``row``) without the white space around its values; a value
    of white space only becomes null (an empty field is read as null already).

    Only columns that hold such a value are given their nulls: a value missing is rare, and
    making a text column's nulls copies every value (56 of the 83 ms of CPU that trimming the 20
    columns of a batch of 100,000 rows took, when done for every column)."""
    names = [c for c in frame.columns if c != "row"]
    stripped = frame.select("row", *[pl.col(c).str.strip_chars() for c in names])
    emptied = stripped.select((pl.col(c).str.len_bytes() == 0).any() for c in names).row(0)
    blank = [c for c, empty in zip(names, emptied, strict=True) if empty]
    return stripped.with_columns(
        pl.when(pl.col(c).str.len_bytes() > 0).then(pl.col(c)) for c in blank
    )


def parse_date(col: pl.Expr) -> pl.Expr:
    """A Date from the spellings partners use; null when unreadable or not a real date."""
    iso = col.str.extract_groups(r"^([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[ T].*)?$")
    dmy = col.str.extract_groups(r"^([0-9]{1,2})[-/.]([0-9]{1,2})[-/.]([0-9]{4})$")
    year = pl.coalesce(iso.struct.field("1"), dmy.struct.field("3"))
    month = pl.coalesce(iso.struct.field("2"), dmy.struct.field("2"))
    day = pl.coalesce(iso.struct.field("3"), dmy.struct.field("1"))
    text = pl.concat_str([year, month.str.zfill(2), day.str.zfill(2)], separator="-")
    parsed = text.str.to_date("%Y-%m-%d", strict=False)
    return pl.when(year.cast(pl.Int32, strict=False) >= 1900).then(parsed)


def per_spelling(
    frame: pl.DataFrame, name: str, parse: Callable[[pl.Expr], Sequence[pl.Expr]]
) -> list[pl.Expr]:
    """The expressions of ``parse(pl.col(name))``, computed once per distinct value of column
    ``name`` of ``frame`` (null included), as expressions that map the column to them: the same
    values as parsing every row, for a parser that reads each row's value alone.

    Several columns of a month's file hold few distinct spellings: its arrears began in the
    months before, its signals were made on a few working days, a flag is one of a few words,
    and birth dates repeat too (in a batch of 100,000 rows: 171 arrears dates, 22 signal dates,
    2 spellings of a flag, about 26,000 birth dates). Parsing the spellings costs a hash of each
    row's value and a lookup instead. (Not for amounts: at 36,000 distinct in such a batch, the
    lookups cost more than they saved.)"""
    spellings = frame.select(pl.col(name).unique())
    parsed = spellings.select(e.alias(str(i)) for i, e in enumerate(parse(pl.col(name))))
    old = spellings.to_series()
    return [
        pl.col(name).replace_strict(old, parsed[c], default=None, return_dtype=parsed[c].dtype)
        for c in parsed.columns
    ]


# An amount, in its three spellings: plain digits with one or two decimals after a point or a
# comma; thousands split by points with a decimal comma; thousands split by commas with a decimal
# point. Groups: whole and decimals of each.
_AMOUNT_PARTS = (
    r"^(?:([0-9]+)(?:[.,]([0-9]{1,2}))?"
    r"|([0-9]{1,3}(?:\.[0-9]{3})+),([0-9]{1,2})"
    r"|([0-9]{1,3}(?:,[0-9]{3})+)\.([0-9]{1,2}))$"
)
AMBIGUOUS_AMOUNT = "ambiguous amount: more than two digits after the last separator"


def with_amounts(frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
    """``frame`` with ``{name}_cent`` (the amount in column ``name`` in cents, Int64, or null)
    and ``{name}_error`` (the reason it is refused, or null), for amounts as partners write them.

    One pattern reads the whole euros and the decimals of every spelling at once; only a refusal
    is explained by other passes (a minus sign, three decimals). Built in steps, each a column of
    its own: as one expression, Polars computed the shared parts once per use (271 ms of CPU per
    100,000 rows, against 32 ms in steps and 108 ms for the earlier pattern per part)."""
    steps = {step: f"__amount_{step}" for step in ("text", "parts", "whole", "decimals", "cents")}
    text, parts, whole, decimals, cents = (pl.col(column) for column in steps.values())
    fields = parts.struct
    staged = (
        frame.with_columns(
            pl.col(name).str.replace_all(r"(?i)\s|^(?:€|eur)|(?:€|eur)$", "").alias(steps["text"])
        )
        .with_columns(text.str.extract_groups(_AMOUNT_PARTS).alias(steps["parts"]))
        .with_columns(
            pl.coalesce(
                fields.field("1"),
                fields.field("3").str.replace_all(".", "", literal=True),
                fields.field("5").str.replace_all(",", "", literal=True),
            ).alias(steps["whole"]),
            pl.coalesce(fields.field("2"), fields.field("4"), fields.field("6"))
            .str.pad_end(2, "0")
            .cast(pl.Int64, strict=False)
            .fill_null(0)
            .alias(steps["decimals"]),
        )
        .with_columns((whole.cast(pl.Int64, strict=False) * 100 + decimals).alias(steps["cents"]))
    )
    # At most 13 digits of whole euros: no overflow of the cents, and no absurd sums.
    digits = whole.str.len_bytes()
    error = (
        pl.when(pl.col(name).is_null())
        .then(pl.lit("required"))
        .when(text.str.starts_with("-"))
        .then(pl.lit("must be more than 0"))
        .when(whole.is_null() & text.str.contains(r"[.,][0-9]{3,}$"))
        .then(pl.lit(AMBIGUOUS_AMOUNT))
        .when(digits > 13)
        .then(pl.lit("amount too large"))
        .when(whole.is_null())
        .then(pl.lit("not an amount"))
        .when(cents <= 0)
        .then(pl.lit("must be more than 0"))
    )
    return staged.with_columns(
        pl.when(digits <= 13).then(cents).alias(f"{name}_cent"), error.alias(f"{name}_error")
    ).drop(*steps.values())


BOOLEAN_WORDS = {word: True for word in TRUE_WORDS} | {word: False for word in FALSE_WORDS}


def parse_boolean(col: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(bool with default False, error message or null)."""
    word = col.str.strip_chars().str.to_lowercase()
    value = (
        pl.when(col.is_null() | (word == ""))
        .then(pl.lit(False))
        .otherwise(word.replace_strict(BOOLEAN_WORDS, default=None, return_dtype=pl.Boolean))
    )
    return value, pl.when(value.is_null()).then(pl.lit("expected ja or nee"))


def bsn_valid(bsn: pl.Expr, number: pl.Expr | None = None) -> pl.Expr:
    """The elfproef: nine digits whose weighted sum (9..2, then -1) is a multiple of 11, not 0.

    The digits are taken from the number (``number``: ``bsn`` as an integer, when the caller
    has it as a column of its own) by arithmetic, no string per digit. The sum lies between -9
    and 396, so the test is one lookup among the multiples of 11 in that range: the sum is used
    once (Polars computed it once per use, the number once per digit; 65 against 25 ms of CPU
    per 100,000 rows with both as columns)."""
    if number is None:
        number = bsn.str.to_integer(strict=False)
    total = pl.sum_horizontal(
        [(number // 10 ** (8 - i) % 10) * w for i, w in enumerate(BSN_WEIGHTS)]
    )
    return bsn.str.contains(r"^[0-9]{9}$") & total.is_in(_ELFPROEF_SUMS)


def validate(
    frame: pl.DataFrame, rules: ValidationRules, max_problems: int = 1000
) -> ValidationResult:
    """Normalise every column and list every problem; see the module docstring for the rules."""
    return _validate_batch(frame, rules, max_problems)[0]


class Validator:
    """Validates a file a batch at a time, with what must hold across batches.

    A reference may appear once per file. Within a batch that is checked with the batch; across
    batches at :meth:`finish`, from each batch's first rows per reference (a few dozen bytes a
    row, the only state that grows with the file): one grouping over the file at the end, not a
    join of every batch against all the references before it. A duplicate found at the end still
    rejects the whole file, as the rows are stored only when the file is right. Problems are
    kept up to ``max_problems`` of each level; the counts cover all of them.
    """

    def __init__(
        self, rules: ValidationRules, max_problems: int = 1000, *, control_free: bool = False
    ) -> None:
        self.rules = rules
        self.max_problems = max_problems
        # The file is known to hold no control characters (``ParsedFile.control_free``): the
        # check for them per value is left out.
        self.control_free = control_free
        self.errors: list[RowProblem] = []
        self.warnings: list[RowProblem] = []
        self.error_count = 0
        self.warning_count = 0
        self.rows = 0
        self._firsts: list[pl.DataFrame] = []

    def check(self, frame: pl.DataFrame) -> ValidationResult:
        """One batch: its normalised rows and its problems (also added to the file's)."""
        result, firsts = _validate_batch(
            frame, self.rules, self.max_problems, control=not self.control_free
        )
        self._firsts.append(firsts)
        self.rows += result.rows.height
        self.error_count += result.error_count
        self.warning_count += result.warning_count
        self.errors.extend(result.errors[: self.max_problems - len(self.errors)])
        self.warnings.extend(result.warnings[: self.max_problems - len(self.warnings)])
        return result

    def finish(self) -> None:
        """The checks across batches, once every batch has been checked: a reference that
        appeared in an earlier batch is a duplicate on its later rows (each batch's own
        duplicates were reported with the batch). A row whose reference already has a problem
        (control characters, too long) keeps that one."""
        if len(self._firsts) < 2:
            return
        later = (
            pl.concat(self._firsts)
            .lazy()
            .with_columns(first_row=pl.col("row").min().over("referentie"))
            .filter((pl.col("row") > pl.col("first_row")) & pl.col("clean"))
            .sort("row")
            .collect()
        )
        self._firsts = []
        if later.is_empty():
            return
        self.error_count += later.height
        found = [
            RowProblem(row, "referentie", f"duplicate reference: also on row {first}")
            for row, first in later.select("row", "first_row").head(self.max_problems).iter_rows()
        ]
        # In row order, a row's reference first (as a batch lists it), then cut to the limit:
        # both lists hold their first problems, so the merged head is the file's.
        merged = sorted(
            [(p.row, 0, i, p) for i, p in enumerate(found)]
            + [(p.row, 1, i, p) for i, p in enumerate(self.errors)]
        )
        self.errors = [p for *_, p in merged][: self.max_problems]


def _validate_batch(
    frame: pl.DataFrame, rules: ValidationRules, max_problems: int, *, control: bool = True
) -> tuple[ValidationResult, pl.DataFrame]:
    """The batch's result, and its first row per reference (``referentie``, ``row``, ``clean``:
    no problem with the reference itself) for the checks across batches. Without ``control``
    the values are not searched for control characters (the file is known to hold none)."""
    today = pl.lit(rules.today)
    frame = trimmed(frame)
    # Parts used more than once, as columns of their own (computed once: see with_amounts).
    text = with_amounts(frame.lazy(), "bedrag").with_columns(
        house_number_groups(pl.col("huisnummer")).alias("__house_number"),
        normalised_surname(pl.col("achternaam")).alias("__surname"),
    )
    postcode = normalised_postcode(pl.col("postcode"))
    number, suffix = house_number_parts(
        pl.col("huisnummer"),
        pl.col("huisletter"),
        pl.col("huisnummertoevoeging"),
        groups=pl.col("__house_number"),
    )
    booleans = {name: per_spelling(frame, name, parse_boolean) for name in BOOLEAN_FIELDS}
    dates = {
        name: per_spelling(frame, name, lambda col: [parse_date(col)])[0]
        for name in ("geboortedatum", "achterstand_sinds", "signaaldatum")
    }
    bsn_digits = pl.col("bsn").str.replace_all(r"[\s.\-]", "")
    phone = pl.col("telefoon").str.replace_all(r"[\s\-().]", "")

    # One lazy plan, collected once. Polars does not reliably share a sub-expression that several
    # expressions use (an amount's parts were computed once per use), so what is used more than
    # once is a column of its own: the amount's steps and the groups above, and these values,
    # which the checks and the outputs below read by name.
    values = text.with_columns(
        postcode=postcode,
        huisnummer_n=number,
        huisnummer_suffix=suffix,
        geboortedatum_d=dates["geboortedatum"],
        achterstand_sinds_d=dates["achterstand_sinds"],
        signaaldatum_d=pl.coalesce(dates["signaaldatum"], pl.lit(rules.today)),
        bsn_n=bsn_digits,
        telefoon_n=phone,
        **{f"{name}_b": expr for name, (expr, _) in booleans.items()},
        **{f"{name}_error": err for name, (_, err) in booleans.items()},
        referentie_first=pl.col("row").min().over("referentie"),
    ).with_columns(bsn_i=pl.col("bsn_n").str.to_integer(strict=False))

    def date_error(name: str, required: bool, allow_future: bool = False) -> Any:
        raw, parsed = pl.col(name), pl.col(f"{name}_d")
        expr: Any = pl.when(raw.is_null() & pl.lit(required)).then(pl.lit("required"))
        expr = expr.when(raw.is_not_null() & parsed.is_null()).then(
            pl.lit("not a date from 1900 on (use 2026-09-15 or 15-09-2026)")
        )
        if not allow_future:
            expr = expr.when(parsed > today).then(pl.lit("lies in the future"))
        return expr

    errors: dict[str, Any] = {
        "referentie": pl.when(pl.col("referentie").is_null())
        .then(pl.lit("required"))
        .when(pl.col("row") > pl.col("referentie_first"))
        .then(
            pl.lit("duplicate reference: also on row ") + pl.col("referentie_first").cast(pl.String)
        ),
        "achternaam": pl.when(pl.col("achternaam").is_null()).then(pl.lit("required")),
        "postcode": pl.when(pl.col("postcode").is_null())
        .then(pl.lit("required"))
        .when(~valid_postcode(pl.col("postcode")))
        .then(pl.lit("not a Dutch postcode")),
        "huisnummer": pl.when(pl.col("huisnummer").is_null())
        .then(pl.lit("required"))
        .when(pl.col("huisnummer_n").is_null())
        .then(pl.lit("not a house number"))
        .when(pl.col("huisnummer_suffix").str.len_chars() > MAX_SUFFIX_LENGTH)
        .then(pl.lit(f"house letter and addition longer than {MAX_SUFFIX_LENGTH} characters")),
        "bedrag": pl.col("bedrag_error"),
        "achterstand_sinds": date_error("achterstand_sinds", required=True),
        "signaaldatum": date_error("signaaldatum", required=False)
        .when(
            (pl.col("achterstand_sinds_d") <= today)
            & (pl.col("signaaldatum_d") < pl.col("achterstand_sinds_d"))
        )
        .then(pl.lit("lies before achterstand_sinds")),
        "geboortedatum": date_error("geboortedatum", required=False),
        "bsn": pl.when(
            pl.col("bsn").is_not_null() & ~bsn_valid(pl.col("bsn_n"), pl.col("bsn_i"))
        ).then(pl.lit("not a valid BSN (9 digits passing the elfproef)")),
        **{name: pl.col(f"{name}_error") for name in BOOLEAN_FIELDS},
    }
    for name, limit in TEXT_LIMITS.items():
        too_long = pl.when(pl.col(name).str.len_chars() > limit).then(
            pl.lit(f"longer than {limit} characters")
        )
        errors[name] = pl.coalesce(errors[name], too_long) if name in errors else too_long
    for name in frame.columns if control else ():
        if name == "row":
            continue
        refused = pl.when(pl.col(name).str.contains(CONTROL_CHARS)).then(
            pl.lit("contains control characters")
        )
        errors[name] = pl.coalesce(refused, errors[name]) if name in errors else refused

    age_limit = date(rules.today.year - rules.max_age_years, rules.today.month, 1)
    warnings: dict[str, pl.Expr] = {
        "telefoon": pl.when(pl.col("telefoon").is_null() & pl.col("email").is_null())
        .then(pl.lit("no phone number and no e-mail address"))
        .when(pl.col("telefoon").is_not_null() & ~pl.col("telefoon_n").str.contains(PHONE_PATTERN))
        .then(pl.lit("not a usable phone number")),
        "email": pl.when(
            pl.col("email").is_not_null() & ~pl.col("email").str.contains(EMAIL_PATTERN)
        ).then(pl.lit("not a valid e-mail address")),
        "geboortedatum": pl.when(pl.col("geboortedatum_d") < pl.lit(age_limit)).then(
            pl.lit(f"makes the person older than {rules.max_age_years}")
        ),
        "bedrag": pl.when(pl.col("bedrag_cent") > rules.amount_warning_ceiling_cents).then(
            pl.lit(f"above the ceiling of € {rules.amount_warning_ceiling_cents // 100}")
        ),
    }

    outputs = {
        "geboortedatum": pl.col("geboortedatum_d"),
        "bsn": pl.col("bsn_n"),
        "huisnummer": pl.col("huisnummer_n"),
        "telefoon": pl.col("telefoon_n"),
        "email": pl.col("email").str.to_lowercase(),
        "achterstand_sinds": pl.col("achterstand_sinds_d"),
        "signaaldatum": pl.col("signaaldatum_d"),
        **{name: pl.col(f"{name}_b") for name in BOOLEAN_FIELDS},
        "address_key": address_key_expr(
            pl.col("postcode"), pl.col("huisnummer_n"), pl.col("huisnummer_suffix")
        ),
        "person_key": person_key_of_surname(pl.col("__surname"), pl.col("geboortedatum_d")),
    }
    # Every expression of one with_columns reads the columns as they were before it, so the
    # checks see the raw values while the outputs take their names.
    checked = values.with_columns(
        [expr.alias(f"err:{name}") for name, expr in errors.items()]
        + [expr.alias(f"warn:{name}") for name, expr in warnings.items()]
        + [expr.alias(name) for name, expr in outputs.items()]
    ).collect()
    error_list, error_count = _problems(checked, "err:", max_problems)
    warning_list, warning_count = _problems(checked, "warn:", max_problems)
    rows = checked.select(OUTPUT_COLUMNS)
    firsts = (
        checked.lazy()
        .filter(pl.col("referentie").is_not_null() & (pl.col("row") == pl.col("referentie_first")))
        .select("referentie", "row", clean=pl.col("err:referentie").is_null())
    )
    return (
        ValidationResult(rows, error_list, warning_list, error_count, warning_count),
        firsts.collect(),
    )


def _problems(checked: pl.DataFrame, prefix: str, limit: int) -> tuple[list[RowProblem], int]:
    """Messages as (row, column, message) in row order, at most ``limit``; and the total."""
    columns = [c for c in checked.columns if c.startswith(prefix)]
    long = (
        checked.lazy()
        .select("row", *columns)
        .filter(pl.any_horizontal(pl.col(columns).is_not_null()))
        .unpivot(index="row", variable_name="column", value_name="message")
        .drop_nulls("message")
        .with_columns(pl.col("column").str.strip_prefix(prefix))
        .sort("row", maintain_order=True)
        .collect()
    )
    problems = [RowProblem(r, c, m) for r, c, m in long.head(limit).iter_rows()]
    return problems, long.height
