"""history span classes, as-of, closing and daily-count indexes, a daily-size view that scales

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 07:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from etl.migrations import resumable

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AS_OF_OUTPUT = [
    "model_uuid", "version_major", "version_minor", "version_patch", "id", "name", "provider",
    "lifecycle_status", "agreement_uuid",
]  # fmt: skip
"""What ``etl models --as-of`` reads besides the interval: carried by both as-of indexes."""
MYSQL_PREFIXES = {"id": 64, "name": 64, "provider": 64, "lifecycle_status": 64}
"""MariaDB/MySQL keys hold at most 3,072 bytes: there the as-of indexes only find rows."""
MAX_SPAN_CLASS = 40


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # A closed row's length class (etl.schema.span_class): what lets an as-of query read a short
    # index range per class instead of probing every model.
    resumable.add_column("model_history", sa.Column("span_class", sa.SmallInteger(), nullable=True))
    op.execute(
        f"UPDATE model_history SET span_class = {_span_class(dialect)} WHERE valid_to IS NOT NULL"
    )
    resumable.create_index(
        "ix_model_history_open_as_of",
        "model_history",
        ["valid_to", "valid_from", *AS_OF_OUTPUT],
        mysql_length=MYSQL_PREFIXES,
    )
    resumable.create_index(
        "ix_model_history_closed_as_of",
        "model_history",
        ["span_class", "valid_from", "valid_to", *AS_OF_OUTPUT],
        mysql_length=MYSQL_PREFIXES,
    )
    resumable.drop_index("ix_model_history_valid_to", "model_history")  # the open one's prefix
    # Closing a model's open row: "model_uuid IN (...) AND valid_to IS NULL" would otherwise
    # pick a valid_to index and walk every open row.
    resumable.create_index(
        "ix_model_history_model_uuid_valid_to", "model_history", ["model_uuid", "valid_to"]
    )
    # Changes by time, with their kind: the daily counts read this index, not the table.
    resumable.create_index(
        "ix_model_changes_observed_at_kind", "model_changes", ["observed_at", "kind"]
    )
    resumable.drop_index("ix_model_changes_observed_at", "model_changes")
    resumable.drop_view("catalog_size_by_day")
    resumable.create_view("catalog_size_by_day", _daily_sizes(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    resumable.drop_view("catalog_size_by_day")
    resumable.create_view("catalog_size_by_day", _daily_sizes_0002(dialect))
    resumable.create_index("ix_model_changes_observed_at", "model_changes", ["observed_at"])
    resumable.drop_index("ix_model_changes_observed_at_kind", "model_changes")
    resumable.drop_index("ix_model_history_model_uuid_valid_to", "model_history")
    resumable.create_index("ix_model_history_valid_to", "model_history", ["valid_to"])
    resumable.drop_index("ix_model_history_closed_as_of", "model_history")
    resumable.drop_index("ix_model_history_open_as_of", "model_history")
    # A plain ALTER, not batch mode: recreating model_history would break the views.
    resumable.drop_column("model_history", "span_class")


def _span_class(dialect: str) -> str:
    """etl.schema.span_class_of(valid_from, valid_to) as of this revision."""
    if dialect == "postgresql":
        seconds = "EXTRACT(EPOCH FROM (valid_to - valid_from))"
    elif dialect in ("mysql", "mariadb"):
        seconds = "(TIMESTAMPDIFF(MICROSECOND, valid_from, valid_to) / 1000000.0)"
    else:
        seconds = "((julianday(valid_to) - julianday(valid_from)) * 86400.0)"
    ladder = " ".join(f"WHEN {seconds} <= {2**c} THEN {c}" for c in range(MAX_SPAN_CLASS))
    return f"CASE {ladder} ELSE {MAX_SPAN_CLASS} END"


def _day(dialect: str, expr: str) -> str:
    """The UTC calendar day of a timestamp column (as in revision 0002)."""
    if dialect == "postgresql":
        return f"CAST(({expr} AT TIME ZONE 'UTC') AS DATE)"
    if dialect in ("mysql", "mariadb"):
        return f"DATE({expr})"
    return f"date({expr})"


def _daily_sizes(dialect: str) -> str:
    """Per UTC day with a successful run: the models present at its end, and the day's adds,
    removes and restores.

    A model's history rows never overlap, so the models present at the end of day D are the
    rows opened on or before D less those closed on or before D: a running sum over days, one
    pass over history, where 0002's view counted all of history again for every day. Only
    equality joins, so no planner re-runs a part per day.
    """
    opened, closed = _day(dialect, "valid_from"), _day(dialect, "valid_to")
    observed = _day(dialect, "observed_at")
    kinds = ("added", "removed", "restored")
    counts = ", ".join(f"COUNT(CASE WHEN kind = '{k}' THEN 1 END) AS {k}" for k in kinds)
    integer = "SIGNED" if dialect in ("mysql", "mariadb") else "BIGINT"
    return (
        f"WITH days AS (SELECT DISTINCT {_day(dialect, 'observed_at')} AS day FROM sync_runs "
        "WHERE status = 'succeeded'), "
        f"deltas AS (SELECT {opened} AS day, 1 AS delta FROM model_history "
        f"UNION ALL SELECT {closed} AS day, -1 AS delta FROM model_history "
        "WHERE valid_to IS NOT NULL "
        "UNION ALL SELECT day, 0 AS delta FROM days), "
        "per_day AS (SELECT day, SUM(delta) AS delta FROM deltas GROUP BY day), "
        "running AS (SELECT day, SUM(delta) OVER (ORDER BY day) AS models FROM per_day), "
        f"events AS (SELECT {observed} AS day, {counts} FROM model_changes GROUP BY {observed}) "
        f"SELECT d.day, CAST(r.models AS {integer}) AS models, "
        + ", ".join(f"COALESCE(e.{k}, 0) AS {k}" for k in kinds)
        + " FROM days d JOIN running r ON r.day = d.day LEFT JOIN events e ON e.day = d.day"
    )


def _daily_sizes_0002(dialect: str) -> str:
    """Revision 0002's view, restored on downgrade."""
    day = _day(dialect, "h.valid_from")
    return (
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
    )
