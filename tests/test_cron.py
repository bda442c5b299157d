"""The cron wrapper ``cron/etl-sync``: env-file checks, the lock, the log and exit codes.

Runs the real script in a subprocess, with everything under ``tmp_path`` and a fake ``etl``
(``ETL_BIN``) that records its arguments and exits 4 unless told otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TOKEN

WRAPPER = Path(__file__).resolve().parents[1] / "cron" / "etl-sync"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("flock") is None,
    reason="the wrapper needs Linux, flock(1) and GNU stat",
)

FAKE_ETL = """\
#!/bin/sh
touch "$0.ran"
echo "fake etl: $*"
echo "token ${DIGITALOCEAN_ACCESS_TOKEN:+present}"
echo "database $ETL_DATABASE_URL"
echo "fake etl on stderr" >&2
if [ -n "${FAKE_ETL_HOLD:-}" ]; then
    i=0
    while [ ! -e "$FAKE_ETL_HOLD" ] && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
fi
exit "${FAKE_ETL_EXIT:-4}"
"""

START_LINE = re.compile(r"^=== \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ etl-sync start ", re.MULTILINE)


class Cron:
    """An installed wrapper in miniature: env file, fake etl, lock and log under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env_file = root / "etl.env"
        self.etl_bin = root / "fake-etl"
        self.ran = root / "fake-etl.ran"
        self.lock_file = root / "etl-sync.lock"
        self.log_file = root / "log" / "etl" / "sync.log"
        self.database_url = f"sqlite:///{root / 'catalog.db'}"
        self.env_file.write_text(
            f"DIGITALOCEAN_ACCESS_TOKEN={TOKEN}\nETL_DATABASE_URL={self.database_url}\n"
        )
        self.env_file.chmod(0o600)
        self.etl_bin.write_text(FAKE_ETL)
        self.etl_bin.chmod(0o755)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ETL_ENV_FILE": str(self.env_file),
            "ETL_BIN": str(self.etl_bin),
            "ETL_LOCK_FILE": str(self.lock_file),
            "ETL_LOG_FILE": str(self.log_file),
            **extra,
        }

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(WRAPPER), *args],
            env=self.env(**extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(WRAPPER), *args],
            env=self.env(**extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def log(self) -> str:
        return self.log_file.read_text()


@pytest.fixture
def cron(tmp_path: Path) -> Cron:
    return Cron(tmp_path)


def test_runs_sync_and_returns_its_exit_code(cron: Cron) -> None:
    result = cron.run("--dry-run", "--json")

    assert result.returncode == 4
    log = cron.log()
    assert len(START_LINE.findall(log)) == 1
    assert "fake etl: sync --dry-run --json\n" in log
    assert "token present\n" in log
    assert f"database {cron.database_url}\n" in log
    assert "fake etl on stderr\n" in log
    assert "etl-sync end: exit 4 after " in log
    assert result.stdout == ""
    assert "etl-sync: etl sync failed with exit 4" in result.stderr
    assert "fake etl: sync --dry-run --json" in result.stderr
    assert TOKEN not in result.stdout + result.stderr + log


@pytest.mark.parametrize("code", [0, 1, 3, 5, 6])
def test_exit_codes_pass_through(cron: Cron, code: int) -> None:
    result = cron.run(FAKE_ETL_EXIT=str(code))

    assert result.returncode == code
    assert f"etl-sync end: exit {code} after " in cron.log()


def test_success_prints_nothing(cron: Cron) -> None:
    result = cron.run(FAKE_ETL_EXIT="0")

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert "fake etl: sync\n" in cron.log()


def test_each_run_appends_to_the_log(cron: Cron) -> None:
    cron.run("--public-only")
    cron.run()

    log = cron.log()
    assert len(START_LINE.findall(log)) == 2
    assert log.index("fake etl: sync --public-only\n") < log.index("fake etl: sync\n")


def test_a_second_run_exits_7_at_once_while_the_first_holds_the_lock(cron: Cron) -> None:
    release = cron.root / "release"
    first = cron.start(FAKE_ETL_HOLD=str(release))
    try:
        deadline = time.monotonic() + 20
        while not cron.ran.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started etl"
            time.sleep(0.05)
        cron.ran.unlink()

        began = time.monotonic()
        second = cron.run()
        elapsed = time.monotonic() - began

        assert second.returncode == 7
        assert elapsed < 5
        assert not cron.ran.exists()
        assert "another run holds" in second.stderr
        assert f"etl-sync: another run holds {cron.lock_file}; skipped (exit 7)" in cron.log()
    finally:
        release.touch()
        first.wait(timeout=30)
    assert first.returncode == 4
    assert len(START_LINE.findall(cron.log())) == 1
    assert cron.run().returncode == 4  # the lock went with the first run


def test_lock_held_by_another_process_exits_7(cron: Cron) -> None:
    holder = subprocess.Popen(["flock", "-o", str(cron.lock_file), "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "-n", str(cron.lock_file), "true"]).returncode == 0:
            assert time.monotonic() < deadline, "flock never took the lock"
            time.sleep(0.05)

        result = cron.run()
    finally:
        holder.kill()
        holder.wait()

    assert result.returncode == 7
    assert not cron.ran.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o610])
def test_an_env_file_others_can_access_is_refused(cron: Cron, mode: int) -> None:
    cron.env_file.chmod(mode)

    result = cron.run()

    assert result.returncode == 2
    assert f"has mode {mode:o}" in result.stderr
    assert f"chmod 600 {cron.env_file}" in result.stderr
    assert not cron.ran.exists()
    assert not cron.log_file.exists()
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_env_file_is_accepted(cron: Cron, mode: int) -> None:
    cron.env_file.chmod(mode)

    assert cron.run().returncode == 4


def test_a_missing_env_file_is_refused(cron: Cron) -> None:
    cron.env_file.unlink()

    result = cron.run()

    assert result.returncode == 2
    assert f"env file {cron.env_file} not found" in result.stderr
    assert not cron.ran.exists()


def test_a_missing_etl_is_refused(cron: Cron) -> None:
    missing = cron.root / "no-such-etl"

    result = cron.run(ETL_BIN=str(missing))

    assert result.returncode == 2
    assert f"cannot find {missing}" in result.stderr


def test_the_env_file_can_name_etl(cron: Cron) -> None:
    with cron.env_file.open("a") as env:
        env.write(f"ETL_BIN={cron.etl_bin}\n")

    result = cron.run(ETL_BIN="")

    assert result.returncode == 4
    assert cron.ran.exists()
