"""Property tests of the projection (issue 12): whatever the order snapshots are loaded in,
the tables are the fold of the observations in time order.

Random sequences of snapshots of a small catalog (adds, removes, restores, agreement edits
across models sharing an agreement, zero-value and number style switches, same-content days,
partial and filtered runs) are loaded in random batches and orders, in-order appends and
out-of-order backfills mixed, with a sync now and then; after each load ``etl.load.verify``
finds nothing, and at the end the tables equal those of a fresh database that loaded the same
snapshots sorted by time. SQLite runs the hypothesis loop; a fixed handful of scenarios is
replayed on every dialect. A last test kills loads with SIGKILL at random moments.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import db
from etl.config import Settings
from etl.load import expected_rows, verify
from etl.pipeline import run_backfill, run_sync
from etl.project import Content, Run, State, fold
from etl.transform import content_hash
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi
from tests.test_backfill import catalog_state
from tests.test_processes import child_env, wait_until_lock_is_free

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
MODELS = 5
AGREEMENTS = ("aaaaaaaa-0000-4000-8000-00000000000a", "aaaaaaaa-0000-4000-8000-00000000000b")
BASE = [{**m, "description": f"model {i}"} for i, m in enumerate(make_catalog(MODELS, seed=7))]
ZERO_STYLES = ("absent", "string", "null", "number")
"""How a zero context_window is sent: all four are the same content."""
NUMBERS = ((1000, 1), (1000.0, 1), (1000, 1.0), (1000.0, True), (1000, True))
"""(size, flag) in benchmark_score: 1000 == 1000.0 and 1 == 1.0, but true is not 1."""
KINDS = ("complete", "partial", "filtered")

LOOP = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Member:
    """A model as one snapshot sends it."""

    index: int
    name: int
    terms: int
    zero: str
    number: int

    def as_json(self) -> dict[str, Any]:
        model = {k: v for k, v in BASE[self.index].items() if k != "context_window"}
        model["name"] = f"model {self.index} v{self.name}"
        model["agreement"] = {
            "uuid": AGREEMENTS[self.index % 2],
            "name": "Terms",
            "description": f"terms v{self.terms}",
            "url": "https://x.test/terms",
        }
        if self.zero != "absent":
            model["context_window"] = {"string": "0", "null": None, "number": 0}[self.zero]
        size, flag = NUMBERS[self.number]
        model["benchmark_score"] = {"size": size, "flag": flag}
        return model


@dataclass(frozen=True)
class Snap:
    """One snapshot: its models, how its listing was made, and its hour after DAY0."""

    hour: int
    members: tuple[Member, ...]
    kind: str

    @property
    def observed_at(self) -> datetime:
        return DAY0 + timedelta(hours=self.hour)

    def write(self, folder: Path) -> Path:
        models = [m.as_json() for m in self.members]
        if self.kind == "filtered":  # an archive record of a --public-only listing
            record = {
                "fetched_at": self.observed_at.isoformat().replace("+00:00", "Z"),
                "url": "https://api.test/v2/gen-ai/models?page=1&per_page=200&public_only=true",
                "status": 200,
                "body": {"links": {}, "meta": {"total": len(models)}, "models": models},
            }
            path = folder / f"run-{self.hour:04d}.jsonl"
            path.write_text(json.dumps(record) + "\n")
            return path
        body: dict[str, Any] = {"links": {}, "models": models}
        if self.kind == "complete":
            body["meta"] = {"total": len(models), "page": 1, "pages": 1}
        path = folder / f"catalog-{self.observed_at:%Y%m%dT%H%M%S}.json"
        path.write_text(json.dumps(body))
        return path


@dataclass(frozen=True)
class Scenario:
    """Snapshots in time order, the batches they are loaded in (indices into ``snaps``), and
    where a sync of ``live`` runs among the batches (None: no sync)."""

    snaps: tuple[Snap, ...]
    batches: tuple[tuple[int, ...], ...]
    live: tuple[Member, ...] = ()
    sync_after: int | None = None


def _member(draw: Any, index: int) -> Member:
    return Member(
        index,
        draw(st.integers(0, 1)),
        draw(st.integers(0, 1)),
        draw(st.sampled_from(ZERO_STYLES)),
        draw(st.integers(0, len(NUMBERS) - 1)),
    )


@st.composite
def scenarios(draw: Any) -> Scenario:
    count = draw(st.integers(2, 7))
    snaps: list[Snap] = []
    for hour in range(count):
        if snaps and draw(st.integers(0, 3)) == 0:  # the same catalog again
            snaps.append(Snap(hour, snaps[-1].members, snaps[-1].kind))
            continue
        present = draw(st.lists(st.integers(0, MODELS - 1), min_size=1, max_size=MODELS,
                                unique=True))  # fmt: skip
        members = tuple(_member(draw, i) for i in sorted(present))
        snaps.append(Snap(hour, members, draw(st.sampled_from(KINDS))))
    order = draw(st.permutations(range(count)))
    cuts = sorted(draw(st.sets(st.integers(1, count - 1), max_size=count - 1)))
    batches = tuple(tuple(order[a:b]) for a, b in zip([0, *cuts], [*cuts, count], strict=True))
    live: tuple[Member, ...] = ()
    sync_after = None
    if draw(st.booleans()):
        live = tuple(_member(draw, i) for i in range(MODELS) if draw(st.booleans())) or (
            _member(draw, 0),
        )
        sync_after = draw(st.integers(0, len(batches)))
    return Scenario(tuple(snaps), batches, live, sync_after)


def seeded_scenario(seed: int) -> Scenario:
    """A fixed scenario, for replaying on every dialect."""
    rng = random.Random(seed)

    def member(index: int) -> Member:
        return Member(index, rng.randint(0, 1), rng.randint(0, 1), rng.choice(ZERO_STYLES),
                      rng.randrange(len(NUMBERS)))  # fmt: skip

    snaps: list[Snap] = []
    for hour in range(6):
        if snaps and rng.random() < 0.25:
            snaps.append(Snap(hour, snaps[-1].members, snaps[-1].kind))
            continue
        present = sorted(rng.sample(range(MODELS), rng.randint(1, MODELS)))
        snaps.append(Snap(hour, tuple(member(i) for i in present), rng.choice(KINDS)))
    order = list(range(6))
    rng.shuffle(order)
    cuts = sorted(rng.sample(range(1, 6), rng.randint(1, 4)))
    batches = tuple(tuple(order[a:b]) for a, b in zip([0, *cuts], [*cuts, 6], strict=True))
    live = tuple(member(i) for i in range(MODELS) if rng.random() < 0.7) or (member(0),)
    return Scenario(tuple(snaps), batches, live, rng.randint(0, len(batches)))


@pytest.fixture(scope="module")
def live_api() -> Iterator[FakeApi]:
    with FakeApi(models=[BASE[0]], token=TOKEN) as api:
        yield api


def assert_verifies(url: str) -> None:
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            assert verify(conn) == []
    finally:
        engine.dispose()


def counted_runs(engine: sa.Engine) -> list[tuple[Any, ...]]:
    names = ("observed_at", "complete", "inserted", "updated", "unchanged", "removed", "restored")
    return sorted(tuple(r[n] for n in names) for r in table_rows(engine, "sync_runs"))


def assert_the_rules_hold(url: str) -> None:
    """What no load order may break: every new history row shows a changed field, and no
    history row is zero-length."""
    engine = db.create_engine(url)
    try:
        shown = {(r["run_id"], r["model_uuid"]) for r in table_rows(engine, "model_change_fields")}
        for change in table_rows(engine, "model_changes"):
            if change["kind"] == "changed":
                assert (change["run_id"], change["model_uuid"]) in shown, change
                assert change["changes"], change
        for table in ("model_history", "agreement_history"):
            assert all(r["valid_from"] != r["valid_to"] for r in table_rows(engine, table))
    finally:
        engine.dispose()


def state_of(url: str) -> tuple[dict[str, list[str]], list[tuple[Any, ...]]]:
    engine = db.create_engine(url)
    try:
        return catalog_state(engine), counted_runs(engine)
    finally:
        engine.dispose()


def play(scenario: Scenario, url: str, folder: Path, api: FakeApi) -> list[Path]:
    """Loads the scenario into ``url`` batch by batch (and its sync), verifying after each
    step; returns every snapshot file, the sync's archive included."""
    files = [snap.write(folder) for snap in scenario.snaps]
    archive = folder / "archive"
    for step in range(len(scenario.batches) + 1):
        if step == scenario.sync_after:
            api.models = [m.as_json() for m in scenario.live]
            run_sync(Settings(database_url=url, api_url=api.url, token=TOKEN,
                              archive_dir=str(archive)))  # fmt: skip
            assert_verifies(url)
        if step < len(scenario.batches):
            result = run_backfill(url, [str(files[i]) for i in scenario.batches[step]])
            assert result.failed == []
            assert_verifies(url)
    return files + sorted(archive.rglob("*.jsonl.gz"))


def assert_equals_time_order(scenario: Scenario, url: str, folder: Path, api: FakeApi) -> None:
    files = play(scenario, url, folder, api)
    reference = f"sqlite:///{folder / 'reference.db'}"
    assert run_backfill(reference, [str(f) for f in files]).failed == []
    assert_verifies(reference)
    assert state_of(url) == state_of(reference)
    assert_the_rules_hold(url)


@LOOP
@given(scenario=scenarios())
def test_any_load_order_gives_the_time_ordered_projection_on_sqlite(
    scenario: Scenario, live_api: FakeApi
) -> None:
    with tempfile.TemporaryDirectory(prefix="etl-prop-") as folder:
        url = f"sqlite:///{Path(folder) / 'catalog.db'}"
        assert_equals_time_order(scenario, url, Path(folder), live_api)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fixed_load_orders_give_the_time_ordered_projection_on_every_dialect(
    db_url: str, tmp_path: Path, live_api: FakeApi, seed: int
) -> None:
    assert_equals_time_order(seeded_scenario(seed), db_url, tmp_path, live_api)


# -- the shortcuts: the fold's repeated snapshot and the loader's incremental append ----------


@LOOP
@given(scenario=scenarios())
def test_appending_in_time_order_equals_deriving_everything(
    scenario: Scenario, live_api: FakeApi
) -> None:
    """Each snapshot loaded on its own, in time order: every run takes the append path (and
    repeated catalogs the shortcut); the tables equal what :func:`expected_rows` derives."""
    with tempfile.TemporaryDirectory(prefix="etl-prop-") as folder:
        url = f"sqlite:///{Path(folder) / 'catalog.db'}"
        for snap in scenario.snaps:
            assert run_backfill(url, [str(snap.write(Path(folder)))]).failed == []
        engine = db.create_engine(url)
        try:
            with engine.connect() as conn:
                expected, counts = expected_rows(conn)
                for table, rows in expected.items():
                    stored = table_rows(engine, table.name)
                    assert len(stored) == len(rows), table.name
                assert verify(conn) == []
            assert {r["id"]: r["unchanged"] for r in table_rows(engine, "sync_runs")} == {
                run_id: c.unchanged for run_id, c in counts.items()
            }
        finally:
            engine.dispose()


class _Contents:
    def __init__(self, contents: dict[int, tuple[Content, Any]]) -> None:
        self.contents = contents

    def __getitem__(self, content_id: int) -> Content:
        return self.contents[content_id][0]

    def raw(self, content_id: int) -> Any:
        return self.contents[content_id][1]

    def prefetch(self, ids: Sequence[int]) -> None:
        """Everything is in memory already."""

    def prefetch_raw(self, ids: Sequence[int]) -> None:
        """Likewise."""

    def agreements(self, ids: Iterable[int]) -> set[Any]:
        return {self[i].agreement for i in ids}


@settings(max_examples=200, deadline=None, database=None)
@given(scenario=scenarios())
def test_the_folds_shortcut_for_a_repeated_snapshot_changes_nothing(scenario: Scenario) -> None:
    """:func:`fold` with snapshot ids (a repeat is decided without looking at a model) and
    without (every model compared) give the same effects and state, run after run."""
    contents: dict[int, tuple[Content, Any]] = {}
    ids: dict[str, int] = {}
    snapshot_ids: dict[tuple[Member, ...], int] = {}  # shared whatever the kind, as stored
    runs = []
    for number, snap in enumerate(scenario.snaps, 1):
        members = {}
        for member in snap.members:
            raw = member.as_json()
            key = json.dumps(raw, sort_keys=True)
            if key not in ids:
                ids[key] = len(ids) + 1
                agreement = raw["agreement"]
                values = (agreement["name"], agreement["description"], agreement["url"])
                contents[ids[key]] = (
                    Content(
                        ids[key],
                        raw["uuid"],
                        content_hash(raw),
                        key[:32],
                        (1, 0, 0),
                        (agreement["uuid"], values),
                    ),
                    raw,
                )
            members[raw["uuid"]] = ids[key]
        snapshot = snapshot_ids.setdefault(snap.members, len(snapshot_ids) + 1)
        runs.append(Run(number, snap.observed_at, members, snap.kind == "complete", {}, snapshot))
    source = _Contents(contents)
    short, plain = State(), State()
    for run in runs:
        bare = Run(run.run_id, run.observed_at, run.members, run.marks_removals, {}, None)
        assert fold(short, run, source) == fold(plain, bare, source)
        assert (short.models, short.agreements, short.versions) == (
            plain.models,
            plain.agreements,
            plain.versions,
        )


# -- interruptions ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_loads_killed_at_random_moments_leave_a_verified_database_that_converges(
    db_url: str, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    scenario = seeded_scenario(seed)
    files = [str(snap.write(tmp_path)) for snap in scenario.snaps]
    engine = db.create_engine(db_url)
    try:
        for batch in scenario.batches:
            paths = [files[i] for i in batch]
            process = subprocess.Popen(
                [sys.executable, "-m", "etl", "--database-url", db_url, "backfill", *paths],
                cwd=tmp_path,
                env=child_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.2, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            if db_url.startswith(("postgresql", "mysql")):
                wait_until_lock_is_free(engine)
            if db.current(engine) == db.head_revision():
                assert_verifies(db_url)
            assert run_backfill(db_url, paths).failed == []  # the re-run converges
            assert_verifies(db_url)
        reference = f"sqlite:///{tmp_path / 'reference.db'}"
        assert run_backfill(reference, files).failed == []
        assert state_of(db_url) == state_of(reference)
    finally:
        engine.dispose()
