"""history tables and views

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 00:50:43.398038
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from etl.migrations import resumable

import etl.schema

revision: str = "0002"
down_revision: str | None = "0001"
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
        "agreement_history",
        sa.Column("history_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agreement_uuid", sa.String(length=64), nullable=False),
        sa.Column("valid_from", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_to", etl.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_by_run", sa.Integer(), nullable=False),
        sa.Column("closed_by_run", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agreement_uuid"],
            ["agreements.uuid"],
            name=op.f("fk_agreement_history_agreement_uuid_agreements"),
        ),
        sa.ForeignKeyConstraint(
            ["closed_by_run"],
            ["sync_runs.id"],
            name=op.f("fk_agreement_history_closed_by_run_sync_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["opened_by_run"],
            ["sync_runs.id"],
            name=op.f("fk_agreement_history_opened_by_run_sync_runs"),
        ),
        sa.PrimaryKeyConstraint("history_id", name=op.f("pk_agreement_history")),
        **_mysql_table(),
    )
    resumable.create_index(
        op.f("ix_agreement_history_agreement_uuid_valid_from"),
        "agreement_history",
        ["agreement_uuid", "valid_from"],
    )

    resumable.create_table(
        "model_changes",
        sa.Column("change_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("observed_at", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_changes_model_uuid_models")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_model_changes_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_model_changes")),
        **_mysql_table(),
    )
    resumable.create_index(op.f("ix_model_changes_model_uuid"), "model_changes", ["model_uuid"])
    resumable.create_index(op.f("ix_model_changes_observed_at"), "model_changes", ["observed_at"])
    resumable.create_index(op.f("ix_model_changes_run_id"), "model_changes", ["run_id"])

    resumable.create_table(
        "model_history",
        sa.Column("history_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("valid_from", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_to", etl.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_by_run", sa.Integer(), nullable=False),
        sa.Column("closed_by_run", sa.Integer(), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_foundational", sa.Boolean(), nullable=False),
        sa.Column("upload_complete", sa.Boolean(), nullable=False),
        sa.Column("parent_uuid", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("kb_default_chunk_size", sa.BigInteger(), nullable=True),
        sa.Column("kb_max_chunk_size", sa.BigInteger(), nullable=True),
        sa.Column("kb_min_chunk_size", sa.BigInteger(), nullable=True),
        sa.Column("lifecycle_status", sa.String(length=255), nullable=True),
        sa.Column("provider", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=255), nullable=True),
        sa.Column("model_availability", sa.String(length=255), nullable=True),
        sa.Column("thinking", sa.Boolean(), nullable=False),
        sa.Column("parameter_count", sa.Double(), nullable=True),
        sa.Column("context_window", sa.BigInteger(), nullable=True),
        sa.Column("created_at", etl.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", etl.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("version_major", sa.BigInteger(), nullable=False),
        sa.Column("version_minor", sa.BigInteger(), nullable=False),
        sa.Column("version_patch", sa.BigInteger(), nullable=False),
        sa.Column("agreement_uuid", sa.String(length=64), nullable=True),
        sa.Column("benchmark_score", sa.JSON(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_uuid"],
            ["agreements.uuid"],
            name=op.f("fk_model_history_agreement_uuid_agreements"),
        ),
        sa.ForeignKeyConstraint(
            ["closed_by_run"],
            ["sync_runs.id"],
            name=op.f("fk_model_history_closed_by_run_sync_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_history_model_uuid_models")
        ),
        sa.ForeignKeyConstraint(
            ["opened_by_run"],
            ["sync_runs.id"],
            name=op.f("fk_model_history_opened_by_run_sync_runs"),
        ),
        sa.PrimaryKeyConstraint("history_id", name=op.f("pk_model_history")),
        **_mysql_table(),
    )
    resumable.create_index(
        op.f("ix_model_history_agreement_uuid"), "model_history", ["agreement_uuid"]
    )
    resumable.create_index(op.f("ix_model_history_id"), "model_history", ["id"])
    resumable.create_index(
        op.f("ix_model_history_model_uuid_valid_from"),
        "model_history",
        ["model_uuid", "valid_from"],
    )
    resumable.create_index(
        op.f("ix_model_history_valid_from_valid_to"), "model_history", ["valid_from", "valid_to"]
    )
    resumable.create_index(op.f("ix_model_history_valid_to"), "model_history", ["valid_to"])
    resumable.create_table(
        "model_change_fields",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_change_fields_model_uuid_models")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_model_change_fields_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint(
            "run_id", "model_uuid", "path", name=op.f("pk_model_change_fields")
        ),
        **_mysql_table(),
    )
    resumable.create_index(op.f("ix_model_change_fields_path"), "model_change_fields", ["path"])
    for name, sql in _views(op.get_bind().dialect.name).items():
        resumable.create_view(name, sql)


def downgrade() -> None:
    for name in reversed(list(_views("sqlite"))):
        resumable.drop_view(name)
    # Dropping a table drops its indexes (MySQL refuses to drop an FK index first).
    resumable.drop_table("model_change_fields")
    resumable.drop_table("model_history")
    resumable.drop_table("model_changes")
    resumable.drop_table("agreement_history")


def _day(dialect: str, expr: str) -> str:
    """The UTC calendar day of a timestamp column."""
    if dialect == "postgresql":
        return f"CAST(({expr} AT TIME ZONE 'UTC') AS DATE)"
    if dialect in ("mysql", "mariadb"):
        return f"DATE({expr})"
    return f"date({expr})"


def _week(dialect: str, expr: str) -> str:
    """The Monday that starts a timestamp's ISO week (UTC)."""
    if dialect == "postgresql":
        return f"CAST(date_trunc('week', {expr} AT TIME ZONE 'UTC') AS DATE)"
    if dialect in ("mysql", "mariadb"):
        return f"DATE(DATE_SUB({expr}, INTERVAL WEEKDAY({expr}) DAY))"
    return f"date({expr}, 'weekday 0', '-6 days')"


def _concat(dialect: str, *parts: str) -> str:
    if dialect in ("mysql", "mariadb"):
        return f"CONCAT({', '.join(parts)})"
    return " || ".join(f"CAST({p} AS VARCHAR(40))" if p.startswith("m.") else p for p in parts)


def _views(dialect: str) -> dict[str, str]:
    """The dashboard views, in creation order, written for ``dialect``."""
    version = _concat(
        dialect, "m.version_major", "'.'", "m.version_minor", "'.'", "m.version_patch"
    )
    columns = ", ".join(
        f"m.{c}"
        for c in (
            "uuid", "id", "name", "description", "provider", "type", "lifecycle_status",
            "model_availability", "is_foundational", "upload_complete", "thinking", "parent_uuid",
            "url", "parameter_count", "context_window", "kb_default_chunk_size",
            "kb_max_chunk_size", "kb_min_chunk_size", "created_at", "updated_at",
            "version_major", "version_minor", "version_patch", "agreement_uuid",
            "benchmark_score", "content_hash", "first_seen_at",
        )
    )  # fmt: skip
    day = _day(dialect, "h.valid_from")
    return {
        "current_models": (
            f"SELECT {columns}, a.name AS agreement_name, {version} AS version "
            "FROM models m LEFT JOIN agreements a ON a.uuid = m.agreement_uuid "
            "WHERE m.removed_at IS NULL"
        ),
        "catalog_changes": (
            "SELECT c.change_id, c.run_id, c.observed_at, "
            f"{_day(dialect, 'c.observed_at')} AS observed_day, "
            f"{_week(dialect, 'c.observed_at')} AS observed_week, "
            "c.model_uuid, m.id AS model_id, m.name AS model_name, c.kind, c.changes "
            "FROM model_changes c JOIN models m ON m.uuid = c.model_uuid"
        ),
        "catalog_size_by_day": (
            "SELECT d.day, "
            "(SELECT COUNT(DISTINCT h.model_uuid) FROM model_history h "
            f"WHERE {day} <= d.day AND (h.valid_to IS NULL OR "
            f"{_day(dialect, 'h.valid_to')} > d.day)) AS models, "
            + ", ".join(
                f"(SELECT COUNT(*) FROM model_changes c WHERE c.kind = '{kind}' "
                f"AND {_day(dialect, 'c.observed_at')} = d.day) AS {kind}"
                for kind in ("added", "removed", "restored")
            )
            + f" FROM (SELECT DISTINCT {_day(dialect, 'r.observed_at')} AS day FROM sync_runs r "
            "WHERE r.status = 'succeeded') d"
        ),
    }
