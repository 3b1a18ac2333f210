"""``make demo``: two monthly cycles for a fictional municipality, on the embedded SQLite default.

It creates a fresh database under ``data/demo/``, registers five partners (two housing
corporations, an energy supplier, a water company, a health insurer), three wijkteams and a key
per staff role, and generates two months of messy partner files with overlapping addresses. On a
simulated clock it then, for each of the two most recently closed periods: uploads the files
through the real HTTP API on loopback (the second month also shows an idempotent re-upload, a
rejected file's row report and SDV's client register), makes the crisis signals' cases on the
morning of the deadline day (the daily crisis run), and runs the month in the night after the
deadline, which matches and routes the cases. It shows the cases per route and team with their due
dates, a recidive address carried over from the first month, a wijkteam recording contact
attempts and closing cases (the protocol refusing an early "no contact"), writes the DDAS export
and verifies the audit trail. What it prints is counts, ids, PC4s and row problems: no personal
data.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

from services.cli import run_summary_lines
from services.ingest.generate import PartnerSpec, demo_partners, generate
from services.ingest.partners import add_partner
from services.matcher.service import crisis_run, run_period
from services.routing.admin import add_staff, add_team
from services.routing.ddas import build_export, write_export
from shared import audit, migrate
from shared.context import Context, build_context
from shared.crypto import signal_aad
from shared.db import unit_of_work
from shared.models import Case, Delivery, DeliveryStatus, Signal, signal_in_delivery
from shared.periods import Period, last_closed_period
from shared.settings import Settings

DEMO_DIR = Path("data/demo")
HOUSEHOLDS = 3000
SEED = 2026


@dataclass
class DemoPartner:
    spec: PartnerSpec
    key: str


def _say(text: str = "") -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say()
    _say(text)
    _say("-" * len(text))


@contextmanager
def serve(ctx: Context) -> Iterator[str]:
    """The real API under uvicorn on a free loopback port, for the duration of the block."""
    import socket

    import uvicorn

    from services.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(ctx),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the demo server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _prepare(fresh: bool, clock: DemoClock) -> Context:
    db_path = DEMO_DIR / "vroegsignaal.sqlite"
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        environment="development",
        data_dir=DEMO_DIR,
        database_url=f"sqlite:///{db_path}",
    )
    migrate.upgrade(settings.resolved_database_url)
    return build_context(settings, clock=clock)


def _register(ctx: Context) -> list[DemoPartner]:
    partners = []
    with unit_of_work(ctx.sessions) as session:
        for spec in demo_partners():
            new = add_partner(session, name=spec.name, kind=spec.kind, now=ctx.now())
            partners.append(DemoPartner(spec, new.secret))
    return partners


def _upload(base: str, key: str, path: Path) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as c, path.open("rb") as fh:
        return c.post("/api/v1/deliveries", files={"file": (path.name, fh)})


class DemoClock:
    """The demo's settable clock: it walks through two delivery months and their runs."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.current

    def set_local(self, day: date, hour: int, tz: ZoneInfo) -> None:
        self.current = datetime.combine(day, datetime.min.time(), tz).replace(hour=hour)
        self.current = self.current.astimezone(UTC)


def run_demo(fresh: bool = True) -> int:
    """Run the demo; returns the process exit code."""
    os.environ.setdefault("VS_ENVIRONMENT", "development")
    clock = DemoClock()
    ctx = _prepare(fresh, clock)
    tz, deadline_day = ctx.tz, ctx.settings.delivery_deadline_day
    second = last_closed_period(ctx.now(), deadline_day, tz)
    first = second.shift(-1)
    _heading(f"vroegsignaal demo: the months {first} and {second} for a fictional municipality")
    _say(f"database: {ctx.settings.resolved_database_url} (personal data encrypted, AES-GCM)")
    _say(
        "The demo runs on a simulated clock: each month the partners deliver on the 24th, the "
        f"window closes on the {deadline_day}th and the run follows in the night after."
    )

    partners = _register(ctx)
    for p in partners:
        _say(f"registered partner {p.spec.name:<32} kind {p.spec.kind:<8} (API key issued once)")
    staff = _organise(ctx)

    files = generate(
        DEMO_DIR / "files",
        households=HOUSEHOLDS,
        months=2,
        seed=SEED,
        partners=[p.spec for p in partners],
        first_period=str(first),
    )
    broken = generate(
        DEMO_DIR / "files-broken",
        households=200,
        months=1,
        seed=SEED + 1,
        partners=[partners[0].spec],
        first_period=str(second),
        invalid_rows=3,
    )
    with serve(ctx) as base:
        for period in (first, second):
            clock.set_local(date(period.year, period.month, 24), 12, tz)
            _heading(f"{period}: uploads through the HTTP API (real server on loopback)")
            month = {f.partner.name: f for f in files if f.period == str(period)}
            for p in partners:
                gen = month[p.spec.name]
                response = _upload(base, p.key, gen.path)
                body = response.json()
                _say(
                    f"{response.status_code} {p.spec.name:<32} {gen.path.suffix[1:]:<4} "
                    f"{body.get('rows', 0):>5} rows, {body.get('warning_count', 0):>3} warnings"
                )
            if period == second:
                again = _upload(base, partners[1].key, month[partners[1].spec.name].path)
                _say(f"{again.status_code} the same file again: the stored delivery, no duplicates")
                _heading("A rejected file: nothing is stored, every problem is listed")
                rejected = _upload(base, partners[0].key, broken[0].path)
                problem = rejected.json()
                _say(f"{rejected.status_code} {problem['detail']}")
                for error in problem["errors"][:10]:
                    _say(f"    row {error['row']:>4}, column {error['column']}: {error['message']}")
                _sdv_register(ctx, base, staff["sdv"], str(period))
            _crisis_morning(ctx, clock, period.deadline(deadline_day, tz).astimezone(tz).date())
            run_day = period.deadline(deadline_day, tz).astimezone(tz).date() + timedelta(days=1)
            clock.set_local(run_day, 2, tz)
            _heading(f"{period}: the monthly run on {run_day} (matching, then routing)")
            report = run_period(ctx, period=str(period))
            for line in run_summary_lines(report):
                _say(line)
        _cases_per_route(base, staff["coordinator"], str(second))
        _singles(base, staff["sdv"], report.figures["singles"])
        _wijkteam_at_work(ctx, base, staff, clock, second)
    _export(ctx, second)
    with ctx.sessions() as session:
        checked, broken_at = audit.verify(session)
    _heading("Audit trail")
    _say(f"{checked} events, hash chain {'intact' if broken_at is None else 'BROKEN'}")
    _say()
    _say("Next: `make run` serves this API on http://127.0.0.1:8000/docs")
    ctx.engine.dispose()
    return 0


def _crisis_morning(ctx: Context, clock: DemoClock, day: date) -> None:
    """The daily crisis run at 07:00 on the deadline day: the closed period's crisis cases are
    made and routed at once, due in three working days, before the monthly run."""
    clock.set_local(day, 7, ctx.tz)
    _heading(f"{day}, 07:00: the daily crisis run (eviction or disconnection threatens)")
    for report in crisis_run(ctx):
        if report.run is None:
            continue
        with ctx.sessions() as session:
            due = session.scalars(
                sa.select(Case.due_date).where(Case.run_id == report.run.id).distinct()
            ).all()
        dates = ", ".join(sorted(str(d) for d in due if d is not None))
        _say(
            f"{report.period}: {report.figures['cases']} crisis case(s) made and routed at once, "
            f"due {dates} (three working days); the monthly run takes them in"
        )


def _organise(ctx: Context) -> dict[str, str]:
    """Three wijkteams over the municipality's postcodes, and one key per role."""
    teams = {"noord": "2011-2019", "midden": "2020-2029", "zuid": "2030-2037"}
    staff = {
        "sdv": ("Schuldhulp SDV", "sdv", None),
        "noord": ("Wijkteam Noord", "wijkteam", "noord"),
        "midden": ("Wijkteam Midden", "wijkteam", "midden"),
        "zuid": ("Wijkteam Zuid", "wijkteam", "zuid"),
        "budgetcoach": ("Budgetcoach", "budgetcoach", None),
        "coordinator": ("Coordinator vroegsignalering", "coordinator", None),
    }
    _heading("Teams and staff")
    with unit_of_work(ctx.sessions) as session:
        for name, postcodes in teams.items():
            add_team(
                session, name=name, postcodes=postcodes, default=name == "midden", now=ctx.now()
            )
            flag = " (default for addresses outside every area)" if name == "midden" else ""
            _say(f"wijkteam {name:<7} postcodes {postcodes}{flag}")
        keys = {
            label: add_staff(session, name=name, role=role, team=team, now=ctx.now()).secret
            for label, (name, role, team) in staff.items()
        }
    _say("staff keys issued for: " + ", ".join(name for name, _, _ in staff.values()))
    return keys


def _sdv_register(ctx: Context, base: str, key: str, period: str) -> None:
    """SDV uploads its client list: here, a sample of the month's addresses (decrypted locally,
    as SDV's own system would export them), so that some cases stay with SDV."""
    with ctx.sessions() as session:
        sample = session.execute(
            sa.select(Signal.pii, Signal.pii_key_id, Signal.delivery_id, Signal.row_number)
            .join(Delivery, signal_in_delivery())
            .where(Delivery.period == period, Delivery.status == DeliveryStatus.accepted)
            .order_by(Signal.id)
            .limit(400)
        ).all()
    clients = []
    for pii, key_id, delivery_id, row_number in sample[::10]:
        if pii is None or key_id is None:
            continue
        data = ctx.cipher.decrypt_json(pii, signal_aad(str(delivery_id), row_number), key_id)
        clients.append(
            {
                "postcode": data["postcode"],
                "huisnummer": str(data["huisnummer"]),
                "huisnummertoevoeging": data.get("huisnummer_suffix") or None,
            }
        )
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        response = client.put("/api/v1/sdv/clients", json={"clients": clients})
    _say(
        f"{response.status_code} SDV client register replaced: {response.json()['count']} "
        "households (stored as keyed hashes only)"
    )


def _short(case_id: str) -> str:
    """A case id to tell cases apart on screen: its random end (the start of a time-ordered id
    is the moment it was made, the same for a run's cases)."""
    return case_id[-8:]


def _cases_per_route(base: str, key: str, period: str) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            body = client.get(
                "/api/v1/cases", params={"period": period, "page": page, "page_size": 500}
            ).json()
            items += body["items"]
            if len(items) >= body["total"]:
                break
            page += 1
    _heading(f"{period}: cases per route and team (as the coordinator sees them)")
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        team = item["team"]["name"] if item["team"] else None
        groups.setdefault(f"{item['route']}{' / ' + team if team else ''}", []).append(item)
    for label in sorted(groups):
        cases = groups[label]
        dues = sorted({c["due_date"] for c in cases})
        flagged = sum(c["outside_areas"] for c in cases)
        extra = f", {flagged} outside every area" if flagged else ""
        _say(f"{label:<22} {len(cases):>4} cases, due {dues[0]} .. {dues[-1]}{extra}")
    _say()
    _say("The ten most urgent (priority: crisis, rent, partners, amount):")
    _say("  prio  route        team     pc4   kinds                    total     due         class")
    for c in items[:10]:
        team = c["team"]["name"] if c["team"] else "-"
        kinds = ",".join(c["kinds"])
        euros = f"{c['total_cent'] / 100:,.2f}"
        flag = " crisis" if c["has_crisis"] else ""
        _say(
            f"  {c['priority']:>4}  {c['route']:<12} {team:<8} {c['pc4']:<5} {kinds:<24} "
            f"{euros:>9}  {c['due_date']}  {c['classification']}{flag}"
        )
    recurrent = [c for c in items if c["is_recidive"]]
    if not recurrent:
        return
    _say()
    _say(
        f"recidive: {len(recurrent)} of the month's cases had a signal at their address in the "
        "six months before (each detail read is audited):"
    )
    # One of each kind where there is one: an earlier case, or an earlier signal alone.
    shown: set[bool] = set()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        for case in recurrent:
            detail = client.get(f"/api/v1/cases/{case['id']}").json()
            earlier = ", ".join(f"{r['period']} ({r['route']})" for r in detail["recidive"])
            if bool(earlier) in shown:
                continue
            shown.add(bool(earlier))
            periods = ", ".join(detail["signalled_before"]) or "the months before"
            before = (
                f"had a case before in {earlier}"
                if earlier
                else f"was signalled before in {periods}, without a case"
            )
            _say(
                f"  case {_short(case['id'])} (PC4 {case['pc4']}) {before}; "
                f"routed to {case['route']}"
            )
            if len(shown) == 2:
                break


def _singles(base: str, key: str, counted: int) -> None:
    """SDV's work list of the single signals: the addresses owed an offer of help by letter."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        body = client.get("/api/v1/singles", params={"page_size": 3}).json()
    _heading(f"{body['period']}: single signals, owed an offer of help by letter (SDV's list)")
    _say(
        f"{body['total']} addresses with a single signal (the run counted {counted}); "
        "GET /api/v1/singles gives each with its contact details (each page read is audited):"
    )
    for item in body["items"]:
        signals = ", ".join(
            f"{s['kind']} {s['bedrag_cent'] / 100:,.2f} since {s['achterstand_sinds']}"
            for s in item["signals"]
        )
        _say(f"  PC4 {item['address']['postcode'][:4]}: {signals}")


def _wijkteam_at_work(
    ctx: Context, base: str, staff: dict[str, str], clock: DemoClock, period: Period
) -> None:
    """Wijkteam Noord works two of its cases a week after the run."""
    headers = {"Authorization": f"Bearer {staff['noord']}"}
    _heading("Wijkteam Noord at work (contact attempts and closures, over the API)")
    run_day = clock().astimezone(ctx.tz).date()
    with httpx.Client(base_url=base, headers=headers) as client:
        cases = client.get("/api/v1/cases", params={"period": str(period)}).json()["items"]
        if len(cases) < 2:
            _say("Wijkteam Noord has fewer than two cases this month")
            return
        first, second = cases[0]["id"], cases[1]["id"]
        clock.set_local(run_day + timedelta(days=7), 18, ctx.tz)
        day = clock().astimezone(ctx.tz).date()
        no_contact = {"resultaat": "Definitief geen contact kunnen krijgen"}
        early = client.post(f"/api/v1/cases/{first}/close", json=no_contact)
        _say(
            f"{early.status_code} close case {_short(first)} without contact: "
            f"{early.json()['detail']}"
        )
        attempts = [
            {"soort": "Huisbezoek", "datum": str(day - timedelta(days=5)), "dagdeel": "Ochtend"},
            {"soort": "Telefoon", "datum": str(day - timedelta(days=5)), "dagdeel": "Middag"},
            {"soort": "Huisbezoek", "datum": str(day - timedelta(days=2)), "dagdeel": "Avond"},
            {"soort": "Telefoon", "datum": str(day), "dagdeel": "Ochtend"},
        ]
        for attempt in attempts:
            answer = client.post(f"/api/v1/cases/{first}/contact-attempts", json=attempt)
            _say(
                f"{answer.status_code} {attempt['soort']:<10} {attempt['datum']} "
                f"{attempt['dagdeel']}: not reached"
            )
        closed = client.post(f"/api/v1/cases/{first}/close", json=no_contact)
        _say(f"{closed.status_code} case {_short(first)} closed: {closed.json()['resultaat']}")
        visit = {"soort": "Huisbezoek", "datum": str(day), "dagdeel": "Middag", "bereikt": True}
        client.post(f"/api/v1/cases/{second}/contact-attempts", json=visit)
        advice = {"resultaat": "(Budget)advies en/of quick fix"}
        closed = client.post(f"/api/v1/cases/{second}/close", json=advice)
        _say(
            f"{closed.status_code} case {_short(second)} reached at home, closed: "
            f"{closed.json()['resultaat']}"
        )


def _export(ctx: Context, period: Period) -> None:
    start = period.shift(-1).first_day
    end = period.shift(1).first_day - timedelta(days=1)
    out = DEMO_DIR / f"ddas-{period}.json"
    with unit_of_work(ctx.sessions) as session:
        document = build_export(
            session,
            ctx.cipher,
            start=start,
            end=end,
            gemeentecode="9999",
            now=ctx.now(),
            organisatie="Gemeente Meerhaven (fictief)",
        )
        write_export(document, out)
        audit.record(
            session,
            action="export.ddas",
            now=ctx.now(),
            object_type="export",
            object_id=f"{start}..{end}",
            system_actor="demo",
        )
    levering = document["leveringen"][0]
    _heading("Reporting in the national format")
    _say(
        f"wrote {out}: {len(levering['vroegsignalen'])} signals and "
        f"{len(levering['vroegsignaalzaken'])} cases, DDAS Vroegsignalering v1.2 "
        f"({start} .. {end})"
    )
