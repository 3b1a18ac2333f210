"""Accepting a partner's monthly delivery: the one code path behind the API and the SFTP drop.

The rules (the pilot's agreement and the issue that specified the portal):

* A delivery is the partner's snapshot of arrears for one period. It is all-or-nothing: one invalid
  row and nothing is stored; the answer lists every problem (capped) with row and column.
* The window for a period closes at 00:00 Europe/Amsterdam on the deadline day (the 25th); after
  that, or before it opens, nothing is stored (409).
* The same file again for the same partner and period returns the delivery already stored
  (idempotent retry). A different file while the window is open replaces the current delivery,
  which is kept, marked superseded, and no longer counts.
* Personal data is encrypted per row; address and person keys are stored as keyed hashes only.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest import repository
from services.ingest.parsing import parse_upload
from services.ingest.validation import ValidationRules, validate
from shared import audit
from shared.auth import Principal
from shared.context import Context
from shared.db import unit_of_work
from shared.errors import AppError, DeliveryWindowClosed, RowProblem, ValidationFailed
from shared.metrics import REGISTRY
from shared.models import Delivery, DeliveryStatus, Partner, Signaalstatus
from shared.periods import Period, local_today, open_period

# What goes into the encrypted envelope of a signal.
PII_FIELDS = (
    "referentie",
    "achternaam",
    "tussenvoegsel",
    "voorletters",
    "geboortedatum",
    "bsn",
    "straat",
    "huisnummer",
    "huisnummer_suffix",
    "postcode",
    "woonplaats",
    "telefoon",
    "email",
)


@dataclass
class IngestOutcome:
    """The stored delivery; ``created`` is False for an idempotent repeat of the same file."""

    delivery: Delivery
    created: bool
    warnings: list[RowProblem] = field(default_factory=list)
    replaced: uuid.UUID | None = None


def resolve_period(ctx: Context, requested: str | None, now: datetime) -> Period:
    """The requested period, or the open one; 409 when its window is not open at ``now``."""
    deadline_day, tz = ctx.settings.delivery_deadline_day, ctx.tz
    current = open_period(now, deadline_day, tz)
    period = Period.parse(requested) if requested else current
    if period != current:
        closes = period.deadline(deadline_day, tz).astimezone(tz)
        state = "closed" if period < current else "not open yet"
        raise DeliveryWindowClosed(
            f"the delivery window for {period} is {state}; the open period is {current}",
            period=str(period),
            open_period=str(current),
            closes_at=closes.isoformat(),
            open_period_closes_at=current.deadline(deadline_day, tz).astimezone(tz).isoformat(),
        )
    return period


def ingest_delivery(
    session: Session,
    ctx: Context,
    *,
    partner: Partner,
    content: bytes,
    filename: str | None,
    content_type: str | None = None,
    period: str | None = None,
    source: str = "api",
    actor: Principal | None = None,
    request_id: str | None = None,
) -> IngestOutcome:
    """Validate and store one delivery in the caller's transaction; see the module rules."""
    now = ctx.now()
    target = resolve_period(ctx, period, now)
    digest = hashlib.sha256(content).hexdigest()
    existing = repository.current_delivery(session, partner.id, str(target))
    if existing is not None and existing.content_sha256 == digest:
        return IngestOutcome(existing, created=False, warnings=_stored_warnings(existing))

    try:
        parsed = parse_upload(content, filename, content_type)
        rules = ValidationRules(
            today=local_today(now, ctx.tz),
            amount_warning_ceiling_cents=ctx.settings.amount_warning_ceiling_cents,
            max_age_years=ctx.settings.max_age_years_warning,
        )
        result = validate(parsed.frame, rules, ctx.settings.max_reported_errors)
    except ValidationFailed as exc:
        raise _capped(exc, ctx.settings.max_reported_errors) from None
    if result.errors:
        raise ValidationFailed(
            f"{result.error_count} problem(s) in the file; nothing was stored",
            result.errors,
            total=result.error_count,
        )
    warnings = (parsed.warnings + result.warnings)[: ctx.settings.max_reported_errors]

    delivery = Delivery(
        id=uuid.uuid4(),
        partner_id=partner.id,
        period=str(target),
        status=DeliveryStatus.accepted,
        source=source,
        file_format=parsed.file_format,
        filename=_safe_filename(filename),
        content_sha256=digest,
        size_bytes=len(content),
        row_count=result.rows.height,
        warning_count=len(parsed.warnings) + len(result.warnings),
        warnings=json.dumps([w.as_dict() for w in warnings]),
        received_at=now,
    )
    if existing is not None and not repository.supersede(session, existing, now):
        raise IntegrityError("concurrent replacement", None, Exception("lost race"))
    session.add(delivery)
    session.flush()
    if existing is not None:
        repository.link_successor(session, existing.id, delivery.id)
    _store_signals(session, ctx, delivery, partner, result.rows, now)
    audit.record(
        session,
        action="delivery.replace" if existing is not None else "delivery.upload",
        now=now,
        actor=actor,
        system_actor=f"{source}:{partner.id}",
        object_type="delivery",
        object_id=delivery.id,
        request_id=request_id,
        details={"rows": delivery.row_count, "period": delivery.period, "source": source},
    )
    return IngestOutcome(
        delivery, created=True, warnings=warnings, replaced=existing.id if existing else None
    )


def ingest_with_retry(ctx: Context, *, partner_id: uuid.UUID, **kwargs: object) -> IngestOutcome:
    """Run :func:`ingest_delivery` in its own transaction, retrying once on a concurrent upload.

    Two uploads for the same partner and period racing each other meet at the unique index on the
    current delivery; the loser retries and then finds the winner (same file: idempotent answer;
    another file: it replaces the winner's).
    """
    for attempt in range(3):
        session = ctx.sessions()
        try:
            partner = session.get(Partner, partner_id)
            assert partner is not None
            outcome = ingest_delivery(session, ctx, partner=partner, **kwargs)  # type: ignore[arg-type]
            session.commit()
            source = str(kwargs.get("source", "api"))
            result = "accepted" if outcome.created else "repeat"
            REGISTRY.inc(
                "vroegsignaal_uploads_total", kind=partner.kind, source=source, outcome=result
            )
            if outcome.created:
                REGISTRY.inc(
                    "vroegsignaal_upload_rows_total", outcome.delivery.row_count, kind=partner.kind
                )
            return outcome
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise
        except AppError as exc:
            session.rollback()
            _audit_refusal(ctx, partner_id, exc, kwargs)
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
    raise AssertionError("unreachable")


def _audit_refusal(
    ctx: Context, partner_id: uuid.UUID, exc: AppError, kwargs: dict[str, object]
) -> None:
    """A refused upload stores nothing, but the attempt is an audit event of its own."""
    actor = kwargs.get("actor")
    request_id = kwargs.get("request_id")
    with unit_of_work(ctx.sessions) as session:
        partner = session.get(Partner, partner_id)
        REGISTRY.inc(
            "vroegsignaal_uploads_total",
            kind=partner.kind if partner else "unknown",
            source=str(kwargs.get("source", "api")),
            outcome="rejected",
        )
        audit.record(
            session,
            action="delivery.upload",
            now=ctx.now(),
            actor=actor if isinstance(actor, Principal) else None,
            system_actor=f"{kwargs.get('source', 'api')}:{partner_id}",
            object_type="partner",
            object_id=partner_id,
            outcome="rejected",
            request_id=request_id if isinstance(request_id, str) else None,
            details={"status": exc.status, "problem": exc.slug},
        )


def _capped(exc: ValidationFailed, limit: int) -> ValidationFailed:
    if len(exc.problems) <= limit:
        return exc
    return ValidationFailed(exc.detail, exc.problems[:limit], total=len(exc.problems))


def _safe_filename(filename: str | None) -> str | None:
    if not filename:
        return None
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable())[:255]
    return cleaned or None


def _stored_warnings(delivery: Delivery) -> list[RowProblem]:
    return [RowProblem(**w) for w in json.loads(delivery.warnings or "[]")]


def _store_signals(
    session: Session,
    ctx: Context,
    delivery: Delivery,
    partner: Partner,
    rows: pl.DataFrame,
    now: datetime,
) -> None:
    """Encrypt, hash and bulk-insert the rows, a batch at a time (memory stays flat)."""
    batch = ctx.settings.ingest_batch_rows
    delivery_id = str(delivery.id)
    for offset in range(0, rows.height, batch):
        chunk = rows.slice(offset, batch)
        envelopes_json = chunk.select(
            pl.struct(
                [
                    pl.col(c).cast(pl.String) if c in ("geboortedatum", "huisnummer") else pl.col(c)
                    for c in PII_FIELDS
                ]
            ).struct.json_encode()
        ).to_series()
        aads = [f"signal:{delivery_id}:{row}".encode() for row in chunk["row"]]
        envelopes = ctx.cipher.encrypt_many((s.encode() for s in envelopes_json), aads)
        frame = chunk.select(
            pl.lit(delivery_id).alias("delivery_id"),
            pl.lit(str(partner.id)).alias("partner_id"),
            pl.lit(delivery.period).alias("period"),
            pl.col("row").cast(pl.Int32).alias("row_number"),
            pl.lit(partner.kind).alias("kind"),
            pl.Series(
                "address_hash",
                ctx.hasher.hash_many("address", chunk["address_key"].to_list()),
                dtype=pl.String,
            ),
            pl.Series(
                "person_hash",
                ctx.hasher.hash_many("person", chunk["person_key"].to_list()),
                dtype=pl.String,
            ),
            pl.col("postcode").str.slice(0, 4).alias("pc4"),
            pl.Series(
                "pc6_hash",
                ctx.hasher.hash_many("pc6", chunk["postcode"].to_list()),
                dtype=pl.String,
            ),
            "bedrag_cent",
            "achterstand_sinds",
            "signaaldatum",
            "crisis",
            "warme_overdracht",
            "eindelevering",
            pl.lit(Signaalstatus.nog_niet_opgepakt.value).alias("status"),
            pl.Series("pii", envelopes, dtype=pl.Binary),
            pl.lit(ctx.cipher.active_key_id).alias("pii_key_id"),
            pl.lit(now).alias("created_at"),
        )
        repository.insert_signals(session, frame)
