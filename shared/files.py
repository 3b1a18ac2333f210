"""Files the service writes for people: exports with personal data, written so that nothing half
done is ever read and no one but the owner can read them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def private_file(out: Path) -> Iterator[BinaryIO]:
    """A file to write ``out`` through, readable by its owner only (mode 0600), put in place
    atomically when the block ends without an error.

    A temporary file in the same folder is written, flushed to disk and renamed over ``out``, so
    a reader sees the old file or the new one, never half of it; on an error it is removed and
    ``out`` is as it was.
    """
    directory = out.parent
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{out.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable; not every file system lets a directory be fsynced.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
