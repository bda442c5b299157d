"""The listing memo: a sync whose every page is byte for byte a page of the listing that made
the last run's snapshot does not parse them again.

Parsing and digesting each model is most of an unchanged sync's own work (issue 12: a no-op
re-sync at most 1.3x a bare fetch of the pages). The same bytes parse to the same models, so a
listing whose pages all have the digests the memo keeps is that snapshot again. The memo is a
cache, never an observation: every sync still archives every byte it received, the run is
recorded like any other, and the memo is used only where it provably gives what parsing would
(``tests/test_listing_memo.py`` holds it to the plain path). Deleting it is always safe.

It is one ``etl_state`` row (``listing``), written in the load's transaction by a sync whose
listing was complete, unfiltered, clean (no model without a uuid, unstorable or with fields
the spec lacks: their warnings are logged on every run) and held no confirming listing. A sync
uses it only when, in its locked transaction, the last run by observation time is a complete,
unfiltered run of that same snapshot, the tables are derived with today's rules, and the page
size and the count of present models agree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import schema
from etl.load import PROJECTION_VERSION, last_run, projection_version, upsert

NAME = "listing"
FORMAT = 2
"""Bumped when the memo's meaning changes (2: page digests are SHA-256): an older memo is
ignored, and the next listing is parsed in full."""
MAX_PAGES = 1000
"""Listings longer than this are not memoised: ``etl_state.value`` is a TEXT (64 KB on
MariaDB) and a page takes 35 bytes of it."""


@dataclass(frozen=True)
class ListingMemo:
    """The listing that made a stored snapshot.

    Attributes:
        run_id: The run whose listing it was.
        snapshot_id: The snapshot.
        digest: Its digest.
        models: Models it holds.
        seen: Distinct models its listing held.
        per_page: The page size asked for.
        pages: Each page's :func:`etl.pages.page_digest`, in order.
    """

    run_id: int
    snapshot_id: int
    digest: str
    models: int
    seen: int
    per_page: int
    pages: tuple[str, ...]

    def as_text(self) -> str:
        value = {"format": FORMAT, "rules": PROJECTION_VERSION, **asdict(self)}
        return json.dumps(value, separators=(",", ":"))


def _stored(conn: Connection) -> str | None:
    table = schema.etl_state
    return conn.execute(sa.select(table.c.value).where(table.c.name == NAME)).scalar_one_or_none()


def _parse(text: str) -> ListingMemo | None:
    try:
        value: Any = json.loads(text)
        if value.pop("format") != FORMAT or value.pop("rules") != PROJECTION_VERSION:
            return None
        memo = ListingMemo(**{**value, "pages": tuple(value["pages"])})
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    fields = (memo.run_id, memo.snapshot_id, memo.models, memo.seen, memo.per_page)
    if not all(isinstance(f, int) for f in fields) or not all(
        isinstance(p, str) for p in memo.pages
    ):
        return None
    return memo


def read_memo(conn: Connection, per_page: int, present: int) -> ListingMemo | None:
    """The memo, when a listing of ``per_page`` matching it may stand for its snapshot.

    Args:
        per_page: The sync's page size.
        present: Models the tables hold present (a complete run of the snapshot left exactly
            its models present).
    """
    text = _stored(conn)
    memo = None if text is None else _parse(text)
    if memo is None or memo.per_page != per_page or memo.seen != present:
        return None
    last = last_run(conn)
    if last is None or last[2] != memo.snapshot_id:
        return None
    if projection_version(conn) != PROJECTION_VERSION:
        return None
    runs, snapshots = schema.sync_runs, schema.snapshots
    run = conn.execute(sa.select(runs.c.complete, runs.c.filters).where(runs.c.id == last[1])).one()
    if not run.complete or run.filters:
        return None
    snapshot = conn.execute(
        sa.select(snapshots.c.digest, snapshots.c.models, snapshots.c.unstorable).where(
            snapshots.c.snapshot_id == memo.snapshot_id
        )
    ).first()
    if snapshot is None or tuple(snapshot) != (memo.digest, memo.models, 0):
        return None
    return memo


def save_memo(conn: Connection, memo: ListingMemo) -> None:
    """Keeps the listing that made ``memo.snapshot_id`` (unless too long, or kept already)."""
    if len(memo.pages) > MAX_PAGES:
        return
    text = memo.as_text()
    if _stored(conn) != text:
        upsert(conn, schema.etl_state, [{"name": NAME, "value": text}], ["value"])
