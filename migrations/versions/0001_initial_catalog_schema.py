"""initial catalog schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:40:27.337006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from etl.migrations import resumable

import etl.schema

revision: str = "0001"
down_revision: str | None = None
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
        "agreements",
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("first_seen_at", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_agreements")),
        **_mysql_table(),
    )
    resumable.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", etl.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("observed_at", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("models_seen", sa.Integer(), nullable=False),
        sa.Column("inserted", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("restored", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        **_mysql_table(),
    )
    resumable.create_index(
        op.f("ix_sync_runs_status_finished_at"), "sync_runs", ["status", "finished_at"]
    )

    resumable.create_table(
        "models",
        sa.Column("uuid", sa.String(length=64), nullable=False),
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
        sa.Column("first_seen_at", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("removed_at", etl.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agreement_uuid"],
            ["agreements.uuid"],
            name=op.f("fk_models_agreement_uuid_agreements"),
        ),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_models")),
        **_mysql_table(),
    )
    resumable.create_index(op.f("ix_models_agreement_uuid"), "models", ["agreement_uuid"])
    resumable.create_index(op.f("ix_models_id"), "models", ["id"])

    resumable.create_table(
        "model_capabilities",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("capability", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_capabilities_model_uuid_models")
        ),
        sa.PrimaryKeyConstraint("model_uuid", "capability", name=op.f("pk_model_capabilities")),
        **_mysql_table(),
    )
    resumable.create_table(
        "model_endpoint_capabilities",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=False),
        sa.Column("capability", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_uuid"],
            ["models.uuid"],
            name=op.f("fk_model_endpoint_capabilities_model_uuid_models"),
        ),
        sa.PrimaryKeyConstraint(
            "model_uuid", "endpoint", "capability", name=op.f("pk_model_endpoint_capabilities")
        ),
        **_mysql_table(),
    )
    resumable.create_table(
        "model_endpoints",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_endpoints_model_uuid_models")
        ),
        sa.PrimaryKeyConstraint("model_uuid", "endpoint", name=op.f("pk_model_endpoints")),
        **_mysql_table(),
    )
    resumable.create_table(
        "model_modalities",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("modality", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_modalities_model_uuid_models")
        ),
        sa.PrimaryKeyConstraint(
            "model_uuid", "direction", "modality", name=op.f("pk_model_modalities")
        ),
        **_mysql_table(),
    )
    resumable.create_table(
        "model_pricing",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("price_key", sa.String(length=255), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_pricing_model_uuid_models")
        ),
        sa.PrimaryKeyConstraint("model_uuid", "price_key", name=op.f("pk_model_pricing")),
        **_mysql_table(),
    )
    resumable.create_table(
        "model_reasoning_efforts",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("effort", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_uuid"],
            ["models.uuid"],
            name=op.f("fk_model_reasoning_efforts_model_uuid_models"),
        ),
        sa.PrimaryKeyConstraint("model_uuid", "effort", name=op.f("pk_model_reasoning_efforts")),
        **_mysql_table(),
    )
    resumable.create_table(
        "model_settings",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=True),
        sa.Column("default_value", sa.Double(), nullable=True),
        sa.Column("default_string", sa.Text(), nullable=True),
        sa.Column("min", sa.Double(), nullable=True),
        sa.Column("max", sa.Double(), nullable=True),
        sa.Column("step", sa.Double(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_settings_model_uuid_models")
        ),
        sa.PrimaryKeyConstraint("model_uuid", "name", name=op.f("pk_model_settings")),
        **_mysql_table(),
    )
    resumable.create_table(
        "model_versions",
        sa.Column("model_uuid", sa.String(length=64), nullable=False),
        sa.Column("major", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("minor", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("patch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("first_seen_at", etl.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_seen_run", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["first_seen_run"],
            ["sync_runs.id"],
            name=op.f("fk_model_versions_first_seen_run_sync_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["model_uuid"], ["models.uuid"], name=op.f("fk_model_versions_model_uuid_models")
        ),
        sa.PrimaryKeyConstraint(
            "model_uuid", "major", "minor", "patch", name=op.f("pk_model_versions")
        ),
        **_mysql_table(),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes (MySQL refuses to drop an FK index first).
    resumable.drop_table("model_versions")
    resumable.drop_table("model_settings")
    resumable.drop_table("model_reasoning_efforts")
    resumable.drop_table("model_pricing")
    resumable.drop_table("model_modalities")
    resumable.drop_table("model_endpoints")
    resumable.drop_table("model_endpoint_capabilities")
    resumable.drop_table("model_capabilities")
    resumable.drop_table("models")
    resumable.drop_table("sync_runs")
    resumable.drop_table("agreements")
