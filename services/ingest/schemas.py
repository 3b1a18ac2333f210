"""Request and response shapes of the partner portal."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class RowProblemPublic(BaseModel):
    row: int | None = Field(description="spreadsheet row (header = 1) or JSON position (1-based)")
    column: str
    message: str


class DeliveryPublic(BaseModel):
    """A delivery as its partner sees it."""

    id: uuid.UUID
    period: str = Field(examples=["2026-11"])
    status: str = Field(description="accepted (counts for the period) or superseded")
    source: str = Field(description="api or sftp")
    format: str = Field(description="csv or json")
    filename: str | None
    rows: int
    warning_count: int
    warnings: list[RowProblemPublic]
    received_at: datetime
    content_sha256: str
    superseded_by: uuid.UUID | None = None
    replaces: uuid.UUID | None = Field(
        default=None, description="the delivery this upload replaced (upload answers only)"
    )


class DeliveryPage(BaseModel):
    items: list[DeliveryPublic]
    limit: int
    offset: int
