"""The read side: runs, status, a model's history, changes and the catalog as of a time.

Functions take an engine and return plain dicts; they never write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import schema
from etl.errors import ConfigError

RUN_COLUMNS = (
    "id", "status", "mode", "started_at", "finished_at", "complete", "pages", "models_seen",
    "inserted", "updated", "unchanged", "removed", "restored", "warnings", "error",
)  # fmt: skip


def recent_runs(engine: Engine, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` runs, newest first."""
    runs = schema.sync_runs
    query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return _dicts(conn.execute(query))


def last_run(engine: Engine, status: str | None = None) -> dict[str, Any] | None:
    """The newest run, or the newest with ``status``."""
    runs = schema.sync_runs
    query = sa.select(runs).order_by(runs.c.id.desc()).limit(1)
    if status is not None:
        query = query.where(runs.c.status == status)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return dict(row._mapping) if row else None


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
    return rows


def list_changes(
    engine: Engine,
    since: datetime | None = None,
    until: datetime | None = None,
    kinds: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Change events in time order, optionally within ``[since, until)`` and of some kinds."""
    changes, models = schema.model_changes, schema.models
    query = (
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


def models_as_of(engine: Engine, when: datetime) -> list[dict[str, Any]]:
    """The catalog as it was at ``when``: one row per model present then.

    Rather than scanning every interval that started before ``when``, it finds each model's
    newest row started by then, one probe of the ``ix_model_history_as_of`` index per model,
    and keeps it if it was still open then: the cost follows the number of models, whatever
    the length of history. Each dialect gets the form its planner runs that way (see
    :data:`_AS_OF_SQL`).
    """
    with engine.connect() as conn:
        sql = _AS_OF_SQL.get(conn.dialect.name)
        if sql is not None:
            statement: Any = (
                sa.text(sql)
                .bindparams(sa.bindparam("t", type_=schema.UTCDateTime))
                .columns(valid_from=schema.UTCDateTime)
            )
            result = conn.execute(statement, {"t": when})
        else:
            result = conn.execute(_as_of_query(when))
        rows = _dicts(result)
    for row in rows:
        row["version"] = _version(row)
    return rows


_AS_OF_COLUMNS = (
    "h.model_uuid AS uuid, h.id, h.name, h.provider, h.lifecycle_status, h.version_major, "
    "h.version_minor, h.version_patch, h.agreement_uuid, h.valid_from"
)
_AS_OF_SQL = {
    # CROSS JOIN makes SQLite loop over models and probe history, and both probes read only
    # the covering index; a plain JOIN lets it scan all of history instead.
    "sqlite": (
        f"SELECT {_AS_OF_COLUMNS} FROM models m CROSS JOIN model_history h "
        "WHERE h.model_uuid = m.uuid AND h.valid_from = ("
        "SELECT max(e.valid_from) FROM model_history e "
        "WHERE e.model_uuid = m.uuid AND e.valid_from <= :t) "
        "AND (h.valid_to IS NULL OR h.valid_to > :t) "
        "ORDER BY h.id, h.model_uuid"
    ),
    # A LATERAL subquery is PostgreSQL's probe per model: one index scan, LIMIT 1.
    "postgresql": (
        f"SELECT {_AS_OF_COLUMNS} FROM models m CROSS JOIN LATERAL ("
        "SELECT e.model_uuid, e.id, e.name, e.provider, e.lifecycle_status, e.version_major, "
        "e.version_minor, e.version_patch, e.agreement_uuid, e.valid_from, e.valid_to "
        "FROM model_history e WHERE e.model_uuid = m.uuid AND e.valid_from <= :t "
        "ORDER BY e.valid_from DESC LIMIT 1) h "
        "WHERE h.valid_to IS NULL OR h.valid_to > :t "
        "ORDER BY h.id, h.model_uuid"
    ),
}


def _as_of_query(when: datetime) -> sa.Select[Any]:
    """The as-of query for MariaDB/MySQL: a correlated probe per model."""
    history, models = schema.model_history, schema.models
    earlier = history.alias("earlier")
    newest = (
        sa.select(sa.func.max(earlier.c.valid_from))
        .where(earlier.c.model_uuid == models.c.uuid, earlier.c.valid_from <= when)
        .correlate(models)
        .scalar_subquery()
    )
    return (
        sa.select(
            history.c.model_uuid.label("uuid"),
            history.c.id,
            history.c.name,
            history.c.provider,
            history.c.lifecycle_status,
            history.c.version_major,
            history.c.version_minor,
            history.c.version_patch,
            history.c.agreement_uuid,
            history.c.valid_from,
        )
        .select_from(
            models.join(
                history,
                sa.and_(history.c.model_uuid == models.c.uuid, history.c.valid_from == newest),
            )
        )
        .where(sa.or_(history.c.valid_to.is_(None), history.c.valid_to > when))
        .order_by(history.c.id, history.c.model_uuid)
    )


def _dicts(result: sa.CursorResult[Any]) -> list[dict[str, Any]]:
    """Each row as a dict: zipping with the keys once costs a third of ``dict(row._mapping)``."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def _version(row: dict[str, Any]) -> str:
    return f"{row['version_major']}.{row['version_minor']}.{row['version_patch']}"
