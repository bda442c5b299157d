"""Flattening: every field lands in a typed column or a child table; zero values are absent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.transform import BadModel, changed_fields, content_hash, flatten, normalize
from tests.catalog import make_catalog, make_model

FULL = {
    "uuid": "00000000-0000-4000-8000-000000000001",
    "id": "llama3.3-70b-instruct",
    "name": "Llama 3.3 Instruct (70B)",
    "description": "A model",
    "agreement": {"uuid": "a-1", "name": "Llama licence", "description": "d", "url": "https://l"},
    "version": {"major": 2, "patch": 3},
    "created_at": "2024-05-01T12:00:00.123456789Z",
    "updated_at": "2024-05-02T08:30:00Z",
    "context_window": "131072",
    "parameter_count": 70.5,
    "provider": "MODEL_PROVIDER_DIGITALOCEAN",
    "capabilities": ["inference", "reasoning", "inference"],
    "modalities": {"input": ["text", "image"], "output": ["text"]},
    "endpoints": [
        {"endpoint": "/chat/completions", "capabilities": ["input_text", "output_text"]},
        {"endpoint": "/embeddings"},
    ],
    "reasoning_efforts": ["low", "high"],
    "settings": [
        {"name": "temperature", "type": "number", "default_value": 0.7, "max": 2, "step": 0.1},
        {"name": "effort", "type": "dropdown", "default_string": "medium", "options": ["a", "b"]},
    ],
    "pricing": {"input_price_per_million": 0.6, "output_price_per_million": 0.9},
    "benchmark_score": {"mmlu": {"score": 0.86}},
    "thinking": True,
}


def test_flatten_types_every_scalar() -> None:
    flat = flatten(FULL)
    row = flat.model
    assert row["id"] == "llama3.3-70b-instruct"
    assert row["context_window"] == 131072
    assert row["parameter_count"] == 70.5
    assert row["created_at"] == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert row["updated_at"] == datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
    assert (row["version_major"], row["version_minor"], row["version_patch"]) == (2, 0, 3)
    assert flat.version == (2, 0, 3)
    assert row["agreement_uuid"] == "a-1"
    assert flat.agreement == {
        "uuid": "a-1",
        "name": "Llama licence",
        "description": "d",
        "url": "https://l",
    }
    assert row["thinking"] is True
    assert row["benchmark_score"] == {"mmlu": {"score": 0.86}}
    assert row["raw"] is FULL
    assert flat.warnings == []


def test_absent_fields_follow_the_documented_rule() -> None:
    row = flatten({"uuid": "u-1"}).model
    assert row["is_foundational"] is False and row["upload_complete"] is False
    assert row["thinking"] is False
    nulls = ("id", "name", "description", "parent_uuid", "url", "kb_min_chunk_size")
    nulls += ("context_window", "parameter_count", "created_at", "agreement_uuid")
    for column in nulls:
        assert row[column] is None, column
    assert (row["version_major"], row["version_minor"], row["version_patch"]) == (0, 0, 0)


def test_empty_strings_and_nulls_are_null() -> None:
    row = flatten({"uuid": "u-1", "parent_uuid": "", "name": None, "kb_min_chunk_size": 0}).model
    assert row["parent_uuid"] is None and row["name"] is None and row["kb_min_chunk_size"] is None


def test_child_rows_answer_plain_sql_questions() -> None:
    children = flatten(FULL).children
    uuid = FULL["uuid"]
    assert children["model_capabilities"] == [
        {"model_uuid": uuid, "capability": "inference"},
        {"model_uuid": uuid, "capability": "reasoning"},
    ]
    assert {(r["direction"], r["modality"]) for r in children["model_modalities"]} == {
        ("input", "text"),
        ("input", "image"),
        ("output", "text"),
    }
    assert [r["endpoint"] for r in children["model_endpoints"]] == [
        "/chat/completions",
        "/embeddings",
    ]
    assert [(r["endpoint"], r["capability"]) for r in children["model_endpoint_capabilities"]] == [
        ("/chat/completions", "input_text"),
        ("/chat/completions", "output_text"),
    ]
    assert [r["effort"] for r in children["model_reasoning_efforts"]] == ["low", "high"]
    settings = {r["name"]: r for r in children["model_settings"]}
    assert settings["temperature"]["default_value"] == 0.7
    assert settings["temperature"]["max"] == 2.0 and settings["temperature"]["min"] is None
    assert settings["effort"]["options"] == ["a", "b"]
    assert {r["price_key"]: r["price"] for r in children["model_pricing"]} == {
        "input_price_per_million": 0.6,
        "output_price_per_million": 0.9,
    }


def test_hash_ignores_zero_values_key_order_and_timestamp_precision() -> None:
    sparse = {"uuid": "u", "name": "n", "created_at": "2024-05-01T12:00:00Z"}
    padded = {
        "created_at": "2024-05-01T12:00:00.000Z",
        "is_foundational": False,
        "kb_min_chunk_size": 0,
        "parent_uuid": "",
        "capabilities": [],
        "pricing": {"input_price_per_million": 0},
        "description": None,
        "name": "n",
        "uuid": "u",
    }
    assert content_hash(sparse) == content_hash(padded)
    assert content_hash(sparse) != content_hash({**sparse, "name": "m"})
    assert content_hash(sparse) != content_hash({**sparse, "created_at": "2024-05-01T12:00:01Z"})


def test_generated_models_hash_equal_with_or_without_zero_fields() -> None:
    for model in make_catalog(20):
        assert content_hash(model) == content_hash(normalize(model))


@pytest.mark.parametrize("model", [{"name": "x"}, {"uuid": ""}, {"uuid": 5}, "a string", None])
def test_a_model_without_usable_uuid_is_refused(model: object) -> None:
    with pytest.raises(BadModel):
        flatten(model)


def test_wrong_types_become_null_with_warnings_and_raw_keeps_them() -> None:
    model = {
        "uuid": "u-1",
        "name": {"not": "a string"},
        "context_window": "lots",
        "kb_max_chunk_size": 10**30,
        "is_foundational": "yes",
        "created_at": "yesterday",
        "id": "x" * 1000,
        "pricing": {"input_price_per_million": "cheap", "output_price_per_million": 1.5},
        "capabilities": "inference",
    }
    flat = flatten(model)
    row = flat.model
    assert row["name"] is None and row["context_window"] is None
    assert row["kb_max_chunk_size"] is None and row["is_foundational"] is False
    assert row["created_at"] is None and row["id"] is None
    assert flat.children["model_pricing"] == [
        {"model_uuid": "u-1", "price_key": "output_price_per_million", "price": 1.5}
    ]
    assert flat.children["model_capabilities"] == []
    assert len(flat.warnings) == 8
    assert row["raw"]["context_window"] == "lots"


def test_unknown_fields_are_reported_as_drift() -> None:
    flat = flatten({**make_model(1), "new_field": 1, "another": "x"})
    assert flat.unknown_fields == {"new_field", "another"}
    assert flatten(make_model(1)).unknown_fields == frozenset()


def test_changed_fields_uses_dotted_paths() -> None:
    price = "output_price_per_million"
    old = {"uuid": "u", "version": {"major": 1, "minor": 2}, "pricing": {price: 1}}
    new = {"uuid": "u", "version": {"major": 1, "minor": 3}, "pricing": {price: 2}, "name": "n"}
    assert changed_fields(old, new) == {
        "name": {"old": None, "new": "n"},
        "pricing.output_price_per_million": {"old": 1, "new": 2},
        "version.minor": {"old": 2, "new": 3},
    }
    assert changed_fields(old, {**old, "is_foundational": False}) == {}


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "a", "b"])
    | st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000Z"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "created_at"]), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
_models = st.dictionaries(st.sampled_from(["name", "pricing", "updated_at", "tags"]), _values)


_EQUALS = {0: (0, 0.0, -0.0, False, "0", "", None), 1: (1, 1.0, True, "1"), 2: (2, 2.0, "2")}
"""Values Python calls equal, or the API may send for one another (zero values, int64 strings)."""
_typed_values = st.recursive(
    st.none() | st.sampled_from([0, 1, 2, "a"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "context_window"]), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
_typed_models = st.dictionaries(
    st.sampled_from(["context_window", "pricing", "tags", "is_foundational"]), _typed_values
)


def _retyped(value: Any, data: st.DataObject) -> Any:
    """``value`` with each number leaf perhaps sent as another of its equals."""
    if isinstance(value, dict):
        return {key: _retyped(item, data) for key, item in value.items()}
    if isinstance(value, list):
        return [_retyped(item, data) for item in value]
    if isinstance(value, int) and value in _EQUALS:
        return data.draw(st.sampled_from(_EQUALS[value]))
    return value


@given(old=_typed_models, data=st.data())
def test_the_content_hash_and_the_field_diff_never_disagree(
    old: dict[str, Any], data: st.DataObject
) -> None:
    # The README's rule: a new history row always shows a changed field. Values Python calls
    # equal but the hash does not (1, 1.0, true) are where the two could part.
    before, after = _retyped(old, data), _retyped(old, data)
    assert (content_hash(before) != content_hash(after)) == bool(changed_fields(before, after))


@given(old=_models, new=_models)
def test_changed_fields_equals_the_diff_of_the_normalised_models(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    # Only fields that differ as received are normalised; the answer must be the same as
    # normalising both models whole: zero values dropped, timestamps canonical.
    whole = normalize(old), normalize(new)
    expected = {
        key: {"old": whole[0].get(key), "new": whole[1].get(key)}
        for key in sorted(whole[0].keys() | whole[1].keys())
        if whole[0].get(key) != whole[1].get(key)
        and not (isinstance(whole[0].get(key), dict) and isinstance(whole[1].get(key), dict))
    }
    found = changed_fields(old, new)
    assert {path: change for path, change in found.items() if "." not in path} == expected
    for path in (p for p in found if "." in p):
        top = path.split(".")[0]
        assert isinstance(whole[0].get(top), dict) and isinstance(whole[1].get(top), dict)
