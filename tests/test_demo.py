"""``etl demo``: a week of catalog history without a token, end to end, on every dialect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db
from tests.conftest import table_rows


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "DIGITALOCEAN_"))}
    env["ETL_DATABASE_URL"] = "sqlite:///must-not-be-used.db"  # the demo never touches it
    return {**env, **extra}


def _etl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etl", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def test_demo_end_to_end_in_an_empty_folder(
    tmp_path: Path, run_etl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's first command: no token, no database, no network beyond 127.0.0.1."""
    done = _etl("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-report.html", "demo.db",
                                                          "demo.db.lock"]  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        "demo: a week of catalog history in sqlite:///demo.db: 6 days backfilled from "
        "snapshots, 2 syncs against a fake API on 127.0.0.1"
    )
    assert lines[1] == f"report: {tmp_path / 'demo-report.html'}"
    suggested = [line.strip() for line in lines[3:] if line.startswith("  etl --database-url")]
    assert len(suggested) >= 5
    monkeypatch.chdir(tmp_path)
    for command in suggested:  # every command it suggests works on what it loaded
        result = run_etl(*command.split()[1:])
        assert result.exit_code == 0, (command, result.output)
        assert result.stdout.strip(), command

    url = "sqlite:///demo.db"
    runs = json.loads(run_etl("--database-url", url, "runs", "--json").stdout)
    assert Counter(r["mode"] for r in runs) == {"backfill": 6, "sync": 2}
    assert all(r["status"] == "succeeded" and r["complete"] for r in runs)
    changes = json.loads(run_etl("--database-url", url, "changes", "--json").stdout)
    kinds = Counter(c["kind"] for c in changes)
    assert set(kinds) == {"added", "changed", "removed", "restored"}
    fields = Counter(f for c in changes for f in c["fields"].split(",") if f)
    assert fields["lifecycle_status"] == 2 and fields["agreement.name"] >= 10
    assert sum(n for f, n in fields.items() if f.startswith("pricing.")) >= 4

    again = run_etl("demo")
    assert again.exit_code == 2
    assert again.stderr == (
        "etl: error: sqlite:///demo.db already holds runs; the demo loads a fresh database: "
        "delete it, or pass another --database-url\n"
    )
    assert not (tmp_path / "must-not-be-used.db").exists()


def test_demo_loads_the_same_week_on_every_dialect(
    db_url: str, run_etl: Any, tmp_path: Path
) -> None:
    report = tmp_path / "week.html"
    result = run_etl("demo", "--database-url", db_url, "--output", str(report))
    assert result.exit_code == 0, result.output
    assert f"report: {report}" in result.stdout
    assert "etl: error" not in result.stderr
    engine = db.create_engine(db_url)
    try:
        assert len(table_rows(engine, "sync_runs")) == 8
        with engine.connect() as conn:
            present = conn.execute(
                sa.text("SELECT count(*) FROM models WHERE removed_at IS NULL")
            ).scalar_one()
    finally:
        engine.dispose()
    assert present == 55
    page = report.read_text()
    assert "Changes per run" in page and 'id="initial-load"' in page
    # The licence edit of day 3, one change per model using it, is one row of the report.
    licence = "agreement.name</code>: Apache License 2.0 → Apache License 2.0 (rev. 2)"
    assert page.count(licence) == 1
    assert '<tr class="change" data-models="23">' in page
