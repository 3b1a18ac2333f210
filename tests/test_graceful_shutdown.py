"""SIGTERM during an upload: the upload finishes and is stored, then the server exits."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa

from shared.context import Context
from shared.models import Delivery
from tests.helpers import csv_file, register, row, server_env, serving

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
    with serving(server_env(ctx, database_url, tmp_path), startup_s=20) as (server, base):
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
    with ctx.sessions() as session:
        stored = session.scalars(sa.select(Delivery)).one()
        assert stored.row_count == 200
