"""The SFTP drop: an asyncssh server where partners deliver files instead of calling the API.

* **Login** with an SSH public key registered to the partner (``partners add-ssh-key``); the key
  decides who the partner is (the user name is not used). No passwords, no keyboard-interactive,
  no shell or command execution, no port, agent or X11 forwarding, no SCP: only the SFTP subsystem.
* **Each partner sees only its own folder** (``inbox/``, ``outbox/``, ``processed/``) as ``/``. A
  path with ``..`` is refused, an absolute path is read inside the partner's folder, and links
  cannot be made or read. Only what a drop needs is allowed: list and stat; write, rename and
  remove in ``inbox/``; read and remove in ``outbox/``; read in ``processed/``.
* **A file is ingested once it is complete**: when the client closes it, or when a ``name.part``
  upload is renamed to its final name. While it is being written it lives under a hidden name, so
  a stopped server never leaves a half file that looks complete; those remnants are removed at
  start. A session that ends with a file still open (the connection lost, the client gone) closes
  it without the client asking: that file is incomplete as far as anyone knows, so it is removed,
  not ingested. An upload may not grow past ``VS_MAX_UPLOAD_BYTES``. Complete files still waiting
  at start (a crash between upload and ingest) are queued then, before the server accepts
  connections, files claimed but not finished first.
* Ingest runs in one worker thread, in arrival order, through :mod:`services.sftp.inbox` (the same
  code as the API). The partner finds ``outbox/<file name>.result.json``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh import FXF_APPEND, FXF_READ, FXF_WRITE

from services.ratelimit import TokenBuckets, limiter_clock
from services.sftp import inbox
from services.sftp.keys import partner_for_key, record_key_use
from shared import audit
from shared.auth import Principal
from shared.context import Context
from shared.db import unit_of_work

log = logging.getLogger("vroegsignaal.sftp")

WRITE_FOLDERS = ("inbox",)
READ_FOLDERS = ("outbox", "processed")
REMOVE_FOLDERS = ("inbox", "outbox")
# A refused login's audit details: fixed words only (an API refusal names its route the same way).
REFUSED_KEY = {"route": "sftp", "credential": "ssh_key", "reason": "not_registered"}


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key: generated once (ed25519, mode 0600) and kept."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key())
    os.replace(temp, path)
    return key


class Processor:
    """Ingests complete files one at a time, in arrival order, off the event loop."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sftp-ingest")
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def submit(self, partner_id: uuid.UUID, path: Path) -> concurrent.futures.Future[Any]:
        """Queue a complete inbox file."""
        return self._queue(self._process, partner_id, path)

    def _queue(self, work: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future = self._pool.submit(work, *args)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def _process(self, partner_id: uuid.UUID, path: Path) -> inbox.Outcome | None:
        try:
            claimed = inbox.claim(self.ctx, path)
        except FileNotFoundError:
            # Processed already, under a job queued for the same name when a newer upload
            # replaced the file before its turn (the newer one was ingested).
            return None
        except OSError as exc:  # left in the inbox; a restart queues it again
            log.error(
                "sftp file could not be claimed; it stays in the inbox",
                extra={"partner_id": str(partner_id), "error": type(exc).__name__},
            )
            return None
        return self._process_claimed(partner_id, claimed)

    def _process_claimed(self, partner_id: uuid.UUID, claimed: Path) -> inbox.Outcome | None:
        """Ingest a claimed file, its window judged by when it was complete (its time)."""
        try:
            received_at = inbox.written_at(self.ctx, claimed)
            return inbox.process_claimed(self.ctx, partner_id, claimed, received_at=received_at)
        except Exception as exc:  # keep the claimed file; a restart processes it again
            log.error(
                "sftp ingest failed; the file is kept and processed again at the next start",
                extra={"partner_id": str(partner_id), "error": type(exc).__name__},
            )
            return None

    def recover(self, root: Path) -> int:
        """At start: drop abandoned uploads, queue files claimed but not finished, then the
        complete files left in the inboxes (judged by their time: the server sets it, not the
        partner). Returns how many were queued."""
        queued = 0
        for partner_id, base in inbox.partner_folders(root):
            inbox.clean_abandoned_uploads(base)
            for claimed in inbox.claimed_files(base):
                self._queue(self._process_claimed, partner_id, claimed)
                queued += 1
            for path in inbox.pending_files(base):
                self.submit(partner_id, path)
                queued += 1
        return queued

    def expire(self, root: Path) -> None:
        """Delete processed originals past ``VS_SFTP_KEEP_PROCESSED_DAYS``, in the worker thread
        (never while one is being read)."""
        self._queue(inbox.expire, self.ctx, root)

    def drain(self, timeout: float = 60) -> None:
        concurrent.futures.wait(list(self._pending), timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _Upload:
    """A file being written: a hidden temporary name, renamed to ``final`` when closed."""

    def __init__(self, handle: Any, temp: Path, final: Path) -> None:
        self.handle, self.temp, self.final = handle, temp, final


def _closed_at_the_clients_request() -> bool:
    """Whether :meth:`PartnerSFTPServer.close` runs for the client's close request, not for the
    end of its session. asyncssh calls ``close`` for both and says which only by where it calls
    from: its handler's ``_process_close`` or its ``_cleanup`` (asyncssh 2.x; the version is
    locked, and ``tests/sftp`` closes uploads both ways: a change here discards every upload,
    loudly, rather than ingest a part of one). Not the channel's state: a client that ends only
    its SFTP session leaves the channel open while the session's files are closed."""
    handler = sys._getframe(2)  # close() <- the handler's method
    return handler.f_code.co_name == "_process_close"


class PartnerSFTPServer(asyncssh.SFTPServer):
    """One partner's SFTP session, confined to its own folder."""

    def __init__(
        self, chan: asyncssh.SSHServerChannel[bytes], *, root: Path, processor: Processor
    ) -> None:
        principal = chan.get_extra_info("principal")
        if not isinstance(principal, Principal) or principal.partner_id is None:
            raise asyncssh.SFTPPermissionDenied("not logged in as a partner")
        self.principal = principal
        self.partner_id = partner_id = principal.partner_id
        self.base = inbox.ensure_partner_folders(root, partner_id)
        self.processor = processor
        super().__init__(chan, chroot=str(self.base).encode())

    # --- paths ------------------------------------------------------------------------------

    def _virtual(self, path: bytes) -> tuple[str, ...]:
        """The path as parts below the partner's root; ``..`` is refused outright."""
        text = path.decode("utf-8", errors="strict")
        parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise asyncssh.SFTPPermissionDenied("paths with '..' are not allowed")
        if parts and parts[0] not in inbox.FOLDERS:
            raise asyncssh.SFTPNoSuchFile("no such file or folder")
        if len(parts) > 2:
            raise asyncssh.SFTPNoSuchFile("no such file or folder")
        return tuple(parts)

    def map_path(self, path: bytes) -> bytes:
        parts = self._virtual(path)
        return super().map_path(("/" + "/".join(parts)).encode())

    def _file_in(self, path: bytes, folders: tuple[str, ...], action: str) -> tuple[str, str]:
        parts = self._virtual(path)
        if len(parts) != 2 or parts[0] not in folders:
            raise asyncssh.SFTPPermissionDenied(f"{action} is allowed only in {', '.join(folders)}")
        folder, name = parts
        if not inbox.is_safe_name(name):
            raise asyncssh.SFTPPermissionDenied(
                "file names are letters, digits, '.', '_', '-' and spaces, not starting with '.'"
            )
        return folder, name

    # --- files ------------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if pflags & (FXF_WRITE | FXF_APPEND):
            if pflags & FXF_READ:
                raise asyncssh.SFTPPermissionDenied("open files for reading or writing, not both")
            folder, name = self._file_in(path, WRITE_FOLDERS, "writing")
            final = self.base / folder / name
            temp = final.with_name(f"{inbox.UPLOAD_PREFIX}{uuid.uuid4().hex}-{name}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            return _Upload(os.fdopen(fd, "wb", buffering=0), temp, final)
        folder, name = self._file_in(path, READ_FOLDERS, "reading")
        local = self.base / folder / name
        if local.is_symlink() or not local.is_file():
            raise asyncssh.SFTPNoSuchFile("no such file")
        if folder == "processed":
            await self._audit_download(local)
        return local.open("rb", buffering=0)

    async def _audit_download(self, local: Path) -> None:
        """A processed original holds personal data in the clear: its download is audited
        (``sftp.download``) before it is given, or refused if it cannot be."""
        ctx = self.processor.ctx

        def record() -> None:
            audit.record_apart(
                ctx.sessions,
                action="sftp.download",
                now=ctx.now(),
                actor=self.principal,
                object_type="sftp_file",
                object_id=local.name.partition("_")[0],  # its time of processing
                details={"bytes": local.stat().st_size},
            )

        try:
            await asyncio.get_running_loop().run_in_executor(None, record)
        except Exception as exc:
            log.error("sftp download not audited", extra={"error": type(exc).__name__})
            raise asyncssh.SFTPFailure("the file cannot be read at the moment; try again") from None

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, _Upload):
            raise asyncssh.SFTPPermissionDenied("the file is open for writing")
        return super().read(file_obj, offset, size)  # type: ignore[return-value]

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, _Upload):
            raise asyncssh.SFTPPermissionDenied("the file is open for reading")
        limit = self.processor.ctx.settings.max_upload_bytes
        if offset + len(data) > limit:
            raise asyncssh.SFTPFailure(f"a file may hold at most {limit} bytes")
        file_obj.handle.seek(offset)
        return int(file_obj.handle.write(data))

    def fstat(self, file_obj: object) -> Any:
        handle = file_obj.handle if isinstance(file_obj, _Upload) else file_obj
        return super().fstat(handle)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        return None  # times and modes are the server's business; accepted, not applied

    def close(self, file_obj: object) -> None:
        """A file closed: by the client's request, or by the session ending with it still open
        (the connection lost or closed, the client's SFTP session ended). An upload becomes a
        file in the inbox only in the first case: otherwise what was written may be any part of
        the file."""
        if not isinstance(file_obj, _Upload):
            super().close(file_obj)
            return
        if not _closed_at_the_clients_request():
            file_obj.handle.close()
            file_obj.temp.unlink(missing_ok=True)
            log.warning(
                "sftp upload abandoned: the session ended before the file was closed",
                extra={"partner_id": str(self.partner_id)},
            )
            return
        file_obj.handle.flush()
        os.fsync(file_obj.handle.fileno())
        file_obj.handle.close()
        os.replace(file_obj.temp, file_obj.final)
        self._completed(file_obj.final)

    def _completed(self, path: Path) -> None:
        if inbox.is_complete_name(path.name):
            self.processor.submit(self.partner_id, path)

    # --- names ------------------------------------------------------------------------------

    def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        _, old = self._file_in(oldpath, WRITE_FOLDERS, "renaming")
        _, new = self._file_in(newpath, WRITE_FOLDERS, "renaming")
        source, target = self.base / "inbox" / old, self.base / "inbox" / new
        if not source.is_file() or source.is_symlink():
            raise asyncssh.SFTPNoSuchFile("no such file")
        if target.exists() and not replace:
            raise asyncssh.SFTPFailure("a file with that name is waiting already")
        os.replace(source, target)
        self._completed(target)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=False)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=True)

    def remove(self, path: bytes) -> None:
        folder, name = self._file_in(path, REMOVE_FOLDERS, "removing")
        local = self.base / folder / name
        if not local.is_file() or local.is_symlink():
            raise asyncssh.SFTPNoSuchFile("no such file")
        local.unlink()

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        """The folder's entries, without hidden files (in-flight uploads) or anything foreign."""
        parts = self._virtual(path)
        local = Path(self.map_path(path).decode())
        if not local.is_dir():
            raise asyncssh.SFTPNoSuchFile("no such folder")
        here = asyncssh.SFTPAttrs.from_local(local.stat())
        yield asyncssh.SFTPName(b".", attrs=here)
        yield asyncssh.SFTPName(b"..", attrs=here)
        for entry in sorted(os.scandir(local), key=lambda e: e.name):
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            if not parts and entry.name not in inbox.FOLDERS:
                continue
            attrs = asyncssh.SFTPAttrs.from_local(entry.stat(follow_symlinks=False))
            yield asyncssh.SFTPName(entry.name.encode(), attrs=attrs)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._virtual(path)
        return None

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._virtual(path)
        return None

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPPermissionDenied("folders cannot be made")

    def rmdir(self, path: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("folders cannot be removed")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links are not allowed")

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("links are not allowed")


class PartnerSSHServer(asyncssh.SSHServer):
    """Authentication: a registered, unrevoked public key of an active partner; nothing else."""

    def __init__(self, ctx: Context, failures: TokenBuckets) -> None:
        self.ctx, self.failures = ctx, failures
        self._conn: asyncssh.SSHServerConnection | None = None
        self._fingerprint: str | None = None
        self._peer = "unknown"
        self._refused = self._logged_in = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self._peer = str(peer[0])

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        if self.failures.waiting(self._peer) is not None:
            # Over VS_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE failed logins from this address, as the
            # API counts failed keys: every key is refused, unlooked-at, until the limit refills.
            log.info("sftp login refused", extra={"reason": "too many failed logins"})
            self._refused = True
            return False

        def lookup() -> Principal | None:
            with unit_of_work(self.ctx.sessions) as session:
                return partner_for_key(session, fingerprint)

        principal = await asyncio.get_running_loop().run_in_executor(None, lookup)
        if principal is None or self._conn is None:
            log.info("sftp login refused", extra={"reason": "unknown or revoked key"})
            self._refused = True
            return False
        self._conn.set_extra_info(partner_id=principal.partner_id, principal=principal)
        self._fingerprint = fingerprint
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """A connection that offered only keys that were refused, and never logged in: one
        failed login, counted against the client's address, and one ``auth.failed`` event (a
        client offers its keys in turn; one that logs in with a later key has not failed), while
        the address is within its limit: beyond it nothing more is written. Nothing of the keys
        is recorded, nor the client's address."""
        if not self._refused or self._logged_in:
            return
        if self.failures.take(self._peer) is not None:
            return

        def record() -> None:
            try:
                audit.record_apart(
                    self.ctx.sessions,
                    action="auth.failed",
                    now=self.ctx.now(),
                    outcome="denied",
                    details=REFUSED_KEY,
                    system_actor="unauthenticated",
                )
            except Exception as failure:
                log.error("sftp refusal not audited", extra={"error": type(failure).__name__})

        asyncio.get_running_loop().run_in_executor(None, record)

    async def auth_completed(self) -> None:
        """The client proved it holds the key (asked about a key, it only learnt it would do):
        the login, and the key's last use."""
        fingerprint = self._fingerprint
        if fingerprint is None or self._conn is None:
            return
        self._logged_in = True
        partner_id = self._conn.get_extra_info("partner_id")
        log.info("sftp login", extra={"partner_id": str(partner_id)})

        def record() -> None:
            with unit_of_work(self.ctx.sessions) as session:
                record_key_use(session, fingerprint, self.ctx.now())

        try:
            await asyncio.get_running_loop().run_in_executor(None, record)
        except Exception as exc:  # the login stands; only its record is missing
            log.warning("sftp key use not recorded", extra={"error": type(exc).__name__})


async def start_server(
    ctx: Context, *, host: str, port: int, processor: Processor
) -> asyncssh.SSHAcceptor:
    """Recover what a previous run left, then listen. Returns the acceptor (``.close()`` it)."""
    root = ctx.settings.resolved_sftp_root
    root.mkdir(parents=True, exist_ok=True)
    queued = await asyncio.get_running_loop().run_in_executor(None, processor.recover, root)
    if queued:
        log.info("sftp files from before the restart queued", extra={"count": queued})
    processor.expire(root)
    host_key = load_or_create_host_key(ctx.settings.resolved_sftp_host_key_file)

    def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> PartnerSFTPServer:
        return PartnerSFTPServer(chan, root=root, processor=processor)

    failures = TokenBuckets(ctx.settings.rate_limit_auth_failures_per_minute, limiter_clock(ctx))
    server_factory: Callable[[], PartnerSSHServer] = lambda: PartnerSSHServer(  # noqa: E731
        ctx, failures
    )
    return await asyncssh.listen(
        host,
        port,
        server_host_keys=[host_key],
        server_factory=server_factory,
        sftp_factory=sftp_factory,
        allow_scp=False,
        server_version="vroegsignaal",  # do not advertise the library and its version
        agent_forwarding=False,
        x11_forwarding=False,
        allow_pty=False,
        keepalive_interval=60,
    )


def serve_forever(ctx: Context, host: str, port: int) -> None:
    """Run the SFTP endpoint until interrupted (SIGINT / SIGTERM)."""
    processor = Processor(ctx)

    async def expire_hourly() -> None:
        while True:
            await asyncio.sleep(inbox.EXPIRE_EVERY_SECONDS)
            processor.expire(ctx.settings.resolved_sftp_root)

    async def main() -> None:
        acceptor = await start_server(ctx, host=host, port=port, processor=processor)
        log.info("sftp listening", extra={"host": host, "port": port})
        expiry = asyncio.create_task(expire_hourly())
        try:
            await acceptor.wait_closed()
        finally:
            expiry.cancel()
            acceptor.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        processor.close()
