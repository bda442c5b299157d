"""Raw snapshots on disk: writing each run's responses, and reading archived catalogs back.

Archive layout (``etl sync --archive-dir DIR``)::

    DIR/YYYY/MM/DD/YYYYMMDDTHHMMSSZ-run<ID>.jsonl.gz

One gzip file per run, one JSON object per line and response, in the order fetched::

    {"fetched_at": "2026-11-25T10:17:02.123456Z", "url": "https://.../v2/gen-ai/models?page=1&per_page=200",
     "status": 200, "body": {"links": {...}, "meta": {...}, "models": [...]}}

URLs carry no credentials (the token travels in a header and is never written). A file is
written under a ``.partial`` name and renamed when the run succeeds; a failed run leaves none.

Reading (``etl backfill``) accepts, plain or gzip: our archive files; a single API response
(``{"links", "meta", "models"}``); a bare JSON array of models; JSON lines of archive records,
API responses or models. Each file is one snapshot of the catalog.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from etl import files
from etl.client import Tally
from etl.errors import ConfigError, InvalidResponseError
from etl.http import Fetched
from etl.pages import parse_page, raw_hash
from etl.times import format_instant

log = logging.getLogger("etl.archive")

_GZIP_MAGIC = b"\x1f\x8b"
_NAME_TIME = re.compile(
    r"(?P<date>\d{4}-?\d{2}-?\d{2})(?:[T_ -]?(?P<time>\d{2}[:-]?\d{2}(?:[:-]?\d{2})?))?"
)
_FILTERS = ("public_only", "usecases")


class ArchiveWriter:
    """Appends one run's responses to its gzip JSON-lines file.

    Args:
        directory: The archive's root.
        started_at: The run's start, which names the file.
        run_id: The run's id (None on a dry run).
        compresslevel: gzip's level: 6 for an archive kept, 1 for a sync's temporary snapshot.

    The records written are also kept parsed (:meth:`content`): a sync loads the snapshot it
    wrote without reading and parsing the file again, and what it loads is what a backfill of
    the file reads (the same records, the same digests of each model's bytes).
    """

    def __init__(
        self,
        directory: str | Path,
        started_at: datetime,
        run_id: int | None,
        compresslevel: int = 6,
    ) -> None:
        self.compresslevel = compresslevel
        self.records: list[tuple[dict[str, Any], list[str] | None]] = []
        day = started_at.astimezone(UTC)
        folder = Path(directory) / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create archive folder {folder}: {exc.strerror}") from None
        run = f"-run{run_id}" if run_id is not None else "-dry-run"
        self.path = folder / f"{day:%Y%m%dT%H%M%SZ}{run}.jsonl.gz"
        self.partial = self.path.with_name(self.path.name + ".partial")
        try:  # never through a symlink planted at the name
            raw = files.create_new(self.partial)
        except OSError as exc:
            raise ConfigError(f"cannot create {self.partial}: {exc.strerror or exc}") from None
        # Open for the whole run; commit() or discard() closes it.
        self._raw = raw
        self._file: gzip.GzipFile | None = gzip.GzipFile(
            fileobj=raw, mode="wb", compresslevel=compresslevel
        )

    def write(self, fetched: Fetched, listing: str | None = None) -> None:
        """Appends one response, its body byte for byte when it fits on one line.

        Args:
            fetched: The response.
            listing: ``confirm`` for the pages of a listing that only confirms which models
                are present before any is marked removed.
        """
        head = {"fetched_at": format_instant_precise(fetched.fetched_at), "url": fetched.url,
                "status": fetched.status}  # fmt: skip
        if listing is not None:
            head["listing"] = listing
        body = fetched.body.strip()
        hashes = fetched.model_hashes
        if b"\n" in body or b"\r" in body:
            body = json.dumps(fetched.payload, separators=(",", ":")).encode()
            hashes = None  # the file holds other bytes: each model's digest is of its JSON
        self.records.append(({**head, "body": fetched.payload}, hashes))
        assert self._file is not None
        self._file.write(json.dumps(head, separators=(",", ":"))[:-1].encode())
        self._file.write(b',"body":' + body + b"}\n")

    def restart(self) -> None:
        """Empties the file: the listing written so far is thrown away."""
        assert self._file is not None
        self._file.close()
        self._raw.seek(0)
        self._raw.truncate()
        self._file = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=self.compresslevel)
        self.records = []

    def content(self) -> SnapshotContent:
        """The snapshot written, as :func:`read_snapshot` would read it from the file.

        Raises:
            BadSnapshot: It is not a snapshot (no listing page in it).
        """
        return _from_records(self.records)

    def close(self) -> Path:
        """Finishes writing; the file keeps its ``.partial`` name until :meth:`commit`."""
        if self._file is not None:
            self._file.close()
            self._raw.close()
            self._file = None
        return self.partial

    def commit(self) -> Path:
        """Closes the file under its final name."""
        self.close()
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        """Closes and deletes the file of a run that failed."""
        if self._file is not None:
            self._file.close()
            self._raw.close()
            self._file = None
        self.partial.unlink(missing_ok=True)


def format_instant_precise(value: datetime) -> str:
    """ISO 8601 UTC with microseconds and ``Z``."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Snapshot:
    """One archived catalog, located and dated but not yet read.

    Attributes:
        path: The file.
        observed_at: When the catalog was observed.
        dated_by: ``archive``, ``as-of``, ``file name`` or ``mtime``.
    """

    path: Path
    observed_at: datetime
    dated_by: str


@dataclass
class SnapshotContent:
    """A snapshot's models and what is known of its completeness."""

    models: list[Any]
    tally: Tally
    hashes: list[str] | None = None
    filtered: bool = False
    pages: int = 0
    known_complete: bool = field(default=False)
    confirmed: set[str] = field(default_factory=set)
    """Models a confirming listing saw (a sync that would remove models lists twice)."""
    usecases: dict[str, tuple[frozenset[str], bool]] = field(default_factory=dict)
    """What each usecase listing held, and whether it was complete."""

    @property
    def marks_removals(self) -> bool:
        """Whether this snapshot may mark models missing from it removed."""
        return self.known_complete and not self.filtered


class BadSnapshot(Exception):
    """A file that is not a snapshot; the message says why, in a few words."""


def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every file named, and every file under each folder named (hidden files skipped)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.exists():
            found.append(path)
        else:
            raise ConfigError(f"no such file or folder: {path}")
    return found


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it is gzip."""
    data = path.read_bytes()
    return gzip.decompress(data) if data.startswith(_GZIP_MAGIC) else data


def date_snapshot(path: Path, as_of: datetime | None) -> Snapshot:
    """Finds when a file's snapshot was observed.

    The archive record's ``fetched_at``, else ``as_of``, else a timestamp in the file name
    (ISO 8601 or ``YYYYMMDD[THHMMSS]``, UTC), else the file's mtime (with a warning).
    """
    fetched_at = _first_fetched_at(path)
    if fetched_at is not None:
        return Snapshot(path, fetched_at, "archive")
    if as_of is not None:
        return Snapshot(path, as_of, "as-of")
    named = time_from_name(path.name)
    if named is not None:
        return Snapshot(path, named, "file name")
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    log.warning("%s: no time in the file or its name; using its mtime %s", path, mtime)
    return Snapshot(path, mtime, "mtime")


_FETCHED_AT = re.compile(rb'\s*\{"fetched_at":\s*"([^"\\]*)"')
_HEAD_BYTES = 256
"""Enough of a file to hold its first record's ``fetched_at``, as ArchiveWriter writes it."""


def _first_fetched_at(path: Path) -> datetime | None:
    """The ``fetched_at`` of a file's first archive record, read from its first bytes only."""
    try:
        with path.open("rb") as raw:
            magic = raw.read(2)
        opener: Any = gzip.open if magic == _GZIP_MAGIC else open
        with opener(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            match = _FETCHED_AT.match(head)
            if match:
                return _parse_time(match.group(1).decode("ascii", "replace"))
            if not head.lstrip().startswith(b'{"fetched_at"'):
                return None
            line = (head + handle.readline()).strip()  # written by hand: parse the record
        return _parse_time(json.loads(line).get("fetched_at"))
    except (OSError, UnicodeDecodeError, ValueError, EOFError, AttributeError):
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def time_from_name(name: str) -> datetime | None:
    """A UTC timestamp in a file name: ``2026-03-03``, ``20260303T101500``, ``2026-03-03T10:15``."""
    for match in _NAME_TIME.finditer(name):
        digits = match.group("date").replace("-", "")
        clock = re.sub(r"\D", "", match.group("time") or "").ljust(6, "0")
        try:
            return datetime.strptime(digits + clock, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def read_snapshot(path: Path) -> SnapshotContent:
    """Reads a snapshot file whole, with the digest of each model's bytes.

    Raises:
        BadSnapshot: Unreadable, not JSON, empty, or not of a shape listed in this module's doc.
    """
    return SnapshotReader().read(path)


_BODY = b',"body":'
_Parsed = tuple[Any, list[str] | None]


class SnapshotReader:
    """Reads snapshot files one after another, parsing each distinct page once.

    An archive of hourly runs repeats the same response bodies for as long as the catalog does
    not change. A line whose bytes (after its record's own ``fetched_at`` and ``url``) equal
    the same line of the file read just before is taken from that file's parse: comparing bytes
    costs a fraction of parsing them. Only the previous file's lines are kept.
    """

    def __init__(self) -> None:
        self._previous: list[tuple[bytes, _Parsed]] = []
        self._current: list[tuple[bytes, _Parsed]] = []

    def read(self, path: Path) -> SnapshotContent:
        """Reads one snapshot file (see :func:`read_snapshot`)."""
        self._current = []
        try:
            return self._read(path)
        finally:
            self._previous = self._current

    def _read(self, path: Path) -> SnapshotContent:
        try:
            data = _read_bytes(path)
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise BadSnapshot(f"cannot read it ({exc})") from None
        if not data.strip():
            raise BadSnapshot("empty")
        if data.lstrip().startswith(b'{"fetched_at"'):  # our archive: JSON lines
            return _from_items(self._json_lines(data))
        try:
            whole, hashes = parse_page(data)
        except UnicodeDecodeError:
            raise BadSnapshot("not UTF-8 text") from None
        except ValueError:
            return _from_items(self._json_lines(data))
        if isinstance(whole, list):
            return _from_models(whole, hashes)
        return _from_items([(whole, hashes)])

    def _json_lines(self, data: bytes) -> list[_Parsed]:
        items = []
        for number, line in enumerate(data.split(b"\n"), 1):
            line = line.strip()
            if not line:
                continue
            try:
                items.append(self._line(line))
            except UnicodeDecodeError:
                raise BadSnapshot("not UTF-8 text") from None
            except ValueError:
                raise BadSnapshot(f"invalid JSON on line {number}") from None
        return items

    def _line(self, line: bytes) -> _Parsed:
        """One line: an archive record (head and body parsed apart), a response or a model."""
        if not line.startswith(b'{"fetched_at"'):
            item, hashes = self._parse(line, ("models",))
            if hashes is None and isinstance(item, dict) and "uuid" in item:
                hashes = [raw_hash(line.decode())]  # a line that is one model
            return item, hashes
        split = line.find(_BODY)
        if split > 0 and line.endswith(b"}"):
            try:
                head = json.loads(line[:split] + b"}")
                body = line[split + len(_BODY) : -1]
                parsed, hashes = self._parse(body, ("models",))
                return {**head, "body": parsed}, hashes
            except ValueError:
                pass  # not laid out as ArchiveWriter writes it: parse the record whole
        return self._parse(line, ("body", "models"))

    def _parse(self, text: bytes, path: tuple[str, ...]) -> _Parsed:
        index = len(self._current)
        previous = self._previous[index] if index < len(self._previous) else None
        if previous is not None and previous[0] == text:
            parsed = previous[1]
        else:
            parsed = parse_page(text, path)
        self._current.append((text, parsed))
        return parsed


def _from_models(models: list[Any], hashes: list[str] | None) -> SnapshotContent:
    tally = Tally()
    tally.read({"models": models}, "models", 1)
    if not models:
        raise BadSnapshot("an empty list of models")
    # A bare list says nothing of the catalog's size: it is taken as the whole catalog.
    return SnapshotContent(
        models, tally, hashes=hashes, pages=1, known_complete=tally.duplicates == 0
    )


def _from_items(items: list[tuple[Any, list[str] | None]]) -> SnapshotContent:
    values = [item for item, _ in items]
    if not values or not all(isinstance(item, dict) for item in values):
        raise BadSnapshot("wrong shape: expected API responses, archive records or models")
    if all("body" in item and "fetched_at" in item for item in values):
        return _from_records(items)
    if all("models" in item or "meta" in item for item in values):
        numbered = []
        for index, (item, hashes) in enumerate(items, 1):
            meta = item.get("meta")
            page = meta.get("page") if isinstance(meta, dict) else None
            numbered.append((page if isinstance(page, int) and page > 0 else index, item, hashes))
        return _from_pages(numbered, filtered=False)
    if all("uuid" in item for item in values):
        return _from_models(values, [h for _, hashes in items for h in hashes or []] or None)
    raise BadSnapshot("wrong shape: expected API responses, archive records or models")


_Page = tuple[int, Any, list[str] | None]


def _from_records(items: list[tuple[Any, list[str] | None]]) -> SnapshotContent:
    """Our archive's records: the catalog listing, and any confirming or usecase listings."""
    pages: list[_Page] = []
    filtered_pages: list[_Page] = []
    confirm: list[_Page] = []
    usecases: dict[str, list[_Page]] = {}
    for item, hashes in items:
        if item.get("status", 200) != 200:
            continue
        query = parse_qs(urlsplit(str(item.get("url", ""))).query)
        page = (_page_number(query), item["body"], hashes)
        if item.get("listing") == "confirm":
            confirm.append(page)
        elif list(query.get("usecases", ())) and "public_only" not in query:
            if len(query["usecases"]) == 1:
                usecases.setdefault(query["usecases"][0], []).append(page)
        elif any(k in query for k in _FILTERS):
            filtered_pages.append(page)
        else:
            pages.append(page)
    if not pages:  # a filtered sync (--usecase): its pages are the listing itself
        filtered_pages += [page for listing in usecases.values() for page in listing]
        usecases = {}
    content = _from_pages(pages or filtered_pages, filtered=not pages)
    if confirm:
        content.confirmed = _tally(confirm).uuids
    for usecase, listing in sorted(usecases.items()):
        tally = _tally(listing)
        content.usecases[usecase] = (frozenset(tally.uuids), tally.complete)
    return content


def _page_number(query: dict[str, list[str]]) -> int:
    value = (query.get("page") or ["0"])[0]
    return int(value) if value.isdigit() and len(value) < 10 else 0


def _tally(pages: list[_Page]) -> Tally:
    tally = Tally()
    for index, (number, body, _) in enumerate(pages, 1):
        try:
            tally.read(body, f"page {number or index}", number or index)
        except InvalidResponseError as exc:
            raise BadSnapshot(str(exc)) from None
    return tally


def _from_pages(pages: list[_Page], filtered: bool) -> SnapshotContent:
    tally = Tally()
    models: list[Any] = []
    hashes: list[str] | None = []
    for index, (number, body, page_hashes) in enumerate(pages, 1):
        try:
            page_models, _, _ = tally.read(body, f"page {number or index}", number or index)
        except InvalidResponseError as exc:
            raise BadSnapshot(str(exc)) from None
        models.extend(page_models)
        if hashes is not None and page_hashes is not None and len(page_hashes) == len(page_models):
            hashes.extend(page_hashes)
        else:
            hashes = None
    if tally.models == 0 and tally.total is None:
        raise BadSnapshot("no models in it")
    return SnapshotContent(
        models,
        tally,
        hashes=hashes,
        filtered=filtered,
        pages=len(pages),
        known_complete=tally.complete,
    )


def describe(snapshot: Snapshot) -> str:
    """One line naming a snapshot and its time."""
    return f"{snapshot.path} ({format_instant(snapshot.observed_at)}, from {snapshot.dated_by})"
