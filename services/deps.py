"""FastAPI dependencies shared by the services: context, the request's unit of work, principals.

The request owns its transaction: :func:`get_session` commits when the endpoint returns normally
and rolls back on any error, before the response is sent. Functions below only ``flush()``.
Endpoints that write nothing take :data:`ReadSession` instead (on PostgreSQL their statements
run in autocommit: no ``BEGIN`` or ``COMMIT`` round trip).

:func:`current_principal` is also where the rate limits (:mod:`services.ratelimit`) apply: per
credential after authentication, and per client address for failed authentications.

**Client certificates.** A partner may authenticate with a client certificate instead of an API
key: the TLS proxy (``deploy/proxy/``) verifies it (mutual TLS) and forwards it as
``X-Client-Cert`` (the URL-escaped PEM, nginx's ``$ssl_client_escaped_cert``) with
``X-Client-Cert-Verify`` (``SUCCESS`` when it verified). The service believes these headers only
when the connection's own peer, the proxy, is in ``VS_TRUSTED_PROXIES``; it computes the SHA-256
fingerprint of the certificate itself and looks it up
(:func:`shared.auth.authenticate_certificate`). A bearer key, when present, is used and the
certificate headers are not looked at.

The peer must be the TCP peer, not an address taken from ``X-Forwarded-For``. ``vroegsignaal
serve`` wraps the application in :func:`behind_proxies`, which notes the peer in the ASGI scope
(:data:`PEER_SCOPE_KEY`) before it applies ``X-Forwarded-For`` from the trusted proxies (so that
the per-address rate limit sees the real client) and runs uvicorn with ``proxy_headers`` off, so
that uvicorn's own rewriting (``FORWARDED_ALLOW_IPS``) plays no part. Served any other way (plain
``uvicorn``, the tests), the scope's client is used only when the request carries no
``X-Forwarded-For`` or ``Forwarded`` header, because the server may have rewritten it from one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, cast
from urllib.parse import unquote

from cryptography import x509
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ratelimit import RateLimits
from shared import audit
from shared.auth import (
    KEY_REQUIRED,
    PARTNER_ROLE,
    Principal,
    authenticate,
    authenticate_certificate,
    certificate_fingerprint,
)
from shared.context import Context
from shared.db import unit_of_work
from shared.errors import AuthenticationError, PermissionDenied
from shared.settings import IPNetwork

CLIENT_CERT_HEADER = "x-client-cert"
CLIENT_CERT_VERIFY_HEADER = "x-client-cert-verify"
VERIFIED = "SUCCESS"
# Where behind_proxies notes the connection's peer (a host, or "" when the server gave none).
PEER_SCOPE_KEY = "vroegsignaal.peer"
# Headers from which an ASGI server may have rewritten the scope's client.
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded")


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


async def _app_context(request: Request) -> Context:
    """:func:`get_context` as a dependency: async, so that it costs no trip to the thread pool."""
    return get_context(request)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session; committed (or rolled back) and closed when the endpoint is done.

    An *async* generator on purpose: its teardown runs on the event loop, not in the worker
    thread pool. With a sync generator, under load every worker thread could be waiting for a
    pooled connection while the connections were held by requests whose teardown (which gives
    the connection back) was itself waiting for a free worker thread: a deadlock. The commit is
    one short round trip; bulk work (uploads, runs) has transactions of its own.

    The session is also noted on the request (``request.state.session``) so that
    :func:`current_principal` authenticates in it: one connection and one transaction per
    request instead of two.
    """
    async with _request_session(request, get_context(request).sessions) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """:func:`get_session` for an endpoint that writes nothing: from
    :attr:`shared.context.Context.read_sessions`, so that on PostgreSQL the request sends no
    ``BEGIN`` and no ``COMMIT`` (:func:`shared.db.make_read_sessionmaker`)."""
    async with _request_session(request, get_context(request).read_sessions) as session:
        yield session


@asynccontextmanager
async def _request_session(
    request: Request, factory: sessionmaker[Session]
) -> AsyncIterator[Session]:
    session = factory()
    request.state.session = session
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
# For endpoints that write nothing; on PostgreSQL a write in it would commit with its statement, so
# an endpoint that writes (or records an audit event) takes DbSession (see get_read_session).
ReadSession = Annotated[Session, Depends(get_read_session, scope="function")]
AppContext = Annotated[Context, Depends(_app_context)]


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


class _NotePeer:
    """Notes the connection's peer in the scope, then hands the request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[PEER_SCOPE_KEY] = str(client[0]) if client else ""
        await self.app(scope, receive, send)


def behind_proxies(app: ASGIApp, trusted_proxies: Sequence[IPNetwork]) -> ASGIApp:
    """The application as ``vroegsignaal serve`` runs it (with uvicorn's ``proxy_headers`` off).

    The connection's peer is noted first (:data:`PEER_SCOPE_KEY`, what the certificate check
    compares with ``VS_TRUSTED_PROXIES``); then, for requests from a trusted proxy, uvicorn's
    ``ProxyHeadersMiddleware`` sets the client address from ``X-Forwarded-For`` (what the
    per-address rate limit counts). Without trusted proxies ``X-Forwarded-For`` is ignored.
    """
    if trusted_proxies:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        hosts = [str(network) for network in trusted_proxies]
        app = cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=hosts))
    return _NotePeer(app)


def _direct_peer(request: Request) -> str | None:
    """The TCP peer's address, or None when it cannot be known for certain (see the module
    docstring)."""
    noted = request.scope.get(PEER_SCOPE_KEY)
    if noted is not None:
        return str(noted) or None
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return None
    return request.client.host if request.client else None


def is_trusted_proxy(host: str | None, trusted: Sequence[IPNetwork]) -> bool:
    """Whether an address lies in one of the trusted networks (an IPv4 address written as
    IPv6, ``::ffff:127.0.0.1``, counts as the IPv4 address)."""
    if not host or not trusted:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


@dataclass(frozen=True, slots=True)
class ForwardedCertificate:
    """A client certificate in the request's headers: its fingerprint when it is believed, else
    why not (``untrusted_peer``, ``not_verified``, ``unreadable``)."""

    fingerprint: str | None
    reason: str | None = None


def _forwarded_certificate(request: Request, ctx: Context) -> ForwardedCertificate | None:
    """The certificate a trusted proxy forwarded; None when the request carries none.

    The header's content is parsed only when the peer is a trusted proxy and the proxy says it
    verified the certificate; nothing of it is logged or recorded.
    """
    values = request.headers.getlist(CLIENT_CERT_HEADER)
    if not any(value.strip() for value in values):
        return None
    if not is_trusted_proxy(_direct_peer(request), ctx.settings.trusted_proxies):
        return ForwardedCertificate(None, "untrusted_peer")
    verify = request.headers.getlist(CLIENT_CERT_VERIFY_HEADER)
    if verify != [VERIFIED]:
        return ForwardedCertificate(None, "not_verified")
    if len(values) != 1:
        return ForwardedCertificate(None, "unreadable")
    try:
        certificate = x509.load_pem_x509_certificate(unquote(values[0]).encode("ascii"))
    except (ValueError, UnicodeError):
        return ForwardedCertificate(None, "unreadable")
    return ForwardedCertificate(certificate_fingerprint(certificate))


def _record_failed_authentication(
    request: Request, ctx: Context, certificate: ForwardedCertificate | None = None
) -> None:
    """An ``auth.failed`` audit event in a short transaction of its own.

    Nothing of the presented key is recorded, not even its key id (it may be garbage, or a
    partner's secret pasted into the wrong field), nor the client's address: only the request id
    and which route was asked for. For a forwarded certificate: that it was one, and why it was
    refused (one of a few fixed words), never the certificate, its subject or its fingerprint.
    """
    details = {"method": request.method, "route": _route(request)}
    if certificate is not None:
        details["credential"] = "certificate"
        details["reason"] = certificate.reason or "not_registered"
    audit.record_apart(
        ctx.sessions,
        action="auth.failed",
        now=ctx.now(),
        outcome="denied",
        request_id=getattr(request.state, "request_id", None),
        details=details,
        system_actor="unauthenticated",
    )


@contextmanager
def _authentication_session(request: Request, ctx: Context) -> Iterator[Session]:
    """The request's own session when the endpoint has one (declared before the principal), so
    that authentication shares its connection and transaction; otherwise, as for an upload, a
    short unit of work of its own.

    When authentication stamped the credential's last use (at most once a minute), the shared
    session commits that at once, as the unit of work would, whatever the endpoint does next. When
    authentication fails it rolls back at once, giving up its connection (on SQLite the write
    lock) before the failure is audited in a transaction of its own.
    """
    shared = getattr(request.state, "session", None)
    if isinstance(shared, Session):
        try:
            with shared.no_autoflush:  # so that a stamp is still pending (dirty) at the end
                yield shared
        except BaseException:
            shared.rollback()
            raise
        if shared.dirty:
            shared.commit()
        return
    with unit_of_work(ctx.sessions) as session:
        yield session


def current_principal(request: Request, ctx: AppContext) -> Principal:
    """Authenticate (it records the credential's last use) in the endpoint's own session when it
    has one, else in a short transaction of its own, so that a long upload never holds one open.

    The credential is the bearer key, or without one a client certificate forwarded by a trusted
    proxy (see the module docstring). Then the request counts against the credential's rate
    limit (429 when over it). A presented credential that fails (a certificate from an untrusted
    peer too) is audited and counts against the client address; while the address is over that
    limit every presented credential gets 429 without being checked.
    """
    limits: RateLimits = request.app.state.rate_limits
    presented = _bearer(request)
    certificate = _forwarded_certificate(request, ctx) if presented is None else None
    client = _client(request)
    if presented is not None or certificate is not None:
        limits.refuse_if_blocked(client)
    try:
        if certificate is not None and certificate.reason == "untrusted_peer":
            # Ignored: without a key the request is unauthenticated (still audited and counted).
            raise AuthenticationError(KEY_REQUIRED)
        if certificate is not None and certificate.fingerprint is None:
            raise AuthenticationError("the client certificate is not valid")
        with _authentication_session(request, ctx) as session:
            if certificate is not None and certificate.fingerprint is not None:
                principal = authenticate_certificate(session, certificate.fingerprint, ctx.now())
            else:
                principal = authenticate(session, presented, ctx.now())
    except AuthenticationError:
        if presented is not None or certificate is not None:
            limits.count_failure(client)
            _record_failed_authentication(request, ctx, certificate)
        raise
    limits.admit(principal, request.method, _route(request))
    request.state.principal = principal
    return principal


async def require_partner(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if principal.role != PARTNER_ROLE or principal.partner_id is None:
        raise PermissionDenied("only a partner's key may do this")
    return principal


PartnerPrincipal = Annotated[Principal, Depends(require_partner)]


def require_roles(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting staff of the given roles only (403 for any other caller)."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise PermissionDenied("your role may not do this")
        return principal

    return check
