"""The fault matrix (issue 5): whatever the network, the API or the data does, a sync either
recovers, leaving the database as a clean sync would, or fails cleanly, changing nothing.

Every test starts from a database holding a clean sync of a 15-model catalog, changes the catalog
upstream (a rename, a version bump, a price change, a removal, an addition), injects its fault
and syncs again, five models a page, so that most faults land on page 2 of 3, after page 1 went
into the run's transaction. Then one of:

* recovered: exit 0, and every catalog and history table equals, row for row, what a clean sync
  of the same two catalogs writes into a fresh SQLite database (timestamps and generated ids
  aside: they differ between any two runs);
* failed cleanly: the documented exit code and message, every table but ``sync_runs`` exactly as
  before the run, and the run recorded ``failed`` with its reason.

Each test carries a ``scenario`` marker: ``tests/reliability.py`` turns them into
docs/RELIABILITY.md. Retries never wait for real (``run_etl`` patches the sleep).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result

from etl import db, schema
from etl.config import Settings
from etl.errors import EtlError
from etl.pipeline import run_sync
from tests.catalog import make_catalog, make_model
from tests.conftest import TOKEN, _server_url, table_rows
from tests.fakeapi import MODELS_PATH, FakeApi, Fault, RecordedRequest
from tests.reliability import Observation

pytestmark = pytest.mark.usefixtures("one_engine_per_database")

PER_PAGE = 5
MAX_RETRIES = 3
"""Every sync here may try a request 4 times: a burst of 3 failures recovers, 4 does not."""
CATALOG = make_catalog(15)
DIALECTS = ["sqlite", "postgresql", "mysql"]

HTTP_ONLY = pytest.mark.dialects("sqlite", "postgresql")
"""For faults met before anything reaches the database, which then only rolls back: SQLite and
PostgreSQL. Scenarios whose writes differ (re-listing, partial listings, bad data) and one
failure per exit code also run on MariaDB. (``tests/reliability.py`` deselects the others.)"""

TABLES = schema.metadata.sorted_tables
CATALOG_TABLES = tuple(t.name for t in TABLES if t.name != "sync_runs")
_RUN_REFERENCES = frozenset({"run_id", "opened_by_run", "closed_by_run", "first_seen_run"})
_RUN_TIMES = frozenset({"first_seen_at", "valid_from", "observed_at"})
_OPEN_ENDS = frozenset({"valid_to", "removed_at", "span_class"})
"""Reduced to "still open": when a row closed, and so its length class, depends on timing."""
_GENERATED_IDS = frozenset({"history_id", "change_id"})
_OBSERVATIONS = frozenset({"observed_contents", "snapshots", "run_usecases", "etl_state"})
"""What runs observed, keyed by generated ids and digests of the bytes received: compared
through what they derive (every other table), and by catalog_snapshot when nothing may
change."""


def updated(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The catalog an hour later: one model renamed (page 1), one re-versioned and one repriced
    (page 2), the one at index 12 gone (page 3) and a new one at the end."""
    result = [dict(model) for model in models]
    result[3]["name"] = "Renamed while we slept"
    result[7]["version"] = {"major": 9, "minor": 1}
    result[8]["pricing"] = {"output_price_per_million": 42.0}
    del result[12]
    result.append(make_model(len(models)))
    return result


NEXT = updated(CATALOG)
CONFIRM = [1, 2, 3]
"""NEXT removes a model, so a recovered sync lists the catalog once more to confirm it."""


# -- comparing databases ----------------------------------------------------------------------


def catalog_snapshot(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table but sync_runs, exactly as stored."""
    return {name: table_rows(engine, name) for name in CATALOG_TABLES}


def content(engine: sa.Engine) -> dict[str, list[str]]:
    """Every catalog and history table (not the observations), comparable across runs and
    dialects: run timestamps and generated ids dropped, run ids replaced by the run's rank,
    valid_to/removed_at/span_class reduced to "still open", rows sorted."""
    rank = {row["id"]: n for n, row in enumerate(table_rows(engine, "sync_runs"), start=1)}

    def comparable(key: str, value: Any) -> Any:
        if key in _OPEN_ENDS:
            return value is None
        return rank.get(value) if key in _RUN_REFERENCES else value

    state: dict[str, list[str]] = {}
    for name, rows in catalog_snapshot(engine).items():
        if name in _OBSERVATIONS:
            continue
        state[name] = sorted(
            json.dumps(
                {
                    key: comparable(key, value)
                    for key, value in row.items()
                    if key not in _RUN_TIMES | _GENERATED_IDS
                },
                sort_keys=True,
                default=str,
            )
            for row in rows
        )
    return state


_CLEAN: dict[str, dict[str, list[str]]] = {}


def clean_content(*catalogs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """What clean syncs of ``catalogs``, in order, leave in a fresh SQLite database."""
    key = hashlib.sha256(json.dumps(catalogs, sort_keys=True).encode()).hexdigest()
    if key not in _CLEAN:
        with tempfile.TemporaryDirectory() as folder, FakeApi(token=TOKEN) as api:
            url = f"sqlite:///{Path(folder) / 'clean.db'}"
            settings = Settings(database_url=url, api_url=api.url, token=TOKEN, per_page=PER_PAGE)
            for catalog in catalogs:
                api.models = catalog
                run_sync(settings, sleep=lambda seconds: None)
            engine = db.create_engine(url)
            try:
                _CLEAN[key] = content(engine)
            finally:
                engine.dispose()
    return _CLEAN[key]


# -- the databases and the harness ----------------------------------------------------------------


@pytest.fixture(scope="module", params=DIALECTS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per dialect for the whole module, overriding conftest's fixture of the same
    name: migrating a new database for each test costs seconds on MariaDB, so :func:`harness`
    puts the seeded rows back before each test instead."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('faults') / 'catalog.db'}"
        return
    server = db.parse_url(_server_url(request.param))
    name = f"etl_faults_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if request.param == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


@pytest.fixture(scope="module")
def seeded(db_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row after a clean sync of CATALOG into the module's database."""
    with FakeApi(models=CATALOG, token=TOKEN) as api:
        settings = Settings(database_url=db_url, api_url=api.url, token=TOKEN, per_page=PER_PAGE)
        assert run_sync(settings, sleep=lambda seconds: None).inserted == len(CATALOG)
    engine = db.create_engine(db_url)
    try:
        return {table.name: table_rows(engine, table.name) for table in TABLES}
    finally:
        engine.dispose()


def restore(engine: sa.Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Puts every table back to ``rows``, in one transaction."""
    with engine.begin() as conn:
        for table in reversed(TABLES):
            conn.execute(table.delete())
        for table in TABLES:
            if rows[table.name]:
                conn.execute(table.insert(), rows[table.name])


@dataclass
class Outcome:
    """A sync's exit code, its error line, and its --json summary when it succeeded."""

    exit_code: int
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Harness:
    """A database synced once cleanly, the fake API now serving :data:`NEXT`, and checks."""

    run_etl: Any
    db_url: str
    engine: sa.Engine
    api: FakeApi
    observation: Observation
    before: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    runs_before: list[dict[str, Any]] = field(default_factory=list)
    unchanged: bool = False
    """Set once the test proved every catalog table unchanged (the next test need not restore)."""

    def sync(self, *args: str, api_url: str | None = None) -> Outcome:
        """``etl sync --json`` against the fake API, five a page, three retries."""
        result: Result = self.run_etl(
            "--database-url", self.db_url, "sync", "--api-url", api_url or self.api.url,
            "--per-page", str(PER_PAGE), "--max-retries", str(MAX_RETRIES), "--json", *args,
        )  # fmt: skip
        summary = json.loads(result.stdout) if result.exit_code == 0 else {}
        return self.observe(Outcome(result.exit_code, result.stderr.strip(), summary))

    def sync_with(self, **settings: Any) -> Outcome:
        """A sync through :func:`run_sync` itself, for settings the CLI does not offer; an
        error maps to its exit code as the CLI maps it."""
        values: dict[str, Any] = {
            "database_url": self.db_url, "api_url": self.api.url, "token": TOKEN,
            "per_page": PER_PAGE, "max_retries": MAX_RETRIES, **settings,
        }  # fmt: skip
        try:
            result = run_sync(Settings(**values), sleep=lambda seconds: None)
        except EtlError as exc:
            return self.observe(Outcome(exc.exit_code, f"etl: error: {exc}"))
        return self.observe(Outcome(0, "", result.as_dict()))

    def observe(self, outcome: Outcome) -> Outcome:
        self.observation.exit_code = outcome.exit_code
        return outcome

    def last_run(self) -> dict[str, Any]:
        return table_rows(self.engine, "sync_runs")[-1]

    def assert_recovered(
        self, outcome: Outcome, expected: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        """Exit 0, a complete run, and the tables of a clean sync of CATALOG then NEXT."""
        assert outcome.exit_code == 0, outcome.error
        assert content(self.engine) == (expected or clean_content(CATALOG, NEXT))
        run = self.last_run()
        assert run["status"] == "succeeded" and run["complete"] and run["error"] is None
        assert table_rows(self.engine, "sync_runs")[:-1] == self.runs_before
        return run

    def assert_failed_cleanly(self, outcome: Outcome, exit_code: int, reason: str) -> None:
        """The exit code and reason, nothing stored changed, the run recorded failed."""
        assert outcome.exit_code == exit_code, outcome.error
        assert reason in outcome.error
        assert "Traceback" not in outcome.error
        assert catalog_snapshot(self.engine) == self.before
        runs = table_rows(self.engine, "sync_runs")
        assert runs[:-1] == self.runs_before
        assert runs[-1]["status"] == "failed"
        assert reason in runs[-1]["error"]
        assert runs[-1]["finished_at"] is not None
        self.unchanged = True


@pytest.fixture(scope="module")
def fake_api() -> Iterator[FakeApi]:
    with FakeApi(token=TOKEN) as api:
        yield api


_UNCHANGED: set[str] = set()
"""Databases whose catalog tables the last test proved unchanged since :func:`restore`."""


@pytest.fixture
def harness(
    run_etl: Any,
    db_url: str,
    engine: sa.Engine,
    seeded: dict[str, list[dict[str, Any]]],
    fake_api: FakeApi,
    reliability: Observation,
) -> Iterator[Harness]:
    """The database as a clean sync of CATALOG left it; the fake API serving NEXT."""
    if db_url in _UNCHANGED:  # only the failed run's row to drop
        runs = schema.sync_runs
        with engine.begin() as conn:
            conn.execute(runs.delete().where(runs.c.id > max(r["id"] for r in seeded["sync_runs"])))
    else:
        restore(engine, seeded)
    _UNCHANGED.discard(db_url)
    fake_api.models, fake_api.faults, fake_api.transform = NEXT, [], None
    fake_api.ignore_per_page = False
    fake_api.reset_log()
    harness = Harness(run_etl, db_url, engine, fake_api, reliability)
    harness.before = {name: seeded[name] for name in CATALOG_TABLES}
    harness.runs_before = seeded["sync_runs"]
    yield harness
    if harness.unchanged:
        _UNCHANGED.add(db_url)


def pages(api: FakeApi) -> list[int | None]:
    return [request.page for request in api.requests]


def page_url(api: FakeApi, page: int) -> str:
    return f"{api.url}{MODELS_PATH}?page={page}&per_page={PER_PAGE}"


# -- rate limits --------------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.scenario("429 with Retry-After in seconds", outcome="recovered")
def test_429_with_retry_after_seconds(harness: Harness, run_etl: Any) -> None:
    harness.api.faults.append(Fault.rate_limited(retry_after="7", page=2))
    run = harness.assert_recovered(harness.sync())
    assert run_etl.waits == [7.0]
    assert pages(harness.api) == [1, 2, 2, 3, *CONFIRM]
    assert (run["requests"], run["retries"]) == (7, 1)


@HTTP_ONLY
@pytest.mark.scenario("429 with Retry-After as an HTTP date", outcome="recovered")
def test_429_with_retry_after_http_date(harness: Harness, run_etl: Any) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    harness.api.faults.append(
        Fault.rate_limited(retry_after=email.utils.format_datetime(when, usegmt=True), page=2)
    )
    harness.assert_recovered(harness.sync())
    (wait,) = run_etl.waits
    assert 25 < wait <= 30


@HTTP_ONLY
@pytest.mark.scenario("429 with only ratelimit-reset", outcome="recovered")
def test_429_with_only_ratelimit_reset(harness: Harness, run_etl: Any) -> None:
    reset = int(time.time()) + 20
    harness.api.faults.append(Fault.rate_limited(retry_after=None, reset=reset, page=2))
    harness.assert_recovered(harness.sync())
    (wait,) = run_etl.waits
    assert 15 < wait <= 20


@HTTP_ONLY
@pytest.mark.scenario(
    "429 on every attempt (longer than the retry budget)", outcome="failed cleanly"
)
def test_429_longer_than_the_retry_budget(harness: Harness) -> None:
    harness.api.faults.append(Fault.rate_limited(retry_after="1", page=2, times=MAX_RETRIES + 1))
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 4, "failed after 4 attempts: HTTP 429")


@HTTP_ONLY
@pytest.mark.scenario("429 asking to wait longer than --max-wait", outcome="failed cleanly")
def test_429_longer_than_max_wait(harness: Harness, run_etl: Any) -> None:
    harness.api.faults.append(Fault.rate_limited(retry_after="3600", page=2))
    outcome = harness.sync("--max-wait", "60")
    harness.assert_failed_cleanly(outcome, 4, "longer than --max-wait 60s; retry after")
    assert run_etl.waits == [] and pages(harness.api) == [1, 2]


# -- server errors ------------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.scenario("burst of {status} shorter than the retry budget", outcome="recovered")
def test_server_error_burst_shorter_than_the_budget(harness: Harness, status: int) -> None:
    harness.api.faults.append(Fault.server_error(status, page=2, times=MAX_RETRIES))
    run = harness.assert_recovered(harness.sync())
    assert run["retries"] == MAX_RETRIES
    assert pages(harness.api) == [1, 2, 2, 2, 2, 3, *CONFIRM]


@pytest.mark.parametrize(
    "status",
    [pytest.param(s, marks=HTTP_ONLY) if s != 503 else s for s in (500, 502, 503, 504)],
    ids=str,  # 503 on MariaDB too, as one failure with exit 4
)
@pytest.mark.scenario("burst of {status} longer than the retry budget", outcome="failed cleanly")
def test_server_error_burst_longer_than_the_budget(harness: Harness, status: int) -> None:
    harness.api.faults.append(Fault.server_error(status, page=2, times=MAX_RETRIES + 1))
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 4, f"failed after 4 attempts: HTTP {status}")


# -- the network --------------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.scenario("connection reset before the response", outcome="recovered")
def test_connection_reset_before_the_body(harness: Harness) -> None:
    harness.api.faults.append(Fault(action="reset", page=2, times=2))
    harness.assert_recovered(harness.sync())
    assert pages(harness.api) == [1, 2, 2, 2, 3, *CONFIRM]


@HTTP_ONLY
@pytest.mark.scenario("connection reset in the middle of the body", outcome="recovered")
def test_connection_reset_mid_body(harness: Harness) -> None:
    harness.api.faults.append(Fault(action="reset_mid_body", page=2, times=2))
    harness.assert_recovered(harness.sync())
    assert pages(harness.api) == [1, 2, 2, 2, 3, *CONFIRM]


@HTTP_ONLY
@pytest.mark.scenario("connection reset on every attempt", outcome="failed cleanly")
def test_connection_reset_on_every_attempt(harness: Harness) -> None:
    harness.api.faults.append(Fault(action="reset_mid_body", page=2, times=MAX_RETRIES + 1))
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 4, "failed after 4 attempts: connection broken")


@HTTP_ONLY
@pytest.mark.scenario("read timeout", outcome="recovered")
def test_read_timeout(harness: Harness) -> None:
    harness.api.faults.append(Fault(action="delay", delay=2.0, page=2))
    harness.assert_recovered(harness.sync_with(read_timeout=0.25))
    assert pages(harness.api) == [1, 2, 2, 3, *CONFIRM]


@HTTP_ONLY
@pytest.mark.scenario("read timeout on every attempt", outcome="failed cleanly")
def test_read_timeout_on_every_attempt(harness: Harness) -> None:
    harness.api.faults.append(Fault(action="delay", delay=2.0, page=2, times=2))
    outcome = harness.sync_with(read_timeout=0.25, max_retries=1)
    harness.assert_failed_cleanly(outcome, 4, "failed after 2 attempts: timeout")


@pytest.mark.scenario("connection refused (nothing listens)", outcome="failed cleanly")
def test_connection_refused(harness: Harness) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = harness.sync(api_url=f"http://127.0.0.1:{port}")
    harness.assert_failed_cleanly(outcome, 4, "failed after 4 attempts: connection error")


# -- bodies that are not a listing ----------------------------------------------------------------

TRUNCATED = b'{"links":{"pages":{"next":"x"}},"meta":{"total":25,"pages":3},"models":[{"uui'
HTML = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><hr>cloudflare</body></html>"
)


@pytest.mark.scenario("200 with truncated JSON", outcome="failed cleanly")
def test_200_with_truncated_json(harness: Harness) -> None:
    harness.api.faults.append(Fault(body=TRUNCATED, page=2))
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 5, "not JSON")
    assert pages(harness.api) == [1, 2]


@HTTP_ONLY
@pytest.mark.scenario("200 with an HTML page", outcome="failed cleanly")
def test_200_with_an_html_page(harness: Harness) -> None:
    harness.api.faults.append(Fault(body=HTML, headers={"Content-Type": "text/html"}, page=2))
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 5, "not JSON: '<!DOCTYPE html>")


@HTTP_ONLY
@pytest.mark.parametrize(
    ("shape", "body", "reason"),
    [
        (
            "`models` an object",
            {"meta": {"total": 25, "pages": 3}, "models": {"uuid": "x"}},
            "'models' is an object, not a list",
        ),
        ("a bare list", [{"uuid": "x"}], "expected a JSON object, got a list"),
        (
            "`meta.total` not a count",
            {"meta": {"total": "many", "pages": 3}, "models": [{"uuid": "x"}]},
            "meta.total is 'many', not a count",
        ),
    ],
    ids=["models-an-object", "a-bare-list", "meta-total-not-a-count"],
)
@pytest.mark.scenario("200 with JSON of the wrong shape: {shape}", outcome="failed cleanly")
def test_200_with_json_of_the_wrong_shape(
    harness: Harness, shape: str, body: Any, reason: str
) -> None:
    harness.api.faults.append(Fault(body=json.dumps(body), page=2))
    harness.assert_failed_cleanly(harness.sync(), 5, reason)


@HTTP_ONLY
@pytest.mark.scenario("200 with JSON nested too deeply to parse", outcome="failed cleanly")
def test_200_with_json_nested_too_deeply(harness: Harness) -> None:
    deep = '{"meta":{"total":25,"pages":3},"models":[{"uuid":"x","benchmark_score":'
    body = deep + "[" * 100_000 + "]" * 100_000 + "}]}"
    harness.api.faults.append(Fault(body=body, page=2))
    harness.assert_failed_cleanly(harness.sync(), 5, "JSON nested too deeply to parse")


# -- paging ---------------------------------------------------------------------------------------


def on_page(
    page: int, change: Callable[[dict[str, Any]], None], listings: int | None = None
) -> Callable[[RecordedRequest, dict[str, Any]], dict[str, Any]]:
    """A transform that changes ``page``'s body in the first ``listings`` listings (all: None);
    a request for page 1 starts a listing."""
    seen = 0

    def transform(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal seen
        if request.page == 1:
            seen += 1
        if request.page == page and (listings is None or seen <= listings):
            change(body)
        return body

    return transform


@pytest.mark.scenario(
    "an empty page in the middle of the list (the listing ends early)", outcome="partial"
)
def test_empty_page_in_the_middle(harness: Harness, engine: sa.Engine) -> None:
    harness.api.transform = on_page(2, lambda body: body.update(models=[]))
    outcome = harness.sync()
    assert outcome.exit_code == 0, outcome.error
    assert outcome.summary["complete"] is False
    summary = outcome.summary
    assert (summary["removed"], summary["inserted"], summary["updated"]) == (0, 0, 1)
    assert pages(harness.api) == [1, 2]
    run = harness.last_run()
    assert run["status"] == "succeeded" and not run["complete"] and run["removed"] == 0
    models = {row["uuid"]: row for row in table_rows(engine, "models")}
    assert all(row["removed_at"] is None for row in models.values())
    assert models[NEXT[3]["uuid"]]["name"] == "Renamed while we slept"  # page 1 was saved
    assert models[NEXT[8]["uuid"]]["raw"] == CATALOG[8]  # page 2 was not
    assert NEXT[-1]["uuid"] not in models  # nor page 3


@HTTP_ONLY
@pytest.mark.scenario("per_page ignored by the server (more pages, same data)", outcome="recovered")
def test_per_page_ignored(harness: Harness) -> None:
    bigger = [*NEXT, *(make_model(i) for i in range(len(NEXT) + 1, 30))]  # over 20
    harness.api.models = bigger
    harness.api.ignore_per_page = True  # 20 a page, whatever we ask
    run = harness.assert_recovered(
        harness.sync("--per-page", "200"), clean_content(CATALOG, bigger)
    )
    assert pages(harness.api) == [1, 2, 1, 2]  # the listing, then the one confirming a removal
    assert all(r.query["per_page"] == ["200"] for r in harness.api.requests)
    assert run["pages"] == 2


@HTTP_ONLY
@pytest.mark.scenario("a next link that loops back to an earlier page", outcome="failed cleanly")
def test_next_link_that_loops(harness: Harness) -> None:
    def back_to_page_1(body: dict[str, Any]) -> None:
        body["links"]["pages"]["next"] = page_url(harness.api, 1)

    harness.api.transform = on_page(2, back_to_page_1)
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 5, "page 2's next link points back to page 1")


@HTTP_ONLY
@pytest.mark.scenario("next links that never end (pages past meta.pages)", outcome="failed cleanly")
def test_next_links_that_never_end(harness: Harness) -> None:
    first_page = NEXT[:PER_PAGE]

    def endless(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        body["models"] = body["models"] or first_page  # past the end: page 1 again, forever
        body["links"] = {"pages": {"next": page_url(harness.api, (request.page or 1) + 1)}}
        return body

    harness.api.transform = endless
    outcome = harness.sync()
    # Past the end every page is page 1 again: the repeat stops it before the page margin does.
    harness.assert_failed_cleanly(outcome, 5, "page 5 repeats page 4's models")


def _bump(name: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["meta"][name] += 1

    return change


@pytest.mark.parametrize("meta", ["total", "pages"])
@pytest.mark.scenario(
    "meta.{meta} changing between pages, once (re-listed from page 1)", outcome="recovered"
)
def test_meta_changing_between_pages_once(harness: Harness, meta: str) -> None:
    harness.api.transform = on_page(2, _bump(meta), listings=1)
    harness.assert_recovered(harness.sync())
    assert pages(harness.api).count(1) == 3  # the second listing, then the confirmation


@pytest.mark.parametrize("meta", ["total", "pages"])
@pytest.mark.scenario(
    "meta.{meta} changing between pages in every listing", outcome="failed cleanly"
)
def test_meta_changing_between_pages_always(harness: Harness, meta: str) -> None:
    harness.api.transform = on_page(2, _bump(meta))
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 5, f"meta.{meta} changed from")
    assert "in each of 3 listings; nothing was written" in outcome.error
    assert pages(harness.api).count(1) == 3


# -- the catalog moving while we page -------------------------------------------------------------


def shift_after_page_1(
    api: FakeApi, move: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], times: int | None
) -> Callable[[RecordedRequest, dict[str, Any]], dict[str, Any]]:
    """Changes the served catalog right after page 1 went out, in the first ``times`` listings
    (every listing: None): the next pages come from the moved catalog."""
    listings = 0

    def transform(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal listings
        if request.page == 1:
            listings += 1
            if times is None or listings <= times:
                api.models = move(api.models)
        return body

    return transform


def last_to_front(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A model newly sorted first: page 2 repeats page 1's last model, the moved one is on none."""
    return [models[-1], *models[:-1]]


@pytest.mark.scenario(
    "the catalog shifts while paging: a model on two pages, once", outcome="recovered"
)
def test_shift_with_a_duplicate_relists_and_recovers(harness: Harness) -> None:
    harness.api.transform = shift_after_page_1(harness.api, last_to_front, times=1)
    harness.assert_recovered(harness.sync())
    assert pages(harness.api) == [1, 2, 3, 1, 2, 3, *CONFIRM]


@pytest.mark.scenario(
    "the catalog shifts while paging: a model deleted from a fetched page, so another shows "
    "on none (meta.total drops), once",
    outcome="recovered",
)
def test_shift_with_a_gap_relists_and_recovers(harness: Harness) -> None:
    harness.api.transform = shift_after_page_1(harness.api, lambda models: models[1:], times=1)
    # page 2 now starts one later: NEXT[5] is on no page; only NEXT[0] may be marked removed
    expected = clean_content(CATALOG, NEXT[1:])
    harness.assert_recovered(harness.sync(), expected)


@pytest.mark.scenario(
    "the catalog keeps shifting in every listing (never consistent)", outcome="failed cleanly"
)
def test_shift_that_never_stops_fails_cleanly(harness: Harness) -> None:
    harness.api.transform = shift_after_page_1(harness.api, last_to_front, times=None)
    outcome = harness.sync()
    harness.assert_failed_cleanly(outcome, 5, "models appeared twice")
    assert "in each of 3 listings; nothing was written" in outcome.error


@pytest.mark.scenario(
    "the catalog shifts while paging with meta.total unchanged (one model deleted, one added)",
    outcome="recovered",
)
def test_shift_that_keeps_the_total_marks_no_false_removal(harness: Harness) -> None:
    newcomer = make_model(len(NEXT) + 1)

    def swap(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*models[1:], newcomer]

    harness.api.transform = shift_after_page_1(harness.api, swap, times=1)
    # the confirming listing sees the catalog unshifted: nothing either listing saw is removed
    expected = clean_content(CATALOG, [*NEXT, newcomer])
    harness.assert_recovered(harness.sync(), expected)


# -- bad models (issue 5 section 2) -------------------------------------------------------------

BAD_DATA = "Bad models"


def models_row(engine: sa.Engine, uuid: str) -> dict[str, Any]:
    (row,) = [r for r in table_rows(engine, "models") if r["uuid"] == uuid]
    return row


def sync_with_bad_models(
    harness: Harness, bad: list[Any], *, replace: bool = False
) -> tuple[Outcome, dict[str, Any]]:
    """Serves NEXT with ``bad`` models added (or, with ``replace``, in place of NEXT's first
    ones, so they change existing models) and syncs; returns the outcome and the run's row."""
    models = [*bad, *NEXT[len(bad) :]] if replace else [*NEXT, *bad]
    harness.api.models = models
    outcome = harness.sync()
    assert outcome.exit_code == 0, outcome.error
    return outcome, harness.last_run()


@pytest.mark.scenario(
    "a model without a usable uuid (absent, null, empty, a number, over 64 characters)",
    outcome="skipped with a warning",
    section=BAD_DATA,
)
def test_model_without_a_uuid_is_skipped_with_a_warning(
    harness: Harness, engine: sa.Engine
) -> None:
    bad = [
        {k: v for k, v in make_model(30).items() if k != "uuid"},
        make_model(31, uuid=None),
        make_model(32, uuid=""),
        make_model(33, uuid=12345),
        make_model(34, uuid="u" * 65),
    ]
    outcome, run = sync_with_bad_models(harness, bad)
    assert run["status"] == "succeeded" and run["warnings"] == len(bad)
    assert outcome.summary["warnings"] == len(bad)
    assert "model without a usable uuid" in outcome.error  # logged, one line each
    stored = {row["uuid"] for row in table_rows(engine, "models")}
    assert stored == {m["uuid"] for m in CATALOG} | {m["uuid"] for m in NEXT}
    # the rest of the run as usual, but partial: a model it could not identify may be one it
    # holds, so it marks none removed (the one NEXT removed goes at the next complete run)
    assert run["removed"] == 0 and run["inserted"] == 1 and not run["complete"]


WRONG_TYPES = {
    "name": 123,
    "context_window": "lots",
    "is_foundational": "yes",
    "version": "1.2.3",
    "capabilities": "inference",
    "created_at": "yesterday",
    "pricing": [1, 2],
    "parameter_count": "big",
}
ABSURD_NUMBERS = {
    "context_window": "99999999999999999999999",
    "kb_max_chunk_size": 2**70,
    "parameter_count": 1e308,
    "version": {"major": -(2**64), "minor": 2},
    "pricing": {"output_price_per_million": 1e301, "input_price_per_million": 0.5},
    "updated_at": "0001-01-01T00:00:00+01:00",  # in year 0, once in UTC
}
HUGE_STRINGS = {
    "id": "i" * 300,
    "name": "n" * 10_000,
    "description": "d" * 100_000,
    "capabilities": ["inference", "c" * 1000],
    "x_unknown_blob": "b" * 200_000,
}
UNSTORABLE = {
    "name": "nul\x00in the middle",
    "description": "half a pair: \ud83d",
    "benchmark_score": {"mmlu": float("nan"), "arena": float("inf")},
}


@pytest.mark.parametrize(
    ("kind", "fields", "warnings", "typed"),
    [
        (
            "wrong types",
            WRONG_TYPES,
            8,
            {"name": None, "context_window": None, "is_foundational": False,
             "version_major": 0, "created_at": None, "parameter_count": None},
        ),
        (
            "an unknown enum value",
            {"provider": "MODEL_PROVIDER_MISTRAL"},
            1,
            {"provider": "MODEL_PROVIDER_MISTRAL"},
        ),
        (
            "absurd numbers and dates",
            ABSURD_NUMBERS,
            6,
            {"context_window": None, "kb_max_chunk_size": None, "parameter_count": None,
             "version_major": 0, "version_minor": 2, "updated_at": None},
        ),
        (
            "huge strings",
            HUGE_STRINGS,
            4,
            {"id": None, "name": None, "description": None},
        ),
    ],
    ids=["wrong-types", "unknown-enum", "absurd-numbers", "huge-strings"],
)  # fmt: skip
@pytest.mark.scenario("a new model with {kind}", outcome="stored with warnings", section=BAD_DATA)
def test_new_model_with_bad_values_is_stored_with_warnings(
    harness: Harness,
    engine: sa.Engine,
    kind: str,
    fields: dict[str, Any],
    warnings: int,
    typed: dict[str, Any],
) -> None:
    bad = make_model(40, **fields)
    outcome, run = sync_with_bad_models(harness, [bad])
    assert run["status"] == "succeeded" and run["warnings"] == warnings, outcome.error
    assert run["inserted"] == 2  # NEXT's new model and this one
    row = models_row(engine, bad["uuid"])
    assert {key: row[key] for key in typed} == typed
    assert row["raw"] == json.loads(json.dumps(bad))  # raw keeps the model as sent
    (history,) = [h for h in table_rows(engine, "model_history") if h["model_uuid"] == bad["uuid"]]
    assert history["raw"] == row["raw"] and history["valid_to"] is None


@pytest.mark.scenario(
    "an existing model changing to wrong types, absurd numbers and huge strings",
    outcome="stored with warnings",
    section=BAD_DATA,
)
def test_changed_model_with_bad_values_is_stored_with_warnings(
    harness: Harness, engine: sa.Engine, db_url: str, request: pytest.FixtureRequest
) -> None:
    target = NEXT[0]
    changed = {**target, **WRONG_TYPES, **ABSURD_NUMBERS, **HUGE_STRINGS, "name": "n" * 300}
    outcome, run = sync_with_bad_models(harness, [changed], replace=True)
    assert run["status"] == "succeeded" and run["warnings"] > 10, outcome.error
    assert run["updated"] == 4  # NEXT's three changes, and this one
    row = models_row(engine, target["uuid"])
    typed = {key: row[key] for key in ("id", "name", "description", "context_window")}
    assert typed == {"id": None, "name": None, "description": None, "context_window": None}
    assert row["raw"] == json.loads(json.dumps(changed))


@pytest.mark.parametrize("which", ["new", "changed"])
@pytest.mark.scenario(
    "a {which} model with values no database takes as they are (NUL, half a surrogate pair, "
    "NaN, infinity)",
    outcome="stored with warnings",
    section=BAD_DATA,
)
def test_model_with_unstorable_values_is_stored_with_warnings(
    harness: Harness, engine: sa.Engine, db_url: str, which: str, request: pytest.FixtureRequest
) -> None:
    model = {**NEXT[0], **UNSTORABLE} if which == "changed" else make_model(41, **UNSTORABLE)
    models = [model, *NEXT[1:]] if which == "changed" else [*NEXT, model]
    # JSON with escapes, NaN and Infinity, as no serialiser would write: sent as bytes
    page = {"meta": {"total": len(models), "pages": 1}, "models": models}
    harness.api.faults.append(Fault(body=json.dumps(page).encode(), page=1))
    outcome = harness.sync("--per-page", "200")
    assert outcome.exit_code == 0, outcome.error
    run = harness.last_run()
    assert run["status"] == "succeeded" and run["warnings"] == 2  # the NUL; the replacements
    row = models_row(engine, model["uuid"])
    assert (row["name"], row["description"]) == (None, "half a pair: \ufffd")
    assert row["raw"]["name"] == "nul\x00in the middle"
    assert row["raw"]["description"] == "half a pair: \ufffd"
    assert row["raw"]["benchmark_score"] == {"mmlu": None, "arena": None}


@pytest.mark.scenario(
    "a model whose list values differ only in case or trailing spaces",
    outcome="stored as sent",
    section=BAD_DATA,
)
def test_values_differing_only_in_case_are_kept_apart(
    harness: Harness, engine: sa.Engine, db_url: str, request: pytest.FixtureRequest
) -> None:
    model = make_model(42, capabilities=["vision", "Vision", "vision "])
    outcome, run = sync_with_bad_models(harness, [model])
    assert run["status"] == "succeeded", outcome.error
    rows = table_rows(engine, "model_capabilities")
    assert sorted(r["capability"] for r in rows if r["model_uuid"] == model["uuid"]) == [
        "Vision",
        "vision",
        "vision ",
    ]
