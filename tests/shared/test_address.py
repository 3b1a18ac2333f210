"""The address key: every spelling of one address gives one key; different addresses differ."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.address import (
    address_key,
    house_number_groups,
    house_number_parts,
    normalised_postcode,
    valid_postcode,
)

PROPERTY = settings(max_examples=100, deadline=None, database=None)

# --- examples --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "postcode", ["2011AB", "2011 AB", "2011ab", "2011 ab", " 2011  aB ", "2011\tAb"]
)
def test_postcode_spellings_normalise(postcode: str) -> None:
    assert address_key(postcode, "12") == "2011AB|12|"


@pytest.mark.parametrize(
    ("huisnummer", "huisletter", "toevoeging"),
    [
        ("12A", None, None),
        ("12a", None, None),
        ("12-A", None, None),
        ("12 a", None, None),
        ("12", "a", None),
        ("12", "A", None),
        ("12", "A", ""),
        ("012A", None, None),
    ],
)
def test_house_letter_spellings_are_one_address(
    huisnummer: str, huisletter: str | None, toevoeging: str | None
) -> None:
    assert address_key("2011 ab", huisnummer, huisletter, toevoeging) == "2011AB|12|A"


@pytest.mark.parametrize(
    ("huisnummer", "huisletter", "toevoeging"),
    [("12-2", None, None), ("12 2", None, None), ("12", None, "2"), ("12", "", "-2")],
)
def test_addition_spellings_are_one_address(
    huisnummer: str, huisletter: str | None, toevoeging: str | None
) -> None:
    assert address_key("2011AB", huisnummer, huisletter, toevoeging) == "2011AB|12|2"


@pytest.mark.parametrize(
    ("huisnummer", "huisletter", "toevoeging", "suffix"),
    [
        ("12 hs", None, None, "HS"),
        ("12hs", None, None, "HS"),
        ("12", None, "hs", "HS"),
        ("12bis", None, None, "BIS"),
        ("12 bis", None, None, "BIS"),
        ("12A-1", None, None, "A1"),
        ("12a 1", None, None, "A1"),
        ("12", "A", "1", "A1"),
        ("12A", None, "1", "A1"),
        ("12", "a", "-1", "A1"),
    ],
)
def test_other_house_number_forms(
    huisnummer: str, huisletter: str | None, toevoeging: str | None, suffix: str
) -> None:
    assert address_key("2011AB", huisnummer, huisletter, toevoeging) == f"2011AB|12|{suffix}"


def test_number_with_and_without_letter_are_two_addresses() -> None:
    assert address_key("2011AB", "12") != address_key("2011AB", "12A")
    assert address_key("2011AB", "12") != address_key("2011AB", "12", "A")


def test_separator_keeps_number_and_addition_apart() -> None:
    assert address_key("2011AB", "1-23") == "2011AB|1|23"
    assert address_key("2011AB", "12-3") == "2011AB|12|3"
    assert address_key("2011AB", "123") == "2011AB|123|"


@pytest.mark.parametrize(
    "postcode",
    [
        "0123AB",  # starts with 0
        "1234SA",
        "1234SD",
        "1234ss",
        "123AB",  # too short
        "12345AB",  # too long
        "1234A",
        "1234ABC",
        "ABCD12",
        "AB1234",
        "1234-AB",
        "",
        "   ",
    ],
)
def test_invalid_postcodes_give_no_key(postcode: str) -> None:
    assert address_key(postcode, "12") is None


@pytest.mark.parametrize(
    "huisnummer", ["0", "000", "", "  ", "A12", "abc", "100000", "-1", "99999999999"]
)
def test_invalid_house_numbers_give_no_key(huisnummer: str) -> None:
    assert address_key("2011AB", huisnummer) is None


def test_house_number_bounds() -> None:
    assert address_key("2011AB", "1") == "2011AB|1|"
    assert address_key("2011AB", "99999") == "2011AB|99999|"


def test_suffix_longer_than_eight_characters_gives_no_key() -> None:
    assert address_key("2011AB", "12", "A", "12345678") is None
    assert address_key("2011AB", "12", "A", "1234567") == "2011AB|12|A1234567"


def test_expressions_on_a_frame() -> None:
    frame = pl.DataFrame(
        {
            "pc": ["2011 ab", "", None, "0123AB", "1234 ss"],
            "nr": ["12A-1", "7", None, "x", "3"],
            "hl": [None, "b", None, None, None],
            "tv": [None, "2", None, None, None],
        },
        schema={"pc": pl.String, "nr": pl.String, "hl": pl.String, "tv": pl.String},
    )
    number, suffix = house_number_parts(pl.col("nr"), pl.col("hl"), pl.col("tv"))
    out = frame.select(
        pc=normalised_postcode(pl.col("pc")), number=number, suffix=suffix
    ).with_columns(ok=valid_postcode(pl.col("pc")))
    assert out["pc"].to_list() == ["2011AB", None, None, "0123AB", "1234SS"]
    assert out["number"].to_list() == [12, 7, None, None, 3]
    assert out["suffix"].to_list()[:2] == ["A1", "B2"]
    assert out["ok"].to_list() == [True, None, None, False, False]


# --- properties ------------------------------------------------------------------------------

FORBIDDEN = {"SA", "SD", "SS"}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@st.composite
def postcodes(draw: st.DrawFn) -> str:
    """A valid postcode in canonical form."""
    digits = str(draw(st.integers(1000, 9999)))
    letters = draw(st.text(LETTERS, min_size=2, max_size=2).filter(lambda s: s not in FORBIDDEN))
    return digits + letters


def random_case(draw: st.DrawFn, text: str) -> str:
    flags = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.lower() if flag else c.upper() for c, flag in zip(text, flags, strict=True))


@st.composite
def postcode_spelling(draw: st.DrawFn, canonical: str) -> str:
    spaced = draw(st.sampled_from(["", " ", "  "]))
    text = canonical[:4] + spaced + random_case(draw, canonical[4:])
    outer = draw(st.sampled_from(["", " "]))
    return outer + text + draw(st.sampled_from(["", " "]))


additions = st.one_of(
    st.text("0123456789", min_size=1, max_size=3),
    st.sampled_from(["hs", "bis", "ii", "rd", "bg", "zw"]),
    st.from_regex(r"[A-Za-z][0-9]{1,2}", fullmatch=True),
)


@st.composite
def house_number_spelling(
    draw: st.DrawFn, number: int, letter: str | None, addition: str | None
) -> tuple[str, str | None, str | None]:
    """(huisnummer, huisletter, toevoeging) in one of the forms partners use."""
    nr = draw(st.sampled_from([str(number), "0" + str(number)]))
    letter_text = random_case(draw, letter) if letter else None
    addition_text = random_case(draw, addition) if addition else None
    form = draw(st.sampled_from(["combined", "separate", "letter_in_number"]))
    if form == "separate":
        toevoeging = addition_text
        if toevoeging is not None:
            toevoeging = draw(st.sampled_from(["", "-", " "])) + toevoeging
        return nr, letter_text, toevoeging
    text = nr
    if letter_text:
        text += draw(st.sampled_from(["", "-", " "])) + letter_text
    if form == "letter_in_number" or addition_text is None:
        return text, None, addition_text
    # Directly after the number a digit would change the number; after a letter anything goes.
    joiners = ["-", " ", " - "] if letter_text is None else ["", "-", " "]
    return text + draw(st.sampled_from(joiners)) + addition_text, None, None


@st.composite
def addresses(draw: st.DrawFn) -> tuple[str, int, str | None, str | None]:
    letter = draw(st.none() | st.sampled_from(LETTERS))
    addition = draw(st.none() | additions)
    return draw(postcodes()), draw(st.integers(1, 99999)), letter, addition


@PROPERTY
@given(st.data(), addresses())
def test_every_spelling_of_one_address_gives_one_key(
    data: st.DataObject, address: tuple[str, int, str | None, str | None]
) -> None:
    postcode, number, letter, addition = address
    expected = f"{postcode}|{number}|{(letter or '') + (addition or '').upper()}"
    for _ in range(4):
        pc = data.draw(postcode_spelling(postcode))
        nr, hl, tv = data.draw(house_number_spelling(number, letter, addition))
        assert address_key(pc, nr, hl, tv) == expected, (pc, nr, hl, tv)


@PROPERTY
@given(postcodes(), st.integers(1, 99999), st.integers(1, 99999), st.none() | additions)
def test_different_numbers_give_different_keys(
    postcode: str, first: int, second: int, addition: str | None
) -> None:
    assume(first != second)
    a = address_key(postcode, str(first), None, addition)
    b = address_key(postcode, str(second), None, addition)
    assert a is not None
    assert b is not None
    assert a != b


@PROPERTY
@given(postcodes(), st.integers(1, 99999), st.sampled_from(LETTERS + LETTERS.lower()))
def test_number_and_number_with_letter_differ(postcode: str, number: int, letter: str) -> None:
    plain = address_key(postcode, str(number))
    assert plain == f"{postcode}|{number}|"
    assert address_key(postcode, f"{number}{letter}") != plain
    assert address_key(postcode, str(number), letter) != plain


@PROPERTY
@given(postcodes(), postcodes(), st.integers(1, 99999))
def test_different_postcodes_give_different_keys(first: str, second: str, number: int) -> None:
    assume(first != second)
    assert address_key(first, str(number)) != address_key(second, str(number))


@st.composite
def invalid_postcodes(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["leading_zero", "forbidden", "digits_length", "letters_length"]))
    letters = draw(st.text(LETTERS, min_size=2, max_size=2).filter(lambda s: s not in FORBIDDEN))
    digits = str(draw(st.integers(1000, 9999)))
    if kind == "leading_zero":
        digits = "0" + digits[1:]
    elif kind == "forbidden":
        letters = draw(st.sampled_from(sorted(FORBIDDEN)))
    elif kind == "digits_length":
        digits = draw(st.from_regex(r"[1-9][0-9]{0,2}|[1-9][0-9]{4,6}", fullmatch=True))
    else:
        letters = draw(st.text(LETTERS, min_size=0, max_size=4).filter(lambda s: len(s) != 2))
    canonical = digits + letters
    spaced = draw(st.sampled_from(["", " "]))
    return random_case(draw, canonical[: len(digits)] + spaced + canonical[len(digits) :])


@PROPERTY
@given(invalid_postcodes(), st.integers(1, 99999))
def test_invalid_postcodes_never_give_a_key(postcode: str, number: int) -> None:
    assert address_key(postcode, str(number)) is None


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.none() | st.text(alphabet="0123456789 -/aBz\n", max_size=8),
            st.none() | st.text(alphabet="aBz1 ", max_size=3),
            st.none() | st.text(alphabet="aB12 -", max_size=4),
        ),
        max_size=20,
    )
)
def test_house_number_groups_given_as_a_column_give_the_same_parts(
    rows: list[tuple[str | None, str | None, str | None]],
) -> None:
    """The ingest hands the house number's groups in as a column of their own: the same number
    and suffix as from the house number itself."""
    frame = pl.DataFrame(
        rows, schema=dict.fromkeys(("nr", "hl", "tv"), pl.String), orient="row"
    ).with_columns(groups=house_number_groups(pl.col("nr")))
    direct = house_number_parts(pl.col("nr"), pl.col("hl"), pl.col("tv"))
    given_groups = house_number_parts(
        pl.col("nr"), pl.col("hl"), pl.col("tv"), groups=pl.col("groups")
    )
    assert frame.select(*[e.alias(str(i)) for i, e in enumerate(direct)]).equals(
        frame.select(*[e.alias(str(i)) for i, e in enumerate(given_groups)])
    )
