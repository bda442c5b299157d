"""raw hash of each model

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 01:23:17.520235
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from etl.migrations import resumable

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The digest of each model's bytes as last received: a sync skips a model whose bytes did
    # not change without normalising it. NULL (old rows) just means "compare in full".
    resumable.add_column("models", sa.Column("raw_hash", sa.String(length=32), nullable=True))
    resumable.add_column(
        "model_history", sa.Column("raw_hash", sa.String(length=32), nullable=True)
    )


def downgrade() -> None:
    # A plain ALTER, not batch mode: recreating models would break the views that read it.
    resumable.drop_column("model_history", "raw_hash")
    resumable.drop_column("models", "raw_hash")
