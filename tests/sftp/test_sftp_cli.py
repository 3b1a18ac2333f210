"""The CLI of the SFTP drop: SSH keys of partners, and one pass of sftp-watch."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import asyncssh
from typer.testing import CliRunner

from services.cli import app
from shared.settings import get_settings
from tests.helpers import csv_file, row
from tests.test_cli import cli_env, invoke

runner = CliRunner()
__all__ = ["cli_env"]


def test_ssh_keys_lifecycle(cli_env: None, tmp_path: Path) -> None:
    partner = invoke("partners", "add", "--name", "Energiek", "--kind", "energie", "--json")
    assert isinstance(partner, dict)
    key_file = tmp_path / "key.pub"
    key = asyncssh.generate_private_key("ssh-ed25519", comment="ops@energiek")
    key_file.write_bytes(key.export_public_key("openssh"))
    added = invoke(
        "partners", "add-ssh-key", "--partner", "Energiek", "--key-file", str(key_file), "--json"
    )
    assert isinstance(added, dict)
    assert added["fingerprint"] == key.get_fingerprint("sha256")
    assert Path(added["folder"], "inbox").is_dir()
    again = runner.invoke(
        app, ["partners", "add-ssh-key", "--partner", "Energiek", "--key-file", str(key_file)]
    )
    assert again.exit_code == 1
    assert "registered already" in again.stderr
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    bad = runner.invoke(
        app,
        ["partners", "add-ssh-key", "--partner", "Energiek", "--key-file", str(junk), "--json"],
    )
    assert json.loads(bad.stderr)["status"] == 422
    listed = invoke("partners", "ssh-keys", "--partner", "Energiek", "--json")
    assert [k["fingerprint"] for k in listed] == [added["fingerprint"]]  # type: ignore[index]
    revoked = invoke("partners", "revoke-ssh-key", added["fingerprint"], "--json")
    assert isinstance(revoked, dict)
    assert revoked["revoked_at"]


def test_sftp_watch_once(cli_env: None) -> None:
    partner = invoke("partners", "add", "--name", "Energiek", "--kind", "energie", "--json")
    assert isinstance(partner, dict)
    inbox = get_settings().resolved_sftp_root / partner["partner"]["id"] / "inbox"
    inbox.mkdir(parents=True)
    # The CLI runs on the real clock: name no period, so the open one is used.
    (inbox / "maand.csv").write_bytes(csv_file(row("E1", sinds="01-01-2026")))
    written = time.time() - 60  # more than the settle time (5 s) ago
    os.utime(inbox / "maand.csv", (written, written))
    # Written to just now: an OpenSSH upload may still be going on (no ".part" name).
    (inbox / "bezig.csv").write_bytes(csv_file(row("E2", sinds="01-01-2026")))
    done = invoke("sftp-watch", "--once", "--json")
    assert done == [{"file": "maand.csv", "status": "accepted"}]
    assert [p.name for p in inbox.iterdir()] == ["bezig.csv"]
