"""History: what the catalog held at any moment, and what changed when, on every dialect."""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import queries
from etl.config import Settings
from etl.pipeline import SyncResult, run_sync
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi


def sync(api: FakeApi, db_url: str) -> SyncResult:
    return run_sync(Settings(database_url=db_url, api_url=api.url, token=TOKEN, per_page=4))


def _uuid(models: list[dict[str, Any]], i: int) -> str:
    return str(models[i]["uuid"])


@pytest.fixture
def timeline(db_url: str, engine: sa.Engine) -> dict[str, Any]:
    """Six syncs of an 11-model catalog that adds, changes, removes and restores models."""
    base = make_catalog(11)
    catalogs: list[list[dict[str, Any]]] = []
    current = copy.deepcopy(base[:10])
    catalogs.append(copy.deepcopy(current))  # run 1: ten models added
    current[0]["name"] = "Renamed model"
    current[1]["version"] = {**current[1].get("version", {}), "minor": 77}
    del current[2]
    current.append(copy.deepcopy(base[10]))
    catalogs.append(copy.deepcopy(current))  # run 2: rename, version bump, removal, addition
    current.insert(2, copy.deepcopy(base[2]))
    current[3]["pricing"] = {**current[3].get("pricing", {}), "output_price_per_million": 99.5}
    agreement = current[4]["agreement"]["uuid"]
    for model in current:
        if model.get("agreement", {}).get("uuid") == agreement:
            model["agreement"] = {**model["agreement"], "name": "Licence v2"}
    catalogs.append(copy.deepcopy(current))  # run 3: restore, price change, agreement renamed
    removed_zero = current.pop(0)
    current[4]["lifecycle_status"] = "deprecated"
    catalogs.append(copy.deepcopy(current))  # run 4: removal, lifecycle transition
    catalogs.append(copy.deepcopy(current))  # run 5: nothing changes
    deprecated = current[4]["uuid"]
    current.insert(0, {**removed_zero, "name": "Back again"})
    current = [m for m in current if m["uuid"] != base[9]["uuid"]]
    catalogs.append(copy.deepcopy(current))  # run 6: restored with new content, one removal
    results = []
    with FakeApi(models=catalogs[0], token=TOKEN) as api:
        for catalog in catalogs:
            api.models = catalog
            results.append(sync(api, db_url))
    times = [row["observed_at"] for row in table_rows(engine, "sync_runs")]
    assert len(times) == 6
    return {"base": base, "catalogs": catalogs, "results": results, "times": times,
            "agreement": agreement, "deprecated": deprecated}  # fmt: skip


def test_each_run_counts_its_changes(timeline: dict[str, Any]) -> None:
    summary = [(r.inserted, r.updated, r.removed, r.restored) for r in timeline["results"]]
    sharing = sum(
        1
        for m in timeline["catalogs"][2]
        if m.get("agreement", {}).get("uuid") == timeline["agreement"]
    )
    price_model_shares = (
        timeline["catalogs"][2][3].get("agreement", {}).get("uuid") == timeline["agreement"]
    )
    assert summary[0] == (10, 0, 0, 0)
    assert summary[1] == (1, 2, 1, 0)
    assert summary[2] == (0, sharing + (0 if price_model_shares else 1), 0, 1)
    assert summary[3] == (0, 1, 1, 0)
    assert summary[4] == (0, 0, 0, 0)
    assert summary[5] == (0, 0, 1, 1)


def test_history_rows_follow_the_timeline(timeline: dict[str, Any], engine: sa.Engine) -> None:
    base, times = timeline["base"], timeline["times"]
    history = table_rows(engine, "model_history")
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in history:
        by_model.setdefault(row["model_uuid"], []).append(row)
    zero = [(r["valid_from"], r["valid_to"], r["name"]) for r in by_model[_uuid(base, 0)]]
    assert zero == [
        (times[0], times[1], base[0]["name"]),
        (times[1], times[3], "Renamed model"),
        (times[5], None, "Back again"),
    ]
    two = [(r["valid_from"], r["valid_to"], r["closed_by_run"]) for r in by_model[_uuid(base, 2)]]
    assert two == [(times[0], times[1], 2), (times[2], None, None)]
    one = by_model[_uuid(base, 1)]
    assert [r["version_minor"] for r in one] == [base[1].get("version", {}).get("minor", 0), 77]
    untouched = by_model[_uuid(base, 8)]
    assert [(r["valid_from"], r["valid_to"]) for r in untouched] == [(times[0], None)]
    assert sum(1 for r in history if r["valid_to"] is None) == 10


def test_change_events_name_fields_by_dotted_path(
    timeline: dict[str, Any], engine: sa.Engine
) -> None:
    base = timeline["base"]
    changes = table_rows(engine, "model_changes")
    events = [(c["run_id"], c["model_uuid"], c["kind"]) for c in changes]
    assert (2, _uuid(base, 2), "removed") in events
    assert (3, _uuid(base, 2), "restored") in events
    assert (2, _uuid(base, 10), "added") in events
    assert (4, _uuid(base, 0), "removed") in events
    assert (6, _uuid(base, 0), "restored") in events
    assert not [e for e in events if e[0] == 5]

    def fields(run: int, index: int) -> Any:
        row = next(
            c for c in changes if c["run_id"] == run and c["model_uuid"] == _uuid(base, index)
        )
        return row["changes"] if isinstance(row["changes"], dict) else json.loads(row["changes"])

    old_minor = base[1].get("version", {}).get("minor")
    assert fields(2, 1) == {"version.minor": {"old": old_minor, "new": 77}}
    assert fields(2, 0) == {"name": {"old": base[0]["name"], "new": "Renamed model"}}
    price = fields(3, 3)["pricing.output_price_per_million"]
    assert price["new"] == 99.5
    assert fields(6, 0) == {"name": {"old": "Renamed model", "new": "Back again"}}


def test_agreement_history_keeps_both_names(timeline: dict[str, Any], engine: sa.Engine) -> None:
    times = timeline["times"]
    rows = [
        r
        for r in table_rows(engine, "agreement_history")
        if r["agreement_uuid"] == timeline["agreement"]
    ]
    assert [(r["valid_from"], r["valid_to"], r["name"]) for r in rows][-1] == (
        times[2],
        None,
        "Licence v2",
    )
    assert rows[0]["valid_to"] == times[2]


def test_as_of_returns_exactly_what_each_run_saw(
    timeline: dict[str, Any], engine: sa.Engine
) -> None:
    for when, catalog in zip(timeline["times"], timeline["catalogs"], strict=True):
        got = {(r["uuid"], r["name"]) for r in queries.models_as_of(engine, when)}
        assert got == {(m["uuid"], m.get("name")) for m in catalog}
        later = when + timedelta(microseconds=1)
        assert {r["uuid"] for r in queries.models_as_of(engine, later)} == {
            m["uuid"] for m in catalog
        }
    assert queries.models_as_of(engine, timeline["times"][0] - timedelta(seconds=1)) == []


def test_dashboard_views(timeline: dict[str, Any], engine: sa.Engine) -> None:
    final = timeline["catalogs"][-1]
    with engine.connect() as conn:
        current = conn.execute(
            sa.text("SELECT uuid, version, agreement_name FROM current_models")
        ).all()
        assert {r.uuid for r in current} == {m["uuid"] for m in final}
        one = next(r for r in current if r.uuid == _uuid(timeline["base"], 1))
        assert one.version.split(".")[1] == "77"
        named = conn.execute(
            sa.text("SELECT COUNT(*) FROM catalog_changes WHERE model_name IS NOT NULL")
        ).scalar()
        assert named == len(table_rows(engine, "model_changes"))
        days = conn.execute(sa.text("SELECT * FROM catalog_size_by_day")).mappings().all()
    assert len(days) == 1
    day = days[0]
    assert (day["models"], day["added"], day["removed"], day["restored"]) == (10, 11, 3, 2)


def test_no_op_syncs_add_no_history(db_url: str, engine: sa.Engine) -> None:
    with FakeApi(models=make_catalog(8), token=TOKEN) as api:
        sync(api, db_url)
        tables = ("model_history", "agreement_history", "model_changes", "models", "model_versions")
        before = {t: table_rows(engine, t) for t in tables}
        for _ in range(10):
            sync(api, db_url)
    assert {t: table_rows(engine, t) for t in tables} == before
    assert len(table_rows(engine, "sync_runs")) == 11


def test_cli_read_commands(timeline: dict[str, Any], run_etl: Any, db_url: str) -> None:
    base = timeline["base"]
    result = run_etl("--database-url", db_url, "history", base[0]["id"], "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == [base[0]["name"], "Renamed model", "Back again"]
    assert [r["kind"] for r in rows] == ["added", "changed", "restored"]
    assert rows[1]["fields"] == "name"

    result = run_etl("--database-url", db_url, "changes", "--kind", "removed", "--csv")
    lines = result.stdout.splitlines()
    assert lines[0] == "observed_at,run_id,kind,model_uuid,model_id,model_name,fields,changes"
    assert len(lines) == 4 and all(",removed," in line for line in lines[1:])

    second = timeline["times"][1].isoformat()
    result = run_etl("--database-url", db_url, "models", "--as-of", second, "--json")
    assert {m["uuid"] for m in json.loads(result.stdout)} == {
        m["uuid"] for m in timeline["catalogs"][1]
    }

    result = run_etl("--database-url", db_url, "runs", "--limit", "2", "--json")
    assert [r["id"] for r in json.loads(result.stdout)] == [6, 5]

    table = run_etl("--database-url", db_url, "models").stdout.splitlines()
    assert table[0].split()[:3] == ["uuid", "id", "name"] and len(table) == 11


def test_status_max_age(run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine) -> None:
    assert run_etl("--database-url", db_url, "db", "upgrade").exit_code == 0
    result = run_etl("--database-url", db_url, "status", "--max-age", "2h")
    assert result.exit_code == 1 and "no successful complete sync" in result.stderr
    assert run_etl("--database-url", db_url, "sync", "--api-url", api.url).exit_code == 0
    result = run_etl("--database-url", db_url, "status", "--max-age", "2h", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["healthy"] is True
    stale = datetime.now(UTC) - timedelta(hours=3)
    with engine.begin() as conn:
        conn.execute(
            sa.update(sa.table("sync_runs", sa.column("finished_at"))).values(
                finished_at=stale.replace(tzinfo=None)
                if engine.dialect.name != "postgresql"
                else stale
            )
        )
    result = run_etl("--database-url", db_url, "status", "--max-age", "2h")
    assert result.exit_code == 1 and "last complete sync finished 3h ago" in result.stderr
    assert run_etl("--database-url", db_url, "status", "--max-age", "4h").exit_code == 0
    assert run_etl("--database-url", db_url, "status", "--max-age", "soon").exit_code == 2


QUERIES = Path(__file__).resolve().parent.parent / "queries"


def _query(engine: sa.Engine, name: str) -> list[dict[str, Any]]:
    sql = (QUERIES / f"{name}.sql").read_text()
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text(sql))]


def test_every_dashboard_query_says_what_it_answers() -> None:
    files = sorted(QUERIES.glob("*.sql"))
    assert len(files) >= 8
    for path in files:
        assert path.read_text().startswith("-- "), path.name


def test_dashboard_queries(timeline: dict[str, Any], engine: sa.Engine) -> None:
    base, final, times = timeline["base"], timeline["catalogs"][-1], timeline["times"]
    today = times[0].date().isoformat()
    size = _query(engine, "catalog_size_over_time")
    assert [
        (str(r["day"]), r["models"], r["added"], r["removed"], r["restored"]) for r in size
    ] == [(today, 10, 11, 3, 2)]
    weekly = _query(engine, "models_added_per_week")
    monday = (times[0].date() - timedelta(days=times[0].weekday())).isoformat()
    assert [(str(r["week"]), r["models_added"]) for r in weekly] == [(monday, 11)]

    before = next(m for m in timeline["catalogs"][2] if m["uuid"] == timeline["deprecated"])
    transitions = _query(engine, "lifecycle_transitions")
    assert [(r["model_uuid"], r["from_status"], r["to_status"]) for r in transitions] == [
        (timeline["deprecated"], before.get("lifecycle_status"), "deprecated")
    ]
    old_price = base[3].get("pricing", {}).get("output_price_per_million")
    prices = _query(engine, "price_changes")
    assert [
        (
            r["model_uuid"],
            r["price_key"],
            r["old_price"] and float(r["old_price"]),
            float(r["new_price"]),
        )
        for r in prices
    ] == [(_uuid(base, 3), "output_price_per_million", old_price, 99.5)]

    providers = Counter(m.get("provider", "unknown") for m in final)
    assert {r["provider"]: r["models"] for r in _query(engine, "models_per_provider")} == providers

    releases = _query(engine, "version_releases_per_model")
    assert (releases[0]["uuid"], releases[0]["versions_seen"]) == (_uuid(base, 1), 2)
    assert all(r["versions_seen"] == 1 for r in releases[1:]) and len(releases) == 11

    usage = {r["uuid"]: (r["name"], r["models"]) for r in _query(engine, "agreements_usage")}
    used = Counter(m["agreement"]["uuid"] for m in final if "agreement" in m)
    assert {uuid: models for uuid, (_, models) in usage.items() if models} == used
    assert usage[timeline["agreement"]][0] == "Licence v2"

    gone = _query(engine, "disappeared_models")
    assert [(r["uuid"], r["removed_at"] is not None) for r in gone] == [(_uuid(base, 9), True)]

    cheapest = _query(engine, "cheapest_output_price")
    priced = sorted(
        (m["pricing"]["output_price_per_million"], m["id"]) for m in final
        if m.get("pricing", {}).get("output_price_per_million")
    )  # fmt: skip
    assert [(r["output_price_per_million"], r["model_id"]) for r in cheapest] == priced

    image = {r["uuid"] for r in _query(engine, "models_with_image_input")}
    assert image == {
        m["uuid"] for m in final if "image" in m.get("modalities", {}).get("input", [])
    }


def test_as_of_finds_rows_of_every_length(db_url: str, engine: sa.Engine) -> None:
    # Runs minutes to years apart close rows from seconds to decades long: at every instant
    # (run times, just before and after them, between them) the as-of answer must be exactly
    # the rows holding it, whatever their length class.
    from etl import db, schema
    from etl.archive import SnapshotContent
    from etl.client import Tally
    from etl.load import Loader

    db.ensure_schema(engine)
    models = make_catalog(6)
    start = datetime(2001, 1, 1, tzinfo=UTC)
    gaps = [1.5, 30, 3_600, 86_400 * 3, 86_400 * 400, 86_400 * 365 * 20, 7, 86_400 * 40]
    times = [start]
    for gap in gaps:
        times.append(times[-1] + timedelta(seconds=gap))
    for step, when in enumerate(times):
        present = [
            {**m, "name": f"{m['name']} v{step // (i + 1)}"}
            for i, m in enumerate(models)
            if (step + i) % 4 != 3  # each model leaves now and then, and comes back
        ]
        with engine.begin() as conn:
            loader = Loader(conn)
            loader.load(
                SnapshotContent(present, Tally(), known_complete=True),
                observed_at=when,
                source=f"step {step}",
                mode="backfill",
            )
            loader.finish()
    history = table_rows(engine, "model_history")
    assert {r["span_class"] for r in history if r["valid_to"] is not None} >= {1, 5, 12, 30}
    probes = [t + timedelta(seconds=d) for t in times for d in (-0.5, 0, 0.5)] + [
        a + (b - a) / 2 for a, b in itertools.pairwise(times)
    ]
    for when in probes:
        expected = sorted(
            (r["model_uuid"], r["name"])
            for r in history
            if r["valid_from"] <= when and (r["valid_to"] is None or r["valid_to"] > when)
        )
        found = sorted((r["uuid"], r["name"]) for r in queries.models_as_of(engine, when))
        assert found == expected, when
    closed = [r for r in history if r["valid_to"] is not None]
    assert all(
        r["span_class"] == schema.span_class((r["valid_to"] - r["valid_from"]).total_seconds())
        for r in closed
    )
