"""What a bench run measured: plain data filled by ``bench/run.py``, read by ``bench/report.py``."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from etl import schema

SCENARIOS = {
    "first": "first sync",
    "noop": "no-op re-sync",
    "changed": "re-sync, 5% changed",
}
CHILD_TABLES = frozenset(table.name for table in schema.CHILD_TABLES)
QUIET_TABLES = frozenset({"sync_runs"})
"""Tables a no-op re-sync may write: only the run's own row."""


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


@dataclass
class Sample:
    """One whole-process run.

    Attributes:
        wall_s: Spawn to exit.
        rss_mib: Peak RSS.
        in_process_s: The duration etl itself reports (``duration_s``), when it does.
        rows: Rows added per table (count after minus count before).
        summary: The command's ``--json`` output.
    """

    wall_s: float
    rss_mib: float
    in_process_s: float | None = None
    rows: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Samples:
    """Repeated runs of one scenario; the report quotes medians."""

    runs: list[Sample] = field(default_factory=list)

    @property
    def wall(self) -> float | None:
        return median(s.wall_s for s in self.runs)

    @property
    def rss(self) -> float | None:
        return median(s.rss_mib for s in self.runs)

    @property
    def max_rss(self) -> float | None:
        return max((s.rss_mib for s in self.runs), default=None)

    @property
    def in_process(self) -> float | None:
        return median(s.in_process_s for s in self.runs if s.in_process_s is not None)

    def typical(self) -> Sample | None:
        """The run whose wall time is the median (the lower one of an even count)."""
        if not self.runs:
            return None
        ordered = sorted(self.runs, key=lambda s: s.wall_s)
        return ordered[(len(ordered) - 1) // 2]


@dataclass
class Limits:
    """The limits measured for one catalog size on one database."""

    fetch: list[dict[str, Any]] = field(default_factory=list)
    write: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fetch_s(self) -> float | None:
        return median(r["seconds"] for r in self.fetch)

    @property
    def write_s(self) -> float | None:
        return median(r["seconds"] for r in self.write)

    @property
    def changed_s(self) -> float | None:
        return median(r["seconds"] for r in self.changed)

    @property
    def fetch_process_s(self) -> float | None:
        """The fetch-only loop as a whole process: interpreter start and ``import requests``."""
        return median(r["process_s"] for r in self.fetch if "process_s" in r)

    def limit(self, scenario: str, whole_process: bool = False) -> float | None:
        """The scenario's physical limit: what it cannot be faster than.

        Args:
            scenario: first, noop or changed.
            whole_process: Start from the fetch-only process's wall time (to compare with
                etl's wall time) instead of its loop's (to compare with etl's own duration).
        """
        fetch = self.fetch_process_s if whole_process else self.fetch_s
        if fetch is None:
            return None
        extra = {"first": self.write_s, "noop": 0.0, "changed": self.changed_s}[scenario]
        return None if extra is None else fetch + extra


@dataclass
class Results:
    """Everything one bench run measured."""

    command: str
    config: dict[str, Any]
    machine: dict[str, str] = field(default_factory=dict)
    syncs: dict[tuple[str, int, str], Samples] = field(default_factory=dict)
    limits: dict[tuple[str, int], Limits] = field(default_factory=dict)
    phases: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    backfill: dict[str, Samples] = field(default_factory=dict)
    backfill_read: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    snapshots: dict[str, Any] = field(default_factory=dict)
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: dict[str, list[Any]] = field(default_factory=dict)
    models_as_of: dict[str, Samples] = field(default_factory=dict)
    projection: dict[str, Any] = field(default_factory=dict)
    """``bench/projection.py``'s result: ``backfill`` and ``verify``."""
    help: Samples = field(default_factory=Samples)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
