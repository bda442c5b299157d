"""A run's lifecycle around the database, with real processes and signals (issue 12, cases 5,
12 and 13): stopped migrations resume, a lost run lock never commits, a signal after the
commit never changes the recorded status, and migrations take the run lock."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from etl import db, schema
from etl.errors import DatabaseError
from etl.lock import ADVISORY_KEY, run_lock
from tests.catalog import make_catalog
from tests.conftest import TOKEN
from tests.fakeapi import FakeApi, RecordedRequest
from tests.test_processes import (
    HOLD,
    catalog_snapshot,
    child_env,
    error_line,
    etl_process,
    runs,
    sync_args,
    wait_for,
    wait_until_lock_is_free,
)

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
EXIT_CODES = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}
REVISION_0001_TABLES = {
    "agreements", "sync_runs", "models", "model_capabilities", "model_endpoint_capabilities",
    "model_endpoints", "model_modalities", "model_pricing", "model_reasoning_efforts",
    "model_settings", "model_versions",
}  # fmt: skip


@pytest.fixture
def server() -> Iterator[FakeApi]:
    """The fake API with 30 models: three pages at ``--per-page 10``."""
    with FakeApi(models=make_catalog(30), token=TOKEN) as api:
        yield api


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def assert_schema_complete(engine: sa.Engine) -> None:
    assert db.current(engine) == db.SCHEMA_HEAD
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert list(compare_metadata(context, schema.metadata)) == []
    views = set(sa.inspect(engine).get_view_names())
    assert {"current_models", "catalog_changes", "catalog_size_by_day"} <= views


# -- case 12: a stopped migration resumes ------------------------------------------------------

PAUSES = {
    # In revision 0001: nothing is stamped yet; MariaDB keeps the tables made so far.
    "in-0001": "create_table:models",
    # In revision 0002: 0001 is committed and stamped; 0002 is half done on MariaDB.
    "in-0002": "create_table:model_history",
}


@pytest.mark.empty_database
@pytest.mark.parametrize(
    ("command", "pause"),
    # Each command at one of the two points (both commands run the same migration code): a
    # first sync stopped before anything is stamped, `etl db upgrade` stopped in a later one.
    [("sync", "in-0001"), ("db-upgrade", "in-0002")],
)
@pytest.mark.parametrize("signame", list(SIGNALS))
def test_a_migration_stopped_by_a_signal_is_completed_by_the_next_run(
    db_url: str, server: FakeApi, engine: sa.Engine, tmp_path: Path, command: str, pause: str,
    signame: str,
) -> None:  # fmt: skip
    signum = SIGNALS[signame]
    args = (
        sync_args(db_url, server)
        if command == "sync"
        else ["--database-url", db_url, "db", "upgrade"]
    )
    env = child_env(ETL_TEST_MIGRATION_PAUSE=PAUSES[pause])
    with etl_process(tmp_path, *args, env=env) as child:
        wait_for("the migration paused", lambda: "etl-test: paused" in child.stderr, child)
        child.signal(signum)
        assert child.wait() == EXIT_CODES[signum], child.stderr
    assert "Traceback" not in child.stderr
    assert server.requests == []

    # Empty, or at a revision it completed; SQLite and PostgreSQL roll the stopped one back.
    revision = db.current(engine)
    if engine.dialect.name in ("sqlite", "postgresql"):
        if pause == "in-0001":
            assert (revision, tables(engine)) == (None, set())
        else:
            assert (revision, tables(engine)) == ("0001", REVISION_0001_TABLES)
    else:
        assert revision == (None if pause == "in-0001" else "0001")
        assert tables(engine) >= {"agreements", "sync_runs"}  # what MariaDB committed
    wait_until_lock_is_free(engine)

    # The next run completes it: `etl sync` on its own, or `etl db upgrade` then `etl sync`.
    if command == "db-upgrade":
        with etl_process(tmp_path, *args, env=child_env()) as upgrade:
            assert upgrade.wait() == 0, upgrade.stderr
        assert upgrade.stdout == f"database at {db.SCHEMA_HEAD}\n"
        assert_schema_complete(engine)
    with etl_process(tmp_path, *sync_args(db_url, server), "--json", env=child_env()) as sync:
        assert sync.wait() == 0, sync.stderr
    assert json.loads(sync.stdout)["inserted"] == 30
    assert_schema_complete(engine)
    assert [run["status"] for run in runs(engine)] == ["succeeded"]


@pytest.mark.empty_database
@pytest.mark.parametrize("signame", list(SIGNALS))
def test_a_migration_blocked_in_the_database_stops_cleanly_and_resumes(
    db_url: str, engine: sa.Engine, tmp_path: Path, signame: str
) -> None:
    """No test hook: PostgreSQL makes a CREATE TABLE wait for another transaction's uncommitted
    table of the same name, so the migration blocks inside revision 0002, in the driver."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a table name can be held by an open transaction on PostgreSQL only")
    signum = SIGNALS[signame]
    args = ["--database-url", db_url, "db", "upgrade"]
    blocker = engine.connect()
    try:
        blocker.execute(sa.text("CREATE TABLE model_history (held integer)"))  # not committed
        with etl_process(tmp_path, *args, env=child_env()) as child:

            def waiting() -> bool:
                with engine.connect() as conn:
                    return bool(
                        conn.execute(
                            sa.text(
                                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = "
                                "'Lock' AND datname = current_database() AND query LIKE "
                                "'%CREATE TABLE model_history%'"
                            )
                        ).scalar()
                    )

            wait_for("the migration blocked", waiting, child)
            child.signal(signum)
            assert child.wait() == EXIT_CODES[signum], child.stderr
        assert "Traceback" not in child.stderr
    finally:
        blocker.rollback()
        blocker.close()
    assert (db.current(engine), tables(engine)) == ("0001", REVISION_0001_TABLES)
    with etl_process(tmp_path, *args, env=child_env()) as upgrade:
        assert upgrade.wait() == 0, upgrade.stderr
    assert_schema_complete(engine)


def test_a_database_of_etl_tables_without_a_version_is_completed_by_a_sync(
    db_url: str, server: FakeApi, engine: sa.Engine, run_etl: Any
) -> None:
    # What a MariaDB migration stopped before its first stamp leaves: every table, no version.
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    result = run_etl(*sync_args(db_url, server))
    assert result.exit_code == 0, result.output
    assert_schema_complete(engine)


@pytest.mark.empty_database
def test_foreign_tables_without_a_version_are_refused_by_sync_and_upgrade(
    db_url: str, server: FakeApi, engine: sa.Engine, run_etl: Any
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("CREATE TABLE agreements (id INTEGER PRIMARY KEY)"))
    message = (
        f"etl: error: {db.mask_url(db_url)} holds tables but no etl schema version; "
        "point --database-url at an empty or etl database"
    )
    for args in (sync_args(db_url, server), ["--database-url", db_url, "db", "upgrade"]):
        result = run_etl(*args)
        assert result.exit_code == 6, result.output
        assert result.stderr.splitlines()[-1] == message
    assert tables(engine) == {"invoices", "agreements"}
    assert server.requests == []


@pytest.mark.empty_database
def test_a_table_of_ours_by_name_but_not_by_columns_stops_the_migration(
    db_url: str, engine: sa.Engine, run_etl: Any
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE agreements (id INTEGER PRIMARY KEY)"))
    result = run_etl("--database-url", db_url, "db", "upgrade")
    assert result.exit_code == 6, result.output
    assert "table agreements exists without column(s)" in result.stderr


# -- `etl db upgrade` and `downgrade` take the run lock ----------------------------------------


@pytest.mark.empty_database
def test_db_upgrade_and_downgrade_exit_7_while_a_run_holds_the_lock(
    db_url: str, engine: sa.Engine, run_etl: Any
) -> None:
    assert run_etl("--database-url", db_url, "db", "upgrade", "0004").exit_code == 0
    with run_lock(engine):
        for args in (["upgrade"], ["downgrade", "base"]):
            result = run_etl("--database-url", db_url, "db", *args)
            assert result.exit_code == 7, result.output
            assert result.stderr == (
                "etl: error: another etl process holds the database's run lock; "
                "this run did nothing\n"
            )
    assert db.current(engine) == "0004"
    assert run_etl("--database-url", db_url, "db", "upgrade").exit_code == 0


# -- case 13: a run that lost its lock never commits -------------------------------------------


@pytest.fixture
def server_db_url(db_url: str) -> str:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite's run lock is a file lock: it cannot be lost while the process lives")
    return db_url


def lock_session(engine: sa.Engine) -> int | None:
    """The id of the database session holding the run lock, or None."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return conn.execute(
                sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid::bigint = :high AND objid::bigint = :low "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                ),
                {"high": ADVISORY_KEY >> 32, "low": ADVISORY_KEY & 0xFFFFFFFF},
            ).scalar()
        name = f"etl_sync:{engine.url.database}"
        return conn.execute(sa.text("SELECT IS_USED_LOCK(:name)"), {"name": name}).scalar()


def kill_session(engine: sa.Engine, session: int) -> None:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": session})
        else:
            conn.exec_driver_sql(f"KILL {int(session)}")


def test_a_run_whose_lock_session_is_killed_exits_6_and_writes_nothing(
    run_etl: Any, server_db_url: str, server: FakeApi, engine: sa.Engine, tmp_path: Path
) -> None:
    db_url = server_db_url
    release = threading.Event()
    held: list[RecordedRequest] = []

    def hold_first_page_2(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        if request.page == 2 and not held:
            held.append(request)
            release.wait(HOLD)
        return body

    server.transform = hold_first_page_2
    try:
        with etl_process(tmp_path, *sync_args(db_url, server)) as first:
            # Page 1 is written in the first run's open transaction; page 2 is held.
            wait_for("the first run's page 2 held", lambda: bool(held), first)
            session = lock_session(engine)
            assert session is not None
            kill_session(engine, session)
            wait_until_lock_is_free(engine)

            second = run_etl(*sync_args(db_url, server), "--json")
            assert second.exit_code == 0, second.output
            after_second = catalog_snapshot(engine)

            release.set()
            assert first.wait() == 6, first.stderr
    finally:
        release.set()
        server.transform = None
    line = error_line(first)
    assert line.startswith(
        "etl: error: the run lost the database's run lock (its database session ended: "
    ), line
    assert line.endswith("; nothing was committed"), line
    assert catalog_snapshot(engine) == after_second
    first_run, second_run = runs(engine)
    assert first_run["status"] == "failed" and "lost the database's run lock" in first_run["error"]
    assert second_run["status"] == "succeeded" and second_run["inserted"] == 30


def test_a_transaction_commits_only_while_the_lock_is_held(
    server_db_url: str, engine: sa.Engine
) -> None:
    db.upgrade(engine)
    runs_table = schema.sync_runs
    row = {
        "started_at": sa.func.now(), "observed_at": sa.func.now(), "status": "running",
        "mode": "sync", "complete": False, "requests": 0, "retries": 0, "pages": 0,
        "models_seen": 0, "inserted": 0, "updated": 0, "unchanged": 0, "removed": 0,
        "restored": 0, "warnings": 0,
    }  # fmt: skip
    with run_lock(engine) as lock:
        with lock.transaction() as conn:
            conn.execute(runs_table.insert().values(row))
        lock.check()
        assert lock.connection is not None
        # The session lives but no longer holds the lock (here: it gave it back itself).
        if engine.dialect.name == "postgresql":
            unlock = "SELECT pg_advisory_unlock_all()"
        else:
            unlock = "SELECT RELEASE_ALL_LOCKS()"
        lock.connection.exec_driver_sql(unlock)
        lock.connection.commit()
        with pytest.raises(DatabaseError) as lost:
            lock.check()
        assert str(lost.value) == (
            "the run lost the database's run lock (its database session no longer holds it); "
            "nothing was committed"
        )
        with (
            pytest.raises(DatabaseError, match="lost the database's run lock"),
            lock.transaction() as conn,
        ):
            conn.execute(runs_table.insert().values(row))
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs_table)).scalar() == 1


# -- case 5: a signal after the commit changes nothing -----------------------------------------


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_right_after_the_commit_leaves_the_run_succeeded_and_exits_0(
    db_url: str, server: FakeApi, engine: sa.Engine, tmp_path: Path, signame: str
) -> None:
    env = child_env(ETL_TEST_PAUSE="after-commit")
    with etl_process(tmp_path, *sync_args(db_url, server), "--json", env=env) as child:
        wait_for("the run paused after its commit", lambda: "paused at" in child.stderr, child)
        child.signal(SIGNALS[signame])
        assert child.wait() == 0, child.stderr
    assert f"{signame} received after the run's changes were committed" in child.stderr
    assert json.loads(child.stdout)["status"] == "succeeded"
    (run,) = runs(engine)
    assert (run["status"], run["error"], run["inserted"]) == ("succeeded", None, 30)
