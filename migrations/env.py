"""Alembic environment: migrates the database etl is pointed at, with etl's own MetaData.

`etl db ...` hands over an open connection (``config.attributes["connection"]``); a plain
`alembic` command reads ETL_DATABASE_URL.
"""

from __future__ import annotations

import logging.config

from alembic import context

from etl import db
from etl.schema import metadata

config = context.config
if config.config_file_name and not config.attributes.get("connection"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        # Each revision commits with its stamp, so a migration stopped halfway leaves the
        # database at the last revision it completed (MariaDB commits every DDL statement on
        # its own; migrations/resumable.py lets the revision it was in run again).
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = db.create_engine(db.database_url_from_env())
    with engine.connect() as connection:
        run_migrations(connection)
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("etl migrations run online only: set ETL_DATABASE_URL and run upgrade")
run_migrations_online()
