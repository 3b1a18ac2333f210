"""How the API is served: ``vroegsignaal serve --workers N``, and Nagle's algorithm off.

With ``--workers`` uvicorn binds the listening socket itself, and asyncio then leaves
``TCP_NODELAY`` off on the accepted connections: every keep-alive answer (head, then body in a
second write) waited 40 ms for the client's delayed ACK. ``serve`` runs uvicorn with
:class:`services.middleware.NoDelayHTTPProtocol`, which switches it on per connection.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from services.middleware import NoDelayHTTPProtocol
from services.routing.admin import add_staff
from shared.context import Context
from shared.db import unit_of_work
from tests.helpers import server_env, serving


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_every_connection_has_nagle_off_on_a_socket_bound_as_for_workers() -> None:
    # As uvicorn binds it for --workers: no protocol given, so asyncio does not set TCP_NODELAY.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _hello, http=NoDelayHTTPProtocol, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").text == "ok"
            connections = list(server.server_state.connections)
            assert connections
            for protocol in connections:
                accepted = protocol.transport.get_extra_info("socket")
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_the_served_application_is_frozen_for_the_garbage_collector(
    ctx: Context, database_url: str, tmp_path: Path
) -> None:
    # In a process of its own: freezing this one would keep the test session's garbage.
    code = (
        "import gc; from services.cli import served_app; served_app(); "
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=server_env(ctx, database_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_serve_with_two_workers(ctx: Context, database_url: str, tmp_path: Path) -> None:
    with unit_of_work(ctx.sessions) as session:
        key = add_staff(session, name="Coord", role="coordinator", team=None, now=ctx.now()).secret
    env = server_env(ctx, database_url, tmp_path)
    # Two processes import the application: a longer start.
    with serving(env, "--workers", "2", startup_s=90) as (_server, base):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            answers = [client.get("/api/v1/cases") for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        assert answers[0].json() == {"items": [], "total": 0, "page": 1, "page_size": 50}
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/api/v1/cases").status_code == 401


def _get_on(sock: socket.socket, port: int) -> bytes:
    """One keep-alive GET of /healthz on an open connection: the answer's head and body, or b""
    when the server has closed the connection."""
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return answer


def test_serve_keeps_an_idle_connection_open_as_long_as_configured(
    ctx: Context, database_url: str, tmp_path: Path
) -> None:
    """``VS_HTTP_KEEP_ALIVE_SECONDS`` reaches the server: an idle keep-alive connection is still
    answered after a pause shorter than it, and closed by the server after a longer one (with
    uvicorn's own default, 5 s, it would still be open then)."""
    env = server_env(ctx, database_url, tmp_path) | {"VS_HTTP_KEEP_ALIVE_SECONDS": "2"}
    with serving(env) as (_server, base):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert _get_on(sock, port).startswith(b"HTTP/1.1 200 ")
            time.sleep(1)
            assert _get_on(sock, port).startswith(b"HTTP/1.1 200 ")
            time.sleep(3.5)
            # Closed by the server while idle: the request gets no answer.
            try:
                answer = _get_on(sock, port)
            except ConnectionError:
                answer = b""
            assert answer == b""
