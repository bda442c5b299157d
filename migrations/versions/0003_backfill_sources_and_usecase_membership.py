"""backfill sources and usecase membership

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 01:05:53.894795
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from etl.migrations import resumable

import etl.schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _mysql_table() -> dict[str, str]:
    """MariaDB/MySQL: a binary, no-pad collation, so keys that differ only in case or trailing
    spaces ("Vision", "vision", "vision ") stay apart, as on SQLite and PostgreSQL."""
    mariadb = getattr(op.get_bind().dialect, "is_mariadb", False)
    collation = "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}


def upgrade() -> None:
    resumable.create_table(
        "model_usecases",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("usecase", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("removed_at", etl.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_usecases_model_uuid_models")
        ),
        sa.PrimaryKeyConstraint(
            "model_uuid", "usecase", "first_seen_at", name=op.f("pk_model_usecases")
        ),
        **_mysql_table(),
    )
    resumable.create_index(
        op.f("ix_model_usecases_usecase_removed_at"), "model_usecases", ["usecase", "removed_at"]
    )

    resumable.add_column("sync_runs", sa.Column("source", sa.Text(), nullable=True))
    resumable.add_column(
        "sync_runs", sa.Column("snapshot_hash", sa.String(length=64), nullable=True)
    )
    resumable.create_index(op.f("ix_sync_runs_observed_at"), "sync_runs", ["observed_at"])


def downgrade() -> None:
    # Plain ALTERs, not batch mode: SQLite (3.35+) drops columns in place, whereas recreating
    # sync_runs would break the views that read it.
    resumable.drop_index(op.f("ix_sync_runs_observed_at"), "sync_runs")
    resumable.drop_column("sync_runs", "snapshot_hash")
    resumable.drop_column("sync_runs", "source")

    resumable.drop_table("model_usecases")
