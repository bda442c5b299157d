"""Runs end to end: a sync (list the API, flatten, load) and a backfill (read archived
snapshots, flatten, load), each recorded in ``sync_runs``."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import db, notify, schema, signals
from etl.archive import (
    MAX_FILE_BYTES,
    ArchiveWriter,
    BadSnapshot,
    KnownSnapshot,
    Snapshot,
    SnapshotContent,
    SnapshotReader,
    date_snapshot,
    find_files,
)
from etl.client import Listing, Tally
from etl.config import USECASES, Settings
from etl.errors import (
    CatalogShiftedError,
    DatabaseError,
    EtlError,
    Interrupted,
    InvalidResponseError,
)
from etl.http import Fetcher, build_session
from etl.load import (
    PROJECTION_VERSION,
    Counts,
    Difference,
    Loaded,
    Loader,
    Refused,
    finish_run,
    projection_version,
    rebuild,
    start_run,
    verify,
)
from etl.lock import RunLock, mark_abandoned, run_lock
from etl.memo import ListingMemo, read_memo, save_memo
from etl.output import plural
from etl.pages import cycle_collector_paused
from etl.sanitize import stored_error

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


def run_sync(
    settings: Settings,
    *,
    sleep: Callable[[float], None] | None = None,
) -> SyncResult:
    """Lists the whole catalog into a snapshot file, then loads it in one short transaction.

    Fetch, then write: no transaction is open while we wait for the network. The snapshot is
    the gzip JSON-lines file ``--archive-dir`` keeps (a temporary file otherwise), and it is
    loaded exactly as ``etl backfill`` loads a file. The run's observation time is when its
    first page arrived. A listing in which the catalog moved while we paged (a model twice,
    totals that disagree) is thrown away and listed again from page 1, up to
    ``settings.list_attempts`` times.

    Args:
        settings: The run's configuration.
        sleep: How retries wait (default :func:`etl.http.sleep`).

    Returns:
        The run's counts.

    Raises:
        EtlError: The run failed; nothing of it was written and the run is recorded failed.
        Interrupted: SIGTERM before the commit; the run is recorded ``interrupted``.
        KeyboardInterrupt: SIGINT before the commit; likewise.
    """
    # A sync keeps every page it listed parsed until it loads them: with the collector on,
    # every full collection walked them all again (about a fifth of a 10,000-model sync).
    with cycle_collector_paused():
        return _run_sync(settings, sleep)


def _run_sync(settings: Settings, sleep: Callable[[float], None] | None) -> SyncResult:
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
        run_timeout=settings.run_timeout,
        sleep=sleep,
    )
    try:
        with (
            signals.as_exceptions(),
            signals.AfterCommit() as committed,
            _writer_lock(engine, settings.dry_run) as lock,
        ):
            run_id = None
            memo = None
            with _database_errors(engine):
                if lock is None:  # a dry run
                    present = _present_models(engine) if db.check_schema(engine) else set()
                else:
                    db.ensure_schema(engine)
                    with lock.transaction() as conn:
                        _abandon_dead_runs(conn)
                        run_id = start_run(
                            conn, mode="sync", filters=settings.filters(), started_at=started_at
                        )
                    present = _present_models(engine)
                    memo = _read_memo(engine, settings, len(present))
            try:
                with _snapshot_file(settings, started_at, run_id) as archive:
                    phase = time.monotonic()
                    listing = _fetch(settings, fetcher, archive, present, memo)
                    log.debug("phase fetch: %.3fs", time.monotonic() - phase)
                    phase = time.monotonic()
                    archive.close()
                    content = _read_fetched(archive, listing, memo)
                    log.debug("phase read snapshot: %.3fs", time.monotonic() - phase)
                    phase = time.monotonic()
                    extra = {
                        "requests": fetcher.requests,
                        "retries": fetcher.retries,
                        "filters": settings.filters() or None,
                    }
                    loaded = _load_one(
                        engine, lock, committed, content, listing.observed_at,
                        f"sync run {run_id}", run_id, started_at, extra, settings.notify,
                        (settings.per_page, listing.digests) if _memo_kept(settings) else None,
                    )  # fmt: skip
                    log.debug("phase load and commit: %.3fs", time.monotonic() - phase)
                    if settings.archive_dir and lock is not None:
                        log.info("archived the run's responses in %s", archive.commit())
                signals.pause_for_tests("after-commit")
            except BaseException as exc:
                if isinstance(exc, EtlError) and settings.token and settings.token in str(exc):
                    # An API may echo the credential in an error body that the message quotes:
                    # mask it before the error is stored, printed or shown in a traceback.
                    exc.args = (str(exc).replace(settings.token, "***"),)
                if run_id is not None and not committed.done:
                    _record_failure(engine, run_id, exc, fetcher.requests, fetcher.retries)
                raise
            if lock is not None:
                committed.release()  # a signal may end the delivery, not the committed run
                notify.deliver_pending(engine, settings.notify)
        _warn_partial(loaded, content, "the listing")
        return SyncResult(
            run_id=run_id,
            status="succeeded",
            dry_run=settings.dry_run,
            complete=loaded.marks_removals,
            requests=fetcher.requests,
            retries=fetcher.retries,
            pages=listing.pages,
            models_seen=listing.seen,
            duration_s=round(time.monotonic() - started, 3),
            warnings=loaded.warnings,
            **asdict(loaded.counts),
        )
    finally:
        engine.dispose()


def _present_models(engine: Engine) -> set[str]:
    """The models the database holds present: a listing that lacks some is confirmed."""
    models = schema.models
    with engine.connect() as conn:
        query = sa.select(models.c.uuid).where(models.c.removed_at.is_(None))
        return set(conn.execute(query).scalars())


@contextmanager
def _snapshot_file(
    settings: Settings, started_at: datetime, run_id: int | None
) -> Iterator[ArchiveWriter]:
    """Where the sync writes its snapshot: the archive, or a temporary folder (a dry run's is
    always temporary: dry runs write nothing)."""
    if settings.archive_dir and not settings.dry_run:
        archive = ArchiveWriter(settings.archive_dir, started_at, run_id)
        try:
            yield archive
        except BaseException:
            archive.discard()
            raise
        return
    with tempfile.TemporaryDirectory(prefix="etl-snapshot-") as folder:
        archive = ArchiveWriter(folder, started_at, run_id, compresslevel=0)
        try:
            yield archive
        finally:
            archive.discard()


def _memo_kept(settings: Settings) -> bool:
    """Whether the sync reads and keeps the listing memo (:mod:`etl.memo`): plain listings
    only, and never on a dry run (which writes nothing)."""
    return (
        settings.listing_memo
        and not settings.filtered
        and not settings.with_usecases
        and not settings.dry_run
    )


def _read_memo(engine: Engine, settings: Settings, present: int) -> ListingMemo | None:
    if not _memo_kept(settings):
        return None
    with engine.connect() as conn:
        return read_memo(conn, settings.per_page, present)


@dataclass
class _Fetched:
    observed_at: datetime
    pages: int
    seen: int
    digests: list[str]
    """Each page's digest, in order (the main listing's, not a confirming or usecase one)."""
    known: bool = False
    """True when every page was the listing memo's."""


def _fetch(
    settings: Settings,
    fetcher: Fetcher,
    archive: ArchiveWriter,
    present: set[str],
    memo: ListingMemo | None,
) -> _Fetched:
    """Lists the catalog into ``archive``: a listing that holds still, a confirming listing
    when models we hold present are missing from it, and the usecase listings. A listing
    whose pages are all the memo's is that snapshot again: nothing of it is checked twice."""
    for attempt in range(1, settings.list_attempts + 1):
        listing = _listing(settings, fetcher, memo)
        observed_at: datetime | None = None
        digests = []
        for page in listing:
            observed_at = observed_at or page.fetched.fetched_at
            digests.append(page.fetched.digest)
            archive.write(page.fetched)
        assert observed_at is not None, "a listing has at least one page"
        if listing.known:
            assert memo is not None
            log.debug(
                "listing: %s as run %d listed them; not parsed again",
                plural(listing.pages, "page"),
                memo.run_id,
            )
            return _Fetched(observed_at, listing.pages, memo.seen, digests, known=True)
        if listing.inconsistency or listing.duplicates:
            reason = listing.inconsistency or f"{listing.duplicates} models appeared twice"
            archive.restart()
            if attempt == settings.list_attempts:
                raise CatalogShiftedError(
                    f"the catalog changed while paging ({reason}) in each of {attempt} "
                    "listings; nothing was written, run again later"
                )
            log.warning(
                "the catalog changed while paging (%s); listing again from page 1 (attempt %d)",
                reason,
                attempt + 1,
            )
            continue
        if not listing.models and not settings.filtered:
            raise InvalidResponseError(
                "the API listed no models at all; nothing is recorded (an empty catalog is "
                "refused, see the README)"
            )
        missing = present - listing.uuids
        if missing and listing.complete and not settings.filtered:
            log.info(
                "%s missing; listing again to confirm before marking them removed",
                plural(len(missing), "model"),
            )
            for page in Listing(fetcher, settings.api_url, settings.per_page):
                archive.write(page.fetched, listing="confirm")
        if settings.with_usecases:
            for usecase in USECASES:
                members = Listing(fetcher, settings.api_url, settings.per_page, usecases=(usecase,))
                for page in members:
                    archive.write(page.fetched)
        return _Fetched(observed_at, listing.pages, len(listing.uuids), digests)
    raise AssertionError("unreachable: list_attempts >= 1")


def _read_fetched(
    archive: ArchiveWriter, listing: _Fetched, memo: ListingMemo | None
) -> SnapshotContent:
    """The snapshot a sync just wrote, as a backfill of the file reads it; or, for a listing
    the memo recognised, the stored snapshot it stands for."""
    if listing.known:
        assert memo is not None
        known = KnownSnapshot(memo.snapshot_id, memo.digest, memo.models, memo.seen,
                              archive.partial)  # fmt: skip
        return SnapshotContent([], Tally(), pages=listing.pages, known_complete=True, known=known)
    try:
        return archive.content()
    except BadSnapshot as exc:  # the listing checked each page: this is not expected
        raise InvalidResponseError(f"the fetched snapshot is unusable: {exc}") from None


def _listing(settings: Settings, fetcher: Fetcher, memo: ListingMemo | None) -> Listing:
    return Listing(
        fetcher,
        settings.api_url,
        settings.per_page,
        public_only=settings.public_only,
        usecases=settings.usecases,
        known_pages=memo.pages if memo is not None else (),
    )


def _load_one(
    engine: Engine,
    lock: RunLock | None,
    committed: signals.AfterCommit,
    content: SnapshotContent,
    observed_at: datetime,
    source: str,
    run_id: int | None,
    started_at: datetime,
    extra: dict[str, Any],
    alerts: notify.Targets | None,
    listed: tuple[int, list[str]] | None = None,
) -> Loaded:
    """Loads a sync's snapshot in one transaction on the run lock's connection (a dry run's
    is rolled back).

    Args:
        committed: Where the commit's signal deferral goes: from just before the commit until
            the run ends, a signal cannot turn a committed run into an interrupted one.
        listed: The listing's page size and page digests, kept as the listing memo when the
            listing qualifies (None: the memo is not kept).
    """
    with _database_errors(engine), _transaction(engine, lock) as conn:
        if lock is None and not db.check_schema(engine):  # a dry run on a new database
            return Loaded(0, counts=Counts(inserted=len(content.tally.uuids)))
        loader = Loader(conn)
        loaded = loader.load(
            content,
            observed_at=observed_at,
            source=source,
            mode="sync",
            run_id=run_id,
            started_at=started_at,
            extra=extra,
        )
        loader.finish()
        if lock is not None:
            if listed is not None and _memoisable(loaded, content, loader):
                assert loaded.snapshot_id is not None and loaded.digest is not None
                per_page, pages = listed
                memo = ListingMemo(loaded.run_id, loaded.snapshot_id, loaded.digest, loaded.models,
                                   len(content.tally.uuids), per_page, tuple(pages))  # fmt: skip
                save_memo(conn, memo)
            if not loaded.skipped:  # the run's alerts commit with its changes
                notify.enqueue_run(conn, loaded.run_id, alerts)
            committed.reached()
    return loaded


def _memoisable(loaded: Loaded, content: SnapshotContent, loader: Loader) -> bool:
    """Whether a sync's listing may stand for its snapshot next time: complete, unfiltered,
    every model stored, no confirming listing, and no field the spec lacks (whose warning a
    parsed listing logs on every run)."""
    return (
        content.known is None
        and not loaded.skipped
        and loaded.marks_removals
        and not content.confirmed
        and not content.usecases
        and not loader.warnings.drift
    )


@contextmanager
def _transaction(engine: Engine, lock: RunLock | None) -> Iterator[Connection]:
    """The run lock's transaction; without a lock (a dry run), one that is rolled back."""
    if lock is not None:
        with lock.transaction() as conn:
            yield conn
        return
    with engine.connect() as conn, conn.begin() as transaction:
        yield conn
        transaction.rollback()


def _warn_partial(loaded: Loaded, content: SnapshotContent, what: str) -> None:
    if loaded.skipped or loaded.marks_removals or content.filtered:
        return
    if loaded.unstorable:
        log.warning(
            "%d listed models could not be stored (they keep their last content); no model is "
            "marked removed in this run",
            loaded.unstorable,
        )
    else:
        log.warning(
            "%s is not provably complete (%d distinct models, meta.total %s); no model is "
            "marked removed",
            what,
            len(content.tally.uuids),
            content.tally.total,
        )


@contextmanager
def _writer_lock(engine: Engine, dry_run: bool) -> Iterator[RunLock | None]:
    """The database's run lock, for runs that write (a dry run takes none: None)."""
    if dry_run:
        yield None
        return
    with _database_errors(engine), run_lock(engine) as lock:
        yield lock


def _abandon_dead_runs(conn: Connection) -> None:
    abandoned = mark_abandoned(conn)
    if abandoned:
        log.warning("marked %d run(s) left 'running' by a killed process as abandoned", abandoned)


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
    max_file_bytes: int = MAX_FILE_BYTES,
) -> BackfillResult:
    """Loads archived snapshots as runs of mode ``backfill``, in one transaction.

    Each file goes through the same loader as a sync's snapshot. Snapshots older than runs
    already loaded take their place in time: the history is derived again once, however many
    there are. A snapshot already loaded (same time, same content) is skipped, so running a
    backfill twice changes nothing. A file that is not a snapshot, is dated in the future, or
    holds another catalog for an instant already loaded is refused and named in ``failed``;
    the others load.

    Args:
        database_url: The catalog database.
        paths: Files and folders to read.
        as_of: Observation time for files that carry none of their own.
        dry_run: Load everything in one transaction and roll it back.
        progress: Wraps the snapshot iteration (a progress bar on a terminal).
        alerts: Where to send each loaded snapshot's changes (``--notify-backfill``).
        max_file_bytes: Most bytes a file may hold once inflated; a larger one is refused
            (named in ``failed``) without being read further.

    Returns:
        What was loaded; ``failed`` names each refused file and why.
    """
    started = time.monotonic()
    snapshots = sorted(
        (date_snapshot(path, as_of) for path in find_files(paths)),
        key=lambda snap: (snap.observed_at, str(snap.path)),
    )
    result = BackfillResult(dry_run, len(snapshots), 0, 0, 0, [], 0, 0, 0, 0, 0, 0.0)
    engine = db.create_engine(database_url)
    try:
        with (
            signals.as_exceptions(),
            signals.AfterCommit() as committed,
            _writer_lock(engine, dry_run) as lock,
            _database_errors(engine),
        ):
            db.ensure_schema(engine)
            if lock is not None:
                with lock.transaction() as conn:
                    _abandon_dead_runs(conn)
            with _transaction(engine, lock) as conn:
                loader = Loader(conn)
                reader = SnapshotReader(max_file_bytes)
                for snapshot in progress(snapshots):
                    _backfill_one(loader, reader, snapshot, result)
                loader.finish()
                for loaded in loader.loaded:
                    for name in ("inserted", "updated", "removed", "restored"):
                        total = getattr(result, name) + getattr(loaded.counts, name)
                        setattr(result, name, total)
                if lock is not None:
                    for loaded in loader.loaded:
                        if not loaded.skipped:
                            notify.enqueue_run(conn, loaded.run_id, alerts)
                    committed.reached()
            if lock is not None:
                committed.release()  # a signal may end the delivery, not the committed run
                notify.deliver_pending(engine, alerts)
    finally:
        engine.dispose()
    result.duration_s = round(time.monotonic() - started, 3)
    return result


def _backfill_one(
    loader: Loader, reader: SnapshotReader, snapshot: Snapshot, result: BackfillResult
) -> None:
    try:
        content = reader.read(snapshot.path)
        loaded = loader.load(
            content, observed_at=snapshot.observed_at, source=str(snapshot.path), mode="backfill"
        )
    except (BadSnapshot, Refused) as exc:
        # a refusal names its file already; a reading error does not
        why = str(exc) if isinstance(exc, Refused) else f"{snapshot.path}: {exc}"
        log.error("%s; nothing loaded from it", why)
        result.failed.append(why)
        return
    if loaded.skipped:
        result.skipped += 1
        return
    result.loaded += 1
    result.warnings += loaded.warnings
    if not loaded.marks_removals:
        result.partial += 1
        _warn_partial(loaded, content, str(snapshot.path))


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
                error=stored_error(error),
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


def run_verify(database_url: str, repair: bool = False) -> list[Difference]:
    """Derives the history from the stored observations and compares it with the tables.

    Args:
        database_url: The catalog database.
        repair: Also rewrite the derived tables from the observations, in one transaction,
            when they differ (under the run lock).

    Returns:
        The differences found (before any repair).
    """
    engine = db.create_engine(database_url)
    try:
        with signals.as_exceptions(), _database_errors(engine):
            if not db.check_schema(engine):
                return []
            if not repair:
                with _transaction(engine, None) as conn:
                    return verify(conn)
            with run_lock(engine) as lock, lock.transaction() as conn:
                differences = verify(conn)
                if differences:
                    rebuild(conn)
                return differences
    finally:
        engine.dispose()


def derive_if_stale(engine: Engine, lock: RunLock) -> bool:
    """Derives the history again when the tables were derived by other rules (right after
    an upgrade that changed them, e.g. revision 0007). Returns whether it did."""
    with _database_errors(engine), lock.transaction() as conn:
        if projection_version(conn) == PROJECTION_VERSION:
            return False
        rebuild(conn)
        return True
