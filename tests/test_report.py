"""``etl report``: the data it reads on every dialect, and the page in a real headless Chromium.

The history is built the way ``tests/test_history.py`` builds its timeline: a catalog edited
between runs, loaded by the real code. The first four days are backfilled snapshots (so the
catalog spans several UTC days), the last two runs are syncs against the fake API.

The browser test drives Debian's ``chromium`` through ``chromedriver``'s W3C HTTP API with
``requests``: it opens the file, counts what each chart drew, checks every model link has its
section, that nothing was fetched and that the console logged no error, and saves a
screenshot. It skips when Chromium is not installed, except with CI=true, where it fails.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from etl import report
from etl.config import Settings
from etl.pipeline import run_backfill, run_sync
from tests.catalog import make_catalog
from tests.conftest import TOKEN
from tests.fakeapi import FakeApi

# -- a multi-day, multi-run history -------------------------------------------------------------


def _price(model: dict[str, Any], key: str, value: float) -> None:
    model["pricing"] = {**model.get("pricing", {}), key: value}


def make_history(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """Six runs over five UTC days: additions, removals, restores, renames, price changes.

    Returns:
        ``base`` (the models), ``catalogs`` (what each run saw), ``days`` (the observation
        times of the four backfilled snapshots) and ``repriced`` (uuid -> price keys changed).
    """
    base = make_catalog(14)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=n) + timedelta(hours=10) for n in (4, 3, 2, 1)]
    current = copy.deepcopy(base[:10])
    catalogs = [copy.deepcopy(current)]  # day 1: ten models added
    current[0]["name"] = "Renamed model"
    _price(current[3], "output_price_per_million", 2.5)
    del current[2]
    current.append(copy.deepcopy(base[10]))
    catalogs.append(copy.deepcopy(current))  # day 2: rename, price, removal, addition
    current.insert(2, copy.deepcopy(base[2]))
    _price(current[3], "output_price_per_million", 3.75)
    _price(current[3], "input_price_per_million", 0.9)
    _price(current[5], "output_price_per_million", 12.0)
    current[4]["lifecycle_status"] = "deprecated"
    catalogs.append(copy.deepcopy(current))  # day 3: restore, prices, lifecycle transition
    current += [copy.deepcopy(base[11]), copy.deepcopy(base[12])]
    current = [m for m in current if m["uuid"] != base[9]["uuid"]]
    catalogs.append(copy.deepcopy(current))  # day 4: two added, one removed
    _price(current[5], "output_price_per_million", 8.0)
    current[1]["name"] = "Renamed <b>twice</b> & escaped"
    current.append(copy.deepcopy(base[13]))
    catalogs.append(copy.deepcopy(current))  # today, sync: price, rename, addition
    catalogs.append(copy.deepcopy(current))  # today, sync: nothing changes

    for n, (when, catalog) in enumerate(zip(days, catalogs, strict=False)):
        path = tmp_path / f"snapshot-{n}.json"
        path.write_text(json.dumps(catalog))
        assert run_backfill(db_url, [str(path)], as_of=when).loaded == 1
    with FakeApi(models=catalogs[4], token=TOKEN) as api:
        for catalog in catalogs[4:]:
            api.models = catalog
            settings = Settings(database_url=db_url, api_url=api.url, token=TOKEN, per_page=5)
            assert run_sync(settings).status == "succeeded"
    repriced = {
        base[3]["uuid"]: {"output_price_per_million", "input_price_per_million"},
        base[5]["uuid"]: {"output_price_per_million"},
    }
    return {"base": base, "catalogs": catalogs, "days": days, "repriced": repriced}


@pytest.fixture
def history(db_url: str, tmp_path: Path) -> dict[str, Any]:
    return make_history(db_url, tmp_path)


@pytest.fixture(scope="module")
def sqlite_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The same history in one SQLite file, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("history")
    url = f"sqlite:///{root / 'catalog.db'}"
    return url, make_history(url, root)


# -- what the report reads, on every dialect ---------------------------------------------------


def test_report_reads_the_views_on_every_dialect(
    history: dict[str, Any], engine: sa.Engine
) -> None:
    """Everything the page shows, read on each dialect; then the same with ``--since``."""
    base, final = history["base"], history["catalogs"][-1]
    data = report.collect(engine, source="test")
    assert not data.empty
    assert data.runs_succeeded == 6
    assert data.models_now == len(final)

    assert [(day, models) for day, models, *_ in data.sizes][:4] == [
        (when.date(), len(catalog))
        for when, catalog in zip(history["days"], history["catalogs"], strict=False)
    ]
    assert len(data.sizes) == 5 and data.sizes[-1][1] == len(final)

    per_run = {run.run_id: run.counts for run in data.runs}
    assert data.initial_load is not None and data.initial_load.run_id == 1  # shown apart
    assert data.initial_load.counts == {"added": 10} and 1 not in per_run
    assert per_run[2] == {"added": 1, "changed": 2, "removed": 1}
    assert 6 not in per_run  # the last sync changed nothing
    assert data.runs_with_changes == 4

    assert dict(data.providers) == Counter(
        report.provider_name(m.get("provider", "")) for m in final
    )
    assert "MODEL_PROVIDER_" not in str(data.providers)
    assert dict(data.lifecycles) == Counter(m.get("lifecycle_status", "unknown") for m in final)

    prices = {p.model_uuid: p for p in data.prices}
    assert {uuid: set(p.steps) for uuid, p in prices.items()} == history["repriced"]
    five = prices[base[5]["uuid"]].steps["output_price_per_million"]
    changed = [(point.price, point.changed) for point in five]
    # From first seen, each change, then on to the latest run (run 6, which changed nothing).
    assert changed == [(base[5]["pricing"]["output_price_per_million"], False), (12.0, True),
                       (8.0, True), (8.0, False)]  # fmt: skip
    three = prices[base[3]["uuid"]].steps["output_price_per_million"]
    assert [p.price for p in three] == [base[3]["pricing"]["output_price_per_million"], 2.5,
                                        3.75, 3.75]  # fmt: skip

    assert data.changes_total == sum(len(group["models"]) for group in data.changes) == 24
    assert data.changes[0]["run_id"] == 5  # newest first
    [first_load] = [group for group in data.changes if group["run_id"] == 1]
    assert len(first_load["models"]) == 10  # ten identical "added": one row
    renamed = next(c for c in data.changes if c["kind"] == "changed" and c["run_id"] == 5
                   and "name" in c["changes"])  # fmt: skip
    assert renamed["changes"]["name"]["new"] == "Renamed <b>twice</b> & escaped"
    sections = {s.uuid: s for s in data.models}
    assert {m["uuid"] for c in data.changes for m in c["models"]} <= set(sections)
    zero = sections[base[0]["uuid"]]
    assert [(h["kind"], h["name"]) for h in zero.history] == [
        ("added", base[0]["name"]),
        ("changed", "Renamed model"),
    ]

    since = history["days"][-1]  # --since: the fourth day on
    data = report.collect(engine, source="test", since=since)
    assert data.sizes[0][0] == since.date()
    assert {run.run_id for run in data.runs} == {4, 5} and data.initial_load is None
    assert all(c["observed_at"] >= since for c in data.changes)
    assert {p.model_uuid for p in data.prices} == {history["base"][5]["uuid"]}
    assert data.models_now == len(history["catalogs"][-1])  # the current catalog stays whole


def test_empty_database_says_so(run_etl: Any, tmp_path: Path) -> None:
    never_migrated = report.render(report.collect(None, source="x"))
    assert 'id="empty"' in never_migrated and "<svg" not in never_migrated
    db_url = f"sqlite:///{tmp_path / 'catalog.db'}"  # migrated, but no run yet
    assert run_etl("--database-url", db_url, "db", "upgrade").exit_code == 0
    output = tmp_path / "out" / "empty.html"
    output.parent.mkdir()
    result = run_etl("--database-url", db_url, "report", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(output)
    page = output.read_text()
    assert "This database holds no catalog yet" in page and "<svg" not in page


def test_report_command_writes_an_escaped_page(
    sqlite_history: tuple[str, dict[str, Any]],
    tmp_path: Path,
    run_etl: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = sqlite_history
    monkeypatch.chdir(tmp_path)
    result = run_etl("--database-url", url, "report", "--since", "30d")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "Renamed &lt;b&gt;twice&lt;/b&gt; &amp; escaped" in page
    assert "<b>twice</b>" not in page
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert TOKEN not in page

    result = run_etl("--database-url", url, "report", "--output", str(tmp_path / "no" / "x.html"))
    assert result.exit_code == 2
    assert "cannot write the report to" in result.stderr


def test_nice_ticks() -> None:
    assert report.nice_ticks(10) == [0, 2.5, 5, 7.5, 10]
    assert report.nice_ticks(13) == [0, 5, 10, 15]
    assert report.nice_ticks(0) == [0, 0.25, 0.5, 0.75, 1]
    assert report.nice_ticks(0.0031)[-1] >= 0.0031
    assert report.nice_range(300, 308) == [300, 302, 304, 306, 308]  # scaled to the data
    assert report.nice_range(0.81, 1.47) == [0.8, 1, 1.2, 1.4, 1.6]
    assert report.nice_range(42, 42)[0] <= 42 <= report.nice_range(42, 42)[-1]


def test_provider_names_are_humanised() -> None:
    assert report.provider_name("MODEL_PROVIDER_DIGITALOCEAN") == "DigitalOcean"
    assert report.provider_name("MODEL_PROVIDER_OPENAI") == "OpenAI"
    assert report.provider_name("MODEL_PROVIDER_SOME_NEW_LAB") == "Some New Lab"
    assert report.provider_name("") == "unknown"


# -- the page in a real browser ----------------------------------------------------------------


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    why = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    """A headless Chromium session over chromedriver's W3C HTTP API."""

    def __init__(self, base: str, session: str) -> None:
        self.url = f"{base}/session/{session}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = requests.request(method, self.url + path, json=body, timeout=30)
        assert resp.ok, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json()["value"]

    def run(self, script: str) -> Any:
        return self.call("POST", "/execute/sync", {"script": script, "args": []})

    def console(self) -> list[dict[str, Any]]:
        return list(self.call("POST", "/se/log", {"type": "browser"}))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One Chromium for the module's tests (each navigates to its own page)."""
    chromium, driver = _browser()
    tmp_path = tmp_path_factory.mktemp("chromium")
    port = _free_port()
    log = (tmp_path / "chromedriver.log").open("w")
    proc = subprocess.Popen(
        [driver, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    session = None
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"{base}/status", timeout=2).json()["value"]["ready"]:
                    break
            except (requests.ConnectionError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.05)
        args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
        ]  # fmt: skip
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        resp = requests.post(
            f"{base}/session", json={"capabilities": {"alwaysMatch": capabilities}}, timeout=60
        )
        assert resp.ok, resp.text[:1000]
        session = resp.json()["value"]["sessionId"]
        yield Browser(base, session)
    finally:
        if session is not None:
            requests.delete(f"{base}/session/{session}", timeout=30)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# What each chart drew: marks carrying data, and whether the chart has a size on screen.
CHARTS_SCRIPT = """
return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = Array.from(svg.querySelectorAll('[data-value]'));
  return {
    chart: svg.dataset.chart,
    model: svg.dataset.model || null,
    marks: marks.length,
    drawn: marks.filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; }).length,
    lines: Array.from(svg.querySelectorAll('path.line')).filter(p => p.getTotalLength() > 0).length,
    width: box.width, height: box.height,
  };
});
"""

PAGE_SCRIPT = """
const links = Array.from(document.querySelectorAll('a[href^="#model-"]'));
return {
  title: document.title,
  links: links.length,
  broken: links.filter(a => !document.getElementById(a.getAttribute('href').slice(1)))
               .map(a => a.getAttribute('href')),
  sections: document.querySelectorAll('section.model').length,
  fetched: performance.getEntriesByType('resource').map(e => e.name),
  scripts: document.scripts.length,
  empty: !!document.getElementById('empty'),
  height: document.documentElement.scrollHeight,
};
"""


def _write_page(url: str, path: Path) -> Path:
    engine = sa.create_engine(url)
    try:
        return report.write_report(report.build_report(engine, source=url), path)
    finally:
        engine.dispose()


def test_report_renders_in_headless_chromium(
    sqlite_history: tuple[str, dict[str, Any]], tmp_path: Path, browser: Browser
) -> None:
    url, history = sqlite_history
    output = _write_page(url, tmp_path / "r.html")

    browser.call("POST", "/url", {"url": output.as_uri()})
    charts = browser.run(CHARTS_SCRIPT)
    page = browser.run(PAGE_SCRIPT)

    kinds = Counter(c["chart"] for c in charts)
    assert kinds == {"size": 1, "changes": 1, "providers": 1, "lifecycle": 1, "price": 2}, charts
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 50, chart
        assert chart["marks"] > 0 and chart["drawn"] == chart["marks"], chart
    by_kind = {c["chart"]: c for c in charts}
    assert by_kind["size"]["marks"] == 5 and by_kind["size"]["lines"] == 1
    assert by_kind["changes"]["marks"] >= 5  # a bar per kind per run that changed something
    providers = {m.get("provider", "unknown") for m in history["catalogs"][-1]}
    assert by_kind["providers"]["marks"] == len(providers)
    prices = {c["model"]: c for c in charts if c["chart"] == "price"}
    assert {uuid: c["lines"] for uuid, c in prices.items()} == {
        uuid: len(keys) for uuid, keys in history["repriced"].items()
    }

    assert page["title"] == "etl catalog report" and not page["empty"]
    assert page["links"] > 0 and page["broken"] == []
    assert page["sections"] >= 10
    assert page["fetched"] == [] and page["scripts"] == 0

    errors = [e for e in browser.console() if e.get("level") == "SEVERE"]
    assert errors == []
    # The console check can see errors: one logged on purpose shows up.
    browser.run("console.error('probe from the test')")
    assert any("probe from the test" in e.get("message", "") for e in browser.console())

    browser.call("POST", "/window/rect", {"width": 1280, "height": min(page["height"], 8000)})
    png = base64.b64decode(browser.call("GET", "/screenshot"))
    assert png.startswith(b"\x89PNG")
    (tmp_path / "report.png").write_bytes(png)
    if os.environ.get("ETL_REPORT_SCREENSHOT"):
        Path(os.environ["ETL_REPORT_SCREENSHOT"]).write_bytes(png)


def test_empty_report_renders_in_headless_chromium(tmp_path: Path, browser: Browser) -> None:
    output = report.write_report(report.build_report(None, source="sqlite://"), tmp_path / "e.html")
    browser.call("POST", "/url", {"url": output.as_uri()})
    page = browser.run(PAGE_SCRIPT)
    assert page["empty"] and page["fetched"] == []
    assert browser.run(CHARTS_SCRIPT) == []
    assert [e for e in browser.console() if e.get("level") == "SEVERE"] == []


# What a reader sees at 1400 px: text sizes as drawn (the font size times the SVG's scale),
# the axes' tick labels, and the grouped rows.
READING_SCRIPT = """
const drawn = t => parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a;
const charts = Array.from(document.querySelectorAll('svg.chart')).map(svg => ({
  chart: svg.dataset.chart,
  smallest: Math.min(...Array.from(svg.querySelectorAll('text')).map(drawn)),
  unit: (svg.querySelector('text.unit') || {}).textContent || null,
  y: Array.from(svg.querySelectorAll('text.tick.y')).map(t => t.textContent),
  x: Array.from(svg.querySelectorAll('text.tick.x')).map(t => t.textContent),
  labels: Array.from(svg.querySelectorAll('text.label')).map(t => t.textContent),
  runs: Array.from(new Set(Array.from(svg.querySelectorAll('rect[data-run]'))
                                .map(r => r.dataset.run))),
}));
const rows = Array.from(document.querySelectorAll('#changes tr.change'));
return {
  charts: charts,
  initial: (document.getElementById('initial-load') || {}).textContent || null,
  groups: rows.map(r => [r.dataset.models, r.querySelector('summary')
                                             ? r.querySelector('summary').textContent : null]),
};
"""


def test_report_reads_at_a_glance_in_headless_chromium(
    sqlite_history: tuple[str, dict[str, Any]], tmp_path: Path, browser: Browser
) -> None:
    url, history = sqlite_history
    output = _write_page(url, tmp_path / "r.html")
    browser.call("POST", "/window/rect", {"width": 1400, "height": 1000})
    browser.call("POST", "/url", {"url": output.as_uri()})
    seen = browser.run(READING_SCRIPT)
    charts = {c["chart"]: c for c in seen["charts"]}

    for chart in seen["charts"]:  # every label readable, the price charts' included
        assert chart["smallest"] >= 11, chart
    sizes = [len(c) for c in history["catalogs"]]
    size = charts["size"]
    assert size["unit"] == "models"
    assert 0 < float(size["y"][0]) <= min(sizes) and float(size["y"][-1]) >= max(sizes)
    assert all(re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", label) for label in size["x"]), size

    changes = charts["changes"]
    assert changes["unit"] == "changes"
    assert "1" not in changes["runs"]  # the initial load is shown apart...
    assert seen["initial"].startswith("10 modelsinitial load, run 1 on ")  # ...here
    assert changes["x"] and all(
        re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}( \d\d:\d\d)?", label) for label in changes["x"]
    ), changes["x"]

    prices = [c for c in seen["charts"] if c["chart"] == "price"]
    assert prices and all(c["unit"] == "$ per million tokens" for c in prices)
    assert all(label.startswith("$") for c in prices for label in c["y"])

    assert not any(label.startswith("MODEL_PROVIDER_") for label in charts["providers"]["labels"])
    assert ["10", "10 models"] in seen["groups"]  # the ten additions of run 1, one row
