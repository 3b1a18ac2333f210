"""``make demo``: one monthly cycle for a fictional municipality, on the embedded SQLite default.

It creates a fresh database under ``data/demo/``, registers five partners (two housing
corporations, an energy supplier, a water company, a health insurer), generates a realistic month
of messy partner files with overlapping addresses, uploads them through the real HTTP API on
loopback, shows one rejected file's row report and prints a summary. Everything it prints is
counts, ids and row problems: no personal data.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from services.ingest.generate import GeneratedFile, PartnerSpec, demo_partners, generate
from services.ingest.partners import add_partner
from shared import migrate
from shared.context import Context, build_context
from shared.db import unit_of_work
from shared.models import Delivery, DeliveryStatus, Signal
from shared.periods import open_period
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


def _prepare(fresh: bool) -> Context:
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
    return build_context(settings)


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


def run_demo(fresh: bool = True) -> int:
    """Run the demo; returns the process exit code."""
    os.environ.setdefault("VS_ENVIRONMENT", "development")
    ctx = _prepare(fresh)
    period = open_period(ctx.now(), ctx.settings.delivery_deadline_day, ctx.tz)
    _heading(f"vroegsignaal demo: the delivery month {period} for a fictional municipality")
    _say(f"database: {ctx.settings.resolved_database_url} (personal data encrypted, AES-GCM)")

    partners = _register(ctx)
    for p in partners:
        _say(f"registered partner {p.spec.name:<32} kind {p.spec.kind:<8} (API key issued once)")

    files_dir = DEMO_DIR / "files"
    files = generate(
        files_dir,
        households=HOUSEHOLDS,
        months=1,
        seed=SEED,
        partners=[p.spec for p in partners],
        first_period=str(period),
    )
    broken = generate(
        DEMO_DIR / "files-broken",
        households=200,
        months=1,
        seed=SEED + 1,
        partners=[partners[0].spec],
        first_period=str(period),
        invalid_rows=3,
    )
    by_name: dict[str, GeneratedFile] = {f.partner.name: f for f in files}

    _heading("Uploads through the HTTP API (real server on loopback)")
    with serve(ctx) as base:
        for p in partners:
            gen = by_name[p.spec.name]
            response = _upload(base, p.key, gen.path)
            body = response.json()
            _say(
                f"{response.status_code} {p.spec.name:<32} {gen.path.suffix[1:]:<4} "
                f"{body.get('rows', 0):>5} rows, {body.get('warning_count', 0):>3} warnings"
            )
        again = _upload(base, partners[1].key, by_name[partners[1].spec.name].path)
        _say(f"{again.status_code} the same file again: the stored delivery, nothing duplicated")

        _heading("A rejected file: nothing is stored, every problem is listed")
        rejected = _upload(base, partners[0].key, broken[0].path)
        problem = rejected.json()
        _say(f"{rejected.status_code} {problem['detail']}")
        for error in problem["errors"][:10]:
            _say(f"    row {error['row']:>4}, column {error['column']}: {error['message']}")

    _summary(ctx, str(period))
    return 0


def _summary(ctx: Context, period: str) -> None:
    _heading(f"Summary for {period}")
    with ctx.sessions() as session:
        current = (
            sa.select(Signal.address_hash, Signal.partner_id)
            .join(Delivery, Delivery.id == Signal.delivery_id)
            .where(Delivery.period == period, Delivery.status == DeliveryStatus.accepted)
        ).subquery()
        signals = session.scalar(sa.select(sa.func.count()).select_from(current)) or 0
        per_address = (
            sa.select(
                current.c.address_hash,
                sa.func.count(sa.distinct(current.c.partner_id)).label("partners"),
            )
            .group_by(current.c.address_hash)
            .subquery()
        )
        addresses = session.scalar(sa.select(sa.func.count()).select_from(per_address)) or 0
        multiple = (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(per_address)
                .where(per_address.c.partners >= 2)
            )
            or 0
        )
    _say(f"signals stored           {signals:>6}")
    _say(f"distinct addresses       {addresses:>6}")
    _say(f"addresses with 2+ partners {multiple:>4}  (matched on keyed address hashes only)")
    _say()
    _say("Next: `make run` serves this API on http://127.0.0.1:8000/docs")
