"""The data the bench measures on: catalogs and their 5% change, a year of archived hourly
snapshots, and a long history written straight into the tables.

Everything is deterministic for a given size and seed, so two runs measure the same bytes.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.catalog import make_catalog, make_model

CHANGE_EVERY = 20
"""Every 20th model changes between the first and the changed catalog: 5%."""
SNAPSHOT_START = datetime(2025, 1, 1, tzinfo=UTC)
ARCHIVE_URL = "https://api.digitalocean.com/v2/gen-ai/models"


def changed_model(model: dict[str, Any], step: int = 1) -> dict[str, Any]:
    """``model`` as it comes back after a routine edit: renamed, re-dated, repriced."""
    changed = dict(model)
    changed["name"] = f"{model.get('name', 'model')} (rev {step + 1})"
    changed["updated_at"] = f"2026-0{1 + step % 9}-15T12:00:00Z"
    pricing = model.get("pricing")
    if isinstance(pricing, dict) and pricing:
        key = sorted(pricing)[0]
        changed["pricing"] = {**pricing, key: round(float(pricing[key]) + 0.01 * step, 6)}
    return changed


def change_catalog(models: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The catalog after 5% of its models changed.

    Returns:
        The new catalog (same order, same uuids) and the indexes of the models that changed.
    """
    changed = list(models)
    indexes = list(range(CHANGE_EVERY // 2, len(models), CHANGE_EVERY))
    if not indexes and models:
        indexes = [0]
    for index in indexes:
        changed[index] = changed_model(models[index])
    return changed, indexes


def write_json(path: Path, value: Any) -> Path:
    """Writes ``value`` as compact JSON."""
    with path.open("w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False, separators=(",", ":"))
    return path


@dataclass
class Catalogs:
    """One catalog size: the first catalog, its 5% change, and where both are written."""

    size: int
    base: list[dict[str, Any]]
    changed: list[dict[str, Any]]
    changed_indexes: list[int]
    base_file: Path
    changed_file: Path


def prepare_catalogs(size: int, workdir: Path, seed: int = 0) -> Catalogs:
    """Generates the catalogs of ``size`` models and writes them for the fake API."""
    base = make_catalog(size, seed=seed)
    changed, indexes = change_catalog(base)
    return Catalogs(
        size=size,
        base=base,
        changed=changed,
        changed_indexes=indexes,
        base_file=write_json(workdir / f"catalog-{size}.json", base),
        changed_file=write_json(workdir / f"catalog-{size}-changed.json", changed),
    )


# -- archived snapshots ---------------------------------------------------------------------------


@dataclass
class SnapshotSet:
    """A folder of archived hourly snapshots."""

    directory: Path
    snapshots: int
    models: int
    distinct: int
    events: int
    bytes_on_disk: int


def write_snapshots(
    directory: Path,
    snapshots: int,
    models: int = 300,
    *,
    changes_per_day: int = 4,
    per_page: int = 200,
    seed: int = 0,
) -> SnapshotSet:
    """Writes ``snapshots`` hourly archive files of a catalog that changes a few times a day.

    The files are what ``etl sync --archive-dir`` writes: ``YYYY/MM/DD/<time>-run<N>.jsonl.gz``,
    one record a page with ``fetched_at``, ``url``, ``status`` and ``body``. A change event
    (``changes_per_day`` a day, at random hours) renames, re-versions, reprices or deprecates a
    model; now and then one is added, one removed, one restored.

    The record's head (``fetched_at``, ``url``) and its body are separate gzip members of the
    file, so the compressed body of an unchanged catalog is reused: a year takes seconds.
    """
    rng = random.Random(seed)
    pool = iter(range(models, 10**9))
    current = {m["uuid"]: m for m in make_catalog(models, seed=seed)}
    removed: list[dict[str, Any]] = []
    event_hours = _event_hours(snapshots, changes_per_day, rng)
    version = 0
    cache: dict[tuple[int, int], bytes] = {}
    events = 0
    size = 0
    for hour in range(snapshots):
        for _ in range(event_hours.get(hour, 0)):
            _apply_event(current, removed, rng, pool, seed, events)
            events += 1
            version += 1
            cache.clear()  # a version never comes back
        when = SNAPSHOT_START + timedelta(hours=hour)
        listing = list(current.values())
        pages = max(1, -(-len(listing) // per_page))
        name = f"{when:%Y%m%dT%H%M%SZ}-run{hour + 1}.jsonl.gz"
        path = directory / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = []
        for page in range(1, pages + 1):
            fetched = when + timedelta(seconds=2, milliseconds=150 * page)
            url = f"{ARCHIVE_URL}?page={page}&per_page={per_page}"
            head = (
                f'{{"fetched_at":"{fetched:%Y-%m-%dT%H:%M:%S.%f}Z","url":"{url}",'
                '"status":200,"body":'
            )
            parts.append(gzip.compress(head.encode(), compresslevel=6, mtime=0))
            body = cache.get((version, page))
            if body is None:
                body = gzip.compress(
                    _page_body(listing, page, pages, per_page) + b"}\n", compresslevel=6, mtime=0
                )
                cache[(version, page)] = body
            parts.append(body)
        data = b"".join(parts)
        path.write_bytes(data)
        size += len(data)
    return SnapshotSet(directory, snapshots, models, version + 1, events, size)


def _event_hours(snapshots: int, per_day: int, rng: random.Random) -> dict[int, int]:
    hours: dict[int, int] = {}
    for day in range(0, snapshots, 24):
        for _ in range(per_day):
            hour = day + rng.randrange(24)
            if 0 < hour < snapshots:
                hours[hour] = hours.get(hour, 0) + 1
    return hours


def _apply_event(
    current: dict[str, dict[str, Any]],
    removed: list[dict[str, Any]],
    rng: random.Random,
    pool: Iterator[int],
    seed: int,
    step: int,
) -> None:
    kind = rng.choices(
        ("rename", "version", "price", "deprecate", "add", "remove", "restore"),
        weights=(4, 3, 4, 2, 1, 1, 1),
    )[0]
    uuids = list(current)
    model = current[uuids[rng.randrange(len(uuids))]]
    if kind == "rename":
        current[model["uuid"]] = {**model, "name": f"{model.get('name', '')} ({step})"}
    elif kind == "version":
        version = dict(model.get("version") or {})
        version["minor"] = version.get("minor", 0) + 1
        current[model["uuid"]] = {**model, "version": version}
    elif kind == "price":
        current[model["uuid"]] = changed_model(model, step)
    elif kind == "deprecate":
        current[model["uuid"]] = {**model, "lifecycle_status": "deprecated"}
    elif kind == "add":
        new = make_model(next(pool), seed=seed)
        current[new["uuid"]] = new
    elif kind == "remove" and len(current) > 1:
        removed.append(current.pop(model["uuid"]))
    elif kind == "restore" and removed:
        back = removed.pop(0)
        current[back["uuid"]] = back


def _page_body(listing: list[dict[str, Any]], page: int, pages: int, per_page: int) -> bytes:
    links: dict[str, Any] = {}
    if pages > 1:
        found = {}
        if page > 1:
            found["first"] = f"{ARCHIVE_URL}?page=1&per_page={per_page}"
            found["previous"] = f"{ARCHIVE_URL}?page={page - 1}&per_page={per_page}"
        if page < pages:
            found["next"] = f"{ARCHIVE_URL}?page={page + 1}&per_page={per_page}"
            found["last"] = f"{ARCHIVE_URL}?page={pages}&per_page={per_page}"
        links = {"pages": found}
    body = {
        "links": links,
        "meta": {"total": len(listing), "page": page, "pages": pages},
        "models": listing[(page - 1) * per_page : page * per_page],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
