"""The bench's report: markdown tables of what was measured, and the targets as PASS or MISS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import CHILD_TABLES, QUIET_TABLES, SCENARIOS, Results, Samples

BEGIN = "<!-- bench:begin (written by bench/run.py --write-docs; edit outside the markers) -->"
END = "<!-- bench:end -->"
RATIO_SIZE = 10_000
"""Ratio targets apply from this catalog size: below it, interpreter start dominates."""
SMALL_SIZE = 300
MIB_LIMIT = 150.0
PHASE_COLUMNS = ("schema", "state", "fetch", "skip", "flatten", "write", "other")
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class Target:
    """One target of the issue, evaluated on one measurement."""

    goal: str
    measured: str
    ok: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.ok is None else "PASS" if self.ok else "MISS"


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ratio(value: float | None, limit: float | None) -> float | None:
    return None if value is None or not limit else value / limit


def _db(name: str) -> str:
    return NAMES.get(name, name)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# -- targets --------------------------------------------------------------------------------------


def _ratio_sizes(results: Results) -> list[int]:
    sizes = sorted({size for _, size, _ in results.syncs})
    return [s for s in sizes if s >= RATIO_SIZE] or sizes[-1:]


def _writes_outside_run(results: Results, dialect: str, size: int) -> list[str]:
    """Tables other than sync_runs that a no-op re-sync wrote to (counts, and rows touched)."""
    tables: set[str] = set()
    for sample in results.syncs.get((dialect, size, "noop"), Samples()).runs:
        tables.update(t for t, n in sample.rows.items() if n and t not in QUIET_TABLES)
    phases = results.phases.get((dialect, size), {}).get("scenarios", {}).get("noop")
    if phases:
        tables.update(t for t in phases["rows"] if t not in QUIET_TABLES)
    return sorted(tables)


def targets(results: Results) -> list[Target]:
    """Every target of the issue that this run measured."""
    found: list[Target] = []
    dialects = list(dict.fromkeys(d for d, _, _ in results.syncs))
    goals = {
        "first": ("first sync <= 1.5x (fetch-only + write-only)", 1.5),
        "noop": ("no-op re-sync <= 1.3x fetch-only", 1.3),
        "changed": ("5% re-sync <= 1.5x (fetch-only + write-changed)", 1.5),
    }
    for scenario, (goal, bound) in goals.items():
        for dialect in dialects:
            for size in _ratio_sizes(results):
                samples = results.syncs.get((dialect, size, scenario))
                limits = results.limits.get((dialect, size))
                if samples is None or limits is None:
                    continue
                limit = limits.limit(scenario)
                ratio = _ratio(samples.in_process, limit)
                whole = _ratio(samples.wall, limits.limit(scenario, whole_process=True))
                found.append(
                    Target(
                        f"{goal}, {_db(dialect)}, N={size:,}",
                        f"{_x(ratio)} ({_s(samples.in_process)} s vs {_s(limit)} s; "
                        f"whole processes {_x(whole)})",
                        None if ratio is None else ratio <= bound,
                    )
                )
    for dialect in dialects:
        for size in sorted({s for d, s, _ in results.syncs if d == dialect}):
            if (dialect, size, "noop") not in results.syncs:
                continue
            touched = _writes_outside_run(results, dialect, size)
            found.append(
                Target(
                    f"no-op re-sync writes no row but its run's, {_db(dialect)}, N={size:,}",
                    "only sync_runs" if not touched else "wrote " + ", ".join(touched),
                    not touched,
                )
            )
    for dialect in dialects:
        sizes = sorted({s for d, s, _ in results.syncs if d == dialect})
        peak = {
            size: max(
                (results.syncs[(dialect, size, sc)].max_rss or 0.0)
                for sc in SCENARIOS
                if (dialect, size, sc) in results.syncs
            )
            for size in sizes
        }
        if not sizes:
            continue
        largest = sizes[-1]
        found.append(
            Target(
                f"peak RSS < {MIB_LIMIT:.0f} MiB, {_db(dialect)}, N={largest:,}",
                f"{peak[largest]:.0f} MiB",
                peak[largest] < MIB_LIMIT,
            )
        )
        if len(sizes) > 1 and sizes[-2] >= RATIO_SIZE:
            growth = peak[largest] / peak[sizes[-2]]
            found.append(
                Target(
                    f"peak RSS grows < 1.5x from N={sizes[-2]:,} to {largest:,}, {_db(dialect)}",
                    f"{growth:.2f}x ({peak[sizes[-2]]:.0f} -> {peak[largest]:.0f} MiB)",
                    growth < 1.5,
                )
            )
    small = [s for _, s, _ in results.syncs if s <= SMALL_SIZE]
    if small and "sqlite" in dialects:
        size = max(small)
        for scenario, label in SCENARIOS.items():
            samples = results.syncs.get(("sqlite", size, scenario))
            if samples is not None:
                found.append(
                    Target(
                        f"{label} of {size:,} models, SQLite, whole process < 1.0 s",
                        f"{_s(samples.wall)} s",
                        samples.wall is not None and samples.wall < 1.0,
                    )
                )
    if results.help.runs:
        found.append(
            Target(
                "`etl --help` < 0.3 s",
                f"{_s(results.help.wall)} s",
                results.help.wall is not None and results.help.wall < 0.3,
            )
        )
    backfill = results.backfill.get("sqlite")
    if backfill is not None and backfill.runs:
        count = results.snapshots.get("snapshots", 0)
        found.append(
            Target(
                f"backfill of {count:,} snapshots < 2 min, SQLite",
                f"{_s(backfill.wall, 1)} s",
                backfill.wall is not None and backfill.wall < 120,
            )
        )
    found += _projection_targets(results.projection)
    for dialect, times in results.queries.items():
        rows = results.history.get(dialect, {}).get("rows", 0)
        as_of = next((q for q in times if q.name.startswith("models_as_of")), None)
        if as_of is not None:
            found.append(
                Target(
                    f"as-of query over {rows:,} history rows < 50 ms, {_db(dialect)}",
                    f"{_ms(as_of.median)} ms" if as_of.error is None else as_of.error,
                    as_of.error is None and as_of.median is not None and as_of.median < 0.05,
                )
            )
    return found


def _projection_targets(projection: dict[str, Any]) -> list[Target]:
    found = []
    backfill, verify = projection.get("backfill"), projection.get("verify")
    if backfill:
        count = backfill["snapshots"]
        found.append(
            Target(
                f"backfilling {count:,} hourly snapshots older than {count:,} loaded runs <= 2x "
                "the same backfill into an empty database, SQLite, 300 models",
                f"{_x(backfill['ratio'])} ({backfill['older_than_loaded_runs_s']} s vs "
                f"{backfill['into_empty_s']} s); `etl verify` after: "
                f"{backfill['verify_differences_after']} differences",
                backfill["ratio"] <= 2 and backfill["verify_differences_after"] == 0,
            )
        )
    if verify:
        found.append(
            Target(
                f"`etl verify` over {verify['hours']:,} hourly runs of 300 models < 30 s, SQLite",
                f"{verify['verify_s']} s, {verify['differences']} differences (the runs "
                f"backfilled in {verify['backfill_s']} s)",
                verify["verify_s"] < 30 and verify["differences"] == 0,
            )
        )
    return found


def verdicts(results: Results) -> str:
    """The targets, one line each, for the terminal."""
    lines = ["", "Targets:"]
    for target in targets(results):
        lines.append(f"  {target.verdict:4}  {target.goal}: {target.measured}")
    return "\n".join(lines)


# -- markdown -------------------------------------------------------------------------------------


def render(results: Results) -> str:
    """The report, as markdown."""
    out: list[str] = []
    config = results.config
    out += [
        f"Measured by `{results.command}` in {results.seconds / 60:.1f} min; medians of "
        f"{config['repeat']} run(s) unless noted.",
        "",
    ]
    out += _table(["machine", ""], [[k, str(v)] for k, v in results.machine.items()])
    out += ["", "### Targets", ""]
    out += _table(
        ["target", "measured", "result"],
        [[t.goal, t.measured, f"**{t.verdict}**"] for t in targets(results)],
    )
    if results.syncs:
        out += _syncs(results)
    if results.phases:
        out += _phases(results)
    if results.backfill:
        out += _backfill(results)
    if results.queries:
        out += _queries(results)
    if results.projection:
        out += _projection(results.projection)
    if results.help.runs:
        out += [
            "",
            "### `etl --help`",
            "",
            f"{_s(results.help.wall, 3)} s wall (median of {len(results.help.runs)}), "
            f"peak RSS {_s(results.help.rss, 0)} MiB.",
        ]
    if results.errors:
        out += ["", "### Errors", ""] + [f"- {error}" for error in results.errors]
    return "\n".join(out)


def _syncs(results: Results) -> list[str]:
    out = [
        "",
        "### Syncs",
        "",
        f"Whole `python -m etl sync --per-page {results.config['per_page']}` processes against "
        "the fake API on 127.0.0.1 (wall time from spawn to exit, interpreter start included; "
        "in-process = the `duration_s` etl reports: all of `run_sync`, from opening the "
        "database to the commit). Limit: fetch-only for the no-op re-sync, fetch-only + "
        "write-only for the first sync, fetch-only + write-changed for the 5% re-sync. "
        "Ratio = in-process / limit, the loops' own times (what the targets judge); ratio whole = "
        "wall / whole limit, where the fetch-only loop is timed as a process of its own "
        "(interpreter start and `import requests` included), so both sides pay a start-up.",
        "",
    ]
    rows = []
    for (dialect, size, scenario), samples in results.syncs.items():
        limits = results.limits.get((dialect, size))
        limit = limits.limit(scenario) if limits else None
        whole = limits.limit(scenario, whole_process=True) if limits else None
        typical = samples.typical()
        requests = typical.summary.get("requests") if typical else None
        rows.append(
            [
                _db(dialect),
                f"{size:,}",
                SCENARIOS[scenario],
                _s(samples.wall),
                _s(samples.in_process),
                str(requests if requests is not None else "-"),
                _s(samples.rss, 0),
                _s(limit),
                _x(_ratio(samples.in_process, limit)),
                _s(whole),
                _x(_ratio(samples.wall, whole)),
                str(len(samples.runs)),
            ]
        )
    out += _table(
        ["database", "models", "scenario", "wall s", "in-process s", "requests",
         "peak RSS MiB", "limit s", "ratio", "whole limit s", "ratio whole", "runs"],
        rows,
    )  # fmt: skip
    out += [
        "",
        "Limits (`bench/limits.py`, same catalogs, same database server): fetch-only is a "
        "`requests` loop fetching and parsing every page; write-only is one transaction of Core "
        "executemany inserts of the already-flattened rows (models, agreements, child tables, "
        "model_history, model_changes, model_versions) into a freshly migrated database; "
        "write-changed is one transaction updating, replacing, closing and inserting only what "
        "the 5% change needs.",
        "",
    ]
    limit_rows = []
    for (dialect, size), limits in results.limits.items():
        fetch = limits.fetch[0] if limits.fetch else {}
        write = limits.write[0] if limits.write else {}
        changed = limits.changed[0] if limits.changed else {}
        limit_rows.append(
            [
                _db(dialect),
                f"{size:,}",
                _s(limits.fetch_s),
                _s(limits.fetch_process_s),
                str(fetch.get("requests", "-")),
                _s(fetch.get("bytes", 0) / 1024 / 1024, 1),
                _s(limits.write_s),
                f"{sum(write.get('rows', {}).values()):,}",
                _s(limits.changed_s),
                f"{sum(changed.get('rows', {}).values()):,}",
            ]
        )
    out += _table(
        ["database", "models", "fetch-only s", "as a process s", "requests", "MiB fetched",
         "write-only s",
         "rows", "write-changed s", "rows"],
        limit_rows,
    )  # fmt: skip
    out += [
        "",
        "Rows written per table by the median run (row count after minus before; child = the "
        "seven child tables together):",
        "",
    ]
    columns = ["models", "child", "model_history", "model_changes", "model_change_fields",
               "model_versions", "agreements", "agreement_history", "sync_runs"]  # fmt: skip
    row_rows = []
    for (dialect, size, scenario), samples in results.syncs.items():
        typical = samples.typical()
        if typical is None:
            continue
        grouped = dict(typical.rows)
        grouped["child"] = sum(n for t, n in typical.rows.items() if t in CHILD_TABLES)
        row_rows.append(
            [_db(dialect), f"{size:,}", SCENARIOS[scenario]]
            + [f"{grouped.get(c, 0):+,}" if grouped.get(c) else "0" for c in columns]
        )
    out += _table(["database", "models", "scenario", *columns], row_rows)
    return out


def _phases(results: Results) -> list[str]:
    out = [
        "",
        "### Where a sync's time goes",
        "",
        "One in-process `run_sync` of each scenario with timers around its phases "
        "(`bench/phases.py`): schema = migration check (or first migration), state = reading "
        "what the tables hold before appending, fetch = HTTP + JSON, skip = reading the "
        "fetched snapshot file back, flatten = storing new contents and the snapshot, write = "
        "the fold and its rows; SQL = time inside the driver (all phases); rows touched = "
        "rowcount of each INSERT/UPDATE/DELETE.",
        "",
    ]
    rows = []
    for (dialect, size), data in results.phases.items():
        for scenario, measured in data.get("scenarios", {}).items():
            phases = measured["phases"]
            total = measured["total"]

            def share(name: str, phases: dict[str, float] = phases, total: float = total) -> str:
                value = phases.get(name)
                if value is None:
                    return "-"
                return f"{value:.2f} ({100 * value / total:.0f}%)" if total else f"{value:.2f}"

            touched = ", ".join(
                f"{table} {sum(verbs.values()):,}" for table, verbs in measured["rows"].items()
            )
            rows.append(
                [
                    _db(dialect),
                    f"{size:,}",
                    SCENARIOS[scenario],
                    _s(total),
                    *(share(n) for n in PHASE_COLUMNS),
                    _s(measured["sql_seconds"]),
                    touched or "none",
                ]
            )
    out += _table(
        ["database", "models", "scenario", "total s", *PHASE_COLUMNS, "SQL s", "rows touched"],
        rows,
    )  # fmt: skip
    return out


def _backfill(results: Results) -> list[str]:
    info = results.snapshots
    out = [
        "",
        "### Backfill",
        "",
        f"`etl backfill DIR` of {info.get('snapshots', 0):,} hourly archive files "
        f"(`YYYY/MM/DD/<time>-run<N>.jsonl.gz`, as `etl sync --archive-dir` writes them) of a "
        f"{info.get('models', 0)}-model catalog changing {info.get('events', 0):,} times "
        f"({info.get('distinct', 0):,} distinct catalogs, {info.get('mib', 0):.0f} MiB on disk). "
        "Read-only limit: gunzip and parse every file, nothing else.",
        "",
    ]
    rows = []
    for dialect, samples in results.backfill.items():
        typical = samples.typical()
        summary = typical.summary if typical else {}
        read = results.backfill_read.get(dialect, [])
        read_s = sorted(r["seconds"] for r in read)[(len(read) - 1) // 2] if read else None
        history = typical.rows.get("model_history", 0) if typical else 0
        rows.append(
            [
                _db(dialect),
                _s(samples.wall, 1),
                _s(samples.in_process, 1),
                _s(read_s, 1),
                _x(_ratio(samples.wall, read_s)),
                _s(samples.rss, 0),
                f"{summary.get('loaded', '-')} / {summary.get('skipped', '-')}",
                f"{history:,}",
                str(len(samples.runs)),
            ]
        )
    out += _table(
        ["database", "wall s", "in-process s", "read-only s", "ratio", "peak RSS MiB",
         "loaded / skipped", "model_history rows", "runs"],
        rows,
    )  # fmt: skip
    return out


def _projection(projection: dict[str, Any]) -> list[str]:
    out = ["", "### The derived history", ""]
    backfill, verify = projection.get("backfill"), projection.get("verify")
    if backfill:
        out.append(
            f"Backfilling {backfill['snapshots']:,} hourly snapshots of a 300-model catalog "
            f"(`bench/projection.py`, in-process, SQLite): {backfill['into_empty_s']} s into an "
            f"empty database; {backfill['older_than_loaded_runs_s']} s into one already holding "
            f"{backfill['snapshots']:,} later runs ({_x(backfill['ratio'])}), after which "
            f"`etl verify` finds {backfill['verify_differences_after']} differences."
        )
    if verify:
        out += [
            "",
            f"`etl verify` over {verify['hours']:,} hourly runs: {verify['verify_s']} s, "
            f"{verify['differences']} differences; backfilling those runs took "
            f"{verify['backfill_s']} s.",
        ]
    return out


def _queries(results: Results) -> list[str]:
    out = ["", "### Reading a long history", ""]
    for dialect, info in results.history.items():
        counts = info.get("counts", {})
        out.append(
            f"{_db(dialect)}: {info['rows']:,} model_history rows for {info['models']:,} models "
            f"over {info['hours']:,} hourly runs ({counts.get('model_changes', 0):,} "
            f"model_changes, {counts.get('model_change_fields', 0):,} model_change_fields), "
            f"bulk-inserted in {info['seconds']:.0f} s; as-of time {info['as_of']}."
        )
    out += [
        "",
        "Each query once to warm up, then timed: the median of 15 runs when the warm-up took "
        "under 1 s (such short runs vary most on a shared VM), else of `--repeat` runs; a query "
        "slower than half the timeout is timed once.",
        "",
    ]
    rows: list[list[str]] = []
    for dialect, times in results.queries.items():
        for query in times:
            rows.append(
                [
                    _db(dialect),
                    query.name,
                    query.error or _ms(query.median),
                    f"{query.rows:,}" if query.error is None else "-",
                ]
            )
        samples = results.models_as_of.get(dialect)
        if samples is not None and samples.runs:
            rows.append(
                [
                    _db(dialect),
                    "`etl models --as-of T --json` (whole process)",
                    _ms(samples.wall),
                    "",
                ]
            )
    out += _table(["database", "query", "ms", "rows"], rows)
    return out


def write_docs(path: Path, markdown: str) -> None:
    """Replaces the report between the markers of ``path`` (or appends it, markers and all)."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n\n{markdown}\n\n{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
