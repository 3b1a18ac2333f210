"""FastAPI dependencies shared by the services: context, the request's unit of work, principals.

The request owns its transaction: :func:`get_session` commits when the endpoint returns normally
and rolls back on any error, before the response is sent. Functions below only ``flush()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from shared.auth import PARTNER_ROLE, Principal, authenticate
from shared.context import Context
from shared.db import unit_of_work
from shared.errors import PermissionDenied


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


def get_session(request: Request) -> Iterator[Session]:
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


DbSession = Annotated[Session, Depends(get_session)]
AppContext = Annotated[Context, Depends(get_context)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def current_principal(request: Request, ctx: AppContext) -> Principal:
    """Authenticate in a short transaction of its own (it records the key's last use).

    Kept apart from the endpoint's unit of work so that a long upload never holds it open.
    """
    with unit_of_work(ctx.sessions) as session:
        principal = authenticate(session, _bearer(request), ctx.now())
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
