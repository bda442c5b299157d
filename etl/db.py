"""Connecting to the catalog database and keeping its schema at the migrations' head."""

from __future__ import annotations

import importlib.util
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from etl.config import DEFAULT_DATABASE_URL
from etl.errors import ConfigError, DatabaseError, MissingDatabaseError

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}  # fmt: skip
SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds SQLite waits for a lock another connection holds (ETL_SQLITE_BUSY_TIMEOUT overrides)."""


def database_url_from_env() -> str:
    """ETL_DATABASE_URL, else the SQLite default in the working directory."""
    return os.environ.get("ETL_DATABASE_URL") or DEFAULT_DATABASE_URL


def parse_url(url: str) -> URL:
    """Parses a database URL, choosing psycopg 3 or PyMySQL when the URL names no driver."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"not a database URL: {mask_url(url)!r}") from None
    if parsed.drivername in _DRIVERS:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


_SECRET_QUERY = frozenset({"password", "passwd", "pwd", "sslpassword"})
"""Query parameters that carry a password (libpq's, PyMySQL's and ODBC's spellings)."""


def mask_url(url: str | URL) -> str:
    """The URL with every password replaced by ``***``, safe to print: the one in the user
    info and any query parameter named password, passwd, pwd or sslpassword (any case)."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return "<unparsable database URL>"
    secret = [key for key in parsed.query if key.lower() in _SECRET_QUERY]
    if secret:
        parsed = parsed.update_query_dict(dict.fromkeys(secret, "***"))
    # The URL renderer percent-encodes the mask; show it as the userinfo's is shown.
    return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")


def create_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL, a busy timeout and real
    transactions."""
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": sqlite_busy_timeout()}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        extra = "postgres" if parsed.get_backend_name() == "postgresql" else "mysql"
        raise DatabaseError(
            f"the database driver is not installed ({exc.name}); pip install 'etl[{extra}]'"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def create_read_only_engine(url: str) -> Engine:
    """An engine that never writes: SQLite opened ``mode=ro``, its journal mode left alone.

    A reader needs no write access to the file or its folder, and leaves no file behind. While
    a ``-wal`` file exists (a writer is at work, or died), the reader shares its WAL index like
    any connection. Without one, every write has been checkpointed into the main file, which is
    then the whole database: it is opened ``immutable``, so SQLite creates no ``-wal`` or
    ``-shm`` file (which, made by root, would lock the etl user out). The one risk, a sync
    checkpointing into the file during the read, can fail that read; running it again helps.
    Other dialects connect as usual (readers only run SELECTs).

    Raises:
        DatabaseError: A SQLite file that does not exist ("no such database"; it is never
            created), or no driver for the URL.
    """
    parsed = parse_url(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        return create_engine(url)
    try:
        is_file = Path(path).is_file()
    except OSError as exc:
        where = Path(path).absolute()
        raise DatabaseError(f"cannot open database {where}: {exc.strerror}") from None
    if not is_file:
        raise MissingDatabaseError(
            f"no such database: {Path(path).absolute()} ({mask_url(parsed)}); check "
            "--database-url / ETL_DATABASE_URL, or create it with `etl sync` or `etl demo`"
        )
    uri = "file:" + quote(str(Path(path).absolute()))
    timeout = sqlite_busy_timeout()

    def connect() -> sqlite3.Connection:
        mode = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
        connection = sqlite3.connect(
            f"{uri}?{mode}", uri=True, timeout=timeout, check_same_thread=False
        )
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    return sa.create_engine(parsed, creator=connect)


@contextmanager
def read_only(url: str) -> Iterator[Engine]:
    """:func:`errors` for a read-only engine (see :func:`create_read_only_engine`)."""
    with _database_errors(create_read_only_engine(url)) as engine:
        yield engine


def sqlite_busy_timeout() -> float:
    """How long SQLite waits for another connection's lock before failing with exit 6.

    ETL_SQLITE_BUSY_TIMEOUT (seconds) overrides the default of 30, e.g. for tests.

    Raises:
        ConfigError: The variable is not a non-negative number.
    """
    raw = os.environ.get("ETL_SQLITE_BUSY_TIMEOUT", "").strip()
    if not raw:
        return SQLITE_BUSY_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"ETL_SQLITE_BUSY_TIMEOUT={raw!r} is not a number of seconds")
    return seconds


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 begins a transaction only before INSERT/UPDATE/DELETE and runs DDL
    # outside any, so a killed migration could leave half a revision. Taking over (SQLAlchemy's
    # documented recipe: no implicit transactions, BEGIN on SQLAlchemy's begin) makes every
    # transaction real, DDL included.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def script_location() -> str:
    """Where the Alembic revisions live, installed or in a checkout."""
    spec = importlib.util.find_spec("etl.migrations")
    assert spec is not None and spec.origin is not None, "etl is installed without its migrations"
    return str(Path(spec.origin).parent)


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic ``Config`` for our revisions, bound to ``connection`` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrates the database up to ``revision``, one transaction per revision.

    A migration stopped halfway leaves the database at the last revision it completed (on
    MariaDB, with part of the next one applied); running this again completes it. A database
    holding only etl's tables but no schema version is such a first migration, stopped.

    Raises:
        DatabaseError: The database holds tables that are not etl's and no schema version.
    """
    from alembic import command

    with engine.connect() as connection:
        _refuse_foreign_tables(connection)
        connection.commit()
        command.upgrade(alembic_config(connection), revision)
        connection.commit()


def downgrade(engine: Engine, revision: str) -> None:
    """Migrates the database down to ``revision``, one transaction per revision (resumable as
    :func:`upgrade` is)."""
    from alembic import command

    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), revision)
        connection.commit()


def _refuse_foreign_tables(connection: Connection) -> None:
    if current_revision(connection) is not None:
        return
    tables = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
    if tables - _etl_tables():
        raise DatabaseError(
            f"{mask_url(connection.engine.url)} holds tables but no etl schema version; "
            "point --database-url at an empty or etl database"
        )


def _etl_tables() -> set[str]:
    from etl.schema import metadata

    return set(metadata.tables)


SCHEMA_HEAD = "0009"
"""The newest revision in migrations/versions (a test keeps the two equal). Checking a database
against it needs no Alembic import, which would add a quarter second to every run."""


def _stored_revision(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def check_schema(engine: Engine) -> bool:
    """Checks the schema is at head without changing anything.

    Returns:
        True when the database is at head, False when it has never been used: empty, or a
        first migration that was stopped (etl's tables only, no run recorded), which a sync
        completes.

    Raises:
        DatabaseError: The database is behind (or ahead of) the code, holds foreign tables, or
            is unreachable.
    """
    with engine.connect() as connection:
        if _stored_revision(connection) == SCHEMA_HEAD:
            return True
        current = current_revision(connection)
        tables = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
        unused = not tables or (tables <= _etl_tables() and not _has_runs(connection, tables))
    head = head_revision()
    if current == head:
        return True
    if current is None and not unused:
        raise DatabaseError(
            f"{mask_url(engine.url)} holds tables but no etl schema version; "
            "point --database-url at an empty or etl database"
        )
    from alembic.script import ScriptDirectory

    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise DatabaseError(
            f"the database is ahead of this etl: its schema is at revision {current}, newer "
            f"than this etl knows (head {head}); upgrade etl (pip install -U etl)"
        )
    if unused:
        return False
    raise DatabaseError(
        f"the database is behind this etl: its schema is at revision {current}, this etl "
        f"needs {head}; run `etl db upgrade` first"
    )


def _has_runs(connection: Connection, tables: set[str]) -> bool:
    if "sync_runs" not in tables:
        return False
    return connection.execute(sa.text("SELECT 1 FROM sync_runs LIMIT 1")).first() is not None


def ensure_schema(engine: Engine) -> None:
    """Makes sure the schema is at head: migrates a database never used (empty, or its first
    migration stopped halfway), refuses one in use at an older revision.

    Raises:
        DatabaseError: As :func:`check_schema`.
    """
    if not check_schema(engine):
        upgrade(engine)


def current(engine: Engine) -> str | None:
    """The revision the database at ``engine`` is at."""
    with engine.connect() as connection:
        return current_revision(connection)


@contextmanager
def errors(url: str) -> Iterator[Engine]:
    """An engine for ``url`` whose SQLAlchemy errors surface as one-line :class:`DatabaseError`."""
    with _database_errors(create_engine(url)) as engine:
        yield engine


@contextmanager
def _database_errors(engine: Engine) -> Iterator[Engine]:
    try:
        yield engine
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"database error on {mask_url(engine.url)}: {first_line(exc)}") from exc
    finally:
        engine.dispose()


def first_line(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's statement dump."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_RELATIVE = re.compile(r"^(?:[+-]\d+|.+[+-]\d+)$")
"""Alembic's relative revisions (``-1``, ``+2``, ``head-1``), resolved against the database."""


def check_revision_argument(revision: str) -> None:
    """Checks a revision a user typed names one this etl knows (relative ones pass through).

    Raises:
        ConfigError: An unknown revision (exit 2).
    """
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision in ("head", "heads", "base") or _RELATIVE.match(revision):
        return
    try:
        found = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise ConfigError(f"unknown revision {revision!r}; `etl db history` lists them")


def describe_revision(current: str | None) -> str:
    """How a database at ``current`` stands against the code: up to date, behind or ahead."""
    from alembic.script import ScriptDirectory

    head = head_revision()
    if current == head:
        return "up to date"
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        return f"ahead of this etl, whose head is {head}: upgrade etl"
    return f"behind head {head}: run `etl db upgrade`"


def revision_history() -> list[str]:
    """The revisions, newest first, one line each as ``alembic history`` prints them."""
    from alembic.script import ScriptDirectory

    lines = []
    for script in ScriptDirectory.from_config(alembic_config()).walk_revisions():
        head = " (head)" if script.is_head else ""
        lines.append(f"{script.down_revision or '<base>'} -> {script.revision}{head}, "
                     f"{script.doc}")  # fmt: skip
    return lines
