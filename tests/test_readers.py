"""The read commands as people and scripts use them: ``runs``, ``status``, ``history``,
``changes``, ``models`` (and ``report``, ``db``): one output convention, text that cannot take
over a terminal, CSV that cannot run in a spreadsheet, an honest health check, read-only
access, and usage errors in one line."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import etl
from etl.config import Settings
from etl.pipeline import run_backfill, run_sync
from tests.catalog import make_catalog
from tests.conftest import TOKEN
from tests.fakeapi import FakeApi, Fault

REPO = Path(etl.__file__).resolve().parent.parent

HOSTILE_NAME = "\x1b]0;owned\x07\x1b[2J\rname\nforged  row \u202eevil \x9b31m"
FORMULA_ID = '=HYPERLINK("http://evil.example","click")'
ERROR_BODY = {"id": "bad_request", "message": "\x1b]8;;http://evil.example\x1b\\x\x1b[2J"}
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x9b", "\u202e")

LISTINGS = {
    "runs": ("runs",),
    "history": ("history", "hostile"),
    "changes": ("changes",),
    "models": ("models",),
}


def _sync(db_url: str, api: FakeApi, **settings: Any) -> Any:
    return run_sync(Settings(database_url=db_url, api_url=api.url, token=TOKEN, **settings))


def load_hostile(db_url: str) -> None:
    """A catalog whose strings attack terminals and spreadsheets, synced twice (a rename), plus
    a failed run whose stored error quotes the API's hostile error body."""
    models = make_catalog(3)
    models[0] = {**models[0], "id": "hostile", "name": HOSTILE_NAME}
    models[1] = {**models[1], "id": FORMULA_ID}
    with FakeApi(models=models, token=TOKEN) as api:
        assert _sync(db_url, api).status == "succeeded"
        api.models = [{**models[0], "name": HOSTILE_NAME + "2"}, *models[1:]]
        assert _sync(db_url, api).status == "succeeded"
        api.faults = [Fault(status=400, body=ERROR_BODY)]
        with pytest.raises(etl.errors.InvalidResponseError):
            _sync(db_url, api)


@pytest.fixture
def hostile(db_url: str) -> None:
    load_hostile(db_url)


def _etl(run_etl: Any, db_url: str, *args: str) -> Any:
    return run_etl("--database-url", db_url, *args)


@pytest.mark.parametrize("command", [*LISTINGS, "status"])
def test_tables_show_hostile_text_escaped_one_row_per_line(
    hostile: None, run_etl: Any, db_url: str, command: str
) -> None:
    result = _etl(run_etl, db_url, *LISTINGS.get(command, (command,)))
    assert result.exit_code in (0, 1), result.output
    for char in RAW_CONTROLS:
        assert char not in result.stdout, (command, char)
    if command != "status":
        rows = {"runs": 3, "history": 2, "changes": 4, "models": 3}[command]
        assert len(result.stdout.splitlines()) == 1 + rows
    shown = {"runs": "\\x1b]8;;", "status": "\\x1b]8;;", "changes": "hostile"}
    assert shown.get(command, "\\x1b]0;owned\\x07") in result.stdout


@pytest.mark.parametrize("command", list(LISTINGS))
def test_every_listing_prints_json_json_lines_and_csv(
    hostile: None, run_etl: Any, db_url: str, command: str
) -> None:
    args = LISTINGS[command]
    array = json.loads(_etl(run_etl, db_url, *args, "--json").stdout)
    assert isinstance(array, list) and array and all(isinstance(r, dict) for r in array)
    lines = _etl(run_etl, db_url, *args, "--nl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == array
    rows = list(csv.DictReader(io.StringIO(_etl(run_etl, db_url, *args, "--csv").stdout)))
    assert len(rows) == len(array) and set(rows[0]) <= set(array[0])
    raw = _etl(run_etl, db_url, *args, "--csv-raw").stdout
    assert len(list(csv.DictReader(io.StringIO(raw)))) == len(array)

    result = _etl(run_etl, db_url, *args, "--json", "--csv")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("etl: error: choose one output format: --json or --csv")
    assert len(result.stderr.splitlines()) == 1


def test_json_keeps_the_exact_text_and_csv_neutralises_formulas(
    hostile: None, run_etl: Any, db_url: str
) -> None:
    models = json.loads(_etl(run_etl, db_url, "models", "--json").stdout)
    names = {m["id"]: m["name"] for m in models}
    assert names["hostile"] == HOSTILE_NAME + "2"
    assert FORMULA_ID in names

    cells = list(csv.reader(io.StringIO(_etl(run_etl, db_url, "models", "--csv").stdout)))
    assert [c for row in cells for c in row if "HYPERLINK" in c] == ["'" + FORMULA_ID]
    cells = list(csv.reader(io.StringIO(_etl(run_etl, db_url, "models", "--csv-raw").stdout)))
    assert [c for row in cells for c in row if "HYPERLINK" in c] == [FORMULA_ID]
    assert HOSTILE_NAME + "2" in [c for row in cells for c in row]  # quoted, bytes intact


def test_history_names_changed_fields_as_changes_does(
    hostile: None, run_etl: Any, db_url: str
) -> None:
    history = json.loads(_etl(run_etl, db_url, "history", "hostile", "--json").stdout)
    changes = json.loads(_etl(run_etl, db_url, "changes", "--kind", "changed", "--json").stdout)
    assert [h["fields"] for h in history] == ["", "name"]
    assert [c["fields"] for c in changes] == ["name"]
    table = _etl(run_etl, db_url, "history", "hostile").stdout.splitlines()
    assert table[0].split()[-1] == "fields" and table[2].rstrip().endswith(" name")
    assert '["name"]' not in table[2]


def test_runs_show_observed_at_mode_source_and_duration(
    run_etl: Any, db_url: str, tmp_path: Path
) -> None:
    snapshot = tmp_path / "catalog-2026-11-20.json"
    snapshot.write_text(json.dumps(make_catalog(2)))
    assert run_backfill(db_url, [str(snapshot)]).loaded == 1
    [run] = json.loads(_etl(run_etl, db_url, "runs", "--json").stdout)
    assert run["observed_at"] == "2026-11-20T00:00:00Z"
    assert run["mode"] == "backfill" and run["source"] == str(snapshot)
    assert isinstance(run["duration_s"], float) and run["duration_s"] >= 0
    header = _etl(run_etl, db_url, "runs").stdout.splitlines()[0].split()
    assert header[:4] == ["id", "observed_at", "mode", "status"]
    assert {"source", "duration_s"} <= set(header)


def test_sync_summary_uses_correct_plurals(run_etl: Any, db_url: str) -> None:
    with FakeApi(models=make_catalog(1), token=TOKEN) as api:
        result = _etl(run_etl, db_url, "sync", "--api-url", api.url)
    assert result.exit_code == 0, result.output
    assert ": 1 model on 1 page, 1 inserted" in result.stdout
    assert "0 warnings; 1 request, 0 retries" in result.stdout


# -- the health check ------------------------------------------------------------------------


def test_status_counts_only_complete_unfiltered_syncs(
    run_etl: Any, db_url: str, tmp_path: Path
) -> None:
    snapshot = tmp_path / "catalog.json"
    snapshot.write_text(json.dumps(make_catalog(3)))
    as_of = datetime.now(UTC) - timedelta(minutes=5)  # a recent backfill...
    assert run_backfill(db_url, [str(snapshot)], as_of=as_of).loaded == 1
    result = _etl(run_etl, db_url, "status", "--max-age", "2h")
    assert result.exit_code == 1  # ...is no sync
    assert "no successful complete sync" in result.stderr
    state = json.loads(_etl(run_etl, db_url, "status", "--max-age", "2h", "--json").stdout)
    assert state["healthy"] is False and state["last_sync"] is None
    assert state["last_run"]["mode"] == "backfill"

    with FakeApi(models=make_catalog(3), token=TOKEN) as api:
        assert _sync(db_url, api, public_only=True).status == "succeeded"
        assert _etl(run_etl, db_url, "status", "--max-age", "2h").exit_code == 1  # filtered
        assert _sync(db_url, api).status == "succeeded"
        assert _sync(db_url, api, usecases=("MODEL_USECASE_AGENT",)).status == "succeeded"

    result = _etl(run_etl, db_url, "status", "--max-age", "2h", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["healthy"] is True and state["max_age_seconds"] == 7200
    assert state["last_sync"]["id"] == 3 and state["last_sync"]["mode"] == "sync"
    assert state["last_run"]["id"] == 4  # the filtered sync after it, named apart
    text = _etl(run_etl, db_url, "status").stdout.splitlines()
    assert text[0].startswith("last complete sync: run 3 finished ")
    assert text[1].startswith("latest run: run 4 (sync) succeeded")


def test_status_judges_by_when_the_sync_finished(
    run_etl: Any, db_url: str, engine: sa.Engine
) -> None:
    with FakeApi(models=make_catalog(2), token=TOKEN) as api:
        assert _sync(db_url, api).status == "succeeded"
    finished = datetime.now(UTC) - timedelta(hours=3)
    runs = sa.table("sync_runs", sa.column("finished_at"))
    stored: Any = finished if engine.dialect.name == "postgresql" else finished.replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(sa.update(runs).values(finished_at=stored))
    result = _etl(run_etl, db_url, "status", "--max-age", "2h")
    assert result.exit_code == 1
    assert "the last complete sync finished 3h ago (--max-age 2h)" in result.stderr
    assert _etl(run_etl, db_url, "status", "--max-age", "4h").exit_code == 0


# -- usage errors -------------------------------------------------------------------------------

USAGE_ERRORS = [
    (("models", "--as-of", "99999999d"), "time out of range"),
    (("changes", "--since", "99999999d"), "time out of range"),
    (("changes", "--until", "0001-01-01T00:00:00+01:00"), "time out of range"),
    (("status", "--max-age", "99999999999d"), "duration out of range"),
    (("runs", "--limit", "99999999999999999999"), "Invalid value for '--limit'"),
    (("runs", "--limit", "0"), "Invalid value for '--limit'"),
    (("sync", "--max-wait", "nan"), "is not a finite number"),
    (("sync", "--max-wait", "inf"), "is not a finite number"),
    (("sync", "--max-response-mb", "nan"), "is not a finite number"),
    (("runs", "--nope"), "No such option '--nope'"),
    (("db", "downgrade", "nosuchrev"), "unknown revision 'nosuchrev'"),
    (("models", "--json", "--nl"), "choose one output format"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_usage_errors_are_one_line_exit_2(
    run_etl: Any, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = _etl(run_etl, f"sqlite:///{tmp_path / 'catalog.db'}", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("etl: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_binary_token_file_is_one_line(run_etl: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfe\x00\x81binary")
    result = run_etl(
        "--database-url", f"sqlite:///{tmp_path / 'c.db'}", "sync", "--token-file",
        str(token_file), env={"DIGITALOCEAN_ACCESS_TOKEN": None},
    )  # fmt: skip
    assert result.exit_code == 3
    assert result.stderr == f"etl: error: --token-file {token_file} is not text (not UTF-8); " \
        "it must hold the token alone\n"  # fmt: skip


def test_db_downgrade_minus_one_and_db_history_work_as_in_alembic(
    run_etl: Any, db_url: str
) -> None:
    from etl import db

    assert _etl(run_etl, db_url, "db", "upgrade").exit_code == 0
    result = _etl(run_etl, db_url, "db", "downgrade", "-1")
    assert result.exit_code == 0, result.output
    [head] = [line for line in db.revision_history() if "(head)" in line]
    previous = head.split(" -> ")[0]
    assert result.stdout == f"database at {previous}\n"
    assert _etl(run_etl, db_url, "db", "current").stdout.startswith(f"{previous} (behind head")
    result = _etl(run_etl, db_url, "db", "upgrade", "+1")
    assert result.exit_code == 0 and result.stdout == f"database at {db.SCHEMA_HEAD}\n"

    lines = run_etl("db", "history").stdout.splitlines()
    assert lines[0].startswith(f"{previous} -> {db.SCHEMA_HEAD} (head), ")
    assert lines[-1].startswith("<base> -> ")


def test_help_states_output_environment_and_exit_codes(run_etl: Any) -> None:
    for command in ("runs", "status", "history", "changes", "models", "report", "sync",
                    "backfill", "demo"):  # fmt: skip
        text = run_etl(command, "--help").stdout
        assert "Exit codes:" in text and "Output:" in text, command
        if command != "demo":
            assert "ETL_DATABASE_URL" in text and "ETL_SQLITE_BUSY_TIMEOUT" in text, command
    sync_help = " ".join(run_etl("sync", "--help").stdout.split())
    for variable in ("DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN", "DIGITALOCEAN_API_URL",
                     "ETL_MAX_RESPONSE_MB", "ETL_ARCHIVE_DIR", "ETL_LOG_FORMAT"):  # fmt: skip
        assert variable in sync_help, variable
    assert "promise" not in run_etl("runs", "--help").stdout
    assert "one JSON array" in run_etl("history", "--help").stdout


# -- read-only access -------------------------------------------------------------------------

READERS = [("runs",), ("status",), ("models",), ("changes",), ("history", "x"), ("db", "current")]


@pytest.mark.parametrize("args", [*READERS, ("report", "--output", "r.html")])
def test_a_missing_database_file_is_an_error_and_is_never_created(
    run_etl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo.db"
    result = _etl(run_etl, f"sqlite:///{missing}", *args)
    assert result.exit_code == 6
    assert result.stderr.startswith(f"etl: error: no such database: {missing} ")
    assert list(tmp_path.iterdir()) == []


def _python_for(user: str) -> str | None:
    """A Python of this version that ``user`` may run (root's pyenv is often private)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")):
        if candidate and _runs_as(user, [candidate, "-c", "pass"]):
            return candidate
    return None


def _runs_as(user: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str] | None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    command = [setpriv, f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          **kwargs)  # fmt: skip
    return done if done.returncode == 0 or kwargs else None


AS_NOBODY = """
import json, sys
from click.testing import CliRunner
from etl.cli import cli
results = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli, args)
    results.append([result.exit_code, result.stderr])
print(json.dumps(results))
"""
"""Runs each read command in one process (of the user nobody): exit code and stderr of each."""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder other users may enter (pytest's own are private to root), removed after."""
    path = Path(tempfile.mkdtemp(prefix="etl-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_readers_need_no_write_access(shared_tmp: Path) -> None:
    """As ``nobody``, who can write neither the file nor its folder, every read command works
    and changes nothing: no journal switch, no -wal or -shm file, the same bytes."""
    python = _python_for("nobody")
    if python is None:
        pytest.skip("needs root, setpriv and a Python the user nobody can run")
    folder = shared_tmp / "ro"
    folder.mkdir()
    url = f"sqlite:///{folder / 'catalog.db'}"
    models = make_catalog(4)
    with FakeApi(models=models, token=TOKEN) as api:
        assert _sync(url, api).status == "succeeded"
        api.models = [{**models[0], "name": "Renamed"}, *models[1:]]
        assert _sync(url, api).status == "succeeded"
    before = sorted(p.name for p in folder.iterdir())
    # WAL mode, closed cleanly: no -shm file for a reader to use (the lock file is the sync's)
    assert before == ["catalog.db", "catalog.db.lock"]
    content = (folder / "catalog.db").read_bytes()
    os.chmod(folder / "catalog.db", 0o644)
    os.chmod(folder, 0o755)
    out = shared_tmp / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
        "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "ETL_DATABASE_URL": url,
    }
    commands = [*READERS[:-2], ("history", models[0]["id"]), READERS[-1],
                ("report", "--output", str(out / "r.html"))]  # fmt: skip
    done = _runs_as("nobody", [python, "-c", AS_NOBODY, json.dumps(commands)], env=env, cwd="/")
    assert done is not None and done.returncode == 0, done and done.stderr
    for args, (code, stderr) in zip(commands, json.loads(done.stdout), strict=True):
        assert (code, stderr) == (0, ""), args
    assert (out / "r.html").stat().st_size > 1000
    assert sorted(p.name for p in folder.iterdir()) == before
    assert (folder / "catalog.db").read_bytes() == content


# -- on a terminal ----------------------------------------------------------------------------


def test_on_a_terminal_a_table_fits_its_width(tmp_path: Path) -> None:
    """``etl runs`` in a real pseudo-terminal 80 columns wide: no line is longer."""
    db_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    load_hostile(db_url)
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "80", "LINES": "40", "ETL_DATABASE_URL": db_url}
    proc = subprocess.Popen([sys.executable, "-m", "etl", "runs"], stdin=secondary,
                            stdout=secondary, stderr=secondary, env=env)  # fmt: skip
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        try:
            chunk = os.read(primary, 65536) if ready else b""
        except OSError:  # the child closed the terminal
            chunk = b""
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(timeout=60) == 0
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 4
    assert all(len(line) <= 80 for line in lines), lines
    assert any("…" in line for line in lines)
    for char in RAW_CONTROLS:
        assert char not in "".join(lines)
