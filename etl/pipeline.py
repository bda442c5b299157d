"""Runs end to end: a sync (list the API, flatten, load) and a backfill (read archived
snapshots, flatten, load), each recorded in ``sync_runs``."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import db, notify
from etl.archive import (
    ArchiveWriter,
    BadSnapshot,
    Snapshot,
    SnapshotContent,
    SnapshotReader,
    date_snapshot,
    find_files,
)
from etl.client import Listing
from etl.config import USECASES, Settings
from etl.errors import CatalogShiftedError, DatabaseError, EtlError, Interrupted
from etl.http import Fetcher, build_session
from etl.load import (
    CatalogWriter,
    Counts,
    Replay,
    finish_run,
    later_runs,
    loaded_run,
    plan_replays,
    rewind,
    save_usecase_members,
    start_run,
)
from etl.lock import mark_abandoned, run_lock
from etl.pages import snapshot_pairs
from etl.transform import KNOWN_FIELDS, BadModel, FlatModel, flatten, snapshot_digest

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


def flatten_page(
    models: Sequence[Any], warnings: _Warnings, raw_hashes: Sequence[str | None] | None = None
) -> list[FlatModel]:
    """Flattens a page's models; one that cannot be stored is skipped with a warning."""
    flats = []
    for model, raw in zip(models, raw_hashes or [None] * len(models), strict=True):
        try:
            flat = flatten(model)
        except BadModel as exc:
            warnings.model(None, f"skipped: {exc}")
            continue
        flat.raw_hash = raw
        for message in flat.warnings:
            warnings.model(flat.uuid, message)
        flats.append(flat)
    return flats


def _save_page(
    writer: CatalogWriter,
    models: Sequence[Any],
    raw_hashes: Sequence[str | None] | None,
    warnings: _Warnings,
) -> None:
    """Saves one page or snapshot: models sent byte for byte as before are only counted."""
    for model in models:
        if isinstance(model, dict) and not model.keys() <= KNOWN_FIELDS:
            warnings.unknown_fields(frozenset(model.keys() - KNOWN_FIELDS))
    rest = writer.skip_unchanged(models, raw_hashes)
    changed = [model for model, _ in rest]
    writer.save_models(flatten_page(changed, warnings, [raw for _, raw in rest]))


def run_sync(
    settings: Settings,
    *,
    sleep: Callable[[float], None] | None = None,
) -> SyncResult:
    """Lists the whole catalog and brings the database up to date, in one transaction.

    The run's observation time is when its first page arrived. A listing in which the catalog
    moved while we paged (a model twice, totals that disagree) is rolled back and listed again
    from page 1, up to ``settings.list_attempts`` times.

    Args:
        settings: The run's configuration.
        sleep: How retries wait (default :func:`etl.http.sleep`).

    Returns:
        The run's counts.

    Raises:
        EtlError: The run failed; the catalog is as it was before and the run is recorded failed.
        Interrupted: SIGTERM; the run is rolled back and recorded ``interrupted``.
        KeyboardInterrupt: SIGINT; likewise.
    """
    started = time.monotonic()
    started_at = datetime.now(UTC)
    engine = db.create_engine(settings.database_url)
    fetcher = Fetcher(
        build_session(settings.token),
        max_retries=settings.max_retries,
        max_wait=settings.max_wait,
        deadline=settings.deadline,
        timeout=(settings.connect_timeout, settings.read_timeout),
        max_body=settings.max_response_bytes,
        sleep=sleep,
    )
    try:
        with _signals_as_exceptions(), _writer_lock(engine, settings.dry_run):
            run_id = None
            if not settings.dry_run:
                with _database_errors(engine):
                    db.ensure_schema(engine)
                    with engine.begin() as conn:
                        _abandon_dead_runs(conn)
                        run_id = start_run(
                            conn, mode="sync", filters=settings.filters(), started_at=started_at
                        )
            try:
                listing, counts = _list_and_load(engine, settings, fetcher, run_id, started_at)
            except BaseException as exc:
                if isinstance(exc, EtlError) and settings.token and settings.token in str(exc):
                    # An API may echo the credential in an error body that the message quotes:
                    # mask it before the error is stored, printed or shown in a traceback.
                    exc.args = (str(exc).replace(settings.token, "***"),)
                if run_id is not None:
                    _record_failure(engine, run_id, exc, fetcher.requests, fetcher.retries)
                raise
            notify.deliver_pending(engine, settings.notify)
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


def _list_and_load(
    engine: Engine,
    settings: Settings,
    fetcher: Fetcher,
    run_id: int | None,
    started_at: datetime,
) -> tuple[Listing, Counts]:
    for attempt in range(1, settings.list_attempts + 1):
        listing = Listing(
            fetcher,
            settings.api_url,
            settings.per_page,
            public_only=settings.public_only,
            usecases=settings.usecases,
        )
        archive = (
            ArchiveWriter(settings.archive_dir, started_at, run_id)
            if settings.archive_dir
            else None
        )
        try:
            counts = _load(engine, settings, listing, run_id, archive)
        except BaseException as exc:
            if archive is not None:
                archive.discard()
            if not isinstance(exc, CatalogShiftedError):
                raise
            if attempt == settings.list_attempts:
                raise CatalogShiftedError(
                    f"{exc} in each of {attempt} listings; nothing was written, run again later"
                ) from None
            log.warning("%s; listing again from page 1 (attempt %d)", exc, attempt + 1)
            continue
        if archive is not None:
            log.info("archived the run's responses in %s", archive.commit())
        return listing, counts
    raise AssertionError("unreachable: list_attempts >= 1")


@contextmanager
def _writer_lock(engine: Engine, dry_run: bool) -> Iterator[None]:
    """The database's run lock, for runs that write (a dry run takes none)."""
    if dry_run:
        yield
        return
    with _database_errors(engine), run_lock(engine):
        yield


def _abandon_dead_runs(conn: Connection) -> None:
    abandoned = mark_abandoned(conn)
    if abandoned:
        log.warning("marked %d run(s) left 'running' by a killed process as abandoned", abandoned)


@contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """Turns SIGTERM into :class:`Interrupted` so the run rolls back and records itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _load(
    engine: Engine,
    settings: Settings,
    listing: Listing,
    run_id: int | None,
    archive: ArchiveWriter | None,
) -> Counts:
    warnings = _Warnings()
    with _database_errors(engine), engine.begin() as conn:
        writer: CatalogWriter | None = None
        pairs: list[tuple[str, str]] = []
        for page in listing:
            if archive is not None:
                archive.write(page.fetched)
            if writer is None:
                writer = CatalogWriter(
                    conn, run_id, page.fetched.fetched_at, dry_run=settings.dry_run
                )
            _save_page(writer, page.models, page.fetched.model_hashes, warnings)
            pairs.extend(snapshot_pairs(page.models, page.fetched.model_hashes))
        assert writer is not None, "a listing has at least one page"
        if listing.inconsistency or listing.duplicates:
            reason = listing.inconsistency or f"{listing.duplicates} models appeared twice"
            raise CatalogShiftedError(f"the catalog changed while paging ({reason})")
        if listing.complete and not settings.filtered:
            writer.mark_removed(_confirmed_present(listing, writer, settings))
        elif not settings.filtered:
            log.warning(
                "the listing is not provably complete (%d distinct models, meta.total %s); "
                "no model is marked removed",
                len(listing.uuids),
                listing.total,
            )
        writer.end_run()
        if settings.with_usecases and not settings.dry_run:
            _save_usecases(conn, listing, settings, writer.observed_at, archive)
        writer.counts.warnings = warnings.count
        if run_id is not None:
            finish_run(
                conn,
                run_id,
                status="succeeded",
                finished_at=datetime.now(UTC),
                observed_at=writer.observed_at,
                complete=listing.complete,
                requests=listing.fetcher.requests,
                retries=listing.fetcher.retries,
                pages=listing.pages,
                models_seen=len(listing.uuids),
                snapshot_hash=snapshot_digest(pairs),
                **asdict(writer.counts),
            )
            notify.enqueue_run(conn, run_id, settings.notify)
    return writer.counts


def _confirmed_present(listing: Listing, writer: CatalogWriter, settings: Settings) -> set[str]:
    """The models a complete listing proves present, checked once more before any removal.

    A deletion and an addition while we page keep ``meta.total`` and leave no duplicate, yet
    the model that slid onto an already fetched page was never seen. So a run that would remove
    models lists the catalog again and removes only those missing from both listings: one more
    listing, and only on runs that remove something. An empty catalog removes nothing.
    """
    missing = writer.missing(listing.uuids)
    if not missing:
        return listing.uuids
    if not listing.uuids:
        log.warning("the API listed no models at all; nothing is marked removed")
        return set(writer.known)
    log.info(
        "%d models missing; listing again to confirm before marking them removed", len(missing)
    )
    again = Listing(listing.fetcher, settings.api_url, settings.per_page)
    for _ in again:
        pass
    return listing.uuids | again.uuids


def _save_usecases(
    conn: Connection,
    listing: Listing,
    settings: Settings,
    observed_at: datetime,
    archive: ArchiveWriter | None,
) -> None:
    """Lists the catalog once per usecase and records each model's memberships."""
    known = listing.uuids
    for usecase in USECASES:
        members = Listing(
            listing.fetcher,
            settings.api_url,
            settings.per_page,
            public_only=settings.public_only,
            usecases=(usecase,),
        )
        seen: set[str] = set()
        for page in members:
            if archive is not None:
                archive.write(page.fetched)
            seen.update(
                m["uuid"] for m in page.models if isinstance(m, dict) and m.get("uuid") in known
            )
        if members.uuids - known:
            log.warning(
                "%d models listed for %s were not in the catalog listing; ignored",
                len(members.uuids - known),
                usecase,
            )
        complete = members.complete and not settings.public_only
        joined, left = save_usecase_members(conn, usecase, seen, observed_at, complete)
        log.info("usecase %s: %d models, %d joined, %d left", usecase, len(seen), joined, left)


@dataclass
class BackfillResult:
    """What a backfill did, as printed by ``etl backfill``."""

    dry_run: bool
    files: int
    loaded: int
    skipped: int
    partial: int
    failed: list[str]
    inserted: int
    updated: int
    removed: int
    restored: int
    warnings: int
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_backfill(
    database_url: str,
    paths: Sequence[str],
    *,
    as_of: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[Iterable[Snapshot]], Iterable[Snapshot]] = lambda items: items,
    alerts: notify.Targets | None = None,
) -> BackfillResult:
    """Loads archived snapshots as runs of mode ``backfill``, in time order.

    Each snapshot goes through the same flatten, upsert and history code as a sync. One older
    than runs already recorded is put in its place: history is rewound to its time and the
    later runs are replayed (see :func:`etl.load.plan_replays`). A snapshot already loaded (same
    time, same content) is skipped, so running a backfill twice changes nothing.

    Args:
        database_url: The catalog database.
        paths: Files and folders to read.
        as_of: Observation time for files that carry none of their own.
        dry_run: Load everything in one transaction and roll it back.
        progress: Wraps the snapshot iteration (a progress bar on a terminal).
        alerts: Where to send each loaded snapshot's changes (``--notify-backfill``).

    Returns:
        What was loaded; ``failed`` names each unreadable file and why.
    """
    started = time.monotonic()
    snapshots = sorted(
        (date_snapshot(path, as_of) for path in find_files(paths)),
        key=lambda snap: (snap.observed_at, str(snap.path)),
    )
    result = BackfillResult(dry_run, len(snapshots), 0, 0, 0, [], 0, 0, 0, 0, 0, 0.0)
    engine = db.create_engine(database_url)
    try:
        with _signals_as_exceptions(), _writer_lock(engine, dry_run), _database_errors(engine):
            db.ensure_schema(engine)
            with engine.connect() as conn:
                if not dry_run:
                    with conn.begin():
                        _abandon_dead_runs(conn)
                outer = conn.begin() if dry_run else None
                reader = SnapshotReader()
                writer: CatalogWriter | None = None
                for snapshot in progress(snapshots):
                    writer = _backfill_one(conn, snapshot, result, dry_run, reader, writer, alerts)
                if outer is not None:
                    outer.rollback()
            if not dry_run:
                notify.deliver_pending(engine, alerts)
    finally:
        engine.dispose()
    result.duration_s = round(time.monotonic() - started, 3)
    return result


def _backfill_one(
    conn: Connection,
    snapshot: Snapshot,
    result: BackfillResult,
    dry_run: bool,
    reader: SnapshotReader,
    writer: CatalogWriter | None,
    alerts: notify.Targets | None,
) -> CatalogWriter | None:
    """Loads one snapshot in its own transaction.

    Args:
        writer: The previous snapshot's writer, whose picture of the catalog is the database's
            when that snapshot was the newest run; None to read the picture afresh.

    Returns:
        A writer the next snapshot may go on with, or None.
    """
    try:
        content = reader.read(snapshot.path)
    except BadSnapshot as exc:
        log.error("%s: %s; nothing loaded from it", snapshot.path, exc)
        result.failed.append(f"{snapshot.path}: {exc}")
        return writer
    return _load_snapshot(conn, snapshot, content, result, dry_run, writer, alerts)


def _load_snapshot(
    conn: Connection,
    snapshot: Snapshot,
    content: SnapshotContent,
    result: BackfillResult,
    dry_run: bool,
    writer: CatalogWriter | None,
    alerts: notify.Targets | None,
) -> CatalogWriter | None:
    warnings = _Warnings()
    when = snapshot.observed_at
    with conn.begin() if not dry_run else contextlib.nullcontext():
        digest = snapshot_digest(snapshot_pairs(content.models, content.hashes))
        done = loaded_run(conn, when, digest)
        if done is not None:
            log.info("%s: already loaded as run %d; skipped", snapshot.path, done)
            result.skipped += 1
            return writer
        run_id = start_run(
            conn,
            mode="backfill",
            filters={"archived": "filtered"} if content.filtered else {},
            started_at=datetime.now(UTC),
            observed_at=when,
            source=str(snapshot.path),
        )
        later = later_runs(conn, when)
        replays: list[Replay] = []
        contents: dict[int, Any] = {}
        if later:
            replays, contents = plan_replays(conn, later, when)
            rewind(conn, when, [run.id for run in later])
            writer = CatalogWriter(conn, run_id, when, as_of=when)
        elif writer is None:
            writer = CatalogWriter(conn, run_id, when)
        else:
            writer.begin_run(run_id, when)
        _save_page(writer, content.models, content.hashes, warnings)
        if content.marks_removals:
            writer.mark_removed(content.tally.uuids)
        else:
            result.partial += 1
            log.warning(
                "%s: %s snapshot (%d models, meta.total %s); no model is marked removed",
                snapshot.path,
                "filtered" if content.filtered else "incomplete",
                len(content.tally.uuids),
                content.tally.total,
            )
        writer.end_run()
        writer.counts.warnings = warnings.count
        finish_run(
            conn,
            run_id,
            status="succeeded",
            finished_at=datetime.now(UTC),
            complete=content.marks_removals,
            pages=content.pages,
            models_seen=len(content.tally.uuids),
            snapshot_hash=digest,
            **asdict(writer.counts),
        )
        notify.enqueue_run(conn, run_id, None if dry_run else alerts)
        for name in ("inserted", "updated", "removed", "restored", "warnings"):
            setattr(result, name, getattr(result, name) + getattr(writer.counts, name))
        result.loaded += 1
        for replay in replays:
            _replay(conn, writer, replay, contents)
    # After replays the writer's picture is the newest replayed run's, not necessarily the
    # tables' (a partial replay leaves rows as they were): read it afresh next time.
    return None if replays else writer


def _replay(
    conn: Connection, writer: CatalogWriter, replay: Replay, contents: dict[int, Any]
) -> None:
    writer.begin_run(replay.run_id, replay.observed_at)
    saved = [contents[history_id] for _, history_id in replay.members]
    _save_page(writer, [raw for raw, _ in saved], [digest for _, digest in saved], _Warnings())
    if replay.marks_removals:
        writer.mark_removed({uuid for uuid, _ in replay.members})
    writer.end_run()
    counts = asdict(writer.counts)
    del counts["warnings"]
    finish_run(conn, replay.run_id, **counts)


def _record_failure(
    engine: Engine, run_id: int, exc: BaseException, requests: int, retries: int
) -> None:
    status = "interrupted" if isinstance(exc, Interrupted | KeyboardInterrupt) else "failed"
    if isinstance(exc, KeyboardInterrupt):
        error = "interrupted (SIGINT)"  # str(KeyboardInterrupt()) is empty
    elif isinstance(exc, EtlError | Interrupted):
        error = str(exc)
    else:
        error = f"{type(exc).__name__}: {exc}"
    try:
        with engine.begin() as conn:
            finish_run(
                conn,
                run_id,
                status=status,
                finished_at=datetime.now(UTC),
                requests=requests,
                retries=retries,
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
