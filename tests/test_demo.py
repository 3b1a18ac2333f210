"""``make demo`` end to end: two months, the runs, routing, the team's work, the export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.demo import run_demo


def test_the_demo_runs_two_months_and_shows_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("VS_DATABASE_URL", "VS_ENCRYPTION_KEYS", "VS_ADDRESS_HASH_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert run_demo() == 0
    out = capsys.readouterr().out
    # Both months were delivered by every partner and run.
    assert out.count("partners without a delivery: none") == 2
    assert "200 the same file again" in out
    made = re.findall(r"^2026-1[01]: (\d+) crisis case\(s\) made and routed at once", out, re.M)
    assert len(made) == 2
    assert all(int(n) > 0 for n in made)
    assert re.search(r"422 3 problem\(s\) in the file; nothing was stored", out)
    # The second month finds recidive addresses carried over from the first.
    recidive = re.findall(r"recidive\s+(\d+)", out)
    assert recidive[0] == "0"
    assert int(recidive[1]) > 0
    line = re.search(r"recidive: (\d+) of the month's cases had a signal", out)
    assert line is not None
    assert line.group(1) == recidive[1]
    # One recurrent by an earlier case, one by an earlier signal alone (the demo's data has both).
    assert re.search(r"  case \w+ \(PC4 \d{4}\) had a case before in 2026-10", out)
    signalled = r"was signalled before in 2026-\d{2}(, 2026-\d{2})*, without a case"
    assert re.search(r"  case \w+ \(PC4 \d{4}\) " + signalled, out)
    # SDV's list of the single signals holds as many addresses as the run counted.
    singles = re.findall(r"single signals \(by letter\)\s+(\d+)", out)
    listed = re.search(
        r"^(\d+) addresses with a single signal \(the run counted (\d+)\)", out, re.M
    )
    assert listed is not None
    assert listed.group(1) == listed.group(2) == singles[-1]
    assert int(listed.group(1)) > 0
    assert len(re.findall(r"^  PC4 \d{4}: (energie|water|zorg|huur) ", out, re.M)) == 3
    # Cases per route, the protocol refusing an early "no contact", and two closures.
    for route in ("budgetcoach", "sdv", "wijkteam / noord"):
        assert re.search(rf"^{re.escape(route)}\s+\d+ cases, due", out, re.MULTILINE)
    assert "409 close case" in out
    assert out.count("closed: ") == 2
    export = next((tmp_path / "data" / "demo").glob("ddas-*.json"))
    document = json.loads(export.read_text(encoding="utf-8"))
    assert document["leveringen"][0]["vroegsignaalzaken"]
    assert "hash chain intact" in out
