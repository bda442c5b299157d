"""Where a sync's time goes: ``run_sync`` in-process, with timers around its phases.

Runs the three sync scenarios in one process (first sync and no-op re-sync against the first
catalog, then the re-sync against the changed one) on an empty database, and reports for each:

* ``total``: the whole ``run_sync`` call;
* ``schema``: ``etl.db.ensure_schema`` (migration check, or the first migration);
* ``state``: ``etl.load.load_state`` (reading what the tables hold before appending a run);
* ``skip``: ``etl.pipeline._read_fetched`` (reading the fetched snapshot file back);
* ``fetch``: ``Fetcher.get_json`` (HTTP and JSON parsing);
* ``flatten``: ``etl.observe.save_snapshot`` (flatten and store new contents, the snapshot);
* ``write``: ``Projector.apply`` and ``Projector.flush`` (the fold and its rows), and
  ``etl.load.rebuild`` when a load derives everything;
* ``sql``: time inside the database driver (any statement), and the rows each INSERT, UPDATE
  and DELETE touched, per table (from the cursor's rowcount);
* ``other``: the rest (commit, the run's own rows, locks, bookkeeping).

A phase whose function the code no longer has is reported as missing rather than failing.
Run as ``python -m bench.phases --db URL --api URL --changed-api URL --token T``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

_WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.IGNORECASE)

PHASES: dict[str, list[tuple[str, str]]] = {
    "schema": [("etl.db", "ensure_schema")],
    "state": [("etl.load", "load_state")],
    "skip": [("etl.pipeline", "_read_fetched")],
    "fetch": [("etl.http", "Fetcher.get_json")],
    "flatten": [("etl.load", "save_snapshot")],
    "write": [
        ("etl.load", "Projector.apply"),
        ("etl.load", "Projector.flush"),
        ("etl.load", "rebuild"),
    ],
}
"""Each phase's functions; for ``flatten`` only the first that exists (one calls the other)."""


class Timers:
    """Cumulative seconds per phase, and the database's share of it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.sql_seconds = 0.0
        self.statements = 0
        self.rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.missing: list[str] = []
        self._depth: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        self.seconds.clear()
        self.sql_seconds = 0.0
        self.statements = 0
        self.rows.clear()

    def install(self) -> None:
        for phase, targets in PHASES.items():
            found = False
            for module_name, attribute in targets:
                if phase == "flatten" and found:
                    break
                found = self._wrap(phase, module_name, attribute) or found
            if not found:
                self.missing.append(phase)
        self._listen()

    def _wrap(self, phase: str, module_name: str, attribute: str) -> bool:
        module = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        owner: Any = module
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                return False
        original = getattr(owner, name, None)
        if original is None or not callable(original):
            return False
        owner_dict = owner.__dict__ if isinstance(owner, type) else None
        if owner_dict is not None and name not in owner_dict:
            return False  # inherited: wrapping would time someone else's method
        setattr(owner, name, self._timed(phase, original))
        return True

    def _timed(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth[phase] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth[phase] -= 1
                if not self._depth[phase]:  # a phase calling itself counts once
                    self.seconds[phase] += time.perf_counter() - start

        return timed

    def _listen(self) -> None:
        import sqlalchemy as sa

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            conn.info["bench_started"] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            self.sql_seconds += time.perf_counter() - conn.info.pop("bench_started", 0.0)
            self.statements += 1
            match = _WRITE.match(statement)
            if match and cursor.rowcount is not None and cursor.rowcount > 0:
                verb = match.group(1).split()[0].lower()
                self.rows[match.group(2).lower()][verb] += cursor.rowcount

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)


def measure(url: str, api: str, token: str, per_page: int, timers: Timers) -> dict[str, Any]:
    """One instrumented ``run_sync``."""
    from etl.config import Settings
    from etl.pipeline import run_sync

    timers.reset()
    settings = Settings(database_url=url, api_url=api, token=token, per_page=per_page)
    start = time.perf_counter()
    result = run_sync(settings)
    total = time.perf_counter() - start
    phases = {name: timers.seconds.get(name, 0.0) for name in PHASES if name not in timers.missing}
    phases["other"] = max(0.0, total - sum(phases.values()))
    return {
        "total": total,
        "phases": phases,
        "sql_seconds": timers.sql_seconds,
        "statements": timers.statements,
        "rows": {table: dict(verbs) for table, verbs in sorted(timers.rows.items())},
        "requests": result.requests,
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    parser.add_argument("--db", required=True, help="an empty database")
    parser.add_argument("--api", required=True, help="the fake API serving the first catalog")
    parser.add_argument("--changed-api", required=True, help="... serving the changed catalog")
    parser.add_argument("--token", required=True)
    parser.add_argument("--per-page", type=int, default=200)
    args = parser.parse_args(argv)
    timers = Timers()
    timers.install()
    results = {}
    for scenario, api in (("first", args.api), ("noop", args.api), ("changed", args.changed_api)):
        results[scenario] = measure(args.db, api, args.token, args.per_page, timers)
    print(json.dumps({"scenarios": results, "missing": timers.missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
