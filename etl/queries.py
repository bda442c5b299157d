"""The read side: runs, status, a model's history, changes and the catalog as of a time.

Functions take an engine (:func:`run_changes` a connection, to read inside the run's own
transaction) and return plain dicts; they never write.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import schema
from etl.errors import ConfigError

RUN_COLUMNS = (
    "id", "observed_at", "mode", "status", "complete", "duration_s", "models_seen", "inserted",
    "updated", "unchanged", "removed", "restored", "warnings", "source", "started_at",
    "finished_at", "error",
)  # fmt: skip
"""What ``etl runs`` shows of a run: when it observed the catalog first, then how it went."""


def recent_runs(engine: Engine, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` runs, newest first, each with its ``duration_s``."""
    runs = schema.sync_runs
    query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [_with_duration(row) for row in _dicts(conn.execute(query))]


def last_run(engine: Engine, status: str | None = None) -> dict[str, Any] | None:
    """The newest run, or the newest with ``status``."""
    runs = schema.sync_runs
    query = sa.select(runs).order_by(runs.c.id.desc()).limit(1)
    if status is not None:
        query = query.where(runs.c.status == status)
    return _first_run(engine, query)


def last_healthy_sync(engine: Engine) -> dict[str, Any] | None:
    """The sync that last proved the catalog current: succeeded, complete and unfiltered, the
    latest to finish. Backfills (old snapshots), filtered and partial listings never count."""
    runs = schema.sync_runs
    query = (
        sa.select(runs)
        .where(
            runs.c.status == "succeeded",
            runs.c.mode == "sync",
            runs.c.complete.is_(True),
            runs.c.finished_at.is_not(None),
        )
        .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
    )
    with engine.connect() as conn:
        # Filters are JSON, stored as SQL NULL or JSON null depending on the dialect: judged
        # here, on the few newest rows (filtered syncs are rare).
        for row in conn.execution_options(yield_per=20).execute(query):
            if not row.filters:
                return _with_duration(dict(row._mapping))
    return None


def _first_run(engine: Engine, query: sa.Select[Any]) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _with_duration(dict(row._mapping)) if row else None


def _with_duration(run: dict[str, Any]) -> dict[str, Any]:
    started, finished = run["started_at"], run["finished_at"]
    run["duration_s"] = round((finished - started).total_seconds(), 3) if finished else None
    return run


def resolve_model(engine: Engine, model: str) -> str:
    """Finds a model's uuid from its uuid or its id.

    Raises:
        ConfigError: No model has that uuid or id, or several share the id.
    """
    models = schema.models
    with engine.connect() as conn:
        if conn.execute(sa.select(models.c.uuid).where(models.c.uuid == model)).first():
            return model
        uuids = list(conn.execute(sa.select(models.c.uuid).where(models.c.id == model)).scalars())
    if not uuids:
        raise ConfigError(f"no model has uuid or id {model!r}")
    if len(uuids) > 1:
        raise ConfigError(f"several models have id {model!r}; name one by uuid: {', '.join(uuids)}")
    return str(uuids[0])


def model_history(engine: Engine, model: str) -> list[dict[str, Any]]:
    """Every stored content of a model, oldest first, with the change that opened it."""
    uuid = resolve_model(engine, model)
    history, changes = schema.model_history, schema.model_changes
    query = (
        sa.select(
            history.c.valid_from,
            history.c.valid_to,
            history.c.opened_by_run,
            history.c.closed_by_run,
            history.c.id,
            history.c.name,
            history.c.lifecycle_status,
            history.c.version_major,
            history.c.version_minor,
            history.c.version_patch,
            history.c.content_hash,
            changes.c.kind,
            changes.c.changes,
        )
        .select_from(
            history.outerjoin(
                changes,
                sa.and_(
                    changes.c.model_uuid == history.c.model_uuid,
                    changes.c.run_id == history.c.opened_by_run,
                    changes.c.kind != "removed",
                ),
            )
        )
        .where(history.c.model_uuid == uuid)
        .order_by(history.c.valid_from, history.c.history_id)
    )
    with engine.connect() as conn:
        rows = _dicts(conn.execute(query))
    for row in rows:
        row["uuid"] = uuid
        row["version"] = _version(row)
        row["changed_fields"] = sorted(row["changes"] or {})
        row["fields"] = ",".join(row["changed_fields"])
    return rows


def list_changes(
    engine: Engine,
    since: datetime | None = None,
    until: datetime | None = None,
    kinds: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Change events in time order, optionally within ``[since, until)`` and of some kinds."""
    changes = schema.model_changes
    query = _changes_query()
    if since is not None:
        query = query.where(changes.c.observed_at >= since)
    if until is not None:
        query = query.where(changes.c.observed_at < until)
    if kinds:
        query = query.where(changes.c.kind.in_(kinds))
    with engine.connect() as conn:
        rows = _dicts(conn.execute(query))
    for row in rows:
        row["fields"] = ",".join(sorted(row["changes"] or {}))
    return rows


def run_changes(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """One run's change events, in the order the run wrote them (what its alerts report)."""
    return _dicts(conn.execute(_changes_query().where(schema.model_changes.c.run_id == run_id)))


def _changes_query() -> sa.Select[Any]:
    """Change events with their model's id and name, oldest first."""
    changes, models = schema.model_changes, schema.models
    return (
        sa.select(
            changes.c.observed_at,
            changes.c.run_id,
            changes.c.kind,
            changes.c.model_uuid,
            models.c.id.label("model_id"),
            models.c.name.label("model_name"),
            changes.c.changes,
        )
        .select_from(changes.join(models, models.c.uuid == changes.c.model_uuid))
        .order_by(changes.c.observed_at, changes.c.change_id)
    )


def models_as_of(engine: Engine, when: datetime) -> list[dict[str, Any]]:
    """The catalog as it was at ``when``: one row per model present then.

    The rows holding ``when`` are the open rows started by then, and for each ``span_class`` c
    the closed rows of that class started after ``when`` - 2**c (a row of class c is at most
    2**c seconds long): one short range of an as-of index each, read from the index alone. So
    the query reads about as many index entries as the answer has rows, however long the
    history (see ``schema.model_history``). The lower bounds leave a second to spare, so that
    no rounding of a length to its class can hide a row.
    """
    params: dict[str, Any] = {"t": when}
    for c in _SPAN_CLASSES:
        try:
            params[f"after{c}"] = when - timedelta(seconds=2**c + 1)
        except OverflowError:  # before year 1: no row starts that early
            params[f"after{c}"] = datetime.min.replace(tzinfo=UTC)
    with engine.connect() as conn:
        # An untyped statement: valid_from is converted below, not by SQLAlchemy's typed
        # result processing, which cost a third of the whole query on SQLite.
        rows = _dicts(conn.execute(_as_of_statement(), params))
    for row in rows:
        row["valid_from"] = schema.utc_datetime(row["valid_from"])
        row["version"] = _version(row)
    return rows


_AS_OF_COLUMNS = (
    "model_uuid AS uuid, id, name, provider, lifecycle_status, version_major, version_minor, "
    "version_patch, agreement_uuid, valid_from"
)


_SPAN_CLASSES = range(schema.MAX_SPAN_CLASS + 1)


@functools.cache
def _as_of_statement() -> Any:
    """The as-of query, built once: the open rows, then one range per span class."""
    parts = [
        f"SELECT {_AS_OF_COLUMNS} FROM model_history WHERE valid_to IS NULL AND valid_from <= :t"
    ]
    parts += [
        f"SELECT {_AS_OF_COLUMNS} FROM model_history WHERE span_class = {c} "
        f"AND valid_from > :after{c} AND valid_from <= :t AND valid_to > :t"
        for c in _SPAN_CLASSES
    ]
    sql = " UNION ALL ".join(parts) + " ORDER BY id, uuid"
    return sa.text(sql).bindparams(
        sa.bindparam("t", type_=schema.UTCDateTime),
        *(sa.bindparam(f"after{c}", type_=schema.UTCDateTime) for c in _SPAN_CLASSES),
    )


def _dicts(result: sa.CursorResult[Any]) -> list[dict[str, Any]]:
    """Each row as a dict: zipping with the keys once costs a third of ``dict(row._mapping)``.

    Rows are fetched a thousand at a time: psycopg fetching them one by one cost more than the
    as-of query's SQL.
    """
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for part in result.partitions(1000) for row in part]


def _version(row: dict[str, Any]) -> str:
    return f"{row['version_major']}.{row['version_minor']}.{row['version_patch']}"
