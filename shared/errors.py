"""The project's error hierarchy, rendered as RFC 9457 ``application/problem+json``.

Every error a client can see is an :class:`AppError`. One handler (``services.app``) turns it into a
problem document with ``type``, ``title``, ``status``, ``detail`` and ``instance``, plus ``errors``
(row-level problems: ``{row, column, message}``) where there are any.

Messages never carry personal data: a row problem names the row and the column, never the value.

    AppError
    ├── ConfigurationError      the service cannot start (missing or placeholder secret)
    ├── AuthenticationError     401: no, unknown or revoked credential
    ├── PermissionDenied        403: a valid credential without the role for this action
    ├── NotFound                404: also for objects of another partner or team
    ├── Conflict                409: closed delivery window, run already done, protocol unmet
    ├── PayloadTooLarge         413
    ├── UnsupportedMediaType    415: neither CSV nor JSON
    ├── ValidationFailed        422: the file or request has invalid rows or fields
    └── DatabaseUnavailable     503: the database cannot be reached (restart, failover); retry
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PROBLEM_BASE = "https://vroegsignaal.nl/problems/"


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One problem in an uploaded file: spreadsheet row (header = 1), column, message."""

    row: int
    column: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


class AppError(Exception):
    """Base of every error the service reports to a client or an operator."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        doc: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


class ConfigurationError(AppError):
    slug = "configuration"
    title = "Configuration error"


class AuthenticationError(AppError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(AppError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFound(AppError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(AppError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class DeliveryWindowClosed(Conflict):
    slug = "delivery-window-closed"
    title = "Delivery window closed"


class PayloadTooLarge(AppError):
    status = 413
    slug = "payload-too-large"
    title = "File too large"


class UnsupportedMediaType(AppError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported file type"


class ValidationFailed(AppError):
    """The input has problems; ``errors`` lists them (capped), ``error_count`` counts them all."""

    status = 422
    slug = "validation-failed"
    title = "Invalid input"

    def __init__(
        self, detail: str, problems: list[RowProblem] | None = None, *, total: int | None = None
    ) -> None:
        problems = problems or []
        super().__init__(
            detail,
            errors=[p.as_dict() for p in problems],
            error_count=total if total is not None else len(problems),
        )
        self.problems = problems


class DatabaseUnavailable(AppError):
    """The database is unreachable for the moment (a restart, a failover): retry later.

    The request's transaction did not commit, so an upload can simply be sent again (the same file
    again is recognised). Answered with ``Retry-After``; nothing of the driver's message is shown.
    """

    status = 503
    slug = "database-unavailable"
    title = "Database unavailable"
    retry_after = 5
