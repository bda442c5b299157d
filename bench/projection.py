"""Issue 12's targets for the derived history: out-of-order backfills and ``etl verify``.

* ``backfill``: K hourly snapshots of a 300-model catalog backfilled into an empty database,
  against the same K snapshots backfilled into a database that already holds K later runs
  (the usual use of a backfill: archives older than the syncs). Target: at most 2x.
* ``verify``: ``etl verify`` over H hourly runs of a 300-model catalog (a year is 8,760).
  Target: under 30 s.

Snapshots are archive-like JSON files (one API response each), written once; each case runs
``etl.pipeline.run_backfill`` and ``run_verify`` in-process on SQLite. Run as
``python -m bench.projection [--snapshots K] [--hours H] [--workdir DIR]``; prints JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from etl.fakecatalog import make_catalog
from etl.pipeline import run_backfill, run_verify

START = datetime(2025, 1, 1, tzinfo=UTC)
MODELS = 300


@functools.cache
def _base() -> str:
    return json.dumps(make_catalog(MODELS))


def catalog_at(hour: int) -> list[dict[str, Any]]:
    """The catalog at an hour: every 10th hour one model is repriced, every 50th one leaves
    for a day, every 100th the shared agreement text is revised on one model."""
    models = json.loads(_base())
    for h in range(0, hour + 1, 10):
        model = models[(h // 10) % MODELS]
        model["pricing"] = {"output_price_per_million": 1.0 + (h % 97)}
    if hour % 50 < 24:
        del models[(hour // 50) % MODELS]
    return models


def write_snapshots(folder: Path, hours: range) -> list[Path]:
    """One API response file per hour, named by its time."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for hour in hours:
        models = catalog_at(hour)
        when = START + timedelta(hours=hour)
        path = folder / f"catalog-{when:%Y%m%dT%H%M%S}Z.json"
        body = {"models": models, "meta": {"total": len(models), "pages": 1, "page": 1}}
        path.write_text(json.dumps(body))
        paths.append(path)
    return paths


def bench_backfill(work: Path, snapshots: int) -> dict[str, Any]:
    older = write_snapshots(work / "older", range(snapshots))
    later = write_snapshots(work / "later", range(snapshots, 2 * snapshots))
    empty_url = f"sqlite:///{work / 'empty.db'}"
    started = time.perf_counter()
    loaded = run_backfill(empty_url, [str(p) for p in older])
    into_empty = time.perf_counter() - started
    live_url = f"sqlite:///{work / 'live.db'}"
    run_backfill(live_url, [str(p) for p in later])
    started = time.perf_counter()
    loaded_live = run_backfill(live_url, [str(p) for p in older])
    into_live = time.perf_counter() - started
    assert loaded.loaded == loaded_live.loaded == snapshots
    verified = run_verify(live_url)
    return {
        "snapshots": snapshots,
        "into_empty_s": round(into_empty, 2),
        "older_than_loaded_runs_s": round(into_live, 2),
        "ratio": round(into_live / into_empty, 2),
        "verify_differences_after": len(verified),
    }


def bench_verify(work: Path, hours: int) -> dict[str, Any]:
    url = f"sqlite:///{work / 'year.db'}"
    paths = write_snapshots(work / "year", range(hours))
    started = time.perf_counter()
    run_backfill(url, [str(p) for p in paths])
    load = time.perf_counter() - started
    started = time.perf_counter()
    differences = run_verify(url)
    seconds = time.perf_counter() - started
    return {
        "hours": hours,
        "backfill_s": round(load, 2),
        "verify_s": round(seconds, 2),
        "differences": len(differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=8760)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="etl-bench-projection-"))
    try:
        result = {
            "backfill": bench_backfill(work / "backfill", args.snapshots),
            "verify": bench_verify(work / "verify", args.hours),
        }
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
