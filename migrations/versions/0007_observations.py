"""observations: what each run saw, stored once, the source the history is derived from

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:10:00.000000

The new tables hold every distinct model content (``observed_contents``), every distinct
catalog a run saw (``snapshots``, shared by the runs that saw it) and each run's usecase
listings (``run_usecases``). Upgrading reconstructs them from the runs and the history the
database holds: a complete, unfiltered run saw exactly the history rows valid at its time; a
partial or filtered run is known by the rows it opened; a usecase membership was seen by the
runs at its start and end. The history tables are then derived again from them by the next
``etl db upgrade`` or load (``etl_state`` records by which rules), which gives back the same
history for a database whose history was consistent.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from etl.migrations import resumable
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    from etl import schema

    resumable.create_table(
        "observed_contents",
        sa.Column("content_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("raw_hash", sa.String(length=32), nullable=False),
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("version_major", sa.BigInteger(), nullable=False),
        sa.Column("version_minor", sa.BigInteger(), nullable=False),
        sa.Column("version_patch", sa.BigInteger(), nullable=False),
        sa.Column("agreement", sa.Text(), nullable=True),
        sa.Column("raw", schema.StoredJSON(), nullable=False),
        sa.PrimaryKeyConstraint("content_id", name=op.f("pk_observed_contents")),
        sa.UniqueConstraint("raw_hash", name=op.f("uq_observed_contents_raw_hash")),
    )
    resumable.create_index(
        op.f("ix_observed_contents_model_uuid"), "observed_contents", ["model_uuid"]
    )
    resumable.create_table(
        "snapshots",
        sa.Column("snapshot_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("models", sa.Integer(), nullable=False),
        sa.Column("unstorable", sa.Integer(), nullable=False),
        sa.Column("members", LONG_TEXT, nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", name=op.f("pk_snapshots")),
        sa.UniqueConstraint("digest", name=op.f("uq_snapshots_digest")),
    )
    resumable.create_table(
        "run_usecases",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("usecase", sa.String(length=64), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("members", LONG_TEXT, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_run_usecases_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "usecase", name=op.f("pk_run_usecases")),
    )
    resumable.create_table(
        "etl_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_etl_state")),
    )
    # A plain ALTER, not batch mode: recreating sync_runs would break the view that reads it;
    # so no foreign key either (SQLite cannot add one to a table without recreating it).
    resumable.add_column("sync_runs", sa.Column("snapshot_id", sa.Integer(), nullable=True))
    _reconstruct(op.get_bind())


def _reconstruct(conn: sa.Connection) -> None:
    """Fills the observation tables from the runs and the history held today (in the
    revision's transaction, so a stopped upgrade leaves them empty and starts over)."""
    from etl import observe, schema
    from etl.pages import raw_hash
    from etl.transform import BadModel, flatten, snapshot_digest

    if conn.execute(sa.select(sa.func.count()).select_from(schema.snapshots)).scalar():
        return  # done before: the revision ran to its end, and lost only its stamp
    history = schema.model_history
    rows = conn.execute(
        sa.select(
            history.c.model_uuid,
            history.c.valid_from,
            history.c.valid_to,
            history.c.opened_by_run,
            history.c.raw,
            history.c.raw_hash,
        ).order_by(history.c.valid_from, history.c.history_id)
    ).fetchall()
    keys: list[str] = []
    contents: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row.raw_hash or raw_hash(json.dumps(row.raw, separators=(",", ":")))
        keys.append(key)
        if key not in contents:
            try:
                contents[key] = observe._content_row(flatten(row.raw), key)
            except BadModel:  # stored once, so storable: a guard, not a case
                continue
    for part in observe.chunks(list(contents.values())):
        conn.execute(schema.observed_contents.insert(), list(part))
    table = schema.observed_contents
    ids = dict(conn.execute(sa.select(table.c.raw_hash, table.c.content_id)).fetchall())
    runs = schema.sync_runs
    succeeded = conn.execute(
        sa.select(runs.c.id, runs.c.observed_at, runs.c.complete, runs.c.filters)
        .where(runs.c.status == "succeeded")
        .order_by(runs.c.observed_at, runs.c.id)
    ).fetchall()
    opened: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        opened.setdefault(row.opened_by_run, []).append(index)
    snapshot_ids: dict[str, int] = {}
    valid: dict[str, int] = {}  # the row valid at the run's time, by model: a sweep in time
    ending: list[tuple[Any, int]] = []
    start = 0
    for run in succeeded:
        t = run.observed_at
        while start < len(rows) and rows[start].valid_from <= t:
            valid[rows[start].model_uuid] = start
            if rows[start].valid_to is not None:
                heapq.heappush(ending, (rows[start].valid_to, start))
            start += 1
        while ending and ending[0][0] <= t:
            _, index = heapq.heappop(ending)
            if valid.get(rows[index].model_uuid) == index:
                del valid[rows[index].model_uuid]
        if run.complete and not run.filters:
            members = list(valid.values())
        else:
            members = opened.get(run.id, [])
        chosen = {rows[i].model_uuid: keys[i] for i in members if keys[i] in ids}
        digest = snapshot_digest(chosen.items())
        if digest not in snapshot_ids:
            member_ids = sorted(ids[key] for key in chosen.values())
            result = conn.execute(
                schema.snapshots.insert().values(
                    digest=digest,
                    models=len(member_ids),
                    unstorable=0,
                    members=json.dumps(member_ids, separators=(",", ":")),
                )
            )
            snapshot_ids[digest] = int(result.inserted_primary_key[0])
        conn.execute(
            sa.update(runs).where(runs.c.id == run.id).values(snapshot_id=snapshot_ids[digest])
        )
    _reconstruct_usecases(conn, succeeded)


def _reconstruct_usecases(conn: sa.Connection, succeeded: Sequence[Any]) -> None:
    """A membership's start and end were seen by the runs at those times: each such run listed
    the usecase, holding the memberships open at its time."""
    from etl import schema

    table = schema.model_usecases
    memberships = conn.execute(sa.select(table)).fetchall()
    if not memberships:
        return
    by_time = {run.observed_at: run.id for run in succeeded}
    listed: dict[tuple[int, str], set[str]] = {}
    for row in memberships:
        for t in (row.first_seen_at, row.removed_at):
            if t is not None and t in by_time:
                listed.setdefault((by_time[t], row.usecase), set())
    times = {run_id: t for t, run_id in by_time.items()}
    for (run_id, usecase), members in listed.items():
        t = times[run_id]
        members.update(
            row.model_uuid
            for row in memberships
            if row.usecase == usecase
            and row.first_seen_at <= t
            and (row.removed_at is None or row.removed_at > t)
        )
    conn.execute(
        schema.run_usecases.insert(),
        [
            {
                "run_id": run_id,
                "usecase": usecase,
                "complete": True,
                "members": json.dumps(sorted(members)),
            }
            for (run_id, usecase), members in sorted(listed.items())
        ],
    )


def downgrade() -> None:
    resumable.drop_column("sync_runs", "snapshot_id")
    resumable.drop_table("etl_state")
    resumable.drop_table("run_usecases")
    resumable.drop_table("snapshots")
    resumable.drop_index(op.f("ix_observed_contents_model_uuid"), "observed_contents")
    resumable.drop_table("observed_contents")
