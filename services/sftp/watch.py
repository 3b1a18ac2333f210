"""``vroegsignaal sftp-watch``: ingest complete files from the partner folders (OpenSSH mode).

For deployments that prefer OpenSSH (``internal-sftp`` with a ``ChrootDirectory`` per partner, see
``deploy/sftp/``), this loop watches ``<root>/<partner id>/inbox/``. OpenSSH does not tell when an
upload is finished, so a file counts as complete when its name is final (not hidden, not ending in
``.part``) **and** its size and modification time have not changed for ``VS_SFTP_SETTLE_SECONDS``.
Partners should upload as ``name.part`` and rename when done; then the file is complete at once.
Ingest, results and crash safety are those of :mod:`services.sftp.inbox`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from services.sftp import inbox
from shared.context import Context

log = logging.getLogger("vroegsignaal.sftp")


class Watcher:
    def __init__(
        self,
        ctx: Context,
        root: Path,
        *,
        settle_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx, self.root, self.settle = ctx, root, settle_seconds
        self.monotonic = monotonic
        # path -> (size, mtime_ns, first seen unchanged at)
        self._seen: dict[Path, tuple[int, int, float]] = {}

    def scan(self) -> list[inbox.Outcome]:
        """One pass: process every settled file; returns what was processed."""
        done: list[inbox.Outcome] = []
        now = self.monotonic()
        present: set[Path] = set()
        for partner_id, base in inbox.partner_folders(self.root):
            for path in inbox.pending_files(base):
                present.add(path)
                stat = path.stat()
                signature = (stat.st_size, stat.st_mtime_ns)
                previous = self._seen.get(path)
                if previous is None or previous[:2] != signature:
                    self._seen[path] = (*signature, now)
                    if self.settle > 0:
                        continue
                elif now - previous[2] < self.settle:
                    continue
                try:
                    done.append(inbox.process_file(self.ctx, partner_id, path))
                except Exception as exc:
                    log.exception(
                        "sftp ingest failed; the file stays in the inbox",
                        extra={"partner_id": str(partner_id), "error": type(exc).__name__},
                    )
                    continue
                self._seen.pop(path, None)
        for gone in set(self._seen) - present:
            self._seen.pop(gone, None)
        return done

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info("sftp-watch started", extra={"interval": interval, "settle": self.settle})
        while not stop.is_set():
            self.scan()
            stop.wait(interval)
