"""Real processes on real databases: kills, signals, overlapping runs and database failures.

Each test runs ``python -m etl`` as a child process against the fake API served from this
process, and holds the child at a chosen moment (a ``delay`` fault, or a response held back
until the test releases it) before killing, signalling or racing it. Waits poll with
deadlines; every child is killed when its test ends, passed or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db, schema
from etl.errors import LockHeldError
from etl.lock import run_lock
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi, Fault, RecordedRequest

CATALOG_TABLES = sorted(name for name in schema.metadata.tables if name != "sync_runs")
"""Every table a run writes besides its own ``sync_runs`` row."""
PER_PAGE = 10
HOLD = 30.0
"""How long a ``delay`` fault holds a child: far longer than any test waits for it."""


@dataclass
class Child:
    """A running ``python -m etl``; its output goes to files, so it never blocks on a pipe."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = 30.0) -> int:
        """The exit code; fails the test if the child is still running after ``timeout``, with
        the child's Python stack (SIGABRT makes its fault handler print it) to show where."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            pytest.fail(f"etl still running after {timeout}s; stderr: {self.stderr}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


def error_line(child: Child) -> str:
    """The one ``etl: error:`` line a failed run leaves on stderr (log lines may come first)."""
    lines = [line for line in child.stderr.splitlines() if line.startswith("etl: error:")]
    assert len(lines) == 1, child.stderr
    return lines[0]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without etl's variables, plus the token and ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DIGITALOCEAN_", "ETL_"))
    }
    env["DIGITALOCEAN_ACCESS_TOKEN"] = TOKEN
    env["PYTHONFAULTHANDLER"] = "1"  # see Child.wait
    env.update(extra)
    return env


@contextmanager
def etl_process(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Child]:
    """Starts ``python -m etl ARGS`` in ``cwd`` and SIGKILLs it on the way out if still alive."""
    out = cwd / f"etl-{time.monotonic_ns()}.out"
    err = out.with_suffix(".err")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", *args],
            cwd=cwd,
            env=child_env() if env is None else env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    child = Child(process, out, err, time.monotonic())
    try:
        yield child
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def run_etl_process(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Child:
    """Runs ``python -m etl ARGS`` to its end."""
    with etl_process(cwd, *args, env=env) as child:
        child.wait()
    return child


def wait_for(what: str, condition: Callable[[], bool], child: Child, timeout: float = 20) -> None:
    """Polls ``condition`` until it holds; fails at once if ``child`` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        code = child.process.poll()
        if code is not None:
            pytest.fail(f"etl exited {code} before {what}; stderr: {child.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout}s; stderr: {child.stderr}")
        time.sleep(0.01)


def wait_until_lock_is_free(engine: sa.Engine, timeout: float = 10) -> None:
    """Waits for the database server to notice a killed client and drop its locks.

    A kill closes the client's sockets at once, but the server ends that session (and frees
    its advisory lock or GET_LOCK) only when it reads the end of the stream, a moment later.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with run_lock(engine):
                return
        except LockHeldError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def catalog_snapshot(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    return {name: table_rows(engine, name) for name in CATALOG_TABLES}


def runs(engine: sa.Engine) -> list[dict[str, Any]]:
    return table_rows(engine, "sync_runs")


def changed_catalog(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Five models renamed (all on page 1), one removed, five added."""
    changed = [
        {**m, "name": f"{m['name']} (renamed)"} if i < 5 else m for i, m in enumerate(models)
    ]
    del changed[12]
    return changed + make_catalog(len(models) + 5)[len(models) :]


@pytest.fixture
def server() -> Iterator[FakeApi]:
    """The fake API with 30 models: three pages at ``--per-page 10``."""
    with FakeApi(models=make_catalog(30), token=TOKEN) as api:
        yield api


def sync_args(db_url: str, api: FakeApi) -> list[str]:
    return ["--database-url", db_url, "sync", "--api-url", api.url, "--per-page", str(PER_PAGE)]


def first_sync(run_etl: Any, db_url: str, api: FakeApi) -> None:
    """A clean sync of the current catalog, then the catalog changes for the run under test."""
    result = run_etl(*sync_args(db_url, api))
    assert result.exit_code == 0, result.output
    api.models = changed_catalog(api.models)
    api.reset_log()


def assert_next_sync_catches_up(run_etl: Any, db_url: str, api: FakeApi) -> dict[str, Any]:
    """The next sync succeeds and finds all the changes: the stopped run left none behind."""
    api.faults.clear()
    result = run_etl(*sync_args(db_url, api), "--json")
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    assert (summary["inserted"], summary["updated"], summary["removed"]) == (5, 5, 1)
    return summary


# -- SIGKILL -----------------------------------------------------------------------------------


def _hold_at(moment: str, api: FakeApi) -> tuple[list[str], Callable[[], bool]]:
    """Queues the faults that hold a sync at ``moment``: its extra options and when it is held."""
    if moment == "before-first-page":
        # The run's row is committed 'running'; nothing else is written yet.
        api.faults = [Fault(action="delay", delay=HOLD, page=1)]
        return [], lambda: len(api.requests) >= 1
    if moment == "mid-listing":
        # Page 1's changes are written inside the run's open transaction.
        api.faults = [Fault(action="delay", delay=HOLD, page=2)]
        return [], lambda: any(r.page == 2 for r in api.requests)
    # Held on the first usecase listing (the third request for a page 1, after the listing and
    # the one confirming its removals): every catalog page is written and removals are marked,
    # all uncommitted.
    api.faults = [Fault(page=1), Fault(page=1), Fault(action="delay", delay=HOLD, page=1)]
    return ["--with-usecases"], lambda: any("usecases" in r.query for r in api.requests)


def test_sigkill_mid_run_leaves_the_database_as_it_was_and_the_next_sync_marks_it_abandoned(
    run_etl: Any, db_url: str, server: FakeApi, engine: sa.Engine, tmp_path: Path
) -> None:
    _kill_and_catch_up(run_etl, db_url, server, engine, tmp_path, "mid-listing")


@pytest.mark.parametrize("moment", ["before-first-page", "after-last-page"])
def test_sigkill_at_other_moments_leaves_the_database_as_it_was(
    run_etl: Any, server: FakeApi, tmp_path: Path, moment: str
) -> None:
    # What differs between moments is what the open transaction holds, not how a dialect
    # drops it: SQLite stands for all three here, to keep the suite fast.
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = db.create_engine(url)
    try:
        _kill_and_catch_up(run_etl, url, server, engine, tmp_path, moment)
    finally:
        engine.dispose()


def _kill_and_catch_up(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine, tmp_path: Path, moment: str
) -> None:
    first_sync(run_etl, db_url, api)
    before = catalog_snapshot(engine)
    extra, held = _hold_at(moment, api)

    with etl_process(tmp_path, *sync_args(db_url, api), *extra) as child:
        wait_for(f"the run held {moment}", held, child)
        child.signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL

    assert catalog_snapshot(engine) == before
    killed = runs(engine)[-1]
    assert killed["status"] == "running" and killed["finished_at"] is None
    wait_until_lock_is_free(engine)  # the killed process's lock does not outlive it

    assert_next_sync_catches_up(run_etl, db_url, api)
    after = {run["id"]: run for run in runs(engine)}
    assert after[killed["id"]]["status"] == "abandoned"
    assert after[killed["id"]]["error"] == "the process ended without recording an outcome"
    assert [run["status"] for run in after.values()] == ["succeeded", "abandoned", "succeeded"]


# -- SIGTERM and SIGINT ------------------------------------------------------------------------


def test_sigterm_rolls_back_records_the_run_interrupted_and_exits_143(
    run_etl: Any, db_url: str, server: FakeApi, engine: sa.Engine, tmp_path: Path
) -> None:
    _stop_mid_run(run_etl, db_url, server, engine, tmp_path, signal.SIGTERM)


def test_sigint_rolls_back_records_the_run_interrupted_and_exits_130(
    run_etl: Any, server: FakeApi, tmp_path: Path
) -> None:
    # Only the signal's way into Python differs from SIGTERM (KeyboardInterrupt, not our
    # handler); the rollback it leads to is SIGTERM's, tested on every dialect.
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = db.create_engine(url)
    try:
        _stop_mid_run(run_etl, url, server, engine, tmp_path, signal.SIGINT)
    finally:
        engine.dispose()


STOPPED = {
    signal.SIGTERM: (143, "terminated (SIGTERM)"),
    signal.SIGINT: (130, "interrupted (SIGINT)"),
}


def _stop_mid_run(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine, tmp_path: Path, signum: int
) -> None:
    exit_code, reason = STOPPED[signum]
    first_sync(run_etl, db_url, api)
    before = catalog_snapshot(engine)
    api.faults = [Fault(action="delay", delay=HOLD, page=2)]

    with etl_process(tmp_path, *sync_args(db_url, api)) as child:
        wait_for("page 2 requested", lambda: any(r.page == 2 for r in api.requests), child)
        signalled = time.monotonic()
        # The child sits in a blocking socket read: the signal interrupts it (EINTR), Python
        # runs the handler, and the handler's exception unwinds the read and the transaction.
        child.signal(signum)
        assert child.wait() == exit_code, child.stderr
        assert time.monotonic() - signalled < 5
    assert child.stderr.splitlines()[-1] == f"etl: {reason}; the run was rolled back"
    assert "Traceback" not in child.stderr

    assert catalog_snapshot(engine) == before
    stopped = runs(engine)[-1]
    assert stopped["status"] == "interrupted" and stopped["finished_at"] is not None
    assert (stopped["error"], stopped["requests"]) == (reason, 2)

    assert_next_sync_catches_up(run_etl, db_url, api)
    statuses = [run["status"] for run in runs(engine)]
    assert statuses == ["succeeded", "interrupted", "succeeded"]


# -- overlapping runs --------------------------------------------------------------------------

HOLDER = re.compile(
    r"^etl: error: run (\d+) \(sync, started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\) "
    r"holds the database's run lock; this run did nothing$"
)


@contextmanager
def gate(api: FakeApi) -> Iterator[threading.Event]:
    """Holds every page response until the event is set (set on the way out, whatever happens)."""
    release = threading.Event()

    def hold(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        release.wait(HOLD)
        return body

    api.transform = hold
    try:
        yield release
    finally:
        release.set()
        api.transform = None


def test_overlapping_sync_exits_7_at_once_naming_the_run_that_holds_the_lock(
    run_etl: Any, db_url: str, server: FakeApi, engine: sa.Engine, tmp_path: Path
) -> None:
    first_sync(run_etl, db_url, server)
    with gate(server) as release, etl_process(tmp_path, *sync_args(db_url, server)) as first:
        # The first run holds the lock and its 'running' row while it waits for page 1.
        wait_for("the first run's page 1 requested", lambda: len(server.requests) == 1, first)
        holder = runs(engine)[-1]
        assert holder["status"] == "running"

        second = run_etl_process(tmp_path, *sync_args(db_url, server))

        assert second.process.returncode == 7, second.stderr
        assert time.monotonic() - second.started < 5
        match = HOLDER.match(error_line(second))
        assert match, second.stderr
        assert "Traceback" not in second.stderr
        assert int(match.group(1)) == holder["id"]
        assert len(server.requests) == 1  # the second run asked the API nothing
        assert runs(engine)[-1]["id"] == holder["id"]  # and recorded no run
        release.set()
        assert first.wait() == 0, first.stderr
    assert [run["status"] for run in runs(engine)] == ["succeeded", "succeeded"]


# -- database failures -------------------------------------------------------------------------


def test_sqlite_locked_past_its_busy_timeout_exits_6_writing_nothing(
    run_etl: Any, server: FakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.db"
    url = f"sqlite:///{path}"
    first_sync(run_etl, url, server)
    engine = db.create_engine(url)
    try:
        before = catalog_snapshot(engine), runs(engine)
        other = sqlite3.connect(path, isolation_level=None)  # e.g. a dashboard that writes
        try:
            other.execute("BEGIN EXCLUSIVE")
            env = child_env(ETL_SQLITE_BUSY_TIMEOUT="0.5")
            child = run_etl_process(tmp_path, *sync_args(url, server), env=env)
        finally:
            other.close()
        assert child.process.returncode == 6, child.stderr
        assert time.monotonic() - child.started < 10
        assert error_line(child) == f"etl: error: database error on {url}: database is locked"
        assert (catalog_snapshot(engine), runs(engine)) == before
        assert server.requests == []
    finally:
        engine.dispose()


def test_sqlite_file_in_a_missing_folder_exits_6_in_one_line(
    run_etl: Any, server: FakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "missing" / "catalog.db"
    result = run_etl(*sync_args(f"sqlite:///{path}", server))
    assert result.exit_code == 6
    assert result.stderr == (
        f"etl: error: cannot open {path}.lock for the run lock: No such file or directory\n"
    )
    assert server.requests == []


def test_bad_busy_timeout_is_a_usage_error(run_etl: Any, server: FakeApi, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    result = run_etl(*sync_args(url, server), env={"ETL_SQLITE_BUSY_TIMEOUT": "soon"})
    assert result.exit_code == 2
    assert (
        result.stderr.splitlines()[-1]
        == "etl: error: ETL_SQLITE_BUSY_TIMEOUT='soon' is not a number of seconds"
    )
    assert server.requests == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: room for the schema and a small catalog, not for a big one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command to make a small filesystem")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a small tmpfs to fill (needs root with CAP_SYS_ADMIN): "
            + (mounted.stderr.strip() or f"mount exited {mounted.returncode}")
        )
    try:
        yield disk
    finally:
        unmounted = subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_disk_full_exits_6_leaving_the_catalog_as_it_was(
    run_etl: Any, server: FakeApi, small_disk: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{small_disk / 'catalog.db'}"
    server.models = make_catalog(10)
    result = run_etl(*sync_args(url, server))
    assert result.exit_code == 0, result.output
    engine = db.create_engine(url)
    try:
        before = catalog_snapshot(engine)
        server.models = make_catalog(1500)  # megabytes of rows: more than the disk holds

        child = run_etl_process(tmp_path, *sync_args(url, server))

        assert child.process.returncode == 6, child.stderr
        assert error_line(child) == (
            f"etl: error: database error on {url}: database or disk is full"
        )
        assert catalog_snapshot(engine) == before
        failed = runs(engine)[-1]
        assert failed["status"] == "failed" and "database or disk is full" in failed["error"]
    finally:
        engine.dispose()
