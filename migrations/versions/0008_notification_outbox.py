"""notification outbox: alert targets by keyed hash, and one message per target per run

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 23:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from etl.migrations import resumable

from etl.schema import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    resumable.create_table(
        "notify_key",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash_key", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notify_key")),
    )
    resumable.create_table(
        "notify_targets",
        sa.Column("target_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("target_hash", name=op.f("pk_notify_targets")),
    )
    resumable.create_table(
        "notify_outbox",
        sa.Column("message_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_hash", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["target_hash"],
            ["notify_targets.target_hash"],
            name=op.f("fk_notify_outbox_target_hash_notify_targets"),
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_notify_outbox")),
        sa.UniqueConstraint(
            "target_hash", "run_id", name=op.f("uq_notify_outbox_target_hash_run_id")
        ),
    )
    resumable.create_index(
        "ix_notify_outbox_status_target_hash_message_id",
        "notify_outbox",
        ["status", "target_hash", "message_id"],
    )


def downgrade() -> None:
    resumable.drop_table("notify_outbox")
    resumable.drop_table("notify_targets")
    resumable.drop_table("notify_key")
