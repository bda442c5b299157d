"""A model's child rows are rewritten only where their source fields changed.

A routine edit (renamed, repriced) opens a history row, but its capabilities, endpoints,
modalities, settings and reasoning efforts are what they were: rewriting their rows would be
most of a re-sync's writes. Each child table is a function of named fields of the model
(``etl.transform.CHILD_SOURCES``); these tests hold the loader to the tables a full derivation
gives, and ``CHILD_SOURCES`` to what ``flatten`` actually reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from etl import db
from etl.config import Settings
from etl.pipeline import run_sync
from etl.transform import CHILD_SOURCES, flatten
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi
from tests.test_projection_properties import assert_verifies

CHILDREN = tuple(CHILD_SOURCES)
_WRITE = re.compile(r"^\s*(DELETE\s+FROM|INSERT\s+INTO)\s+[`\"]?(\w+)", re.IGNORECASE)


@contextmanager
def written_tables() -> Iterator[set[str]]:
    """The tables any statement deletes from or inserts into, meanwhile."""
    found: set[str] = set()

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        match = _WRITE.match(statement)
        if match:
            found.add(match.group(2).lower())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", note)
    try:
        yield found
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", note)


def sync(url: str, models: list[dict[str, Any]]) -> Any:
    with FakeApi(models=models, token=TOKEN) as api:
        return run_sync(Settings(database_url=url, api_url=api.url, token=TOKEN, per_page=50))


def test_a_rename_rewrites_no_child_row(db_url: str) -> None:
    base = make_catalog(8, seed=3)
    sync(db_url, base)
    renamed = [{**m, "name": f"{m['name']} 2"} if i % 2 else m for i, m in enumerate(base)]
    with written_tables() as written:
        result = sync(db_url, renamed)
    assert result.updated == 4
    assert written.isdisjoint(CHILDREN), written & set(CHILDREN)
    assert_verifies(db_url)


def test_a_repricing_rewrites_only_the_pricing_rows(db_url: str) -> None:
    base = [m for m in make_catalog(8, seed=4) if m.get("pricing")]
    sync(db_url, base)
    repriced = [{**m, "pricing": {**m["pricing"], "output_price_per_million": 99.5}} for m in base]
    with written_tables() as written:
        sync(db_url, repriced)
    assert written & set(CHILDREN) == {"model_pricing"}
    engine = db.create_engine(db_url)
    try:
        prices = {
            (r["model_uuid"], r["price_key"]): r["price"]
            for r in table_rows(engine, "model_pricing")
        }
    finally:
        engine.dispose()
    assert all(prices[(m["uuid"], "output_price_per_million")] == 99.5 for m in repriced)
    assert_verifies(db_url)


def test_values_python_calls_equal_still_rewrite_the_rows(db_url: str) -> None:
    # 1 == True in Python, but true is not a number: the default is NULL in the new content.
    # Fields compared by == alone would keep the old rows; a full derivation writes the new.
    base = [
        {**m, "settings": [{**s, "default_value": 1} for s in m["settings"]]}
        for m in make_catalog(6, seed=5)
        if m.get("settings")
    ]
    sync(db_url, base)
    flipped = [
        {**m, "settings": [{**s, "default_value": True} for s in m["settings"]]} for m in base
    ]
    with written_tables() as written:
        result = sync(db_url, flipped)
    assert result.updated == len(base)
    assert "model_settings" in written
    engine = db.create_engine(db_url)
    try:
        assert {r["default_value"] for r in table_rows(engine, "model_settings")} == {None}
    finally:
        engine.dispose()
    assert_verifies(db_url)


_MODELS = make_catalog(40, seed=6)


@given(
    first=st.sampled_from(_MODELS),
    second=st.sampled_from(_MODELS),
    table=st.sampled_from(CHILDREN),
)
def test_each_child_table_reads_only_its_source_fields(
    first: dict[str, Any], second: dict[str, Any], table: str
) -> None:
    # The loader skips a table when these fields are equal: so flatten must not read others.
    sources = CHILD_SOURCES[table]
    mixed = {key: value for key, value in second.items() if key not in sources}
    mixed.update({key: first[key] for key in sources if key in first})
    mixed["uuid"] = first["uuid"]
    assert flatten(mixed).children[table] == flatten(first).children[table]
