"""The physical limits a run is compared with, each measured in a process of its own.

* ``fetch``: a ``requests`` loop that fetches every page and parses its JSON, nothing else.
* ``write``: one transaction of Core executemany inserts of the already-flattened rows of a
  catalog (``etl.transform.flatten``) into a freshly migrated database: agreements, models, the
  child tables, model_history, model_changes, model_versions (and the run's sync_runs row). Then,
  on the same database, one transaction writing only what the 5% change needs: the changed
  models' rows updated, their child rows replaced, their history closed and opened, their change
  events and fields.
* ``read``: reading every archived snapshot (gunzip, parse each JSON line), nothing else.

Run as ``python -m bench.limits fetch|write|read ...``; prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

FETCH_PATH = "/v2/gen-ai/models"


def fetch_all(api_url: str, token: str, per_page: int) -> dict[str, Any]:
    """Fetches every page of the listing and parses it; returns the time, requests and bytes."""
    start = time.perf_counter()
    requests_made = 0
    size = 0
    models = 0
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        page = 1
        while True:
            response = session.get(
                api_url + FETCH_PATH, params={"page": page, "per_page": per_page}, timeout=60
            )
            response.raise_for_status()
            requests_made += 1
            size += len(response.content)
            data = json.loads(response.content)
            models += len(data["models"])
            if not data["models"] or page >= data["meta"]["pages"]:
                break
            page += 1
    return {
        "seconds": time.perf_counter() - start,
        "requests": requests_made,
        "bytes": size,
        "models": models,
    }


def read_all(directory: Path) -> dict[str, Any]:
    """Reads and parses every snapshot file under ``directory``."""
    start = time.perf_counter()
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    size = 0
    for path in files:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        size += len(data)
        for line in data.splitlines():
            if line.strip():
                json.loads(line)
    return {"seconds": time.perf_counter() - start, "files": len(files), "bytes": size}


# -- writing --------------------------------------------------------------------------------------


def _load_flats(path: Path) -> list[Any]:
    from etl.transform import flatten

    with path.open(encoding="utf-8") as handle:
        return [flatten(model) for model in json.load(handle)]


def _only_columns(table: Any, row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key in table.c}


def _run_row(now: datetime) -> dict[str, Any]:
    return {
        "started_at": now, "observed_at": now, "status": "succeeded", "mode": "sync",
        "complete": True, "requests": 0, "retries": 0, "pages": 0, "models_seen": 0,
        "inserted": 0, "updated": 0, "unchanged": 0, "removed": 0, "restored": 0, "warnings": 0,
    }  # fmt: skip


def _history_row(flat: Any, now: datetime, run_id: int) -> dict[str, Any]:
    from etl import schema

    row = {name: flat.model[name] for name in schema.CONTENT_COLUMNS if name in flat.model}
    row.update(
        content_hash=flat.content_hash,
        model_uuid=flat.uuid,
        valid_from=now,
        valid_to=None,
        opened_by_run=run_id,
        closed_by_run=None,
    )
    return _only_columns(schema.model_history, row)


def write_all(url: str, flats: list[Any]) -> dict[str, Any]:
    """Migrates the empty database at ``url`` (untimed), then times one transaction inserting
    every flattened row of the catalog."""
    import sqlalchemy as sa

    from etl import db, schema

    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
        now = datetime.now(UTC)
        run_id = 1
        agreements = {f.agreement["uuid"]: f.agreement for f in flats if f.agreement}
        tables: list[tuple[sa.Table, list[dict[str, Any]]]] = [
            (schema.sync_runs, [{"id": run_id, **_run_row(now)}]),
            (schema.agreements, [{**a, "first_seen_at": now} for a in agreements.values()]),
            (
                schema.models,
                [
                    _only_columns(
                        schema.models,
                        {
                            **f.model,
                            "content_hash": f.content_hash,
                            "first_seen_at": now,
                            "removed_at": None,
                        },
                    )
                    for f in flats
                ],
            ),
            *[
                (table, [row for f in flats for row in f.children[table.name]])
                for table in schema.CHILD_TABLES
            ],
            (schema.model_history, [_history_row(f, now, run_id) for f in flats]),
            (
                schema.model_changes,
                [
                    {
                        "run_id": run_id,
                        "observed_at": now,
                        "model_uuid": f.uuid,
                        "kind": "added",
                        "changes": None,
                    }
                    for f in flats
                ],
            ),
            (
                schema.model_versions,
                [
                    {
                        "model_uuid": f.uuid,
                        "major": f.version[0],
                        "minor": f.version[1],
                        "patch": f.version[2],
                        "first_seen_at": now,
                        "first_seen_run": run_id,
                    }
                    for f in flats
                ],
            ),
        ]
        start = time.perf_counter()
        with engine.begin() as conn:
            for table, rows in tables:
                if rows:
                    conn.execute(table.insert(), rows)
        seconds = time.perf_counter() - start
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('sync_runs', 'id'), 1)")
    finally:
        engine.dispose()
    return {"seconds": seconds, "rows": {t.name: len(rows) for t, rows in tables if rows}}


def write_changed(url: str, before: list[Any], after: list[Any]) -> dict[str, Any]:
    """On the database :func:`write_all` filled, times one transaction writing only what the
    change from ``before`` to ``after`` needs.

    History rows are closed by primary key: which row is open for a model is what a sync knows
    from reading its state, so looking it up is not part of the writing.
    """
    import sqlalchemy as sa

    from etl import db, schema
    from etl.load import chunks
    from etl.transform import canonical_json, changed_fields

    old = {f.uuid: f for f in before}
    changed = [f for f in after if f.uuid in old and old[f.uuid].content_hash != f.content_hash]
    uuids = [f.uuid for f in changed]
    now = datetime.now(UTC)
    run_id = 2
    fields = {f.uuid: changed_fields(old[f.uuid].model["raw"], f.model["raw"]) for f in changed}
    models = schema.models
    columns = [c for c in schema.CONTENT_COLUMNS if c in models.c]
    model_rows = [
        {
            "b_uuid": f.uuid,
            **{c: f.model.get(c) for c in columns},
            "content_hash": f.content_hash,
        }
        for f in changed
    ]
    history = schema.model_history
    # A child table's rows are replaced only for the models whose rows in it differ (a rename
    # leaves them all; the 5% change reprices, so only model_pricing): the least to write.
    replaced: dict[sa.Table, list[Any]] = {table: [] for table in schema.CHILD_TABLES}
    for f in changed:
        for table in schema.CHILD_TABLES:
            if f.children[table.name] != old[f.uuid].children[table.name]:
                replaced[table].append(f)
    children = {
        table: [row for f in replaced[table] for row in f.children[table.name]]
        for table in schema.CHILD_TABLES
    }
    change_rows = [
        {
            "run_id": run_id,
            "observed_at": now,
            "model_uuid": f.uuid,
            "kind": "changed",
            "changes": fields[f.uuid],
        }
        for f in changed
    ]
    field_rows = [
        {
            "run_id": run_id,
            "model_uuid": uuid,
            "path": path[:255],
            "old_value": _text(values["old"], canonical_json),
            "new_value": _text(values["new"], canonical_json),
        }
        for uuid, paths in fields.items()
        for path, values in paths.items()
    ]
    rows: dict[str, int] = {}
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:  # what a sync knows from its state read: untimed
            open_rows = {
                uuid: history_id
                for uuid, history_id in conn.execute(
                    sa.select(history.c.model_uuid, history.c.history_id).where(
                        history.c.valid_to.is_(None)
                    )
                )
            }
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(schema.sync_runs.insert(), [{"id": run_id, **_run_row(now)}])
            if changed:
                conn.execute(
                    sa.update(models)
                    .where(models.c.uuid == sa.bindparam("b_uuid"))
                    .values({c: sa.bindparam(c) for c in columns}),
                    model_rows,
                )
                rows["models"] = len(model_rows)
                for table, child_rows in children.items():
                    for part in chunks([f.uuid for f in replaced[table]]):
                        conn.execute(sa.delete(table).where(table.c.model_uuid.in_(part)))
                    if child_rows:
                        conn.execute(table.insert(), child_rows)
                        rows[table.name] = len(child_rows)
                conn.execute(
                    sa.update(history)
                    .where(history.c.history_id == sa.bindparam("b_id"))
                    .values(
                        valid_to=now,
                        closed_by_run=run_id,
                        span_class=schema.span_class_of(
                            history.c.valid_from, sa.literal(now, schema.UTCDateTime)
                        ),
                    ),
                    [{"b_id": open_rows[uuid]} for uuid in uuids],
                )
                conn.execute(history.insert(), [_history_row(f, now, run_id) for f in changed])
                rows["model_history"] = 2 * len(changed)
                conn.execute(schema.model_changes.insert(), change_rows)
                rows["model_changes"] = len(change_rows)
                if field_rows:
                    conn.execute(schema.model_change_fields.insert(), field_rows)
                    rows["model_change_fields"] = len(field_rows)
        seconds = time.perf_counter() - start
    finally:
        engine.dispose()
    return {"seconds": seconds, "rows": rows, "models": len(changed)}


def _text(value: Any, dumps: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(dumps(value))


# -- command line ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="time fetch-only")
    fetch.add_argument("--api", required=True)
    fetch.add_argument("--token", required=True)
    fetch.add_argument("--per-page", type=int, default=200)
    fetch.add_argument("--repeat", type=int, default=1)
    write = commands.add_parser("write", help="time write-only and write-changed")
    write.add_argument("--catalog", type=Path, required=True)
    write.add_argument("--changed", type=Path, required=True)
    write.add_argument("--db", action="append", required=True, help="an empty database (repeat)")
    read = commands.add_parser("read", help="time reading the archived snapshots")
    read.add_argument("--dir", type=Path, required=True)
    read.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)

    result: dict[str, Any]
    if args.command == "fetch":
        result = {
            "fetch": [fetch_all(args.api, args.token, args.per_page) for _ in range(args.repeat)]
        }
    elif args.command == "write":
        before, after = _load_flats(args.catalog), _load_flats(args.changed)
        result = {"write": [], "changed": []}
        for url in args.db:
            result["write"].append(write_all(url, before))
            result["changed"].append(write_changed(url, before, after))
    else:
        result = {"read": [read_all(args.dir) for _ in range(args.repeat)]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
