"""The one place where untrusted text is made safe for a terminal, a text log or a spreadsheet.

Everything the API or an archive file sends is untrusted: a model name can carry ESC sequences
(window titles, hyperlinks, screen clears), bare carriage returns, newlines that forge table
rows or log lines, and bidirectional overrides that reorder what a reader sees. Output for
people goes through :func:`visible`; CSV cells through :func:`csv_cell`. ``--json`` output
needs neither: JSON escapes control characters itself.
"""

from __future__ import annotations

import re

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""Arabic letter mark, LRM/RLM, the embeddings and overrides, and the isolates."""

_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
"""C0 controls (tab and newline included), DEL, C1 controls, line/paragraph separators, bidi."""

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control, C1, DEL, line separator and bidi character escaped.

    The result is one line that a terminal shows as written: ``"a\\x1b]0;t\\x07"`` for an OSC
    sequence, ``\\n`` for a newline. Escaping is for safety, not for round trips: backslashes
    already in ``text`` are left as they are.
    """
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escape, text)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A cell starting with one of these is run as a formula by spreadsheets (OWASP)."""


def csv_cell(text: str) -> str:
    """``text`` neutralised for a spreadsheet: a leading ``'`` before a formula character."""
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


MAX_STORED_ERROR = 2000
"""Characters of an error kept in ``sync_runs.error``."""


def stored_error(text: str, limit: int = MAX_STORED_ERROR) -> str:
    """An error message made safe to store and reprint: escaped by :func:`visible`, then cut to
    ``limit`` characters (ending ``...`` when cut)."""
    text = visible(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
