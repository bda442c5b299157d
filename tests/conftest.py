"""Shared fixtures: a fresh database on every dialect, the fake API, and CLI helpers.

Database tests take the ``db_url`` fixture and run on SQLite always, and on PostgreSQL and
MariaDB/MySQL when ETL_TEST_POSTGRES_URL / ETL_TEST_MYSQL_URL name a server. Each test gets a
database of its own, already migrated to head (a copy of a template migrated once per worker,
or, on a server, one an earlier test gave back emptied): a test about migrating takes the
``empty_database`` marker and gets a new database with no tables at all. With CI=true both URLs
are required and an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


def _migrate(url: str) -> None:
    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()  # no session left behind; SQLite's WAL folded into the file


class _Server:
    """Test databases on one PostgreSQL or MariaDB server, for one worker.

    A test gets a database of its own. One at head is taken from those earlier tests gave back,
    or made from a template migrated once (PostgreSQL copies a template database; MariaDB, which
    has none, replays the template's ``SHOW CREATE`` statements). Given back, a database is
    emptied to the template's rows and kept for the next test, unless its schema is no longer
    the template's (a test migrated it), in which case it is dropped.
    """

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.url = db.parse_url(_server_url(dialect))
        self.admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        self.free: list[str] = []
        self.template = ""
        self.script: list[str] = []  # MariaDB: the statements that rebuild the template
        self.schema: list[Any] = []
        self.rows: dict[str, list[Any]] = {}

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def _connect(self, name: str) -> sa.Engine:
        return sa.create_engine(
            self.url.set(database=name), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )

    def _describe(self, conn: sa.Connection, name: str) -> list[Any]:
        """Every table and view with its columns, and the schema version: what a reset keeps."""
        where = "public" if self.dialect == "postgresql" else name
        columns = conn.execute(
            sa.text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = :schema ORDER BY table_name, column_name"
            ),
            {"schema": where},
        ).all()
        return [*columns, conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()]

    def _make_template(self) -> None:
        self.template = f"etl_template_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self.template}")
        _migrate(self.url_of(self.template))
        engine = self._connect(self.template)
        with engine.connect() as conn:
            self.schema = self._describe(conn, self.template)
            for table in sa.inspect(conn).get_table_names():
                if table != "alembic_version":
                    rows = conn.execute(sa.select(schema.metadata.tables[table])).all()
                    if rows:
                        self.rows[table] = [row._asdict() for row in rows]
            if self.dialect == "mysql":
                self.script = ["SET FOREIGN_KEY_CHECKS = 0"]
                listed = conn.exec_driver_sql(
                    "SELECT table_name, table_type FROM information_schema.tables "
                    f"WHERE table_schema = '{self.template}' ORDER BY table_type, table_name"
                ).all()
                for name, kind in listed:  # base tables, then views
                    show = "VIEW" if kind == "VIEW" else "TABLE"
                    ddl = conn.exec_driver_sql(f"SHOW CREATE {show} {name}").one()[1]
                    self.script.append(ddl.replace(f"`{self.template}`", "`{database}`"))
                    if kind != "VIEW":
                        self.script.append(
                            f"INSERT INTO {name} SELECT * FROM {self.template}.{name}"
                        )
        engine.dispose()

    def _create(self, migrated: bool) -> str:
        name = f"etl_test_{uuid.uuid4().hex[:12]}"
        if migrated and not self.template:
            self._make_template()
        template = f" TEMPLATE {self.template}" if migrated and self.dialect == "postgresql" else ""
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}{template}")
            if migrated and self.dialect == "mysql":
                conn.exec_driver_sql(f"USE {name}")
                for statement in self.script:
                    conn.exec_driver_sql(statement.replace("{database}", name))
        return name

    def take(self, migrated: bool) -> str:
        try:
            return self.free.pop() if migrated and self.free else self._create(migrated)
        except sa.exc.OperationalError as exc:
            pytest.fail(f"{self.dialect} server at {db.mask_url(self.url)} unreachable: {exc}")

    def give_back(self, name: str, migrated: bool) -> None:
        self._end_sessions(name)
        if migrated and self._reset(name):
            self.free.append(name)
            return
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")

    def _end_sessions(self, name: str) -> None:
        """Ends every session a test left on the database (a killed child's, a leaked one)."""
        with self.admin.connect() as conn:
            if self.dialect == "postgresql":
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                return
            ids = conn.execute(
                sa.text("SELECT id FROM information_schema.processlist WHERE db = :name"),
                {"name": name},
            ).scalars()
            for session in ids:
                with contextlib.suppress(sa.exc.DBAPIError):  # it may have ended meanwhile
                    conn.exec_driver_sql(f"KILL {int(session)}")

    def _reset(self, name: str) -> bool:
        """Empties the database back to the template's rows; False if its schema changed."""
        engine = self._connect(name)
        try:
            with engine.connect() as conn:
                if self._describe(conn, name) != self.schema:
                    return False
                # DELETE, children first, and a counter reset only where a test moved it: a
                # TRUNCATE (PostgreSQL) or an ALTER of every table (MariaDB) cost 0.1-0.2 s
                # a test, for tables most tests leave empty.
                for table in reversed(schema.metadata.sorted_tables):
                    if table.name != "alembic_version":
                        conn.exec_driver_sql(f"DELETE FROM {table.name}")
                if self.dialect == "postgresql":
                    moved = conn.exec_driver_sql(
                        "SELECT sequencename FROM pg_sequences "
                        "WHERE schemaname = 'public' AND last_value IS NOT NULL"
                    ).scalars()
                    for sequence in moved.all():
                        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} RESTART")
                else:
                    moved = conn.execute(
                        sa.text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = :name AND auto_increment > 1"
                        ),
                        {"name": name},
                    ).scalars()
                    for table_name in moved.all():
                        conn.exec_driver_sql(f"ALTER TABLE {table_name} AUTO_INCREMENT = 1")
                for table, rows in self.rows.items():
                    conn.execute(schema.metadata.tables[table].insert(), rows)
            return True
        except sa.exc.DBAPIError:
            return False
        finally:
            engine.dispose()

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in [*self.free, self.template]:
                if name:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        self.admin.dispose()


class _Databases:
    """The worker's SQLite template and its database servers, made when first wanted."""

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self.sqlite_template = ""
        self.servers: dict[str, _Server] = {}

    def sqlite(self) -> str:
        if not self.sqlite_template:
            self.sqlite_template = str(self.folder / "template.db")
            _migrate(f"sqlite:///{self.sqlite_template}")
        return self.sqlite_template

    def server(self, dialect: str) -> _Server:
        if dialect not in self.servers:
            self.servers[dialect] = _Server(dialect)
        return self.servers[dialect]


@pytest.fixture(scope="session")
def _databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Databases]:
    databases = _Databases(tmp_path_factory.mktemp("templates"))
    yield databases
    for server in databases.servers.values():
        server.close()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any, _databases: _Databases) -> Iterator[str]:
    """The URL of a database of the test's own on each dialect, at head unless the test is
    marked ``empty_database``."""
    migrated = request.node.get_closest_marker("empty_database") is None
    if request.param == "sqlite":
        path = tmp_path / "catalog.db"
        if migrated:
            shutil.copyfile(_databases.sqlite(), path)
        yield f"sqlite:///{path}"
        return
    server = _databases.server(request.param)
    name = server.take(migrated)
    try:
        yield server.url_of(name)
    finally:
        server.give_back(name, migrated)


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


def _encodable(text: str) -> str:
    """``text`` with any lone surrogate written as ``\\udXXX``: UTF-8 can carry it then."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Reports a test's output even when it holds half a surrogate pair (property tests send
    them, and etl logs the models it skips): pytest-xdist sends reports to the controller as
    UTF-8 and otherwise crashes the worker, losing the test's result."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    report.sections = [(title, _encodable(text)) for title, text in report.sections]
    if report.longrepr is not None:
        text = str(report.longrepr)
        if _encodable(text) != text:  # only then: keep pytest's richer failure report
            report.longrepr = _encodable(text)


def table_rows(engine: sa.Engine, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as dicts, in primary-key order."""
    declared = schema.metadata.tables[table]
    with engine.connect() as conn:
        order = list(declared.primary_key.columns)
        return [dict(r._mapping) for r in conn.execute(sa.select(declared).order_by(*order))]
