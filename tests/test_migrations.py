"""The schema comes only from Alembic, and the revisions agree with the code's tables."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from etl import db
from etl.schema import metadata


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
