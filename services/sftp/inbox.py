"""The partner folders of the SFTP drop and what happens to a complete file in an inbox.

Layout under the SFTP root (``VS_SFTP_ROOT``), one folder per partner, named by its id::

    <root>/<partner id>/inbox/       the partner writes here
    <root>/<partner id>/outbox/      <file name>.result.json: the outcome, as the API answers
    <root>/<partner id>/processed/   originals after ingest, prefixed with the time of processing

A complete file goes through exactly the ingest of ``POST /api/v1/deliveries``
(:func:`services.ingest.service.ingest_with_retry`): same formats, validation, deadline,
idempotency, replacement rule and atomicity. The period comes from the file name
(``..._YYYY-MM.csv``) or is the open period.

Claimed before it is read: the file is first moved out of the inbox to a hidden name in
``processed/`` (``.claimed-<time>_<name>``), where the partner cannot write, so that a new file
uploaded under the same name meanwhile waits in the inbox for its own turn instead of being
moved away unread, and a file still being written to by an OpenSSH session cannot grow past the
size limit into memory (at most the limit and one byte is read).

Crash safety, in this order: (1) the file is claimed, (2) the delivery commits (or is rejected),
(3) the result is written atomically to the outbox, (4) the claimed file takes its final name in
``processed/``. A crash between steps leaves the claimed file; the next start (or the next scan
of ``sftp-watch``) processes it again, which is harmless because the same content for the same
partner and period answers with the delivery already stored (no duplicate).

Originals hold personal data in the clear, so they are not kept: ``processed/`` files older than
``VS_SFTP_KEEP_PROCESSED_DAYS`` (7) are deleted (:func:`expire_processed`), and so are inbox files
that will never be ingested (an upload still named ``.part``, a hidden file) last written longer
ago than that (:func:`expire_unfinished`), by the SFTP endpoint every hour and by ``sftp-watch``
on its scans. A file under a name the drop does not take (OpenSSH lets any name through) is
refused once its upload is over (:func:`refuse_bad_names`): a result in the outbox, the file set
aside unread in ``processed/``. A claimed file whose ingest failed for a reason of ours (the
database down, a bug) is kept and processed again, never deleted unread.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from stat import S_ISREG
from typing import Any

from sqlalchemy.exc import DataError

from services.ingest.service import ingest_with_retry
from shared.context import Context
from shared.errors import AppError, PayloadTooLarge, ValidationFailed

log = logging.getLogger("vroegsignaal.sftp")

FOLDERS = ("inbox", "outbox", "processed")
PERIOD_IN_NAME = re.compile(r"_(\d{4}-(?:0[1-9]|1[0-2]))\.[A-Za-z0-9]+$")
# Names a partner may give a file: no path, no hidden files, printable, at most 200 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,199}")
PARTIAL_SUFFIX = ".part"
UPLOAD_PREFIX = ".upload-"  # in-flight uploads of the built-in server (hidden, never ingested)
CLAIM_PREFIX = ".claimed-"  # in processed/: a file taken from the inbox, not yet done with
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"  # the time of processing, in front of a processed file's name
# Processed originals past VS_SFTP_KEEP_PROCESSED_DAYS are looked for this often (and at start).
EXPIRE_EVERY_SECONDS = 3600


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


def process_file(
    ctx: Context, partner_id: uuid.UUID, path: Path, *, received_at: datetime | None = None
) -> Outcome:
    """Claim one complete inbox file and process it (:func:`process_claimed`).

    ``received_at``: when the upload was complete, where the caller knows it (the built-in
    endpoint, which saw the client close the file); the delivery window is judged by it, so a
    file complete before the deadline counts as on time even if its turn comes after. Else now.
    """
    return process_claimed(ctx, partner_id, claim(ctx, path), received_at=received_at)


def written_at(ctx: Context, path: Path) -> datetime:
    """When a file was last written (for a complete upload, when it was closed; a move keeps
    it), or now if that is earlier. Partners cannot set a file's times: the built-in endpoint
    accepts ``setstat`` without applying it, and the OpenSSH setup refuses it
    (``deploy/sftp/sshd_config.vroegsignaal``)."""
    return min(datetime.fromtimestamp(path.stat().st_mtime, UTC), ctx.now())


def claim(ctx: Context, path: Path) -> Path:
    """Move an inbox file to its hidden claimed name in ``processed/`` (see the module text)."""
    base = path.parent.parent
    for folder in ("outbox", "processed"):
        (base / folder).mkdir(exist_ok=True, mode=0o750)
    stamp = ctx.now().astimezone(UTC).strftime(STAMP_FORMAT)
    # Never over another file: the same name processed twice in one microsecond (or under a
    # clock that stands still) gets "-2", "-3", ... after its time.
    taken, n = stamp, 1
    while any(
        (base / "processed" / f"{prefix}{taken}_{path.name}").exists()
        for prefix in (CLAIM_PREFIX, "")
    ):
        n += 1
        taken = f"{stamp}-{n}"
    claimed = base / "processed" / f"{CLAIM_PREFIX}{taken}_{path.name}"
    os.replace(path, claimed)
    _fsync_dir(path.parent)
    _fsync_dir(claimed.parent)
    return claimed


def claimed_name(claimed: Path) -> tuple[str, str]:
    """(stamp, the file's own name) of a claimed file."""
    stamp, _, name = claimed.name.removeprefix(CLAIM_PREFIX).partition("_")
    return stamp, name


def process_claimed(
    ctx: Context, partner_id: uuid.UUID, claimed: Path, *, received_at: datetime | None = None
) -> Outcome:
    """Ingest a claimed file; write its result to the outbox; give it its processed name."""
    from services.ingest.endpoints import to_public

    base = claimed.parent.parent
    stamp, name = claimed_name(claimed)
    try:
        limit = ctx.settings.max_upload_bytes
        with claimed.open("rb") as handle:
            content = handle.read(limit + 1)
        if len(content) > limit:
            raise PayloadTooLarge(f"the file is larger than {limit} bytes")
        outcome = ingest_with_retry(
            ctx,
            partner_id=partner_id,
            content=content,
            filename=name,
            period=period_from_name(name),
            source="sftp",
            received_at=received_at,
        )
        delivery = to_public(outcome.delivery, outcome).model_dump(mode="json")
        result: dict[str, Any] = {
            "file": name,
            "status": "accepted",
            "created": outcome.created,
            "delivery": delivery,
        }
    except AppError as exc:
        result = _rejected(name, exc)
    except DataError:
        # The database refused a value of the file (as the API answers it: 422). Its message
        # quotes the value: not shown.
        result = _rejected(name, ValidationFailed(UNUSABLE_VALUE))
    _write_result(base, f"{name}.result.json", result)
    os.replace(claimed, base / "processed" / f"{stamp}_{name}")
    _fsync_dir(claimed.parent)
    log.info(
        "sftp file processed",
        extra={"partner_id": str(partner_id), "outcome": result["status"]},
    )
    return Outcome(name, result["status"], result)


UNUSABLE_VALUE = (
    "a value in the file cannot be used (for example a NUL character or a number out of range); "
    "nothing was stored"
)
BAD_NAME = (
    "the file name is not accepted (letters, digits, '.', '_', '-' and spaces, starting with a "
    "letter or digit, at most 200 characters); the file was not read: upload it again under "
    "such a name"
)


def _rejected(name: str, error: AppError) -> dict[str, Any]:
    return {"file": name, "status": "rejected", "problem": error.problem()}


def _write_result(base: Path, filename: str, result: dict[str, Any]) -> None:
    write_atomically(
        base / "outbox" / filename,
        json.dumps(result, indent=2, ensure_ascii=False, default=str).encode(),
    )


def refuse_bad_names(
    ctx: Context, partner_id: uuid.UUID, base: Path, *, settled: Callable[[os.stat_result], bool]
) -> list[Outcome]:
    """Refuse the inbox files whose names the drop does not take (not hidden, not ``.part``),
    once ``settled`` (their upload is over: a client may upload under a temporary name and
    rename): each is moved unread to ``processed/`` (deleted with the originals), then gets
    ``outbox/rejected-name-<time>-<n>.result.json`` naming it. The built-in endpoint refuses such
    names when they are opened; OpenSSH lets them through. A file gone meanwhile (renamed by
    the partner) is left alone."""
    folder = base / "inbox"
    if not folder.is_dir():
        return []
    refused = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or name.endswith(PARTIAL_SUFFIX) or is_safe_name(name):
            continue
        try:
            stat = path.lstat()
            if not S_ISREG(stat.st_mode) or not settled(stat):
                continue
            for outbound in ("outbox", "processed"):
                (base / outbound).mkdir(exist_ok=True, mode=0o750)
            stamp = f"{ctx.now().astimezone(UTC).strftime(STAMP_FORMAT)}-{uuid.uuid4().hex[:8]}"
            os.replace(path, base / "processed" / f"{stamp}_rejected-name")
        except FileNotFoundError:
            continue
        _fsync_dir(folder)
        # As the partner's client would show it: bytes that are no UTF-8 as \x escapes.
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        result = _rejected(shown, ValidationFailed(BAD_NAME))
        _write_result(base, f"rejected-name-{stamp}.result.json", result)
        log.warning("sftp file name refused", extra={"partner_id": str(partner_id)})
        refused.append(Outcome(shown, "rejected", result))
    return refused


def claimed_files(base: Path) -> list[Path]:
    """Files a stopped process had claimed and not finished with, in the order claimed."""
    processed = base / "processed"
    if not processed.is_dir():
        return []
    return sorted(
        p
        for p in processed.iterdir()
        if p.name.startswith(CLAIM_PREFIX) and p.is_file() and not p.is_symlink()
    )


def _files_in(root: Path, folder: str) -> Iterator[Path]:
    """The regular files (not links) in one folder of every partner."""
    for _, base in partner_folders(root):
        if (base / folder).is_dir():
            yield from (p for p in (base / folder).iterdir() if p.is_file() and not p.is_symlink())


def expire_processed(root: Path, now: datetime, keep_days: int) -> int:
    """Delete the processed originals of every partner older than ``keep_days`` (by the time of
    processing in their names; a name without one by the file's time). Returns how many."""
    cutoff = now - timedelta(days=keep_days)
    removed = 0
    for path in _files_in(root, "processed"):
        if not path.name.startswith(CLAIM_PREFIX) and _processed_at(path) < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def expire_unfinished(root: Path, now: datetime, keep_days: int) -> int:
    """Delete the inbox files of every partner that will never be ingested (an upload still
    named ``.part``, a hidden file: an upload of the built-in endpoint in flight, a client's
    temporary file) last written more than ``keep_days`` ago. Returns how many."""
    cutoff = (now - timedelta(days=keep_days)).timestamp()
    removed = 0
    for path in _files_in(root, "inbox"):
        if is_complete_name(path.name):
            continue
        try:
            written = path.stat().st_mtime
        except FileNotFoundError:  # renamed by the partner since the listing (its .part done)
            continue
        if written < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def expire(ctx: Context, root: Path) -> int:
    """:func:`expire_processed` and :func:`expire_unfinished` by the settings
    (``VS_SFTP_KEEP_PROCESSED_DAYS``), logged."""
    keep, now = ctx.settings.sftp_keep_processed_days, ctx.now()
    removed = expire_processed(root, now, keep)
    if removed:
        log.info("sftp originals deleted", extra={"count": removed, "keep_days": keep})
    unfinished = expire_unfinished(root, now, keep)
    if unfinished:
        log.info("sftp unfinished uploads deleted", extra={"count": unfinished, "keep_days": keep})
    return removed + unfinished


def _processed_at(path: Path) -> datetime:
    try:
        stamp = path.name.partition("_")[0].partition("-")[0]
        return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)


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
