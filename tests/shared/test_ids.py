"""Time-ordered case ids (UUID version 7)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ids import time_ordered_uuid_texts, time_ordered_uuids

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


@given(at=moments, count=st.integers(min_value=0, max_value=300), seed=st.binary(min_size=10))
def test_the_ids_as_text_are_the_ids_written_out(at: datetime, count: int, seed: bytes) -> None:
    """The same random bits give the same ids, as UUIDs and as text."""
    made: list[list[str]] = []
    for texts in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            parts = iter([seed[:2], seed[2:10]])
            patch.setattr(os, "urandom", lambda _n, parts=parts: next(parts))
            made.append(
                time_ordered_uuid_texts(count, at)
                if texts
                else [str(i) for i in time_ordered_uuids(count, at)]
            )
    assert made[0] == made[1]
