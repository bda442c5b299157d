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
import hashlib
import io
import json
import logging
import os
import re
import stat
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from etl import files
from etl.client import Tally
from etl.errors import ConfigError, InvalidResponseError
from etl.http import MAX_JSON_VALUES, Fetched, json_values
from etl.pages import parse_page, raw_hash
from etl.times import format_instant

log = logging.getLogger("etl.archive")

_GZIP_MAGIC = b"\x1f\x8b"
MIB = 1024 * 1024
MAX_FILE_BYTES = 1024 * MIB
"""Default cap on a file's inflated size (``etl backfill --max-file-mb``)."""
MAX_LINE_BYTES = 64 * MIB
"""Longest JSON line read (or the file cap, if smaller): a line is held whole to be parsed."""
_MAX_DEFLATE_RATIO = 1032
"""Deflate's most inflated bytes per compressed byte."""
_CHUNK = 1024 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
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
        compresslevel: gzip's level: 6 for an archive kept, 0 (stored, not compressed: the
            same format at the cost of a copy) for a sync's temporary snapshot.

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
            # a page the listing memo recognised is not parsed yet (the same bytes were JSON)
            payload = fetched.payload if fetched.parsed else json.loads(fetched.body)
            body = json.dumps(payload, separators=(",", ":")).encode()
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


@dataclass(frozen=True)
class KnownSnapshot:
    """A sync's listing that the listing memo (:mod:`etl.memo`) recognised, byte for byte, as
    the one that made a stored snapshot: its models were not parsed again.

    Attributes:
        snapshot_id: The stored snapshot.
        digest: Its digest.
        models: Models it holds.
        seen: Distinct models the listing holds.
        path: The file the listing was written to: read in full when the loader cannot take
            the shortcut (another run came to be the last one meanwhile).
    """

    snapshot_id: int
    digest: str
    models: int
    seen: int
    path: Path


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
    known: KnownSnapshot | None = None
    """Set when ``models`` is empty because the listing memo recognised the listing."""

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


_FETCHED_AT = re.compile(rb'\s*\{"fetched_at"\s*:\s*("(?:[^"\\]|\\.){0,200}")')
_HEAD_BYTES = 4096
"""Enough of a file to hold its first record's ``fetched_at``: only this much is read."""


def _first_fetched_at(path: Path) -> datetime | None:
    """The ``fetched_at`` of a file's first archive record, read from its first bytes only."""
    try:
        with _open_inflated(path) as handle:
            match = _FETCHED_AT.match(handle.read(_HEAD_BYTES))
        return _parse_time(json.loads(match.group(1))) if match else None
    except (OSError, ValueError, EOFError, zlib.error):
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


def read_snapshot(path: Path, max_file_bytes: int | None = MAX_FILE_BYTES) -> SnapshotContent:
    """Reads a snapshot file, with the digest of each model's bytes.

    Raises:
        BadSnapshot: Unreadable, not JSON, empty, over a cap (see :class:`SnapshotReader`), or
            not of a shape listed in this module's doc.
    """
    return SnapshotReader(max_file_bytes).read(path)


@contextmanager
def _open_inflated(path: Path) -> Iterator[BinaryIO]:
    """A file's bytes as a stream, gunzipped on the fly when it starts with gzip's magic."""
    with path.open("rb") as raw:
        if raw.peek(2)[:2] != _GZIP_MAGIC:
            yield raw
            return
        with io.BufferedReader(_Gunzip(raw), buffer_size=_CHUNK) as inflated:
            yield inflated


class _Gunzip(io.RawIOBase):
    """Gzip members (and zero padding between them) inflated a bounded piece at a time.

    As :class:`gzip.GzipFile` reads, but a buffer at a time rather than 8 KiB: reading lines
    from it costs half as much.
    """

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self._input = b""
        self._inflater: Any = None  # zlib's Decompress, within a member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if not self._input:
                self._input = self._raw.read(_CHUNK)
                if not self._input:
                    if self._inflater is not None:
                        raise EOFError("the compressed file ends within a gzip member")
                    return 0
            if self._inflater is None:
                if self._input.startswith(b"\0"):
                    self._input = self._input.lstrip(b"\0")
                if not self._input:
                    continue
                self._inflater = zlib.decompressobj(_GZIP_WBITS)
            out = self._inflater.decompress(self._input, len(buffer))
            if self._inflater.eof:
                self._input = self._inflater.unused_data
                self._inflater = None
            else:
                self._input = self._inflater.unconsumed_tail
            if out:
                buffer[: len(out)] = out
                return len(out)


class _Source:
    """A file's inflated bytes read line by line, counted against the file and line caps.

    Args:
        stream: The inflated bytes.
        max_bytes: Most inflated bytes the file may hold (None: no cap).
        max_line: Longest line read (None: no cap).
    """

    def __init__(self, stream: BinaryIO, max_bytes: int | None, max_line: int | None) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._max_line = max_line
        self._read = 0
        self.number = 0
        """The number of the line :meth:`line` returned last (counting from 1)."""

    def line(self) -> bytes | None:
        """The next line, None at the end; a line over the cap is cut after ``max_line + 1``."""
        limit = -1 if self._max_line is None else self._max_line + 1
        line = self._stream.readline(limit)
        if not line:
            return None
        self.number += 1
        self._count(len(line))
        return line

    def too_long(self, line: bytes) -> bool:
        """Whether :meth:`line` cut this line at the cap."""
        return (
            self._max_line is not None and len(line) > self._max_line and not line.endswith(b"\n")
        )

    def rest(self) -> bytes:
        """Everything not read yet (refused past the file's cap)."""
        if self._max_bytes is None:
            rest = self._stream.read()
        else:
            rest = self._stream.read(max(self._max_bytes - self._read, 0) + 1)
        self._count(len(rest))
        return rest

    def _count(self, size: int) -> None:
        self._read += size
        if self._max_bytes is not None and self._read > self._max_bytes:
            raise BadSnapshot(_too_large(self._max_bytes))


def _too_large(cap: int) -> str:
    return f"inflates to more than {cap / MIB:.4g} MiB (the --max-file-mb cap); not read further"


def _check_size(path: Path, cap: int | None) -> None:
    """Refuses a file whose inflated size passes ``cap``, holding no more than a chunk of it.

    A plain file's size is known. A gzip file is inflated once without keeping its bytes, but
    only when its compressed size could hold more than the cap (deflate inflates at most
    1,032-fold), so an archive file of a few hundred KB is inflated once, to be read.
    """
    if cap is None:
        return
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        return  # a pipe or device cannot be read twice: only the reading counts it
    with path.open("rb") as raw:
        compressed = raw.peek(2)[:2] == _GZIP_MAGIC
    if info.st_size <= cap // (_MAX_DEFLATE_RATIO if compressed else 1):
        return
    if not compressed:
        raise BadSnapshot(_too_large(cap))
    inflated = 0
    with _open_inflated(path) as stream:
        while chunk := stream.read(_CHUNK):
            inflated += len(chunk)
            if inflated > cap:
                raise BadSnapshot(_too_large(cap))


def _check_values(text: bytes, where: str) -> None:
    """Refuses JSON holding more values than a page may (see :data:`etl.http.MAX_JSON_VALUES`)."""
    values = json_values(text)
    if values > MAX_JSON_VALUES:
        raise BadSnapshot(
            f"{where} holds more than {MAX_JSON_VALUES:,} JSON values ({values:,} separators); "
            "refused unparsed"
        )


_BODY = b',"body":'
_RECORD = re.compile(rb'\s*\{"fetched_at"')
_Parsed = tuple[Any, list[str] | None]
_KINDS = ("records", "pages", "models")


def _kinds(item: Any) -> set[str]:
    """The snapshot shapes a line's value may belong to (see :func:`_from_items`)."""
    if not isinstance(item, dict):
        return set()
    kinds = set()
    if "body" in item and "fetched_at" in item:
        kinds.add("records")
    if "models" in item or "meta" in item:
        kinds.add("pages")
    if "uuid" in item:
        kinds.add("models")
    return kinds


class SnapshotReader:
    """Reads snapshot files one after another, parsing each distinct page once.

    A file is read as a stream, never whole: JSON lines one line at a time, with a cap on the
    inflated size of the file (checked before any line is parsed) and on the length of a line,
    and each line's (or document's) JSON values counted before it is parsed. A whole-file JSON
    document (a response or a bare array) is read whole, up to the file's cap.

    An archive of hourly runs repeats the same response bodies for as long as the catalog does
    not change. A line whose bytes (after its record's own ``fetched_at`` and ``url``) have the
    same digest as the same line of the file read just before is taken from that file's parse:
    digesting bytes costs a fraction of parsing them. Only the previous file's digests and
    parses are kept, never its bytes.

    Args:
        max_file_bytes: Most inflated bytes a file may hold (None: no cap, for a snapshot this
            etl fetched itself). A line may hold at most :data:`MAX_LINE_BYTES`, or this if
            smaller.
    """

    def __init__(self, max_file_bytes: int | None = MAX_FILE_BYTES) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_line_bytes = (
            None if max_file_bytes is None else min(MAX_LINE_BYTES, max_file_bytes)
        )
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
            _check_size(path, self.max_file_bytes)
            with _open_inflated(path) as stream:
                return self._read_stream(_Source(stream, self.max_file_bytes, self.max_line_bytes))
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise BadSnapshot(f"cannot read it ({exc})") from None
        except UnicodeDecodeError:
            raise BadSnapshot("not UTF-8 text") from None
        except RecursionError:  # json recurses once per level of nesting
            raise BadSnapshot("JSON nested too deeply to parse") from None

    def _read_stream(self, source: _Source) -> SnapshotContent:
        first = source.line()
        while first is not None and not first.strip():
            first = source.line()
        if first is None:
            raise BadSnapshot("empty")
        number = source.number
        if not _RECORD.match(first):  # a document, or JSON lines
            try:
                item = None if source.too_long(first) else self._line(first.strip(), number)
            except UnicodeDecodeError:
                raise
            except ValueError:
                item = None
            if item is None:  # a document over several lines, or one too long for a line
                return self._document(first + source.rest(), number)
            if isinstance(item[0], list):  # a bare array on one line
                while (line := source.line()) is not None:
                    if line.strip():
                        raise BadSnapshot(f"{_WRONG_SHAPE} (line {source.number})")
                return _from_models(*item)
            return _from_items(self._json_lines(source, [item]))
        return _from_items(self._json_lines(source, [], first))

    def _document(self, data: bytes, number: int) -> SnapshotContent:
        """A whole-file JSON document: an API response or a bare array of models."""
        _check_values(data, "the file")
        try:
            whole, hashes = parse_page(data)
        except UnicodeDecodeError:
            raise
        except ValueError:
            raise BadSnapshot(f"invalid JSON on line {number}") from None
        if isinstance(whole, list):
            return _from_models(whole, hashes)
        return _from_items([(whole, hashes)])

    def _json_lines(
        self, source: _Source, items: list[_Parsed], line: bytes | None = None
    ) -> list[_Parsed]:
        """The remaining lines, parsed one at a time; a line of the wrong shape stops at once."""
        kinds = set(_KINDS)
        for item, _ in items:
            kinds &= _kinds(item)
        if not kinds:
            raise BadSnapshot(f"{_WRONG_SHAPE} (line {source.number})")
        line = source.line() if line is None else line
        while line is not None:
            if source.too_long(line):
                limit = self.max_line_bytes or 0
                raise BadSnapshot(
                    f"line {source.number} is longer than {limit / MIB:.4g} MiB; not read further"
                )
            line = line.strip()
            if line:
                try:
                    parsed = self._line(line, source.number)
                except UnicodeDecodeError:
                    raise
                except ValueError:
                    raise BadSnapshot(f"invalid JSON on line {source.number}") from None
                kinds &= _kinds(parsed[0])
                if not kinds:
                    raise BadSnapshot(f"{_WRONG_SHAPE} (line {source.number})")
                items.append(parsed)
            line = source.line()
        return items

    def _line(self, line: bytes, number: int) -> _Parsed:
        """One line: an archive record (head and body parsed apart), a response or a model."""
        where = f"line {number}"
        if not line.startswith(b'{"fetched_at"'):
            item, hashes = self._parse(line, ("models",), where)
            if hashes is None and isinstance(item, dict) and "uuid" in item:
                hashes = [raw_hash(line.decode())]  # a line that is one model
            return item, hashes
        split = line.find(_BODY)
        if split > 0 and line.endswith(b"}"):
            _check_values(line[:split], where)
            try:
                head = json.loads(line[:split] + b"}")
                body = line[split + len(_BODY) : -1]
                parsed, hashes = self._parse(body, ("models",), where)
                return {**head, "body": parsed}, hashes
            except ValueError:
                pass  # not laid out as ArchiveWriter writes it: parse the record whole
        return self._parse(line, ("body", "models"), where)

    def _parse(self, text: bytes, path: tuple[str, ...], where: str) -> _Parsed:
        index = len(self._current)
        digest = hashlib.sha256(text).digest()
        previous = self._previous[index] if index < len(self._previous) else None
        if previous is not None and previous[0] == digest:
            parsed = previous[1]
        else:
            _check_values(text, where)
            parsed = parse_page(text, path)
        self._current.append((digest, parsed))
        return parsed


_WRONG_SHAPE = "wrong shape: expected API responses, archive records or models"


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
        raise BadSnapshot(_WRONG_SHAPE)
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
    raise BadSnapshot(_WRONG_SHAPE)


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
    if tally.models == 0 and (tally.total is None or not filtered):
        # an empty catalog is refused, as a sync refuses an empty listing: far likelier a
        # broken API or file than a real one, and loading it would remove every model
        raise BadSnapshot("no models in it (an empty catalog is refused)")
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
