"""The partner portal's HTTP endpoints: upload and read back deliveries."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.deps import AppContext, PartnerPrincipal, ReadSession
from services.ingest import repository
from services.ingest.schemas import DeliveryPage, DeliveryPublic, RowProblemPublic
from services.ingest.service import IngestOutcome, ingest_with_retry
from shared.errors import NotFound, PayloadTooLarge
from shared.models import Delivery

router = APIRouter(prefix="/api/v1/deliveries", tags=["deliveries"])

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"content": {"application/problem+json": {}}, "description": text}
    for status, text in (
        (401, "no valid API key"),
        (409, "the delivery window for the period is closed"),
        (413, "the file is larger than allowed"),
        (415, "not CSV or JSON"),
        (422, "invalid rows: nothing was stored; errors lists row, column and message"),
    )
}


def to_public(delivery: Delivery, outcome: IngestOutcome | None = None) -> DeliveryPublic:
    warnings = outcome.warnings if outcome else None
    warning_dicts = (
        [w.as_dict() for w in warnings]
        if warnings is not None
        else json.loads(delivery.warnings or "[]")
    )
    return DeliveryPublic(
        id=delivery.id,
        period=delivery.period,
        status=delivery.status,
        source=delivery.source,
        format=delivery.file_format,
        filename=delivery.filename,
        rows=delivery.row_count,
        warning_count=delivery.warning_count,
        warnings=[RowProblemPublic(**w) for w in warning_dicts],
        received_at=delivery.received_at,
        content_sha256=delivery.content_sha256,
        superseded_by=delivery.superseded_by_id,
        replaces=outcome.replaced if outcome else None,
    )


@router.post(
    "",
    status_code=201,
    response_model=DeliveryPublic,
    responses={
        200: {"model": DeliveryPublic, "description": "the same file again"},
        **PROBLEM_RESPONSES,
    },
    summary="Upload this period's arrears (CSV or JSON)",
)
async def upload_delivery(
    request: Request,
    principal: PartnerPrincipal,
    ctx: AppContext,
    file: Annotated[UploadFile, File(description="the partner's arrears file, CSV or JSON")],
    period: Annotated[str | None, Form(pattern=r"^\d{4}-\d{2}$", examples=["2026-11"])] = None,
) -> JSONResponse:
    """Validate and store the file all-or-nothing; a repeat of the same file answers 200."""
    limit = ctx.settings.max_upload_bytes
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(f"the file is larger than {limit} bytes")
    assert principal.partner_id is not None
    outcome = await run_in_threadpool(
        ingest_with_retry,
        ctx,
        partner_id=principal.partner_id,
        content=content,
        filename=file.filename,
        content_type=file.content_type,
        period=period,
        source="api",
        actor=principal,
        request_id=getattr(request.state, "request_id", None),
    )
    body = to_public(outcome.delivery, outcome).model_dump(mode="json")
    status = 201 if outcome.created else 200
    headers = {"Location": f"/api/v1/deliveries/{outcome.delivery.id}"}
    return JSONResponse(body, status_code=status, headers=headers)


@router.get("", response_model=DeliveryPage, summary="This partner's deliveries, newest first")
def list_deliveries(
    principal: PartnerPrincipal,
    session: ReadSession,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DeliveryPage:
    assert principal.partner_id is not None
    items = repository.deliveries_of_partner(
        session, principal.partner_id, period=period, limit=limit, offset=offset
    )
    return DeliveryPage(items=[to_public(d) for d in items], limit=limit, offset=offset)


@router.get(
    "/{delivery_id}",
    response_model=DeliveryPublic,
    responses={404: {"content": {"application/problem+json": {}}}},
    summary="One of this partner's deliveries",
)
def get_delivery(
    delivery_id: uuid.UUID, principal: PartnerPrincipal, session: ReadSession
) -> DeliveryPublic:
    assert principal.partner_id is not None
    delivery = repository.delivery_of_partner(session, principal.partner_id, delivery_id)
    if delivery is None:
        raise NotFound("no such delivery")
    return to_public(delivery)
