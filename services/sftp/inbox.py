"""The partner folders of the SFTP drop and what happens to a complete file in an inbox.

Layout under the SFTP root (``VS_SFTP_ROOT``), one folder per partner, named by its id::

    <root>/<partner id>/inbox/       the partner writes here
    <root>/<partner id>/outbox/      <file name>.result.json: the outcome, as the API answers
    <root>/<partner id>/processed/   originals after ingest, prefixed with the time of processing

A complete file goes through exactly the ingest of ``POST /api/v1/deliveries``
(:func:`services.ingest.service.ingest_with_retry`): same formats, validation, deadline,
idempotency, replacement rule and atomicity. The period comes from the file name
(``..._YYYY-MM.csv``) or is the open period.

Crash safety, in this order: (1) the delivery commits (or is rejected), (2) the result is written
atomically to the outbox, (3) the original moves to ``processed/``. A crash between steps leaves
the file in the inbox; processing it again after a restart is safe because the same content for
the same partner and period answers with the delivery already stored (no duplicate).
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.ingest.service import ingest_with_retry
from shared.context import Context
from shared.errors import AppError, PayloadTooLarge

log = logging.getLogger("vroegsignaal.sftp")

FOLDERS = ("inbox", "outbox", "processed")
PERIOD_IN_NAME = re.compile(r"_(\d{4}-(?:0[1-9]|1[0-2]))\.[A-Za-z0-9]+$")
# Names a partner may give a file: no path, no hidden files, printable, at most 200 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,199}")
PARTIAL_SUFFIX = ".part"
UPLOAD_PREFIX = ".upload-"  # in-flight uploads of the built-in server (hidden, never ingested)


def is_safe_name(name: str) -> bool:
    return bool(SAFE_NAME.fullmatch(name)) and name not in (".", "..")


def is_complete_name(name: str) -> bool:
    """A name that is ingested (not hidden, not an in-progress ``.part`` upload)."""
    return is_safe_name(name) and not name.endswith(PARTIAL_SUFFIX)


def partner_root(root: Path, partner_id: uuid.UUID | str) -> Path:
    return root / str(partner_id)


def ensure_partner_folders(root: Path, partner_id: uuid.UUID | str) -> Path:
    base = partner_root(root, partner_id)
    for folder in FOLDERS:
        (base / folder).mkdir(parents=True, exist_ok=True, mode=0o750)
    return base


def period_from_name(name: str) -> str | None:
    match = PERIOD_IN_NAME.search(name)
    return match.group(1) if match else None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # accepted, rejected
    result: dict[str, Any]


def process_file(ctx: Context, partner_id: uuid.UUID, path: Path) -> Outcome:
    """Ingest one complete inbox file; write its result to the outbox; move it to processed/."""
    from services.ingest.endpoints import to_public

    base = path.parent.parent
    for folder in ("outbox", "processed"):
        (base / folder).mkdir(exist_ok=True, mode=0o750)
    name = path.name
    try:
        if path.stat().st_size > ctx.settings.max_upload_bytes:
            raise PayloadTooLarge(f"the file is larger than {ctx.settings.max_upload_bytes} bytes")
        outcome = ingest_with_retry(
            ctx,
            partner_id=partner_id,
            content=path.read_bytes(),
            filename=name,
            period=period_from_name(name),
            source="sftp",
        )
        delivery = to_public(outcome.delivery, outcome).model_dump(mode="json")
        result: dict[str, Any] = {
            "file": name,
            "status": "accepted",
            "created": outcome.created,
            "delivery": delivery,
        }
    except AppError as exc:
        result = {"file": name, "status": "rejected", "problem": exc.problem()}
    write_atomically(
        base / "outbox" / f"{name}.result.json",
        json.dumps(result, indent=2, ensure_ascii=False, default=str).encode(),
    )
    stamp = ctx.now().strftime("%Y%m%dT%H%M%S%fZ")
    os.replace(path, base / "processed" / f"{stamp}_{name}")
    _fsync_dir(base / "inbox")
    log.info(
        "sftp file processed",
        extra={"partner_id": str(partner_id), "outcome": result["status"]},
    )
    return Outcome(name, result["status"], result)


def pending_files(base: Path) -> list[Path]:
    """Complete files waiting in a partner's inbox, oldest first."""
    inbox = base / "inbox"
    if not inbox.is_dir():
        return []
    files = [
        p
        for p in inbox.iterdir()
        if p.is_file() and not p.is_symlink() and is_complete_name(p.name)
    ]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def partner_folders(root: Path) -> Iterator[tuple[uuid.UUID, Path]]:
    """(partner id, folder) for every partner folder under the root."""
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        try:
            partner_id = uuid.UUID(entry.name)
        except ValueError:
            continue
        if entry.is_dir() and not entry.is_symlink():
            yield partner_id, entry


def clean_abandoned_uploads(base: Path) -> int:
    """Remove in-flight uploads a stopped server left behind (they were never complete)."""
    removed = 0
    inbox = base / "inbox"
    if inbox.is_dir():
        for p in inbox.iterdir():
            if p.name.startswith(UPLOAD_PREFIX):
                p.unlink(missing_ok=True)
                removed += 1
    return removed
