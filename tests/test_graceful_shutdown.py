"""SIGTERM during an upload: the upload finishes and is stored, then the server exits."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa

from shared.context import Context
from shared.models import Delivery
from tests.helpers import csv_file, free_port, register, row, server_env

BOUNDARY = "vroegsignaal-test-boundary"


def _slow_multipart(content: bytes, started: threading.Event) -> Iterator[bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    yield head
    started.set()
    for start in range(0, len(content), max(1, len(content) // 4)):
        time.sleep(0.4)  # the upload is still arriving when SIGTERM comes
        yield content[start : start + max(1, len(content) // 4)]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_sigterm_lets_the_upload_in_flight_finish(
    ctx: Context, database_url: str, tmp_path: Path
) -> None:
    key = register(ctx, "Huur BV", "huur")
    env = server_env(ctx, database_url, tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from services.cli import main; main()",
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        started = threading.Event()
        result: dict[str, int] = {}

        def upload() -> None:
            content = csv_file(*(row(f"R{i}", nummer=str(i + 1)) for i in range(200)))
            response = httpx.post(
                f"{base}/api/v1/deliveries",
                content=_slow_multipart(content, started),
                headers={
                    "Authorization": f"Bearer {key}",
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                },
                timeout=30,
            )
            result["status"] = response.status_code

        thread = threading.Thread(target=upload)
        thread.start()
        assert started.wait(10)
        time.sleep(0.2)
        server.send_signal(signal.SIGTERM)
        thread.join(30)
        assert result.get("status") == 201
        # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with ctx.sessions() as session:
        stored = session.scalars(sa.select(Delivery)).one()
        assert stored.row_count == 200
