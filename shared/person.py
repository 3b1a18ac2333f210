"""The person key: who a signal is about, for the SDV client register.

``SURNAME|BIRTHDATE``: the surname in lower case, without leading particles (partners write
"de Jong" in the surname field or "de" as tussenvoegsel), with accents, spaces, apostrophes and
hyphens removed (``D'Hondt-Özdemir`` → ``dhondtozdemir``), then the ISO birth date. Null without
a birth date: a surname alone is not enough to say a signal is about a known client. Like the
address key, it is stored only as an HMAC.
"""

from __future__ import annotations

from datetime import date

import polars as pl

PARTICLES = r"^(?:(?:van|von|de|der|den|het|ter|ten|te|op|in|aan|la|le|du|da|di|el|'t|t)\s+)+"


# Letters that do not decompose into a base letter and an accent.
TRANSLITERATIONS = {
    "ø": "o",
    "Ø": "o",
    "ß": "ss",
    "æ": "ae",
    "Æ": "ae",
    "œ": "oe",
    "Œ": "oe",
    "ł": "l",
    "Ł": "l",
    "đ": "d",
    "Đ": "d",
    "ı": "i",
}


def normalised_surname(col: pl.Expr) -> pl.Expr:
    return (
        col.str.replace_many(TRANSLITERATIONS)
        .str.normalize("NFKD")
        .str.replace_all(r"\p{Mn}", "")
        .str.to_lowercase()
        .str.strip_chars()
        .str.replace(PARTICLES, "")
        .str.replace_all(r"[^a-z0-9]", "")
    )


def person_key_expr(surname: pl.Expr, birth_date: pl.Expr) -> pl.Expr:
    """``surname|YYYY-MM-DD``, null when either part is missing."""
    return person_key_of_surname(normalised_surname(surname), birth_date)


def person_key_of_surname(name: pl.Expr, birth_date: pl.Expr) -> pl.Expr:
    """:func:`person_key_expr` from a surname normalised already (:func:`normalised_surname`):
    as a column of its own, it is computed once (Polars computed it once per use here)."""
    key = pl.concat_str([name, birth_date.cast(pl.String)], separator="|")
    return pl.when((name.str.len_chars() > 0) & birth_date.is_not_null()).then(key)


def person_key(surname: str, birth_date: date | None) -> str | None:
    """The person key for one person."""
    frame = pl.DataFrame({"s": [surname], "b": [birth_date]}, schema={"s": pl.String, "b": pl.Date})
    value: str | None = frame.select(person_key_expr(pl.col("s"), pl.col("b"))).item()
    return value
