"""models state index: what a sync reads of every model, without the wide rows

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from etl.migrations import resumable

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    resumable.create_index("ix_models_state", "models", ["removed_at", "uuid", "raw_hash"])


def downgrade() -> None:
    resumable.drop_index("ix_models_state", "models")
