"""FastAPI dependencies shared by the services: context, the request's unit of work, principals.

The request owns its transaction: :func:`get_session` commits when the endpoint returns normally
and rolls back on any error, before the response is sent. Functions below only ``flush()``.

:func:`current_principal` is also where the rate limits (:mod:`services.ratelimit`) apply: per
API key after authentication, and per client address for failed authentications.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.ratelimit import RateLimits
from shared import audit
from shared.auth import PARTNER_ROLE, Principal, authenticate
from shared.context import Context
from shared.db import unit_of_work
from shared.errors import AuthenticationError, PermissionDenied


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session; committed (or rolled back) and closed when the endpoint is done.

    An *async* generator on purpose: its teardown runs on the event loop, not in the worker
    thread pool. With a sync generator, under load every worker thread could be waiting for a
    pooled connection while the connections were held by requests whose teardown (which gives
    the connection back) was itself waiting for a free worker thread: a deadlock. The commit is
    one short round trip; bulk work (uploads, runs) has transactions of its own.
    """
    ctx = get_context(request)
    session = ctx.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": the transaction commits before the response is sent, so a client never gets
# a success for work that then fails to commit, and reads what it wrote right after.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
AppContext = Annotated[Context, Depends(get_context)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _route(request: Request) -> str:
    """The matched route's template (``/api/v1/cases/{case_id}``): no ids, no query."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _record_failed_authentication(request: Request, ctx: Context) -> None:
    """An ``auth.failed`` audit event in a short transaction of its own.

    Nothing of the presented key is recorded, not even its key id (it may be garbage, or a
    partner's secret pasted into the wrong field), nor the client's address: only the request id
    and which route was asked for.
    """
    with unit_of_work(ctx.sessions) as session:
        audit.record(
            session,
            action="auth.failed",
            now=ctx.now(),
            outcome="denied",
            request_id=getattr(request.state, "request_id", None),
            details={"method": request.method, "route": _route(request)},
            system_actor="unauthenticated",
        )


def current_principal(request: Request, ctx: AppContext) -> Principal:
    """Authenticate in a short transaction of its own (it records the key's last use).

    Kept apart from the endpoint's unit of work so that a long upload never holds it open. Then
    the request counts against the key's rate limit (429 when over it). A presented key that fails
    is audited and counts against the client address; while the address is over that limit every
    presented key gets 429 without being checked.
    """
    limits: RateLimits = request.app.state.rate_limits
    presented = _bearer(request)
    client = _client(request)
    if presented is not None:
        limits.refuse_if_blocked(client)
    try:
        with unit_of_work(ctx.sessions) as session:
            principal = authenticate(session, presented, ctx.now())
    except AuthenticationError:
        if presented is not None:
            limits.count_failure(client)
            _record_failed_authentication(request, ctx)
        raise
    limits.admit(principal, request.method, _route(request))
    request.state.principal = principal
    return principal


def require_partner(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.role != PARTNER_ROLE or principal.partner_id is None:
        raise PermissionDenied("only a partner's key may do this")
    return principal


PartnerPrincipal = Annotated[Principal, Depends(require_partner)]


def require_roles(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency admitting staff of the given roles only (403 for any other caller)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise PermissionDenied("your role may not do this")
        return principal

    return check
