"""A private, throw-away PostgreSQL cluster for tests that must stop or restart the server.

The shared test server (``VS_TEST_DATABASE_URL``) is used by other tests at the same time and is
never stopped; a test that needs an outage starts its own cluster with :func:`private_cluster`::

    with private_cluster() as cluster:
        engine = sa.create_engine(cluster.url())
        cluster.restart(pause=1.5)

The cluster lives in a temporary directory, listens on a free loopback port (and a Unix socket in
that directory), trusts local connections as ``postgres``, and is stopped and removed on exit,
also when the test fails. ``initdb`` refuses to run as root: as root, the binaries run as the
``postgres`` OS user (``runuser``, else ``su``).

Binaries: ``VS_TEST_PG_BIN`` if set, else ``/usr/lib/postgresql/<version>/bin`` (15 preferred),
else the directory of ``pg_ctl`` on ``PATH``. :func:`require_binaries` fails the test under
``CI=true`` when there are none, and skips it otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port

BIN_ENV = "VS_TEST_PG_BIN"
PREFERRED_VERSION = "15"
OS_USER = "postgres"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        versions = sorted(
            (p for p in base.iterdir() if p.name.isdigit()),
            key=lambda p: (p.name != PREFERRED_VERSION, -int(p.name)),
        )
        candidates += [p / "bin" for p in versions]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as a user initdb accepts: as is, or as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", OS_USER, "--", *command]
    return ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(command)]


def require_binaries() -> Path:
    """The binaries' directory; otherwise fail (under CI) or skip (elsewhere), with the reason."""
    reason = None
    found = find_binaries()
    if found is None:
        reason = f"no PostgreSQL server binaries (initdb, pg_ctl) found; set {BIN_ENV}"
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            reason = f"running as root and there is no '{OS_USER}' OS user to run initdb as"
    if reason is None:
        assert found is not None
        return found
    if _in_ci():
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@dataclass
class PgCluster:
    bin_dir: Path
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = _as_server_user([str(self.bin_dir / args[0]), *args[1:]])
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n"
                f"server log: {self.server_log()[-2000:]}"
            )

    def server_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.root}",
                "-c max_connections=60",
                "-c fsync=off",  # a throw-away cluster: no need to wait for the disk
                "-c full_page_writes=off",
            ]
        )
        self._run(
            "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data_dir),
            "-l", str(self.log_file), "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", mode, "-D", str(self.data_dir))

    def restart(self, pause: float = 1.5) -> None:
        """Stop (fast: open sessions are ended), stay down for ``pause`` seconds, start again."""
        self.stop("fast")
        time.sleep(pause)
        self.start()

    def is_running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()


@contextlib.contextmanager
def private_cluster(bin_dir: Path | None = None) -> Iterator[PgCluster]:
    """A fresh cluster, running; stopped and deleted on exit, whatever happened."""
    bin_dir = bin_dir or require_binaries()
    root = Path(tempfile.mkdtemp(prefix="vs-pg-"))
    cluster = PgCluster(bin_dir=bin_dir, root=root, port=free_port())
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(OS_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
        root.chmod(0o700)
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.is_running():
                cluster.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)
