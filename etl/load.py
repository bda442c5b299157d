"""Writing the projection: the history tables as :mod:`etl.project` derives them.

A run that lands after every run already loaded is folded onto the state the tables hold and
only its effects are written (:class:`Projector` in append mode). A run that lands before
others makes the whole projection derived again, once per load, from the stored observations
(:func:`rebuild`). :func:`expected_rows` is the same derivation kept in memory, which
``etl verify`` compares with the tables.

Everything here works inside the caller's transaction on one connection.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import schema
from etl.archive import KnownSnapshot, SnapshotContent, read_snapshot
from etl.errors import InvalidResponseError
from etl.observe import (
    Contents,
    NothingStorable,
    Received,
    StoredSnapshot,
    Warnings,
    chunks,
    observed_run,
    observed_runs,
    receive,
    save_snapshot,
    save_usecases,
    snapshot_members,
)
from etl.project import AgreementState, Effects, ModelState, Run, State, fold, unsettled
from etl.times import format_instant
from etl.transform import (
    CHILD_SOURCES,
    KNOWN_FIELDS,
    MAX_SHORT,
    MAX_TEXT_BYTES,
    canonical_json,
    content_hash,
    same_json,
)

log = logging.getLogger("etl.load")

PROJECTION_VERSION = "1"
"""The rules the projection follows; a database derived with others is derived again."""
FLUSH_ROWS = 2_000
"""History rows kept in memory before they are written."""

CHILD_TABLES = schema.CHILD_TABLES
PROJECTION_TABLES: tuple[sa.Table, ...] = (
    schema.agreements,
    schema.models,
    *CHILD_TABLES,
    schema.model_history,
    schema.agreement_history,
    schema.model_changes,
    schema.model_change_fields,
    schema.model_versions,
    schema.model_usecases,
)
"""Every derived table, parents first (the order to insert; delete in reverse)."""
_HISTORY_FROM_MODEL = [n for n in schema.CONTENT_COLUMNS if n not in ("content_hash", "raw")]
_AGREEMENT_FIELDS = ("name", "description", "url")


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    update: Iterable[str] = (),
) -> None:
    """Inserts ``rows``; on a primary-key conflict updates the ``update`` columns (or does nothing).

    Uses the dialect's own statement: ``ON CONFLICT`` on SQLite and PostgreSQL, ``ON DUPLICATE
    KEY UPDATE`` on MariaDB/MySQL.
    """
    statement = _upsert_statement(conn.dialect.name, table, tuple(update))
    for part in chunks(rows):
        conn.execute(statement, list(part))


@functools.cache
def _upsert_statement(dialect: str, table: sa.Table, update: tuple[str, ...]) -> Any:
    """The upsert of ``table`` for ``dialect``, built once."""
    keys = [column.name for column in table.primary_key.columns]
    statement: Any
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite as native
        else:
            from sqlalchemy.dialects import postgresql as native  # type: ignore[no-redef]
        statement = native.insert(table)
        if update:
            return statement.on_conflict_do_update(
                index_elements=keys, set_={name: statement.excluded[name] for name in update}
            )
        return statement.on_conflict_do_nothing(index_elements=keys)
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        statement = mysql_insert(table)
        names = update or tuple(keys[:1])  # updating a key to itself is MySQL's "do nothing"
        return statement.on_duplicate_key_update({name: statement.inserted[name] for name in names})
    raise NotImplementedError(f"no upsert for dialect {dialect}")  # pragma: no cover


@dataclass
class Counts:
    """What one run did to the catalog."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    restored: int = 0

    @classmethod
    def of(cls, effects: Effects, seen: int) -> Counts:
        """A run's counts from its effects and the models it listed (``models_seen``: the
        models it saw unchanged are those it listed that it neither added, changed nor
        restored)."""
        inserted, updated = effects.count("added"), effects.count("changed")
        restored = effects.count("restored")
        return cls(
            inserted=inserted,
            updated=updated,
            unchanged=max(0, seen - inserted - updated - restored),
            removed=effects.count("removed"),
            restored=restored,
        )


@dataclass
class _Rows:
    """Rows waiting to be written, and the open rows among them by key."""

    history: list[dict[str, Any]] = field(default_factory=list)
    open_history: dict[str, dict[str, Any]] = field(default_factory=dict)
    agreement_history: list[dict[str, Any]] = field(default_factory=list)
    open_agreements: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    usecases: dict[tuple[str, str, datetime], dict[str, Any]] = field(default_factory=dict)
    closes: dict[tuple[str, datetime, int], list[str]] = field(default_factory=dict)
    """Rows already in the database to close: (table, when, run) -> keys."""
    usecase_closes: list[tuple[str, str, datetime, datetime]] = field(default_factory=list)
    models: set[str] = field(default_factory=set)
    new_content: set[str] = field(default_factory=set)
    held: dict[str, int] = field(default_factory=dict)
    """For models in ``new_content`` the tables hold child rows of: that content."""
    rewritten: dict[str, list[str]] = field(default_factory=dict)
    """Per child table, the models whose rows in it are replaced (:meth:`Projector.table_rows`
    fills it in)."""
    agreements: set[str] = field(default_factory=set)

    def close(
        self,
        table: str,
        open_rows: dict[str, dict[str, Any]],
        keys: list[str],
        t: datetime,
        run_id: int,
    ) -> None:
        """Closes each key's open history row: in memory when this batch opened it, else
        queued as an update of the row in the database."""
        for key in keys:
            row = open_rows.pop(key, None)
            if row is not None:
                row["valid_to"], row["closed_by_run"] = t, run_id
            else:
                self.closes.setdefault((table, t, run_id), []).append(key)


class Projector:
    """Folds runs onto a state and turns their effects into rows.

    Args:
        conn: The transaction's connection.
        contents: Where contents are read from.
        state: The state before the first run to fold: empty to derive everything, or
            :func:`load_state` to append to the tables.
        fresh: Whether the tables hold no projection yet (nothing to update or replace).
        flush_rows: Write queued rows once this many history and change rows wait; None
            keeps every row in memory (:func:`derive`).
    """

    def __init__(
        self,
        conn: Connection,
        contents: Contents,
        state: State,
        fresh: bool,
        flush_rows: int | None = FLUSH_ROWS,
    ) -> None:
        self.conn = conn
        self.flush_rows = flush_rows
        self.contents = contents
        self.state = state
        self.fresh = fresh
        self.rows = _Rows()
        self.counts: dict[int, Counts] = {}

    def apply(self, run: Run) -> Counts:
        """Folds one run and queues its rows."""
        effects = fold(self.state, run, self.contents)
        counts = Counts.of(effects, len(run.members) if run.seen is None else run.seen)
        self.counts[run.run_id] = counts
        if effects.opened or effects.closed or effects.events:
            self._queue_models(run, effects)
        if effects.agreements_opened:
            self._queue_agreements(run, effects)
        if effects.usecases_opened or effects.usecases_closed:
            self._queue_usecases(run, effects)
        waiting = len(self.rows.history) + len(self.rows.changes)
        if self.flush_rows is not None and waiting >= self.flush_rows:
            self.flush()
        return counts

    def _queue_models(self, run: Run, effects: Effects) -> None:
        t, rows = run.observed_at, self.rows
        rows.close("model_history", rows.open_history, effects.closed, t, run.run_id)
        self.contents.prefetch_raw([content_id for _, content_id in effects.opened])
        for uuid, content_id in effects.opened:
            row = self._history_row(uuid, content_id, t, run.run_id)
            rows.history.append(row)
            rows.open_history[uuid] = row
            if uuid not in rows.new_content and uuid in effects.previous:
                rows.held[uuid] = effects.previous[uuid]
            rows.new_content.add(uuid)
        for uuid, kind, diff in effects.events:
            rows.changes.append(
                {
                    "run_id": run.run_id,
                    "observed_at": t,
                    "model_uuid": uuid,
                    "kind": kind,
                    "changes": diff or None,
                }
            )
            paths = {_path(path): values for path, values in (diff or {}).items()}
            rows.fields.extend(
                {
                    "run_id": run.run_id,
                    "model_uuid": uuid,
                    "path": path,
                    "old_value": json_text(values["old"]),
                    "new_value": json_text(values["new"]),
                }
                for path, values in paths.items()
            )
        rows.versions.extend(
            {
                "model_uuid": uuid,
                "major": major,
                "minor": minor,
                "patch": patch,
                "first_seen_at": t,
                "first_seen_run": run.run_id,
            }
            for uuid, major, minor, patch in effects.versions
        )
        rows.models.update(effects.touched)

    def _history_row(self, uuid: str, content_id: int, t: datetime, run_id: int) -> dict[str, Any]:
        flat = self.contents.flat(content_id)
        content = self.contents[content_id]
        return {
            "model_uuid": uuid,
            "valid_from": t,
            "valid_to": None,
            "opened_by_run": run_id,
            "closed_by_run": None,
            **{name: flat.model[name] for name in _HISTORY_FROM_MODEL},
            "raw": schema.SerializedJSON(flat.raw_json),
            "content_hash": content.content_hash,
            "raw_hash": content.raw_hash,
            "span_class": None,
        }

    def _queue_agreements(self, run: Run, effects: Effects) -> None:
        t, rows = run.observed_at, self.rows
        rows.close(
            "agreement_history", rows.open_agreements, effects.agreements_closed, t, run.run_id
        )
        for uuid in effects.agreements_opened:
            values = self.state.agreements[uuid].values
            row = {
                "agreement_uuid": uuid,
                "valid_from": t,
                "valid_to": None,
                "opened_by_run": run.run_id,
                "closed_by_run": None,
                **dict(zip(_AGREEMENT_FIELDS, values, strict=True)),
            }
            rows.agreement_history.append(row)
            rows.open_agreements[uuid] = row
            rows.agreements.add(uuid)

    def _queue_usecases(self, run: Run, effects: Effects) -> None:
        rows = self.rows
        for uuid, usecase, since in effects.usecases_closed:
            row = rows.usecases.get((uuid, usecase, since))
            if row is not None:
                row["removed_at"] = run.observed_at
            else:
                rows.usecase_closes.append((uuid, usecase, since, run.observed_at))
        for uuid, usecase in effects.usecases_opened:
            rows.usecases[(uuid, usecase, run.observed_at)] = {
                "model_uuid": uuid,
                "usecase": usecase,
                "first_seen_at": run.observed_at,
                "removed_at": None,
            }

    def flush(self) -> None:
        """Writes every queued row (open rows that later runs close are updated in place)."""
        rows, self.rows = self.rows, _Rows()
        # Rows already in the database are closed first: a row opened in this batch for the
        # same model is written open, and must not be closed with them.
        for (name, t, run_id), keys in rows.closes.items():
            table = schema.metadata.tables[name]
            key = table.c.model_uuid if name == "model_history" else table.c.agreement_uuid
            values: dict[str, Any] = {"valid_to": t, "closed_by_run": run_id}
            if "span_class" in table.c:
                end = sa.literal(t, schema.UTCDateTime)
                values["span_class"] = schema.span_class_of(table.c.valid_from, end)
            for part in chunks(keys):
                self.conn.execute(
                    sa.update(table).where(key.in_(part), table.c.valid_to.is_(None)).values(values)
                )
        usecases = schema.model_usecases
        for uuid, usecase, since, until in rows.usecase_closes:
            self.conn.execute(
                sa.update(usecases)
                .where(
                    usecases.c.model_uuid == uuid,
                    usecases.c.usecase == usecase,
                    usecases.c.first_seen_at == since,
                )
                .values(removed_at=until)
            )
        for table, table_rows in self.table_rows(rows).items():
            self._write(table, table_rows, rows)
        self.contents.forget_flat()

    def table_rows(self, rows: _Rows) -> dict[sa.Table, list[dict[str, Any]]]:
        """The rows to write for what is queued, by table, parents first."""
        read_first_seen(self.conn, self.state, rows.models)
        current = [self.state.models[uuid].content_id for uuid in rows.models]
        self.contents.prefetch(current)  # a removed model's row is written from its content
        self.contents.prefetch_raw(current)
        found: dict[sa.Table, list[dict[str, Any]]] = {
            schema.agreements: [self._agreement_row(uuid) for uuid in sorted(rows.agreements)],
            schema.models: [self._model_row(uuid) for uuid in sorted(rows.models)],
        }
        rows.rewritten = self._rewritten_children(rows)
        for table in CHILD_TABLES:
            found[table] = [
                child
                for uuid in rows.rewritten[table.name]
                for child in self.contents.flat(self.state.models[uuid].content_id).children[
                    table.name
                ]
            ]
        for row in rows.history:
            if row["valid_to"] is not None:
                row["span_class"] = schema.span_class(
                    (row["valid_to"] - row["valid_from"]).total_seconds()
                )
        found[schema.model_history] = rows.history
        found[schema.agreement_history] = rows.agreement_history
        found[schema.model_changes] = rows.changes
        found[schema.model_change_fields] = rows.fields
        found[schema.model_versions] = rows.versions
        found[schema.model_usecases] = list(rows.usecases.values())
        return found

    def _rewritten_children(self, rows: _Rows) -> dict[str, list[str]]:
        """For each child table, the models whose rows in it are written: every model with
        new content, but for one whose rows the tables hold from a content whose fields
        for that table (:data:`CHILD_SOURCES`) are the same JSON, which gives the same rows."""
        uuids = sorted(rows.new_content)
        if self.fresh:
            return {table.name: uuids for table in CHILD_TABLES}
        now = {uuid: self.state.models[uuid].content_id for uuid in uuids}
        held = {
            uuid: rows.held[uuid] for uuid in uuids if rows.held.get(uuid, now[uuid]) != now[uuid]
        }
        self.contents.prefetch_raw([*held.values(), *(now[uuid] for uuid in held)])
        fields = {name for sources in CHILD_SOURCES.values() for name in sources}
        differing = {  # (model, field) pairs whose JSON differs between the two contents
            (uuid, name)
            for uuid, before in held.items()
            for name in fields
            if not same_json(
                self.contents.raw(before).get(name), self.contents.raw(now[uuid]).get(name)
            )
        }
        return {
            table.name: [
                uuid
                for uuid in uuids
                if uuid not in rows.held
                or any((uuid, name) in differing for name in CHILD_SOURCES[table.name])
            ]
            for table in CHILD_TABLES
        }

    def _write(self, table: sa.Table, table_rows: list[dict[str, Any]], rows: _Rows) -> None:
        if table is schema.agreements and not self.fresh:
            upsert(self.conn, table, table_rows, (*_AGREEMENT_FIELDS, "first_seen_at"))
            return
        if table is schema.models and not self.fresh:
            update = [c.name for c in table.c if c.name != "uuid"]
            upsert(self.conn, table, table_rows, update)
            return
        if table in CHILD_TABLES and not self.fresh:
            for part in chunks(rows.rewritten[table.name]):
                self.conn.execute(sa.delete(table).where(table.c.model_uuid.in_(part)))
        for part in chunks(table_rows):
            self.conn.execute(table.insert(), list(part))

    def _model_row(self, uuid: str) -> dict[str, Any]:
        model = self.state.models[uuid]
        flat = self.contents.flat(model.content_id)
        content = self.contents[model.content_id]
        return {
            **flat.model,
            "raw": schema.SerializedJSON(flat.raw_json),
            "content_hash": content.content_hash,
            "raw_hash": content.raw_hash,
            "first_seen_at": model.first_seen_at,
            "removed_at": model.removed_at,
        }

    def _agreement_row(self, uuid: str) -> dict[str, Any]:
        agreement = self.state.agreements[uuid]
        return {
            "uuid": uuid,
            **dict(zip(_AGREEMENT_FIELDS, agreement.values, strict=True)),
            "first_seen_at": agreement.first_seen_at,
        }


def _path(path: str) -> str:
    """A field path as ``model_change_fields`` stores it: no NUL, at most 255 characters."""
    return path.replace("\x00", "\\u0000")[:MAX_SHORT]


def json_text(value: Any) -> str | None:
    """A changed value as text every dialect stores: strings as they are, anything else as
    JSON; NUL written as ``\\u0000`` (PostgreSQL text refuses it) and cut to a TEXT column's
    64 KB (MariaDB's limit) with a trailing ``...``."""
    if value is None:
        return None
    text = value if isinstance(value, str) else canonical_json(value)
    text = text.replace("\x00", "\\u0000")
    if len(text) > MAX_TEXT_BYTES // 4 and len(text.encode()) > MAX_TEXT_BYTES:
        text = text.encode()[: MAX_TEXT_BYTES - 3].decode("utf-8", "ignore") + "..."
    return text


def load_state(conn: Connection, contents: Contents) -> State:
    """The fold's state as the tables hold it after the last run loaded (but for
    ``last_snapshot``, which the caller knows).

    Of each model only its content's id is read, with the ``raw_hash`` it is stored under
    (noted in ``contents``, so that storing the next snapshot finds the contents it holds
    again), both from indexes: the fold reads the contents of the few models that changed,
    and the agreements of the rest (:meth:`Contents.agreements`), never the rest itself."""
    state = State()
    models, stored = schema.models, schema.observed_contents
    query = sa.select(
        models.c.uuid, models.c.removed_at, models.c.raw_hash, stored.c.content_id
    ).join(stored, stored.c.raw_hash == models.c.raw_hash)
    know = contents.know
    for uuid, removed, key, content_id in conn.execute(query):
        know(key, content_id)
        state.models[uuid] = ModelState(content_id, removed is None, None, removed)
    for row in conn.execute(sa.select(schema.agreements)):
        values = (row.name, row.description, row.url)
        state.agreements[row.uuid] = AgreementState(values, row.first_seen_at)
    usecases = schema.model_usecases
    query = sa.select(usecases).where(usecases.c.removed_at.is_(None))
    state.usecases = {(r.model_uuid, r.usecase): r.first_seen_at for r in conn.execute(query)}
    return state


def read_first_seen(conn: Connection, state: State, uuids: Iterable[str]) -> None:
    """Fills in ``first_seen_at`` of the models in ``uuids`` that :func:`load_state` left
    unread (None)."""
    wanted = sorted(uuid for uuid in uuids if state.models[uuid].first_seen_at is None)
    models = schema.models
    for part in chunks(wanted):
        query = sa.select(models.c.uuid, models.c.first_seen_at).where(models.c.uuid.in_(part))
        for uuid, first_seen in conn.execute(query):
            state.models[uuid].first_seen_at = first_seen


def read_versions(conn: Connection, state: State, uuids: Iterable[str], read: set[str]) -> None:
    """Adds to ``state.versions`` the stored versions of the models in ``uuids`` not in
    ``read`` (which it extends): the fold asks only of the models whose history row opens."""
    wanted = sorted(set(uuids) - read)
    read.update(wanted)
    versions = schema.model_versions
    columns = (versions.c.model_uuid, versions.c.major, versions.c.minor, versions.c.patch)
    for part in chunks(wanted):
        query = sa.select(*columns).where(versions.c.model_uuid.in_(part))
        state.versions.update(tuple(row) for row in conn.execute(query))


def last_run(conn: Connection) -> tuple[datetime, int, int | None] | None:
    """(observed_at, id, snapshot id) of the last run whose observation counts."""
    runs = schema.sync_runs
    found = conn.execute(
        sa.select(runs.c.observed_at, runs.c.id, runs.c.snapshot_id)
        .where(runs.c.status == "succeeded", runs.c.snapshot_id.is_not(None))
        .order_by(runs.c.observed_at.desc(), runs.c.id.desc())
        .limit(1)
    ).first()
    return None if found is None else (found[0], found[1], found[2])


def projection_version(conn: Connection) -> str | None:
    """The rules the tables were derived with (None: never derived)."""
    table = schema.etl_state
    return conn.execute(
        sa.select(table.c.value).where(table.c.name == "projection")
    ).scalar_one_or_none()


def _set_projection_version(conn: Connection) -> None:
    upsert(conn, schema.etl_state, [{"name": "projection", "value": PROJECTION_VERSION}], ["value"])


def derive(conn: Connection) -> Projector:
    """Folds every observed run from nothing, keeping every row in memory (nothing written)."""
    contents = Contents(conn)
    projector = Projector(conn, contents, State(), fresh=True, flush_rows=None)
    for run in observed_runs(conn, contents):
        projector.apply(run)
    return projector


def expected_rows(
    conn: Connection,
) -> tuple[dict[sa.Table, list[dict[str, Any]]], dict[int, Counts]]:
    """Every projection table's rows as the observations derive them, and each run's counts."""
    projector = derive(conn)
    return projector.table_rows(projector.rows), projector.counts


def rebuild(conn: Connection) -> dict[int, Counts]:
    """Derives the whole projection again from the observations and writes it in place of
    the tables' rows; records each run's counts. Returns them."""
    tables, counts = expected_rows(conn)
    for table in reversed(PROJECTION_TABLES):
        conn.execute(sa.delete(table))
    for table in PROJECTION_TABLES:
        for part in chunks(tables[table]):
            conn.execute(table.insert(), list(part))
    save_counts(conn, counts)
    _set_projection_version(conn)
    return counts


_UPDATE_COUNTS = (
    sa.update(schema.sync_runs)
    .where(schema.sync_runs.c.id == sa.bindparam("run_id"))
    .values(
        inserted=sa.bindparam("inserted"),
        updated=sa.bindparam("updated"),
        unchanged=sa.bindparam("unchanged"),
        removed=sa.bindparam("removed"),
        restored=sa.bindparam("restored"),
    )
)


def save_counts(conn: Connection, counts: dict[int, Counts]) -> None:
    """Records each run's counts in ``sync_runs``."""
    rows = [{"run_id": run_id, **asdict(c)} for run_id, c in counts.items()]
    for part in chunks(rows):
        conn.execute(_UPDATE_COUNTS, list(part))


FUTURE_TOLERANCE = timedelta(minutes=5)
"""How far past now a snapshot's time may be (clocks differ a little); later is refused."""


@dataclass
class Loaded:
    """One snapshot's load.

    Attributes:
        run_id: The run that holds it, or the run that had loaded it already.
        skipped: True when an earlier run had loaded the same snapshot at the same time.
        counts: What it did (after a rebuild, as the rebuild derived it).
        models: Models it holds.
        unstorable: Models listed that could not be stored (the run marks no removals).
        marks_removals: Whether the run marked missing models removed.
        warnings: Bad values and unstorable models it met.
        snapshot_id: The stored snapshot it holds (None when skipped).
        digest: That snapshot's digest.
    """

    run_id: int
    skipped: bool = False
    counts: Counts = field(default_factory=Counts)
    models: int = 0
    unstorable: int = 0
    marks_removals: bool = False
    warnings: int = 0
    snapshot_id: int | None = None
    digest: str | None = None


class Refused(InvalidResponseError):
    """A snapshot the loader will not take (exit 5); raised before anything of it is written."""


class Loader:
    """Loads snapshots into one transaction: stores what each observed, then brings the
    projection up to date. Sync and backfill both load through this.

    A snapshot later than every loaded run is folded onto the tables' state; one that lands
    before others marks the projection for one :func:`rebuild` in :meth:`finish`, whatever
    the number of such snapshots.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.contents = Contents(conn)
        self.last = last_run(conn)
        # Derived with other rules, the tables are derived again; with no run loaded yet
        # there is nothing to derive, and the first run appends to empty tables.
        self.stale = self.last is not None and projection_version(conn) != PROJECTION_VERSION
        self.projector: Projector | None = None
        self.state: State | None = None
        self.versions_read: set[str] = set()
        """Models whose stored versions ``state.versions`` holds (see :func:`read_versions`)."""
        self.loaded: list[Loaded] = []
        self.warnings = Warnings()

    def load(
        self,
        content: SnapshotContent,
        *,
        observed_at: datetime,
        source: str,
        mode: str,
        run_id: int | None = None,
        started_at: datetime | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Loaded:
        """Stores one snapshot as a run and folds it.

        Args:
            content: The snapshot.
            observed_at: When it was observed.
            source: Names it in messages: its file, or the sync's run.
            mode: ``sync`` or ``backfill``.
            run_id: The run's row when it exists already (a sync records itself first).
            started_at: When the run started (default: now).
            extra: More ``sync_runs`` columns to record (requests, retries...).

        Raises:
            InvalidResponseError: Dated in the future, holding no storable model, or another
                catalog at the same instant as a loaded run.
        """
        now = datetime.now(UTC)
        if observed_at > now + FUTURE_TOLERANCE:
            raise Refused(
                f"{source}: observed at {format_instant(observed_at)}, after now "
                f"({format_instant(now)}); refused (check the file's name or --as-of)"
            )
        known = content.known
        if known is not None and not self._follows(known, observed_at):
            content = read_snapshot(known.path)  # parse what the memo stood for after all
            known = None
        before = self.warnings.count
        if known is not None:  # the last run's snapshot again, byte for byte
            digest, marks, seen = known.digest, True, known.seen
            stored = StoredSnapshot(known.snapshot_id, known.models, 0, 0)
        else:
            stored_or_same = self._store(content, observed_at, source)
            if isinstance(stored_or_same, Loaded):
                return stored_or_same
            stored, digest, marks = stored_or_same
            seen = len(content.tally.uuids)
        warnings = self.warnings.count - before
        values = {
            "status": "succeeded",
            "finished_at": datetime.now(UTC),
            "observed_at": observed_at,
            "complete": marks,
            "pages": content.pages,
            "models_seen": seen,
            "snapshot_hash": digest,
            "snapshot_id": stored.snapshot_id,
            "warnings": warnings,
            "source": source if mode == "backfill" else None,
            **(extra or {}),
        }
        if run_id is None:
            run_id = start_run(
                self.conn,
                mode=mode,
                filters={"archived": "filtered"} if content.filtered else {},
                started_at=started_at or now,
                observed_at=observed_at,
            )
        finish_run(self.conn, run_id, **values)
        if content.usecases:
            save_usecases(self.conn, run_id, content.usecases)
        loaded = Loaded(run_id, False, Counts(), stored.models, stored.unstorable, marks, warnings,
                        stored.snapshot_id, digest)  # fmt: skip
        self._fold(loaded, observed_at, stored, content, seen)
        self.loaded.append(loaded)
        return loaded

    def _follows(self, known: KnownSnapshot, observed_at: datetime) -> bool:
        """Whether a run of ``known`` at ``observed_at`` simply follows the last run, which
        holds the same snapshot (what the listing memo was read for)."""
        return (
            self._appends(observed_at)
            and self.last is not None
            and self.last[2] == known.snapshot_id
        )

    def _store(
        self, content: SnapshotContent, observed_at: datetime, source: str
    ) -> tuple[StoredSnapshot, str, bool] | Loaded:
        """Stores the snapshot's new contents and its member list.

        Returns:
            The stored snapshot, its digest and whether the run marks removals; or the run
            that had loaded the same snapshot at the same instant.
        """
        received = receive(content.models, content.hashes, frozenset(content.confirmed))
        for model, _ in received.models.values():
            if not model.keys() <= KNOWN_FIELDS:
                self.warnings.unknown_fields(frozenset(model.keys() - KNOWN_FIELDS))
        if content.models and not received.models:
            raise Refused(f"{source}: no model in it has a usable uuid; refused")
        for model in received.unidentified:
            shown = str(model.get("id") if isinstance(model, dict) else model)[:60]
            self.warnings.model(None, f"model without a usable uuid (id {shown!r})")
        marks = content.marks_removals and not received.unidentified and bool(received.models)
        same = self._same_instant(observed_at, received, marks, source)
        if same is not None:
            return same
        if self.projector is None and self._appends(observed_at):
            # the fold will read the state: read it now, and with it the contents the
            # models hold, which the new snapshot mostly holds again
            self._read_state()
        try:
            stored = save_snapshot(self.conn, received, self.warnings, self.contents)
        except NothingStorable as exc:
            raise Refused(f"{source}: {exc}; refused") from None
        return stored, received.digest, marks and stored.unstorable == 0

    def _same_instant(
        self, observed_at: datetime, received: Received, marks: bool, source: str
    ) -> Loaded | None:
        runs = schema.sync_runs
        found = self.conn.execute(
            sa.select(runs.c.id, runs.c.snapshot_hash, runs.c.complete, runs.c.mode, runs.c.source)
            .where(runs.c.status == "succeeded", runs.c.observed_at == observed_at)
            .order_by(runs.c.id)
        ).first()
        if found is None:
            return None
        if bool(found.complete) == marks and (
            found.snapshot_hash == received.digest or self._same_content(found.id, received)
        ):
            log.info("%s: already loaded as run %d; skipped", source, found.id)
            return Loaded(found.id, skipped=True)
        other = found.source or f"run {found.id} ({found.mode})"
        raise Refused(
            f"{source}: another catalog was loaded for the same instant "
            f"{format_instant(observed_at)} from {other}; refused (one instant holds one catalog)"
        )

    def _same_content(self, run_id: int, received: Received) -> bool:
        """Whether a loaded run saw the same models with the same content (sent as other
        bytes: indented, keys in another order, zero values left out)."""
        runs = schema.sync_runs
        snapshot_id = self.conn.execute(
            sa.select(runs.c.snapshot_id).where(runs.c.id == run_id)
        ).scalar_one()
        if snapshot_id is None:
            return False
        members, present = snapshot_members(self.conn, self.contents, snapshot_id)
        if present != received.also_present or members.keys() != received.models.keys():
            return False
        return all(
            self.contents[content_id].content_hash == content_hash(received.models[uuid][0])
            for uuid, content_id in members.items()
        )

    def _appends(self, observed_at: datetime) -> bool:
        """Whether a run observed then is folded onto the tables (not derived again)."""
        return not self.stale and (self.last is None or observed_at > self.last[0])

    def _read_state(self) -> State:
        if self.state is None:
            self.state = load_state(self.conn, self.contents)
        return self.state

    def _fold(
        self,
        loaded: Loaded,
        observed_at: datetime,
        stored: StoredSnapshot,
        content: SnapshotContent,
        seen: int,
    ) -> None:
        snapshot_id = stored.snapshot_id
        position = (observed_at, loaded.run_id)
        in_order = self.last is None or position > self.last[:2]
        previous = self.last
        self.last = (observed_at, loaded.run_id, snapshot_id)
        if self.stale or not in_order:
            self.stale = True
            return
        if self.projector is None:
            repeated = previous is not None and previous[2] == snapshot_id
            if (
                repeated
                and not (content.confirmed or content.usecases)
                and self._present() == loaded.models
            ):
                loaded.counts = Counts(unchanged=seen)  # the same catalog again
                self._save(loaded)
                return
            state = self._read_state()
            state.last_snapshot = None if previous is None else previous[2]
            self.projector = Projector(self.conn, self.contents, state, fresh=False)
        members = stored.members or snapshot_members(self.conn, self.contents, snapshot_id)
        # only the models whose history row may open have their versions checked by the fold
        opening = unsettled(self.projector.state, members[0])
        read_versions(self.conn, self.projector.state, opening, self.versions_read)
        runs = schema.sync_runs
        row = self.conn.execute(
            sa.select(
                runs.c.id,
                runs.c.observed_at,
                runs.c.complete,
                runs.c.filters,
                runs.c.snapshot_id,
                runs.c.models_seen,
            ).where(runs.c.id == loaded.run_id)
        ).one()
        loaded.counts = self.projector.apply(observed_run(row, members, content.usecases))
        self._save(loaded)

    def _present(self) -> int:
        models = schema.models
        query = sa.select(sa.func.count()).select_from(models).where(models.c.removed_at.is_(None))
        return int(self.conn.execute(query).scalar_one())

    def _save(self, loaded: Loaded) -> None:
        save_counts(self.conn, {loaded.run_id: loaded.counts})

    def finish(self) -> None:
        """Writes what is queued, or derives the whole projection again when a snapshot
        landed before others."""
        if self.stale:
            counts = rebuild(self.conn)
            for loaded in self.loaded:
                if not loaded.skipped:
                    loaded.counts = counts.get(loaded.run_id, loaded.counts)
            return
        if self.projector is not None:
            self.projector.flush()
        if projection_version(self.conn) is None:
            _set_projection_version(self.conn)


def start_run(
    conn: Connection,
    *,
    mode: str,
    filters: dict[str, Any],
    started_at: datetime,
    observed_at: datetime | None = None,
    source: str | None = None,
) -> int:
    """Records a run as ``running`` and returns its id."""
    result = conn.execute(
        _INSERT_RUN,
        {
            **_NEW_RUN,
            "started_at": started_at,
            "observed_at": observed_at or started_at,
            "source": source,
            "mode": mode,
            "filters": filters or None,
        },
    )
    run_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert run_id is not None
    return int(run_id)


_INSERT_RUN = schema.sync_runs.insert()
_NEW_RUN = {"status": "running", "complete": False, **dict.fromkeys(
    ("requests", "retries", "pages", "models_seen", "inserted", "updated", "unchanged", "removed",
     "restored", "warnings"), 0)}  # fmt: skip
_UPDATE_RUN = sa.update(schema.sync_runs).where(schema.sync_runs.c.id == sa.bindparam("run_id"))


def finish_run(conn: Connection, run_id: int, **values: Any) -> None:
    """Records a run's outcome: its status, finish time, counts and error."""
    conn.execute(_UPDATE_RUN, {**values, "run_id": run_id})


_KEYS: dict[str, tuple[str, ...]] = {
    "model_history": ("model_uuid", "valid_from"),
    "agreement_history": ("agreement_uuid", "valid_from"),
    "model_changes": ("run_id", "model_uuid", "kind"),
}
"""Each derived table's natural key, where its primary key is a generated number."""
_GENERATED = frozenset({"history_id", "change_id"})
_COUNTED = ("inserted", "updated", "unchanged", "removed", "restored")


@dataclass(frozen=True)
class Difference:
    """A row the observations derive one way and the tables hold another (None: absent)."""

    table: str
    key: tuple[Any, ...]
    expected: dict[str, Any] | None
    found: dict[str, Any] | None


def verify(conn: Connection) -> list[Difference]:
    """Derives the projection from the observations and compares it with the tables.

    Returns:
        Every difference, table by table; empty when the tables are exactly the derivation.
    """
    expected, counts = expected_rows(conn)
    differences: list[Difference] = []
    for table in PROJECTION_TABLES:
        keys = _KEYS.get(table.name) or tuple(c.name for c in table.primary_key.columns)
        columns = [c.name for c in table.c if c.name not in _GENERATED]
        stored = [dict(row._mapping) for row in conn.execute(sa.select(table))]
        differences += _compare(table.name, keys, columns, expected[table], stored)
    runs = schema.sync_runs
    stored_counts = [
        dict(row._mapping)
        for row in conn.execute(sa.select(runs.c.id, *(runs.c[name] for name in _COUNTED)))
        if row.id in counts
    ]
    derived = [{"id": run_id, **asdict(c)} for run_id, c in counts.items()]
    differences += _compare("sync_runs", ("id",), ["id", *_COUNTED], derived, stored_counts)
    return differences


def _compare(
    name: str,
    keys: tuple[str, ...],
    columns: list[str],
    expected: list[dict[str, Any]],
    found: list[dict[str, Any]],
) -> list[Difference]:
    def index(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        shown = ({c: _comparable(row.get(c)) for c in columns} for row in rows)
        return {tuple(row[k] for k in keys): row for row in shown}

    want, have = index(expected), index(found)
    differences = []
    for key in sorted(want.keys() | have.keys(), key=canonical_json):
        a, b = want.get(key), have.get(key)
        if a == b:
            continue
        if a is not None and b is not None:  # only the columns that differ
            a, b = ({c: row[c] for c in columns if a[c] != b[c]} for row in (a, b))
        differences.append(Difference(name, key, a, b))
    return differences


def _comparable(value: Any) -> Any:
    """A value as both sides can be compared: JSON parsed, timestamps as ISO text in UTC."""
    if isinstance(value, schema.SerializedJSON):
        value = json.loads(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict | list):
        return canonical_json(value)
    return value
