"""Peak memory of a real etl process, for the tests that bound it (hostile responses, files)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.test_processes import child_env

MIB = 1024 * 1024

_PEAK = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def record():
    with open("/proc/self/status") as status, open(out, "w") as peak:
        peak.write(next(line for line in status if line.startswith("VmHWM:")))
atexit.register(record)
sys.argv[0] = "etl"
runpy.run_module("etl", run_name="__main__", alter_sys=True)
"""
"""Runs etl and writes its peak RSS at exit. VmHWM, not ``ru_maxrss``: Linux carries the
pre-exec high-water mark (this test process's) into the child's ``ru_maxrss``."""


def run_measured(tmp_path: Path, *args: str) -> tuple[int, str, float, float]:
    """Runs etl with ARGS; returns its exit code, stderr, peak RSS in MiB and seconds."""
    peak = tmp_path / "peak"
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", _PEAK, str(peak), *args],
        cwd=tmp_path,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )
    seconds = time.monotonic() - started
    kib = int(peak.read_text().split()[1])
    return child.returncode, child.stderr, kib / 1024, seconds
