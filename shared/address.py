"""Address normalisation and the address key, as vectorised Polars expressions.

The address key is what matching compares (after keyed hashing): ``POSTCODE|NUMBER|SUFFIX``.

* ``POSTCODE``: four digits not starting with 0, then two letters, upper case, no space; the letter
  pairs SA, SD and SS are never issued (``2011 ab`` → ``2011AB``).
* ``NUMBER``: the house number without leading zeros (1..99999).
* ``SUFFIX``: the house letter and the addition together, upper case, with everything but letters
  and digits removed. The house-number field may carry them itself (``12A``, ``12-A``, ``12 a``,
  ``12-2``, ``12 hs``, ``12bis``, ``12A-1``); separate ``huisletter`` / ``huisnummertoevoeging``
  columns are appended in that order.

So ``12A``, ``12-A``, ``12 a`` and (12, huisletter ``a``) are one address (``…|12|A``); ``12-2`` and
``12 2`` are one (``…|12|2``); ``12`` and ``12A`` are two. The ``|`` separators keep ``1-23`` and
``12-3`` apart.

The same expressions serve single values (the SDV register, the CLI) through :func:`address_key`,
so there is one definition of an address.
"""

from __future__ import annotations

import polars as pl

POSTCODE_PATTERN = r"^[1-9][0-9]{3}[A-Z]{2}$"
FORBIDDEN_POSTCODE_LETTERS = r"(SA|SD|SS)$"
HOUSE_NUMBER_PATTERN = r"^\s*([0-9]+)(.*)$"
MAX_SUFFIX_LENGTH = 8


def normalised_postcode(col: pl.Expr) -> pl.Expr:
    """Upper case, all white space removed; null when empty."""
    cleaned = col.str.replace_all(r"\s+", "").str.to_uppercase()
    return pl.when(cleaned.str.len_chars() > 0).then(cleaned).otherwise(None)


def valid_postcode(postcode: pl.Expr) -> pl.Expr:
    """True for a Dutch postcode (on a normalised value)."""
    return postcode.str.contains(POSTCODE_PATTERN) & ~postcode.str.contains(
        FORBIDDEN_POSTCODE_LETTERS
    )


def _clean_suffix(col: pl.Expr) -> pl.Expr:
    return col.fill_null("").str.replace_all(r"[^0-9A-Za-z]", "").str.to_uppercase()


def house_number_groups(huisnummer: pl.Expr) -> pl.Expr:
    """The house number's digits and what follows them (struct fields ``1`` and ``2``)."""
    return huisnummer.str.extract_groups(HOUSE_NUMBER_PATTERN)


def house_number_parts(
    huisnummer: pl.Expr,
    huisletter: pl.Expr,
    toevoeging: pl.Expr,
    *,
    groups: pl.Expr | None = None,
) -> tuple[pl.Expr, pl.Expr]:
    """(number as Int32 or null when unreadable, suffix string) from the three columns.

    ``groups``: :func:`house_number_groups` of ``huisnummer`` as a column already (the ingest's
    batches): used twice here, which Polars would otherwise compute twice."""
    fields = (house_number_groups(huisnummer) if groups is None else groups).struct
    number = fields.field("1").cast(pl.Int32, strict=False)
    number = pl.when((number > 0) & (number <= 99999)).then(number).otherwise(None)
    rest = _clean_suffix(fields.field("2"))
    suffix = pl.concat_str(
        [rest, _clean_suffix(huisletter), _clean_suffix(toevoeging)], separator=""
    )
    return number, suffix


def address_key_expr(postcode: pl.Expr, number: pl.Expr, suffix: pl.Expr) -> pl.Expr:
    """``POSTCODE|NUMBER|SUFFIX`` from normalised parts."""
    return pl.concat_str([postcode, number.cast(pl.String), suffix], separator="|")


def address_key(
    postcode: str, huisnummer: str, huisletter: str | None = None, toevoeging: str | None = None
) -> str | None:
    """The address key for one address, or None when postcode or house number is invalid."""
    frame = pl.DataFrame(
        {"pc": [postcode], "nr": [huisnummer], "hl": [huisletter], "tv": [toevoeging]},
        schema={"pc": pl.String, "nr": pl.String, "hl": pl.String, "tv": pl.String},
    )
    number, suffix = house_number_parts(pl.col("nr"), pl.col("hl"), pl.col("tv"))
    out = frame.select(pc=normalised_postcode(pl.col("pc")), number=number, suffix=suffix).select(
        ok=valid_postcode(pl.col("pc"))
        & pl.col("number").is_not_null()
        & (pl.col("suffix").str.len_chars() <= MAX_SUFFIX_LENGTH),
        key=address_key_expr(pl.col("pc"), pl.col("number"), pl.col("suffix")),
    )
    ok, key = out.row(0)
    return key if ok else None
