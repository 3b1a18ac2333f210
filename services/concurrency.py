"""A bulkhead: at most ``limit`` requests inside the application at once; the rest wait (async).

Every request needs at most one database connection at a time, and the endpoints run in a pool
of worker threads. If more requests are inside than there are pooled connections, workers can
all wait for a connection that is held by a request which itself waits for a worker (to
serialise its answer or finish its transaction): a deadlock that ends only in timeouts. Keeping
the number of requests inside below the connection pool's size (``VS_MAX_CONCURRENT_REQUESTS``,
below ``VS_DB_POOL_SIZE`` + ``VS_DB_MAX_OVERFLOW`` and the 40 worker threads) rules that out;
waiting requests cost no thread. ``/healthz`` is never held back.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

EXEMPT = frozenset({"/healthz"})


class Bulkhead:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._slots: anyio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made on the server's event loop
            self._slots = anyio.Semaphore(self.limit)
        async with self._slots:
            await self.app(scope, receive, send)
