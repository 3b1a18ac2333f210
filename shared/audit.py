"""The audit trail: append-only and tamper-evident (each event carries a hash of the one before).

An event says who (actor type and id, the credential's public key id, the role), what (``action``),
which object, when, the request id and the outcome; ``details`` holds counts and ids only, never
personal data. Events are chained: ``hash = SHA-256(prev_hash | canonical JSON of the event)``, so
changing, removing or reordering an event breaks the chain from that point, which
:func:`verify` reports.

Appending is serialised so the chain stays linear: on PostgreSQL with a transaction-level advisory
lock, on SQLite by the database's single writer (transactions begin IMMEDIATE). The event commits
or rolls back with the change it records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.auth import Principal
from shared.models import AuditEvent

GENESIS = "0" * 64
AUDIT_LOCK_KEY = 0x5653_4155_4449_5400  # "VSAUDIT" namespace for pg_advisory_xact_lock
SYSTEM = "system"


def _canonical(event: AuditEvent) -> str:
    return json.dumps(
        [
            event.id,
            event.at.isoformat(),
            event.actor_type,
            event.actor_id,
            event.credential,
            event.role,
            event.action,
            event.object_type,
            event.object_id,
            event.request_id,
            event.outcome,
            event.details,
        ],
        separators=(",", ":"),
        ensure_ascii=True,
    )


def event_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(f"{prev_hash}|{_canonical(event)}".encode()).hexdigest()


def record(
    session: Session,
    *,
    action: str,
    now: datetime,
    actor: Principal | None = None,
    object_type: str | None = None,
    object_id: object = None,
    outcome: str = "ok",
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
    system_actor: str = SYSTEM,
) -> AuditEvent:
    """Append one event in the caller's transaction (flushed, committed with the caller's work).

    The chain's lock lasts until the transaction ends, so an event needs one: a read-only
    request's session (autocommit on PostgreSQL, ``services.deps.ReadSession``) is refused.
    """
    if session.get_bind().dialect.name == "postgresql":
        connection = session.connection()
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            raise RuntimeError("an audit event is written in a transaction, not in autocommit")
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    last = session.execute(
        select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
    ).first()
    prev_hash = last.hash if last else GENESIS
    event = AuditEvent(
        id=(last.id + 1) if last else 1,
        at=now,
        actor_type=actor.actor_type if actor else SYSTEM,
        actor_id=actor.actor_id if actor else system_actor,
        credential=actor.key_id if actor else None,
        role=actor.role if actor else None,
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id is not None else None,
        request_id=request_id,
        outcome=outcome,
        details=json.dumps(details, sort_keys=True, default=str) if details else None,
        prev_hash=prev_hash,
        hash="",
    )
    event.hash = event_hash(prev_hash, event)
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class Break:
    """Where the chain breaks: the event id and what is wrong there."""

    event_id: int
    problem: str


def record_apart(sessions: sessionmaker[Session], **event: Any) -> None:
    """:func:`record` in a short transaction of its own, committed at once: for an event about
    work that does not commit (a refused login, a refused request, whose own transaction rolls
    back) or that has no transaction (the SFTP endpoint's sessions)."""
    from shared.db import unit_of_work

    with unit_of_work(sessions) as session:
        record(session, **event)


def _events(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > last_id)
                .order_by(AuditEvent.id)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


def verify(session: Session) -> tuple[int, Break | None]:
    """Walk the chain; returns (events checked, the first break or None)."""
    prev_hash, expected_id, count = GENESIS, 1, 0
    for event in _events(session):
        count += 1
        if event.id != expected_id:
            return count, Break(event.id, f"event {expected_id} is missing")
        if event.prev_hash != prev_hash:
            return count, Break(event.id, "does not follow the event before it (removed or moved)")
        if event_hash(prev_hash, event) != event.hash:
            return count, Break(event.id, "its content was changed")
        prev_hash, expected_id = event.hash, expected_id + 1
    return count, None
