"""Time-ordered case ids (UUID version 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.ids import time_ordered_uuids

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
)


@given(at=moments, count=st.integers(min_value=0, max_value=300))
def test_version_7_ids_in_creation_order(at: datetime, count: int) -> None:
    ids = time_ordered_uuids(count, at)
    assert len(set(ids)) == count
    assert ids == sorted(ids)
    for made in ids:
        assert made.version == 7
        assert made.variant == "specified in RFC 4122"
        assert made.int >> 80 == int(at.timestamp() * 1000)


def test_a_later_run_sorts_after_an_earlier_one() -> None:
    at = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    earlier = time_ordered_uuids(1000, at)
    later = time_ordered_uuids(1000, at + timedelta(milliseconds=1))
    assert max(earlier) < min(later)
