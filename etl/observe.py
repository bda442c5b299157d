"""What each run observed, stored compactly: the source of truth the history is derived from.

A model's content is stored once in ``observed_contents``, keyed by the digest of its JSON as
received; a run's catalog is a row of ``snapshots`` (its members' content ids), shared by every
run that saw the same catalog. :class:`Contents` reads contents back for :mod:`etl.project`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from etl import schema
from etl.pages import raw_hash
from etl.project import AgreementValues, Content, Run
from etl.transform import BadModel, FlatModel, flatten, snapshot_digest

log = logging.getLogger("etl.observe")

BATCH = 500
"""Rows per ``IN (...)`` list; stays under every dialect's parameter limit."""
MAX_LOGGED_WARNINGS = 20


def chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    """Yields successive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Warnings:
    """Counts bad-data warnings, logging the first few in full and schema drift once per field."""

    def __init__(self) -> None:
        self.count = 0
        self.drift: set[str] = set()

    def model(self, uuid: str | None, message: str) -> None:
        self.count += 1
        if self.count <= MAX_LOGGED_WARNINGS:
            log.warning("model %s: %s", uuid or "?", message)
        elif self.count == MAX_LOGGED_WARNINGS + 1:
            log.warning("more model warnings in this run; only their count is recorded")

    def unknown_fields(self, fields: frozenset[str]) -> None:
        for name in sorted(fields - self.drift):
            self.drift.add(name)
            log.warning("schema drift: field %r is not in the spec; kept in raw", name)


@dataclass(frozen=True)
class Received:
    """A snapshot as received, before storing: each identifiable model once (the last copy
    wins), with the digest of its JSON, and the models that had no usable uuid."""

    models: dict[str, tuple[Any, str]]
    unidentified: list[Any]
    also_present: frozenset[str] = frozenset()

    @functools.cached_property
    def digest(self) -> str:
        """Identifies the snapshot: equal for the same models sent the same way."""
        pairs = [(uuid, key) for uuid, (_, key) in self.models.items()]
        pairs += [(uuid, "present") for uuid in self.also_present]
        return snapshot_digest(pairs)


def receive(
    models: Sequence[Any],
    hashes: Sequence[str | None] | None,
    also_present: frozenset[str] = frozenset(),
) -> Received:
    """Keys each model of a snapshot by its uuid and the digest of its JSON.

    Args:
        models: The snapshot's models, as sent.
        hashes: The digest of each one's bytes as received, when known.
        also_present: Models a confirming listing saw that ``models`` lacks.
    """
    found: dict[str, tuple[Any, str]] = {}
    unidentified: list[Any] = []
    for index, model in enumerate(models):
        uuid = model.get("uuid") if isinstance(model, dict) else None
        if not isinstance(uuid, str) or not uuid:
            unidentified.append(model)
            continue
        digest = hashes[index] if hashes is not None else None
        found.pop(uuid, None)  # a model sent twice: its last copy, in the order sent
        found[uuid] = (model, digest or raw_hash(json.dumps(model, separators=(",", ":"))))
    return Received(found, unidentified, frozenset(also_present - found.keys()))


class NothingStorable(ValueError):
    """A snapshot none of whose models can be stored; raised before anything is written."""


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot as stored: its row, how many models it holds and how many could not be
    stored (no usable uuid, nested too deep), how many contents were new, and its members
    as :func:`snapshot_members` gives them when this call stored it (None: read them back)."""

    snapshot_id: int
    models: int
    unstorable: int
    new_contents: int
    members: tuple[dict[str, int], frozenset[str]] | None = None


def save_snapshot(
    conn: Connection,
    received: Received,
    warnings: Warnings,
    contents: Contents | None = None,
) -> StoredSnapshot:
    """Stores a snapshot's new contents and its member list, unless stored already; the new
    contents' flattened forms go to ``contents``, which would otherwise flatten them again."""
    digest = received.digest
    table = schema.snapshots
    found = conn.execute(
        sa.select(table.c.snapshot_id, table.c.models, table.c.unstorable).where(
            table.c.digest == digest
        )
    ).first()
    if found is not None:
        return StoredSnapshot(found.snapshot_id, found.models, found.unstorable, 0)
    keys = [key for _, key in received.models.values()]
    ids = _content_ids(conn, keys, contents)
    rows: list[dict[str, Any]] = []
    flats: dict[str, FlatModel] = {}
    unstorable = len(received.unidentified)
    for uuid, (model, key) in received.models.items():
        if key in ids:
            continue
        try:
            flat = flatten(model)
        except BadModel as exc:
            warnings.model(uuid, f"cannot be stored: {exc}")
            unstorable += 1
            continue
        for message in flat.warnings:
            warnings.model(flat.uuid, message)
        rows.append(_content_row(flat, key))
        flats[key] = flat
    if received.models and not ids and not rows:
        raise NothingStorable(f"none of its {len(received.models)} models can be stored")
    _insert_contents(conn, rows, ids)
    if contents is not None:
        for row in rows:
            contents.remember(ids[row["raw_hash"]], flats[row["raw_hash"]], row)
    by_uuid = {uuid: ids[key] for uuid, (_, key) in received.models.items() if key in ids}
    members: list[int | str] = sorted(by_uuid.values())
    count = len(members)
    members += sorted(received.also_present)
    result = conn.execute(
        table.insert().values(
            digest=digest,
            models=count,
            unstorable=unstorable,
            members=json.dumps(members, separators=(",", ":")),
        )
    )
    snapshot_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert snapshot_id is not None
    return StoredSnapshot(
        int(snapshot_id), count, unstorable, len(rows), (by_uuid, received.also_present)
    )


def returns_inserted_rows(conn: Connection) -> bool:
    """Whether the database returns the rows of a many-row INSERT (MySQL does not)."""
    return bool(conn.dialect.insert_executemany_returning)


def _insert_contents(conn: Connection, rows: list[dict[str, Any]], ids: dict[str, int]) -> None:
    """Inserts new contents, adding each one's id to ``ids``: from the insert itself where the
    database returns rows of a many-row insert (SQLite, PostgreSQL, MariaDB 10.5+), else read
    back. (On PostgreSQL, reading rows this transaction just inserted into a table it has
    never analysed scans them all: 3 s of a 10,000-model first sync.)"""
    table = schema.observed_contents
    returning = returns_inserted_rows(conn)
    for part in chunks(rows):
        if returning:
            query = table.insert().returning(table.c.raw_hash, table.c.content_id)
            ids.update((key, content_id) for key, content_id in conn.execute(query, list(part)))
        else:
            conn.execute(table.insert(), list(part))
    if rows and not returning:
        ids.update(_content_ids(conn, [row["raw_hash"] for row in rows]))


def _content_row(flat: FlatModel, key: str) -> dict[str, Any]:
    agreement = flat.agreement
    return {
        "raw_hash": key,
        "model_uuid": flat.uuid,
        "content_hash": flat.content_hash,
        "version_major": flat.version[0],
        "version_minor": flat.version[1],
        "version_patch": flat.version[2],
        "agreement": None
        if agreement is None
        else json.dumps([agreement[k] for k in ("uuid", "name", "description", "url")]),
        "raw": schema.SerializedJSON(flat.raw_json),
    }


def _content_ids(
    conn: Connection, keys: Sequence[str], contents: Contents | None = None
) -> dict[str, int]:
    """The content id of each key stored (those ``contents`` has read are not asked for)."""
    table = schema.observed_contents
    found: dict[str, int] = {}
    if contents is not None:
        found = contents.known_ids(keys)
        keys = [key for key in keys if key not in found]
    for part in chunks(keys):
        query = sa.select(table.c.raw_hash, table.c.content_id).where(table.c.raw_hash.in_(part))
        found.update((key, content_id) for key, content_id in conn.execute(query))
    return found


def save_usecases(
    conn: Connection, run_id: int, usecases: dict[str, tuple[frozenset[str], bool]]
) -> None:
    """Stores what a run's usecase listings held."""
    rows = [
        {
            "run_id": run_id,
            "usecase": usecase,
            "complete": complete,
            "members": json.dumps(sorted(members)),
        }
        for usecase, (members, complete) in sorted(usecases.items())
    ]
    if rows:
        conn.execute(schema.run_usecases.insert(), rows)


class Contents:
    """Stored contents by id, read from the database as the fold asks for them and kept.

    Reading a content costs its light columns; its ``raw`` JSON is read only for the models
    whose fields are compared or whose rows are written.
    """

    light_columns = tuple(
        schema.observed_contents.c[name]
        for name in ("content_id", "raw_hash", "model_uuid", "content_hash", "version_major",
                     "version_minor", "version_patch", "agreement")
    )  # fmt: skip
    """The columns :meth:`keep` reads a content from, in its order: all but ``raw``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._light: dict[int, Content] = {}
        self._ids: dict[str, int] = {}
        self._raw: dict[int, Any] = {}
        self._flat: dict[int, FlatModel] = {}
        self._asked_agreements = False

    def __getitem__(self, content_id: int) -> Content:
        found = self._light.get(content_id)
        if found is None:
            self.prefetch([content_id])
            found = self._light[content_id]
        return found

    def prefetch(self, ids: Sequence[int]) -> None:
        """Reads the light columns of every content in ``ids`` not read yet."""
        missing = sorted({i for i in ids if i not in self._light})
        for among in self._among(missing):
            query = sa.select(*self.light_columns).where(among)
            for row in self.conn.execute(query):
                self.keep(row)

    def _among(self, ids: Sequence[int]) -> Iterator[sa.ColumnElement[bool]]:
        """Conditions that together select the contents ``ids``: ``IN`` lists of
        :data:`BATCH`, or on PostgreSQL one ``= ANY`` of an array (one parameter, where 500
        cost it about 10 ms a query: 0.2 s for the members of a 10,000-model catalog)."""
        column = schema.observed_contents.c.content_id
        if self.conn.dialect.name != "postgresql":
            yield from (column.in_(part) for part in chunks(ids))
        elif ids:
            yield column == sa.any_(sa.bindparam("ids", list(ids), postgresql.ARRAY(column.type)))

    def keep(self, row: Sequence[Any]) -> Content:
        """Keeps a content read as :attr:`light_columns`, in their order."""
        found = self._light.get(row[0])
        if found is None:
            found = self._light[row[0]] = _content(row)
            self._ids[found.raw_hash] = found.content_id
        return found

    def know(self, key: str, content_id: int) -> None:
        """Notes the id of the content stored under ``key`` (its ``raw_hash``), read
        without the rest of it."""
        self._ids[key] = content_id

    def known_ids(self, keys: Sequence[str]) -> dict[str, int]:
        """The content id of each of ``keys`` among the contents read so far."""
        ids = self._ids
        return {key: ids[key] for key in keys if key in ids}

    def raw(self, content_id: int) -> Any:
        """The model as received, for this content."""
        if content_id not in self._raw:
            self.prefetch_raw([content_id])
        return self._raw[content_id]

    def prefetch_raw(self, ids: Sequence[int]) -> None:
        """Reads the ``raw`` JSON of every content in ``ids`` not read yet."""
        table = schema.observed_contents
        missing = sorted({i for i in ids if i not in self._raw})
        for among in self._among(missing):
            query = sa.select(table.c.content_id, table.c.raw).where(among)
            self._raw.update((content_id, raw) for content_id, raw in self.conn.execute(query))

    def flat(self, content_id: int) -> FlatModel:
        """The content flattened into rows (computed once)."""
        found = self._flat.get(content_id)
        if found is None:
            found = self._flat[content_id] = flatten(self.raw(content_id))
        return found

    def agreements(self, ids: Iterable[int]) -> set[tuple[str, AgreementValues] | None]:
        """The distinct agreements the contents ``ids`` carry (None for a content that
        carries none): ``{self[i].agreement for i in ids}``, without reading every content.

        The first call asks for the ``agreement`` column alone of the contents not read yet,
        one ``DISTINCT`` query per batch: a sync folds one run. A later call (a backfill folds
        run after run, mostly over the same contents) reads those contents whole instead, so
        that no run after it asks for them again."""
        light = self._light
        ids = list(ids)
        missing = sorted({i for i in ids if i not in light})
        if missing and self._asked_agreements:
            self.prefetch(missing)
            missing = []
        self._asked_agreements = True
        found = {light[i].agreement for i in ids if i in light}
        table = schema.observed_contents
        for among in self._among(missing):
            query = sa.select(table.c.agreement).where(among).distinct()
            found.update(
                None if text is None else _agreement(text)
                for text in self.conn.execute(query).scalars()
            )
        return found

    def remember(self, content_id: int, flat: FlatModel, row: dict[str, Any]) -> None:
        """Keeps a content made while storing it: its light columns, taken from the ``row``
        inserted (as :meth:`keep` would read them back), and its flattened form."""
        self.keep((content_id, *(row[column.name] for column in self.light_columns[1:])))
        self._flat[content_id] = flat
        self._raw[content_id] = flat.model["raw"]

    def forget_flat(self) -> None:
        """Drops the flattened forms kept so far (they are large)."""
        self._flat.clear()


def _content(row: Sequence[Any]) -> Content:
    content_id, raw_hash, uuid, content_hash, major, minor, patch, agreement = row
    return Content(
        content_id, uuid, content_hash, raw_hash, (major, minor, patch),
        None if agreement is None else _agreement(agreement),
    )  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _agreement(text: str) -> tuple[str, AgreementValues]:
    """An ``agreement`` column's (uuid, (name, description, url)): a catalog's models share a
    few agreements, so the same text comes back thousands of times a run."""
    uuid, name, description, url = json.loads(text)
    return uuid, (name, description, url)


_runs = schema.sync_runs


def observed_runs(
    conn: Connection, contents: Contents, after: tuple[datetime, int] | None = None
) -> Iterator[Run]:
    """The runs whose observations count (succeeded, with a snapshot), in (observed_at, id)
    order; only those after ``after`` when given."""
    query = (
        sa.select(
            _runs.c.id,
            _runs.c.observed_at,
            _runs.c.complete,
            _runs.c.filters,
            _runs.c.snapshot_id,
            _runs.c.models_seen,
        )
        .where(_runs.c.status == "succeeded", _runs.c.snapshot_id.is_not(None))
        .order_by(_runs.c.observed_at, _runs.c.id)
    )
    if after is not None:
        when, run_id = after
        query = query.where(
            sa.or_(
                _runs.c.observed_at > when,
                sa.and_(_runs.c.observed_at == when, _runs.c.id > run_id),
            )
        )
    runs = conn.execute(query).fetchall()
    usecases = _usecases(conn, [run.id for run in runs])
    members: dict[int, tuple[dict[str, int], frozenset[str]]] = {}
    for run in runs:
        if run.snapshot_id not in members:
            members[run.snapshot_id] = snapshot_members(conn, contents, run.snapshot_id)
        yield observed_run(run, members[run.snapshot_id], usecases.get(run.id, {}))


def observed_run(
    run: Any,
    members: tuple[dict[str, int], frozenset[str]],
    usecases: dict[str, tuple[frozenset[str], bool]],
) -> Run:
    """The observation of a ``sync_runs`` row (id, observed_at, complete, filters,
    snapshot_id, models_seen) with its snapshot's members."""
    return Run(
        run_id=run.id,
        observed_at=run.observed_at,
        members=members[0],
        marks_removals=bool(run.complete) and not run.filters,
        usecases=usecases,
        snapshot_id=run.snapshot_id,
        seen=run.models_seen,
        also_present=members[1],
    )


def snapshot_members(
    conn: Connection, contents: Contents, snapshot_id: int
) -> tuple[dict[str, int], frozenset[str]]:
    """A snapshot's members (content id by model uuid), and the models it holds present
    without their content."""
    table = schema.snapshots
    text = conn.execute(
        sa.select(table.c.members).where(table.c.snapshot_id == snapshot_id)
    ).scalar_one()
    items = json.loads(text)
    ids = [item for item in items if isinstance(item, int)]
    contents.prefetch(ids)
    present = frozenset(item for item in items if isinstance(item, str))
    return {contents[i].uuid: i for i in ids}, present


def _usecases(
    conn: Connection, run_ids: Sequence[int]
) -> dict[int, dict[str, tuple[frozenset[str], bool]]]:
    table = schema.run_usecases
    found: dict[int, dict[str, tuple[frozenset[str], bool]]] = {}
    if not conn.execute(sa.select(sa.func.count()).select_from(table)).scalar():
        return found
    for part in chunks(run_ids):
        for row in conn.execute(sa.select(table).where(table.c.run_id.in_(part))):
            found.setdefault(row.run_id, {})[row.usecase] = (
                frozenset(json.loads(row.members)),
                bool(row.complete),
            )
    return found
