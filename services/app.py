"""The HTTP application: the partner portal and the teams' endpoints, one error format.

Security around every request (see SECURITY.md): :class:`services.middleware.RequestGuard` (request
ids, the body size limit, security headers), Starlette's TrustedHostMiddleware
(``VS_TRUSTED_HOSTS``), and rate limits (:mod:`services.ratelimit`) applied where the caller is
authenticated (:func:`services.deps.current_principal`). There is no CORS middleware: the API is
for servers and scripts, not for browsers on other origins.
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from services.concurrency import Bulkhead
from services.ingest.endpoints import router as deliveries_router
from services.middleware import RequestGuard
from services.ops import router as ops_router
from services.ratelimit import RateLimited, RateLimits, limiter_clock
from services.routing.endpoints import router as routing_router
from shared.context import Context, build_context
from shared.errors import AppError, AuthenticationError, DatabaseUnavailable
from shared.logs import exception_summary

log = logging.getLogger("vroegsignaal.api")
PROBLEM = "application/problem+json"
MULTIPART_OVERHEAD = 64 * 1024
# The database is unreachable (restarting, failing over, refusing connections) or the connection
# pool had none to give in time. Raw driver errors come from code that uses the driver's
# connection directly (COPY in shared.bulk).
DATABASE_DOWN: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


# FastAPI's own OpenTelemetry spans, metrics and logs are off. They switch themselves on once any
# OpenTelemetry provider is set in the process (an operator's auto-instrumentation, a library),
# and their logs carry exceptions' messages and stack traces, their spans the request's path:
# either can hold personal data. The service's own logs and metrics (shared.logs, /metrics)
# carry none. Off, the framework also stops asking for the providers on every request.
FRAMEWORK_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


def _problem(
    doc: dict[str, object], status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(doc, status_code=status, media_type=PROBLEM, headers=headers)


def create_app(ctx: Context | None = None) -> FastAPI:
    """The FastAPI application for a context (default: built from the environment)."""
    ctx = ctx or build_context()
    app = FastAPI(
        title="vroegsignaal",
        version="0.1.0",
        description="Early warning of payment arrears (Wgs vroegsignalering): partner portal "
        "and case routing for Dutch municipalities.",
        telemetry=FRAMEWORK_TELEMETRY,
    )
    app.state.context = ctx
    settings = ctx.settings
    app.state.rate_limits = RateLimits.from_settings(settings, limiter_clock(ctx))
    if settings.environment == "production" and "*" in settings.trusted_hosts:
        log.warning("trusted_hosts_any", extra={"hint": "set VS_TRUSTED_HOSTS in production"})
    # The last added is the outermost: RequestGuard sees (and adds headers to) every response.
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts, www_redirect=False
    )
    app.add_middleware(Bulkhead, limit=settings.max_concurrent_requests)
    app.add_middleware(
        RequestGuard, max_body=lambda: settings.max_upload_bytes + MULTIPART_OVERHEAD
    )
    app.include_router(deliveries_router)
    app.include_router(routing_router)
    app.include_router(ops_router)

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> JSONResponse:
        headers = None
        if isinstance(exc, AuthenticationError):
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, RateLimited | DatabaseUnavailable):
            headers = {"Retry-After": str(exc.retry_after)}
        if exc.status >= 500:
            log.error("app_error", extra={"error": type(exc).__name__})
        return _problem(exc.problem(instance=request.url.path), exc.status, headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "row": None,
                "column": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "message": err.get("msg", "invalid"),
            }
            for err in exc.errors()
        ]
        doc = {
            "type": "https://vroegsignaal.nl/problems/validation-failed",
            "title": "Invalid input",
            "status": 422,
            "detail": "the request is not valid",
            "instance": request.url.path,
            "errors": errors,
            "error_count": len(errors),
        }
        return _problem(doc, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        doc = {
            "type": "about:blank",
            "title": str(exc.detail) if exc.status_code < 500 else "Internal error",
            "status": exc.status_code,
            "instance": request.url.path,
        }
        return _problem(doc, exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(DataError)
    async def unusable_value(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value of the request (a NUL character in a text, a number out
        # of range): the client's input, so 422. The database's message quotes the value: it is
        # neither logged nor returned.
        doc = {
            "type": "https://vroegsignaal.nl/problems/validation-failed",
            "title": "Invalid input",
            "status": 422,
            "detail": "a value in the request cannot be used (for example a NUL character or a "
            "number out of range); nothing was stored",
            "instance": request.url.path,
        }
        return _problem(doc, 422)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # A connection that broke mid-request (DBAPIError with connection_invalidated) counts
        # too; any other database error is a bug and goes on to ``unexpected`` (500). The pool
        # pre-pings its connections (shared.db), so once the database is back the next request
        # gets a live one. The driver's message names the server and may quote the statement's
        # values: neither is logged nor returned.
        if not isinstance(exc, DATABASE_DOWN) and not (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            raise exc
        log.warning(
            "database_unavailable",
            extra={
                "request_id": request.scope.get("state", {}).get("request_id"),
                "error": type(exc).__name__,
            },
        )
        error = DatabaseUnavailable(
            "the database is not available at the moment; retry later (an upload may be sent "
            "again as is: the same file is never stored twice)"
        )
        headers = {"Retry-After": str(error.retry_after)}
        return _problem(error.problem(instance=request.url.path), error.status, headers)

    for database_error in (*DATABASE_DOWN, DBAPIError):
        app.add_exception_handler(database_error, database_unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled_error",
            extra={
                "request_id": request.scope.get("state", {}).get("request_id"),
                "exception": exception_summary(exc),
            },
        )
        doc = {
            "type": "https://vroegsignaal.nl/problems/internal-error",
            "title": "Internal error",
            "status": 500,
            "detail": "something went wrong on our side; nothing was stored",
            "instance": request.url.path,
        }
        return _problem(doc, 500)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
