"""``etl demo``: a real run without a token, against the fake API on 127.0.0.1.

A week of simulated catalog history goes through the same code a real deployment runs: the
first six days as archived snapshots loaded by :func:`etl.pipeline.run_backfill`, today as two
:func:`etl.pipeline.run_sync` runs against :class:`etl.fakeapi.FakeApi` (a real HTTP server on
127.0.0.1). The week holds what a dashboard is for: models added and removed, one restored,
price changes, deprecations, a renamed model and an edited licence that touches many models.
Then the report is written from the result. Nothing leaves the machine.
"""

from __future__ import annotations

import copy
import json
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from etl import db, report
from etl.config import Settings
from etl.errors import ConfigError, InvalidResponseError, MissingDatabaseError
from etl.fakeapi import FakeApi
from etl.fakecatalog import make_catalog
from etl.pipeline import run_backfill, run_sync

DEFAULT_DATABASE_URL = "sqlite:///demo.db"
DEFAULT_REPORT = "demo-report.html"
CATALOG_SIZE = 60
"""Models the simulated catalog draws from; the first day lists 50 of them."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo loaded.

    Attributes:
        database_url: The database it wrote, password masked.
        report: The report's absolute path.
        snapshots: Days loaded by backfill.
        syncs: Syncs run against the fake API.
        models_now: Models in the catalog at the end.
        changes: Change events recorded over the week.
        example_model: The id of a model with a long history, for ``etl history``.
    """

    database_url: str
    report: Path
    snapshots: int
    syncs: int
    models_now: int
    changes: int
    example_model: str


def _set_price(model: dict[str, Any], key: str, factor: float) -> None:
    pricing = dict(model.get("pricing") or {})
    pricing[key] = round(pricing.get(key, 1.0) * factor, 4)
    model["pricing"] = pricing


def simulated_week(size: int = CATALOG_SIZE) -> list[list[dict[str, Any]]]:
    """Eight listings: six days of snapshots, then two syncs today (the last changes nothing).

    Returns:
        The catalog each run sees, oldest first.
    """
    pool = make_catalog(size)
    current = copy.deepcopy(pool[:50])
    days: list[list[dict[str, Any]]] = [copy.deepcopy(current)]  # the initial load

    def find(i: int) -> dict[str, Any]:
        return next(m for m in current if m["uuid"] == pool[i]["uuid"])

    def step() -> None:
        days.append(copy.deepcopy(current))

    current += copy.deepcopy(pool[50:52])  # day 2: two added, one removed, a price cut
    current.remove(find(7))
    _set_price(find(3), "output_price_per_million", 0.8)
    step()
    licence = pool[0]["agreement"]["uuid"]  # day 3: a licence edited, a deprecation
    for model in current:
        if model["agreement"]["uuid"] == licence:
            model["agreement"] = {**model["agreement"], "name": "Apache License 2.0 (rev. 2)"}
    find(5)["lifecycle_status"] = "deprecated"
    step()
    current += copy.deepcopy(pool[52:55])  # day 4: three added, one restored, a price change
    restored = copy.deepcopy(pool[7])
    if restored["agreement"]["uuid"] == licence:
        restored["agreement"] = copy.deepcopy(find(0)["agreement"])
    current.insert(7, restored)
    _set_price(find(3), "input_price_per_million", 1.25)
    step()
    current.remove(find(10))  # day 5: two removed, a price rise
    current.remove(find(11))
    _set_price(find(12), "output_price_per_million", 1.5)
    step()
    current += copy.deepcopy(pool[55:56])  # day 6: one added, a deprecation, a rename
    find(20)["lifecycle_status"] = "deprecated"
    find(21)["name"] = find(21)["name"] + " (2025 edition)"
    step()
    current += copy.deepcopy(pool[56:58])  # today: two added, one removed, a price cut
    current.remove(find(30))
    _set_price(find(3), "output_price_per_million", 0.75)
    step()
    step()  # today, an hour later: nothing changed
    return days


def run_demo(
    database_url: str = DEFAULT_DATABASE_URL,
    report_path: str | Path = DEFAULT_REPORT,
    *,
    now: datetime | None = None,
) -> DemoResult:
    """Loads the simulated week into ``database_url`` and writes the report.

    Args:
        database_url: An empty (or missing) database; one that already holds runs is refused.
        report_path: Where to write the HTML report.
        now: The reference time; the snapshots are dated on the six days before it.

    Returns:
        What was loaded, and where.

    Raises:
        ConfigError: The database already holds runs (exit 2).
        EtlError: As a sync or backfill would.
    """
    now = now or datetime.now(UTC)
    _refuse_a_used_database(database_url)
    week = simulated_week()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="etl-demo-") as folder:
        for n, catalog in enumerate(week[:6]):
            observed = (now - timedelta(days=6 - n)).replace(minute=17, second=0, microsecond=0)
            path = Path(folder) / f"catalog-day{n + 1}.json"
            path.write_text(json.dumps(catalog), encoding="utf-8")
            loaded = run_backfill(database_url, [str(path)], as_of=observed)
            if loaded.failed:  # never for our own files; said plainly if it happens
                raise InvalidResponseError("; ".join(loaded.failed))
    with FakeApi(models=week[6], token=token) as api:
        for catalog in week[6:]:
            api.models = catalog
            settings = Settings(database_url=database_url, api_url=api.url, token=token)
            run_sync(settings)
    with db.read_only(database_url) as engine:
        data = report.collect(engine, source=db.mask_url(database_url))
        written = report.write_report(report.render(data), report_path)
    return DemoResult(
        database_url=db.mask_url(database_url),
        report=written,
        snapshots=6,
        syncs=len(week) - 6,
        models_now=data.models_now,
        changes=data.changes_total,
        example_model=str(week[0][3]["id"]),  # repriced three times
    )


def _refuse_a_used_database(database_url: str) -> None:
    from etl import queries

    try:
        with db.read_only(database_url) as engine:
            used = db.check_schema(engine) and queries.last_run(engine) is not None
    except MissingDatabaseError:
        return
    if used:
        raise ConfigError(
            f"{db.mask_url(database_url)} already holds runs; the demo loads a fresh database: "
            "delete it, or pass another --database-url"
        )
