"""The benchmark: how fast etl is at every size, against the physical limits, measured in one run.

    .venv/bin/python bench/run.py [--quick] [--sizes 300,10000,50000] [--repeat 3]
                                  [--databases sqlite,postgresql] [--write-docs]

For each catalog size it generates the catalog (``tests.catalog.make_catalog``: every field of
the spec, about 2.5 KB a model) and the same catalog with 5% of its models changed, serves both
from ``python -m tests.fakeapi`` processes, and on each database measures, as whole
``python -m etl`` processes (wall time, interpreter start included; peak RSS; requests; rows
written per table): the first sync, a no-op re-sync and the re-sync after the change. In the same
run it measures the limits (``bench/limits.py``: fetch-only, write-only, write-changed) and the
phases of one instrumented in-process sync (``bench/phases.py``). Then: a backfill of hourly
archived snapshots of a 300-model catalog (default a year: 8,760), ``etl models --as-of`` and
every ``queries/*.sql`` on a history of 1,000,000 ``model_history`` rows, and ``etl --help``.

It prints a markdown report and each target as PASS or MISS; ``--write-docs`` puts the report in
``docs/PERFORMANCE.md`` (between its ``bench:begin``/``bench:end`` markers). Exit status 0 when
everything could be measured (whatever the targets say), 1 when a scenario failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from bench.measure import (
    ROOT,
    TOKEN,
    BenchError,
    Scratch,
    count_rows,
    etl_command,
    etl_script,
    fake_apis,
    machine_facts,
    python_env,
    row_delta,
    run_process,
)
from bench.results import Limits, Results, Sample, Samples

DOCS = ROOT / "docs" / "PERFORMANCE.md"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PARTS = ("sync", "backfill", "history", "projection", "help")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark etl against the physical limits (see docs/PERFORMANCE.md).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes to prove the script works: N=50, 24 snapshots of 50 models, 5,000 "
        "history rows, one run, SQLite only",
    )
    parser.add_argument("--sizes", help="catalog sizes, comma-separated (default 300,10000,50000)")
    parser.add_argument("--repeat", type=int, help="runs per scenario; medians are quoted (3)")
    parser.add_argument("--databases", help="sqlite,postgresql (default both)")
    parser.add_argument("--snapshots", type=int, help="hourly snapshots to backfill (8760)")
    parser.add_argument("--snapshot-models", type=int, help="models in each snapshot (300)")
    parser.add_argument("--history-rows", type=int, help="model_history rows (1000000)")
    parser.add_argument(
        "--projection-snapshots",
        type=int,
        help="older snapshots backfilled behind as many loaded runs (1000)",
    )
    parser.add_argument(
        "--projection-hours", type=int, help="hourly runs `etl verify` checks (8760: a year)"
    )
    parser.add_argument("--per-page", type=int, default=200, help="page size (200)")
    parser.add_argument(
        "--only", help=f"measure only these parts, comma-separated: {','.join(PARTS)}"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ETL_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server to create scratch databases on (ETL_BENCH_POSTGRES_URL; "
        f"default {DEFAULT_POSTGRES})",
    )
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"write the report into {DOCS.relative_to(ROOT)}"
    )
    parser.add_argument(
        "--query-timeout", type=float, default=60.0, help="stop a query after this (60 s)"
    )
    parser.add_argument(
        "--long-run",
        type=float,
        default=300.0,
        help="a scenario whose first run takes longer is not repeated (300 s)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = _ints(args.sizes) if args.sizes else ([50] if quick else [300, 10_000, 50_000])
    args.repeat = args.repeat or (1 if quick else 3)
    args.databases = (args.databases or ("sqlite" if quick else "sqlite,postgresql")).split(",")
    args.snapshots = args.snapshots or (24 if quick else 8760)
    args.snapshot_models = args.snapshot_models or (50 if quick else 300)
    args.history_rows = args.history_rows or (5_000 if quick else 1_000_000)
    args.projection_snapshots = args.projection_snapshots or (12 if quick else 1000)
    args.projection_hours = args.projection_hours or (24 if quick else 8760)
    args.only = args.only.split(",") if args.only else list(PARTS)
    for name in args.databases:
        if name not in ("sqlite", "postgresql"):
            parser.error(f"--databases: {name!r} is not sqlite or postgresql")
    for name in args.only:
        if name not in PARTS:
            parser.error(f"--only: {name!r} is not one of {', '.join(PARTS)}")
    if quick and args.write_docs:
        parser.error("--quick measures too little to document; drop --write-docs")
    return args


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Bench:
    """One bench run: its options, its scratch space, and what it measured."""

    def __init__(self, args: argparse.Namespace, command: str, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.scratch = Scratch(
            workdir, args.postgres_url if "postgresql" in args.databases else None
        )
        self.env = python_env()
        config = {
            "sizes": args.sizes,
            "repeat": args.repeat,
            "databases": args.databases,
            "snapshots": args.snapshots,
            "snapshot_models": args.snapshot_models,
            "history_rows": args.history_rows,
            "projection_snapshots": args.projection_snapshots,
            "projection_hours": args.projection_hours,
            "per_page": args.per_page,
            "only": args.only,
            "quick": args.quick,
        }
        self.results = Results(command=command, config=config)

    # -- running ----------------------------------------------------------------------------

    def run(self) -> Results:
        started = time.perf_counter()
        self.results.machine = machine_facts(
            self.args.postgres_url if "postgresql" in self.args.databases else None
        )
        try:
            if "sync" in self.args.only:
                for size in self.args.sizes:
                    self._guard(f"syncs of {size} models", self.measure_syncs, size)
            if "backfill" in self.args.only:
                self._guard("backfill", self.measure_backfill)
            if "history" in self.args.only:
                for dialect in self.args.databases:
                    self._guard(f"history on {dialect}", self.measure_history, dialect)
            if "projection" in self.args.only:
                self._guard("the derived history", self.measure_projection)
            if "help" in self.args.only:
                self._guard("etl --help", self.measure_help)
        finally:
            self.scratch.drop_all()
        self.results.seconds = time.perf_counter() - started
        return self.results

    def _guard(self, what: str, function: Any, *args: Any) -> None:
        try:
            function(*args)
        except BenchError as exc:
            log(f"error: {what}: {exc}")
            self.results.errors.append(f"{what}: {exc}")

    def etl(self, url: str, *args: str, timeout: float | None = None) -> Any:
        return run_process(
            [*etl_command(), "--database-url", url, *args],
            env=self.env,
            cwd=self.workdir,
            timeout=timeout,
        )

    # -- syncs ------------------------------------------------------------------------------

    def measure_syncs(self, size: int) -> None:
        from bench.workloads import prepare_catalogs

        log(f"generating a catalog of {size} models and its 5% change")
        catalogs = prepare_catalogs(size, self.workdir)
        log(f"{len(catalogs.changed_indexes)} models changed; starting the fake APIs")
        with fake_apis([catalogs.base_file, catalogs.changed_file]) as (api, changed_api):
            for dialect in self.args.databases:
                self._guard(
                    f"{dialect}, {size} models",
                    self._measure_syncs_on,
                    dialect,
                    size,
                    catalogs,
                    api,
                    changed_api,
                )
        catalogs.base_file.unlink(missing_ok=True)
        catalogs.changed_file.unlink(missing_ok=True)

    def _measure_syncs_on(
        self, dialect: str, size: int, catalogs: Any, api: str, changed_api: str
    ) -> None:
        repeat = self.args.repeat
        limits = self.results.limits.setdefault((dialect, size), Limits())
        for r in range(repeat):
            # Each round measures the limits and then etl, so that both see the machine in the
            # same state: on a shared VM its speed drifts by up to 2x over minutes.
            self._measure_limits(dialect, size, catalogs, api, limits, r)
            url = self.scratch.new(dialect, f"sync_{size}")
            cycle_start = time.perf_counter()
            for scenario, target in (("first", api), ("noop", api), ("changed", changed_api)):
                sample = self._sync(url, target)
                self.results.syncs.setdefault((dialect, size, scenario), Samples()).runs.append(
                    sample
                )
                log(
                    f"{dialect}, {size} models, {scenario} {r + 1}/{repeat}: "
                    f"{sample.wall_s:.2f}s, {sample.rss_mib:.0f} MiB"
                )
            self.scratch.drop(url)
            if time.perf_counter() - cycle_start > self.args.long_run and r + 1 < repeat:
                log(f"{dialect}, {size} models: slower than --long-run; not repeated")
                break
        log(f"{dialect}, {size} models: one instrumented in-process run of each scenario")
        url = self.scratch.new(dialect, f"phases_{size}")
        phases = run_process(
            [sys.executable, "-m", "bench.phases", "--db", url, "--api", api,
             "--changed-api", changed_api, "--token", TOKEN,
             "--per-page", str(self.args.per_page)],
            env=self.env, cwd=ROOT,
        ).json()  # fmt: skip
        self.scratch.drop(url)
        self.results.phases[(dialect, size)] = phases

    def _measure_limits(
        self, dialect: str, size: int, catalogs: Any, api: str, limits: Limits, round_: int
    ) -> None:
        """One run of each limit: fetch-only as a process of its own (its wall time is the
        whole-process limit), write-only and write-changed into a fresh database."""
        fetch_run = run_process(
            [sys.executable, "-m", "bench.limits", "fetch", "--api", api, "--token", TOKEN,
             "--per-page", str(self.args.per_page), "--repeat", "1"],
            env=self.env, cwd=ROOT,
        )  # fmt: skip
        for loop in fetch_run.json()["fetch"]:
            limits.fetch.append({**loop, "process_s": fetch_run.wall_s})
        url = self.scratch.new(dialect, f"limit_{size}_{round_}")
        written = run_process(
            [sys.executable, "-m", "bench.limits", "write", "--catalog", str(catalogs.base_file),
             "--changed", str(catalogs.changed_file), f"--db={url}"],
            env=self.env, cwd=ROOT,
        ).json()  # fmt: skip
        self.scratch.drop(url)
        limits.write.extend(written["write"])
        limits.changed.extend(written["changed"])
        log(
            f"{dialect}, {size} models, limits {round_ + 1}: "
            f"fetch-only {limits.fetch[-1]['seconds']:.2f}s, "
            f"write-only {limits.write[-1]['seconds']:.2f}s, "
            f"write-changed {limits.changed[-1]['seconds']:.2f}s"
        )

    def _sync(self, url: str, api: str) -> Sample:
        before = count_rows(url)
        run = self.etl(url, "sync", "--api-url", api, "--per-page", str(self.args.per_page),
                       "--json")  # fmt: skip
        summary = run.json()
        return Sample(
            wall_s=run.wall_s,
            rss_mib=run.peak_rss_mib,
            in_process_s=summary.get("duration_s"),
            rows=row_delta(before, count_rows(url)),
            summary=summary,
        )

    # -- backfill ---------------------------------------------------------------------------

    def measure_backfill(self) -> None:
        from bench.workloads import write_snapshots

        directory = self.workdir / "snapshots"
        shutil.rmtree(directory, ignore_errors=True)
        log(
            f"writing {self.args.snapshots} hourly snapshots "
            f"of a {self.args.snapshot_models}-model catalog"
        )
        start = time.perf_counter()
        snapshots = write_snapshots(directory, self.args.snapshots, self.args.snapshot_models)
        self.results.snapshots = {
            "snapshots": snapshots.snapshots,
            "models": snapshots.models,
            "distinct": snapshots.distinct,
            "events": snapshots.events,
            "mib": snapshots.bytes_on_disk / 1024 / 1024,
        }
        log(
            f"{snapshots.snapshots} files ({snapshots.distinct} distinct catalogs, "
            f"{snapshots.bytes_on_disk / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f}s"
        )
        read = run_process(
            [sys.executable, "-m", "bench.limits", "read", "--dir", str(directory),
             "--repeat", str(self.args.repeat)],
            env=self.env, cwd=ROOT,
        ).json()["read"]  # fmt: skip
        for dialect in self.args.databases:
            self.results.backfill_read[dialect] = read
            self._guard(f"backfill on {dialect}", self._backfill_on, dialect, directory)
        shutil.rmtree(directory, ignore_errors=True)

    def _backfill_on(self, dialect: str, directory: Path) -> None:
        samples = self.results.backfill.setdefault(dialect, Samples())
        for r in range(self.args.repeat):
            url = self.scratch.new(dialect, "backfill")
            run = self.etl(url, "backfill", str(directory), "--json")
            summary = run.json()
            samples.runs.append(
                Sample(
                    wall_s=run.wall_s,
                    rss_mib=run.peak_rss_mib,
                    in_process_s=summary.get("duration_s"),
                    rows=count_rows(url),
                    summary=summary,
                )
            )
            self.scratch.drop(url)
            log(f"{dialect}, backfill {r + 1}/{self.args.repeat}: {run.wall_s:.1f}s")
            if run.wall_s > self.args.long_run:
                log(f"{dialect}, backfill: slower than --long-run; not repeated")
                break

    # -- history ----------------------------------------------------------------------------

    def measure_history(self, dialect: str) -> None:
        from bench.history import build_history, time_queries

        url = self.scratch.new(dialect, "history")
        log(f"{dialect}: writing {self.args.history_rows} model_history rows")
        history = build_history(url, self.args.history_rows)
        history.counts = count_rows(url)
        log(f"{dialect}: history written in {history.seconds:.0f}s; timing the queries")
        self.results.history[dialect] = {
            "models": history.models,
            "rows": history.rows,
            "hours": history.hours,
            "seconds": history.seconds,
            "counts": history.counts,
            "as_of": history.at(0.5).isoformat(),
        }
        self.results.queries[dialect] = time_queries(
            history, self.args.repeat, self.args.query_timeout
        )
        samples = self.results.models_as_of.setdefault(dialect, Samples())
        when = history.at(0.5).strftime("%Y-%m-%dT%H:%M:%S")
        for _ in range(self.args.repeat):
            run = self.etl(url, "models", "--as-of", when, "--json")
            samples.runs.append(Sample(wall_s=run.wall_s, rss_mib=run.peak_rss_mib))
        self.scratch.drop(url)

    # -- the derived history (issue 12) --------------------------------------------------------

    def measure_projection(self) -> None:
        """Out-of-order backfills and ``etl verify`` on SQLite, by ``bench/projection.py``."""
        log(
            f"backfilling {self.args.projection_snapshots} snapshots behind as many loaded "
            f"runs, and verifying {self.args.projection_hours} hourly runs"
        )
        run = run_process(
            [sys.executable, "-m", "bench.projection",
             "--snapshots", str(self.args.projection_snapshots),
             "--hours", str(self.args.projection_hours),
             "--workdir", str(self.workdir / "projection")],
            env=self.env, cwd=ROOT,
        )  # fmt: skip
        self.results.projection = run.json()
        shutil.rmtree(self.workdir / "projection", ignore_errors=True)

    # -- etl --help -------------------------------------------------------------------------

    def measure_help(self) -> None:
        for _ in range(self.args.repeat if self.args.quick else max(3, self.args.repeat)):
            run = run_process([*etl_script(), "--help"], env=self.env, cwd=self.workdir)
            self.results.help.runs.append(Sample(wall_s=run.wall_s, rss_mib=run.peak_rss_mib))


def shown_command(argv: Sequence[str]) -> str:
    python = Path(sys.executable)
    if python.parent.parent.name == ".venv":
        shown = ".venv/bin/" + python.name
    else:
        try:
            shown = str(python.relative_to(ROOT))
        except ValueError:
            shown = str(python)
    return " ".join([shown, "bench/run.py", *(shlex.quote(a) for a in argv)])


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds, so scratch databases are dropped


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="etl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = Bench(args, shown_command(argv), workdir.resolve()).run()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    markdown = report.render(results)
    print(markdown)
    print(report.verdicts(results))
    if args.output:
        args.output.write_text(markdown + "\n")
    if args.write_docs:
        report.write_docs(DOCS, markdown)
        log(f"wrote {DOCS.relative_to(ROOT)}")
    for error in results.errors:
        log(f"error: {error}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
