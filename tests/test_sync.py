"""End to end: `etl sync` against the fake API leaves the catalog in SQL, on every dialect."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from etl.config import USECASES
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi, Fault


def _sync(run_etl: Any, db_url: str, api: FakeApi, *args: str) -> Any:
    return run_etl("--database-url", db_url, "sync", "--api-url", api.url, *args)


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def test_first_sync_loads_every_model_and_child_row(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    result = _sync(run_etl, db_url, api, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["inserted"] == 300 and summary["pages"] == 2 and summary["complete"] is True
    assert _count(engine, "SELECT COUNT(*) FROM models") == 300
    assert _count(engine, "SELECT COUNT(*) FROM model_versions") == 300
    agreements = {m["agreement"]["uuid"] for m in api.models if "agreement" in m}
    assert _count(engine, "SELECT COUNT(*) FROM agreements") == len(agreements)
    expected_prices = sum(len(m.get("pricing", {})) for m in api.models)
    assert _count(engine, "SELECT COUNT(*) FROM model_pricing") == expected_prices
    expected_caps = sum(len(set(m.get("capabilities", []))) for m in api.models)
    assert _count(engine, "SELECT COUNT(*) FROM model_capabilities") == expected_caps
    with_image = {
        m["uuid"] for m in api.models if "image" in m.get("modalities", {}).get("input", [])
    }
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT model_uuid FROM model_modalities "
                "WHERE direction = 'input' AND modality = 'image'"
            )
        ).scalars()
        assert set(found) == with_image
        run = conn.execute(sa.text("SELECT * FROM sync_runs")).mappings().one()
    assert run["status"] == "succeeded" and run["inserted"] == 300 and run["requests"] == 2
    assert [r.page for r in api.requests] == [1, 2]
    assert all(r.query["per_page"] == ["200"] for r in api.requests)


def test_typed_columns_round_trip(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    assert _sync(run_etl, db_url, api).exit_code == 0
    source = api.models[7]
    row = next(r for r in table_rows(engine, "models") if r["uuid"] == source["uuid"])
    assert row["name"] == source["name"]
    assert row["context_window"] == int(source["context_window"])
    assert row["created_at"].tzinfo is not None
    assert row["created_at"].isoformat().startswith(source["created_at"][:19])
    raw = row["raw"] if isinstance(row["raw"], dict) else json.loads(row["raw"])
    assert raw == source


def test_second_sync_rewrites_nothing(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    assert _sync(run_etl, db_url, api).exit_code == 0
    tables = ["models", "agreements", "model_versions", "model_pricing", "model_settings"]
    before = {t: table_rows(engine, t) for t in tables}
    result = _sync(run_etl, db_url, api, "--json")
    summary = json.loads(result.stdout)
    assert (summary["inserted"], summary["updated"], summary["unchanged"]) == (0, 0, 300)
    assert {t: table_rows(engine, t) for t in tables} == before
    assert _count(engine, "SELECT COUNT(*) FROM sync_runs WHERE status = 'succeeded'") == 2


def test_same_model_sent_without_zero_fields_is_not_a_change(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    assert _sync(run_etl, db_url, api).exit_code == 0
    zeros = {"kb_min_chunk_size": 0, "parent_uuid": "", "url": None, "is_foundational": False}
    api.models = [{**zeros, **m} for m in api.models]
    assert any(m["url"] is None for m in api.models)
    summary = json.loads(_sync(run_etl, db_url, api, "--json").stdout)
    assert summary["updated"] == 0 and summary["unchanged"] == 300


def test_changed_model_is_updated_with_its_children(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    assert _sync(run_etl, db_url, api).exit_code == 0
    models = list(api.models)
    target = models[3]
    models[3] = {
        **target,
        "name": "Renamed",
        "version": {"major": 9},
        "pricing": {"output_price_per_million": 42.0},
    }
    api.models = models
    summary = json.loads(_sync(run_etl, db_url, api, "--json").stdout)
    assert (summary["updated"], summary["unchanged"]) == (1, 299)
    uuid = target["uuid"]
    with engine.connect() as conn:
        name = conn.execute(sa.text(f"SELECT name FROM models WHERE uuid = '{uuid}'")).scalar()
        prices = conn.execute(
            sa.text(f"SELECT price_key, price FROM model_pricing WHERE model_uuid = '{uuid}'")
        ).all()
        versions = conn.execute(
            sa.text(f"SELECT major FROM model_versions WHERE model_uuid = '{uuid}' ORDER BY major")
        ).scalars()
        assert name == "Renamed"
        assert [tuple(p) for p in prices] == [("output_price_per_million", 42.0)]
        assert list(versions) == sorted({target.get("version", {}).get("major", 0), 9})


def test_removed_model_gets_removed_at_and_comes_back(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    assert _sync(run_etl, db_url, api).exit_code == 0
    everything = list(api.models)
    gone = everything[10]["uuid"]
    api.models = everything[:10] + everything[11:]
    summary = json.loads(_sync(run_etl, db_url, api, "--json").stdout)
    assert summary["removed"] == 1
    removed = f"SELECT COUNT(*) FROM models WHERE uuid = '{gone}' AND removed_at IS NOT NULL"
    assert _count(engine, removed) == 1
    assert _count(engine, "SELECT COUNT(*) FROM models") == 300
    api.models = everything
    summary = json.loads(_sync(run_etl, db_url, api, "--json").stdout)
    assert summary["restored"] == 1 and summary["removed"] == 0
    assert _count(engine, "SELECT COUNT(*) FROM models WHERE removed_at IS NOT NULL") == 0


def test_filtered_run_never_marks_removals(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    assert _sync(run_etl, db_url, api).exit_code == 0
    summary = json.loads(_sync(run_etl, db_url, api, "--public-only", "--json").stdout)
    assert summary["removed"] == 0 and 0 < summary["models_seen"] < 300
    summary = json.loads(_sync(run_etl, db_url, api, "--usecase", "agent", "--json").stdout)
    assert summary["removed"] == 0
    assert _count(engine, "SELECT COUNT(*) FROM models WHERE removed_at IS NOT NULL") == 0
    last = api.requests[-1].query
    assert last["usecases"] == ["MODEL_USECASE_AGENT"]


def test_rate_limit_and_server_error_are_retried(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    api.faults = [Fault.rate_limited(retry_after="2"), Fault.server_error(503, page=2)]
    result = _sync(run_etl, db_url, api, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["retries"] == 2 and summary["requests"] == 4
    assert _count(engine, "SELECT COUNT(*) FROM models") == 300
    assert run_etl.waits[0] == 2.0
    assert "retrying after HTTP 429" in result.stderr
    assert "retrying after HTTP 503" in result.stderr


def test_dry_run_writes_nothing(run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine) -> None:
    assert _sync(run_etl, db_url, api).exit_code == 0
    api.models = make_catalog(310)
    before = {t: table_rows(engine, t) for t in ("models", "sync_runs")}
    result = _sync(run_etl, db_url, api, "--dry-run", "--json")
    summary = json.loads(result.stdout)
    assert summary["inserted"] == 10 and summary["dry_run"] is True
    assert {t: table_rows(engine, t) for t in ("models", "sync_runs")} == before


def test_refused_token_exits_3_without_showing_it(run_etl: Any, db_url: str, api: FakeApi) -> None:
    api.token = "another-token"
    result = run_etl("-v", "--database-url", db_url, "sync", "--api-url", api.url)
    assert result.exit_code == 3
    assert "refused the token" in result.stderr
    assert TOKEN not in result.output + result.stderr


def test_with_usecases_records_membership_and_its_history(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    from tests.catalog import usecases_for

    result = _sync(run_etl, db_url, api, "--with-usecases")
    assert result.exit_code == 0, result.output
    expected = {(m["uuid"], u) for m in api.models for u in usecases_for(m)}
    rows = table_rows(engine, "model_usecases")
    assert {(r["model_uuid"], r["usecase"]) for r in rows} == expected
    assert all(r["removed_at"] is None for r in rows)
    usecase_requests = [r for r in api.requests if "usecases" in r.query]
    assert {r.query["usecases"][0] for r in usecase_requests} == set(USECASES)

    moved = api.models[0]["uuid"]
    old = set(usecases_for(api.models[0]))
    membership = {m["uuid"]: usecases_for(m) for m in api.models}
    membership[moved] = ["MODEL_USECASE_GUARDRAIL"]
    api.usecases = membership
    assert _sync(run_etl, db_url, api, "--with-usecases").exit_code == 0
    rows = [r for r in table_rows(engine, "model_usecases") if r["model_uuid"] == moved]
    still = {r["usecase"] for r in rows if r["removed_at"] is None}
    assert still == {"MODEL_USECASE_GUARDRAIL"}
    ended = {r["usecase"] for r in rows if r["removed_at"] is not None}
    assert ended == old - {"MODEL_USECASE_GUARDRAIL"}
    with engine.connect() as conn:
        guardrails = conn.execute(
            sa.text(
                "SELECT model_uuid, first_seen_at FROM model_usecases "
                "WHERE usecase = 'MODEL_USECASE_GUARDRAIL' AND removed_at IS NULL"
            )
        ).all()
    assert moved in {g.model_uuid for g in guardrails}


def test_changes_across_many_pages_are_all_written(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    # More changed models than one write batch holds, spread over every page: rows are
    # written batch by batch, and every one of them must land.
    api.models = make_catalog(1200)
    assert _sync(run_etl, db_url, api).exit_code == 0
    changed = {i for i in range(1200) if i % 12 < 7}
    api.models = [
        {**m, "name": f"Renamed {i}", "pricing": {"output_price_per_million": i + 0.5}}
        if i in changed
        else m
        for i, m in enumerate(api.models)
    ]
    summary = json.loads(_sync(run_etl, db_url, api, "--json").stdout)
    assert (summary["updated"], summary["unchanged"], summary["pages"]) == (700, 500, 6)
    names = {r["uuid"]: r["name"] for r in table_rows(engine, "models")}
    assert all(names[api.models[i]["uuid"]] == f"Renamed {i}" for i in changed)
    assert _count(engine, "SELECT COUNT(*) FROM model_history") == 1900
    assert _count(engine, "SELECT COUNT(*) FROM model_history WHERE valid_to IS NULL") == 1200
    assert _count(engine, "SELECT COUNT(*) FROM model_changes WHERE kind = 'changed'") == 700
    prices = {
        (r["model_uuid"], r["price_key"]): r["price"] for r in table_rows(engine, "model_pricing")
    }
    for i in changed:
        uuid = api.models[i]["uuid"]
        assert [k for u, k in prices if u == uuid] == ["output_price_per_million"]
        assert prices[(uuid, "output_price_per_million")] == i + 0.5


def _nested(depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


DEEP = 97
"""Lists inside benchmark_score inside the model: 99 levels, just inside our limit of 100, far
past MariaDB's JSON (32)."""


def test_a_model_nested_99_deep_stores_and_reads_back(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    deep = {**api.models[0], "benchmark_score": {"deep": _nested(DEEP, 1)}}
    api.models = [deep, *api.models[1:]]
    result = _sync(run_etl, db_url, api, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == 0
    # The same model, one level deeper in the raw and changed: the change event holds both.
    api.models = [{**deep, "benchmark_score": {"deep": _nested(DEEP, 2)}}, *api.models[1:]]
    result = _sync(run_etl, db_url, api, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["updated"] == 1

    uuid = deep["uuid"]
    (model,) = [row for row in table_rows(engine, "models") if row["uuid"] == uuid]
    assert model["benchmark_score"] == {"deep": _nested(DEEP, 2)}
    assert model["raw"]["benchmark_score"] == {"deep": _nested(DEEP, 2)}
    history = [row for row in table_rows(engine, "model_history") if row["model_uuid"] == uuid]
    assert [row["raw"]["benchmark_score"] for row in history] == [
        {"deep": _nested(DEEP, 1)},
        {"deep": _nested(DEEP, 2)},
    ]
    changes = [row for row in table_rows(engine, "model_changes") if row["model_uuid"] == uuid]
    assert [row["kind"] for row in changes] == ["added", "changed"]
    assert changes[1]["changes"] == {
        "benchmark_score.deep": {"old": _nested(DEEP, 1), "new": _nested(DEEP, 2)}
    }


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "read-back"])
def test_each_stored_model_points_at_its_own_content(
    run_etl: Any,
    db_url: str,
    api: FakeApi,
    engine: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    returning: bool,
) -> None:
    # New contents get their ids from the INSERT where the database returns its rows, else by
    # reading them back (MySQL): either way every member of the stored snapshot must be the
    # content of that model with the bytes it was listed with.
    import etl.observe

    monkeypatch.setattr(etl.observe, "returns_inserted_rows", lambda conn: returning)
    assert _sync(run_etl, db_url, api).exit_code == 0
    api.models = [{**m, "name": f"{m['name']} 2"} if i % 3 else m for i, m in enumerate(api.models)]
    assert _sync(run_etl, db_url, api).exit_code == 0
    with engine.connect() as conn:
        members = conn.execute(
            sa.text(
                "SELECT members FROM snapshots WHERE snapshot_id = "
                "(SELECT MAX(snapshot_id) FROM snapshots)"
            )
        ).scalar_one()
        contents = {
            row.content_id: (row.model_uuid, row.raw_hash)
            for row in conn.execute(
                sa.text("SELECT content_id, model_uuid, raw_hash FROM observed_contents")
            )
        }
        models = dict(conn.execute(sa.text("SELECT uuid, raw_hash FROM models")).all())
    ids = json.loads(members)
    assert len(ids) == len(models) == len(api.models)
    assert sorted(contents[i] for i in ids) == sorted(models.items())
