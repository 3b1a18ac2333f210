"""The delivery monitor: per partner, has this period's file arrived, and does it look normal?

The pilot suffered from fluctuating deliveries: a partner that forgets a month, or delivers a
fraction of its usual rows, silently hides households from the run. Per active partner this
lists the period's current delivery (rows, when, how), its row counts of the previous three
periods, and a flag:

* ``missing``: nothing delivered for the period (yet);
* ``drop``: fewer than half the rows of its average over the previous periods it delivered;
* ``ok`` otherwise; ``new`` when there is no earlier period to compare with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.context import Context
from shared.models import Delivery, DeliveryStatus, Partner
from shared.periods import Period, open_period

HISTORY = 3
DROP_BELOW = 0.5


def delivery_status(session: Session, ctx: Context, period: Period | None = None) -> dict[str, Any]:
    now: datetime = ctx.now()
    deadline_day, tz = ctx.settings.delivery_deadline_day, ctx.tz
    period = period or open_period(now, deadline_day, tz)
    deadline = period.deadline(deadline_day, tz)
    earlier = [str(period.shift(-i)) for i in range(HISTORY, 0, -1)]
    rows = session.execute(
        select(
            Delivery.partner_id,
            Delivery.period,
            Delivery.row_count,
            Delivery.received_at,
            Delivery.source,
        ).where(
            Delivery.status == DeliveryStatus.accepted,
            Delivery.period.in_([*earlier, str(period)]),
        )
    ).all()
    by_partner: dict[Any, dict[str, Any]] = {}
    for partner_id, delivery_period, count, received_at, source in rows:
        by_partner.setdefault(partner_id, {})[delivery_period] = (count, received_at, source)
    partners = session.scalars(
        select(Partner).where(Partner.active.is_(True)).order_by(Partner.name)
    ).all()
    items = []
    for partner in partners:
        seen = by_partner.get(partner.id, {})
        history = {p: seen[p][0] if p in seen else None for p in earlier}
        known = [n for n in history.values() if n is not None]
        average = sum(known) / len(known) if known else None
        current = seen.get(str(period))
        if current is None:
            flag = "missing"
        elif average is None:
            flag = "new"
        elif current[0] < DROP_BELOW * average:
            flag = "drop"
        else:
            flag = "ok"
        items.append(
            {
                "partner": {"id": str(partner.id), "name": partner.name, "kind": partner.kind},
                "delivered": current is not None,
                "rows": current[0] if current else None,
                "received_at": current[1].isoformat() if current else None,
                "source": current[2] if current else None,
                "previous_rows": history,
                "average_rows": round(average, 1) if average is not None else None,
                "change": round(current[0] / average - 1, 3) if current and average else None,
                "flag": flag,
            }
        )
    seconds_left = (deadline - now).total_seconds()
    return {
        "period": str(period),
        "deadline": deadline.astimezone(tz).isoformat(),
        "days_left": max(0, int(seconds_left // 86400)) if seconds_left > 0 else 0,
        "window_open": seconds_left > 0,
        "partners": items,
        "summary": {
            flag: sum(1 for i in items if i["flag"] == flag)
            for flag in ("ok", "new", "drop", "missing")
        },
    }
