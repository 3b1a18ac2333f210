"""Database plumbing: a declarative base with a naming convention, UTC timestamps, sessions.

One place commits: a request or a CLI command opens a unit of work with :func:`unit_of_work`;
functions below it only ``flush()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Foreign keys declared on the models that PostgreSQL enforces with statement triggers instead of
# a constraint (same guarantees, checked once per statement rather than once per row; see
# migration 0009): those of the tables the upload and the monthly run write in bulk. SQLite keeps
# them as constraints.
TRIGGER_ENFORCED_FOREIGN_KEYS = frozenset(
    {
        "fk_signals_delivery_id_deliveries",
        "fk_cases_run_id_runs",
        "fk_cases_team_id_teams",
        "fk_case_signals_case_id_cases",
        "fk_case_signals_signal_id_signals",
        "fk_case_links_case_id_cases",
        "fk_case_links_earlier_case_id_cases",
        "fk_case_events_case_id_cases",
        "fk_signal_states_signal_id_signals",
    }
)


def schema_comparison_filter(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` hook for comparing the models with a database's schema: on
    PostgreSQL it leaves out the foreign keys enforced by triggers there."""

    def include(obj: object, name: str | None, type_: str, *_args: object) -> bool:
        return not (
            dialect == "postgresql"
            and type_ == "foreign_key_constraint"
            and name in TRIGGER_ENFORCED_FOREIGN_KEYS
        )

    return include


# Seconds a new PostgreSQL connection may take before the attempt fails (not a query timeout).
CONNECT_TIMEOUT_S = 10

# Integer ids that are BIGINT on PostgreSQL and SQLite's rowid alias on SQLite.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> uuid.UUID:
    return uuid.uuid4()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout.

    SQLAlchemy's errors leave out a statement's values (``hide_parameters``): they may be
    personal data (an address hash, a household's amounts). The database's own message may
    still quote a value (a duplicate key, a value it cannot read), so an error's message is
    never logged or shown (``shared.logs.exception_summary``, the CLI's ``main``)."""
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=NullPool,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy manage transactions (BEGIN IMMEDIATE below) instead of pysqlite.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers take the lock up front: no "database is locked" upgrade deadlocks.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A server restart or failover leaves dead connections in the pool: pre-ping tests each one
    # as it is checked out and replaces it (and every older one) when the server went away, so the
    # service recovers by itself once the database is back. A connection attempt that gets no
    # answer (an address that drops packets during a failover) gives up after connect_timeout
    # instead of hanging the request; the API answers 503 meanwhile (services.app).
    kwargs.setdefault("pool_pre_ping", True)
    query = make_url(url).query
    connect_args = kwargs.setdefault("connect_args", {})
    if "connect_timeout" not in query:
        connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    # No JIT compilation: the service's statements are short, and PostgreSQL decides on JIT by
    # the planned cost of the whole statement, including parts it never runs. When the case
    # list's total was a count of the cases, its plan cost more than jit_above_cost at national
    # scale: on a table of 3.5 million rows shaped like the list, compiling took 66 ms for a page
    # read in 0.09 ms without it; in the full-scale benchmark the page statement went from 9.3 ms
    # to 0.7 ms. Any statement over a large table can cross that cost. A URL that sets its own
    # ``options`` keeps them.
    if "options" not in query:
        connect_args.setdefault("options", "-c jit=off")
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that only read, from the same pool: on PostgreSQL their connection
    is in autocommit, so that each statement is its own transaction and a request sends no
    ``BEGIN`` and no ``COMMIT`` (two of a case list's five round trips). What a request reads
    is the same: at ``READ COMMITTED`` every statement takes its own snapshot in a transaction
    too. A connection goes back to the pool in its usual mode (SQLAlchemy resets it on return),
    so a request that writes never gets one in autocommit. A write in such a session (the
    credential's last use) commits with its statement, as it would at the session's end. On
    SQLite, where a request's transaction is the write lock taken up front, the usual sessions.
    """
    if engine.dialect.name != "postgresql":
        return make_sessionmaker(engine)
    return make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits at the end, or rolls back entirely on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
