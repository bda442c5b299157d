"""A long history written straight into the tables, and the read side timed on it.

``build_history`` fills ``model_history`` with ``rows`` rows (default 1,000,000: 10,000 models
with 100 contents each over three years of hourly runs) by executemany inserts, together with
the ``models``, child, ``sync_runs``, ``model_changes``, ``model_change_fields`` and
``model_versions`` rows the dashboard queries join, so it takes a minute, not a year of syncs.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl import db, schema
from etl.transform import flatten
from tests.catalog import make_catalog

HISTORY_START = datetime(2023, 1, 1, tzinfo=UTC)
CONTENTS_PER_MODEL = 100
BATCH = 20_000
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a DateTime on SQLite (naive UTC, here)."""
CHANGED_PATHS = ("name", "pricing.output_price_per_million", "lifecycle_status", "version.minor")
QUERIES_DIR = Path(__file__).resolve().parents[1] / "queries"


@dataclass
class History:
    """What :func:`build_history` wrote."""

    url: str
    models: int
    rows: int
    runs: int
    hours: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    def at(self, fraction: float) -> datetime:
        """A moment ``fraction`` of the way through the history."""
        return HISTORY_START + timedelta(hours=int(self.hours * fraction), minutes=30)


def build_history(url: str, rows: int, seed: int = 0) -> History:
    """Migrates the empty database at ``url`` and writes a history of ``rows`` rows into it.

    Foreign keys hold: every history row, change and version names a model and a run.
    """
    started = time.perf_counter()
    models = max(10, rows // CONTENTS_PER_MODEL)
    hours = min(3 * 8760, max(3 * CONTENTS_PER_MODEL + 3, rows // 38))
    rng = random.Random(seed)
    flats = [flatten(m) for m in make_catalog(models, seed=seed)]
    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
        agreements = {f.agreement["uuid"]: f.agreement for f in flats if f.agreement}
        plan = [_plan(i, rows, models, hours, rng) for i in range(models)]
        _insert(engine, schema.sync_runs, _runs(hours))
        _insert(
            engine,
            schema.agreements,
            [{**a, "first_seen_at": HISTORY_START} for a in agreements.values()],
        )
        _insert(engine, schema.models, _model_rows(flats, plan))
        for table in schema.CHILD_TABLES:
            _insert(engine, table, (row for f in flats for row in f.children[table.name]))
        _insert(engine, schema.model_history, _history_rows(flats, plan))
        _insert(engine, schema.model_changes, _change_rows(flats, plan))
        _insert(engine, schema.model_change_fields, _field_rows(flats, plan))
        _insert(engine, schema.model_versions, _version_rows(flats, plan))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    "SELECT setval(pg_get_serial_sequence('sync_runs', 'id'), "
                    "(SELECT MAX(id) FROM sync_runs))"
                )
                # What autovacuum does to tables that grew; SQLite is left as etl leaves it.
                conn.exec_driver_sql("VACUUM ANALYZE")
            else:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    total = sum(len(p[1]) for p in plan)
    return History(url, models, total, hours, hours, time.perf_counter() - started)


def _insert(engine: sa.Engine, table: sa.Table, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk-inserts with the driver itself, in batches of one transaction each: executemany on
    SQLite, COPY on PostgreSQL.

    Values are put in the form the dialect stores (SQLite: timestamps as SQLAlchemy's text;
    JSON as text, each distinct object serialised once), which takes a minute or two for a
    million rows where Core's per-row processing takes ten. SQLite's WAL never holds the whole
    table.
    """
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    dialect = engine.dialect.name
    columns = [c for c in table.columns if c.name in first]  # keys left out: autoincrement
    names = ", ".join(c.name for c in columns)
    convert = [(c.name, _converter(c, dialect)) for c in columns]
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        with engine.begin() as conn:
            if dialect == "postgresql":
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                cursor = dbapi.cursor()
                with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for values in batch:
                        copy.write_row(values)
                cursor.close()
            else:
                marks = ", ".join("?" for _ in columns)
                conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", batch)
        batch.clear()

    for row in itertools.chain([first], rows):
        batch.append(tuple(f(row.get(name)) for name, f in convert))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()


def _converter(column: sa.Column[Any], dialect: str) -> Callable[[Any], Any]:
    if isinstance(column.type, sa.JSON | schema.StoredJSON):
        cache: dict[int, tuple[Any, str]] = {}

        def to_json(value: Any) -> str | None:
            if value is None:
                return None
            hit = cache.get(id(value))
            if hit is None or hit[0] is not value:
                hit = cache[id(value)] = (value, json.dumps(value, ensure_ascii=False))
            return hit[1]

        return to_json
    if isinstance(column.type, schema.UTCDateTime) and dialect == "sqlite":
        return lambda value: None if value is None else value.strftime(_SQLITE_TIME)
    return lambda value: value


def _hour(h: int) -> datetime:
    return HISTORY_START + timedelta(hours=h)


def _runs(hours: int) -> Iterable[dict[str, Any]]:
    for h in range(hours):
        when = _hour(h)
        yield {
            "id": h + 1, "started_at": when, "finished_at": when + timedelta(seconds=3),
            "observed_at": when, "status": "succeeded", "mode": "sync", "filters": None,
            "complete": True, "requests": 2, "retries": 0, "pages": 2, "models_seen": 0,
            "inserted": 0, "updated": 0, "unchanged": 0, "removed": 0, "restored": 0,
            "warnings": 0,
        }  # fmt: skip


def _plan(
    i: int, rows: int, models: int, hours: int, rng: random.Random
) -> tuple[int, list[int], int | None]:
    """Model ``i``'s life: the hours its contents open, and the hour it was removed (if)."""
    contents = rows // models + (1 if i < rows % models else 0)
    start = rng.randrange(0, max(1, hours - 2 * contents))
    opens = [start, *sorted(rng.sample(range(start + 1, hours), contents - 1))]
    removed = None
    if rng.random() < 0.1 and opens[-1] + 1 < hours:
        removed = rng.randrange(opens[-1] + 1, hours)
    return i, opens, removed


def _model_rows(flats: list[Any], plan: list[Any]) -> Iterable[dict[str, Any]]:
    for flat, (_, opens, removed) in zip(flats, plan, strict=True):
        yield {
            **flat.model,
            "content_hash": flat.content_hash,
            "first_seen_at": _hour(opens[0]),
            "removed_at": None if removed is None else _hour(removed),
        }


def _history_rows(flats: list[Any], plan: list[Any]) -> Iterable[dict[str, Any]]:
    content = [c for c in schema.CONTENT_COLUMNS if c != "content_hash"]
    for flat, (i, opens, removed) in zip(flats, plan, strict=True):
        base = {name: flat.model[name] for name in content}
        ends = [*opens[1:], removed]
        for k, (start, end) in enumerate(zip(opens, ends, strict=True)):
            yield {
                **base,
                "name": f"{base['name']} r{k}",
                "version_minor": base["version_minor"] + k // 10,
                "content_hash": f"{i:032x}{k:032x}",
                "model_uuid": flat.uuid,
                "valid_from": _hour(start),
                "valid_to": None if end is None else _hour(end),
                "opened_by_run": start + 1,
                "closed_by_run": None if end is None else end + 1,
                "span_class": None if end is None else schema.span_class((end - start) * 3600),
            }


def _change_rows(flats: list[Any], plan: list[Any]) -> Iterable[dict[str, Any]]:
    for flat, (_, opens, removed) in zip(flats, plan, strict=True):
        for k, start in enumerate(opens):
            path = CHANGED_PATHS[k % len(CHANGED_PATHS)]
            yield {
                "run_id": start + 1,
                "observed_at": _hour(start),
                "model_uuid": flat.uuid,
                "kind": "added" if k == 0 else "changed",
                "changes": None if k == 0 else {path: {"old": k - 1, "new": k}},
            }
        if removed is not None:
            yield {
                "run_id": removed + 1,
                "observed_at": _hour(removed),
                "model_uuid": flat.uuid,
                "kind": "removed",
                "changes": None,
            }


def _field_rows(flats: list[Any], plan: list[Any]) -> Iterable[dict[str, Any]]:
    for flat, (_, opens, _) in zip(flats, plan, strict=True):
        for k, start in enumerate(opens[1:], 1):
            path = CHANGED_PATHS[k % len(CHANGED_PATHS)]
            yield {
                "run_id": start + 1,
                "model_uuid": flat.uuid,
                "path": path,
                "old_value": str(k - 1),
                "new_value": str(k),
            }


def _version_rows(flats: list[Any], plan: list[Any]) -> Iterable[dict[str, Any]]:
    for flat, (_, opens, _) in zip(flats, plan, strict=True):
        major, minor, patch = flat.version
        for k in range(0, len(opens), 10):
            yield {
                "model_uuid": flat.uuid,
                "major": major,
                "minor": minor + k // 10,
                "patch": patch,
                "first_seen_at": _hour(opens[k]),
                "first_seen_run": opens[k] + 1,
            }


# -- timing the read side -------------------------------------------------------------------------


@dataclass
class QueryTime:
    """One query's timings on the history."""

    name: str
    seconds: list[float]
    rows: int
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


FAST_QUERY_S = 1.0
FAST_QUERY_RUNS = 15
"""A query faster than FAST_QUERY_S is timed this many times (at least ``--repeat``): on a
shared VM a run of tens of milliseconds varies by up to 2x, and a median of three hardly
settles that."""


def dashboard_queries() -> dict[str, str]:
    """Every ``queries/*.sql``, by file name."""
    return {path.stem: path.read_text() for path in sorted(QUERIES_DIR.glob("*.sql"))}


def time_queries(history: History, repeat: int, timeout: float) -> list[QueryTime]:
    """Times the as-of query (as ``etl models --as-of`` runs it, and as bare SQL) and every
    dashboard query, each after one warm-up run; a query past ``timeout`` is stopped."""
    from etl import queries

    results: list[QueryTime] = []
    engine = db.create_engine(history.url)
    try:
        when = history.at(0.5)
        results.append(_timed("models_as_of (etl.queries)", repeat, timeout, engine,
                              lambda conn: len(queries.models_as_of(engine, when))))  # fmt: skip
        as_of_sql = (
            "SELECT model_uuid, id, name, provider, lifecycle_status, version_major, "
            "version_minor, version_patch, agreement_uuid, valid_from FROM model_history "
            "WHERE valid_from <= :t AND (valid_to IS NULL OR valid_to > :t)"
        )
        results.append(_timed("as-of as a naive interval scan (bare SQL)", repeat, timeout, engine,
                              lambda conn: len(conn.execute(sa.text(as_of_sql).bindparams(
                                  sa.bindparam("t", type_=schema.UTCDateTime)), {"t": when}
                              ).all())))  # fmt: skip
        for name, sql in dashboard_queries().items():
            run = functools.partial(_run_sql, sql=sql)
            results.append(_timed(name, repeat, timeout, engine, run))
    finally:
        engine.dispose()
    return results


def _run_sql(conn: sa.Connection, sql: str) -> int:
    return len(conn.execute(sa.text(sql)).all())


def _timed(
    name: str,
    repeat: int,
    timeout: float,
    engine: sa.Engine,
    query: Callable[[sa.Connection], int],
) -> QueryTime:
    result = QueryTime(name, [], 0)
    with engine.connect() as conn:
        cancel = _deadline(conn, timeout)

        def once() -> float:
            start = time.perf_counter()
            cancel.arm()
            result.rows = query(conn)
            return time.perf_counter() - start

        try:
            warm = once()  # warms the caches; timed only when too slow to run again
            if warm > timeout / 2:
                result.seconds.append(warm)
            else:
                runs = max(repeat, FAST_QUERY_RUNS) if warm < FAST_QUERY_S else repeat
                result.seconds.extend(once() for _ in range(runs))
        except sa.exc.SQLAlchemyError as exc:
            conn.rollback()
            result.error = (
                f"stopped after {timeout:.0f}s" if cancel.fired() else str(exc).splitlines()[0]
            )
        finally:
            cancel.disarm()
    return result


class _Deadline:
    """Stops a query running past ``timeout``: ``statement_timeout`` on PostgreSQL, a progress
    handler on SQLite."""

    def __init__(self, conn: sa.Connection, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.until = 0.0
        self.stopped = False
        self.dialect = conn.dialect.name
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"SET statement_timeout = {int(timeout * 1000)}")
            conn.commit()

    def arm(self) -> None:
        self.until = time.monotonic() + self.timeout
        if self.dialect == "sqlite":
            raw = self.conn.connection.dbapi_connection
            assert raw is not None
            raw.set_progress_handler(self._check, 100_000)

    def _check(self) -> int:
        if time.monotonic() > self.until:
            self.stopped = True
            return 1
        return 0

    def fired(self) -> bool:
        return self.stopped or (self.dialect == "postgresql" and time.monotonic() >= self.until)

    def disarm(self) -> None:
        if self.dialect == "sqlite":
            raw = self.conn.connection.dbapi_connection
            if raw is not None:
                raw.set_progress_handler(None, 0)
        elif self.dialect == "postgresql":
            self.conn.exec_driver_sql("RESET statement_timeout")
            self.conn.commit()


def _deadline(conn: sa.Connection, timeout: float) -> _Deadline:
    return _Deadline(conn, timeout)
