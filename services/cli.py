"""The ``vroegsignaal`` command: one entry point with subcommands; ``--json`` for scripts."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.errors import AppError

app = typer.Typer(
    help="vroegsignaal: early warning of payment arrears for Dutch municipalities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
partners_app = typer.Typer(
    help="Partners, their API keys, client certificates and SSH keys.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(partners_app, name="partners")
staff_app = typer.Typer(help="Municipal staff, their roles and API keys.", no_args_is_help=True)
teams_app = typer.Typer(help="Wijkteams and the postcodes they cover.", no_args_is_help=True)
export_app = typer.Typer(help="Exports in national formats.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys: new, status, rotate.", no_args_is_help=True)
deliveries_app = typer.Typer(help="The partners' deliveries.", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(keys_app, name="keys")
app.add_typer(staff_app, name="staff")
app.add_typer(teams_app, name="teams")
app.add_typer(export_app, name="export")
app.add_typer(audit_app, name="audit")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def emit(data: Any, as_json: bool, human: Callable[[], None] | None = None) -> None:
    """JSON on stdout for scripts, or the human rendering."""
    if as_json or human is None:
        typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    else:
        human()


def fail(exc: AppError, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(exc.problem(), ensure_ascii=False), err=True)
    else:
        typer.echo(f"error: {exc.detail}", err=True)
    raise typer.Exit(1)


_open_contexts: list[Any] = []


@app.callback()
def _main(cli: typer.Context) -> None:
    """Close the database connections a command opened when it ends."""
    cli.call_on_close(_close_contexts)


def _close_contexts() -> None:
    while _open_contexts:
        _open_contexts.pop().engine.dispose()


def _audit(
    session: Any,
    ctx: Any,
    action: str,
    object_type: str,
    object_id: object,
    details: dict[str, Any] | None = None,
) -> None:
    """An audit event for a change made from the command line (actor ``cli``)."""
    from shared import audit

    audit.record(
        session,
        action=action,
        now=ctx.now(),
        object_type=object_type,
        object_id=object_id,
        details=details,
        system_actor="cli",
    )


def _context() -> Any:
    """The application context for one command (closed by ``_main`` when the command ends)."""
    from shared.context import build_context

    context = build_context()
    _open_contexts.append(context)
    return context


# --- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    as_json: JsonOption = False,
) -> None:
    """Create or upgrade the schema (run this first, and before every new release)."""
    from shared import migrate

    ctx = _context()
    migrate.upgrade(ctx.settings.resolved_database_url, revision)
    current = migrate.current_revision(ctx.engine)
    emit({"revision": current}, as_json, lambda: typer.echo(f"database at revision {current}"))


@db_app.command("downgrade")
def db_downgrade(revision: str, as_json: JsonOption = False) -> None:
    """Step the schema back to REVISION (e.g. -1, or base)."""
    from shared import migrate

    ctx = _context()
    migrate.downgrade(ctx.settings.resolved_database_url, revision)
    current = migrate.current_revision(ctx.engine)
    emit({"revision": current}, as_json, lambda: typer.echo(f"database at revision {current}"))


@db_app.command("current")
def db_current(as_json: JsonOption = False) -> None:
    """Show the schema revision and whether it is the newest."""
    from shared import migrate

    ctx = _context()
    current = migrate.current_revision(ctx.engine)
    head = migrate.head_revision(ctx.settings.resolved_database_url)
    data = {"revision": current, "head": head, "up_to_date": current == head}
    emit(data, as_json, lambda: typer.echo(f"revision {current} (head {head})"))


@db_app.command("recount")
def db_recount(as_json: JsonOption = False) -> None:
    """Count the cases again and repair the case lists' totals if any was wrong.

    The database keeps the totals itself; only a bulk load or repair that bypassed its triggers
    can leave them wrong. Safe to run at any time: writes to cases wait until it is done.
    """
    from services.routing.admin import recount_cases
    from shared.db import unit_of_work

    ctx = _context()
    with unit_of_work(ctx.sessions) as session:
        found = recount_cases(session)
        if found.wrong:
            _audit(session, ctx, "cases.recount", "case_counts", None, {"wrong": found.wrong})
    data = {"keys": found.keys, "wrong": found.wrong, "repaired": found.wrong > 0}
    emit(
        data,
        as_json,
        lambda: typer.echo(
            f"case counts: {found.keys} keys, "
            + (f"{found.wrong} were wrong and are repaired" if found.wrong else "all correct")
        ),
    )


# --- partners ---------------------------------------------------------------------------------


def _key_dict(new: Any) -> dict[str, Any]:
    return {
        "partner": {"id": str(new.partner.id), "name": new.partner.name, "kind": new.partner.kind},
        "key_id": new.key.key_id,
        "api_key": new.secret,
        "note": "the API key is shown once; store it now",
    }


@partners_app.command("add")
def partners_add(
    name: Annotated[str, typer.Option(help="The partner's name, e.g. 'Pré Wonen'.")],
    kind: Annotated[str, typer.Option(help="huur, energie, water or zorg.")],
    as_json: JsonOption = False,
) -> None:
    """Register a partner and print its first API key (once)."""
    from services.ingest.partners import add_partner
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            new = add_partner(session, name=name, kind=kind, now=ctx.now())
            _audit(
                session, ctx, "partner.add", "partner", new.partner.id, {"key_id": new.key.key_id}
            )
    except AppError as exc:
        fail(exc, as_json)
    data = _key_dict(new)
    emit(
        data,
        as_json,
        lambda: typer.echo(
            f"partner {new.partner.name} ({new.partner.kind}) registered: {new.partner.id}\n"
            f"API key (shown once, store it now): {new.secret}"
        ),
    )


def _certificate_dict(record: Any) -> dict[str, Any]:
    from shared.auth import certificate_key_id

    return {
        "id": str(record.id),
        "partner_id": str(record.partner_id),
        "fingerprint": record.fingerprint,
        "key_id": certificate_key_id(record.fingerprint),
        "label": record.label,
        "created_at": record.created_at.isoformat(),
        "last_used_at": record.last_used_at.isoformat() if record.last_used_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


@partners_app.command("list")
def partners_list(as_json: JsonOption = False) -> None:
    """List partners with their keys (ids and status only)."""
    from services.ingest import repository
    from shared.db import unit_of_work

    ctx = _context()
    with unit_of_work(ctx.sessions) as session:
        data: list[dict[str, Any]] = [
            {
                "id": str(p.id),
                "name": p.name,
                "kind": p.kind,
                "active": p.active,
                "keys": [
                    {
                        "key_id": k.key_id,
                        "label": k.label,
                        "created_at": k.created_at.isoformat(),
                        "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    }
                    for k in repository.keys_of_partner(session, p.id)
                ],
                "certificates": [
                    _certificate_dict(c) for c in repository.certificates_of_partner(session, p.id)
                ],
            }
            for p in repository.list_partners(session)
        ]

    def human() -> None:
        for p in data:
            live = sum(1 for k in p["keys"] if not k["revoked_at"])
            certs = sum(1 for c in p["certificates"] if not c["revoked_at"])
            typer.echo(
                f"{p['id']}  {p['kind']:<8} {p['name']}  ({live} active key(s), "
                f"{certs} active certificate(s))"
            )

    emit(data, as_json, human)


@partners_app.command("new-key")
def partners_new_key(
    partner: Annotated[str, typer.Option(help="Partner id or name.")],
    label: Annotated[str | None, typer.Option(help="A note on what the key is for.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Issue an extra key (rotation: issue, switch the partner over, revoke the old key)."""
    from services.ingest.partners import find_partner, new_partner_key
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            found = find_partner(session, partner)
            new = new_partner_key(session, found, now=ctx.now(), label=label)
            _audit(session, ctx, "key.issue", "api_key", new.key.key_id)
    except AppError as exc:
        fail(exc, as_json)
    emit(_key_dict(new), as_json, lambda: typer.echo(f"API key (shown once): {new.secret}"))


@partners_app.command("revoke-key")
def partners_revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after 'vsp_').")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a key: it stops working at once."""
    from services.ingest.partners import revoke_key
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            key = revoke_key(session, key_id, now=ctx.now())
            revoked_at = key.revoked_at
            _audit(session, ctx, "key.revoke", "api_key", key_id)
    except AppError as exc:
        fail(exc, as_json)
    data = {"key_id": key_id, "revoked_at": revoked_at.isoformat() if revoked_at else None}
    emit(data, as_json, lambda: typer.echo(f"key {key_id} revoked"))


@partners_app.command("add-cert")
def partners_add_cert(
    partner: Annotated[str, typer.Argument(help="Partner id or name.")],
    pem: Annotated[Path, typer.Option(help="The partner's client certificate (PEM file).")],
    label: Annotated[str | None, typer.Option(help="A note on what the certificate is.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a client certificate (mutual TLS through the proxy); prints its SHA-256
    fingerprint. Only the fingerprint is stored; a partner may have several certificates."""
    from services.ingest.partners import add_certificate, find_partner
    from shared.db import unit_of_work

    try:
        content = pem.read_bytes()
    except OSError:
        typer.echo(f"error: cannot read {pem}", err=True)
        raise typer.Exit(2) from None
    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            found = find_partner(session, partner)
            record = add_certificate(session, found, content, label=label, now=ctx.now())
            _audit(
                session,
                ctx,
                "certificate.add",
                "certificate",
                record.id,
                {"partner": str(found.id), "fingerprint": record.fingerprint},
            )
            data = _certificate_dict(record)
    except AppError as exc:
        fail(exc, as_json)
    emit(
        data,
        as_json,
        lambda: typer.echo(f"certificate added ({data['id']}), SHA-256 {data['fingerprint']}"),
    )


@partners_app.command("certs")
def partners_certs(
    partner: Annotated[str, typer.Argument(help="Partner id or name.")],
    as_json: JsonOption = False,
) -> None:
    """List a partner's client certificates (fingerprints and status)."""
    from services.ingest import repository
    from services.ingest.partners import find_partner
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            found = find_partner(session, partner)
            data = [
                _certificate_dict(c) for c in repository.certificates_of_partner(session, found.id)
            ]
    except AppError as exc:
        fail(exc, as_json)

    def human() -> None:
        for c in data:
            state = "revoked" if c["revoked_at"] else "active"
            typer.echo(f"{c['fingerprint']}  {state:<7} {c['label'] or ''}")

    emit(data, as_json, human)


@partners_app.command("revoke-cert")
def partners_revoke_cert(
    partner: Annotated[str, typer.Argument(help="Partner id or name.")],
    fingerprint: Annotated[
        str, typer.Argument(help="The certificate's SHA-256 fingerprint (colons allowed).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Revoke a client certificate: it stops working at once."""
    from services.ingest.partners import find_partner, revoke_certificate
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            found = find_partner(session, partner)
            record = revoke_certificate(session, found, fingerprint, now=ctx.now())
            _audit(
                session,
                ctx,
                "certificate.revoke",
                "certificate",
                record.id,
                {"partner": str(found.id), "fingerprint": record.fingerprint},
            )
            data = _certificate_dict(record)
    except AppError as exc:
        fail(exc, as_json)
    emit(data, as_json, lambda: typer.echo(f"certificate {data['fingerprint']} revoked"))


@partners_app.command("add-ssh-key")
def partners_add_ssh_key(
    partner: Annotated[str, typer.Option(help="Partner id or name.")],
    key_file: Annotated[Path, typer.Option(help="The partner's public key file (key.pub).")],
    label: Annotated[str | None, typer.Option(help="A note on whose key it is.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register an SSH public key for the SFTP drop (a partner may have several)."""
    from services.ingest.partners import find_partner
    from services.sftp.inbox import ensure_partner_folders
    from services.sftp.keys import add_ssh_key
    from shared.db import unit_of_work

    ctx = _context()
    try:
        text = key_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        typer.echo(f"error: cannot read {key_file}", err=True)
        raise typer.Exit(2) from None
    try:
        with unit_of_work(ctx.sessions) as session:
            found = find_partner(session, partner)
            record = add_ssh_key(session, found, text, label=label, now=ctx.now())
            _audit(session, ctx, "ssh_key.add", "ssh_key", record.id, {"partner": str(found.id)})
            data = {
                "id": str(record.id),
                "partner_id": str(found.id),
                "fingerprint": record.fingerprint,
                "folder": str(ensure_partner_folders(ctx.settings.resolved_sftp_root, found.id)),
            }
    except AppError as exc:
        fail(exc, as_json)
    emit(data, as_json, lambda: typer.echo(f"SSH key {data['fingerprint']} added ({data['id']})"))


@partners_app.command("ssh-keys")
def partners_ssh_keys(
    partner: Annotated[str, typer.Option(help="Partner id or name.")],
    as_json: JsonOption = False,
) -> None:
    """List a partner's SSH keys (fingerprints and status)."""
    from services.ingest.partners import find_partner
    from services.sftp.keys import keys_of_partner
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            found = find_partner(session, partner)
            data = [
                {
                    "id": str(k.id),
                    "fingerprint": k.fingerprint,
                    "label": k.label,
                    "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in keys_of_partner(session, found.id)
            ]
    except AppError as exc:
        fail(exc, as_json)

    def human() -> None:
        for k in data:
            typer.echo(f"{k['id']}  {k['fingerprint']}  {'revoked' if k['revoked_at'] else ''}")

    emit(data, as_json, human)


@partners_app.command("revoke-ssh-key")
def partners_revoke_ssh_key(
    key: Annotated[str, typer.Argument(help="The SSH key's id or fingerprint.")],
    as_json: JsonOption = False,
) -> None:
    """Revoke an SSH key: new logins with it are refused at once."""
    from services.sftp.keys import revoke_ssh_key
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            record = revoke_ssh_key(session, key, now=ctx.now())
            _audit(session, ctx, "ssh_key.revoke", "ssh_key", record.id)
            data = {
                "id": str(record.id),
                "fingerprint": record.fingerprint,
                "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
            }
    except AppError as exc:
        fail(exc, as_json)
    emit(data, as_json, lambda: typer.echo(f"SSH key {data['fingerprint']} revoked"))


# --- the monthly run --------------------------------------------------------------------------

EXIT_RUN_IN_PROGRESS = 3


def run_summary_lines(report: Any) -> list[str]:
    """The human summary of a run (figures only, no personal data)."""
    f = report.figures
    run = report.run
    lines = [
        f"run {run.id} for {run.period} (run date {run.run_date}, {run.duration_ms} ms)",
        "",
        f"  signals in                  {f['signals_in']:>7}",
        f"  stale (not matched)         {f['stale']:>7}",
        f"  below the minimum amount    {f['below_minimum']:>7}",
        f"  repeat signals              {f['repeat_signals']:>7}",
        f"  addresses with 2+ partners  {f['addresses_matched']:>7}",
        f"  cases                       {f['cases']:>7}",
        f"    of which rent only        {f['rent_only']:>7}",
        f"    with a crisis signal      {f['crisis']:>7}",
        f"    recidive                  {f['recidive']:>7}",
        f"      by earlier signals only {f['recidive_signals_only']:>7}",
        f"  single signals (by letter)  {f['singles']:>7}",
    ]
    classes = f.get("classification", {})
    lines.append(
        "  enkelvoudig / meervoudig / opeenvolgend: "
        f"{classes.get('enkelvoudig', 0)} / {classes.get('meervoudig', 0)} / "
        f"{classes.get('opeenvolgend', 0)}"
    )
    if f.get("stale_per_partner"):
        lines.append(f"  stale per partner: {f['stale_per_partner']}")
    missing = f.get("partners_without_delivery") or []
    lines.append("  partners without a delivery: " + (", ".join(missing) if missing else "none"))
    return lines


def _progress(as_json: bool) -> Callable[[str], None]:
    """A run's progress lines, to standard error (not with --json)."""

    def progress(message: str) -> None:
        if not as_json:
            typer.echo(f"... {message}", err=True)

    return progress


def _day_option(value: str | None) -> date | None:
    """An ``--as-of`` day; exit 2 when it is not YYYY-MM-DD."""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        typer.echo("error: --as-of must be YYYY-MM-DD", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _run_errors(as_json: bool) -> Iterator[None]:
    """A run's refusals: another run of the period in progress exits 3, others as problems."""
    from services.matcher.service import RunInProgress

    try:
        yield
    except RunInProgress as exc:
        if as_json:
            typer.echo(json.dumps(exc.problem()), err=True)
        else:
            typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(EXIT_RUN_IN_PROGRESS) from None
    except AppError as exc:
        fail(exc, as_json)


@app.command("run")
def run_cmd(
    period: Annotated[
        str | None, typer.Option(help="YYYY-MM; default the period whose window closed last.")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="Run date YYYY-MM-DD for freshness (default today).")
    ] = None,
    rerun: Annotated[
        bool, typer.Option(help="Refresh a completed period's cases, keeping recorded work.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Match a closed period: addresses with two or more arrears, rent and crisis become cases."""
    from services.matcher.service import run_period
    from shared.logs import configure_logging

    configure_logging()  # a warning of the run, as a JSON line on stderr (cron keeps it)
    ctx = _context()
    run_date = _day_option(as_of)
    with _run_errors(as_json):
        report = run_period(
            ctx, period=period, as_of=run_date, rerun=rerun, progress=_progress(as_json)
        )
    data = {
        "status": "already_done" if report.already_done else "completed",
        "run_id": str(report.run.id),
        "period": report.run.period,
        "run_date": report.run.run_date.isoformat(),
        "rerun": report.run.rerun,
        "duration_ms": report.run.duration_ms,
        "figures": report.figures,
    }

    def human() -> None:
        if report.already_done:
            typer.echo(
                f"period {report.run.period} is done (run {report.run.id}); "
                "use --rerun to refresh its cases"
            )
            return
        for line in run_summary_lines(report):
            typer.echo(line)

    emit(data, as_json, human)


@app.command("crisis")
def crisis_cmd(
    as_of: Annotated[
        str | None, typer.Option(help="Day YYYY-MM-DD for freshness and due dates (default today).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make the cases of the crisis signals delivered so far, at once (daily; see the README).
    Exits 3 when another run held a period's lock (the other period was still done)."""
    from services.matcher.service import crisis_run
    from shared.logs import configure_logging

    configure_logging()
    ctx = _context()
    day = _day_option(as_of)
    with _run_errors(as_json):
        reports = crisis_run(ctx, as_of=day, progress=_progress(as_json))
    data = [
        {
            "period": r.period,
            "run_id": str(r.run.id) if r.run else None,
            "cases": 0 if r.run is None else r.figures["cases"],
            "figures": r.figures,
        }
        for r in reports
    ]

    def human() -> None:
        for r in reports:
            if r.figures.get("monthly_run_done"):
                typer.echo(f"{r.period}: its monthly run is done")
            elif r.figures.get("run_in_progress"):
                typer.echo(f"{r.period}: another run of the period holds its lock; not done")
            elif r.run is None:
                signals = r.figures["crisis_signals"]
                typer.echo(f"{r.period}: no new crisis case ({signals} crisis signals)")
            else:
                routes = ", ".join(f"{k} {v}" for k, v in r.figures["routes"].items())
                typer.echo(f"{r.period}: {r.figures['cases']} crisis case(s) made ({routes})")

    emit(data, as_json, human)
    if any(r.figures.get("run_in_progress") for r in reports):
        raise typer.Exit(EXIT_RUN_IN_PROGRESS)  # the other period was done: run again soon


# --- serving, data, demo ------------------------------------------------------------------------


def served_app() -> Any:
    """The application as ``serve`` runs it; with ``--workers`` uvicorn calls this (an import
    string factory) in each worker process, which gets a context (and connection pool) of its own.

    What the process has built by then (modules, the application) lives as long as the process:
    it is moved out of the garbage collector's reach (``gc.freeze``), so that a full collection,
    which comes in the middle of some request, no longer walks it (about 95 ms instead of 6 ms).
    """
    import gc

    from services.app import create_app
    from services.deps import behind_proxies
    from shared.context import build_context
    from shared.logs import configure_logging

    configure_logging()
    ctx = build_context()
    served = behind_proxies(create_app(ctx), ctx.settings.trusted_proxies)
    gc.collect()
    gc.freeze()
    return served


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default VS_API_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default VS_API_PORT, 8000).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes (one per core). Each has its own connection pool and rate "
            "limits, as separate replicas would.",
        ),
    ] = 1,
) -> None:
    """Run the HTTP API (partner portal) with uvicorn.

    Idle keep-alive connections stay open VS_HTTP_KEEP_ALIVE_SECONDS (default 75 s): longer than
    the proxy in front keeps its own to the API, so that the API never closes one the proxy is
    about to reuse.

    Forwarded headers (the client certificate, X-Forwarded-For) are believed only from
    VS_TRUSTED_PROXIES, checked against the connection's own peer (services.deps.behind_proxies);
    uvicorn's own proxy handling (FORWARDED_ALLOW_IPS) is switched off.
    """
    import logging
    import os

    import uvicorn

    from shared.logs import configure_logging
    from shared.settings import get_settings

    configure_logging()
    settings = get_settings()
    keep_alive = settings.http_keep_alive_seconds
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        logging.getLogger("vroegsignaal.api").warning(
            "forwarded_allow_ips_ignored", extra={"hint": "set VS_TRUSTED_PROXIES instead"}
        )
    uvicorn.run(
        "services.cli:served_app" if workers > 1 else served_app(),
        factory=workers > 1,
        workers=workers,
        http="services.middleware:NoDelayHTTPProtocol",
        host=host or settings.api_host,
        port=port or settings.api_port,
        proxy_headers=False,
        log_config=None,
        access_log=False,
        timeout_keep_alive=keep_alive,
    )


@app.command("sftp")
def sftp_cmd(
    host: Annotated[str | None, typer.Option(help="Address (default VS_SFTP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default VS_SFTP_PORT, 2222).")] = None,
) -> None:
    """Run the SFTP drop for partners that deliver files (public-key login only)."""
    from services.sftp.server import serve_forever
    from shared.logs import configure_logging

    configure_logging()
    ctx = _context()
    serve_forever(ctx, host or ctx.settings.sftp_host, port or ctx.settings.sftp_port)


@app.command("sftp-watch")
def sftp_watch_cmd(
    root: Annotated[
        Path | None, typer.Option(help="The partner folders (default VS_SFTP_ROOT).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between scans.")] = 5.0,
    once: Annotated[
        bool,
        typer.Option(
            help="One scan, then exit (for cron): a file counts as complete when its name is "
            "final and it was last written VS_SFTP_SETTLE_SECONDS ago or more."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ingest complete files from the partner folders when OpenSSH serves SFTP."""
    from services.sftp.watch import Watcher
    from shared.logs import configure_logging

    configure_logging()
    ctx = _context()
    folder = root or ctx.settings.resolved_sftp_root
    watcher = Watcher(ctx, folder, settle_seconds=ctx.settings.sftp_settle_seconds)
    if not once:
        watcher.run(interval)
        return
    done = watcher.scan()
    data = [{"file": o.name, "status": o.status} for o in done]

    def human() -> None:
        for o in done:
            typer.echo(f"{o.status:<9} {o.name}")

    emit(data, as_json, human)


@app.command("scheduler")
def scheduler_cmd() -> None:
    """Run the monthly run, the daily crisis run and the daily purge on schedule (for hosts
    without cron)."""
    from services.scheduler import loop
    from shared.logs import configure_logging

    configure_logging()
    with contextlib.suppress(KeyboardInterrupt):
        loop(_context())


@app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option(help="Folder to write the files to.")],
    households: Annotated[int, typer.Option(help="Households in the population.")] = 2000,
    months: Annotated[int, typer.Option(help="Number of monthly periods.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 1,
    first_period: Annotated[
        str | None, typer.Option(help="First period YYYY-MM (default: ends at the open period).")
    ] = None,
    invalid_rows: Annotated[int, typer.Option(help="Broken rows per file.")] = 0,
    per_kind: Annotated[
        int, typer.Option(help="Partners per kind (0: the demo municipality's five).")
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """Write realistic, messy synthetic partner files (deterministic for a seed)."""
    from services.ingest.generate import demo_partners, generate, national_partners
    from shared.periods import open_period

    ctx = _context()
    if first_period is None:
        first_period = str(
            open_period(ctx.now(), ctx.settings.delivery_deadline_day, ctx.tz).shift(1 - months)
        )
    partners = national_partners(per_kind) if per_kind > 0 else demo_partners()
    files = generate(
        out,
        households=households,
        months=months,
        seed=seed,
        partners=partners,
        first_period=first_period,
        invalid_rows=invalid_rows,
    )
    data = [
        {
            "partner": f.partner.name,
            "kind": f.partner.kind,
            "period": f.period,
            "path": str(f.path),
            "rows": f.rows,
            "invalid_rows": f.invalid_rows,
        }
        for f in files
    ]

    def human() -> None:
        for f in data:
            typer.echo(f"{f['period']}  {f['rows']:>8} rows  {f['path']}")

    emit(data, as_json, human)


@app.command("demo")
def demo_cmd(
    fresh: Annotated[bool, typer.Option(help="Start from an empty demo database.")] = True,
) -> None:
    """Run two monthly cycles on the embedded SQLite default and show the result."""
    from services.demo import run_demo

    sys.exit(run_demo(fresh=fresh))


# --- teams and staff ----------------------------------------------------------------------------


def _team_dict(session: Any, team: Any) -> dict[str, Any]:
    from services.routing.admin import team_areas

    return {
        "id": str(team.id),
        "name": team.name,
        "default": team.is_default,
        "postcodes": team_areas(session, team),
    }


@teams_app.command("add")
def teams_add(
    name: Annotated[str, typer.Option(help="The team's name, e.g. noord.")],
    postcodes: Annotated[
        str | None,
        typer.Option(help="PC4 ranges, PC4s and PC6s, e.g. 2011-2015,2021,2024AB."),
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Take the addresses in no team's area.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Register a wijkteam and the area it covers."""
    from services.routing.admin import add_team
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            team = add_team(session, name=name, postcodes=postcodes, default=default, now=ctx.now())
            data = _team_dict(session, team)
            _audit(session, ctx, "team.add", "team", team.id)
    except AppError as exc:
        fail(exc, as_json)
    emit(
        data,
        as_json,
        lambda: typer.echo(
            f"team {data['name']} ({data['id']}): {', '.join(data['postcodes']) or '-'}"
            + (" [default]" if data["default"] else "")
        ),
    )


@teams_app.command("list")
def teams_list(as_json: JsonOption = False) -> None:
    """List the teams and their areas."""
    from services.routing.admin import list_teams
    from shared.db import unit_of_work

    ctx = _context()
    with unit_of_work(ctx.sessions) as session:
        data = [_team_dict(session, t) for t in list_teams(session)]

    def human() -> None:
        for t in data:
            flag = " [default]" if t["default"] else ""
            typer.echo(f"{t['name']:<16} {', '.join(t['postcodes']) or '-'}{flag}")

    emit(data, as_json, human)


@staff_app.command("add")
def staff_add(
    name: Annotated[str, typer.Option(help="Name of the person or shared team account.")],
    role: Annotated[str, typer.Option(help="sdv, wijkteam, budgetcoach, coordinator or admin.")],
    team: Annotated[str | None, typer.Option(help="The team (role wijkteam only).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a staff member and print the API key (once)."""
    from services.routing.admin import add_staff
    from shared.db import unit_of_work

    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            new = add_staff(session, name=name, role=role, team=team, now=ctx.now())
            _audit(
                session,
                ctx,
                "staff.add",
                "staff",
                new.staff.id,
                {"role": new.staff.role, "key_id": new.key.key_id},
            )
    except AppError as exc:
        fail(exc, as_json)
    data = {
        "staff": {
            "id": str(new.staff.id),
            "name": new.staff.name,
            "role": new.staff.role,
            "team_id": str(new.staff.team_id) if new.staff.team_id else None,
        },
        "key_id": new.key.key_id,
        "api_key": new.secret,
        "note": "the API key is shown once; store it now",
    }
    emit(
        data,
        as_json,
        lambda: typer.echo(
            f"{new.staff.name} ({new.staff.role}) registered: {new.staff.id}\n"
            f"API key (shown once, store it now): {new.secret}"
        ),
    )


@staff_app.command("list")
def staff_list(as_json: JsonOption = False) -> None:
    """List staff members (no keys)."""
    from services.routing.admin import list_staff
    from shared.db import unit_of_work

    ctx = _context()
    with unit_of_work(ctx.sessions) as session:
        data = [
            {
                "id": str(s.id),
                "name": s.name,
                "role": s.role,
                "team_id": str(s.team_id) if s.team_id else None,
                "active": s.active,
            }
            for s in list_staff(session)
        ]

    def human() -> None:
        for s in data:
            typer.echo(f"{s['id']}  {s['role']:<12} {s['name']}")

    emit(data, as_json, human)


@staff_app.command("revoke-key")
def staff_revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after 'vss_').")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a staff key: it stops working at once."""
    partners_revoke_key(key_id, as_json)


# --- exports ----------------------------------------------------------------------------------


@export_app.command("singles")
def export_singles(
    out: Annotated[Path, typer.Option(help="The file to write (mode 0600, written atomically).")],
    period: Annotated[
        str | None,
        typer.Option(help="YYYY-MM (default: the latest period with a completed run)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the addresses with a single signal, owed an offer of help by letter, as a CSV
    file for a mail merge (one line per address, ';', UTF-8): GET /api/v1/singles in one go."""
    from services.routing.singles import count_addresses, each_single, judged, write_csv
    from shared.db import unit_of_work
    from shared.errors import NotFound
    from shared.files import private_file
    from shared.periods import Period

    try:
        wanted = str(Period.parse(period)) if period else None
    except AppError:
        typer.echo("error: --period is YYYY-MM", err=True)
        raise typer.Exit(2) from None
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        typer.echo(f"error: cannot write in {out.parent}", err=True)
        raise typer.Exit(2)
    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            found = judged(session, wanted)
            period_, run_id = found.run.period, found.run.id
            counted = count_addresses(session, found)
            details = {"period": period_, "addresses": counted}
            # The event commits before a byte is written, as the DDAS export's: no export, nor
            # a half-written one left by a crash, is on disk without its event (a failed write
            # leaves an event for a file that is not there).
            _audit(session, ctx, "export.singles", "run", run_id, details)
            session.commit()
            with private_file(out) as handle:
                count = write_csv(each_single(session, ctx, found), handle)
    except NotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    data = {
        "file": str(out),
        "period": period_,
        "run_id": str(run_id),
        "addresses": count,
        "audited_addresses": counted,
        "deliveries_since_run": found.deliveries_since_run,
    }

    def human() -> None:
        typer.echo(f"wrote {out}: {count} addresses with a single signal in {period_}")
        if count != counted:  # a rerun or a purge between the count and the file
            typer.echo(
                f"note: the audit event counted {counted} addresses; the list changed while it "
                f"was written",
                err=True,
            )
        if found.deliveries_since_run:
            typer.echo(
                f"note: {found.deliveries_since_run} delivery(ies) of {period_} came "
                "after its run and are not in the file: rerun the period to include them"
            )

    emit(data, as_json, human)


@export_app.command("ddas")
def export_ddas(
    from_: Annotated[str, typer.Option("--from", help="First signal date, YYYY-MM-DD.")],
    to: Annotated[str, typer.Option("--to", help="Last signal date, YYYY-MM-DD.")],
    gemeentecode: Annotated[str, typer.Option(help="The CBS municipality code, e.g. 0392.")],
    out: Annotated[Path, typer.Option(help="The file to write (mode 0600, written atomically).")],
    organisatie: Annotated[
        str | None, typer.Option(help="Name of the delivering organisation.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the signals and cases of a date range in the DDAS Vroegsignalering v1.2 format."""
    from services.routing.ddas import build_export, write_export
    from shared.db import unit_of_work

    try:
        start, end = date.fromisoformat(from_), date.fromisoformat(to)
    except ValueError:
        typer.echo("error: --from and --to are dates, YYYY-MM-DD", err=True)
        raise typer.Exit(2) from None
    ctx = _context()
    try:
        with unit_of_work(ctx.sessions) as session:
            document = build_export(
                session,
                ctx.cipher,
                start=start,
                end=end,
                gemeentecode=gemeentecode,
                now=ctx.now(),
                organisatie=organisatie,
            )
            levering = document["leveringen"][0] if document.get("leveringen") else {}
            counts = {
                "vroegsignalen": len(levering.get("vroegsignalen", [])),
                "vroegsignaalzaken": len(levering.get("vroegsignaalzaken", [])),
            }
            # The audit event commits before the file is written: an export is never on disk
            # without its event (a failed write leaves an event for a file that is not there).
            _audit(session, ctx, "export.ddas", "export", f"{start}..{end}", counts)
        write_export(document, out)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    data = {"file": str(out), "from": str(start), "to": str(end), **counts}
    emit(
        data,
        as_json,
        lambda: typer.echo(
            f"wrote {out}: {counts['vroegsignalen']} signals, "
            f"{counts['vroegsignaalzaken']} cases (DDAS Vroegsignalering v1.2)"
        ),
    )


@deliveries_app.command("status")
def deliveries_status(
    period: Annotated[str | None, typer.Option(help="YYYY-MM; default the open period.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Per partner: arrived or not, rows against its previous months, days left to the deadline."""
    from services.ingest.monitor import delivery_status
    from shared.periods import Period

    ctx = _context()
    try:
        wanted = Period.parse(period) if period else None
    except (ValueError, AppError):
        typer.echo("error: --period is YYYY-MM", err=True)
        raise typer.Exit(2) from None
    with ctx.sessions() as session:
        data = delivery_status(session, ctx, wanted)

    def human() -> None:
        state = f"{data['days_left']} day(s) left" if data["window_open"] else "window closed"
        typer.echo(f"deliveries for {data['period']} (deadline {data['deadline']}, {state})")
        for item in data["partners"]:
            rows = item["rows"] if item["rows"] is not None else "-"
            average = item["average_rows"] if item["average_rows"] is not None else "-"
            typer.echo(
                f"  {item['flag']:<8} {item['partner']['name']:<34} rows {rows!s:>8}"
                f"   average before {average!s:>8}"
            )

    emit(data, as_json, human)


# --- retention and keys -------------------------------------------------------------------------


@app.command("purge")
def purge_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove personal data past its retention period (run daily by cron)."""
    from services.retention import purge
    from shared.db import unit_of_work

    ctx = _context()
    with unit_of_work(ctx.sessions) as session:
        report = purge(ctx, session, dry_run=dry_run)
        if not dry_run:
            _audit(session, ctx, "retention.purge", "retention", None, report.as_dict())
    data = report.as_dict()

    def human() -> None:
        verb = "would remove" if dry_run else "removed"
        typer.echo(f"retention: {verb} the personal data of")
        typer.echo(f"  {report.signals_without_case:>7} signals without a case")
        typer.echo(
            f"  {report.signals_of_closed_cases:>7} signals of cases closed before the cutoff"
        )
        typer.echo(f"  {report.case_pc6_hashes:>7} closed cases' PC6 hashes")
        typer.echo(f"  {report.contact_notes:>7} contact notes, {report.transfer_reasons} reasons")
        typer.echo(f"  {report.cases_deleted:>7} cases beyond the recidive window (deleted)")
        typer.echo(
            f"  {report.signalled_address_sets:>7} months of signalled addresses "
            "beyond it (deleted)"
        )
        typer.echo(f"cutoff {report.cutoff}; recidive window from {report.recidive_before_period}")

    emit(data, as_json, human)


@keys_app.command("new")
def keys_new(
    key_id: Annotated[str, typer.Option("--id", help="Id for the new key, e.g. k2026b.")],
) -> None:
    """Print a new keyring entry (put it first in VS_ENCRYPTION_KEYS, then run keys rotate)."""
    from services.keys import new_key_entry

    try:
        typer.echo(new_key_entry(key_id))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@keys_app.command("status")
def keys_status(as_json: JsonOption = False) -> None:
    """How many envelopes each encryption key still holds (no key material is shown)."""
    from services.keys import key_usage

    ctx = _context()
    usage = key_usage(ctx)
    data = {"active": ctx.cipher.active_key_id, "keyring": ctx.cipher.key_ids, "usage": usage}

    def human() -> None:
        typer.echo(f"active key: {data['active']}; keyring: {', '.join(ctx.cipher.key_ids)}")
        for place, counts in usage.items():
            text = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) or "none"
            typer.echo(f"  {place:<17} {text}")

    emit(data, as_json, human)


@keys_app.command("rotate")
def keys_rotate(
    batch: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Re-encrypt everything under the active (first) key, in batches, while the service runs."""
    from services.keys import rotate
    from shared.db import unit_of_work

    ctx = _context()

    def progress(message: str) -> None:
        if not as_json:
            typer.echo(f"... {message}", err=True)

    try:
        done = rotate(ctx, batch=batch, progress=progress)
    except AppError as exc:
        fail(exc, as_json)
    with unit_of_work(ctx.sessions) as session:
        _audit(session, ctx, "keys.rotate", "keyring", ctx.cipher.active_key_id, done)
    data = {"active": ctx.cipher.active_key_id, "re_encrypted": done}
    emit(data, as_json, lambda: typer.echo(f"re-encrypted under {data['active']}: {done}"))


# --- audit --------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(as_json: JsonOption = False) -> None:
    """Check the audit trail's hash chain: a changed, removed or reordered event is reported."""
    from shared import audit

    ctx = _context()
    with ctx.sessions() as session:
        checked, broken = audit.verify(session)
    data = {
        "events": checked,
        "intact": broken is None,
        "broken_at": broken.event_id if broken else None,
        "problem": broken.problem if broken else None,
    }

    def human() -> None:
        if broken is None:
            typer.echo(f"audit trail intact: {checked} events")
        else:
            typer.echo(f"audit trail BROKEN at event {broken.event_id}: {broken.problem}")

    emit(data, as_json, human)
    if broken is not None:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point. An unexpected error (a bug, the database gone) is shown by its type
    and where it happened, never its message: a driver's message may quote a statement's values
    or a row, and cron keeps what a command prints."""
    try:
        app()
    except AppError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        sys.exit(1)
    except Exception as exc:
        from shared.logs import exception_summary

        summary = exception_summary(exc)
        typer.echo(
            f"error: unexpected {summary['type']}; its message is not shown (it may quote "
            "personal data). Where: " + " > ".join(summary["where"]),
            err=True,
        )
        sys.exit(1)
