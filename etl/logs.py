"""Log output on stderr: human text lines, or one JSON object per line for log shippers.

Text is ``etl: LEVEL: message`` (the message escaped by :func:`etl.sanitize.visible`, so it
stays one line without control characters), with a UTC timestamp in front when stderr is not a
terminal (a cron log, a pipe), so every line of a log file says when it happened; not in
systemd's journal, which stamps every line itself. JSON carries ``ts``
(ISO 8601 UTC), ``level``, ``logger`` and ``message``, plus every field a call passes with
``extra=`` (``run_id``, ``requests``, ``retries``, ``duration_s``, counts...)::

    log.info("%s", "sync finished: ...", extra={"run_id": 7, "retries": 1})

Nothing here adds secrets: a log line holds what its caller wrote, and callers never pass the
token (URLs are redacted in :mod:`etl.http`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, TextIO

from etl.sanitize import visible

FORMATS = ("text", "json")
"""The values of ``--log-format``."""

_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
"""What every log record carries; any other attribute came from ``extra=``."""


def _utc(created: float, timespec: str) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec=timespec)
    return stamp.replace("+00:00", "Z")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call attached to ``record`` with ``extra=``."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """``etl: LEVEL: message``, optionally after a UTC timestamp to the second."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        # Escaped: a newline in an API string must not start a forged log line.
        line = f"etl: {record.levelname}: {visible(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if self.timestamps:
            line = f"{_utc(record.created, 'seconds')} {line}"
        return line


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value.timestamp(), "microseconds") if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc(record.created, "milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=_json_default)


def setup_logging(
    verbose: bool = False, quiet: bool = False, fmt: str = "text", stream: TextIO | None = None
) -> None:
    """Points the ``etl`` loggers at ``stream`` (default stderr) in format ``fmt``.

    Args:
        verbose: Log debug detail.
        quiet: Log errors only.
        fmt: ``text`` or ``json``.
        stream: Where to write; stderr by default.
    """
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        stamped = not (_isatty(stream) or _is_journal(stream, os.environ.get("JOURNAL_STREAM")))
        handler.setFormatter(TextFormatter(timestamps=stamped))
    root = logging.getLogger("etl")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO)
    root.propagate = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _is_journal(stream: TextIO, journal_stream: str | None) -> bool:
    """True when ``stream`` is systemd's journal: ``JOURNAL_STREAM`` names its device:inode."""
    if not journal_stream:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return journal_stream == f"{info.st_dev}:{info.st_ino}"


def log_summary(logger: logging.Logger, event: str, fields: Mapping[str, Any]) -> None:
    """Logs the end of a run at INFO: ``event: key=value ...`` with ``fields`` as extras.

    Args:
        logger: Where to log.
        event: What finished, e.g. ``sync finished``; also the JSON ``event`` field.
        fields: Scalars only (run id, counts, durations), in the order to show them.
    """
    text = " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())
    logger.info("%s: %s", event, text, extra={"event": event.replace(" ", "_"), **fields})


def _logfmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
