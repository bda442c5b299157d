"""Property-based tests: models generated from the spec's ``apiModelPublic``, corrupted at every
level, never crash flattening or loading, and a model with a usable uuid is never lost.

:data:`MODEL` mirrors the spec's schema field by field (a test holds it to the spec); every value,
at every depth, may instead be a zero value, a null, or garbage: the wrong type, integers past 64
bits, NaN and infinities (Python's JSON parser takes them), huge and NUL-holding strings, half a
surrogate pair (JSON may escape one), nested junk, and fields the spec does not know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import db, schema
from etl.config import Settings
from etl.errors import InvalidResponseError
from etl.pipeline import run_sync
from etl.transform import (
    KNOWN_FIELDS,
    MAX_DEPTH,
    MAX_TEXT_BYTES,
    BadModel,
    content_hash,
    flatten,
)
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi, Fault

SPEC = (
    Path(__file__).resolve().parents[2] / "shared" / "spec" / "openapi"
    / "list_models_response.schema.json"
)  # fmt: skip
pytestmark = pytest.mark.usefixtures("one_engine_per_database")

PURE = settings(max_examples=300, deadline=None, database=None)
LOADING = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROPERTIES = "Bad models: properties"

# -- the spec's shapes, as strategies ----------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DOUBLE = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=30)
UUID = st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=64))
JSON_SCALAR = st.one_of(st.none(), st.booleans(), INT64, DOUBLE, st.text(max_size=12))
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 as the API sends it: 0, 3, 6 or 9 fraction digits, Z or an offset; any year."""
    moment = draw(st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)))
    digits = draw(st.sampled_from([0, 3, 6, 9]))
    fraction = f".{draw(st.integers(0, 10**digits - 1)):0{digits}d}" if digits else ""
    zone = draw(st.sampled_from(["Z", "z", "+00:00", "+05:30", "-08:00"]))
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S") + fraction + zone


MODEL: dict[str, Any] = {
    "agreement": {"description": TEXT, "name": TEXT, "url": TEXT, "uuid": UUID},
    "benchmark_score": st.dictionaries(st.text(max_size=8), JSON, max_size=4),
    "capabilities": [TEXT],
    "context_window": INT64.map(str),  # int64 as a JSON string, as the spec says
    "created_at": timestamps(),
    "description": st.text(max_size=200),
    "endpoints": [{"capabilities": [TEXT], "endpoint": TEXT}],
    "id": TEXT,
    "is_foundational": st.booleans(),
    "kb_default_chunk_size": INT64,
    "kb_max_chunk_size": INT64,
    "kb_min_chunk_size": INT64,
    "lifecycle_status": st.sampled_from(["active", "public-preview", "deprecated", "internal"]),
    "modalities": {"input": [TEXT], "output": [TEXT]},
    "model_availability": TEXT,
    "name": TEXT,
    "parameter_count": DOUBLE,
    "parent_uuid": UUID,
    "pricing": {
        key: DOUBLE
        for key in (
            "cache_read_input_price_per_million",
            "cache_write_1h_input_price_per_million",
            "cache_write_5m_input_price_per_million",
            "image_cache_read_input_price_per_million",
            "image_input_price_per_million",
            "image_output_price_per_million",
            "input_cache_read",
            "input_price_per_million",
            "output_price_per_million",
            "price_per_audio",
            "price_per_image",
            "price_per_megapixel",
            "price_per_second",
            "price_per_thousand_characters",
            "price_per_video",
            "reasoning_price_per_million",
            "text_cache_read_input_price_per_million",
            "text_input_price_per_million",
            "text_output_price_per_million",
        )
    },
    "provider": st.sampled_from(
        ["MODEL_PROVIDER_DIGITALOCEAN", "MODEL_PROVIDER_ANTHROPIC", "MODEL_PROVIDER_OPENAI"]
    ),
    "reasoning_efforts": [TEXT],
    "settings": [
        {
            "default_string": TEXT,
            "default_value": DOUBLE,
            "max": DOUBLE,
            "min": DOUBLE,
            "name": TEXT,
            "options": [TEXT],
            "step": DOUBLE,
            "type": TEXT,
        }
    ],
    "thinking": st.booleans(),
    "type": TEXT,
    "updated_at": timestamps(),
    "upload_complete": st.booleans(),
    "url": TEXT,
    "uuid": UUID,
    "version": {"major": INT64, "minor": INT64, "patch": INT64},
}
"""apiModelPublic: each property as the spec types it (nested objects as dicts, arrays as
one-element lists of their item)."""

ZERO = st.sampled_from([None, "", 0, 0.0, False, [], {}])
"""What the gateway means by "absent"."""
GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(min_size=250, max_size=300),
    st.just("x" * (MAX_TEXT_BYTES + 1)),
    st.text(max_size=8).map(lambda text: text + "\x00" + text),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
    JSON,
)
"""Values of the wrong type or that fit no column."""


def corruptible(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, ZERO, GARBAGE)


def strategy(shape: Any) -> st.SearchStrategy[Any]:
    """A strategy for ``shape`` (see :data:`MODEL`): every key optional, any value corrupt."""
    if isinstance(shape, dict):
        return corruptible(
            st.fixed_dictionaries({}, optional={k: strategy(v) for k, v in shape.items()})
        )
    if isinstance(shape, list):
        return corruptible(st.lists(strategy(shape[0]), max_size=3))
    return corruptible(shape)


UNKNOWN_FIELDS = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda key: key not in KNOWN_FIELDS), JSON, max_size=2
)


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    """A model as the API might send it, at its worst."""
    fields = draw(st.fixed_dictionaries({}, optional={k: strategy(v) for k, v in MODEL.items()}))
    return {**draw(UNKNOWN_FIELDS), **fields}


def usable_uuid(model: Any) -> str | None:
    """The uuid of a model etl must keep: a non-empty string of at most 64 characters that a
    database can store (no NUL, no half surrogate pair)."""
    uuid = model.get("uuid") if isinstance(model, dict) else None
    if not isinstance(uuid, str) or not 0 < len(uuid) <= 64 or "\x00" in uuid:
        return None
    try:
        uuid.encode()
    except UnicodeEncodeError:
        return None
    return uuid


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def storable(value: Any, column: sa.Column[Any]) -> bool:
    """Whether ``value`` goes into ``column`` on every dialect as it is."""
    if value is None:
        return column.nullable is not False
    if isinstance(column.type, sa.JSON | schema.StoredJSON):
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()  # raises if not
        return True
    if isinstance(value, str):
        length = getattr(column.type, "length", None)
        fits = length is None or len(value) <= length
        return fits and "\x00" not in value and len(value.encode()) <= MAX_TEXT_BYTES
    if isinstance(value, bool):
        return isinstance(column.type, sa.Boolean)
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, datetime):
        return value.tzinfo is not None
    return False


def test_the_strategies_cover_the_spec() -> None:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} not found")
    spec = json.loads(SPEC.read_text())["properties"]["models"]["items"]

    def shape(schema: dict[str, Any]) -> Any:
        if schema.get("type") == "object" and "properties" in schema:
            return {key: shape(value) for key, value in schema["properties"].items()}
        if schema.get("type") == "array":
            return [shape(schema["items"])]
        return None

    def ours(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: ours(item) for key, item in value.items()}
        if isinstance(value, list):
            return [ours(value[0])]
        return None

    mine = ours(MODEL)
    mine["benchmark_score"] = None  # an object of any shape, as the spec says
    assert mine == shape(spec)
    assert set(MODEL) == KNOWN_FIELDS


# -- flattening ---------------------------------------------------------------------------------


@pytest.mark.scenario(
    "any generated model: flatten raises nothing but BadModel, and every value it returns "
    "fits its column on every dialect",
    outcome="property",
    section=PROPERTIES,
)
@PURE
@given(st.one_of(models(), GARBAGE))
def test_flatten_raises_only_bad_model_and_returns_storable_rows(model: Any) -> None:
    try:
        flat = flatten(model)
    except BadModel:
        uuid = usable_uuid(model)
        assert uuid is None or depth(model) > MAX_DEPTH, f"model {uuid!r} was rejected"
        return
    assert flat.uuid == model["uuid"]
    columns = schema.models.columns
    for name, value in {**flat.model, "content_hash": flat.content_hash}.items():
        assert storable(value, columns[name]), (name, value)
    # raw is stored as raw_json: the same model, text every dialect takes (no lone surrogate)
    assert json.loads(flat.raw_json.encode()) == flat.model["raw"]
    for table, rows in flat.children.items():
        for row in rows:
            for name, value in row.items():
                assert storable(value, schema.metadata.tables[table].columns[name]), (name, value)
    if flat.agreement is not None:
        for name, value in flat.agreement.items():
            assert storable(value, schema.agreements.columns[name]), (name, value)
    assert flatten(model).content_hash == flat.content_hash


# -- loading ------------------------------------------------------------------------------------

POOL = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]
"""Uuids that recur across examples, so that later pages change, remove and restore models."""


@st.composite
def pages(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One to six models, with uuids unique on the page (a repeat means a shifting catalog)."""
    page = draw(
        st.lists(
            st.one_of(
                models(), st.builds(lambda m, u: {**m, "uuid": u}, models(), st.sampled_from(POOL))
            ),
            min_size=1,
            max_size=6,
        )
    )
    seen: set[str] = set()
    unique = []
    for model in page:
        uuid = model.get("uuid")
        if isinstance(uuid, str) and uuid:
            if uuid in seen:
                continue
            seen.add(uuid)
        unique.append(model)
    return unique


@pytest.fixture(scope="module")
def loading_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeApi]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('properties') / 'catalog.db'}"
    with FakeApi(token=TOKEN) as api:
        yield url, api


@pytest.mark.scenario(
    "any page of generated models, synced one after another (SQLite): the run succeeds, every "
    "model with a usable uuid is stored with its raw JSON, history stays consistent",
    outcome="property",
    section=PROPERTIES,
)
@LOADING
@given(page=pages())
def test_loading_never_crashes_nor_loses_a_model(
    loading_db: tuple[str, FakeApi], page: list[dict[str, Any]]
) -> None:
    url, api = loading_db
    body = {"meta": {"total": len(page), "pages": 1}, "models": page}
    api.faults.append(Fault(body=json.dumps(body).encode(), page=1))  # NaN, escapes and all
    storable = any(usable_uuid(m) is not None and depth(m) <= MAX_DEPTH for m in page)
    try:
        run_sync(Settings(database_url=url, api_url=api.url, token=TOKEN), sleep=lambda _: None)
    except InvalidResponseError as exc:  # junk is refused, never loaded as an empty catalog
        assert not storable, ascii(str(exc))
        return
    engine = db.create_engine(url)
    try:
        stored = {row["uuid"]: row for row in table_rows(engine, "models")}
        current = [r for r in table_rows(engine, "model_history") if r["valid_to"] is None]
        run = table_rows(engine, "sync_runs")[-1]
    finally:
        engine.dispose()
    assert run["status"] == "succeeded"
    for model in page:
        uuid = usable_uuid(model)
        if uuid is None or depth(model) > MAX_DEPTH:
            continue
        row = stored[uuid]
        assert row["removed_at"] is None
        if _clean_json(model):  # the same content (a resend without zero values is no change)
            assert content_hash(row["raw"]) == content_hash(model)
    present = {uuid for uuid, row in stored.items() if row["removed_at"] is None}
    assert sorted(r["model_uuid"] for r in current) == sorted(present)
    for history in current:
        assert history["content_hash"] == stored[history["model_uuid"]]["content_hash"]


def _clean_json(model: Any) -> bool:
    """Whether the model needs no repair: no NaN, infinity or half surrogate pair."""
    try:
        json.dumps(model, allow_nan=False, ensure_ascii=False).encode()
    except (ValueError, UnicodeEncodeError):
        return False
    return True
