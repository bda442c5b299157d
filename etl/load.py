"""Writing a run into the catalog: native upserts, child rows, removals and the run's record.

Everything here works inside the caller's transaction on one connection; the caller commits or
rolls back the whole run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import schema
from etl.transform import (
    MAX_SHORT,
    MAX_TEXT_BYTES,
    FlatModel,
    canonical_json,
    changed_fields,
)

log = logging.getLogger("etl.load")

BATCH = 500
"""Rows per ``IN (...)`` list; stays under every dialect's parameter limit."""


def chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    """Yields successive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    if rows:
        conn.execute(_upsert_statement(conn.dialect.name, table, tuple(update)), list(rows))


@functools.cache
def _upsert_statement(dialect: str, table: sa.Table, update: tuple[str, ...]) -> Any:
    """The upsert of ``table`` for ``dialect``, built once: building one costs more than a
    small batch of rows takes to write."""
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
    warnings: int = 0


_MODEL_UPDATE = [
    c.name for c in schema.models.columns if c.name not in ("uuid", "first_seen_at")
]  # fmt: skip
_AGREEMENT_FIELDS = ("name", "description", "url")
_AGREEMENT_FIRST_SEEN = (*_AGREEMENT_FIELDS, "first_seen_at")
_HISTORY_FROM_MODEL = [name for name in schema.CONTENT_COLUMNS if name != "content_hash"]


@dataclass
class _Pending:
    """What :meth:`CatalogWriter.save_models` decided and :meth:`CatalogWriter.flush` writes."""

    new: list[FlatModel] = field(default_factory=list)
    write: list[FlatModel] = field(default_factory=list)
    opened: list[FlatModel] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    revived: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    placeholders: list[dict[str, Any]] = field(default_factory=list)
    uuids: set[str] = field(default_factory=set)


class CatalogWriter:
    """Saves a run's models into the catalog, writing only what changed.

    Args:
        conn: The run's connection, inside its transaction.
        run_id: The run's ``sync_runs.id`` (None on a dry run).
        observed_at: When the run saw the catalog.
        dry_run: Count what would change, write nothing.
        as_of: Start from the catalog as history says it was at this time, not from today's
            tables: the state after :func:`rewind`, for a snapshot older than recorded runs.
    """

    def __init__(
        self,
        conn: Connection,
        run_id: int | None,
        observed_at: datetime,
        dry_run: bool = False,
        as_of: datetime | None = None,
    ) -> None:
        self.conn = conn
        self.run_id = run_id
        self.observed_at = observed_at
        self.dry_run = dry_run
        self.rewound = as_of is not None
        self.counts = Counts()
        self.known: dict[str, tuple[str, bool, str | None]] = {}
        """uuid -> (content hash, removed, hash of the bytes last stored)."""
        self.agreements: dict[str, tuple[Any, ...]] = {}
        self.seen: dict[str, str] = {}
        self.agreements_seen: dict[str, tuple[Any, ...]] = {}
        self.agreements_placed: set[str] = set()
        self._pending = _Pending()
        if as_of is not None:
            self._fetch_state_as_of(as_of)
        elif sa.inspect(conn).has_table("models"):
            self._fetch_state()

    def begin_run(self, run_id: int, observed_at: datetime) -> None:
        """Moves on to the next run of a replay: its id, its time, fresh counts."""
        self.run_id, self.observed_at = run_id, observed_at
        self.counts = Counts()
        self.seen = {}

    def _fetch_state(self) -> None:
        models = schema.models
        removed = models.c.removed_at.is_not(None)  # a flag, not a timestamp to parse per row
        query = sa.select(models.c.uuid, models.c.content_hash, removed, models.c.raw_hash)
        # fetchall: one call into the driver, not one a row (psycopg's per-row fetch is slow)
        for uuid, digest, gone, raw in self.conn.execute(query).fetchall():
            self.known[uuid] = (digest, bool(gone), raw)
        agreements = schema.agreements
        for row in self.conn.execute(sa.select(agreements)):
            self.agreements[row.uuid] = tuple(getattr(row, f) for f in _AGREEMENT_FIELDS)

    def _fetch_state_as_of(self, when: datetime) -> None:
        history = schema.model_history
        query = (
            sa.select(
                history.c.model_uuid, history.c.content_hash, history.c.valid_to, history.c.raw_hash
            )
            .where(history.c.valid_from <= when)
            .order_by(history.c.valid_from, history.c.history_id)
        )
        for uuid, digest, valid_to, raw in self.conn.execute(query):
            self.known[uuid] = (digest, valid_to is not None and valid_to <= when, raw)
        agreements = schema.agreement_history
        query = (
            sa.select(agreements)
            .where(agreements.c.valid_from <= when)
            .order_by(agreements.c.valid_from, agreements.c.history_id)
        )
        for row in self.conn.execute(query):
            self.agreements[row.agreement_uuid] = tuple(getattr(row, f) for f in _AGREEMENT_FIELDS)

    def skip_unchanged(
        self, models: Sequence[Any], raw_hashes: Sequence[str | None] | None
    ) -> list[tuple[Any, str | None]]:
        """Counts the models whose bytes match what is stored, and returns the others.

        A present model sent byte for byte as last time is unchanged without being flattened;
        everything else (new, removed, different bytes, no digest) goes on to
        :meth:`save_models`.
        """
        if raw_hashes is None:
            return [(model, None) for model in models]
        rest: list[tuple[Any, str | None]] = []
        for model, digest in zip(models, raw_hashes, strict=True):
            uuid = model.get("uuid") if isinstance(model, dict) else None
            known = self.known.get(uuid) if isinstance(uuid, str) else None
            if (
                isinstance(uuid, str)
                and known is not None
                and not known[1]
                and digest is not None
                and known[2] == digest
                and uuid not in self.seen
            ):
                self.seen[uuid] = known[0]
                self.counts.unchanged += 1
            else:
                rest.append((model, digest))
        return rest

    def save_models(self, flats: Sequence[FlatModel]) -> None:
        """Saves flattened models: new and changed ones whole, others not at all.

        What changed is decided at once; the rows are written in batches of :data:`BATCH`
        models (a page rarely holds enough changes to fill one), and at the latest by
        :meth:`flush`, which :meth:`mark_removed` and :meth:`end_run` call. Every change also
        closes and opens ``model_history`` rows and records a ``model_changes`` event.
        """
        batch = {flat.uuid: flat for flat in flats}
        if not self._pending.uuids.isdisjoint(batch):
            self.flush()  # a model sent twice: write its first content before deciding again
        pending = self._pending
        for flat in batch.values():
            self.seen[flat.uuid] = flat.content_hash
            known = self.known.get(flat.uuid)
            if known is None:
                self.counts.inserted += 1
                pending.new.append(flat)
                pending.events.append((flat.uuid, "added"))
            elif known[1]:
                self.counts.restored += 1
                pending.events.append((flat.uuid, "restored"))
                if known[0] != flat.content_hash:
                    pending.write.append(flat)
                    pending.changed.append(flat.uuid)
                else:
                    pending.revived.append(flat.uuid)
            elif known[0] != flat.content_hash:
                self.counts.updated += 1
                pending.write.append(flat)
                pending.changed.append(flat.uuid)
                pending.events.append((flat.uuid, "changed"))
            else:
                self.counts.unchanged += 1
                continue
            pending.opened.append(flat)
            pending.uuids.add(flat.uuid)
            self.known[flat.uuid] = (flat.content_hash, False, flat.raw_hash)
        if self.dry_run:
            self._pending = _Pending()
            return
        self._note_agreements(flats)
        if len(pending.opened) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Writes the models :meth:`save_models` has decided on and not yet written."""
        pending, self._pending = self._pending, _Pending()
        upsert(self.conn, schema.agreements, pending.placeholders, _AGREEMENT_FIRST_SEEN)
        if not pending.opened:
            return
        new, write, changed = pending.new, pending.write, pending.changed
        previous = self._fetch_previous(changed)
        self._save_model_rows(new, first_seen=True)
        self._save_model_rows(write, first_seen=False)
        stale = list(changed)
        if self.rewound:  # a "new" model may still hold rows from the run that first saw it later
            stale += [flat.uuid for flat in new]
        self._replace_children(new + write, stale)
        self._save_versions(new + write)
        if pending.revived:
            self._set_removed_at(pending.revived, None)
        self._close_history(schema.model_history, schema.model_history.c.model_uuid, changed)
        self._open_model_history(pending.opened)
        current = {flat.uuid: flat.model["raw"] for flat in pending.opened}
        self._save_changes(
            [
                (
                    uuid,
                    kind,
                    changed_fields(previous[uuid], current[uuid]) if uuid in previous else None,
                )
                for uuid, kind in pending.events
            ]
        )

    def _fetch_previous(self, uuids: Sequence[str]) -> dict[str, Any]:
        """The last recorded content of each model, from its newest history row.

        That is its open row, when it has one (a present model); only a model without one (a
        restored model) has all its rows read, oldest first, so that the newest one wins:
        reading one row, not the whole history, for each changed model.
        """
        history = schema.model_history
        raw: dict[str, Any] = {}
        for part in chunks(uuids):
            query = sa.select(history.c.model_uuid, history.c.raw).where(
                history.c.model_uuid.in_(part), history.c.valid_to.is_(None)
            )
            raw.update((uuid, value) for uuid, value in self.conn.execute(query))
        closed = [uuid for uuid in uuids if uuid not in raw]
        for part in chunks(closed):
            query = (
                sa.select(history.c.model_uuid, history.c.raw)
                .where(history.c.model_uuid.in_(part))
                .order_by(history.c.valid_from, history.c.history_id)
            )
            raw.update((uuid, value) for uuid, value in self.conn.execute(query))
        return raw

    def _close_history(self, table: sa.Table, key: sa.Column[Any], uuids: Sequence[str]) -> None:
        values: dict[str, Any] = {"valid_to": self.observed_at, "closed_by_run": self.run_id}
        if "span_class" in table.c:
            end = sa.literal(self.observed_at, schema.UTCDateTime)
            values["span_class"] = schema.span_class_of(table.c.valid_from, end)
        for part in chunks(uuids):
            self.conn.execute(
                sa.update(table).where(key.in_(part), table.c.valid_to.is_(None)).values(values)
            )

    def _open_model_history(self, flats: Sequence[FlatModel]) -> None:
        rows = [
            {
                **{name: flat.model[name] for name in _HISTORY_FROM_MODEL},
                "raw": schema.SerializedJSON(flat.raw_json),
                "content_hash": flat.content_hash,
                "raw_hash": flat.raw_hash,
                "model_uuid": flat.uuid,
                "valid_from": self.observed_at,
                "valid_to": None,
                "opened_by_run": self.run_id,
                "closed_by_run": None,
            }
            for flat in flats
        ]
        if rows:
            self.conn.execute(schema.model_history.insert(), rows)

    def _save_changes(self, events: Sequence[tuple[str, str, dict[str, Any] | None]]) -> None:
        rows = [
            {
                "run_id": self.run_id,
                "observed_at": self.observed_at,
                "model_uuid": uuid,
                "kind": kind,
                "changes": changes or None,
            }
            for uuid, kind, changes in events
        ]
        if rows:
            self.conn.execute(schema.model_changes.insert(), rows)
        fields = {
            (uuid, path.replace("\x00", "\\u0000")[:MAX_SHORT]): values
            for uuid, _, changes in events
            for path, values in (changes or {}).items()
        }
        if fields:
            self.conn.execute(
                schema.model_change_fields.insert(),
                [
                    {
                        "run_id": self.run_id,
                        "model_uuid": uuid,
                        "path": path,
                        "old_value": _json_text(values["old"]),
                        "new_value": _json_text(values["new"]),
                    }
                    for (uuid, path), values in fields.items()
                ],
            )

    def _note_agreements(self, flats: Sequence[FlatModel]) -> None:
        """Notes each agreement's content, and queues a row for a new one for models to
        reference; what changed is decided once per run, in :meth:`end_run`."""
        for flat in flats:
            agreement = flat.agreement
            if agreement is None:
                continue
            uuid = agreement["uuid"]
            values = tuple(agreement[f] for f in _AGREEMENT_FIELDS)
            chosen = self.agreements_seen.get(uuid)
            if chosen is None or _agreement_order(values) > _agreement_order(chosen):
                self.agreements_seen[uuid] = values
            if uuid not in self.agreements and uuid not in self.agreements_placed:
                self.agreements_placed.add(uuid)
                self._pending.placeholders.append({**agreement, "first_seen_at": self.observed_at})

    def end_run(self) -> None:
        """Records the run's agreements: their rows and history, where their content changed.

        When models within one run disagree about an agreement, the run keeps the greatest
        content (compared as name, description, url), so the outcome does not depend on the
        order in which models arrived.
        """
        self.flush()
        seen, self.agreements_seen = self.agreements_seen, {}
        self.agreements_placed = set()
        rows: dict[str, dict[str, Any]] = {}
        new: list[str] = []
        changed: list[str] = []
        for uuid, values in seen.items():
            known = self.agreements.get(uuid)
            if known == values:
                continue
            (new if known is None else changed).append(uuid)
            self.agreements[uuid] = values
            rows[uuid] = {"uuid": uuid, **dict(zip(_AGREEMENT_FIELDS, values, strict=True))}
        if not rows or self.dry_run:
            return
        stamp = {"first_seen_at": self.observed_at}
        upsert(
            self.conn, schema.agreements, [{**rows[u], **stamp} for u in new], _AGREEMENT_FIRST_SEEN
        )
        upsert(
            self.conn, schema.agreements, [{**rows[u], **stamp} for u in changed], _AGREEMENT_FIELDS
        )
        history = schema.agreement_history
        self._close_history(history, history.c.agreement_uuid, changed)
        self.conn.execute(
            history.insert(),
            [
                {
                    "agreement_uuid": uuid,
                    **{f: row[f] for f in _AGREEMENT_FIELDS},
                    "valid_from": self.observed_at,
                    "valid_to": None,
                    "opened_by_run": self.run_id,
                    "closed_by_run": None,
                }
                for uuid, row in rows.items()
            ],
        )

    def _save_model_rows(self, flats: Sequence[FlatModel], first_seen: bool) -> None:
        """Upserts model rows; ``first_seen`` also resets first_seen_at (a model new to us)."""
        rows = [
            {
                **flat.model,
                "raw": schema.SerializedJSON(flat.raw_json),
                "content_hash": flat.content_hash,
                "raw_hash": flat.raw_hash,
                "first_seen_at": self.observed_at,
                "removed_at": None,
            }
            for flat in flats
        ]
        update = [*_MODEL_UPDATE, "first_seen_at"] if first_seen else _MODEL_UPDATE
        upsert(self.conn, schema.models, rows, update)

    def _replace_children(self, flats: Sequence[FlatModel], changed: Sequence[str]) -> None:
        for table in schema.CHILD_TABLES:
            for part in chunks(changed):
                self.conn.execute(sa.delete(table).where(table.c.model_uuid.in_(part)))
            rows = [row for flat in flats for row in flat.children[table.name]]
            if rows:
                self.conn.execute(table.insert(), rows)

    def _save_versions(self, flats: Sequence[FlatModel]) -> None:
        rows = [
            {
                "model_uuid": flat.uuid,
                "major": flat.version[0],
                "minor": flat.version[1],
                "patch": flat.version[2],
                "first_seen_at": self.observed_at,
                "first_seen_run": self.run_id,
            }
            for flat in flats
        ]
        upsert(self.conn, schema.model_versions, rows)

    def _set_removed_at(self, uuids: Sequence[str], when: datetime | None) -> None:
        models = schema.models
        for part in chunks(uuids):
            self.conn.execute(
                sa.update(models).where(models.c.uuid.in_(part)).values(removed_at=when)
            )

    def missing(self, seen: set[str]) -> list[str]:
        """Present models that ``seen`` lacks: what :meth:`mark_removed` would remove."""
        return sorted(u for u, known in self.known.items() if not known[1] and u not in seen)

    def mark_removed(self, seen: set[str]) -> None:
        """Sets ``removed_at`` on every present model that a complete listing did not contain."""
        self.flush()
        gone = self.missing(seen)
        self.counts.removed += len(gone)
        for uuid in gone:
            self.known[uuid] = (self.known[uuid][0], True, self.known[uuid][2])
        if gone and not self.dry_run:
            self._set_removed_at(gone, self.observed_at)
            self._close_history(schema.model_history, schema.model_history.c.model_uuid, gone)
            self._save_changes([(uuid, "removed", None) for uuid in gone])


def _agreement_order(values: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(value or "" for value in values)


def _json_text(value: Any) -> str | None:
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
"""Statements built once: a backfill records thousands of runs, and building a statement
costs more than running it."""


def finish_run(conn: Connection, run_id: int, **values: Any) -> None:
    """Records a run's outcome: its status, finish time, counts and error."""
    conn.execute(_UPDATE_RUN, {**values, "run_id": run_id})


@dataclass
class Replay:
    """A recorded run to apply again after a rewind: the models it saw, as history holds them.

    Attributes:
        run_id: The run.
        observed_at: Its observation time.
        members: (model uuid, history_id of the content it saw).
        marks_removals: Whether it was a complete, unfiltered listing.
    """

    run_id: int
    observed_at: datetime
    members: list[tuple[str, int]]
    marks_removals: bool


def loaded_run(conn: Connection, when: datetime, digest: str) -> int | None:
    """The succeeded run that saw the snapshot of this digest at this time, if any."""
    found = conn.execute(_LOADED_RUN, {"when": when, "digest": digest}).first()
    return None if found is None else int(found.id)


def later_runs(conn: Connection, when: datetime) -> list[Any]:
    """Succeeded runs observed after ``when``, oldest first."""
    return list(conn.execute(_LATER_RUNS, {"when": when}))


_runs = schema.sync_runs
_LATER_RUNS = (
    sa.select(_runs.c.id, _runs.c.observed_at, _runs.c.complete, _runs.c.filters)
    .where(_runs.c.status == "succeeded", _runs.c.observed_at > sa.bindparam("when"))
    .order_by(_runs.c.observed_at, _runs.c.id)
)
_LOADED_RUN = sa.select(_runs.c.id).where(
    _runs.c.status == "succeeded",
    _runs.c.observed_at == sa.bindparam("when"),
    _runs.c.snapshot_hash == sa.bindparam("digest"),
)


def plan_replays(
    conn: Connection, runs: Sequence[Any], when: datetime
) -> tuple[list[Replay], dict[int, Any]]:
    """Reconstructs, from history, what each later run saw, before :func:`rewind` erases it.

    A complete run saw exactly the models history holds at its time; a filtered or partial run
    is known only by the contents it opened. Once a complete run is replayed the timeline is back
    on its recorded course, so later runs that changed nothing need no replay.

    Returns:
        The replays in time order, and the raw content and bytes digest of every history row
        they name.
    """
    history, changes = schema.model_history, schema.model_changes
    ids = [run.id for run in runs]
    changed_runs: set[int] = set()
    for part in chunks(ids):
        query = sa.select(changes.c.run_id).where(changes.c.run_id.in_(part)).distinct()
        changed_runs.update(conn.execute(query).scalars())
    alive = sa.or_(history.c.valid_to.is_(None), history.c.valid_to > when)
    rows = list(
        conn.execute(
            sa.select(
                history.c.history_id,
                history.c.model_uuid,
                history.c.valid_from,
                history.c.valid_to,
                history.c.opened_by_run,
                history.c.raw,
                history.c.raw_hash,
            ).where(alive)
        )
    )
    contents = {row.history_id: (row.raw, row.raw_hash) for row in rows}
    replays: list[Replay] = []
    back_on_course = False
    for run in runs:
        if back_on_course and run.id not in changed_runs:
            continue
        marks = bool(run.complete) and not run.filters
        t = run.observed_at
        if marks:
            members = [
                (row.model_uuid, row.history_id)
                for row in rows
                if row.valid_from <= t and (row.valid_to is None or row.valid_to > t)
            ]
        else:
            members = [
                (row.model_uuid, row.history_id) for row in rows if row.opened_by_run == run.id
            ]
        replays.append(Replay(run.id, t, members, marks))
        back_on_course = back_on_course or marks
    return replays, contents


def rewind(conn: Connection, when: datetime, run_ids: Sequence[int]) -> None:
    """Erases what runs after ``when`` recorded, leaving history as it stood at ``when``.

    The catalog tables themselves are left alone: the writer that follows starts from history
    (``CatalogWriter(as_of=when)``) and rewrites every row the replayed runs touch.
    """
    for table in (schema.model_change_fields, schema.model_changes):
        for part in chunks(run_ids):
            conn.execute(sa.delete(table).where(table.c.run_id.in_(part)))
    for table in (schema.model_history, schema.agreement_history):
        conn.execute(sa.delete(table).where(table.c.valid_from > when))
        reopened: dict[str, Any] = {"valid_to": None, "closed_by_run": None}
        if "span_class" in table.c:
            reopened["span_class"] = None
        conn.execute(sa.update(table).where(table.c.valid_to > when).values(reopened))
    versions = schema.model_versions
    conn.execute(sa.delete(versions).where(versions.c.first_seen_at > when))


def save_usecase_members(
    conn: Connection, usecase: str, members: set[str], observed_at: datetime, complete: bool
) -> tuple[int, int]:
    """Records which models one usecase listing held: opens new memberships and, when the
    listing was complete, ends those it no longer holds.

    Returns:
        (memberships opened, memberships ended).
    """
    table = schema.model_usecases
    open_now = set(
        conn.execute(
            sa.select(table.c.model_uuid).where(
                table.c.usecase == usecase, table.c.removed_at.is_(None)
            )
        ).scalars()
    )
    joined = sorted(members - open_now)
    if joined:
        conn.execute(
            table.insert(),
            [
                {"model_uuid": uuid, "usecase": usecase, "first_seen_at": observed_at}
                for uuid in joined
            ],
        )
    left = sorted(open_now - members) if complete else []
    for part in chunks(left):
        conn.execute(
            sa.update(table)
            .where(
                table.c.usecase == usecase,
                table.c.model_uuid.in_(part),
                table.c.removed_at.is_(None),
            )
            .values(removed_at=observed_at)
        )
    return len(joined), len(left)
