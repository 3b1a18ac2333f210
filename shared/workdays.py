"""Dutch public holidays and working-day arithmetic, for computing due dates.

The Wet gemeentelijke schuldhulpverlening (Wgs) requires the municipality to offer a first
conversation within three working days when eviction, or disconnection of energy or water,
threatens. Saturdays, Sundays and Dutch public holidays are not working days.

Which days are public holidays follows article 3 of the Algemene termijnenwet (the
"algemeen erkende feestdagen"):

* Nieuwjaarsdag: 1 January;
* Tweede Paasdag: Easter Monday;
* Hemelvaartsdag: Easter Sunday + 39 days (a Thursday);
* Tweede Pinksterdag: Easter Sunday + 50 days (a Monday);
* Eerste and Tweede Kerstdag: 25 and 26 December;
* Koningsdag: 27 April, or 26 April when 27 April is a Sunday;
* Bevrijdingsdag: 5 May, every year (the law lists "de vijfde mei" without the
  once-every-five-years restriction that collective labour agreements often apply).

Eerste Paasdag and Eerste Pinksterdag fall on Sundays, so they are not working days anyway and
are not listed. Goede Vrijdag is *not* a general holiday under the Algemene termijnenwet (many
employers give the day off, but the law does not), so it counts as a working day here. Days that
the government occasionally equates with a holiday by decree (art. 3 lid 2) are not included.

Koningsdag is computed with the rule in force since 2014 for every year; before 2014 the
Netherlands celebrated Koninginnedag on 30 April (29 April when that was a Sunday). The module is
meant for current and future due dates, so that history is not modelled.

Easter Sunday is computed with the anonymous Gregorian algorithm (Meeus/Jones/Butcher), so the
functions accept the years of the Gregorian calendar that :class:`datetime.date` can represent
(1583..9999).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from functools import lru_cache
from types import MappingProxyType

__all__ = [
    "add_working_days",
    "easter_sunday",
    "is_working_day",
    "public_holidays",
]

FIRST_GREGORIAN_YEAR = 1583
LAST_YEAR = 9999
_SATURDAY = 5  # date.weekday(): Monday is 0


def easter_sunday(year: int) -> date:
    """Easter Sunday of ``year`` in the Gregorian calendar (Meeus/Jones/Butcher algorithm).

    Raises ValueError for years outside 1583..9999.
    """
    if not FIRST_GREGORIAN_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"year must be between {FIRST_GREGORIAN_YEAR} and {LAST_YEAR}, got {year}")
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=256)
def _holidays(year: int) -> Mapping[date, str]:
    """The holidays of ``year`` as a read-only mapping (cached; shared between callers)."""
    easter = easter_sunday(year)
    kings_day = date(year, 4, 27)
    if kings_day.weekday() == 6:  # Sunday
        kings_day = date(year, 4, 26)
    entries = [
        (date(year, 1, 1), "Nieuwjaarsdag"),
        (easter + timedelta(days=1), "Tweede Paasdag"),
        (kings_day, "Koningsdag"),
        (date(year, 5, 5), "Bevrijdingsdag"),
        (easter + timedelta(days=39), "Hemelvaartsdag"),
        (easter + timedelta(days=50), "Tweede Pinksterdag"),
        (date(year, 12, 25), "Eerste Kerstdag"),
        (date(year, 12, 26), "Tweede Kerstdag"),
    ]
    holidays: dict[date, str] = {}
    for day, name in entries:
        # Hemelvaartsdag can fall on 5 May (2016, 2157, ...); keep both names.
        holidays[day] = f"{holidays[day]} en {name}" if day in holidays else name
    return MappingProxyType(dict(sorted(holidays.items())))


def public_holidays(year: int) -> dict[date, str]:
    """The public holidays of ``year`` (Algemene termijnenwet art. 3), date → Dutch name.

    Sorted by date. When two holidays share a date (Hemelvaartsdag on 5 May) the names are joined
    with " en ". The computation is cached; each call returns a fresh dict, so callers may modify
    it. Raises ValueError for years outside 1583..9999.
    """
    return dict(_holidays(year))


def is_working_day(day: date) -> bool:
    """True for Monday to Friday when the day is not a public holiday."""
    return day.weekday() < _SATURDAY and day not in _holidays(day.year)


def add_working_days(start: date, days: int) -> date:
    """The date that is ``days`` working days after ``start``.

    ``start`` itself never counts, whether or not it is a working day: Friday + 3 working days is
    the next Wednesday (when no holiday intervenes), and Saturday + 1 is the next Monday. The
    result is always a working day. Raises ValueError when ``days`` is less than 1 (and
    OverflowError when the result would lie beyond 9999-12-31).
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    current = start
    remaining = days
    while remaining:
        current += timedelta(days=1)
        if is_working_day(current):
            remaining -= 1
    return current
