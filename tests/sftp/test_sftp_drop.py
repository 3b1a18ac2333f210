"""The SFTP drop with real clients on loopback: asyncssh's, and OpenSSH's `sftp` where installed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest
import sqlalchemy as sa

from services.ingest.partners import find_partner
from services.matcher.service import run_period
from services.sftp.inbox import UPLOAD_PREFIX, ensure_partner_folders, pending_files
from services.sftp.keys import add_ssh_key, revoke_ssh_key
from services.sftp.server import Processor, start_server
from services.sftp.watch import Watcher
from shared.context import Context
from shared.db import unit_of_work
from shared.models import AuditEvent, Delivery, Signal
from tests.conftest import AMSTERDAM, Clock
from tests.helpers import csv_file, register, row

T = TypeVar("T")


class ServerThread:
    """The SFTP endpoint on its own event loop in a thread, on a free loopback port."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.processor: Processor | None = None
        self.acceptor: asyncssh.SSHAcceptor | None = None
        self.port = 0

    def start(self) -> None:
        self.processor = Processor(self.ctx)
        future = asyncio.run_coroutine_threadsafe(
            start_server(self.ctx, host="127.0.0.1", port=0, processor=self.processor), self.loop
        )
        self.acceptor = future.result(timeout=30)
        self.port = self.acceptor.get_port()

    def stop(self) -> None:
        if self.acceptor is not None:
            acceptor = self.acceptor

            async def close() -> None:
                acceptor.close()
                await acceptor.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=30)
            self.acceptor = None
        if self.processor is not None:
            self.processor.close()
            self.processor = None

    def shutdown(self) -> None:
        self.stop()
        # Work the server handed to the loop's threads (a login's record) ends before the test's
        # database goes, as asyncio.run() waits for it in `vroegsignaal sftp`.
        asyncio.run_coroutine_threadsafe(self.loop.shutdown_default_executor(), self.loop).result(
            timeout=30
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Drop:
    ctx: Context
    server: ServerThread
    root: Path
    keys: dict[str, asyncssh.SSHKey]
    partner_ids: dict[str, uuid.UUID]

    def run(self, coro: Callable[[], Awaitable[T]]) -> T:
        return asyncio.run(coro())

    def connect(self, key: asyncssh.SSHKey) -> Any:
        return asyncssh.connect(
            "127.0.0.1",
            self.server.port,
            username="partner",
            client_keys=[key],
            known_hosts=None,
            agent_path=None,
            password=None,
            kbdint_auth=False,
        )

    def result(self, partner: str, name: str, timeout: float = 20) -> dict[str, Any]:
        path = self.root / str(self.partner_ids[partner]) / "outbox" / f"{name}.result.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for {name}")
            time.sleep(0.05)
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def inbox_after_processing(self, partner: str, timeout: float = 20) -> list[str]:
        """The partner's inbox once no complete file waits in it any more. The result is
        written before the file moves to ``processed/`` (a crash in between processes the
        file again, idempotently; the other order could lose its result), so right after the
        result appears the file may still be there for a moment."""
        inbox = self.root / str(self.partner_ids[partner]) / "inbox"
        deadline = time.monotonic() + timeout
        while pending_files(inbox.parent):
            if time.monotonic() > deadline:
                raise AssertionError("files still waiting in the inbox")
            time.sleep(0.05)
        return sorted(p.name for p in inbox.iterdir())

    def deliveries(self) -> int:
        with self.ctx.sessions() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(Delivery)) or 0)


@pytest.fixture
def drop(ctx: Context) -> Iterator[Drop]:
    keys: dict[str, asyncssh.SSHKey] = {}
    ids: dict[str, uuid.UUID] = {}
    for name, kind in (("Energiek", "energie"), ("Waterweg", "water")):
        register(ctx, name, kind)
        key = asyncssh.generate_private_key("ssh-ed25519")
        with unit_of_work(ctx.sessions) as session:
            partner = find_partner(session, name)
            public = key.export_public_key("openssh").decode()
            add_ssh_key(session, partner, public, label=None, now=ctx.now())
            ids[name] = partner.id
        keys[name] = key
    server = ServerThread(ctx)
    server.start()
    yield Drop(ctx, server, ctx.settings.resolved_sftp_root, keys, ids)
    server.shutdown()


GOOD = csv_file(row("E1"), row("E2", nummer="14"))
BAD = csv_file(row("E1", postcode="0000XX"), row("E2", bedrag="-5"))


async def _put(drop: Drop, partner: str, name: str, content: bytes) -> None:
    async with (
        drop.connect(drop.keys[partner]) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"inbox/{name}", "wb") as remote,
    ):
        await remote.write(content)


def test_upload_gives_a_result_with_the_delivery(drop: Drop) -> None:
    drop.run(lambda: _put(drop, "Energiek", "achterstanden_2026-11.csv", GOOD))
    result = drop.result("Energiek", "achterstanden_2026-11.csv")
    assert result["status"] == "accepted"
    assert result["delivery"]["rows"] == 2
    assert result["delivery"]["period"] == "2026-11"
    assert result["delivery"]["source"] == "sftp"
    with drop.ctx.sessions() as session:
        stored = session.get(Delivery, uuid.UUID(result["delivery"]["id"]))
        assert stored is not None
        assert stored.source == "sftp"
    processed = list((drop.root / str(drop.partner_ids["Energiek"]) / "processed").iterdir())
    assert [p.name.endswith("_achterstanden_2026-11.csv") for p in processed] == [True]


def test_an_invalid_file_gets_the_row_report_and_stores_nothing(drop: Drop) -> None:
    drop.run(lambda: _put(drop, "Energiek", "fout.csv", BAD))
    result = drop.result("Energiek", "fout.csv")
    assert result["status"] == "rejected"
    problem = result["problem"]
    assert problem["status"] == 422
    assert {(e["row"], e["column"]) for e in problem["errors"]} == {(2, "postcode"), (3, "bedrag")}
    assert drop.deliveries() == 0


def test_a_closed_period_in_the_name_is_refused_like_the_api(drop: Drop) -> None:
    drop.run(lambda: _put(drop, "Energiek", "oud_2026-09.csv", GOOD))
    result = drop.result("Energiek", "oud_2026-09.csv")
    assert result["status"] == "rejected"
    assert result["problem"]["status"] == 409
    assert result["problem"]["period"] == "2026-09"
    assert result["problem"]["open_period"] == "2026-11"


def test_the_same_file_again_does_not_duplicate(drop: Drop) -> None:
    drop.run(lambda: _put(drop, "Energiek", "maand.csv", GOOD))
    first = drop.result("Energiek", "maand.csv")
    outbox = drop.root / str(drop.partner_ids["Energiek"]) / "outbox" / "maand.csv.result.json"
    outbox.unlink()
    drop.run(lambda: _put(drop, "Energiek", "maand.csv", GOOD))
    second = drop.result("Energiek", "maand.csv")
    assert second["delivery"]["id"] == first["delivery"]["id"]
    assert second["created"] is False
    assert drop.deliveries() == 1
    with drop.ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Signal)) == 2


def test_a_large_file_spanning_many_writes_arrives_whole(drop: Drop) -> None:
    rows = [
        row(f"E{i}", nummer=str(1 + i % 500), postcode=f"{2011 + i // 500}AB")
        for i in range(30_000)
    ]
    content = csv_file(*rows)
    assert len(content) > 2_000_000  # far beyond one SFTP write

    async def put_in_pieces() -> None:
        async with (
            drop.connect(drop.keys["Energiek"]) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open("inbox/groot.csv", "wb") as remote,
        ):
            for start in range(0, len(content), 32_768):
                await remote.write(content[start : start + 32_768], start)

    drop.run(put_in_pieces)
    result = drop.result("Energiek", "groot.csv", timeout=120)
    assert result["status"] == "accepted", result
    assert result["delivery"]["rows"] == 30_000


def test_part_upload_is_ingested_once_renamed(drop: Drop) -> None:
    async def put_and_rename() -> None:
        async with drop.connect(drop.keys["Energiek"]) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("inbox/maand.csv.part", "wb") as remote:
                await remote.write(GOOD)
            await asyncio.sleep(0.3)
            assert sorted(await sftp.listdir("inbox")) == [".", "..", "maand.csv.part"]
            await sftp.rename("inbox/maand.csv.part", "inbox/maand.csv")

    drop.run(put_and_rename)
    assert drop.result("Energiek", "maand.csv")["status"] == "accepted"
    outbox = drop.root / str(drop.partner_ids["Energiek"]) / "outbox"
    assert sorted(p.name for p in outbox.iterdir()) == ["maand.csv.result.json"]


def test_unknown_and_revoked_keys_are_refused(drop: Drop) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")

    async def login(key: asyncssh.SSHKey) -> None:
        async with drop.connect(key):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        drop.run(lambda: login(stranger))
    with unit_of_work(drop.ctx.sessions) as session:
        fingerprint = drop.keys["Waterweg"].get_fingerprint("sha256")
        revoke_ssh_key(session, fingerprint, now=drop.ctx.now())
    with pytest.raises(asyncssh.PermissionDenied):
        drop.run(lambda: login(drop.keys["Waterweg"]))
    drop.run(lambda: login(drop.keys["Energiek"]))  # the other partner still gets in
    # Each refused connection is one failed authentication in the audit trail (written beside
    # the connection's end); nothing of the key is recorded.
    deadline = time.monotonic() + 10
    while len(refusals := _audit_events(drop.ctx, "auth.failed")) < 2:
        assert time.monotonic() < deadline, refusals
        time.sleep(0.02)
    assert [(e.outcome, e.actor_id, json.loads(e.details or "{}")) for e in refusals] == [
        (
            "denied",
            "unauthenticated",
            {"credential": "ssh_key", "reason": "not_registered", "route": "sftp"},
        )
    ] * 2


def test_failed_logins_are_limited_per_address_as_the_apis_failed_keys(
    drop: Drop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over VS_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE failed logins from one address, every key is
    refused until the limit refills (the test's clock stands still), and nothing more is
    written to the audit trail: a flood of logins cannot flood it."""
    drop.server.stop()
    monkeypatch.setattr(drop.ctx.settings, "rate_limit_auth_failures_per_minute", 2)
    drop.server.start()
    stranger = asyncssh.generate_private_key("ssh-ed25519")

    async def login(key: asyncssh.SSHKey) -> None:
        async with drop.connect(key):
            pass

    for _ in range(3):
        with pytest.raises(asyncssh.PermissionDenied):
            drop.run(lambda: login(stranger))
    with pytest.raises(asyncssh.PermissionDenied):  # a registered key too, from that address
        drop.run(lambda: login(drop.keys["Energiek"]))
    deadline = time.monotonic() + 10
    while len(_audit_events(drop.ctx, "auth.failed")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # the later refusals would have been written by now
    assert len(_audit_events(drop.ctx, "auth.failed")) == 2


def _audit_events(ctx: Context, action: str) -> list[AuditEvent]:
    with ctx.sessions() as session:
        return list(
            session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def test_a_download_of_an_original_is_audited_a_result_is_not(drop: Drop) -> None:
    """A processed original holds personal data in the clear; the outbox's results do not."""
    drop.run(lambda: _put(drop, "Energiek", "maand.csv", GOOD))
    drop.result("Energiek", "maand.csv")
    drop.inbox_after_processing("Energiek")
    (original,) = (drop.root / str(drop.partner_ids["Energiek"]) / "processed").iterdir()

    async def download() -> bytes:
        async with drop.connect(drop.keys["Energiek"]) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("outbox/maand.csv.result.json", "rb") as remote:
                await remote.read()
            async with sftp.open(f"processed/{original.name}", "rb") as remote:
                return bytes(await remote.read())

    assert drop.run(download) == GOOD
    (event,) = _audit_events(drop.ctx, "sftp.download")
    assert event.actor_type == "partner"
    assert event.actor_id == str(drop.partner_ids["Energiek"])
    assert event.credential is not None
    assert event.credential.startswith("ssh:")
    assert event.object_id == original.name.partition("_")[0]
    assert json.loads(event.details or "{}") == {"bytes": len(GOOD)}


def test_a_partner_sees_only_its_own_folder(drop: Drop) -> None:
    other = str(drop.partner_ids["Waterweg"])
    ensure_partner_folders(drop.root, other)
    (drop.root / other / "outbox" / "geheim.result.json").write_text("{}")

    async def explore() -> list[str]:
        async with drop.connect(drop.keys["Energiek"]) as conn, conn.start_sftp_client() as sftp:
            top = sorted(await sftp.listdir("/"))
            for path in (
                f"/{other}/outbox/geheim.result.json",
                f"../{other}/outbox/geheim.result.json",
                "outbox/../../x",
                "/etc/passwd",
                "inbox/../outbox",
            ):
                with pytest.raises(asyncssh.SFTPError):
                    await sftp.stat(path)
            for target in (f"../{other}/inbox/x.csv", "/tmp/x.csv", "outbox/x.csv", "x.csv"):
                with pytest.raises(asyncssh.SFTPError):
                    async with sftp.open(target, "wb") as remote:
                        await remote.write(b"x")
            with pytest.raises(asyncssh.SFTPError):
                await sftp.mkdir("inbox/sub")
            with pytest.raises(asyncssh.SFTPError):
                await sftp.symlink("/outbox", "inbox/link")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.realpath("..")
            assert await sftp.realpath("/inbox") == "/inbox"
            return top

    assert drop.run(explore) == [".", "..", "inbox", "outbox", "processed"]
    assert not Path("/tmp/x.csv").exists() or Path("/tmp/x.csv").stat().st_size != 1


def test_no_shell_no_commands_no_forwarding(drop: Drop) -> None:
    async def try_shell() -> None:
        async with drop.connect(drop.keys["Energiek"]) as conn:
            with pytest.raises((asyncssh.ChannelOpenError, asyncssh.ProcessError, OSError)):
                await conn.run("id", check=True)
            with pytest.raises((asyncssh.ChannelOpenError, OSError)):
                await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", 22)

    drop.run(try_shell)


def test_a_crash_mid_upload_leaves_no_delivery_and_restart_recovers(drop: Drop) -> None:
    async def abort_mid_upload() -> None:
        conn = await drop.connect(drop.keys["Energiek"])
        sftp = await conn.start_sftp_client()
        remote = await sftp.open("inbox/half.csv", "wb")
        await remote.write(GOOD[:40])
        conn.abort()

    host_key = drop.ctx.settings.resolved_sftp_host_key_file.read_bytes()
    drop.run(abort_mid_upload)
    base = drop.root / str(drop.partner_ids["Energiek"])
    time.sleep(0.3)
    drop.server.stop()
    leftovers = [p.name for p in (base / "inbox").iterdir()]
    assert all(name.startswith(UPLOAD_PREFIX) for name in leftovers)
    assert drop.deliveries() == 0
    # A complete file that arrived but was not ingested before the stop (a crash in between).
    (base / "inbox" / "wachtend.csv").write_bytes(GOOD)
    drop.server.start()
    assert drop.ctx.settings.resolved_sftp_host_key_file.read_bytes() == host_key  # kept
    assert drop.result("Energiek", "wachtend.csv")["status"] == "accepted"
    assert drop.inbox_after_processing("Energiek") == []
    assert drop.deliveries() == 1


@pytest.mark.skipif(shutil.which("sftp") is None, reason="OpenSSH's sftp program is not installed")
def test_openssh_sftp_client(drop: Drop, tmp_path: Path) -> None:
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(drop.keys["Waterweg"].export_private_key("openssh"))
    os.chmod(key_file, 0o600)
    upload = tmp_path / "water_2026-11.csv"
    upload.write_bytes(GOOD)
    batch = tmp_path / "batch"
    batch.write_text(
        f"cd inbox\nput {upload} water_2026-11.csv.part\n"
        "rename water_2026-11.csv.part water_2026-11.csv\nls /\n"
    )
    completed = subprocess.run(
        [
            "sftp",
            "-b",
            str(batch),
            "-i",
            str(key_file),
            "-P",
            str(drop.server.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "waterweg@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert drop.result("Waterweg", "water_2026-11.csv")["status"] == "accepted"


def test_watch_mode_picks_up_settled_files(ctx: Context) -> None:
    register(ctx, "Energiek", "energie")
    with ctx.sessions() as session:
        partner_id = find_partner(session, "Energiek").id
    root = ctx.settings.resolved_sftp_root
    base = ensure_partner_folders(root, partner_id)
    now = [100.0]
    watcher = Watcher(ctx, root, settle_seconds=5, monotonic=lambda: now[0])
    (base / "inbox" / "maand.csv").write_bytes(GOOD)
    (base / "inbox" / "bezig.csv.part").write_bytes(GOOD[:10])
    assert watcher.scan() == []  # just seen: it may still be growing
    now[0] += 6
    done = watcher.scan()
    assert [(o.name, o.status) for o in done] == [("maand.csv", "accepted")]
    assert (base / "outbox" / "maand.csv.result.json").exists()
    assert [p.name for p in (base / "inbox").iterdir()] == ["bezig.csv.part"]
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 1


def _lines(content: bytes, count: int) -> bytes:
    """The first ``count`` lines of a file: a cut that leaves a file that reads as whole."""
    return b"".join(content.splitlines(keepends=True)[:count])


@pytest.mark.parametrize("ending", ["connection lost", "connection closed", "session ended"])
def test_a_session_that_ends_mid_upload_ingests_nothing(drop: Drop, ending: str) -> None:
    """The session ends with the file still open, cut after a whole row: what arrived reads as
    a valid file of one row, but the client never said it was done. It is removed, not
    ingested, and the partner's current delivery stays as it was."""
    drop.run(lambda: _put(drop, "Energiek", "maand_2026-11.csv", GOOD))
    assert drop.result("Energiek", "maand_2026-11.csv")["delivery"]["rows"] == 2
    base = drop.root / str(drop.partner_ids["Energiek"])
    (base / "outbox" / "maand_2026-11.csv.result.json").unlink()
    bigger = csv_file(row("E1"), row("E2", nummer="14"), row("E3", nummer="16"))

    async def end_mid_upload() -> None:
        conn = await drop.connect(drop.keys["Energiek"])
        sftp = await conn.start_sftp_client()
        remote = await sftp.open("inbox/maand_2026-11.csv", "wb")
        await remote.write(_lines(bigger, 2))
        if ending == "connection lost":
            conn.abort()
        elif ending == "session ended":  # the SFTP session alone, the connection stays
            sftp.exit()
            await sftp.wait_closed()
            conn.close()
        else:
            conn.close()
        await conn.wait_closed()

    drop.run(end_mid_upload)
    deadline = time.monotonic() + 5
    while any((base / "inbox").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((base / "inbox").iterdir()) == []
    assert drop.server.processor is not None
    drop.server.processor.drain()
    assert not (base / "outbox" / "maand_2026-11.csv.result.json").exists()
    with drop.ctx.sessions() as session:
        current = session.scalars(sa.select(Delivery).where(Delivery.status == "accepted")).one()
    assert current.row_count == 2


def test_an_upload_may_not_grow_past_the_size_limit(
    drop: Drop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drop.ctx.settings, "max_upload_bytes", 4096)

    async def put_too_much() -> None:
        async with drop.connect(drop.keys["Energiek"]) as conn, conn.start_sftp_client() as sftp:
            remote = await sftp.open("inbox/groot.csv", "wb")
            await remote.write(b"x" * 4096)
            with pytest.raises(asyncssh.SFTPFailure, match="at most 4096 bytes"):
                await remote.write(b"x", 4096)
            with pytest.raises(asyncssh.SFTPFailure):
                await remote.write(b"x", 10**12)  # not by writing far beyond the end either
            await remote.close()

    drop.run(put_too_much)
    # What was written within the limit is a complete file, and refused as any such file is.
    assert drop.result("Energiek", "groot.csv")["status"] == "rejected"


def test_a_file_uploaded_again_while_the_first_is_ingested_is_ingested_too(drop: Drop) -> None:
    """The first upload is claimed (moved out of the inbox) before it is read, so a second
    upload under the same name waits for its own turn and replaces the first delivery."""
    from services.sftp import inbox

    drop.server.stop()
    partner_id = drop.partner_ids["Energiek"]
    base = ensure_partner_folders(drop.root, partner_id)
    (base / "inbox" / "maand.csv").write_bytes(GOOD)
    claimed = inbox.claim(drop.ctx, base / "inbox" / "maand.csv")
    corrected = csv_file(row("E1"), row("E2", nummer="14"), row("E3", nummer="16"))
    (base / "inbox" / "maand.csv").write_bytes(corrected)  # arrives while the first is read
    first = inbox.process_claimed(drop.ctx, partner_id, claimed)
    assert first.status == "accepted"
    assert [p.name for p in (base / "inbox").iterdir()] == ["maand.csv"]
    second = inbox.process_file(drop.ctx, partner_id, base / "inbox" / "maand.csv")
    assert second.result["delivery"]["rows"] == 3
    assert second.result["delivery"]["replaces"] == first.result["delivery"]["id"]
    assert len(list((base / "processed").iterdir())) == 2


def test_a_file_claimed_before_a_crash_is_processed_at_the_next_start(drop: Drop) -> None:
    from services.sftp import inbox

    drop.server.stop()
    base = ensure_partner_folders(drop.root, drop.partner_ids["Energiek"])
    (base / "inbox" / "maand.csv").write_bytes(GOOD)
    inbox.claim(drop.ctx, base / "inbox" / "maand.csv")  # then the process died
    drop.server.start()
    assert drop.result("Energiek", "maand.csv")["status"] == "accepted"
    assert drop.server.processor is not None
    drop.server.processor.drain()
    assert [p.name.endswith("_maand.csv") for p in (base / "processed").iterdir()] == [True]
    assert not inbox.claimed_files(base)


def test_a_file_complete_before_the_deadline_counts_for_its_period(
    drop: Drop, clock: Clock
) -> None:
    """Its turn comes after the window closed (a queue, a restart): judged by when it was
    complete, it is on time."""
    from services.sftp import inbox

    drop.server.stop()
    partner_id = drop.partner_ids["Energiek"]
    base = ensure_partner_folders(drop.root, partner_id)
    clock.set_local(2026, 11, 25, 0, 5)
    (base / "inbox" / "maand.csv").write_bytes(GOOD)
    late = inbox.process_file(drop.ctx, partner_id, base / "inbox" / "maand.csv")
    assert late.result["delivery"]["period"] == "2026-12"  # judged by now: the next period
    (base / "inbox" / "nov.csv").write_bytes(csv_file(row("E7")))
    completed = datetime(2026, 11, 24, 23, 59, tzinfo=AMSTERDAM)
    on_time = inbox.process_file(
        drop.ctx, partner_id, base / "inbox" / "nov.csv", received_at=completed
    )
    assert on_time.result["delivery"]["period"] == "2026-11"
    assert on_time.result["delivery"]["received_at"].startswith("2026-11-24T23:05")  # stored: now
    # Once November's monthly run is done, its deliveries would never be matched: judged by now.
    clock.set_local(2026, 11, 26, 3, 0)
    run_period(drop.ctx)
    (base / "inbox" / "later.csv").write_bytes(csv_file(row("E8")))
    after_the_run = inbox.process_file(
        drop.ctx, partner_id, base / "inbox" / "later.csv", received_at=completed
    )
    assert after_the_run.result["delivery"]["period"] == "2026-12"


def test_processed_originals_are_deleted_after_the_days_kept(drop: Drop) -> None:
    from services.sftp import inbox

    base = ensure_partner_folders(drop.root, drop.partner_ids["Energiek"])
    processed = base / "processed"
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    old = processed / "20261112T115959000000Z_oud.csv"
    recent = processed / "20261114T000000000000Z_recent.csv"
    claimed = processed / ".claimed-20261101T000000000000Z_bezig.csv"
    for path in (old, recent, claimed):
        path.write_bytes(GOOD)
    assert inbox.expire_processed(drop.root, now, keep_days=7) == 1
    assert sorted(p.name for p in processed.iterdir()) == sorted([recent.name, claimed.name])
    assert inbox.expire_processed(drop.root, now, keep_days=0) == 1
    assert [p.name for p in processed.iterdir()] == [claimed.name]  # never a file in hand


def test_unfinished_uploads_are_deleted_after_the_days_kept_complete_files_never(
    drop: Drop,
) -> None:
    """An upload still named ``.part`` (or hidden) holds personal data in the clear and will never
    be ingested: it goes once last written longer ago than the days kept. A complete file is
    never deleted unread, however old."""
    from services.sftp import inbox

    folder = ensure_partner_folders(drop.root, drop.partner_ids["Energiek"]) / "inbox"
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    files = {
        name: folder / name
        for name in ("oud.csv.part", ".verborgen", "recent.csv.part", "maand.csv")
    }
    for name, path in files.items():
        path.write_bytes(GOOD)
        written = (now.timestamp() - 86400) if name == "recent.csv.part" else 0
        os.utime(path, (written, written))
    assert inbox.expire_unfinished(drop.root, now, keep_days=7) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["maand.csv", "recent.csv.part"]


def test_watch_mode_refuses_a_name_the_drop_does_not_take(ctx: Context) -> None:
    """OpenSSH lets any name through (any bytes, too): once the upload is over, the file is
    refused unread, with a result that says why, and set aside in processed/ (deleted with the
    originals). Before that it is left alone: a client may upload under such a name and rename."""
    register(ctx, "Energiek", "energie")
    with ctx.sessions() as session:
        partner_id = find_partner(session, "Energiek").id
    root = ctx.settings.resolved_sftp_root
    base = ensure_partner_folders(root, partner_id)
    inbox = base / "inbox"
    (inbox / "Achterstand (def).csv").write_bytes(GOOD)
    with open(os.fsencode(inbox) + b"/Financi\xebn.csv", "wb") as latin1:  # not UTF-8
        latin1.write(GOOD)
    now = [time.time()]
    watcher = Watcher(ctx, root, settle_seconds=5, wall=lambda: now[0])
    assert watcher.scan() == []  # written just now
    assert len(list(inbox.iterdir())) == 2
    now[0] += 6
    done = watcher.scan()
    shown = ["Achterstand (def).csv", "Financi\\xebn.csv"]
    assert [(o.name, o.status) for o in done] == [(name, "rejected") for name in shown]
    assert "file name is not accepted" in done[0].result["problem"]["detail"]
    assert list(inbox.iterdir()) == []
    results = sorted((base / "outbox").iterdir())
    assert all(r.name.startswith("rejected-name-") for r in results)
    assert all(r.name.endswith(".result.json") for r in results)
    assert sorted(json.loads(r.read_text())["file"] for r in results) == shown
    assert [p.name.endswith("_rejected-name") for p in (base / "processed").iterdir()] == [
        True,
        True,
    ]
    with ctx.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0


def test_a_value_the_database_refuses_is_a_rejected_file_not_a_retry(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the API answers it (422): a file the database refuses a value of would otherwise be
    claimed and tried again at every scan."""
    from services.sftp import inbox

    def refused(*args: object, **kwargs: object) -> None:
        raise sa.exc.DataError("INSERT ...", {}, Exception("a value quoted here"))

    register(ctx, "Energiek", "energie")
    with ctx.sessions() as session:
        partner_id = find_partner(session, "Energiek").id
    base = ensure_partner_folders(ctx.settings.resolved_sftp_root, partner_id)
    (base / "inbox" / "maand.csv").write_bytes(GOOD)
    monkeypatch.setattr(inbox, "ingest_with_retry", refused)
    outcome = inbox.process_file(ctx, partner_id, base / "inbox" / "maand.csv")
    assert outcome.status == "rejected"
    assert outcome.result["problem"]["status"] == 422
    assert "quoted" not in json.dumps(outcome.result)
    assert not inbox.claimed_files(base)


def test_a_key_counts_as_used_only_once_the_login_succeeds(drop: Drop) -> None:
    from shared.models import PartnerSshKey

    fingerprint = drop.keys["Energiek"].get_fingerprint("sha256")

    def last_used() -> datetime | None:
        with drop.ctx.sessions() as session:
            return session.scalar(
                sa.select(PartnerSshKey.last_used_at).where(
                    PartnerSshKey.fingerprint == fingerprint
                )
            )

    assert last_used() is None

    async def login() -> None:
        async with drop.connect(drop.keys["Energiek"]):
            pass

    drop.run(login)
    deadline = time.monotonic() + 10  # recorded beside the session, once the login succeeded
    while last_used() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last_used() == drop.ctx.now()


@pytest.mark.parametrize("finder", ["the endpoint, after a restart", "sftp-watch"])
def test_a_file_complete_before_the_deadline_and_found_after_it_is_on_time(
    drop: Drop, clock: Clock, finder: str
) -> None:
    """The file was complete at 23:59 on the 24th; it is found after midnight, by the built-in
    endpoint started again or by ``sftp-watch`` next to OpenSSH (whose file, last written more
    than the settle time ago, is complete at its first scan). The file's time (the server's,
    when it was closed or last written: partners cannot set it) decides the period."""
    drop.server.stop()
    base = ensure_partner_folders(drop.root, drop.partner_ids["Energiek"])
    waiting = base / "inbox" / "maand.csv"
    waiting.write_bytes(GOOD)
    closed = datetime(2026, 11, 24, 23, 59, tzinfo=AMSTERDAM).timestamp()
    os.utime(waiting, (closed, closed))
    clock.set_local(2026, 11, 25, 0, 5)
    if finder == "sftp-watch":
        wall = closed + 360  # the real time of 00:05: the file last written 6 minutes before
        (found,) = Watcher(drop.ctx, drop.root, settle_seconds=5, wall=lambda: wall).scan()
        result = found.result
    else:
        drop.server.start()
        result = drop.result("Energiek", "maand.csv")
    assert result["status"] == "accepted"
    assert result["delivery"]["period"] == "2026-11"
