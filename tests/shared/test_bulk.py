"""Bulk updates from frames (COPY into a temporary table on PostgreSQL, executemany on SQLite)."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest
import sqlalchemy as sa
from psycopg.errors import UniqueViolation

from shared import bulk
from shared.bulk import delete_by_keys, update_from_frame
from shared.context import Context

PROBE = sa.Table(
    "bulk_probe",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("figure", sa.Integer, nullable=True),
    sa.Column("stamp", sa.String(16)),
)


@pytest.fixture
def probe(ctx: Context) -> Iterator[sa.Table]:
    """A table of the test's own beside the schema, dropped afterwards."""
    PROBE.create(ctx.engine)
    yield PROBE
    PROBE.drop(ctx.engine)


def _rows(ctx: Context) -> dict[int, tuple[int | None, str]]:
    with ctx.sessions() as session:
        rows = session.execute(sa.select(PROBE).order_by(PROBE.c.id)).all()
    return {r.id: (r.figure, r.stamp) for r in rows}


def test_only_rows_whose_compared_columns_change_are_written(ctx: Context, probe: sa.Table) -> None:
    """The stamp is written with the figure, but only where the figure changes; NULL is a value
    like any other (NULL to NULL is no change, NULL to 1 and 1 to NULL are)."""
    with ctx.sessions.begin() as session:
        session.execute(
            sa.insert(PROBE),
            [
                {"id": 1, "figure": 10, "stamp": "old"},
                {"id": 2, "figure": 20, "stamp": "old"},
                {"id": 3, "figure": None, "stamp": "old"},
                {"id": 4, "figure": None, "stamp": "old"},
                {"id": 5, "figure": 50, "stamp": "old"},
            ],
        )
    frame = pl.DataFrame(
        {"id": [1, 2, 3, 4, 5], "figure": [10, 21, None, 4, None], "stamp": ["new"] * 5},
        schema={"id": pl.Int64, "figure": pl.Int64, "stamp": pl.String},
    )
    with ctx.sessions.begin() as session:
        update_from_frame(session, PROBE, "id", frame, changed=["figure"])
    assert _rows(ctx) == {
        1: (10, "old"),
        2: (21, "new"),
        3: (None, "old"),
        4: (4, "new"),
        5: (None, "new"),
    }
    # Keys far apart (updated by look-ups, not over their range) are found the same way.
    sparse = pl.DataFrame(
        {"id": [2, 5000], "figure": [22, 1], "stamp": ["far", "far"]},
        schema={"id": pl.Int64, "figure": pl.Int64, "stamp": pl.String},
    )
    with ctx.sessions.begin() as session:
        update_from_frame(session, probe, "id", sparse, changed=["figure"])
    assert _rows(ctx)[2] == (22, "far")
    # Without ``changed`` every other column counts: the stamp differs everywhere now.
    with ctx.sessions.begin() as session:
        update_from_frame(session, PROBE, "id", frame.with_columns(pl.lit("again").alias("stamp")))
    assert {row[1] for row in _rows(ctx).values()} == {"again"}


def test_delete_by_keys_deletes_exactly_those_rows(ctx: Context, probe: sa.Table) -> None:
    """More keys than one statement's chunk, some of them absent from the table."""
    with ctx.sessions.begin() as session:
        session.execute(
            sa.insert(PROBE), [{"id": i, "figure": i, "stamp": "x"} for i in range(1, 3001)]
        )
    doomed = [i for i in range(1, 3001) if i % 3 == 0] + [5000, 6000]
    with ctx.sessions.begin() as session:
        delete_by_keys(session, PROBE, "id", doomed)
    assert set(_rows(ctx)) == {i for i in range(1, 3001) if i % 3 != 0}
    with ctx.sessions.begin() as session:
        delete_by_keys(session, PROBE, "id", [])
    assert len(_rows(ctx)) == 2000


def test_a_frame_is_inserted_whole_in_pieces_or_not_at_all(
    ctx: Context, probe: sa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame longer than a piece goes in whole, in order; a failing piece leaves nothing of
    the others once the transaction is rolled back."""
    monkeypatch.setattr(bulk, "COPY_PIECE_ROWS", 3)
    frame = pl.DataFrame(
        {"id": list(range(1, 11)), "figure": [None, *range(2, 11)], "stamp": ["s"] * 10},
        schema={"id": pl.Int64, "figure": pl.Int64, "stamp": pl.String},
    )
    with ctx.sessions.begin() as session:
        bulk.insert_frame(session, probe, frame)
    assert _rows(ctx) == {i: (None if i == 1 else i, "s") for i in range(1, 11)}

    clash = frame.with_columns(pl.col("id") + 8)  # ids 9 and 10 (in the fourth piece) exist
    # The driver's own error on PostgreSQL (COPY goes past SQLAlchemy), SQLAlchemy's on SQLite.
    with pytest.raises((sa.exc.IntegrityError, UniqueViolation)), ctx.sessions.begin() as session:
        bulk.insert_frame(session, probe, clash)
    assert len(_rows(ctx)) == 10
