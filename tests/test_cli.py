"""The ``etl`` command end to end: options, token, exit codes, and one-line error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db, schema
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import MODELS_PATH, FakeApi, Fault, RecordedRequest

NO_TOKEN = {"DIGITALOCEAN_ACCESS_TOKEN": None, "DIGITALOCEAN_TOKEN": None}


@pytest.fixture
def server() -> Iterator[FakeApi]:
    """The fake API with a catalog of 12: three pages at ``--per-page 5``."""
    with FakeApi(models=make_catalog(12), token=TOKEN) as api:
        yield api


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A database for tests about the API side, where the dialect does not matter."""
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def sync(run_etl: Any, database_url: str, api: FakeApi, *args: str, **kwargs: Any) -> Any:
    return run_etl("--database-url", database_url, "sync", "--api-url", api.url, *args, **kwargs)


def error_line(result: Any) -> str:
    """The one line an error leaves on stderr, checked to be the only ``etl: error`` line."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("etl: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def authorizations(api: FakeApi) -> set[str]:
    return {request.headers.get("authorization", "") for request in api.requests}


# -- the token ---------------------------------------------------------------------------------


def test_access_token_wins_over_the_other_variable_and_the_file(
    run_etl: Any, sqlite_url: str, server: FakeApi, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    result = sync(
        run_etl,
        sqlite_url,
        server,
        "--token-file",
        str(token_file),
        env={"DIGITALOCEAN_TOKEN": "other-token"},
    )
    assert result.exit_code == 0, result.output
    assert authorizations(server) == {f"Bearer {TOKEN}"}


def test_digitalocean_token_is_used_when_access_token_is_unset(
    run_etl: Any, sqlite_url: str, server: FakeApi, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    env = {**NO_TOKEN, "DIGITALOCEAN_TOKEN": TOKEN}
    result = sync(run_etl, sqlite_url, server, "--token-file", str(token_file), env=env)
    assert result.exit_code == 0, result.output
    assert authorizations(server) == {f"Bearer {TOKEN}"}


def test_token_file_is_used_when_no_variable_is_set(
    run_etl: Any, sqlite_url: str, server: FakeApi, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    token_file.chmod(0o600)
    result = sync(run_etl, sqlite_url, server, "--token-file", str(token_file), env=NO_TOKEN)
    assert result.exit_code == 0, result.output
    assert authorizations(server) == {f"Bearer {TOKEN}"}


def test_no_token_exits_3_saying_how_to_set_one(
    run_etl: Any, sqlite_url: str, server: FakeApi
) -> None:
    result = sync(run_etl, sqlite_url, server, env=NO_TOKEN)
    assert result.exit_code == 3
    assert error_line(result) == (
        "etl: error: no API token: set DIGITALOCEAN_ACCESS_TOKEN (or DIGITALOCEAN_TOKEN), "
        "or pass --token-file PATH"
    )
    assert server.requests == []


def test_unreadable_token_file_exits_3(
    run_etl: Any, sqlite_url: str, server: FakeApi, tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    result = sync(run_etl, sqlite_url, server, "--token-file", str(missing), env=NO_TOKEN)
    assert result.exit_code == 3
    assert f"cannot read --token-file {missing}" in error_line(result)
    assert server.requests == []


def test_token_file_with_more_than_the_token_exits_3_without_showing_it(
    run_etl: Any, sqlite_url: str, server: FakeApi, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\nissued for the catalog sync\n")
    token_file.chmod(0o600)
    result = run_etl(
        "-v",
        "--database-url",
        sqlite_url,
        "sync",
        "--api-url",
        server.url,
        "--token-file",
        str(token_file),
        env=NO_TOKEN,
    )
    assert result.exit_code == 3
    assert "must be the token alone, on one line" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert server.requests == []


@pytest.mark.parametrize(
    ("faults", "exit_code"),
    [
        ([Fault(action="reset"), Fault.rate_limited(retry_after="1"), Fault.server_error()], 0),
        ([Fault.server_error(503, times=10)], 4),
        ([Fault(status=401)], 3),
    ],
    ids=["retried-then-ok", "retries-exhausted", "refused"],
)
def test_token_never_appears_in_any_output_even_verbose(
    run_etl: Any, sqlite_url: str, server: FakeApi, faults: list[Fault], exit_code: int
) -> None:
    server.faults = faults
    result = run_etl(
        "-v", "--database-url", sqlite_url, "sync", "--api-url", server.url, "--max-retries", "3"
    )
    assert result.exit_code == exit_code, result.output
    assert authorizations(server) == {f"Bearer {TOKEN}"}
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN[-12:] not in result.stdout + result.stderr


# -- the API URL -------------------------------------------------------------------------------


def test_api_url_comes_from_the_environment(run_etl: Any, sqlite_url: str, server: FakeApi) -> None:
    result = run_etl("--database-url", sqlite_url, "sync", env={"DIGITALOCEAN_API_URL": server.url})
    assert result.exit_code == 0, result.output
    assert [r.path for r in server.requests] == [MODELS_PATH]


def test_api_url_option_wins_over_the_environment(
    run_etl: Any, sqlite_url: str, server: FakeApi
) -> None:
    dead = "http://127.0.0.1:1"
    result = sync(run_etl, sqlite_url, server, env={"DIGITALOCEAN_API_URL": dead})
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 1


def test_api_url_defaults_to_digitalocean(run_etl: Any) -> None:
    result = run_etl("sync", "--help")
    assert result.exit_code == 0
    help_text = " ".join(result.stdout.split())
    assert "[env var: DIGITALOCEAN_API_URL; default: https://api.digitalocean.com]" in help_text


@pytest.mark.parametrize(
    "url",
    ["http://api.digitalocean.com", "http://10.0.0.1:8080", "http://127.0.0.1.example.com"],
)
def test_plain_http_to_a_remote_host_exits_2(run_etl: Any, sqlite_url: str, url: str) -> None:
    result = run_etl("--database-url", sqlite_url, "sync", "--api-url", url)
    assert result.exit_code == 2
    assert "plain http is refused except to a loopback host; use https" in error_line(result)


def test_plain_http_to_localhost_is_allowed(run_etl: Any, sqlite_url: str, server: FakeApi) -> None:
    url = server.url.replace("127.0.0.1", "localhost")
    result = run_etl("--database-url", sqlite_url, "sync", "--api-url", url)
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://api.example.com", "--api-url must be an http(s) URL"),
        ("http://127.0.0.1:99999", "--api-url is not a URL etl can use safely: invalid port"),
    ],
)
def test_malformed_api_url_exits_2(run_etl: Any, sqlite_url: str, url: str, message: str) -> None:
    result = run_etl("--database-url", sqlite_url, "sync", "--api-url", url)
    assert result.exit_code == 2
    assert message in error_line(result)


# -- paging and filters ------------------------------------------------------------------------


def test_per_page_defaults_to_200(run_etl: Any, sqlite_url: str, server: FakeApi) -> None:
    assert sync(run_etl, sqlite_url, server).exit_code == 0
    assert [r.query["per_page"] for r in server.requests] == [["200"]]


def test_per_page_option_is_sent_on_every_page(
    run_etl: Any, sqlite_url: str, server: FakeApi
) -> None:
    result = sync(run_etl, sqlite_url, server, "--per-page", "5", "--json")
    assert result.exit_code == 0, result.output
    assert '"models_seen": 12' in result.stdout
    assert [(r.page, r.query["per_page"]) for r in server.requests] == [
        (1, ["5"]),
        (2, ["5"]),
        (3, ["5"]),
    ]


@pytest.mark.parametrize("per_page", ["0", "201", "many"])
def test_per_page_out_of_range_is_a_usage_error(
    run_etl: Any, sqlite_url: str, server: FakeApi, per_page: str
) -> None:
    result = sync(run_etl, sqlite_url, server, "--per-page", per_page)
    assert result.exit_code == 2
    assert "Invalid value for '--per-page'" in result.stderr
    assert server.requests == []


def test_filters_are_sent_on_every_page(run_etl: Any, sqlite_url: str, server: FakeApi) -> None:
    result = sync(
        run_etl,
        sqlite_url,
        server,
        "--per-page",
        "1",
        "--public-only",
        "--usecase",
        "agent",
        "--usecase",
        "Reasoning",
        "--usecase",
        "MODEL_USECASE_AGENT",
    )
    assert result.exit_code == 0, result.output
    assert len(server.requests) > 1
    for request in server.requests:
        assert request.query["public_only"] == ["true"]
        assert request.query["usecases"] == ["MODEL_USECASE_AGENT", "MODEL_USECASE_REASONING"]
        assert request.query["per_page"] == ["1"]


def test_unknown_usecase_exits_2(run_etl: Any, sqlite_url: str, server: FakeApi) -> None:
    result = sync(run_etl, sqlite_url, server, "--usecase", "agent", "--usecase", "robots")
    assert result.exit_code == 2
    assert error_line(result).startswith(
        "etl: error: unknown usecase 'robots'; choose from unknown, agent, "
    )
    assert server.requests == []


def test_pagination_loop_exits_5(run_etl: Any, sqlite_url: str, server: FakeApi) -> None:
    def back_to_page_1(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        if "next" in body.get("links", {}).get("pages", {}):
            body["links"]["pages"]["next"] = f"{server.url}{MODELS_PATH}?page=1&per_page=5"
        return body

    server.transform = back_to_page_1
    result = sync(run_etl, sqlite_url, server, "--per-page", "5")
    assert result.exit_code == 5
    assert "page 1's next link points back to page 1: a pagination loop" in error_line(result)
    assert len(server.requests) == 1


# -- retries -----------------------------------------------------------------------------------


def test_each_retry_is_logged_with_its_reason_and_wait(
    run_etl: Any, sqlite_url: str, server: FakeApi
) -> None:
    server.faults = [Fault.rate_limited(retry_after="3"), Fault(action="reset_mid_body", page=2)]
    result = sync(run_etl, sqlite_url, server, "--per-page", "5")
    assert result.exit_code == 0, result.output
    assert run_etl.waits[0] == 3.0
    retries = [line for line in result.stderr.splitlines() if "retrying after" in line]
    assert len(retries) == 2
    assert "retrying after HTTP 429 from " in retries[0]
    assert "waiting 3.0s (attempt 2 of 6)" in retries[0]
    assert "retrying after connection broken mid-body from " in retries[1]
    assert f"waiting {run_etl.waits[1]:.1f}s (attempt 2 of 6)" in retries[1]


def test_rate_limit_longer_than_max_wait_exits_4_saying_when_to_retry(
    run_etl: Any, sqlite_url: str, server: FakeApi
) -> None:
    server.faults = [Fault.rate_limited(retry_after="120")]
    result = sync(run_etl, sqlite_url, server, "--max-wait", "10")
    assert result.exit_code == 4
    line = error_line(result)
    assert "rate limited by the API for 120s, longer than --max-wait 10s; retry after 20" in line
    assert len(server.requests) == 1 and run_etl.waits == []


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_never_retried(
    run_etl: Any, sqlite_url: str, server: FakeApi, status: int
) -> None:
    server.faults = [Fault(status=status, times=10)]
    result = sync(run_etl, sqlite_url, server)
    assert result.exit_code == (3 if status in (401, 403) else 5)
    assert f"HTTP {status}" in error_line(result)
    assert len(server.requests) == 1 and run_etl.waits == []


def test_failed_page_fails_the_run_and_leaves_the_catalog_unchanged(
    run_etl: Any, db_url: str, server: FakeApi, engine: sa.Engine
) -> None:
    assert sync(run_etl, db_url, server, "--per-page", "5").exit_code == 0
    catalog = [name for name in schema.metadata.tables if name != "sync_runs"]
    before = {name: table_rows(engine, name) for name in catalog}
    models = make_catalog(14)  # two new models, one renamed, one gone: every kind of write
    models[1] = {**models[1], "name": "Renamed"}  # on page 1, written before page 2 fails
    server.models = models[1:]
    server.faults = [Fault.server_error(503, page=2, times=10)]
    server.requests.clear()

    result = sync(run_etl, db_url, server, "--per-page", "5", "--max-retries", "2")

    assert result.exit_code == 4
    assert "(page 2) failed after 3 attempts: HTTP 503" in error_line(result)
    assert [r.page for r in server.requests] == [1, 2, 2, 2]
    assert {name: table_rows(engine, name) for name in catalog} == before


# -- the database ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["postgresql://etl:hunter2pw@127.0.0.1:1/catalog", "mysql://etl:hunter2pw@127.0.0.1:1/catalog"],
    ids=["postgresql", "mysql"],
)
@pytest.mark.parametrize("command", [["sync"], ["db", "current"], ["db", "upgrade"]])
def test_unreachable_database_exits_6_with_the_password_masked(
    run_etl: Any, server: FakeApi, url: str, command: list[str]
) -> None:
    args = [*command, "--api-url", server.url] if command == ["sync"] else command
    result = run_etl("--database-url", url, *args)
    assert result.exit_code == 6
    line = error_line(result)
    assert line.startswith("etl: error: database error on ")
    assert ":***@127.0.0.1:1/catalog" in line
    assert "hunter2pw" not in result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert server.requests == []


@pytest.mark.empty_database
def test_database_behind_head_exits_6_naming_the_upgrade_command(
    run_etl: Any, db_url: str, server: FakeApi, engine: sa.Engine
) -> None:
    assert run_etl("--database-url", db_url, "db", "upgrade", "0001").exit_code == 0
    # A database in use (it has runs): an unused one behind head is a first migration that
    # was stopped, which a sync completes (tests/test_lifecycle.py).
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sync_runs (started_at, observed_at, status, mode, complete, "
                "requests, retries, pages, models_seen, inserted, updated, unchanged, removed, "
                "restored, warnings) VALUES ('2026-01-01 00:00:00', '2026-01-01 00:00:00', "
                "'succeeded', 'sync', true, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
            )
        )
    result = sync(run_etl, db_url, server)
    assert result.exit_code == 6
    line = error_line(result)
    assert "the database is behind this etl: its schema is at revision 0001" in line
    assert "run `etl db upgrade`" in line
    assert server.requests == []
    assert run_etl("--database-url", db_url, "db", "upgrade").exit_code == 0
    assert sync(run_etl, db_url, server).exit_code == 0


def test_database_ahead_of_the_code_says_to_upgrade_etl(
    run_etl: Any, sqlite_url: str, server: FakeApi
) -> None:
    assert run_etl("--database-url", sqlite_url, "db", "upgrade").exit_code == 0
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'future9'"))
    engine.dispose()
    result = sync(run_etl, sqlite_url, server)
    assert result.exit_code == 6
    assert "newer than this etl knows" in error_line(result)
    assert "upgrade etl" in error_line(result)


@pytest.mark.empty_database
def test_db_commands_migrate_up_and_down(run_etl: Any, db_url: str, engine: sa.Engine) -> None:
    head = db.head_revision()
    result = run_etl("--database-url", db_url, "db", "current")
    if db_url.startswith("sqlite"):  # a reader never creates the file
        assert result.exit_code == 6 and "no such database" in result.stderr
    else:
        assert (result.exit_code, result.stdout) == (
            0,
            f"base (behind head {head}: run `etl db upgrade`)\n",
        )

    result = run_etl("--database-url", db_url, "db", "upgrade")
    assert (result.exit_code, result.stdout) == (0, f"database at {head}\n")
    assert set(schema.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    result = run_etl("--database-url", db_url, "db", "current")
    assert (result.exit_code, result.stdout) == (0, f"{head} (up to date)\n")

    result = run_etl("--database-url", db_url, "db", "downgrade", "base")
    assert (result.exit_code, result.stdout) == (0, "database at base\n")
    engine.dispose()
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    result = run_etl("--database-url", db_url, "db", "current")
    assert (result.exit_code, result.stdout) == (
        0,
        f"base (behind head {head}: run `etl db upgrade`)\n",
    )


def test_sync_after_downgrade_to_base_starts_afresh(
    run_etl: Any, db_url: str, server: FakeApi
) -> None:
    assert run_etl("--database-url", db_url, "db", "upgrade").exit_code == 0
    assert run_etl("--database-url", db_url, "db", "downgrade", "base").exit_code == 0
    result = sync(run_etl, db_url, server)
    assert result.exit_code == 0, result.output


def test_unknown_revision_is_a_usage_error_in_one_line(run_etl: Any, sqlite_url: str) -> None:
    result = run_etl("--database-url", sqlite_url, "db", "downgrade", "nonsense")
    assert result.exit_code == 2
    assert "unknown revision 'nonsense'; `etl db history` lists them" in error_line(result)


# -- schema drift ------------------------------------------------------------------------------


def test_unknown_field_is_kept_in_raw_and_logged_once_per_run(
    run_etl: Any, db_url: str, server: FakeApi, engine: sa.Engine
) -> None:
    models = make_catalog(6)
    models[1] = {**models[1], "carbon_footprint": {"grams_per_million": 12}}
    models[4] = {**models[4], "carbon_footprint": {"grams_per_million": 3}, "tier": "gold"}
    server.models = models
    for _ in range(2):
        result = sync(run_etl, db_url, server, "--per-page", "2")
        assert result.exit_code == 0, result.output
        assert result.stderr.count("schema drift: field 'carbon_footprint'") == 1
        assert result.stderr.count("schema drift: field 'tier'") == 1
    rows = {row["uuid"]: row for row in table_rows(engine, "models")}
    for model in (models[1], models[4]):
        raw = rows[model["uuid"]]["raw"]
        raw = raw if isinstance(raw, dict) else json.loads(raw)
        assert raw["carbon_footprint"] == model["carbon_footprint"]


# -- how errors look ---------------------------------------------------------------------------


def test_error_is_one_line_without_traceback_unless_verbose(
    run_etl: Any, sqlite_url: str, server: FakeApi
) -> None:
    server.faults = [Fault(status=400, times=2)]
    result = sync(run_etl, sqlite_url, server)
    assert result.exit_code == 5
    assert result.stderr == error_line(result) + "\n"
    assert error_line(result).startswith(f"etl: error: GET {server.url}{MODELS_PATH}?page=1")

    result = run_etl("-v", "--database-url", sqlite_url, "sync", "--api-url", server.url)
    assert result.exit_code == 5
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("etl: error: GET ")


def test_python_dash_m_etl_help(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "etl", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: etl [OPTIONS] COMMAND [ARGS]...")
    assert "sync" in done.stdout and "db" in done.stdout
    assert "ETL_DATABASE_URL" in done.stdout
