"""The schema comes only from Alembic, and the revisions agree with the code's tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from etl import db, schema
from etl.schema import metadata
from tests.catalog import evolve


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


SURROGATE_KEYS = frozenset({"history_id", "change_id"})
"""Numbers a derivation may hand out again; rows are compared without them."""


def _rows_as_stored(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, read by plain SQL on the columns the database has now (not through
    the code's tables, which know columns later revisions add), without surrogate keys."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
            names = [c["name"] for c in inspector.get_columns(table)]
            columns = [n for n in names if n not in SURROGATE_KEYS]
            quote = engine.dialect.identifier_preparer.quote
            query = f"SELECT {', '.join(map(quote, columns))} FROM {quote(table)}"
            rows = [tuple(row) for row in conn.exec_driver_sql(query)]
            found[table] = sorted(rows, key=repr)
    return found


def _as_of_answers(run_etl: Any, db_url: str, engine: sa.Engine) -> dict[str, Any]:
    """``etl models --as-of T --json`` at every run's observation time (and a second later)."""
    answers = {}
    with engine.connect() as conn:
        times = conn.execute(sa.text("SELECT observed_at FROM sync_runs ORDER BY id")).scalars()
        instants = [t if isinstance(t, datetime) else datetime.fromisoformat(t) for t in times]
    for when in instants:
        for moment in (when, when + timedelta(seconds=1)):
            text = moment.replace(tzinfo=moment.tzinfo or UTC).isoformat()
            result = run_etl("--database-url", db_url, "models", "--as-of", text, "--json")
            assert result.exit_code == 0, result.output
            answers[text] = json.loads(result.stdout)
    return answers


def test_a_revision_0005_database_upgrades_keeping_its_rows_and_then_stores_deep_json(
    run_etl: Any, db_url: str, api: Any, engine: sa.Engine
) -> None:
    sync = ["--database-url", db_url, "sync", "--api-url", api.url]
    catalogs = evolve(40, 4, seed=5)
    for i, catalog in enumerate(catalogs):
        api.models = catalog
        extra = ["--public-only"] if i == 2 else []  # a filtered run: it removes nothing
        assert run_etl(*sync, *extra).exit_code == 0
    api.models = catalogs[-1]
    assert run_etl(*sync).exit_code == 0  # the same catalog again
    assert _json_checks(engine) == 0
    answers = _as_of_answers(run_etl, db_url, engine)
    assert len({json.dumps(a) for a in answers.values()}) > 2
    # Revision 0005 with runs in it, as existing databases are (MariaDB: JSON columns again).
    assert run_etl("--database-url", db_url, "db", "downgrade", "0005").exit_code == 0
    assert db.current(engine) == "0005"
    assert _json_checks(engine) == (2 if engine.dialect.name == "mysql" else 0)
    before = _rows_as_stored(engine)
    assert before["model_history"] and before["model_changes"] and before["agreement_history"]
    assert run_etl(*sync).exit_code == 6  # a database in use behind head: upgrade first

    result = run_etl("--database-url", db_url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"database at {db.head_revision()}\n"
    assert _differences(engine) == []
    assert _json_checks(engine) == 0
    verified = run_etl("--database-url", db_url, "verify")
    assert verified.exit_code == 0, verified.output
    assert _as_of_answers(run_etl, db_url, engine) == answers
    after = _rows_as_stored(engine)  # compared last: what users see is checked first

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
    assert run_etl("--database-url", db_url, "verify").exit_code == 0
    # The tables 0005 had keep their rows, on the columns 0005 had (the upgrade adds
    # sync_runs.snapshot_id), but for the numbers a derivation may hand out again.
    for name, rows in before.items():
        width = len(rows[0]) if rows else 0
        now = [row[:width] for row in after[name]]
        changed = [(a, b) for a, b in zip(rows, now, strict=False) if a != b]
        assert now == rows, (
            f"{name}: {len(changed)} rows differ, first (before, after): {changed[:1]}"
        )
