"""``etl.output``: the one writer of tables, JSON, JSON lines and CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from etl.output import plural, write_rows

HOSTILE = {
    "osc_title": "\x1b]0;owned\x07model",
    "hyperlink": "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "clear": "\x1b[2Jgone",
    "cr": "shown\rhidden",
    "newline": "a\nforged-row  added  x",
    "bidi": "abc\u202edcba",
    "c1": "x\x9b31mred",
}
COLUMNS = ("id", "name", "when")


def _rows() -> list[dict[str, object]]:
    when = datetime(2026, 3, 3, 12, tzinfo=UTC)
    return [{"id": key, "name": text, "when": when} for key, text in HOSTILE.items()]


def _write(fmt: str, width: int | None = None) -> str:
    out = io.StringIO()
    write_rows(_rows(), COLUMNS, fmt, out=out, width=width)
    return out.getvalue()


def test_table_shows_control_characters_escaped_one_row_per_line() -> None:
    text = _write("table")
    lines = text.splitlines()
    assert len(lines) == 1 + len(HOSTILE)  # no value started a row of its own
    for char in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
        assert char not in text
    assert "\\x1b]0;owned\\x07model" in text and "a\\nforged-row" in text
    assert "abc\\u202edcba" in text and "shown\\rhidden" in text


def test_table_fits_the_width_cutting_long_cells_with_an_ellipsis() -> None:
    rows = [{"id": "short", "name": "n" * 200, "when": "2026-03-03T12:00:00Z"}]
    out = io.StringIO()
    write_rows(rows, COLUMNS, out=out, width=60)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert lines[1].startswith("short") and "…" in lines[1]
    assert lines[1].endswith("2026-03-03T12:00:00Z")  # the narrow columns stay whole
    wide = io.StringIO()
    write_rows(rows, COLUMNS, out=wide)  # not a terminal: nothing is cut
    assert "n" * 200 in wide.getvalue() and "…" not in wide.getvalue()


def test_json_is_exact_and_nl_is_one_object_per_line() -> None:
    array = json.loads(_write("json"))
    assert [row["name"] for row in array] == list(HOSTILE.values())
    assert array[0]["when"] == "2026-03-03T12:00:00Z"
    lines = _write("nl").splitlines()
    assert [json.loads(line) for line in lines] == array


def test_csv_neutralises_formulas_and_csv_raw_keeps_the_bytes() -> None:
    rows = [
        {"id": '=HYPERLINK("http://evil.example","x")', "name": "+cmd|' /C calc'!A0"},
        {"id": "-2+3", "name": "@SUM(A1)"},
        {"id": "\tTAB", "name": "\rCR"},
        {"id": "plain", "name": "a=b"},
    ]
    safe = list(csv.reader(io.StringIO(_csv(rows, "csv"))))
    assert safe[0] == ["id", "name"]
    assert [cell[0] for row in safe[1:4] for cell in row] == ["'"] * 6
    assert safe[4] == ["plain", "a=b"]
    raw = list(csv.reader(io.StringIO(_csv(rows, "csv-raw"))))
    assert raw[1:] == [[row["id"], row["name"]] for row in rows]


def _csv(rows: list[dict[str, str]], fmt: str) -> str:
    out = io.StringIO()
    write_rows(rows, ("id", "name"), fmt, out=out)
    return out.getvalue()


def test_plural() -> None:
    assert plural(1, "model") == "1 model"
    assert plural(0, "model") == "0 models"
    assert plural(1200, "attempt") == "1,200 attempts"
    assert plural(2, "entry", "entries") == "2 entries"
