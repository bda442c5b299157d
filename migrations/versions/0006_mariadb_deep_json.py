"""JSON from models as LONGTEXT on MariaDB/MySQL, so it may nest as deep as our limit of 100

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 23:55:00.000000

MariaDB's ``JSON`` is ``LONGTEXT`` with a ``CHECK (json_valid(col))`` that refuses values nested
more than 32 levels (MySQL's own ``JSON`` stops at 100); SQLite and PostgreSQL store any depth.
``MODIFY col LONGTEXT`` drops the check (and converts MySQL's ``JSON``); the values stay as
they are. Nothing changes on SQLite and PostgreSQL. Running it twice changes nothing more, so a
stopped upgrade simply runs it again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    ("models", "raw", False),
    ("models", "benchmark_score", True),
    ("model_history", "raw", False),
    ("model_history", "benchmark_score", True),
    ("model_changes", "changes", True),
    ("model_settings", "options", True),
]
"""(table, column, nullable): every column holding JSON that came from a model."""


def upgrade() -> None:
    _retype(mysql.LONGTEXT(), sa.JSON())


def downgrade() -> None:
    # Fails on a value nested deeper than MariaDB's JSON takes: such a model cannot be stored
    # at revision 0005 at all.
    _retype(sa.JSON(), mysql.LONGTEXT())


def _retype(new: sa.types.TypeEngine[object], old: sa.types.TypeEngine[object]) -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=nullable)
