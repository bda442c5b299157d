"""Printing rows: an aligned table for people, JSON, JSON lines or CSV for scripts.

Every listing command (``runs``, ``history``, ``changes``, ``models``, ``status``) prints
through :func:`write_rows`, the one place where rows become text. A table is for people: each
cell passes through :func:`etl.sanitize.visible`, so text from the API (or an error it sent)
cannot move the cursor, retitle the window, forge a row or reorder what is shown; on a terminal
the table fits its width, long cells cut with an ellipsis. ``csv`` neutralises cells a
spreadsheet would run as a formula (:func:`etl.sanitize.csv_cell`); ``csv-raw`` writes the
bytes. ``json`` and ``nl`` are exact JSON, which escapes control characters itself.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, TextIO

from etl.sanitize import csv_cell, visible
from etl.times import format_instant

FORMATS = ("table", "json", "nl", "csv", "csv-raw")
"""The output formats: ``table`` for people, the others for scripts."""

_GAP = "  "
_MIN_WIDTH = 4
"""No column is cut narrower than this."""


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 model``, ``2 models``, ``0 models``; ``many`` for irregular plurals."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: Any) -> str:
    """JSON on one line, with UTC timestamps as ISO 8601 strings."""
    return json.dumps(value, default=_json_default)


def write_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str = "table",
    out: TextIO | None = None,
    width: int | None = None,
) -> None:
    """Writes ``rows`` (only ``columns``, in that order) in one of :data:`FORMATS`.

    Args:
        rows: The rows, as dicts.
        columns: Which keys to show, in order (the CSV header and the table's head).
        fmt: ``table`` (aligned, escaped), ``json`` (one array), ``nl`` (one JSON object per
            line), ``csv`` (with a header, formulas neutralised) or ``csv-raw`` (as stored).
        out: Where to write (default stdout).
        width: The table's width; None fits a terminal, and leaves a pipe or file uncut.
    """
    out = out or sys.stdout
    picked = ({c: row.get(c) for c in columns} for row in rows)
    if fmt == "json":
        out.write(to_json(list(picked)) + "\n")
    elif fmt == "nl":
        out.writelines(to_json(row) + "\n" for row in picked)
    elif fmt in ("csv", "csv-raw"):
        safe = csv_cell if fmt == "csv" else str
        # CRLF, as RFC 4180 has it: the writer then quotes any cell holding a CR or LF.
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns)
        writer.writerows([safe(_cell(row.get(c))) for c in columns] for row in rows)
    else:
        if width is None and out.isatty():
            width = shutil.get_terminal_size().columns
        write_table(rows, columns, out, width)


def write_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO, width: int | None
) -> None:
    """An aligned table, every cell escaped to one visible line, fitted to ``width``."""
    cells = [[visible(_cell(row.get(c))) for c in columns] for row in rows]
    natural = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    widths = natural if width is None else _fit(natural, width)
    for line in [list(columns), *cells]:
        text = _GAP.join(_cut(v, w).ljust(w) for v, w in zip(line, widths, strict=True))
        # Too many columns for the width even when cut: the line itself is cut.
        out.write(_cut(text.rstrip(), width or len(text)) + "\n")


def _fit(natural: list[int], width: int) -> list[int]:
    """Column widths summing to at most ``width``: the widest columns give way first."""
    room = width - len(_GAP) * (len(natural) - 1)
    floors = [min(n, _MIN_WIDTH) for n in natural]
    if sum(natural) <= room:
        return natural
    if sum(floors) >= room:
        return floors
    low, high = 0, max(natural)  # the largest cap on every column's width that still fits
    while low < high:
        cap = (low + high + 1) // 2
        if sum(max(f, min(n, cap)) for n, f in zip(natural, floors, strict=True)) <= room:
            low = cap
        else:
            high = cap - 1
    return [max(f, min(n, low)) for n, f in zip(natural, floors, strict=True)]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
