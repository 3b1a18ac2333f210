"""``vroegsignaal sftp-watch``: ingest complete files from the partner folders (OpenSSH mode).

For deployments that prefer OpenSSH (``internal-sftp`` with a ``ChrootDirectory`` per partner, see
``deploy/sftp/``), this loop watches ``<root>/<partner id>/inbox/``. OpenSSH does not tell when an
upload is finished, so a file counts as complete when its name is final (not hidden, not ending in
``.part``) **and** it has not been written for ``VS_SFTP_SETTLE_SECONDS``: its modification time
is that old, or its size and modification time stayed the same over scans that far apart. One
pass (``--once``, from cron) judges by the modification time alone. Partners should upload as
``name.part`` and rename when done; then the file is complete at once (after the settle time).
The delivery window is judged by when the file was last written (:func:`inbox.written_at`), so a
file complete before the deadline is on time even if its scan comes after it.
Ingest, results, crash safety and the deletion of processed originals are those of
:mod:`services.sftp.inbox`: a file a stopped watcher had claimed is processed at the next scan, and
originals past ``VS_SFTP_KEEP_PROCESSED_DAYS`` are deleted at the first scan and hourly after.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
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
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ctx, self.root, self.settle = ctx, root, settle_seconds
        self.monotonic, self.wall = monotonic, wall
        # path -> (size, mtime_ns, first seen unchanged at)
        self._seen: dict[Path, tuple[int, int, float]] = {}
        self._expired_at: float | None = None

    def scan(self) -> list[inbox.Outcome]:
        """One pass: process every settled file; returns what was processed."""
        done: list[inbox.Outcome] = []
        now = self.monotonic()
        present: set[Path] = set()
        for partner_id, base in inbox.partner_folders(self.root):
            # Claimed by a watcher that stopped before it was done with them (each scan
            # finishes what it claims): processed again first, in the order claimed.
            for claimed in inbox.claimed_files(base):
                outcome = self._attempt(inbox.process_claimed, partner_id, claimed)
                if outcome is not None:
                    done.append(outcome)
            done.extend(inbox.refuse_bad_names(self.ctx, partner_id, base, settled=self._quiet))
            for path in inbox.pending_files(base):
                present.add(path)
                try:
                    stat = path.stat()
                except FileNotFoundError:  # renamed or removed by the partner since the listing
                    continue
                signature = (stat.st_size, stat.st_mtime_ns)
                previous = self._seen.get(path)
                if previous is None or previous[:2] != signature:
                    self._seen[path] = (*signature, now)
                    if not self._quiet(stat):  # written to just now
                        continue
                elif now - previous[2] < self.settle:
                    continue
                outcome = self._attempt(inbox.process_file, partner_id, path)
                if outcome is None:
                    continue
                done.append(outcome)
                self._seen.pop(path, None)
        for gone in set(self._seen) - present:
            self._seen.pop(gone, None)
        if self._expired_at is None or now - self._expired_at >= inbox.EXPIRE_EVERY_SECONDS:
            self._expired_at = now
            inbox.expire(self.ctx, self.root)
        return done

    def _quiet(self, stat: os.stat_result) -> bool:
        """Not written for the settle time, by the file's modification time."""
        return self.wall() - stat.st_mtime >= self.settle

    def _attempt(
        self, work: Callable[..., inbox.Outcome], partner_id: uuid.UUID, path: Path
    ) -> inbox.Outcome | None:
        try:
            return work(self.ctx, partner_id, path, received_at=inbox.written_at(self.ctx, path))
        except Exception as exc:
            log.error(
                "sftp ingest failed; the file is kept and tried again",
                extra={"partner_id": str(partner_id), "error": type(exc).__name__},
            )
            return None

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info("sftp-watch started", extra={"interval": interval, "settle": self.settle})
        while not stop.is_set():
            try:
                self.scan()
            except Exception as exc:  # a file gone mid-scan, a full disk: the next scan tries again
                log.error("sftp scan failed", extra={"error": type(exc).__name__})
            stop.wait(interval)
