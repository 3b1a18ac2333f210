"""Encryption key rotation without downtime (``vroegsignaal keys``).

The keyring (``VS_ENCRYPTION_KEYS``) is a list of ``id:key`` entries; the first one encrypts new
data, all of them decrypt. To rotate:

1. ``vroegsignaal keys new`` prints a fresh entry; put it **first** in the keyring and restart the
   services (new data is now written with it; old data still opens with the old key);
2. ``vroegsignaal keys rotate`` re-encrypts every envelope under an older key, in batches of its
   own transaction each, while the service keeps running;
3. ``vroegsignaal keys status`` shows how many envelopes each key still holds: at 0, remove the
   old entry from the keyring.

The address hash key (``VS_ADDRESS_HASH_KEY``) is separate: rotating it means re-hashing every
address and person key, which needs the plaintext (decrypt each envelope, rebuild the keys, hash
with the new key) and the SDV register uploaded again; it is a planned maintenance step, see the
README.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute

from services.routing.service import contact_note_aad, transfer_reason_aad
from shared.context import Context
from shared.crypto import signal_aad
from shared.db import unit_of_work
from shared.models import CaseEvent, ContactAttempt, Signal


def new_key_entry(key_id: str) -> str:
    if not key_id.isalnum() or len(key_id) > 16:
        raise ValueError("a key id is 1-16 letters and digits")
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"


@dataclass(frozen=True)
class _Envelopes:
    """Where envelopes live: the table's model, its data and key id columns, and the AAD."""

    name: str
    model: Any
    data: InstrumentedAttribute[Any]
    key_id: InstrumentedAttribute[Any]
    aad: Callable[[Any], bytes]


ENVELOPES = (
    _Envelopes(
        "signals",
        Signal,
        Signal.pii,
        Signal.pii_key_id,
        lambda s: signal_aad(str(s.delivery_id), s.row_number),
    ),
    _Envelopes(
        "contact_notes",
        ContactAttempt,
        ContactAttempt.notitie,
        ContactAttempt.notitie_key_id,
        lambda a: contact_note_aad(a.id),
    ),
    _Envelopes(
        "transfer_reasons",
        CaseEvent,
        CaseEvent.reason,
        CaseEvent.reason_key_id,
        lambda e: transfer_reason_aad(e.case_id, e.at),
    ),
)


def key_usage(ctx: Context) -> dict[str, dict[str, int]]:
    """Per place, how many envelopes each key id holds."""
    usage: dict[str, dict[str, int]] = {}
    with ctx.sessions() as session:
        for place in ENVELOPES:
            rows = session.execute(
                select(place.key_id, func.count())
                .where(place.data.is_not(None))
                .group_by(place.key_id)
            ).all()
            usage[place.name] = {str(k): int(n) for k, n in rows}
    return usage


def rotate(
    ctx: Context, *, batch: int = 1000, progress: Callable[[str], None] = lambda _: None
) -> dict[str, int]:
    """Re-encrypt every envelope not under the active key; returns how many per place."""
    active = ctx.cipher.active_key_id
    done: dict[str, int] = {}
    for place in ENVELOPES:
        count = 0
        while True:
            with unit_of_work(ctx.sessions) as session:
                rows = list(
                    session.scalars(
                        select(place.model)
                        .where(place.data.is_not(None), place.key_id != active)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                for row in rows:
                    aad = place.aad(row)
                    plain = ctx.cipher.decrypt(
                        getattr(row, place.data.key), aad, getattr(row, place.key_id.key)
                    )
                    setattr(row, place.data.key, ctx.cipher.encrypt(plain, aad))
                    setattr(row, place.key_id.key, active)
            count += len(rows)
            if len(rows) < batch:
                break
            progress(f"{place.name}: {count} re-encrypted")
        done[place.name] = count
    return done
