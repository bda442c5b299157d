"""One run at a time per database: the lock a sync or backfill holds while it writes.

PostgreSQL gets a session advisory lock, MariaDB/MySQL a named ``GET_LOCK``, SQLite an
exclusive ``flock`` on ``<database file>.lock``. Each lives as long as the connection or file
handle that took it, so a killed process releases it with its sockets and files: a lock is
never left behind.

A server-side lock can also be lost while its process lives: the session killed
(``pg_terminate_backend``, MariaDB ``KILL``) or timed out (``idle_session_timeout``). So a run
writes on the very connection that holds the lock (:meth:`RunLock.transaction`), and proves it
still holds it just before each commit: a run that lost its lock rolls back and fails (exit 6)
instead of committing next to another writer.
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

_HELD_BY_ME = {
    # A bigint advisory key shows in pg_locks as classid (high 32 bits), objid (low 32 bits)
    # and objsubid 1.
    "postgresql": sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
        "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
        "AND classid::bigint = :high AND objid::bigint = :low "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    ).bindparams(high=ADVISORY_KEY >> 32, low=ADVISORY_KEY & 0xFFFFFFFF),
    "mysql": sa.text("SELECT COALESCE(IS_USED_LOCK(:name) = CONNECTION_ID(), 0)"),
}
LOST = "the run lost the database's run lock ({why}); nothing was committed"


class RunLock:
    """The run lock, held: where a run writes, and the proof it still holds the lock.

    On PostgreSQL and MariaDB/MySQL :attr:`connection` is the session holding the lock, and
    every write goes through it; on SQLite (a file lock, which cannot be lost while the process
    lives) it is None and each transaction gets a connection of its own from the engine.
    """

    def __init__(self, engine: Engine, connection: Connection | None) -> None:
        self.engine = engine
        self.connection = connection

    def check(self) -> None:
        """Proves the lock is still ours.

        Raises:
            DatabaseError: The lock's session ended or no longer holds it (exit 6).
        """
        conn = self.connection
        if conn is None:
            return
        if conn.invalidated or conn.closed:
            raise DatabaseError(LOST.format(why="its database session ended"))
        query = _HELD_BY_ME["postgresql" if conn.dialect.name == "postgresql" else "mysql"]
        if conn.dialect.name != "postgresql":
            query = query.bindparams(name=_lock_name(conn))
        outside = not conn.in_transaction()
        try:
            held = conn.execute(query).scalar()
            if outside:  # leave no transaction begun behind
                conn.rollback()
        except sa.exc.DBAPIError as exc:
            raise _lost(exc) from exc
        if not held:
            raise DatabaseError(LOST.format(why="its database session no longer holds it"))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on the lock's connection (SQLite: a new one), committed only while the
        lock is provably held.

        Yields:
            The connection, inside its transaction.

        Raises:
            DatabaseError: The lock was lost before the commit (or the session holding it
                ended mid-transaction): everything was rolled back (exit 6).
        """
        if self.connection is None:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        conn = self.connection
        try:
            with conn.begin():
                yield conn
                self.check()
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or conn.invalidated:
                raise _lost(exc) from exc
            raise


def _lost(exc: sa.exc.DBAPIError) -> DatabaseError:
    from etl.db import first_line

    return DatabaseError(LOST.format(why=f"its database session ended: {first_line(exc)}"))


@contextmanager
def run_lock(engine: Engine) -> Iterator[RunLock]:
    """Holds the database's run lock, or fails at once.

    Yields:
        The held lock: write through :meth:`RunLock.transaction`.

    Raises:
        LockHeldError: Another process holds it (exit 7); the message names its run.
    """
    dialect = engine.dialect.name
    if dialect == "sqlite":
        with _file_lock(engine) as taken:
            if not taken:
                raise LockHeldError(_held_message(engine))
            yield RunLock(engine, None)
        return
    with engine.connect() as conn:
        if not _take(conn, dialect):
            raise LockHeldError(_held_message(engine))
        try:
            yield RunLock(engine, conn)
        finally:
            _release(conn, dialect)


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
    """Gives the lock back; a session that already ended has nothing left to release."""
    if conn.invalidated:
        return
    if dialect == "postgresql":
        query = sa.text("SELECT pg_advisory_unlock(:key)").bindparams(key=ADVISORY_KEY)
    else:
        query = sa.text("SELECT RELEASE_LOCK(:name)").bindparams(name=_lock_name(conn))
    with contextlib.suppress(sa.exc.DBAPIError):
        if conn.in_transaction():
            conn.rollback()
        conn.execute(query)
        conn.commit()


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
