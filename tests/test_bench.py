"""The benchmark runs end to end at a tiny size and reports every scenario.

Timings are the benchmark's business (docs/PERFORMANCE.md): nothing here asserts how fast
anything is, only that the script measures and reports what it should.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import requests

from bench.report import BEGIN, END, write_docs
from tests.catalog import make_catalog
from tests.fakeapi import MODELS_PATH

ROOT = Path(__file__).resolve().parents[1]


def test_quick_bench_measures_every_scenario(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--workdir", str(tmp_path / "work"),
         "--output", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    for heading in (
        "### Targets",
        "### Syncs",
        "### Where a sync's time goes",
        "### Backfill",
        "### Reading a long history",
        "### The derived history",
        "### `etl --help`",
    ):
        assert heading in text
    # The first sync of 50 models added 50 model rows, and the row counting saw it.
    assert re.search(r"^\| SQLite \| 50 \| first sync \| \+50 \|", text, re.MULTILINE)
    assert "models_as_of (etl.queries)" in text
    # The derived history's two targets were measured, and verify found the tables right.
    assert re.search(r"older than 12 loaded runs .*after: 0 differences", text)
    assert re.search(r"`etl verify` over 24 hourly runs .*\| [0-9.]+ s, 0 differences", text)
    verdicts = re.findall(r"^  (PASS|MISS)  ", result.stdout, re.MULTILINE)
    assert len(verdicts) >= 8


def test_fake_api_serves_a_catalog_file(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(make_catalog(3, seed=7)))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "--catalog-file", str(catalog), "--token", "t"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        body = requests.get(
            url + MODELS_PATH, headers={"Authorization": "Bearer t"}, timeout=5
        ).json()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert body["meta"]["total"] == 3
    assert [m["uuid"] for m in body["models"]] == [m["uuid"] for m in make_catalog(3, seed=7)]


def test_write_docs_replaces_only_the_marked_report(tmp_path: Path) -> None:
    docs = tmp_path / "PERFORMANCE.md"
    write_docs(docs, "first report")
    docs.write_text("# Intro\n\n" + docs.read_text() + "\n## Analysis\n\nkept\n")
    write_docs(docs, "second report")
    text = docs.read_text()
    assert text.startswith("# Intro\n")
    assert "second report" in text and "first report" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.endswith("## Analysis\n\nkept\n")
