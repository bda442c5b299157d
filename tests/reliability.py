"""A pytest plugin that writes docs/RELIABILITY.md from the reliability tests as they ran.

A test declares the scenario it proves with a marker, and reports the exit code it saw through
the ``reliability`` fixture::

    @pytest.mark.scenario("429 with Retry-After in seconds", outcome="recovered")
    def test_retry_after_seconds(reliability: Observation, ...) -> None:
        ...
        reliability.exit_code = result.exit_code

The scenario name may hold ``{name}`` fields, filled from the test's parameters (``"burst of
{status}"``). Each scenario becomes one row of the table; its dialects are those its test passed
on (the ``db_url`` parameter), so a dialect whose server was not configured is simply absent.

The plugin also provides the module-scoped ``one_engine_per_database`` fixture the reliability
tests use to keep SQLAlchemy's statement cache across runs (see its docstring).

With ``ETL_WRITE_RELIABILITY=1``, the end of the session rewrites docs/RELIABILITY.md, but only
when every scenario was collected and none was deselected (a partial run would write a partial
table); a scenario that failed is written as failed, never left out.

The plugin also gives tests a ``dialects`` marker: ``@pytest.mark.dialects("sqlite",
"postgresql")`` runs a test taking ``db_url`` on those dialects only, deselecting the others
(not skipping them: a skip would say a database was missing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db

ENV = "ETL_WRITE_RELIABILITY"
ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "RELIABILITY.md"
MODULES = ("tests/test_faults.py", "tests/test_properties.py")
"""Every module with scenarios: the file is written only when all of them ran."""
COMMAND = (
    "ETL_WRITE_RELIABILITY=1 ETL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\\n"
    "    ETL_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \\\n"
    "    .venv/bin/pytest -q " + " ".join(MODULES)
)
DIALECTS = ("sqlite", "postgresql", "mysql")
OUTCOMES = {
    "recovered": "the run succeeded and every catalog and history table equals what a clean "
    "sync of the same catalog writes (compared without timestamps and generated ids)",
    "failed cleanly": "the documented exit code and message; every table but `sync_runs` holds "
    "exactly the rows it held before, value for value; the run is recorded `failed` with its "
    "reason in `error`",
    "partial": "the run succeeded with what it could prove, recorded `complete = false`, and "
    "marked no model removed",
    "stored with warnings": "the run succeeded; the bad values are NULL (or kept, where they "
    "fit) in the typed columns, `raw` keeps the model, `sync_runs.warnings` counts them",
    "stored as sent": "the run succeeded and stored every value as it came",
    "skipped with a warning": "the run succeeded without the model; `sync_runs.warnings` counts it",
    "property": "a hypothesis property, held on every generated example",
}

_OBSERVATION = pytest.StashKey["Observation"]()


@dataclass
class Observation:
    """What one test saw: set ``exit_code`` after running the scenario."""

    exit_code: int | None = None


@dataclass
class _Scenario:
    section: str
    name: str
    outcome: str
    test: str
    order: tuple[int, int, int]
    """(module, line of the test function, collection index): the order of the source."""
    exit_codes: set[int] = field(default_factory=set)
    results: dict[str, str] = field(default_factory=dict)
    """dialect (or "-" when the test takes no database) -> passed / failed / skipped / xfail"""
    reason: str = ""


class _Collector:
    def __init__(self) -> None:
        self.scenarios: dict[tuple[str, str], _Scenario] = {}
        self.modules: set[str] = set()
        self.deselected = 0
        self.restricted: set[str] = set()
        """Node ids deselected by a ``dialects`` marker: by design, not a partial run."""

    # -- hooks -----------------------------------------------------------------------------------

    @pytest.hookimpl
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            marker = item.get_closest_marker("dialects")
            dialect = _params(item).get("db_url")
            wanted = marker is None or dialect is None or dialect in marker.args
            (keep if wanted else drop).append(item)
        if drop:
            self.restricted.update(item.nodeid for item in drop)
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    @pytest.hookimpl
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += sum(
            1
            for item in items
            if item.get_closest_marker("scenario") and item.nodeid not in self.restricted
        )

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for order, item in enumerate(session.items):
            marker = item.get_closest_marker("scenario")
            if marker is None:
                continue
            scenario = self._scenario(item, marker, order)
            self.scenarios.setdefault((scenario.section, scenario.name), scenario)
            self.modules.add(item.nodeid.split("::")[0])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        marker = item.get_closest_marker("scenario")
        if marker is None:
            return report
        scenario = self.scenarios[(_section(marker), _name(item, marker))]
        dialect = _dialect(item)
        if report.when == "call" or report.outcome != "passed":
            if hasattr(report, "wasxfail"):
                result = "xfail" if report.skipped else "failed"
                scenario.reason = report.wasxfail
            else:
                result = report.outcome
            # a failure in teardown still fails the scenario
            if scenario.results.get(dialect) in (None, "passed") or result == "failed":
                scenario.results[dialect] = result
        observation = item.stash.get(_OBSERVATION, None)
        seen = observation.exit_code if observation else None
        if report.when == "call" and report.passed and seen is not None:
            scenario.exit_codes.add(seen)
        return report

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if os.environ.get(ENV) != "1":
            return
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        missing = [module for module in MODULES if module not in self.modules]
        if missing or self.deselected:
            why = (
                "scenarios were deselected" if self.deselected else f"{', '.join(missing)} not run"
            )
            message = f"{ENV}=1 but {why}: {OUTPUT.relative_to(ROOT)} not written"
        else:
            OUTPUT.parent.mkdir(exist_ok=True)
            OUTPUT.write_text(self.render(), encoding="utf-8")
            message = f"wrote {OUTPUT.relative_to(ROOT)} ({len(self.scenarios)} scenarios)"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message)

    # -- rendering -------------------------------------------------------------------------------

    def render(self) -> str:
        scenarios = sorted(self.scenarios.values(), key=lambda s: s.order)
        sections: dict[str, list[_Scenario]] = {}
        for scenario in scenarios:
            sections.setdefault(scenario.section, []).append(scenario)
        tested = sorted(
            {d for s in scenarios for d, r in s.results.items() if r == "passed" and d != "-"},
            key=DIALECTS.index,
        )
        failed = [s for s in scenarios if "failed" in s.results.values()]
        lines = [
            "# Reliability",
            "",
            "<!-- Generated by tests/reliability.py from a test run: do not edit by hand. -->",
            "",
            "Every scenario below is a test; this file is written by the pytest plugin "
            "`tests/reliability.py` from the run that proved them, never typed by hand. "
            "Regenerate it (PostgreSQL and MariaDB running, as `.ci/run` starts them) with:",
            "",
            "```sh",
            COMMAND,
            "```",
            "",
            "Outcomes:",
            "",
            *[f"- **{name}**: {meaning}." for name, meaning in OUTCOMES.items()],
            "",
            "A dialect is listed when the scenario's test passed on it (`-`: the test takes no "
            "database). Exit codes are the CLI's, as documented in the README.",
            "",
        ]
        for section, members in sections.items():
            lines += [
                f"## {section}",
                "",
                "| scenario | outcome | exit code | dialects | test |",
                "| --- | --- | --- | --- | --- |",
            ]
            lines += [_row(scenario) for scenario in members]
            lines.append("")
        untested = [d for d in DIALECTS if d not in tested]
        summary = (
            f"{len(scenarios)} scenarios, tested on {', '.join(tested) or 'no database'}"
            + (f" (**not on {', '.join(untested)}**: its server was not set)" if untested else "")
            + "; "
            + (
                f"**{len(failed)} failed**: " + ", ".join(s.name for s in failed) + "."
                if failed
                else "all passed."
            )
        )
        known = [s for s in scenarios if "xfail" in s.results.values()]
        if known:
            summary = summary.rstrip(".") + f"; {len(known)} known gaps, listed below."
        lines.append(summary)
        if known:
            lines += ["", "Known gaps (tests marked xfail until fixed):", ""]
            lines += [f"- {s.name}: {s.reason}" for s in known]
        return "\n".join(lines) + "\n"

    def _scenario(self, item: pytest.Item, marker: pytest.Mark, order: int) -> _Scenario:
        outcome = marker.kwargs.get("outcome", "")
        if outcome not in OUTCOMES:
            raise pytest.UsageError(f"{item.nodeid}: unknown scenario outcome {outcome!r}")
        path, line, _ = item.location
        module = MODULES.index(path) if path in MODULES else len(MODULES)
        return _Scenario(
            section=_section(marker),
            name=_name(item, marker),
            outcome=outcome,
            test=_test_id(item),
            order=(module, line or 0, order),
        )


def _section(marker: pytest.Mark) -> str:
    return str(marker.kwargs.get("section", "Faults"))


def _params(item: pytest.Item) -> dict[str, Any]:
    callspec = getattr(item, "callspec", None)
    return dict(callspec.params) if callspec is not None else {}


def _name(item: pytest.Item, marker: pytest.Mark) -> str:
    return str(marker.args[0]).format(**_params(item))


def _dialect(item: pytest.Item) -> str:
    return str(_params(item).get("db_url", "-"))


def _test_id(item: pytest.Item) -> str:
    """The node id without the dialect: one id for the scenario on every database."""
    path, _, name = item.nodeid.partition("::")
    base, _, ids = name.partition("[")
    dialect = _dialect(item)
    kept = [part for part in ids.rstrip("]").split("-") if part and part != dialect]
    return f"{path}::{base}" + (f"[{'-'.join(kept)}]" if kept else "")


def _row(scenario: _Scenario) -> str:
    passed = [d for d in (*DIALECTS, "-") if scenario.results.get(d) == "passed"]
    dialects = ", ".join(passed) if passed else "none"
    failed = [d for d, result in scenario.results.items() if result == "failed"]
    known = [d for d, result in scenario.results.items() if result == "xfail"]
    if failed:
        dialects += f"; **FAILED on {', '.join(failed)}**"
    if known:
        dialects += f"; known gap on {', '.join(known)}"
    codes = " / ".join(str(code) for code in sorted(scenario.exit_codes)) or "-"
    cells = [scenario.name, scenario.outcome, codes, dialects, f"`{scenario.test}`"]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Observation:
    """Where a scenario test reports the exit code it observed."""
    observation = Observation()
    request.node.stash[_OBSERVATION] = observation
    return observation


@pytest.fixture(scope="module")
def one_engine_per_database() -> Iterator[None]:
    """Hands run_sync, which builds an Engine per run, one Engine per database instead.

    SQLAlchemy caches compiled statements per Engine; across the hundreds of runs of the
    reliability tests, compiling every statement afresh for each would cost a third of their
    time. A run still disposes the engine when it ends, so each run opens its own connections.
    """
    engines: dict[str, sa.Engine] = {}
    create_engine = db.create_engine

    def reuse(url: str) -> sa.Engine:
        if url not in engines:
            engines[url] = create_engine(url)
        return engines[url]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db, "create_engine", reuse)
        yield
    for engine in engines.values():
        engine.dispose()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "scenario(name, outcome, section='Faults'): a reliability scenario for "
        "docs/RELIABILITY.md (see tests/reliability.py)",
    )
    config.addinivalue_line(
        "markers", "dialects(*names): run this db_url test on these dialects only"
    )
    config.pluginmanager.register(_Collector(), "etl-reliability")
