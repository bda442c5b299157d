"""Secrets and input limits, with real processes: the token and database passwords never show.

The token (:data:`tests.conftest.TOKEN`) is recognisable, so each test can look for it, and
for its tail, in everything a run leaves behind: stdout, stderr at debug level, tracebacks,
every stored row, the raw SQLite files and the archive.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from etl import schema
from tests.catalog import make_catalog, make_model
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import MODELS_PATH, FakeApi, Fault, RecordedRequest
from tests.test_processes import (
    Child,
    catalog_snapshot,
    child_env,
    error_line,
    etl_process,
    run_etl_process,
    runs,
)

PASSWORD = "hunter2pw"


@pytest.fixture
def server() -> Iterator[FakeApi]:
    """The fake API with 30 models: three pages at ``--per-page 10``."""
    with FakeApi(models=make_catalog(30), token=TOKEN) as api:
        yield api


def assert_no_token(text: str, where: str) -> None:
    for secret in (TOKEN, TOKEN[-12:]):
        assert secret not in text, f"the token shows in {where}"


def assert_no_token_stored(engine: sa.Engine) -> None:
    for name in schema.metadata.tables:
        assert_no_token(repr(table_rows(engine, name)), f"table {name}")


def sync_args(db_url: str, api: FakeApi, *extra: str) -> list[str]:
    return ["--database-url", db_url, "sync", "--api-url", api.url, "--per-page", "10", *extra]


def test_token_is_nowhere_after_a_verbose_archived_sync(server: FakeApi, tmp_path: Path) -> None:
    # How rows are stored differs by dialect; what goes into them does not: SQLite, whose file
    # can also be searched byte by byte, stands for all three.
    db_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    server.faults = [Fault.rate_limited(retry_after="0.01", page=2)]  # a logged retry
    archive = tmp_path / "archive"

    child = run_etl_process(
        tmp_path, "-v", *sync_args(db_url, server, "--archive-dir", str(archive), "--json")
    )

    assert child.process.returncode == 0, child.stderr
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {TOKEN}"}
    assert json.loads(child.stdout)["retries"] == 1
    assert "retrying after HTTP 429" in child.stderr
    assert_no_token(child.stdout, "the --json output")
    assert_no_token(child.stderr, "the debug log")
    files = sorted(archive.rglob("*.jsonl.gz"))
    assert len(files) == 1
    assert_no_token(gzip.decompress(files[0].read_bytes()).decode(), "the archive")
    engine = sa.create_engine(db_url)
    try:
        assert_no_token_stored(engine)
    finally:
        engine.dispose()
    for path in tmp_path.glob("catalog.db*"):
        assert TOKEN[-12:].encode() not in path.read_bytes(), f"the token is in {path.name}"


ECHOED = f"Authorization: Bearer {TOKEN}"
"""What a careless server might quote back in an error body."""


@pytest.mark.parametrize(
    ("fault", "exit_code", "log_format"),
    [
        (Fault(status=401, body={"id": "unauthorized", "message": f"bad {ECHOED}"}), 3, "text"),
        (Fault(body=f"<html><pre>{ECHOED}</pre></html>"), 5, "text"),
        (Fault(status=400, body={"id": "bad_request", "message": f"bad {ECHOED}"}), 5, "json"),
    ],
    ids=["401-echoing-it", "html-echoing-it", "400-echoing-it-json-logs"],
)
def test_token_is_not_in_errors_or_tracebacks_even_when_the_api_echoes_it(
    server: FakeApi, tmp_path: Path, fault: Fault, exit_code: int, log_format: str
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    server.faults = [dataclasses.replace(fault)]

    child = run_etl_process(
        tmp_path, "-v", "--log-format", log_format, *sync_args(url, server, "--max-retries", "0")
    )

    assert child.process.returncode == exit_code, child.stderr
    assert "Traceback (most recent call last)" in child.stderr
    assert "Bearer ***" in child.stderr  # the echo, masked
    assert_no_token(child.stdout + child.stderr, "the error output")
    if log_format == "json":
        error = json.loads(child.stderr.splitlines()[-1])
        assert error["level"] == "ERROR" and error["exit_code"] == exit_code
    else:
        assert child.stderr.splitlines()[-1].startswith("etl: error: ")
    engine = sa.create_engine(url)
    try:
        failed = runs(engine)[-1]
        assert failed["status"] == "failed"
        assert "Authorization: Bearer ***" in failed["error"]
        assert_no_token(repr(failed), "the failed run's sync_runs row")
    finally:
        engine.dispose()


def test_database_password_is_masked_in_errors_and_tracebacks(
    db_url: str, server: FakeApi, tmp_path: Path
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("a SQLite URL has no password")
    real = make_url(db_url).set(password=PASSWORD)
    urls = {
        # PostgreSQL (trust) lets the password in and finds no such database; MariaDB refuses
        # the password. Either way the server answers with an error.
        "refused": real.set(database=f"{real.database}_missing"),
        "unreachable": real.set(port=1),
    }
    commands = {
        "refused": ["status"],
        "unreachable": ["-v", "sync", "--api-url", server.url],
    }
    with ExitStack() as stack:
        children = {
            kind: stack.enter_context(
                etl_process(
                    tmp_path, "--database-url", url.render_as_string(False), *commands[kind]
                )
            )
            for kind, url in urls.items()
        }
        for kind, child in children.items():
            assert child.wait() == 6, child.stderr
            shown = urls[kind].render_as_string(hide_password=True)
            assert ":***@" in shown
            assert error_line(child).startswith(f"etl: error: database error on {shown}: ")
            assert PASSWORD not in child.stdout + child.stderr
            if commands[kind][0] == "-v":
                assert "Traceback (most recent call last)" in child.stderr
            else:
                assert "Traceback" not in child.stderr
    assert server.requests == []


def test_token_file_readable_by_others_gets_a_warning_and_works(
    server: FakeApi, tmp_path: Path
) -> None:
    env = child_env()
    del env["DIGITALOCEAN_ACCESS_TOKEN"]
    files = {}
    for mode in (0o640, 0o600):
        files[mode] = tmp_path / f"token-{mode:o}"
        files[mode].write_text(f"{TOKEN}\n")
        files[mode].chmod(mode)
    with ExitStack() as stack:
        children: dict[int, Child] = {
            mode: stack.enter_context(
                etl_process(tmp_path, *_token_file_sync(tmp_path, server, path), env=env)
            )
            for mode, path in files.items()
        }
        for child in children.values():
            assert child.wait() == 0, child.stderr
    for mode, child in children.items():
        warning = (
            f"etl: WARNING: token file {files[mode]} is readable by group or others; chmod 600 it"
        )
        assert (warning in child.stderr) is (mode != 0o600), child.stderr
        assert_no_token(child.stdout + child.stderr, "the output")
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {TOKEN}"}


def _token_file_sync(tmp_path: Path, api: FakeApi, token_file: Path) -> list[str]:
    url = f"sqlite:///{tmp_path / (token_file.name + '.db')}"
    return sync_args(url, api, "--token-file", str(token_file))


# -- input limits ------------------------------------------------------------------------------


def _huge_page_2(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
    if request.page == 2:
        body["models"][0]["description"] = "x" * 100_000
    return body


def _pages_forever(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
    """Past the last page, keep inventing one more model and one more page."""
    page = request.page or 1
    if not body["models"]:
        body["models"] = [make_model(1000 + page)]
    body["links"] = {"pages": {"next": f"{MODELS_PATH}?page={page + 1}&per_page=10"}}
    return body


@pytest.mark.parametrize(
    ("transform", "args", "message"),
    [
        (
            _huge_page_2,
            ["--max-response-mb", "0.05"],
            re.compile(r"page=2&per_page=10: response of \d+ bytes exceeds the cap of 52428$"),
        ),
        (
            _pages_forever,
            [],
            re.compile(r"the API kept sending pages past page 5 \(meta.pages says 3\); stopped"),
        ),
    ],
    ids=["body-over-the-size-cap", "more-pages-than-meta-pages"],
)
def test_input_over_its_limits_exits_5_writing_nothing(
    run_etl: Any,
    server: FakeApi,
    tmp_path: Path,
    transform: Any,
    args: list[str],
    message: re.Pattern[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    assert run_etl(*sync_args(url, server)).exit_code == 0
    server.models = [{**m, "name": m["name"] + " v2"} for m in server.models]
    engine = sa.create_engine(url)
    try:
        before = catalog_snapshot(engine)
        server.transform = transform
        started = time.monotonic()

        child = run_etl_process(tmp_path, *sync_args(url, server, *args))

        assert child.process.returncode == 5, child.stderr
        assert time.monotonic() - started < 20
        assert message.search(error_line(child)), child.stderr
        assert catalog_snapshot(engine) == before
        failed = runs(engine)[-1]
        assert failed["status"] == "failed" and message.search(failed["error"])
    finally:
        engine.dispose()


# -- database passwords in query parameters -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://etl:pw@db/catalog", "postgresql://etl:***@db/catalog"),
        (
            "postgresql://etl@db/catalog?sslmode=require&password=pw&PWD=pw",
            "postgresql://etl@db/catalog?PWD=***&password=***&sslmode=require",
        ),
        ("mysql://etl@db/c?passwd=pw&passwd=pw2", "mysql://etl@db/c?passwd=***"),
        ("postgresql://etl@db/c?sslpassword=pw", "postgresql://etl@db/c?sslpassword=***"),
        ("sqlite:///catalog.db", "sqlite:///catalog.db"),
    ],
    ids=["userinfo", "password-and-pwd", "passwd-twice", "sslpassword", "sqlite"],
)
def test_mask_url_masks_every_password(url: str, shown: str) -> None:
    from etl.db import mask_url

    assert mask_url(url) == shown


def test_a_password_query_parameter_is_masked_in_the_error_line(run_etl: Any) -> None:
    url = f"postgresql://etl@127.0.0.1:1/catalog?password={PASSWORD}&connect_timeout=2"
    result = run_etl("--database-url", url, "status")
    assert result.exit_code == 6
    assert PASSWORD not in result.stdout + result.stderr
    assert "postgresql+psycopg://etl@127.0.0.1:1/catalog?connect_timeout=2&password=***" in (
        result.stderr
    )


def test_a_password_query_parameter_is_masked_in_the_report_header(
    run_etl: Any, db_url: str, tmp_path: Path
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("libpq takes a password as a query parameter")
    url = f"{db_url}?password={PASSWORD}"
    assert run_etl("--database-url", url, "db", "upgrade").exit_code == 0
    result = run_etl("--database-url", url, "report", "--output", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.stderr
    html = (tmp_path / "r.html").read_text()
    assert PASSWORD not in html and "password=***" in html
