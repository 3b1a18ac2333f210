"""Delivery periods and their deadline.

The pilot's agreement (Vroeg Eropaf, Haarlem): partners deliver "before the 25th of each month".
A period is a calendar month ``YYYY-MM``. Its delivery window opens when the previous period's
window closes and closes at 00:00 Europe/Amsterdam on the deadline day (default the 25th) of the
period's own month. So from 25 October 00:00 until 25 November 00:00 (Amsterdam time) the open
period is ``YYYY-11``; the matching run for ``YYYY-11`` happens after that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.errors import ValidationFailed

PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """A delivery period: one calendar month."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        match = PERIOD_RE.match(text.strip())
        if not match:
            raise ValidationFailed("period must be YYYY-MM, e.g. 2026-11")
        year = int(match.group(1))
        if not 2000 <= year <= 2999:  # the Wgs dates from 2021; far-off years are typos
            raise ValidationFailed("period must be a month from 2000 to 2999, e.g. 2026-11")
        return cls(year, int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def shift(self, months: int) -> Period:
        index = self.year * 12 + (self.month - 1) + months
        return Period(index // 12, index % 12 + 1)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return self.shift(1).first_day - timedelta(days=1)

    def deadline(self, deadline_day: int, tz: ZoneInfo) -> datetime:
        """The moment (UTC) the window closes: 00:00 local time on the deadline day."""
        local = datetime(self.year, self.month, deadline_day, tzinfo=tz)
        return local.astimezone(UTC)

    def opens(self, deadline_day: int, tz: ZoneInfo) -> datetime:
        """The moment (UTC) the window opens: when the previous period's window closes."""
        return self.shift(-1).deadline(deadline_day, tz)


def open_period(now: datetime, deadline_day: int, tz: ZoneInfo) -> Period:
    """The period whose window is open at ``now``."""
    local = now.astimezone(tz)
    current = Period(local.year, local.month)
    return current if local.day < deadline_day else current.shift(1)


def last_closed_period(now: datetime, deadline_day: int, tz: ZoneInfo) -> Period:
    """The period whose window closed most recently (the one the monthly run takes)."""
    return open_period(now, deadline_day, tz).shift(-1)


def local_today(now: datetime, tz: ZoneInfo) -> date:
    return now.astimezone(tz).date()


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (clamped to the month's end)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    day = moment.day
    while True:
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            day -= 1
