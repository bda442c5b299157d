"""The catalog's tables, as SQLAlchemy Core. Alembic revisions create them; nothing else does."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    PostgreSQL stores ``timestamptz``; SQLite and MySQL store naive UTC (MySQL with microseconds)
    and get ``tzinfo=UTC`` back on read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=dialect.name == "postgresql"))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc_datetime(value)


def utc_datetime(value: datetime | str) -> datetime:
    """A stored timestamp read without :class:`UTCDateTime` (a raw SQL result), as it reads:
    SQLite returns ISO text, MySQL a naive UTC datetime, PostgreSQL an aware one."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SerializedJSON(str):
    """JSON text already made (:attr:`etl.transform.FlatModel.raw_json`): stored as it is."""


class DeepJSON(sa.JSON):
    """JSON as nested as a model may be (our limit is 100 levels): ``JSON`` on SQLite and
    PostgreSQL, plain ``LONGTEXT`` on MariaDB/MySQL, whose ``JSON`` refuses more than 32 levels
    (MariaDB's ``JSON_VALID`` check) or 100 (MySQL). Values are serialised and parsed as ``JSON``
    does on every dialect."""


@compiles(DeepJSON, "mysql")
@compiles(DeepJSON, "mariadb")
def _deep_json_mysql(element: DeepJSON, compiler: Any, **kw: Any) -> str:
    return "LONGTEXT"


class StoredJSON(sa.types.TypeDecorator[Any]):
    """A :class:`DeepJSON` column for what comes from a model, that also takes
    :class:`SerializedJSON`, so that a model's JSON, serialised once while flattening, is not
    serialised again for each table it goes to."""

    impl = DeepJSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        # Overridden, not process_bind_param: the JSON type's own serialisation runs after
        # that, and already serialised text must skip it.
        serialize = self.impl_instance.bind_processor(dialect)

        def process(value: Any) -> Any:
            if type(value) is SerializedJSON:
                return str(value)
            return serialize(value) if serialize is not None else value

        return process


UUID = sa.String(64)
"""Model and agreement uuids: 36 characters today, with room to spare."""
SHORT = sa.String(255)
"""Identifiers, names and enum-like values: indexable on every dialect."""
HASH = sa.String(64)


def _model_uuid_fk() -> sa.Column[str]:
    return sa.Column("model_uuid", UUID, sa.ForeignKey("models.uuid"), primary_key=True)


agreements = sa.Table(
    "agreements",
    metadata,
    sa.Column("uuid", UUID, primary_key=True),
    sa.Column("name", SHORT),
    sa.Column("description", sa.Text),
    sa.Column("url", sa.Text),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("observed_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("filters", sa.JSON),
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sa.Column("requests", sa.Integer, nullable=False, default=0),
    sa.Column("retries", sa.Integer, nullable=False, default=0),
    sa.Column("pages", sa.Integer, nullable=False, default=0),
    sa.Column("models_seen", sa.Integer, nullable=False, default=0),
    sa.Column("inserted", sa.Integer, nullable=False, default=0),
    sa.Column("updated", sa.Integer, nullable=False, default=0),
    sa.Column("unchanged", sa.Integer, nullable=False, default=0),
    sa.Column("removed", sa.Integer, nullable=False, default=0),
    sa.Column("restored", sa.Integer, nullable=False, default=0),
    sa.Column("warnings", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("snapshot_hash", HASH),
    sa.Column("snapshot_id", sa.Integer),  # snapshots.snapshot_id; no key: see migration 0007
    sa.Index(None, "status", "finished_at"),
    sa.Index(None, "observed_at"),
)


def _content_columns() -> list[sa.Column[Any]]:
    """A model's flattened scalar fields: the same typed columns in ``models`` and its history."""
    return [
        sa.Column("id", SHORT, index=True),
        sa.Column("name", SHORT),
        sa.Column("description", sa.Text),
        sa.Column("is_foundational", sa.Boolean, nullable=False),
        sa.Column("upload_complete", sa.Boolean, nullable=False),
        sa.Column("parent_uuid", UUID),
        sa.Column("url", sa.Text),
        sa.Column("kb_default_chunk_size", sa.BigInteger),
        sa.Column("kb_max_chunk_size", sa.BigInteger),
        sa.Column("kb_min_chunk_size", sa.BigInteger),
        sa.Column("lifecycle_status", SHORT),
        sa.Column("provider", SHORT),
        sa.Column("type", SHORT),
        sa.Column("model_availability", SHORT),
        sa.Column("thinking", sa.Boolean, nullable=False),
        sa.Column("parameter_count", sa.Double),
        sa.Column("context_window", sa.BigInteger),
        sa.Column("created_at", UTCDateTime),
        sa.Column("updated_at", UTCDateTime),
        sa.Column("version_major", sa.BigInteger, nullable=False),
        sa.Column("version_minor", sa.BigInteger, nullable=False),
        sa.Column("version_patch", sa.BigInteger, nullable=False),
        sa.Column("agreement_uuid", UUID, sa.ForeignKey("agreements.uuid"), index=True),
        sa.Column("benchmark_score", StoredJSON),
        sa.Column("raw", StoredJSON, nullable=False),
        sa.Column("content_hash", HASH, nullable=False),
    ]


models = sa.Table(
    "models",
    metadata,
    sa.Column("uuid", UUID, primary_key=True),
    *_content_columns(),
    sa.Column("raw_hash", sa.String(32)),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("removed_at", UTCDateTime),
    sa.Index("ix_models_state", "removed_at", "uuid", "raw_hash"),
)
"""The catalog now: one row per model ever seen (``removed_at`` set once it left).

``ix_models_state`` holds what a sync reads of every model before it loads (which models are
present, with which bytes): the read never walks the wide rows and their ``raw``."""

AS_OF_OUTPUT = (
    "model_uuid", "version_major", "version_minor", "version_patch", "id", "name", "provider",
    "lifecycle_status", "agreement_uuid",
)  # fmt: skip
"""What ``etl models --as-of`` reads of a history row besides its interval: the as-of indexes
carry it, so the query never reads the wide rows (their ``raw`` JSON)."""
AS_OF_MYSQL_PREFIXES = {"id": 64, "name": 64, "provider": 64, "lifecycle_status": 64}
"""MariaDB/MySQL keys hold at most 3,072 bytes: there the as-of indexes only find rows."""
MAX_SPAN_CLASS = 40
"""2**40 seconds is 35,000 years: every interval between two storable timestamps fits."""


def span_class(seconds: float) -> int:
    """The ``span_class`` of a closed interval this many seconds long: the smallest c with
    seconds <= 2**c (0 for a second or less)."""
    if seconds <= 1:
        return 0
    return min(MAX_SPAN_CLASS, math.ceil(math.log2(seconds)))


class _Seconds(sa.sql.functions.FunctionElement[float]):
    """Seconds from ``start`` to ``end`` (two timestamps), in each dialect's own terms."""

    type = sa.Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(_Seconds)
def _seconds_sqlite(element: _Seconds, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(_Seconds, "postgresql")
def _seconds_postgresql(element: _Seconds, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(_Seconds, "mysql")
@compiles(_Seconds, "mariadb")
def _seconds_mysql(element: _Seconds, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000.0)"


def span_class_of(start: Any, end: Any) -> Any:
    """SQL for :func:`span_class` of the interval from ``start`` to ``end``."""
    seconds = _Seconds(start, end)
    return sa.case(*((seconds <= 2**c, c) for c in range(MAX_SPAN_CLASS)), else_=MAX_SPAN_CLASS)


model_history = sa.Table(
    "model_history",
    metadata,
    sa.Column("history_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_uuid", UUID, sa.ForeignKey("models.uuid"), nullable=False),
    sa.Column("valid_from", UTCDateTime, nullable=False),
    sa.Column("valid_to", UTCDateTime),
    sa.Column("opened_by_run", sa.Integer, sa.ForeignKey("sync_runs.id"), nullable=False),
    sa.Column("closed_by_run", sa.Integer, sa.ForeignKey("sync_runs.id")),
    *_content_columns(),
    sa.Column("raw_hash", sa.String(32)),
    sa.Column("span_class", sa.SmallInteger),
    sa.Index(None, "model_uuid", "valid_from"),
    sa.Index(None, "model_uuid", "valid_to"),
    sa.Index(None, "valid_from", "valid_to"),
    sa.Index(
        "ix_model_history_open_as_of",
        "valid_to",
        "valid_from",
        *AS_OF_OUTPUT,
        mysql_length=AS_OF_MYSQL_PREFIXES,
    ),
    sa.Index(
        "ix_model_history_closed_as_of",
        "span_class",
        "valid_from",
        "valid_to",
        *AS_OF_OUTPUT,
        mysql_length=AS_OF_MYSQL_PREFIXES,
    ),
)
"""One row per distinct content of a model over time (SCD type 2); valid_to NULL = current.

``span_class`` (NULL while open) sorts closed rows by length in powers of two
(:func:`span_class`). A row of class c that holds time T started after T - 2**c, so the rows
holding T are the open ones started by T plus, for each class, a short index range: the
catalog as of any time costs about as many index entries as it has models, whatever the
length of history (:func:`etl.queries.models_as_of`)."""

agreement_history = sa.Table(
    "agreement_history",
    metadata,
    sa.Column("history_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agreement_uuid", UUID, sa.ForeignKey("agreements.uuid"), nullable=False),
    sa.Column("valid_from", UTCDateTime, nullable=False),
    sa.Column("valid_to", UTCDateTime),
    sa.Column("opened_by_run", sa.Integer, sa.ForeignKey("sync_runs.id"), nullable=False),
    sa.Column("closed_by_run", sa.Integer, sa.ForeignKey("sync_runs.id")),
    sa.Column("name", SHORT),
    sa.Column("description", sa.Text),
    sa.Column("url", sa.Text),
    sa.Index(None, "agreement_uuid", "valid_from"),
)

model_changes = sa.Table(
    "model_changes",
    metadata,
    sa.Column("change_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("sync_runs.id"), nullable=False, index=True),
    sa.Column("observed_at", UTCDateTime, nullable=False),
    sa.Column("model_uuid", UUID, sa.ForeignKey("models.uuid"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("changes", StoredJSON),
    sa.Index(None, "observed_at", "kind"),
)
"""One row per change of a model per run: added, changed (with its fields), removed, restored."""

model_change_fields = sa.Table(
    "model_change_fields",
    metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("sync_runs.id"), primary_key=True),
    sa.Column("model_uuid", UUID, sa.ForeignKey("models.uuid"), primary_key=True),
    sa.Column("path", SHORT, primary_key=True),
    sa.Column("old_value", sa.Text),
    sa.Column("new_value", sa.Text),
    sa.Index(None, "path"),
)
"""The fields of each ``changed`` event, one row per dotted path; values are JSON text."""

model_usecases = sa.Table(
    "model_usecases",
    metadata,
    sa.Column("model_uuid", UUID, sa.ForeignKey("models.uuid"), primary_key=True),
    sa.Column("usecase", sa.String(64), primary_key=True),
    sa.Column("first_seen_at", UTCDateTime, primary_key=True),
    sa.Column("removed_at", UTCDateTime),
    sa.Index(None, "usecase", "removed_at"),
)
"""Which usecase listings a model appears in: one row per stretch of membership; removed_at
NULL while it lasts (``etl sync --with-usecases``)."""

CONTENT_COLUMNS = tuple(c.name for c in _content_columns())

LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
"""Text beyond MySQL's 64 KB TEXT: a snapshot's member list of 10,000 models is larger."""

observed_contents = sa.Table(
    "observed_contents",
    metadata,
    sa.Column("content_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("raw_hash", sa.String(32), nullable=False, unique=True),
    sa.Column("model_uuid", UUID, nullable=False, index=True),
    sa.Column("content_hash", HASH, nullable=False),
    sa.Column("version_major", sa.BigInteger, nullable=False),
    sa.Column("version_minor", sa.BigInteger, nullable=False),
    sa.Column("version_patch", sa.BigInteger, nullable=False),
    sa.Column("agreement", sa.Text),
    sa.Column("raw", StoredJSON, nullable=False),
)
"""Every distinct model content any run observed, stored once, by the digest of its JSON.

``agreement`` is the agreement the model carries as JSON ``[uuid, name, description, url]``:
the agreement rule reads it for every model of a run without parsing ``raw``."""

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("snapshot_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest", HASH, nullable=False, unique=True),
    sa.Column("models", sa.Integer, nullable=False),
    sa.Column("unstorable", sa.Integer, nullable=False, default=0),
    sa.Column("members", LONG_TEXT, nullable=False),
)
"""Each distinct set of models observed: ``members`` is the JSON array of their content ids,
ascending. Runs that saw the same catalog share one row (``sync_runs.snapshot_id``);
``unstorable`` counts models listed that could not be stored."""

run_usecases = sa.Table(
    "run_usecases",
    metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("sync_runs.id"), primary_key=True),
    sa.Column("usecase", sa.String(64), primary_key=True),
    sa.Column("complete", sa.Boolean, nullable=False),
    sa.Column("members", LONG_TEXT, nullable=False),
)
"""What a run's usecase listings held (``etl sync --with-usecases``): a JSON array of uuids."""

etl_state = sa.Table(
    "etl_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
"""Small facts about the database; ``projection`` names the rules the history tables were
derived with (:data:`etl.load.PROJECTION_VERSION`): a database derived with other rules is
derived again."""

OBSERVATION_TABLES = (observed_contents, snapshots, run_usecases)

model_versions = sa.Table(
    "model_versions",
    metadata,
    _model_uuid_fk(),
    sa.Column("major", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("minor", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("patch", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("first_seen_run", sa.Integer, sa.ForeignKey("sync_runs.id"), nullable=False),
)

model_capabilities = sa.Table(
    "model_capabilities",
    metadata,
    _model_uuid_fk(),
    sa.Column("capability", SHORT, primary_key=True),
)

model_modalities = sa.Table(
    "model_modalities",
    metadata,
    _model_uuid_fk(),
    sa.Column("direction", sa.String(16), primary_key=True),
    sa.Column("modality", SHORT, primary_key=True),
)

model_endpoints = sa.Table(
    "model_endpoints",
    metadata,
    _model_uuid_fk(),
    sa.Column("endpoint", SHORT, primary_key=True),
)

model_endpoint_capabilities = sa.Table(
    "model_endpoint_capabilities",
    metadata,
    _model_uuid_fk(),
    sa.Column("endpoint", SHORT, primary_key=True),
    sa.Column("capability", SHORT, primary_key=True),
)

model_reasoning_efforts = sa.Table(
    "model_reasoning_efforts",
    metadata,
    _model_uuid_fk(),
    sa.Column("effort", SHORT, primary_key=True),
)

model_settings = sa.Table(
    "model_settings",
    metadata,
    _model_uuid_fk(),
    sa.Column("name", SHORT, primary_key=True),
    sa.Column("type", SHORT),
    sa.Column("default_value", sa.Double),
    sa.Column("default_string", sa.Text),
    sa.Column("min", sa.Double),
    sa.Column("max", sa.Double),
    sa.Column("step", sa.Double),
    sa.Column("options", StoredJSON),
)

model_pricing = sa.Table(
    "model_pricing",
    metadata,
    _model_uuid_fk(),
    sa.Column("price_key", SHORT, primary_key=True),
    sa.Column("price", sa.Double, nullable=False),
)

CHILD_TABLES: tuple[sa.Table, ...] = (
    model_capabilities,
    model_modalities,
    model_endpoints,
    model_endpoint_capabilities,
    model_reasoning_efforts,
    model_settings,
    model_pricing,
)
"""Tables that hold a model's list and object fields; rewritten whole when the model changes."""

notify_key = sa.Table(
    "notify_key",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("hash_key", HASH, nullable=False),
)
"""One row: this database's random key for the keyed hashes that name alert targets
(:mod:`etl.notify`), made by the first run given a target."""

notify_targets = sa.Table(
    "notify_targets",
    metadata,
    sa.Column("target_hash", HASH, primary_key=True),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
)
"""Every alert target a run was given: its keyed hash and a redacted label (``slack://***``),
never its URL; last_seen_at is the last run that had it configured."""

notify_outbox = sa.Table(
    "notify_outbox",
    metadata,
    sa.Column("message_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target_hash", HASH, sa.ForeignKey("notify_targets.target_hash"), nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_attempt_at", UTCDateTime),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", UTCDateTime),
    sa.UniqueConstraint("target_hash", "run_id"),
    sa.Index(None, "status", "target_hash", "message_id"),
)
"""One alert message per target per run that changed something, written in the run's own
transaction and delivered after its commit: status ``pending``, ``delivered`` or ``dropped``
(past ``--notify-max-pending``). run_id is a ``sync_runs`` id."""
