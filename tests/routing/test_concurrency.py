"""Many concurrent requests on a real server: none waits forever for a pooled connection.

Regression: the request session's teardown used to run in the worker thread pool; with more
concurrent requests than pooled connections, every worker could wait for a connection held by a
request whose teardown waited for a worker (a deadlock, then 500s after the pool timeout).
"""

from __future__ import annotations

import concurrent.futures

import httpx

from services.routing.admin import add_staff
from shared.context import Context
from shared.db import unit_of_work
from tests.conftest import LiveServer

REQUESTS = 160
CLIENTS = 80  # more than the pool (5 + 10) and the worker threads (40) together


def test_concurrent_reads_all_succeed(live_server: LiveServer, ctx: Context) -> None:
    with unit_of_work(ctx.sessions) as session:
        key = add_staff(session, name="Coord", role="coordinator", team=None, now=ctx.now()).secret
    headers = {"Authorization": f"Bearer {key}"}

    def one(_: int) -> int:
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as client:
            return client.get("/api/v1/cases").status_code

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(one, range(REQUESTS)))
    assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
