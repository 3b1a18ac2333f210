"""The delivery monitor: missing, dropped and normal deliveries, and the days left."""

from __future__ import annotations

from services.ingest.monitor import delivery_status
from shared.context import Context
from shared.periods import Period
from tests.conftest import Clock
from tests.helpers import register, row
from tests.matcher.test_run import deliver


def _rows(n: int, prefix: str) -> list[str]:
    return [row(f"{prefix}{i}", nummer=str(i + 1)) for i in range(n)]


def test_missing_drop_new_and_ok(ctx: Context, clock: Clock) -> None:
    for name, kind in (
        ("Huur BV", "huur"),
        ("Energie NV", "energie"),
        ("Zorg UA", "zorg"),
        ("Water NV", "water"),
    ):
        register(ctx, name, kind)
    clock.set_local(2026, 10, 10, 9, 0)
    deliver(ctx, "Huur BV", *_rows(10, "H"))
    deliver(ctx, "Energie NV", *_rows(10, "E"))
    deliver(ctx, "Water NV", *_rows(4, "W"))
    clock.set_local(2026, 11, 20, 12, 0)
    deliver(ctx, "Huur BV", *_rows(9, "H"))
    deliver(ctx, "Energie NV", *_rows(2, "E"))  # a fifth of its usual file
    deliver(ctx, "Zorg UA", *_rows(3, "Z"))  # its first month
    with ctx.sessions() as session:
        status = delivery_status(session, ctx)
    assert status["period"] == "2026-11"
    assert status["window_open"] is True
    assert status["days_left"] == 4  # until 25 November, 00:00
    flags = {p["partner"]["name"]: p["flag"] for p in status["partners"]}
    assert flags == {"Huur BV": "ok", "Energie NV": "drop", "Zorg UA": "new", "Water NV": "missing"}
    energie = next(p for p in status["partners"] if p["partner"]["name"] == "Energie NV")
    assert energie["previous_rows"] == {"2026-08": None, "2026-09": None, "2026-10": 10}
    assert energie["change"] == -0.8
    assert status["summary"] == {"ok": 1, "new": 1, "drop": 1, "missing": 1}
    with ctx.sessions() as session:
        october = delivery_status(session, ctx, Period(2026, 10))
    assert october["window_open"] is False
    assert october["days_left"] == 0
