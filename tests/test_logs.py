"""Logs: ``--log-format text|json`` and the summary line that ends every sync and backfill.

The JSON tests run real processes (``python -m etl`` and the cron wrapper around the real
``etl``) against the fake API, with a rate limit that forces a retry, and parse every line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etl.logs import JsonFormatter, TextFormatter, setup_logging
from tests.catalog import make_catalog
from tests.conftest import TOKEN
from tests.fakeapi import FakeApi, Fault

ROOT = Path(__file__).resolve().parents[1]
ETL = Path(sys.executable).with_name("etl")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ etl: (DEBUG|INFO|WARNING|ERROR): \S")
COUNTS = ("requests", "retries", "pages", "models_seen", "inserted", "updated", "unchanged",
          "removed", "restored", "warnings")  # fmt: skip


@pytest.fixture
def api() -> Any:
    with FakeApi(models=make_catalog(12), token=TOKEN) as server:
        # Retry-After 0.01: a real retry that waits 10 ms.
        server.faults = [Fault.rate_limited(retry_after="0.01", page=2)]
        yield server


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "DIGITALOCEAN_"))}
    return {**env, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN, **extra}


def _parse_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "no log lines"
    return [json.loads(line) for line in lines]


def _utc(stamp: str) -> datetime:
    assert stamp.endswith("Z"), stamp
    return datetime.fromisoformat(stamp[:-1] + "+00:00")


def test_json_logs_parse_line_by_line(api: FakeApi, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "etl", "--log-format", "json", "--database-url", url,
         "sync", "--api-url", api.url, "--per-page", "5"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = _parse_lines(done.stderr)
    for record in records:
        assert {"ts", "level", "logger", "message"} <= set(record), record
        assert abs((_utc(record["ts"]) - datetime.now(UTC)).total_seconds()) < 120
    retry = next(r for r in records if "retrying after" in r["message"])
    assert retry["level"] == "WARNING" and retry["logger"] == "etl.http"
    assert "HTTP 429" in retry["message"] and "(page 2)" in retry["message"]

    summary = records[-1]
    assert summary["event"] == "sync_finished" and summary["level"] == "INFO"
    assert summary["run_id"] == 1 and summary["status"] == "succeeded"
    assert {k: summary[k] for k in COUNTS} == {
        "requests": 4, "retries": 1, "pages": 3, "models_seen": 12, "inserted": 12,
        "updated": 0, "unchanged": 0, "removed": 0, "restored": 0, "warnings": 0,
    }  # fmt: skip
    assert isinstance(summary["duration_s"], float)
    assert "run_id=1" in summary["message"] and "retries=1" in summary["message"]
    assert done.stdout.startswith("run 1 succeeded: 12 models on 3 pages")
    assert TOKEN not in done.stdout + done.stderr


def test_json_errors_are_log_lines_too(api: FakeApi, tmp_path: Path, run_etl: Any) -> None:
    api.faults = [Fault(status=400)]
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    env = {"ETL_LOG_FORMAT": "JSON"}  # the variable, in any case
    result = run_etl("--database-url", url, "sync", "--api-url", api.url, env=env)
    assert result.exit_code == 5
    (error,) = _parse_lines(result.stderr)
    assert error["level"] == "ERROR" and error["exit_code"] == 5
    assert error["message"].startswith("error: GET ")
    assert "exc_info" not in error

    api.faults = [Fault(status=400)]
    result = run_etl("-v", "--database-url", url, "sync", "--api-url", api.url, env=env)
    records = _parse_lines(result.stderr)
    assert "Traceback (most recent call last)" in records[-1]["exc_info"]
    assert TOKEN not in result.stdout + result.stderr


def test_text_logs_carry_a_utc_time_when_not_a_terminal(
    api: FakeApi, tmp_path: Path, run_etl: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    result = run_etl("--database-url", url, "sync", "--api-url", api.url, "--per-page", "5")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    assert "etl: WARNING: retrying after HTTP 429" in lines[0]
    summary = lines[-1].split(" etl: INFO: ", 1)[1]
    assert summary.startswith(
        "sync finished: run_id=1 status=succeeded dry_run=false complete=true requests=4 "
        "retries=1 pages=3 models_seen=12 inserted=12"
    )

    result = run_etl("-q", "--database-url", url, "sync", "--api-url", api.url)
    assert result.exit_code == 0 and result.stderr == ""


def test_backfill_ends_with_a_summary(tmp_path: Path, run_etl: Any) -> None:
    snapshot = tmp_path / "2026-03-03.json"
    snapshot.write_text(json.dumps(make_catalog(3)))
    (tmp_path / "2026-03-04.json").write_text("{not json")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    result = run_etl(
        "--log-format", "json", "--database-url", url, "backfill", str(tmp_path), "--json"
    )
    assert result.exit_code == 5
    records = _parse_lines(result.stderr)
    summary = next(r for r in records if r.get("event") == "backfill_finished")
    assert (summary["files"], summary["loaded"], summary["failed"], summary["inserted"]) == (
        2, 1, 1, 3,
    )  # fmt: skip
    assert records[-1]["exit_code"] == 5


def test_formatters() -> None:
    record = logging.LogRecord("etl.x", logging.WARNING, __file__, 1, "two\nlines %d", (2,), None)
    record.run_id = 7
    record.when = datetime(2026, 3, 3, 12, tzinfo=UTC)
    record.odd = object()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "two\nlines 2" and parsed["run_id"] == 7
    assert parsed["when"] == "2026-03-03T12:00:00.000000Z"
    assert parsed["odd"].startswith("<object object")
    assert parsed["level"] == "WARNING" and parsed["logger"] == "etl.x"

    # One record, one line: the newline in the message is shown escaped.
    assert TextFormatter(timestamps=False).format(record) == "etl: WARNING: two\\nlines 2"
    assert TEXT_LINE.match(TextFormatter(timestamps=True).format(record))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    setup_logging(stream=terminal)
    try:
        logging.getLogger("etl.test").info("hello %s", "there")
    finally:
        setup_logging()
    assert terminal.getvalue() == "etl: INFO: hello there\n"


def test_no_timestamps_in_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd sets JOURNAL_STREAM to stderr's device:inode; the journal stamps lines itself."""
    with (tmp_path / "journal").open("w+") as stream, (tmp_path / "other").open("w") as other:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        try:
            setup_logging(stream=stream)
            logging.getLogger("etl.test").warning("to the journal")
            setup_logging(stream=other)  # some other file: stamped
            logging.getLogger("etl.test").warning("to a file")
        finally:
            setup_logging()
        stream.seek(0)
        assert stream.read() == "etl: WARNING: to the journal\n"
    assert TEXT_LINE.match((tmp_path / "other").read_text())


@pytest.mark.skipif(shutil.which("flock") is None, reason="the wrapper needs flock(1)")
def test_cron_wrapper_json_log_parses_line_by_line(api: FakeApi, tmp_path: Path) -> None:
    env_file = tmp_path / "etl.env"
    env_file.write_text(
        f"DIGITALOCEAN_ACCESS_TOKEN={TOKEN}\nETL_BIN={ETL}\nETL_LOG_FORMAT=json\n"
        f"ETL_DATABASE_URL=sqlite:///{tmp_path / 'catalog.db'}\n"
    )
    env_file.chmod(0o600)
    log_file = tmp_path / "log" / "sync.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ETL_ENV_FILE": str(env_file),
        "ETL_LOCK_FILE": str(tmp_path / "etl-sync.lock"),
        "ETL_LOG_FILE": str(log_file),
    }
    done = subprocess.run(
        [str(ROOT / "cron" / "etl-sync"), "--api-url", api.url, "--per-page", "5"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    records = _parse_lines(log_file.read_text())
    assert records[0]["logger"] == "etl-sync" and records[0]["message"].startswith("start (pid ")
    assert any("retrying after HTTP 429" in r.get("message", "") for r in records)
    assert any(r.get("event") == "sync_finished" and r["run_id"] == 1 for r in records)
    assert any(r.get("models_seen") == 12 and "ts" not in r for r in records)  # sync --json
    assert records[-1]["message"] == "end: exit 0" and records[-1]["exit_code"] == 0
    assert TOKEN not in log_file.read_text()


def test_verbose_logs_each_phase_and_each_request(
    api: FakeApi, tmp_path: Path, run_etl: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    quiet = run_etl("--database-url", url, "sync", "--api-url", api.url, "--per-page", "100")
    assert quiet.exit_code == 0 and "DEBUG" not in quiet.stderr
    api.models = api.models[1:]  # one model gone: a confirming listing, named in the singular
    result = run_etl("-v", "--database-url", url, "sync", "--api-url", api.url, "--per-page", "100")
    assert result.exit_code == 0, result.output
    for phase in ("fetch", "read snapshot", "load and commit"):
        assert re.search(rf"etl: DEBUG: phase {phase}: \d+\.\d{{3}}s", result.stderr), phase
    assert re.search(r"DEBUG: GET \S+ HTTP 200, \d+ bytes, \d+ ms", result.stderr)
    assert "1 model missing; listing again" in result.stderr
