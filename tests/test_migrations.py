"""The schema comes only from Alembic, and the revisions agree with the code's tables."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from etl import db, schema
from etl.schema import metadata
from tests.conftest import table_rows


def _differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_migrations_match_the_models(engine: sa.Engine) -> None:
    db.upgrade(engine)
    assert _differences(engine) == []


def test_upgrade_downgrade_upgrade(engine: sa.Engine) -> None:
    db.upgrade(engine)
    assert db.current(engine) == db.head_revision()
    db.downgrade(engine, "base")
    assert db.current(engine) is None
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert db.current(engine) == db.head_revision()
    assert {t.name for t in metadata.sorted_tables} <= set(sa.inspect(engine).get_table_names())


def test_the_fast_schema_check_knows_the_newest_revision() -> None:
    assert db.head_revision() == db.SCHEMA_HEAD


def _json_checks(engine: sa.Engine) -> int:
    """How many columns of models carry MariaDB's JSON_VALID check (0 elsewhere)."""
    if engine.dialect.name != "mysql":
        return 0
    with engine.connect() as conn:
        create = conn.execute(sa.text("SHOW CREATE TABLE models")).one()[1]
    return str(create).lower().count("json_valid")


def test_a_revision_0005_database_upgrades_keeping_its_rows_and_then_stores_deep_json(
    run_etl: Any, db_url: str, api: Any, engine: sa.Engine
) -> None:
    sync = ["--database-url", db_url, "sync", "--api-url", api.url]
    assert run_etl(*sync).exit_code == 0
    assert _json_checks(engine) == 0
    # Revision 0005 with a run in it, as existing databases are (MariaDB: JSON columns again).
    assert run_etl("--database-url", db_url, "db", "downgrade", "0005").exit_code == 0
    assert _json_checks(engine) == (2 if engine.dialect.name == "mysql" else 0)
    before = {name: table_rows(engine, name) for name in metadata.tables}
    assert run_etl(*sync).exit_code == 6  # a database in use behind head: upgrade first

    result = run_etl("--database-url", db_url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.stdout == "database at 0006\n"
    assert {name: table_rows(engine, name) for name in metadata.tables} == before
    assert _differences(engine) == []
    assert _json_checks(engine) == 0

    deep: Any = 1
    for _ in range(97):
        deep = [deep]
    api.models = [{**api.models[0], "benchmark_score": {"deep": deep}}, *api.models[1:]]
    assert run_etl(*sync).exit_code == 0
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(schema.models.c.benchmark_score).where(
                schema.models.c.uuid == api.models[0]["uuid"]
            )
        ).scalar_one()
    assert stored == {"deep": deep}
