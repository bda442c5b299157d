"""The listing memo (issue 12's no-op target): a sync whose pages are byte for byte those of the
listing that stored the last run's snapshot does not parse them again.

The memo is a fast path, so it is held to the plain path: random sequences of catalogs, page
sizes and backfills between syncs give the same tables with the memo as without it, on every
dialect; and every case where it must step aside (a page that differs, a later run that is not
the memo's, a model the spec does not know) is a test of its own.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import db, schema
from etl import memo as memo_module
from etl.archive import read_snapshot
from etl.config import Settings
from etl.load import verify
from etl.pipeline import run_backfill, run_sync
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi, Fault
from tests.test_backfill import COMPARED, RUN_COLUMNS, SURROGATE

BASE = make_catalog(6, seed=11)
IGNORED = SURROGATE | {"span_class"}
"""Keys, and a history row's length class, which depends on the seconds between runs."""
PAST = datetime(2026, 1, 1, tzinfo=UTC)


def catalog(version: dict[int, int], present: set[int] | None = None) -> list[dict[str, Any]]:
    """The catalog with model ``i`` at edit ``version[i]`` (0: as made), ``present`` only."""
    models = []
    for index, model in enumerate(BASE):
        if present is not None and index not in present:
            continue
        edit = version.get(index, 0)
        models.append({**model, "name": f"{model['name']} e{edit}"} if edit else model)
    return models


def sync(url: str, api: FakeApi, per_page: int, memo: bool = True, **extra: Any) -> Any:
    return run_sync(
        Settings(
            database_url=url,
            api_url=api.url,
            token=TOKEN,
            per_page=per_page,
            listing_memo=memo,
            **extra,
        )
    )


def parsed_pages(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pages the sync parses (one entry per page)."""
    import etl.http

    calls: list[int] = []
    original = etl.http.parse_page

    def counting(body: Any, *args: Any) -> Any:
        calls.append(1)
        return original(body, *args)

    monkeypatch.setattr(etl.http, "parse_page", counting)
    return calls


def normalised(url: str) -> dict[str, Any]:
    """Every history table and the runs' counts, with each instant replaced by the rank of the
    run observed then: two databases that synced the same catalogs at other times compare."""
    engine = db.create_engine(url)
    try:
        runs = table_rows(engine, "sync_runs")
        rank = {r["observed_at"]: i for i, r in enumerate(sorted(runs, key=_order))}
        by_id = {r["id"]: rank[r["observed_at"]] for r in runs if r["observed_at"] is not None}

        def clean(key: str, value: Any) -> Any:
            if key in RUN_COLUMNS and value is not None:
                return by_id[value]
            if isinstance(value, datetime):
                return rank.get(value, "not a run's instant")
            if isinstance(value, str) and key in ("raw", "changes", "benchmark_score"):
                return json.loads(value)
            return value

        state: dict[str, Any] = {}
        for table in COMPARED:
            rows = [
                json.dumps(
                    {k: clean(k, v) for k, v in row.items() if k not in IGNORED},
                    sort_keys=True,
                    default=str,
                )
                for row in table_rows(engine, table)
            ]
            state[table] = sorted(rows)
        columns = ("status", "complete", "pages", "models_seen", "snapshot_hash", "inserted",
                   "updated", "unchanged", "removed", "restored", "warnings",
                   "requests")  # fmt: skip
        state["sync_runs"] = [tuple(r[c] for c in columns) for r in sorted(runs, key=_order)]
        state["snapshots"] = sorted(
            (r["digest"], r["models"], r["unstorable"]) for r in table_rows(engine, "snapshots")
        )
        with engine.connect() as conn:
            assert verify(conn) == []
        return state
    finally:
        engine.dispose()


def _order(run: dict[str, Any]) -> tuple[Any, ...]:
    return (run["observed_at"] is None, run["observed_at"] or PAST, run["id"])


# -- the fast path engages, and steps aside -------------------------------------------------------


def test_an_unchanged_catalog_is_not_parsed_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeApi(models=catalog({}), token=TOKEN) as api:
        first = sync(db_url, api, per_page=2)
        calls = parsed_pages(monkeypatch)
        with caplog.at_level(logging.DEBUG, logger="etl"):
            second = sync(db_url, api, per_page=2)
    assert first.pages == second.pages == 3
    assert calls == []
    assert "3 pages as run 1 listed them" in caplog.text
    assert (second.inserted, second.unchanged, second.models_seen) == (0, 6, 6)
    engine = db.create_engine(db_url)
    try:
        runs = table_rows(engine, "sync_runs")
        assert [r["snapshot_id"] for r in runs] == [runs[0]["snapshot_id"]] * 2
        assert runs[1]["snapshot_hash"] == runs[0]["snapshot_hash"]
        assert runs[1]["complete"] and runs[1]["pages"] == 3 and runs[1]["models_seen"] == 6
    finally:
        engine.dispose()


def test_a_memo_of_an_older_format_is_ignored(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Format 1 held BLAKE2b page digests: matching them against SHA-256 ones would never hit,
    # but a format that changes what a digest means must not be trusted either way.
    with FakeApi(models=catalog({}), token=TOKEN) as api:
        sync(db_url, api, per_page=2)
        engine = db.create_engine(db_url)
        try:
            with engine.begin() as conn:
                table = schema.etl_state
                value = json.loads(
                    conn.execute(
                        sa.select(table.c.value).where(table.c.name == "listing")
                    ).scalar_one()
                )
                assert value["format"] == memo_module.FORMAT
                value["format"] = memo_module.FORMAT - 1
                conn.execute(
                    sa.update(table)
                    .where(table.c.name == "listing")
                    .values(value=json.dumps(value))
                )
        finally:
            engine.dispose()
        calls = parsed_pages(monkeypatch)
        second = sync(db_url, api, per_page=2)
    assert len(calls) == 3
    assert (second.inserted, second.unchanged, second.models_seen) == (0, 6, 6)


def test_a_page_that_differs_after_matching_pages_has_every_page_parsed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeApi(models=catalog({}), token=TOKEN) as api:
        sync(db_url, api, per_page=2)
        api.models = catalog({5: 1})  # the last page changes
        calls = parsed_pages(monkeypatch)
        result = sync(db_url, api, per_page=2)
    assert len(calls) == 3
    assert (result.updated, result.unchanged) == (1, 5)
    engine = db.create_engine(db_url)
    try:
        names = {r["uuid"]: r["name"] for r in table_rows(engine, "models")}
        assert names[BASE[5]["uuid"]].endswith(" e1")
    finally:
        engine.dispose()


def test_the_memo_steps_aside_when_a_later_run_is_not_its_own(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill newer than the memo's run, of as many models but not the same ones: the
    sync must see that a model it holds present is missing from the same bytes and list again
    to confirm before marking it removed, as the plain path does."""
    first = {0, 1, 2, 3, 4}
    with FakeApi(models=catalog({}, present=first), token=TOKEN) as api:
        sync(db_url, api, per_page=2)
        path = tmp_path / "catalog.json"
        path.write_text(json.dumps(catalog({}, present={1, 2, 3, 4, 5})))
        assert run_backfill(db_url, [str(path)], as_of=datetime.now(UTC)).failed == []
        calls = parsed_pages(monkeypatch)
        result = sync(db_url, api, per_page=2)
    assert len(calls) == 6  # the listing, and the listing that confirms model 5 is gone
    assert (result.requests, result.removed, result.restored, result.unchanged) == (6, 1, 1, 4)


def test_a_listing_with_fields_the_spec_lacks_warns_on_every_run(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    drifted = [{**m, "brand_new_field": 1} for m in catalog({})]
    with FakeApi(models=drifted, token=TOKEN) as api:
        for _ in range(2):  # caplog keeps every record: each run is checked on its own
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="etl"):
                sync(db_url, api, per_page=2)
            assert "schema drift: field 'brand_new_field'" in caplog.text


def test_the_memo_is_kept_per_page_size(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApi(models=catalog({}), token=TOKEN) as api:
        sync(db_url, api, per_page=2)
        calls = parsed_pages(monkeypatch)
        sync(db_url, api, per_page=3)
        assert len(calls) == 2
        sync(db_url, api, per_page=3)
        assert len(calls) == 2


def test_a_no_op_through_the_memo_writes_nothing_but_its_run(db_url: str) -> None:
    with FakeApi(models=catalog({}), token=TOKEN) as api:
        sync(db_url, api, per_page=2)
        engine = db.create_engine(db_url)
        try:
            tables = [t for t in schema.metadata.tables if t != "sync_runs"]
            before = {t: table_rows(engine, t) for t in tables}
            sync(db_url, api, per_page=2)
            after = {t: table_rows(engine, t) for t in tables}
            state = {r["name"]: r["value"] for r in table_rows(engine, "etl_state")}
            memo = state.get("listing")
        finally:
            engine.dispose()
    assert after == before
    assert memo is not None and len(json.loads(memo)["pages"]) == 3


# -- the memo gives the plain path's tables -------------------------------------------------------


Step = tuple[str, Any]
"""("sync", (versions, present, per_page)) or ("backfill", (versions, present, hours ago)):
a backfill 0 hours ago is dated now, after every sync so far and before the next."""


@st.composite
def histories(draw: Any) -> list[Step]:
    steps: list[Step] = []
    versions: dict[int, int] = {}
    present = set(range(len(BASE)))
    for _ in range(draw(st.integers(2, 7))):
        move = draw(st.sampled_from(["same", "same", "edit", "remove", "restore", "backfill"]))
        if move == "edit":
            index = draw(st.integers(0, len(BASE) - 1))
            versions = {**versions, index: versions.get(index, 0) + 1}
        elif move == "remove" and len(present) > 1:
            present = present - {draw(st.sampled_from(sorted(present)))}
        elif move == "restore":
            present = set(range(len(BASE)))
        if move == "backfill":
            hours = draw(st.sampled_from([0.0, 1000.0]))  # between two syncs, or long ago
            steps.append(("backfill", (dict(versions), set(present), hours)))
        else:
            steps.append(("sync", (dict(versions), set(present), draw(st.integers(1, 4)))))
    return steps


def replay(steps: list[Step], url: str, folder: Path, api: FakeApi, memo: bool) -> None:
    for number, (kind, (versions, present, extra)) in enumerate(steps):
        if kind == "sync":
            api.models = catalog(versions, present)
            sync(url, api, per_page=extra, memo=memo)
        else:
            when = datetime.now(UTC) - timedelta(hours=extra)
            path = folder / f"{number}-catalog-{when:%Y%m%dT%H%M%S.%f}.json"
            path.write_text(json.dumps(catalog(versions, present)))
            assert run_backfill(url, [str(path)], as_of=when).failed == []


def assert_memo_gives_the_plain_tables(steps: list[Step], url: str, api: FakeApi) -> None:
    with tempfile.TemporaryDirectory(prefix="etl-memo-") as folder:
        plain = f"sqlite:///{Path(folder) / 'plain.db'}"
        for memo, target in ((True, url), (False, plain)):
            replay(steps, target, Path(folder), api, memo)
        assert normalised(url) == normalised(plain)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApi]:
    with FakeApi(models=catalog({}), token=TOKEN) as served:
        yield served


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=histories())
def test_syncs_with_the_memo_give_the_plain_paths_tables(steps: list[Step], api: FakeApi) -> None:
    with tempfile.TemporaryDirectory(prefix="etl-memo-") as folder:
        assert_memo_gives_the_plain_tables(steps, f"sqlite:///{Path(folder) / 'memo.db'}", api)


@pytest.mark.parametrize("seed", [5, 6])
def test_the_memo_gives_the_plain_tables_on_every_dialect(
    db_url: str, api: FakeApi, seed: int
) -> None:
    rng = random.Random(seed)
    steps: list[Step] = [("sync", ({}, set(range(6)), 2)), ("sync", ({}, set(range(6)), 2))]
    for _ in range(4):
        versions = {rng.randrange(6): rng.randint(1, 2)}
        present = set(rng.sample(range(6), rng.randint(3, 6)))
        steps.append(("sync", (versions, present, rng.randint(1, 3))))
        steps.append(("sync", (versions, present, 2)))
        if rng.random() < 0.5:
            steps.append(("backfill", (versions, set(range(6)), 0.0)))
    assert_memo_gives_the_plain_tables(steps, db_url, api)


def test_a_pretty_printed_listing_recognised_by_the_memo_is_archived_whole(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive writes a body with line breaks as its JSON on one line: a page the memo
    recognised, left unparsed, must still be archived with its models."""
    models = catalog({})
    body = json.dumps({"models": models, "links": {}, "meta": {"total": 6, "pages": 1}}, indent=2)
    archive = tmp_path / "archive"
    with FakeApi(models=models, token=TOKEN) as api:
        api.faults.append(Fault(body=body, times=2))
        sync(db_url, api, per_page=200, archive_dir=str(archive))
        calls = parsed_pages(monkeypatch)
        sync(db_url, api, per_page=200, archive_dir=str(archive))
    assert calls == []  # the memo recognised the page
    files = sorted(archive.rglob("*.jsonl.gz"))
    assert len(files) == 2
    for path in files:
        assert [m["uuid"] for m in read_snapshot(path).models] == [m["uuid"] for m in models]
