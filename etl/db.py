"""Connecting to the catalog database and keeping its schema at the migrations' head."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from etl.config import DEFAULT_DATABASE_URL
from etl.errors import ConfigError, DatabaseError

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


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable database URL>"


def create_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout."""
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
    return engine


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
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


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
    """Migrates the database up to ``revision``."""
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrates the database down to ``revision``."""
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


SCHEMA_HEAD = "0007"
"""The newest revision in migrations/versions (a test keeps the two equal). Checking a database
against it needs no Alembic import, which would add a quarter second to every run."""


def _stored_revision(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def check_schema(engine: Engine) -> bool:
    """Checks the schema is at head without changing anything.

    Returns:
        True when the database is at head, False when it is empty (never migrated).

    Raises:
        DatabaseError: The database is behind (or ahead of) the code, holds foreign tables, or
            is unreachable.
    """
    with engine.connect() as connection:
        if _stored_revision(connection) == SCHEMA_HEAD:
            return True
        current = current_revision(connection)
        tables = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
        empty = current is None and not tables
    head = head_revision()
    if current == head:
        return True
    if empty:
        return False
    if current is None:
        raise DatabaseError(
            f"{mask_url(engine.url)} holds tables but no etl schema version; "
            "point --database-url at an empty or etl database"
        )
    from alembic.script import ScriptDirectory

    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise DatabaseError(
            f"the database schema is at revision {current}, newer than this etl knows "
            f"(head {head}); upgrade etl"
        )
    raise DatabaseError(
        f"the database schema is at revision {current}, this etl needs {head}; "
        "run `etl db upgrade` first"
    )


def ensure_schema(engine: Engine) -> None:
    """Makes sure the schema is at head: migrates an empty database, refuses an old one.

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
    engine = create_engine(url)
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
