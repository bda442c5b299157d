"""Backfill: archived snapshots become the same history that syncing them would have made."""

from __future__ import annotations

import gzip
import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db, schema
from etl.config import Settings
from etl.pipeline import run_backfill, run_sync
from tests.catalog import evolve, make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi

COMPARED = [
    "models", "agreements", "model_versions", "model_history", "agreement_history",
    "model_changes", "model_change_fields", *[t.name for t in schema.CHILD_TABLES],
]  # fmt: skip
RUN_COLUMNS = {"opened_by_run", "closed_by_run", "run_id", "first_seen_run"}
SURROGATE = {"history_id", "change_id"}


def catalog_state(engine: sa.Engine) -> dict[str, list[str]]:
    """Every compared table, with run ids replaced by their run's observation time."""
    observed = {r["id"]: r["observed_at"] for r in table_rows(engine, "sync_runs")}
    state = {}
    for table in COMPARED:
        rows = []
        for row in table_rows(engine, table):
            clean = {}
            for key, value in row.items():
                if key in SURROGATE:
                    continue
                if key in RUN_COLUMNS and value is not None:
                    value = observed[value]
                if isinstance(value, str) and key in ("raw", "changes", "benchmark_score"):
                    value = json.loads(value)
                clean[key] = value
            rows.append(json.dumps(clean, sort_keys=True, default=str))
        state[table] = sorted(rows)
    return state


@pytest.fixture
def archived(tmp_path: Path) -> dict[str, Any]:
    """Six catalogs synced in turn into a SQLite database, each run archived."""
    archive = tmp_path / "archive"
    url = f"sqlite:///{tmp_path / 'synced.db'}"
    catalogs = evolve(12, 6, seed=3)
    with FakeApi(models=catalogs[0], token=TOKEN) as api:
        for catalog in catalogs:
            api.models = catalog
            settings = Settings(
                database_url=url, api_url=api.url, token=TOKEN, per_page=5, archive_dir=str(archive)
            )
            run_sync(settings)
    engine = db.create_engine(url)
    state = catalog_state(engine)
    engine.dispose()
    files = sorted(archive.rglob("*.jsonl.gz"))
    assert len(files) == 6
    return {"files": files, "state": state, "catalogs": catalogs}


def test_backfill_in_order_equals_syncing(
    archived: dict[str, Any], db_url: str, engine: sa.Engine
) -> None:
    result = run_backfill(db_url, [str(archived["files"][0].parents[3])])
    assert (result.loaded, result.failed, result.partial) == (6, [], 0)
    assert catalog_state(engine) == archived["state"]
    again = run_backfill(db_url, [str(f) for f in archived["files"]])
    assert (again.loaded, again.skipped) == (0, 6)
    assert catalog_state(engine) == archived["state"]
    runs = table_rows(engine, "sync_runs")
    assert len(runs) == 6 and {r["mode"] for r in runs} == {"backfill"}


@pytest.mark.parametrize("seed", [1, 2])
def test_backfill_out_of_order_equals_syncing(
    archived: dict[str, Any], db_url: str, engine: sa.Engine, seed: int
) -> None:
    files = list(archived["files"])
    random.Random(seed).shuffle(files)
    for path in files:
        assert run_backfill(db_url, [str(path)]).loaded == 1
    assert catalog_state(engine) == archived["state"]
    assert run_backfill(db_url, [str(f) for f in files]).skipped == 6
    assert catalog_state(engine) == archived["state"]


def write(path: Path, content: Any, *, compress: bool = False) -> Path:
    data = content if isinstance(content, str) else json.dumps(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.write_bytes(gzip.compress(data.encode()))
    else:
        path.write_text(data)
    return path


def response(
    models: list[dict[str, Any]], page: int = 1, pages: int = 1, total: int | None = None
) -> dict[str, Any]:
    return {
        "links": {},
        "meta": {"total": len(models) if total is None else total, "page": page, "pages": pages},
        "models": models,
    }


def test_every_snapshot_format_loads(tmp_path: Path, run_etl: Any) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    base = make_catalog(6)
    folder = tmp_path / "in"
    write(folder / "a" / "catalog-2026-01-01.json", response(base))
    write(folder / "a" / "catalog-20260102T120000.json.gz", base, compress=True)
    lines = "\n".join(json.dumps(response(base[i : i + 3], i // 3 + 1, 2, 6)) for i in (0, 3))
    write(folder / "b" / "pages_2026-01-03T08:00:00Z.jsonl", lines)
    write(
        folder / "b" / "models-20260104.jsonl.gz",
        "\n".join(json.dumps(m) for m in base[:5]),
        compress=True,
    )
    result = run_etl("--database-url", url, "backfill", str(folder), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["loaded"], summary["files"], summary["failed"]) == (4, 4, [])
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        observed = list(
            conn.execute(
                sa.text("SELECT observed_at FROM sync_runs ORDER BY observed_at")
            ).scalars()
        )
        removed = (
            conn.execute(sa.text("SELECT uuid FROM models WHERE removed_at IS NOT NULL"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert [o[:16] for o in observed] == [
        "2026-01-01 00:00",
        "2026-01-02 12:00",
        "2026-01-03 08:00",
        "2026-01-04 00:00",
    ]
    assert removed == [base[5]["uuid"]]  # the last snapshot, a bare list of five, is complete


def test_time_comes_from_as_of_then_name_then_mtime(tmp_path: Path, run_etl: Any) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    named = write(tmp_path / "snap-2025-06-01.json", response(make_catalog(2)))
    plain = write(tmp_path / "plain.json", response(make_catalog(3)))
    stamp = datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    os.utime(plain, (stamp, stamp))
    result = run_etl("--database-url", url, "backfill", str(named), str(plain))
    assert result.exit_code == 0, result.output
    assert "plain.json: no time in the file or its name; using its mtime" in result.stderr
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        times = list(
            conn.execute(sa.text("SELECT observed_at FROM sync_runs ORDER BY id")).scalars()
        )
    assert [t[:10] for t in times] == ["2025-06-01", "2025-07-01"]
    other = f"sqlite:///{tmp_path / 'd.db'}"
    assert (
        run_etl("--database-url", other, "backfill", str(plain), "--as-of", "2024-02-03").exit_code
        == 0
    )
    engine = sa.create_engine(other)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT observed_at FROM sync_runs"))
            .scalar()
            .startswith("2024-02-03")
        )


def test_incomplete_snapshot_never_marks_removals(tmp_path: Path, run_etl: Any) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    base = make_catalog(6)
    write(tmp_path / "s-2026-01-01.json", response(base))
    write(tmp_path / "s-2026-01-02.json", response(base[:4], total=6))
    write(tmp_path / "s-2026-01-03.json", response(base[:3], pages=2, total=6))
    result = run_etl("--database-url", url, "backfill", str(tmp_path), "--json")
    summary = json.loads(result.stdout)
    assert (summary["loaded"], summary["partial"], summary["removed"]) == (3, 2, 0)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        complete = list(
            conn.execute(sa.text("SELECT complete FROM sync_runs ORDER BY id")).scalars()
        )
        assert (
            conn.execute(
                sa.text("SELECT COUNT(*) FROM models WHERE removed_at IS NOT NULL")
            ).scalar()
            == 0
        )
    assert [bool(c) for c in complete] == [True, False, False]


def test_broken_files_are_named_and_the_rest_loads(
    tmp_path: Path, run_etl: Any, db_url: str, engine: sa.Engine
) -> None:
    folder = tmp_path / "in"
    write(folder / "good-2026-01-01.json", response(make_catalog(4)))
    write(folder / "truncated-2026-01-02.json", json.dumps(response(make_catalog(4)))[:-40])
    write(folder / "shape-2026-01-03.json", {"models": "not a list"})
    write(folder / "empty-2026-01-04.json", "")
    write(folder / "good-2026-01-05.json.gz", response(make_catalog(5)), compress=True)
    result = run_etl("--database-url", db_url, "backfill", str(folder))
    assert result.exit_code == 5
    assert "2 snapshots loaded" in result.stdout
    for name, why in (
        ("truncated", "invalid JSON"),
        ("shape", "'models' is a string"),
        ("empty", "empty"),
    ):
        line = next(line for line in result.stderr.splitlines() if f"{name}-2026" in line)
        assert why in line, line
    assert "3 of 5 files could not be loaded" in result.stderr
    assert len(table_rows(engine, "models")) == 5
    assert len(table_rows(engine, "sync_runs")) == 2


def test_dry_run_writes_nothing(
    tmp_path: Path, run_etl: Any, db_url: str, engine: sa.Engine
) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    write(folder / "s-2026-01-01.json", response(make_catalog(4)))
    result = run_etl("--database-url", db_url, "backfill", str(folder), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inserted"] == 4
    assert table_rows(engine, "models") == [] and table_rows(engine, "sync_runs") == []


def test_archive_holds_each_response_without_credentials(
    tmp_path: Path, run_etl: Any, api: FakeApi
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    archive = tmp_path / "archive"
    result = run_etl("--database-url", url, "sync", "--api-url", api.url, "--per-page", "100",
                     "--archive-dir", str(archive))  # fmt: skip
    assert result.exit_code == 0, result.output
    [path] = list(archive.rglob("*"))[-1:]
    assert path.name.endswith("-run1.jsonl.gz") and path.parent.parent.parent.parent == archive
    records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert [r["status"] for r in records] == [200, 200, 200]
    assert all("page=" in r["url"] and r["fetched_at"].endswith("Z") for r in records)
    assert sum(len(r["body"]["models"]) for r in records) == 300
    assert TOKEN not in gzip.decompress(path.read_bytes()).decode()


def test_an_archive_repeating_catalogs_loads_as_it_was_synced(
    tmp_path: Path, db_url: str, engine: sa.Engine
) -> None:
    # Hourly archives repeat pages byte for byte while the catalog holds still, then change,
    # return to an earlier catalog (restores), and repeat again: the backfill, reading each
    # repeated page from the file before and going on with one writer, must still load
    # exactly what syncing loaded.
    archive = tmp_path / "archive"
    synced = f"sqlite:///{tmp_path / 'synced.db'}"
    catalogs = evolve(12, 3, seed=5)
    order = [0, 0, 1, 1, 1, 2, 0, 0, 2]
    with FakeApi(models=catalogs[0], token=TOKEN) as api:
        for index in order:
            api.models = catalogs[index]
            run_sync(
                Settings(
                    database_url=synced, api_url=api.url, token=TOKEN, per_page=5,
                    archive_dir=str(archive),
                )
            )  # fmt: skip
    engine_synced = db.create_engine(synced)
    expected = catalog_state(engine_synced)
    engine_synced.dispose()
    result = run_backfill(db_url, [str(archive)])
    assert (result.loaded, result.failed) == (len(order), [])
    assert result.restored > 0 and result.removed > 0
    assert catalog_state(engine) == expected
