"""Rate limits: in-process token buckets per API key and, for failed authentications, per client.

* Every authenticated API key (by its public key id) has two buckets: one for uploads
  (``POST /api/v1/deliveries``, ``VS_RATE_LIMIT_UPLOADS_PER_MINUTE``, default 30) and one for all
  its other requests (``VS_RATE_LIMIT_READS_PER_MINUTE``, default 600).
* A presented key that fails (unknown, malformed, revoked, of an inactive partner or staff member)
  counts against the client's address (``VS_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE``, default 20).
  While an address is over that limit every request from it that presents a key gets 429 before
  the key is even looked at, so keys cannot be guessed faster than the limit. A request without
  any key costs nothing to answer and is not counted.
* A bucket holds one minute's worth of tokens (the burst) and refills continuously; 0 switches a
  limit off. Over a limit: 429 ``application/problem+json`` with ``Retry-After`` in whole seconds
  (at least 1).

The buckets live in the memory of one API process. With several API replicas, or worker processes
(``vroegsignaal serve --workers N``), each process limits on its own (the effective limit is the
per-process limit times the number of processes), and a restart forgets them. That is enough for
a municipality's handful of partners and teams; a shared store (Redis, the database) is the next
step when it is not. The number of tracked keys and addresses is bounded (least recently seen are
forgotten first), so a flood of addresses cannot exhaust memory.

The client address is the connection's peer as the ASGI server reports it. Behind a reverse proxy
set ``VS_TRUSTED_PROXIES`` to the proxy's address (``vroegsignaal serve`` then reads the client from
``X-Forwarded-For`` on that proxy's connections only, see :func:`services.deps.behind_proxies`),
or every client shares the proxy's address and one bad client blocks the others' key attempts.

Time is an injected clock in seconds: :func:`time.monotonic` in production, the context's clock
when a test or the demo injects one, so that tests move time instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from shared.auth import Principal
from shared.context import Context
from shared.db import utcnow
from shared.errors import AppError
from shared.settings import Settings

Seconds = Callable[[], float]
UPLOAD_ROUTE = ("POST", "/api/v1/deliveries")
MAX_TRACKED = 50_000
EPSILON = 1e-9  # float dust: 19 x 0.05 + 0.05 tokens is a whole token


class RateLimited(AppError):
    """429: too many requests; ``retry_after`` is the whole number of seconds to wait."""

    status: ClassVar[int] = 429
    slug: ClassVar[str] = "rate-limited"
    title: ClassVar[str] = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets by key, all with the same size and refill rate; safe across threads."""

    def __init__(self, per_minute: int, clock: Seconds, max_tracked: int = MAX_TRACKED) -> None:
        self.capacity = float(max(per_minute, 0))
        self.rate = self.capacity / 60.0  # tokens per second
        self.clock = clock
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def take(self, key: str) -> int | None:
        """Take one token: None when allowed, else the seconds until one is there (at least 1)."""
        if not self.enabled:
            return None
        with self._lock:
            bucket = self._refilled(key, create=True)
            assert bucket is not None
            if bucket.tokens >= 1 - EPSILON:
                bucket.tokens = max(0.0, bucket.tokens - 1)
                return None
            return self._wait(bucket)

    def waiting(self, key: str) -> int | None:
        """The seconds to wait if ``key``'s bucket is empty, else None; takes nothing."""
        if not self.enabled:
            return None
        with self._lock:
            bucket = self._refilled(key, create=False)
            if bucket is None or bucket.tokens >= 1 - EPSILON:
                return None
            return self._wait(bucket)

    def _refilled(self, key: str, *, create: bool) -> _Bucket | None:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if not create:
                return None
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
            while len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)  # the least recently seen
            return bucket
        # A clock that steps back (a test, a wall clock) refills nothing rather than going negative.
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        self._buckets.move_to_end(key)
        return bucket

    def _wait(self, bucket: _Bucket) -> int:
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate - EPSILON))


@dataclass
class RateLimits:
    """The API's three limits; one instance per application (``app.state.rate_limits``)."""

    uploads: TokenBuckets
    reads: TokenBuckets
    auth_failures: TokenBuckets

    @classmethod
    def from_settings(cls, settings: Settings, clock: Seconds) -> RateLimits:
        return cls(
            uploads=TokenBuckets(settings.rate_limit_uploads_per_minute, clock),
            reads=TokenBuckets(settings.rate_limit_reads_per_minute, clock),
            auth_failures=TokenBuckets(settings.rate_limit_auth_failures_per_minute, clock),
        )

    def admit(self, principal: Principal, method: str, route: str) -> None:
        """Count one request of an authenticated caller; RateLimited when over its limit."""
        upload = (method.upper(), route) == UPLOAD_ROUTE
        wait = (self.uploads if upload else self.reads).take(principal.key_id)
        if wait is not None:
            what = "uploads" if upload else "requests"
            raise RateLimited(
                f"too many {what} with this API key; try again in {wait} seconds", wait
            )

    def refuse_if_blocked(self, client: str) -> None:
        """RateLimited while ``client`` is over its limit of failed authentications."""
        wait = self.auth_failures.waiting(client)
        if wait is not None:
            raise RateLimited(
                f"too many failed authentications from this address; try again in {wait} seconds",
                wait,
            )

    def count_failure(self, client: str) -> None:
        """Count one failed authentication from ``client``."""
        self.auth_failures.take(client)


def limiter_clock(ctx: Context) -> Seconds:
    """Seconds for the buckets: monotonic time, or the context's clock when one was injected."""
    if ctx.clock is utcnow:
        return time.monotonic
    return lambda: ctx.now().timestamp()
