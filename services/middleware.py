"""ASGI middleware: request ids, a request size limit enforced while the body streams in, and
security headers on every response; and the HTTP protocol the server speaks on each connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from shared.errors import PayloadTooLarge
from shared.metrics import REGISTRY

log = logging.getLogger("vroegsignaal.http")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# The interactive docs (/docs, /redoc) load their scripts and styles from a CDN and run an inline
# script; everything else is JSON and may load nothing at all.
DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' cdn.jsdelivr.net fonts.googleapis.com; "
    b"font-src 'self' fonts.gstatic.com; worker-src 'self' blob:; "
    b"img-src 'self' data: fastapi.tiangolo.com; frame-ancestors 'none'"
)


class _TooLarge(Exception):
    pass


class RequestGuard:
    """Adds a request id, refuses bodies over ``max_body`` bytes (413) and sets security headers."""

    def __init__(self, app: ASGIApp, max_body: Callable[[], int]) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else None
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder: dict[str, int] = {}

        max_body = self.max_body()
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            await self._too_large(send, request_id, max_body)
            return

        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    exceeded = True
                    raise _TooLarge
            return message

        is_docs = scope.get("path", "") in ("/docs", "/redoc")

        async def send_with_headers(message: Message) -> None:
            # A body parser may turn the interrupted read into its own error: answer 413 instead.
            if exceeded:
                if message["type"] == "http.response.start" and "status" not in status_holder:
                    status_holder["status"] = 413
                    await self._too_large(send, request_id, max_body)
                return
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                present = list(message.get("headers", []))
                names = {name.lower() for name, _ in present}
                extra = [(b"x-request-id", request_id.encode())]
                for name, value in SECURITY_HEADERS:
                    if is_docs and name == b"content-security-policy":
                        value = DOCS_CSP
                    if name not in names:  # an endpoint's own choice stands
                        extra.append((name, value))
                message["headers"] = present + extra
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _TooLarge:
            if "status" not in status_holder:
                await self._too_large(send, request_id, max_body)
        finally:
            elapsed = time.perf_counter() - started
            # The route template (never the raw path, which may hold ids), or "unmatched".
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            REGISTRY.observe(
                "vroegsignaal_http_request_duration_seconds",
                elapsed,
                method=str(scope.get("method")),
                route=template,
                status=str(status_holder.get("status")),
            )
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "route": template,
                    "status": status_holder.get("status"),
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )

    async def _too_large(self, send: Send, request_id: str, max_body: int) -> None:
        doc: dict[str, Any] = PayloadTooLarge(
            f"the request body is larger than {max_body} bytes"
        ).problem()
        body = json.dumps(doc).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                    (b"connection", b"close"),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# --- the connection itself -----------------------------------------------------------------------


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with Nagle's algorithm off on every connection.

    A response goes out in two writes (head, then body). With ``--workers`` uvicorn binds the
    listening socket itself and asyncio no longer sets ``TCP_NODELAY`` on the accepted
    connections, so the body waited for the client's delayed ACK of the head: 40 ms on every
    keep-alive request. ``vroegsignaal serve`` passes this class as uvicorn's ``http``.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
