"""Printing rows: an aligned table for people, JSON or CSV for scripts."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, TextIO

from etl.times import format_instant


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: Any) -> str:
    """JSON with UTC timestamps as ISO 8601 strings."""
    return json.dumps(value, default=_json_default)


def write_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str = "table",
    out: TextIO | None = None,
) -> None:
    """Writes ``rows`` as ``table`` (aligned), ``json`` (one array) or ``csv`` (with a header)."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(to_json([{c: row.get(c) for c in columns} for row in rows]) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
