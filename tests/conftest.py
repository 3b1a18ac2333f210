"""Test fixtures: every database test runs on SQLite and, when configured, on PostgreSQL.

* SQLite always: a migrated template file is copied for each test.
* PostgreSQL when ``VS_TEST_DATABASE_URL`` is set (a server URL such as
  ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``): one scratch database per test
  session, migrated once, its tables emptied after each test. With ``CI=true`` a missing or
  unreachable PostgreSQL fails the run; it is never skipped silently.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from shared import migrate
from shared.context import Context, build_context
from shared.db import Base
from shared.settings import Settings, new_key_text
from tests.helpers import free_port

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
PG_ENV = "VS_TEST_DATABASE_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _backends() -> list[str]:
    backends = ["sqlite"]
    if os.environ.get(PG_ENV) or _in_ci():
        backends.append("postgresql")
    return backends


class Clock:
    """A settable clock; starts on 10 November 2026, 10:00 in Amsterdam (window 2026-11 open)."""

    def __init__(self) -> None:
        self.current = datetime(2026, 11, 10, 10, 0, tzinfo=AMSTERDAM).astimezone(UTC)

    def __call__(self) -> datetime:
        return self.current

    def set_local(self, *args: int) -> None:
        self.current = datetime(*args, tzinfo=AMSTERDAM).astimezone(UTC)  # type: ignore[misc]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.fail(f"CI=true but {PG_ENV} is not set: PostgreSQL tests must run in CI")
    name = f"vs_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ENV} is not reachable: {type(exc).__name__}")
    url = sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=_backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "test.sqlite"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    engine = sa.create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "database_url": database_url,
        "data_dir": data_dir,
        "encryption_keys": SecretStr("k1:" + new_key_text()),
        "address_hash_key": SecretStr(new_key_text()),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def ctx(database_url: str, tmp_path: Path, clock: Clock) -> Iterator[Context]:
    context = build_context(make_settings(database_url, tmp_path / "data"), clock=clock)
    yield context
    context.engine.dispose()


@dataclass
class LiveServer:
    url: str
    ctx: Context

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def live_server(ctx: Context) -> Iterator[LiveServer]:
    """The real application under uvicorn on a loopback port."""
    import uvicorn

    from services.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(ctx),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    yield LiveServer(f"http://127.0.0.1:{port}", ctx)
    server.should_exit = True
    thread.join(timeout=10)


# --- no personal data in any log line of the whole suite -------------------------------------

# Personal values the tests' own rows carry (tests/helpers.py and the routing tests).
TEST_PERSONAL_VALUES = ("Jansen", "Kerkstraat", "0612345678", "1980-05-01", "01-09-2026", "2011AB")


class _EveryLogLine(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage() + " " + " ".join(map(str, record.__dict__.values()))
        except Exception:  # a record that cannot render is not a leak of ours
            return
        for value in TEST_PERSONAL_VALUES:
            if value in text:
                self.leaks.append(f"{record.name}: a test value appeared in a log line")


_LOG_SCAN = _EveryLogLine()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_LOG_SCAN)
    logging.getLogger().setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_LOG_SCAN)
    if _LOG_SCAN.leaks:
        print(
            "\nPersonal test values found in log output:", *sorted(set(_LOG_SCAN.leaks)), sep="\n"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands under test configure logging for the process; undo it after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers = handlers
    root.setLevel(level)
