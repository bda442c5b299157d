"""Issue 12's numbered cases, one regression test each, on every dialect.

Each test does what a user does (``etl sync`` against the fake API, ``etl backfill`` of files
written here) and checks what the user sees: the exit code, the one-line message, the tables,
and ``etl verify`` exiting 0 after every step. Cases 12, 13 and 14 live in
tests/test_lifecycle.py and tests/test_migrations.py; case 5's signal after the commit is in
tests/test_lifecycle.py, its later out-of-order backfill here.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.catalog import evolve, make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi, RecordedRequest
from tests.test_backfill import catalog_state
from tests.test_processes import child_env, etl_process, sync_args, wait_for

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def small_api() -> Any:
    """The fake API serving six models."""
    with FakeApi(models=make_catalog(6), token=TOKEN) as api:
        yield api


def sync(run_etl: Any, db_url: str, api: FakeApi, *extra: str) -> Any:
    return run_etl("--database-url", db_url, "sync", "--api-url", api.url, "--json", *extra)


def backfill(run_etl: Any, db_url: str, *args: str) -> Any:
    return run_etl("--database-url", db_url, "backfill", *args)


def assert_verifies(run_etl: Any, db_url: str) -> None:
    result = run_etl("--database-url", db_url, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout == "the history tables are exactly what the observations derive\n"


def snapshot_file(folder: Path, when: datetime, models: Any, *, total: bool = True) -> Path:
    """An API response (``meta.total`` when ``total``) in a file named by its time."""
    body: Any = models
    if isinstance(models, list) and all(isinstance(m, dict) for m in models):
        body = {"links": {}, "models": models}
        if total:
            body["meta"] = {"total": len(models), "page": 1, "pages": 1}
    path = folder / f"catalog-{when:%Y%m%dT%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("etl: ")]


def rows_of(engine: sa.Engine, table: str, **where: Any) -> list[dict[str, Any]]:
    return [r for r in table_rows(engine, table) if all(r[k] == v for k, v in where.items())]


def assert_no_zero_length_history(engine: sa.Engine) -> None:
    for table in ("model_history", "agreement_history"):
        assert [r for r in table_rows(engine, table) if r["valid_from"] == r["valid_to"]] == []


def assert_every_change_shows_a_field(engine: sa.Engine) -> None:
    fields = {(r["run_id"], r["model_uuid"]) for r in table_rows(engine, "model_change_fields")}
    changed = rows_of(engine, "model_changes", kind="changed")
    assert [c for c in changed if (c["run_id"], c["model_uuid"]) not in fields] == []


def the_counts(result: Any) -> tuple[int, int, int, int, int]:
    summary = json.loads(result.stdout)
    return tuple(summary[k] for k in ("inserted", "updated", "unchanged", "removed", "restored"))


# -- case 1: zero-valued int64 strings ------------------------------------------------------


def test_case_1_a_zero_int64_string_equals_the_field_absent(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine
) -> None:
    models = make_catalog(6)
    first = [{**m, "context_window": "0"} if i == 0 else m for i, m in enumerate(models)]
    absent = [{k: v for k, v in m.items() if k != "context_window"} for m in models]
    target, never = models[0]["uuid"], models[1]["uuid"]
    small_api.models = [first[0], absent[1], *models[2:]]
    assert sync(run_etl, db_url, small_api).exit_code == 0
    assert_verifies(run_etl, db_url)
    for day in ([absent[0], absent[1], *models[2:]], [{**models[0], "context_window": None},
                                                      absent[1], *models[2:]]):  # fmt: skip
        small_api.models = day
        result = sync(run_etl, db_url, small_api)
        assert result.exit_code == 0, result.output
        assert the_counts(result) == (0, 0, 6, 0, 0)
        assert_verifies(run_etl, db_url)
    assert len(rows_of(engine, "model_history", model_uuid=target)) == 1
    assert [c["kind"] for c in rows_of(engine, "model_changes", model_uuid=target)] == ["added"]
    by_uuid = {m["uuid"]: m for m in table_rows(engine, "models")}
    assert by_uuid[target]["context_window"] == by_uuid[never]["context_window"]
    (history,) = rows_of(engine, "model_history", model_uuid=target)
    assert history["context_window"] == by_uuid[never]["context_window"]


# -- case 2: an agreement follows every model present, not only those re-read ---------------


def test_case_2_an_agreement_keeps_its_greatest_content_when_another_model_changes(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine
) -> None:
    m0, m1, *rest = make_catalog(6)
    shared = "aaaaaaaa-0000-4000-8000-000000000002"
    old = {"uuid": shared, "name": "Terms", "description": "A", "url": "https://x.test/a"}
    new = {**old, "description": "B"}
    small_api.models = [{**m0, "agreement": old}, {**m1, "agreement": new}, *rest]
    assert sync(run_etl, db_url, small_api).exit_code == 0
    assert_verifies(run_etl, db_url)

    def the_agreement() -> tuple[str, int]:
        (row,) = rows_of(engine, "agreements", uuid=shared)
        return row["description"], len(rows_of(engine, "agreement_history", agreement_uuid=shared))

    assert the_agreement() == ("B", 1)
    small_api.models = [
        {**m0, "agreement": old, "name": "M0 renamed"},
        {**m1, "agreement": new},
        *rest,
    ]
    result = sync(run_etl, db_url, small_api)
    assert the_counts(result) == (0, 1, 5, 0, 0)
    assert the_agreement() == ("B", 1)
    assert_verifies(run_etl, db_url)
    # The model carrying B goes: the agreement is what the present models carry now.
    small_api.models = [{**m0, "agreement": old, "name": "M0 renamed"}, *rest]
    assert the_counts(sync(run_etl, db_url, small_api)) == (0, 0, 5, 1, 0)
    assert the_agreement() == ("A", 2)
    assert_verifies(run_etl, db_url)


def test_case_2_an_agreement_keeps_its_greatest_content_across_a_backfill_of_many_files(
    run_etl: Any, db_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    """The model carrying the greatest text stays unchanged while the other changes in each
    of several files loaded by one backfill: every run folds it from the stored state, never
    re-read, and it still decides the agreement."""
    m0, m1 = make_catalog(2)
    shared = "aaaaaaaa-0000-4000-8000-000000000002"
    old = {"uuid": shared, "name": "Terms", "description": "A", "url": "https://x.test/a"}
    new = {**old, "description": "B"}
    first = snapshot_file(tmp_path, DAY0, [{**m0, "agreement": old}, {**m1, "agreement": new}])
    assert backfill(run_etl, db_url, str(first)).exit_code == 0
    later = [
        snapshot_file(
            tmp_path,
            DAY0 + timedelta(hours=hour),
            [{**m0, "agreement": old, "name": f"M0 rev {hour}"}, {**m1, "agreement": new}],
        )
        for hour in (1, 2, 3)
    ]
    result = backfill(run_etl, db_url, *map(str, later))
    assert result.exit_code == 0, result.output
    (row,) = rows_of(engine, "agreements", uuid=shared)
    assert row["description"] == "B"
    assert len(rows_of(engine, "agreement_history", agreement_uuid=shared)) == 1
    assert len(rows_of(engine, "model_history", model_uuid=m0["uuid"])) == 4
    assert_verifies(run_etl, db_url)


# -- case 3: a snapshot dated in the future -------------------------------------------------


def test_case_3_a_future_dated_snapshot_is_refused_and_the_present_stays_whole(
    run_etl: Any, db_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    path = snapshot_file(tmp_path / "in", later, make_catalog(50, seed=9))
    result = backfill(run_etl, db_url, str(path))
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result)
    assert str(path) in line and "after now" in line and "refused" in line
    assert table_rows(engine, "sync_runs") == []
    with FakeApi(models=make_catalog(50), token=TOKEN) as api:
        assert sync(run_etl, db_url, api).exit_code == 0
    listed = run_etl("--database-url", db_url, "models", "--json")
    assert len(json.loads(listed.stdout)) == 50
    assert_verifies(run_etl, db_url)
    # Within the 5 minutes clocks may differ by, a snapshot loads.
    soon = datetime.now(UTC) + timedelta(minutes=2)
    near = snapshot_file(tmp_path / "near", soon, make_catalog(50))
    assert backfill(run_etl, db_url, str(near)).exit_code == 0
    assert_verifies(run_etl, db_url)


# -- case 4: junk is refused, never an empty catalog ------------------------------------------


@pytest.mark.parametrize(
    "junk", ["[1,2,3]", "{}", '{"models": [1, 2]}', '[{"name": "no uuid"}]', '{"meta": {}}']
)
def test_case_4_a_file_of_junk_is_refused_and_removes_nothing(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine, tmp_path: Path, junk: str
) -> None:
    assert sync(run_etl, db_url, small_api).exit_code == 0
    before = table_rows(engine, "models")
    path = tmp_path / f"junk-{datetime.now(UTC) - timedelta(minutes=1):%Y%m%dT%H%M%S}.json"
    path.write_text(junk)
    result = backfill(run_etl, db_url, str(path))
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result)
    assert str(path) in line and "could not be loaded" in line
    assert "0 removed" in result.stdout
    assert table_rows(engine, "models") == before
    assert len(table_rows(engine, "sync_runs")) == 1
    assert_verifies(run_etl, db_url)


@pytest.mark.parametrize("body", [{}, {"models": [1, 2, 3], "meta": {"total": 3}}, []])
def test_case_4_a_response_without_models_is_an_invalid_response(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine, body: Any
) -> None:
    assert sync(run_etl, db_url, small_api).exit_code == 0
    before = table_rows(engine, "models")
    small_api.transform = lambda request, page: body
    result = sync(run_etl, db_url, small_api)
    assert result.exit_code == 5, result.output
    assert len(error_lines(result)) == 1
    assert table_rows(engine, "models") == before
    statuses = [r["status"] for r in table_rows(engine, "sync_runs")]
    assert statuses == ["succeeded", "failed"]
    assert_verifies(run_etl, db_url)


def test_case_4_an_empty_listing_is_refused_by_sync(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine
) -> None:
    assert sync(run_etl, db_url, small_api).exit_code == 0
    small_api.models = []
    result = sync(run_etl, db_url, small_api)
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result)
    assert "listed no models" in line
    assert [m["removed_at"] for m in table_rows(engine, "models")] == [None] * 6
    assert_verifies(run_etl, db_url)


@pytest.mark.parametrize("empty", ['{"models": [], "meta": {"total": 0}}', "[]"])
def test_case_4_an_empty_catalog_file_is_refused_as_sync_refuses_an_empty_listing(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine, tmp_path: Path, empty: str
) -> None:
    """The issue: "an empty catalog is treated the same way by sync and backfill"; sync
    refuses an empty listing (exit 5), so a file of an empty catalog is refused too."""
    assert sync(run_etl, db_url, small_api).exit_code == 0
    path = tmp_path / "empty-20260301T000000.json"
    path.write_text(empty)
    result = backfill(run_etl, db_url, str(path))
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result)
    assert str(path) in line
    assert len(table_rows(engine, "sync_runs")) == 1
    assert_verifies(run_etl, db_url)


def test_a_refused_file_is_named_once_in_its_error_line(
    run_etl: Any, db_url: str, tmp_path: Path
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    path = snapshot_file(tmp_path, later, make_catalog(2))
    result = backfill(run_etl, db_url, str(path))
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result)
    assert line.count(path.name) == 1, line


# -- case 5: a later out-of-order backfill keeps the run's history and events ----------------


def test_case_5_an_older_backfill_after_a_signalled_commit_keeps_that_runs_history(
    run_etl: Any, db_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    with FakeApi(models=make_catalog(12), token=TOKEN) as api:
        env = child_env(ETL_TEST_PAUSE="after-commit")
        with etl_process(tmp_path, *sync_args(db_url, api), "--json", env=env) as child:
            wait_for("the run paused after its commit", lambda: "paused at" in child.stderr, child)
            child.signal(signal.SIGTERM)
            assert child.wait() == 0, child.stderr
    (run,) = table_rows(engine, "sync_runs")
    assert run["status"] == "succeeded"
    older = run["observed_at"] - timedelta(days=1)
    path = snapshot_file(tmp_path / "old", older, make_catalog(12)[:8])
    assert backfill(run_etl, db_url, str(path)).exit_code == 0
    events = rows_of(engine, "model_changes", run_id=run["id"])
    assert sorted(e["kind"] for e in events) == ["added"] * 4
    opened = rows_of(engine, "model_history", opened_by_run=run["id"])
    assert sorted(r["model_uuid"] for r in opened) == sorted(e["model_uuid"] for e in events)
    assert len(table_rows(engine, "model_history")) == 12
    assert_verifies(run_etl, db_url)


# -- case 6: a moving catalog with many pending changes is listed again ---------------------


def test_case_6_a_moving_catalog_with_600_pending_changes_is_listed_again(
    run_etl: Any, db_url: str, engine: sa.Engine
) -> None:
    catalog = [{**m, "description": "short"} for m in make_catalog(600)]
    with FakeApi(models=catalog, token=TOKEN) as api:
        assert sync(run_etl, db_url, api, "--per-page", "200").exit_code == 0
        api.models = [{**m, "name": m["name"] + " v2"} for m in catalog]
        moved = 0

        def move(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
            nonlocal moved
            if request.page == 1 and moved == 0:
                moved += 1
                api.models = [api.models[-1], *api.models[:-1]]  # page 2 repeats a model
            return body

        api.transform = move
        result = sync(run_etl, db_url, api, "--per-page", "200")
        assert result.exit_code == 0, result.output
        assert the_counts(result) == (0, 600, 0, 0, 0)
        assert "listing again from page 1" in result.stderr
        assert [r.page for r in api.requests][-6:] == [1, 2, 3, 1, 2, 3]
    assert len(rows_of(engine, "model_changes", kind="changed")) == 600
    assert_every_change_shows_a_field(engine)
    assert_verifies(run_etl, db_url)


# -- case 7: type-only changes ---------------------------------------------------------------


def test_case_7_integral_floats_equal_integers_and_booleans_are_not_numbers(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine
) -> None:
    m0, *rest = make_catalog(6)
    target = m0["uuid"]
    days = [
        ({"size": 1000, "flag": 1}, (0, 0, 6, 0, 0)),
        ({"size": 1000.0, "flag": 1}, (0, 0, 6, 0, 0)),
        ({"size": 1000.0, "flag": 1.0}, (0, 0, 6, 0, 0)),
        ({"size": 1000, "flag": True}, (0, 1, 5, 0, 0)),
        ({"size": 1000.5, "flag": True}, (0, 1, 5, 0, 0)),
    ]
    for i, (score, counts) in enumerate(days):
        small_api.models = [{**m0, "benchmark_score": score}, *rest]
        result = sync(run_etl, db_url, small_api)
        assert result.exit_code == 0, result.output
        if i:
            assert the_counts(result) == counts, score
        assert_verifies(run_etl, db_url)
    assert len(rows_of(engine, "model_history", model_uuid=target)) == 3
    paths = [(r["path"], r["old_value"], r["new_value"])
             for r in rows_of(engine, "model_change_fields", model_uuid=target)]  # fmt: skip
    assert sorted(paths) == [
        ("benchmark_score.flag", "1", "true"),
        ("benchmark_score.size", "1000", "1000.5"),
    ]
    assert_every_change_shows_a_field(engine)


# -- case 8: one instant holds one catalog ---------------------------------------------------


def test_case_8_a_second_snapshot_at_the_same_instant_is_skipped_or_refused(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    assert sync(run_etl, db_url, small_api, "--archive-dir", str(archive)).exit_code == 0
    (run,) = table_rows(engine, "sync_runs")
    instant = run["observed_at"].astimezone(UTC).isoformat()
    (archived,) = archive.rglob("*.jsonl.gz")
    result = backfill(run_etl, db_url, str(archived))
    assert result.exit_code == 0, result.output
    assert "0 snapshots loaded, 1 already loaded" in result.stdout
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"models": make_catalog(4), "meta": {"total": 4}}))
    result = backfill(run_etl, db_url, "--as-of", instant, str(other))
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result)
    assert str(other) in line and f"run {run['id']} (sync)" in line and "same instant" in line
    assert len(table_rows(engine, "sync_runs")) == 1
    assert_verifies(run_etl, db_url)

    # Two files named with the same date, in one backfill: one loads, the other is named.
    day = DAY0
    a = snapshot_file(tmp_path / "a", day, make_catalog(6))
    b = snapshot_file(tmp_path / "b", day, make_catalog(3))
    result = backfill(run_etl, db_url, str(a), str(b))
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result)
    assert str(b) in line and str(a) in line and "same instant" in line
    assert_no_zero_length_history(engine)
    assert_verifies(run_etl, db_url)


def test_case_8_the_same_content_sent_as_other_json_at_the_same_instant_is_skipped(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine, tmp_path: Path
) -> None:
    """ "Same content" is the normalised models: another file format (here an API response
    written with other whitespace) of the catalog a sync saw at that instant is skipped."""
    assert sync(run_etl, db_url, small_api).exit_code == 0
    (run,) = table_rows(engine, "sync_runs")
    instant = run["observed_at"].astimezone(UTC).isoformat()
    same = tmp_path / "same.json"
    same.write_text(json.dumps({"models": make_catalog(6), "meta": {"total": 6}}, indent=1))
    result = backfill(run_etl, db_url, "--as-of", instant, str(same))
    assert result.exit_code == 0, result.output
    assert "0 snapshots loaded, 1 already loaded" in result.stdout
    assert len(table_rows(engine, "sync_runs")) == 1
    assert_verifies(run_etl, db_url)


# -- case 9: raw is the model as received by the run that opened the row --------------------


def test_case_9_an_out_of_order_restore_keeps_the_raw_of_the_run_that_restored(
    run_etl: Any, db_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    m0, *rest = make_catalog(6)
    sent_again = {**m0, "parameter_count": "0", "url": None}  # same content, other JSON
    files = [
        snapshot_file(tmp_path, DAY0, [m0, *rest]),
        snapshot_file(tmp_path, DAY0 + timedelta(days=1), rest),
        snapshot_file(tmp_path, DAY0 + timedelta(days=2), [sent_again, *rest]),
    ]
    assert backfill(run_etl, db_url, str(files[2])).exit_code == 0
    assert backfill(run_etl, db_url, str(files[0])).exit_code == 0
    assert backfill(run_etl, db_url, str(files[1])).exit_code == 0
    history = rows_of(engine, "model_history", model_uuid=m0["uuid"])
    assert [json.loads(json.dumps(h["raw"])) for h in history] == [m0, sent_again]
    kinds = [c["kind"] for c in rows_of(engine, "model_changes", model_uuid=m0["uuid"])]
    assert sorted(kinds) == ["added", "removed", "restored"]
    (model,) = rows_of(engine, "models", uuid=m0["uuid"])
    assert model["raw"] == sent_again
    assert_verifies(run_etl, db_url)


# -- case 10: a model that cannot be stored makes the run partial ----------------------------


def test_case_10_a_model_too_deep_keeps_its_last_content_and_the_run_removes_nothing(
    run_etl: Any, db_url: str, small_api: FakeApi, engine: sa.Engine
) -> None:
    models = make_catalog(6)
    assert sync(run_etl, db_url, small_api).exit_code == 0
    before = rows_of(engine, "models", uuid=models[0]["uuid"])
    deep: Any = 1
    for _ in range(120):
        deep = [deep]
    small_api.models = [{**models[0], "benchmark_score": {"deep": deep}}, *models[1:5]]
    result = sync(run_etl, db_url, small_api)
    assert result.exit_code == 0, result.output
    assert the_counts(result)[3] == 0  # the sixth model, missing, is not removed
    assert "1 listed models could not be stored (they keep their last content)" in result.stderr
    assert json.loads(result.stdout)["complete"] is False
    assert rows_of(engine, "models", uuid=models[0]["uuid"]) == before
    assert [m["removed_at"] for m in table_rows(engine, "models")] == [None] * 6
    assert table_rows(engine, "sync_runs")[-1]["complete"] is False
    assert_verifies(run_etl, db_url)
    small_api.models = models[:5]  # storable again, the sixth still missing: now removed
    assert the_counts(sync(run_etl, db_url, small_api)) == (0, 0, 5, 1, 0)
    assert_verifies(run_etl, db_url)


# -- case 11: older snapshots into a live database equal loading in time order --------------


@pytest.mark.parametrize("k", [3, 6])
def test_case_11_older_snapshots_into_a_database_with_later_runs_equal_time_order(
    run_etl: Any, db_url: str, engine: sa.Engine, tmp_path: Path, k: int
) -> None:
    catalogs = evolve(12, 2 * k, seed=11)
    paths = [
        snapshot_file(tmp_path / "files", DAY0 + timedelta(hours=i), catalog)
        for i, catalog in enumerate(catalogs)
    ]
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    assert backfill(run_etl, reference, *map(str, paths)).exit_code == 0
    expected = catalog_state(sa.create_engine(reference))

    later, older = paths[k:], paths[:k]
    assert backfill(run_etl, db_url, *map(str, later)).exit_code == 0
    assert_verifies(run_etl, db_url)
    result = backfill(run_etl, db_url, *map(str, older))
    assert result.exit_code == 0, result.output
    assert f"{k} snapshots loaded" in result.stdout
    assert catalog_state(engine) == expected
    assert_verifies(run_etl, db_url)
    # Every run keeps the counts the time-ordered load gave it.
    counted = ("observed_at", "inserted", "updated", "unchanged", "removed", "restored")
    runs = sorted(tuple(r[c] for c in counted) for r in table_rows(engine, "sync_runs"))
    ref = sorted(
        tuple(r[c] for c in counted) for r in table_rows(sa.create_engine(reference), "sync_runs")
    )
    assert runs == ref
