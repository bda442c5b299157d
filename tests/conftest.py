"""Shared fixtures: a fresh database on every dialect, the fake API, and CLI helpers.

Database tests take the ``db_url`` fixture and run on SQLite always, and on PostgreSQL and
MariaDB/MySQL when ETL_TEST_POSTGRES_URL / ETL_TEST_MYSQL_URL name a server. Each test gets a
database of its own, created and dropped around it. With CI=true both URLs are required and an
unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from etl import db, schema
from etl.cli import cli
from tests.catalog import make_catalog

pytest_plugins = ["tests.reliability"]  # writes docs/RELIABILITY.md (ETL_WRITE_RELIABILITY=1)

TOKEN = "dop_v1_SECRETTOKEN0123456789abcdef"
"""A recognisable token: tests assert it never shows up anywhere."""

SERVERS = {"postgresql": "ETL_TEST_POSTGRES_URL", "mysql": "ETL_TEST_MYSQL_URL"}


def _server_url(dialect: str) -> str:
    variable = SERVERS[dialect]
    url = os.environ.get(variable)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {variable} is not set")
        pytest.skip(f"{variable} not set")
    return url


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """The URL of a new, empty database on each dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    server = db.parse_url(_server_url(request.param))
    name = f"etl_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        pytest.fail(f"{request.param} server at {db.mask_url(server)} unreachable: {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if request.param == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on the test's database (migrated by whatever the test runs first)."""
    engine = db.create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def api() -> Iterator[Any]:
    """The fake API serving a 300-model catalog, accepting only :data:`TOKEN`."""
    from tests.fakeapi import FakeApi

    with FakeApi(models=make_catalog(300), token=TOKEN) as server:
        yield server


@pytest.fixture
def run_etl(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Runs the ``etl`` CLI in-process with the token in the environment; retries never sleep."""
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.delenv("DIGITALOCEAN_TOKEN", raising=False)
    monkeypatch.delenv("ETL_DATABASE_URL", raising=False)
    waits: list[float] = []
    monkeypatch.setattr("etl.http.sleep", waits.append)

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    run.waits = waits  # type: ignore[attr-defined]
    return run


def table_rows(engine: sa.Engine, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as dicts, in primary-key order."""
    declared = schema.metadata.tables[table]
    with engine.connect() as conn:
        order = list(declared.primary_key.columns)
        return [dict(r._mapping) for r in conn.execute(sa.select(declared).order_by(*order))]
