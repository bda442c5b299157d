"""Schema operations that skip what is already done, so an interrupted revision can run again.

MariaDB/MySQL commit each DDL statement on its own: a migration stopped halfway (SIGKILL,
SIGTERM, a lost connection) leaves part of a revision applied and the database stamped at the
revision before. Rerunning that revision with these wrappers completes it instead of failing on
"Table 'agreements' already exists". SQLite and PostgreSQL roll a stopped revision back whole;
the wrappers cost them a catalog lookup per operation.

A table that exists is taken as ours only if it has at least the columns the revision creates
it with; anything else is someone else's table, and the migration stops rather than adopt it.

``ETL_TEST_MIGRATION_PAUSE=<operation>:<name>`` (for example ``create_table:model_history``) is
for etl's tests only: after that operation the migration prints ``paused after ...`` on stderr
and sleeps, so a test can stop the process at a known point in the middle of a revision.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import sqlalchemy as sa
from alembic import op

from etl.errors import DatabaseError

PAUSE_VARIABLE = "ETL_TEST_MIGRATION_PAUSE"
PAUSE_SECONDS = 60.0


def _inspector() -> sa.Inspector:
    # A new inspector each time: an inspector caches what it has read.
    return sa.inspect(op.get_bind())


def _has_table(name: str) -> bool:
    return _inspector().has_table(name)


def _columns(table: str) -> set[str]:
    return {column["name"] for column in _inspector().get_columns(table)}


def _indexes(table: str) -> set[str]:
    return {index["name"] for index in _inspector().get_indexes(table) if index["name"]}


def _views() -> set[str]:
    return set(_inspector().get_view_names())


def _pause(operation: str, name: str) -> None:
    """The test-only pause point (see the module's docstring)."""
    if os.environ.get(PAUSE_VARIABLE) == f"{operation}:{name}":
        print(f"etl-test: paused after {operation}:{name}", file=sys.stderr, flush=True)
        time.sleep(PAUSE_SECONDS)


def create_table(name: str, *columns: Any, **kw: Any) -> None:
    """``op.create_table``, unless the table is already there with these columns."""
    if _has_table(name):
        wanted = {c.name for c in columns if isinstance(c, sa.Column)}
        missing = wanted - _columns(name)
        if missing:
            raise DatabaseError(
                f"table {name} exists without column(s) {', '.join(sorted(missing))}: it is "
                "not etl's; point the database URL at an empty or etl database"
            )
    else:
        op.create_table(name, *columns, **kw)
    _pause("create_table", name)


def drop_table(name: str) -> None:
    """``op.drop_table``, unless the table is already gone."""
    if _has_table(name):
        op.drop_table(name)
    _pause("drop_table", name)


def create_index(name: str, table: str, columns: list[str], **kw: Any) -> None:
    """``op.create_index``, unless the table already has an index of that name."""
    if name not in _indexes(table):
        op.create_index(name, table, columns, **kw)
    _pause("create_index", name)


def drop_index(name: str, table: str) -> None:
    """``op.drop_index``, unless the index is already gone."""
    if name in _indexes(table):
        op.drop_index(name, table_name=table)
    _pause("drop_index", name)


def add_column(table: str, column: sa.Column[Any]) -> None:
    """``op.add_column``, unless the table already has the column."""
    if column.name not in _columns(table):
        op.add_column(table, column)
    _pause("add_column", f"{table}.{column.name}")


def drop_column(table: str, name: str) -> None:
    """``op.drop_column``, unless the column is already gone."""
    if name in _columns(table):
        op.drop_column(table, name)
    _pause("drop_column", f"{table}.{name}")


def create_view(name: str, select: str) -> None:
    """``CREATE VIEW name AS select``, unless a view of that name exists.

    A revision that changes a view drops it first (:func:`drop_view`), so an existing view is
    the one this revision made before it was interrupted.
    """
    if name not in _views():
        op.execute(f"CREATE VIEW {name} AS {select}")
    _pause("create_view", name)


def drop_view(name: str) -> None:
    """``DROP VIEW IF EXISTS``: the same statement on every dialect."""
    op.execute(f"DROP VIEW IF EXISTS {name}")
    _pause("drop_view", name)
