"""Dutch public holidays (Algemene termijnenwet art. 3) and working-day arithmetic."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.workdays import add_working_days, easter_sunday, is_working_day, public_holidays

PROPERTY = settings(max_examples=100, deadline=None, database=None)

# Dates in a range where due dates will realistically be computed, plus a margin.
starts = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31))
day_counts = st.integers(min_value=1, max_value=60)


def _easter_oudin(year: int) -> date:
    """Easter Sunday by Oudin's algorithm: an independent oracle for the module's one."""
    g = year % 19
    c = year // 100
    h = (c - c // 4 - (8 * c + 13) // 25 + 19 * g + 15) % 30
    i = h - (h // 28) * (1 - (h // 28) * (29 // (h + 1)) * ((21 - g) // 11))
    j = (year + year // 4 + i + 2 - c + c // 4) % 7
    p = i - j
    return date(year, 3 + (p + 26) // 30, 1 + (p + 27 + (p + 6) // 40) % 31)


def _working_days_between(start: date, end: date) -> int:
    """Working days in the half-open interval (start, end]."""
    return sum(
        is_working_day(start + timedelta(days=offset))
        for offset in range(1, (end - start).days + 1)
    )


# --- Easter ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "expected"),
    [
        (1583, date(1583, 4, 10)),
        (2000, date(2000, 4, 23)),
        (2008, date(2008, 3, 23)),
        (2011, date(2011, 4, 24)),
        (2016, date(2016, 3, 27)),
        (2019, date(2019, 4, 21)),
        (2024, date(2024, 3, 31)),
        (2025, date(2025, 4, 20)),
        (2026, date(2026, 4, 5)),
        (2027, date(2027, 3, 28)),
        (2038, date(2038, 4, 25)),
        (2285, date(2285, 3, 22)),
    ],
)
def test_known_easter_dates(year: int, expected: date) -> None:
    assert easter_sunday(year) == expected


def test_easter_agrees_with_an_independent_algorithm_for_every_year() -> None:
    for year in range(1583, 10000):
        assert easter_sunday(year) == _easter_oudin(year), year


def test_easter_is_a_sunday_between_22_march_and_25_april() -> None:
    for year in range(1583, 10000):
        easter = easter_sunday(year)
        assert easter.weekday() == 6
        assert date(year, 3, 22) <= easter <= date(year, 4, 25)


@pytest.mark.parametrize("year", [0, 1, 1582, 10000])
def test_easter_refuses_years_outside_the_gregorian_range(year: int) -> None:
    with pytest.raises(ValueError, match="year must be between"):
        easter_sunday(year)


# --- holidays --------------------------------------------------------------------------------


def test_holidays_2026() -> None:
    assert public_holidays(2026) == {
        date(2026, 1, 1): "Nieuwjaarsdag",
        date(2026, 4, 6): "Tweede Paasdag",
        date(2026, 4, 27): "Koningsdag",
        date(2026, 5, 5): "Bevrijdingsdag",
        date(2026, 5, 14): "Hemelvaartsdag",
        date(2026, 5, 25): "Tweede Pinksterdag",
        date(2026, 12, 25): "Eerste Kerstdag",
        date(2026, 12, 26): "Tweede Kerstdag",
    }


def test_holidays_2025_koningsdag_moves_to_saturday_26_april() -> None:
    assert date(2025, 4, 27).weekday() == 6  # a Sunday
    holidays = public_holidays(2025)
    assert holidays == {
        date(2025, 1, 1): "Nieuwjaarsdag",
        date(2025, 4, 21): "Tweede Paasdag",
        date(2025, 4, 26): "Koningsdag",
        date(2025, 5, 5): "Bevrijdingsdag",
        date(2025, 5, 29): "Hemelvaartsdag",
        date(2025, 6, 9): "Tweede Pinksterdag",
        date(2025, 12, 25): "Eerste Kerstdag",
        date(2025, 12, 26): "Tweede Kerstdag",
    }
    assert date(2025, 4, 27) not in holidays


def test_holidays_are_sorted_by_date() -> None:
    days = list(public_holidays(2027))
    assert days == sorted(days)


def test_ascension_on_liberation_day_keeps_both_names() -> None:
    holidays = public_holidays(2016)
    assert holidays[date(2016, 5, 5)] == "Bevrijdingsdag en Hemelvaartsdag"
    assert len(holidays) == 7


def test_bevrijdingsdag_is_a_holiday_every_year() -> None:
    for year in range(2014, 2060):
        assert date(year, 5, 5) in public_holidays(year)


def test_goede_vrijdag_is_not_a_holiday() -> None:
    good_friday = easter_sunday(2026) - timedelta(days=2)
    assert good_friday == date(2026, 4, 3)
    assert good_friday not in public_holidays(2026)
    assert is_working_day(good_friday)


def test_public_holidays_returns_a_fresh_dict() -> None:
    first = public_holidays(2026)
    first.clear()
    assert len(public_holidays(2026)) == 8
    assert not is_working_day(date(2026, 1, 1))


# --- working days ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 1, 1), False),  # Nieuwjaarsdag, a Thursday
        (date(2026, 1, 2), True),  # Friday
        (date(2026, 1, 3), False),  # Saturday
        (date(2026, 1, 4), False),  # Sunday
        (date(2026, 1, 5), True),  # Monday
        (date(2026, 4, 6), False),  # Tweede Paasdag
        (date(2026, 4, 27), False),  # Koningsdag
        (date(2026, 5, 5), False),  # Bevrijdingsdag
        (date(2026, 5, 14), False),  # Hemelvaartsdag
        (date(2026, 5, 15), True),  # the Friday after
        (date(2026, 5, 25), False),  # Tweede Pinksterdag
        (date(2026, 12, 24), True),  # Christmas Eve is an ordinary day
        (date(2026, 12, 31), True),  # so is New Year's Eve
    ],
)
def test_is_working_day(day: date, expected: bool) -> None:
    assert is_working_day(day) is expected


def test_working_days_in_2026() -> None:
    # 261 weekdays; 7 holidays fall on one (Tweede Kerstdag 2026 is a Saturday).
    assert _working_days_between(date(2025, 12, 31), date(2026, 12, 31)) == 254


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (date(2026, 1, 9), 3, date(2026, 1, 14)),  # Friday + 3 → Wednesday
        (date(2026, 1, 12), 3, date(2026, 1, 15)),  # Monday + 3 → Thursday
        (date(2026, 1, 12), 5, date(2026, 1, 19)),  # Monday + 5 → next Monday
        (date(2026, 1, 10), 1, date(2026, 1, 12)),  # Saturday + 1 → Monday
        (date(2026, 1, 11), 3, date(2026, 1, 14)),  # Sunday + 3 → Wednesday
        (date(2026, 12, 24), 3, date(2026, 12, 30)),  # across Christmas
        (date(2026, 12, 31), 1, date(2027, 1, 4)),  # Nieuwjaarsdag, then a weekend
        (date(2025, 12, 31), 1, date(2026, 1, 2)),  # across Nieuwjaarsdag
        (date(2026, 4, 2), 3, date(2026, 4, 8)),  # Goede Vrijdag counts, Paasmaandag not
        (date(2025, 4, 17), 3, date(2025, 4, 23)),  # the same in 2025
        (date(2026, 4, 24), 3, date(2026, 4, 30)),  # across Koningsdag (Monday 27 April)
        (date(2025, 4, 24), 3, date(2025, 4, 29)),  # Koningsdag 2025 is a Saturday
        (date(2026, 5, 4), 1, date(2026, 5, 6)),  # across Bevrijdingsdag
        (date(2026, 5, 13), 3, date(2026, 5, 19)),  # across Hemelvaartsdag
        (date(2026, 5, 22), 1, date(2026, 5, 26)),  # across Tweede Pinksterdag
        (date(2026, 4, 6), 1, date(2026, 4, 7)),  # starting on a holiday
        (date(2026, 1, 2), 20, date(2026, 1, 30)),  # four full weeks
    ],
)
def test_add_working_days(start: date, days: int, expected: date) -> None:
    assert add_working_days(start, days) == expected


@pytest.mark.parametrize("days", [0, -1, -3])
def test_add_working_days_refuses_fewer_than_one_day(days: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        add_working_days(date(2026, 1, 9), days)


# --- properties ------------------------------------------------------------------------------


@PROPERTY
@given(starts, day_counts)
def test_result_is_a_working_day_strictly_after_start(start: date, days: int) -> None:
    result = add_working_days(start, days)
    assert result > start
    assert is_working_day(result)


@PROPERTY
@given(starts, day_counts)
def test_exactly_days_working_days_lie_in_between(start: date, days: int) -> None:
    result = add_working_days(start, days)
    assert _working_days_between(start, result) == days
    # Not one day earlier: the result is the first date that reaches the count.
    assert _working_days_between(start, result - timedelta(days=1)) == days - 1


@PROPERTY
@given(starts, day_counts, day_counts)
def test_monotone_in_days(start: date, fewer: int, more: int) -> None:
    fewer, more = sorted((fewer, more))
    if fewer == more:
        assert add_working_days(start, fewer) == add_working_days(start, more)
    else:
        assert add_working_days(start, fewer) < add_working_days(start, more)


@PROPERTY
@given(starts, day_counts, day_counts)
def test_steps_compose(start: date, first: int, second: int) -> None:
    halfway = add_working_days(start, first)
    assert add_working_days(halfway, second) == add_working_days(start, first + second)


@PROPERTY
@given(starts)
def test_from_a_non_working_day_counts_as_from_the_working_day_before(start: date) -> None:
    # Move forward to the first non-working day (a weekend is never more than five days away).
    while is_working_day(start):
        start += timedelta(days=1)
    previous = start - timedelta(days=1)
    while not is_working_day(previous):
        previous -= timedelta(days=1)
    assert add_working_days(start, 1) == add_working_days(previous, 1)
