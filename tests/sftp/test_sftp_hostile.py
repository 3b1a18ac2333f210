"""Hostile files through the SFTP drop: the same clear problem report as the API, nothing stored,
and the endpoint still serves afterwards."""

from __future__ import annotations

import re

import pytest

from tests.security.test_hostile_files import HOSTILE
from tests.sftp.test_sftp_drop import GOOD, Drop, _put, drop

__all__ = ["drop"]


def _sftp_name(case: str, filename: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
    suffix = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
    return f"{stem}.{suffix}"


def test_hostile_files_are_rejected_with_the_report(drop: Drop) -> None:
    names = {}
    for case, (filename, make, status, detail) in HOSTILE.items():
        name = _sftp_name(case, filename)
        names[name] = (status, detail)
        content = make()
        drop.run(lambda n=name, c=content: _put(drop, "Energiek", n, c))  # type: ignore[misc]
    for name, (status, detail) in names.items():
        result = drop.result("Energiek", name, timeout=60)
        assert result["status"] == "rejected", name
        problem = result["problem"]
        assert problem["status"] == status, (name, problem)
        assert detail in problem["detail"], (name, problem["detail"])
    assert drop.deliveries() == 0
    # Still healthy: a good file after all that is accepted.
    drop.run(lambda: _put(drop, "Energiek", "goed.csv", GOOD))
    assert drop.result("Energiek", "goed.csv")["status"] == "accepted"


@pytest.mark.parametrize("name", ["../escape.csv", ".hidden.csv", "a/b.csv"])
def test_bad_names_are_refused(drop: Drop, name: str) -> None:
    import asyncssh

    with pytest.raises(asyncssh.SFTPError):
        drop.run(lambda: _put(drop, "Energiek", name, GOOD))
    assert drop.deliveries() == 0
