"""One sync, end to end: list the API, flatten, load, and record the run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import db
from etl.client import Listing
from etl.config import Settings
from etl.errors import DatabaseError, EtlError, InvalidResponseError
from etl.http import Fetcher, build_session
from etl.load import CatalogWriter, Counts, finish_run, start_run
from etl.transform import BadModel, FlatModel, flatten

log = logging.getLogger("etl")

MAX_LOGGED_WARNINGS = 20


@dataclass
class SyncResult:
    """What a sync did, as printed by ``etl sync`` and stored in ``sync_runs``."""

    run_id: int | None
    status: str
    dry_run: bool
    complete: bool
    requests: int
    retries: int
    pages: int
    models_seen: int
    inserted: int
    updated: int
    unchanged: int
    removed: int
    restored: int
    warnings: int
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Warnings:
    """Counts bad-data warnings, logging the first few in full and schema drift once per field."""

    def __init__(self) -> None:
        self.count = 0
        self.drift: set[str] = set()

    def model(self, uuid: str | None, message: str) -> None:
        self.count += 1
        if self.count <= MAX_LOGGED_WARNINGS:
            log.warning("model %s: %s", uuid or "?", message)
        elif self.count == MAX_LOGGED_WARNINGS + 1:
            log.warning("more model warnings in this run; only their count is recorded")

    def unknown_fields(self, fields: frozenset[str]) -> None:
        for name in sorted(fields - self.drift):
            self.drift.add(name)
            log.warning("schema drift: field %r is not in the spec; kept in raw", name)


def flatten_page(models: list[Any], warnings: _Warnings) -> list[FlatModel]:
    """Flattens a page's models; one that cannot be stored is skipped with a warning."""
    flats = []
    for model in models:
        try:
            flat = flatten(model)
        except BadModel as exc:
            warnings.model(None, f"skipped: {exc}")
            continue
        for message in flat.warnings:
            warnings.model(flat.uuid, message)
        if flat.unknown_fields:
            warnings.unknown_fields(flat.unknown_fields)
        flats.append(flat)
    return flats


def run_sync(
    settings: Settings,
    *,
    sleep: Callable[[float], None] | None = None,
) -> SyncResult:
    """Lists the whole catalog and brings the database up to date, in one transaction.

    Args:
        settings: The run's configuration.
        sleep: How retries wait (default :func:`etl.http.sleep`).

    Returns:
        The run's counts.

    Raises:
        EtlError: The run failed; the catalog is as it was before and the run is recorded failed.
    """
    started = time.monotonic()
    started_at = datetime.now(UTC)
    engine = db.create_engine(settings.database_url)
    try:
        with _database_errors(engine):
            if not settings.dry_run:
                db.ensure_schema(engine)
            run_id = None
            if not settings.dry_run:
                with engine.begin() as conn:
                    run_id = start_run(
                        conn, mode="sync", filters=settings.filters(), started_at=started_at
                    )
        fetcher = Fetcher(
            build_session(settings.token),
            max_retries=settings.max_retries,
            max_wait=settings.max_wait,
            deadline=settings.deadline,
            timeout=(settings.connect_timeout, settings.read_timeout),
            sleep=sleep,
        )
        listing = Listing(
            fetcher,
            settings.api_url,
            settings.per_page,
            public_only=settings.public_only,
            usecases=settings.usecases,
        )
        try:
            counts = _load(engine, settings, listing, run_id, started_at)
        except BaseException as exc:
            if run_id is not None:
                _record_failure(engine, run_id, exc, fetcher, listing)
            raise
        return SyncResult(
            run_id=run_id,
            status="succeeded",
            dry_run=settings.dry_run,
            complete=listing.complete,
            requests=fetcher.requests,
            retries=fetcher.retries,
            pages=listing.pages,
            models_seen=len(listing.uuids),
            duration_s=round(time.monotonic() - started, 3),
            **asdict(counts),
        )
    finally:
        engine.dispose()


def _load(
    engine: Engine,
    settings: Settings,
    listing: Listing,
    run_id: int | None,
    observed_at: datetime,
) -> Counts:
    warnings = _Warnings()
    with _database_errors(engine), engine.begin() as conn:
        writer = CatalogWriter(conn, run_id, observed_at, dry_run=settings.dry_run)
        for page in listing:
            writer.save_models(flatten_page(page.models, warnings))
        if listing.inconsistency or listing.duplicates:
            reason = listing.inconsistency or f"{listing.duplicates} models appeared twice"
            raise InvalidResponseError(
                f"the catalog changed while paging ({reason}); nothing was written, run again"
            )
        if listing.complete and not settings.filtered:
            writer.mark_removed(listing.uuids)
        elif not settings.filtered:
            log.warning(
                "the listing is not provably complete (%d distinct models, meta.total %s); "
                "no model is marked removed",
                len(listing.uuids),
                listing.total,
            )
        writer.counts.warnings = warnings.count
        if run_id is not None:
            finish_run(
                conn,
                run_id,
                status="succeeded",
                finished_at=datetime.now(UTC),
                complete=listing.complete,
                requests=listing.fetcher.requests,
                retries=listing.fetcher.retries,
                pages=listing.pages,
                models_seen=len(listing.uuids),
                **asdict(writer.counts),
            )
    return writer.counts


def _record_failure(
    engine: Engine, run_id: int, exc: BaseException, fetcher: Fetcher, listing: Listing
) -> None:
    status = "failed" if isinstance(exc, Exception) else "interrupted"
    error = str(exc) if isinstance(exc, EtlError) else f"{type(exc).__name__}: {exc}"
    try:
        with engine.begin() as conn:
            finish_run(
                conn,
                run_id,
                status=status,
                finished_at=datetime.now(UTC),
                requests=fetcher.requests,
                retries=fetcher.retries,
                pages=listing.pages,
                error=error[:2000],
            )
    except sa.exc.SQLAlchemyError as db_exc:
        log.error("could not record run %d as %s: %s", run_id, status, db.first_line(db_exc))


@contextmanager
def _database_errors(engine: Engine) -> Iterator[None]:
    """Turns SQLAlchemy's errors into a one-line :class:`DatabaseError` (exit 6)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(
            f"database error on {db.mask_url(engine.url)}: {db.first_line(exc)}"
        ) from exc
