"""What a process needs to do its work: settings, database, keys and a clock.

The API, the CLI and the workers each build one :class:`Context`; tests build one with a fixed
clock, so that deadlines and retention can be tested at any moment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import KeyedHasher, PiiCipher
from shared.db import make_engine, make_read_sessionmaker, make_sessionmaker, utcnow
from shared.settings import Settings, get_settings


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # For requests that only read (shared.db.make_read_sessionmaker).
    read_sessions: sessionmaker[Session]
    cipher: PiiCipher
    hasher: KeyedHasher
    clock: Callable[[], datetime] = field(default=utcnow)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def now(self) -> datetime:
        return self.clock()


def build_context(
    settings: Settings | None = None, clock: Callable[[], datetime] | None = None
) -> Context:
    """A context from settings (default: the environment)."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = (
        make_engine(url)
        if url.startswith("sqlite")
        else make_engine(
            url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
    )
    return Context(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        read_sessions=make_read_sessionmaker(engine),
        cipher=PiiCipher(settings.encryption_keyring()),
        hasher=KeyedHasher(settings.address_key()),
        clock=clock or utcnow,
    )
