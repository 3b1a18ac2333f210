"""The benchmark's CPU accounting: what another process uses is counted as other processes'."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.common import CpuMeter, cpu_ticks

# Spin until this process has used the given CPU seconds (not wall seconds: on a busy machine the
# same CPU takes longer, and the figures below stay true).
SPIN = "import time\nwhile time.process_time() < {seconds}: pass\n"


@pytest.mark.skipif(cpu_ticks() is None, reason="needs /proc/stat (Linux)")
def test_another_process_is_counted_apart_from_this_one() -> None:
    meter = CpuMeter()
    spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=0.6)])
    mine = time.process_time()
    while time.process_time() - mine < 0.3:
        pass
    assert spinner.wait(timeout=60) == 0
    cpu = meter.read()
    user, system = cpu["process_user_s"], cpu["process_system_s"]
    other, busy = cpu["other_processes_s"], cpu["machine_busy_percent"]
    assert user is not None
    assert system is not None
    assert user + system >= 0.25, cpu
    assert other is not None
    assert other >= 0.5, cpu
    assert busy is not None
    assert busy > 0, cpu
