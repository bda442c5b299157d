"""One run at a time per database: the lock a sync or backfill holds while it writes.

PostgreSQL gets a session advisory lock, MariaDB/MySQL a named ``GET_LOCK``, SQLite an
exclusive ``flock`` on ``<database file>.lock``. Each lives as long as the connection or file
handle that took it, so a killed process releases it with its sockets and files: a lock is
never left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import files, schema
from etl.errors import DatabaseError, LockHeldError

ADVISORY_KEY = 0x65746C5F73796E63
"""``etl_sync`` as a number: PostgreSQL's advisory lock key (scoped to the database)."""


@contextmanager
def run_lock(engine: Engine) -> Iterator[None]:
    """Holds the database's run lock, or fails at once.

    Raises:
        LockHeldError: Another process holds it (exit 7); the message names its run.
    """
    dialect = engine.dialect.name
    if dialect == "sqlite":
        with _file_lock(engine) as taken:
            if not taken:
                raise LockHeldError(_held_message(engine))
            yield
        return
    with engine.connect() as conn:
        if not _take(conn, dialect):
            raise LockHeldError(_held_message(engine))
        try:
            yield
        finally:
            _release(conn, dialect)
            conn.commit()


def _lock_name(conn: Connection) -> str:
    return f"etl_sync:{conn.engine.url.database}"[:64]


def _take(conn: Connection, dialect: str) -> bool:
    if dialect == "postgresql":
        query = sa.text("SELECT pg_try_advisory_lock(:key)").bindparams(key=ADVISORY_KEY)
    else:
        query = sa.text("SELECT GET_LOCK(:name, 0)").bindparams(name=_lock_name(conn))
    taken = conn.execute(query).scalar()
    conn.commit()
    return bool(taken)


def _release(conn: Connection, dialect: str) -> None:
    if dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)").bindparams(key=ADVISORY_KEY))
    else:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:name)").bindparams(name=_lock_name(conn)))


@contextmanager
def _file_lock(engine: Engine) -> Iterator[bool]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield True
        return
    path = f"{database}.lock"
    try:
        fd = files.open_lock(path)  # never through a symlink, never truncated on open
    except OSError as exc:  # a missing or read-only folder, a planted symlink or FIFO
        raise DatabaseError(f"cannot open {path} for the run lock: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        # The pid only helps a person looking; unbuffered, so a full disk cannot fail the close.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield True
    finally:
        os.close(fd)


def _held_message(engine: Engine) -> str:
    runs = schema.sync_runs
    holder = None
    try:
        with engine.connect() as conn:
            holder = conn.execute(
                sa.select(runs.c.id, runs.c.mode, runs.c.started_at)
                .where(runs.c.status == "running")
                .order_by(runs.c.id.desc())
                .limit(1)
            ).first()
    except sa.exc.SQLAlchemyError:
        pass
    who = (
        f"run {holder.id} ({holder.mode}, started {holder.started_at:%Y-%m-%dT%H:%M:%SZ})"
        if holder
        else "another etl process"
    )
    return f"{who} holds the database's run lock; this run did nothing"


def mark_abandoned(conn: Connection) -> int:
    """Marks runs still ``running`` as ``abandoned``: with the lock in hand, none is alive."""
    runs = schema.sync_runs
    result = conn.execute(
        sa.update(runs)
        .where(runs.c.status == "running")
        .values(status="abandoned", error="the process ended without recording an outcome")
    )
    return int(result.rowcount or 0)
