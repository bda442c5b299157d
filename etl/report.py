"""``etl report``: the catalog as one self-contained HTML page.

The page is drawn from the database's own views (``catalog_size_by_day``, ``catalog_changes``,
``current_models``) and the change tables: catalog size over time, changes per run by kind,
models by provider and by lifecycle status, each changed price over time, the latest changes,
and a history section per model they name. Styles are inline and the charts are SVG drawn
here: no script, no font, nothing fetched (a Content-Security-Policy says so to the browser).
Every mark that shows a number carries ``data-value``, every chart ``data-chart``, so a
browser test can count what was drawn.

:func:`collect` reads (and never writes); :func:`render` turns what it read into HTML.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from html import escape
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from markupsafe import Markup
from sqlalchemy.engine import Engine

from etl import __version__, files, queries, schema
from etl.errors import ConfigError
from etl.output import plural
from etl.times import format_instant

MAX_RUNS = 60
"""Runs shown in the changes-per-run chart (the latest that changed something)."""
MAX_CHANGES = 100
"""Rows of the latest-changes table (a row is one change, or identical changes grouped)."""
MAX_CHANGES_READ = 5000
"""Change events read to build those rows."""
MAX_SECTIONS = 100
"""Models given a history section (those the page names first)."""
MAX_PRICE_CHARTS = 24
"""Models whose price chart is drawn (the most recently repriced)."""
MAX_FIELDS_SHOWN = 4
"""Changed fields spelled out per row of the latest-changes table."""

KINDS = ("added", "changed", "removed", "restored")
KIND_COLOURS = {
    "added": "#2e9e5b",
    "changed": "#3a6fd8",
    "removed": "#d64545",
    "restored": "#e0a526",
}
PALETTE = ("#3a6fd8", "#d64545", "#2e9e5b", "#e0a526", "#8a4fd0", "#1b9aaa", "#e0662b", "#6b7280")

# The views, as typed SQLAlchemy tables: results come back as dates, UTC datetimes and JSON on
# every dialect (SQLite hands views' values back as text otherwise).
_size_by_day = sa.table(
    "catalog_size_by_day",
    sa.column("day", sa.Date),
    sa.column("models", sa.Integer),
    sa.column("added", sa.Integer),
    sa.column("removed", sa.Integer),
    sa.column("restored", sa.Integer),
)
_catalog_changes = sa.table(
    "catalog_changes",
    sa.column("change_id", sa.Integer),
    sa.column("run_id", sa.Integer),
    sa.column("observed_at", schema.UTCDateTime),
    sa.column("model_uuid", sa.String),
    sa.column("model_id", sa.String),
    sa.column("model_name", sa.String),
    sa.column("kind", sa.String),
    sa.column("changes", sa.JSON),
)
_current_models = sa.table(
    "current_models",
    sa.column("uuid", sa.String),
    sa.column("provider", sa.String),
    sa.column("lifecycle_status", sa.String),
)


@dataclass
class RunChanges:
    """How many changes of each kind one run recorded."""

    run_id: int
    observed_at: datetime
    counts: dict[str, int]


@dataclass(frozen=True)
class PricePoint:
    """A price from ``when`` on (None: no price); ``changed`` when a run changed it then."""

    when: datetime
    price: float | None
    changed: bool


@dataclass
class PriceSeries:
    """One model's changed prices over time, as steps per price key."""

    model_uuid: str
    model_id: str
    steps: dict[str, list[PricePoint]]


@dataclass
class ModelSection:
    """A model named by the report, with every content it has had."""

    uuid: str
    model_id: str
    name: str
    provider: str
    lifecycle_status: str
    removed_at: datetime | None
    history: list[dict[str, Any]]


@dataclass
class ReportData:
    """Everything the page shows, read from the database."""

    source: str
    generated_at: datetime
    since: datetime | None = None
    runs_succeeded: int = 0
    last_run: dict[str, Any] | None = None
    models_now: int = 0
    sizes: list[tuple[date, int, int, int, int]] = field(default_factory=list)
    runs: list[RunChanges] = field(default_factory=list)
    initial_load: RunChanges | None = None
    runs_with_changes: int = 0
    providers: list[tuple[str, int]] = field(default_factory=list)
    lifecycles: list[tuple[str, int]] = field(default_factory=list)
    prices: list[PriceSeries] = field(default_factory=list)
    repriced_models: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    changes_total: int = 0
    models: list[ModelSection] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when no run ever succeeded: there is no catalog to show."""
        return self.runs_succeeded == 0


# -- reading ------------------------------------------------------------------------------------


def collect(
    engine: Engine | None,
    *,
    source: str,
    since: datetime | None = None,
    now: datetime | None = None,
) -> ReportData:
    """Reads what the report shows.

    Args:
        engine: The catalog database, or None when it was never initialised (an empty page).
        source: How to name the database on the page (its URL with the password masked).
        since: Only changes (and days) from this time on; the current catalog is always whole.
        now: The page's generation time.

    Returns:
        The report's data; ``empty`` when no run has succeeded yet.
    """
    data = ReportData(source=source, generated_at=now or datetime.now(UTC), since=since)
    if engine is None:
        return data
    runs = schema.sync_runs
    with engine.connect() as conn:
        data.runs_succeeded = conn.execute(
            sa.select(sa.func.count()).select_from(runs).where(runs.c.status == "succeeded")
        ).scalar_one()
        if data.empty:
            return data
        data.models_now = conn.execute(
            sa.select(sa.func.count()).select_from(_current_models)
        ).scalar_one()
        data.sizes = _sizes(conn, since)
        data.runs, data.runs_with_changes = _changes_per_run(conn, since)
        if data.runs and data.runs[0].run_id == _first_run(conn):
            # The first load adds the whole catalog: drawn with the rest, it would flatten
            # every later run to nothing. It is shown apart.
            data.initial_load = data.runs.pop(0)
            data.runs_with_changes -= 1
        data.providers = [
            (provider_name(p), n) for p, n in _count_current(conn, _current_models.c.provider)
        ]
        data.lifecycles = _count_current(conn, _current_models.c.lifecycle_status)
        data.prices, data.repriced_models = _prices(conn, since)
        data.changes, data.changes_total = _latest_changes(conn, since)
    data.last_run = queries.last_run(engine, "succeeded")
    named = [m["uuid"] for c in data.changes for m in c["models"]]
    named = [p.model_uuid for p in data.prices] + named
    data.models = _model_sections(engine, list(dict.fromkeys(named))[:MAX_SECTIONS])
    return data


def _since(column: Any, since: datetime | None) -> Any:
    return sa.true() if since is None else column >= since


def _sizes(conn: sa.Connection, since: datetime | None) -> list[tuple[date, int, int, int, int]]:
    view = _size_by_day.c
    query = sa.select(view.day, view.models, view.added, view.removed, view.restored).order_by(
        view.day
    )
    if since is not None:
        query = query.where(view.day >= since.date())
    return [(_as_date(d), m, a, r, s) for d, m, a, r, s in conn.execute(query)]


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _changes_per_run(conn: sa.Connection, since: datetime | None) -> tuple[list[RunChanges], int]:
    view = _catalog_changes.c
    query = (
        sa.select(
            view.run_id,
            sa.func.min(view.observed_at).label("observed_at"),
            view.kind,
            sa.func.count().label("n"),
        )
        .where(_since(view.observed_at, since))
        .group_by(view.run_id, view.kind)
    )
    runs: dict[int, RunChanges] = {}
    for run_id, observed_at, kind, n in conn.execute(query):
        run = runs.setdefault(run_id, RunChanges(run_id, observed_at, {}))
        run.counts[kind] = int(n)
        run.observed_at = min(run.observed_at, observed_at)
    ordered = sorted(runs.values(), key=lambda r: (r.observed_at, r.run_id))
    return ordered[-MAX_RUNS:], len(ordered)


def _first_run(conn: sa.Connection) -> int | None:
    runs = schema.sync_runs
    query = (
        sa.select(runs.c.id)
        .where(runs.c.status == "succeeded")
        .order_by(runs.c.observed_at, runs.c.id)
        .limit(1)
    )
    return conn.execute(query).scalar()


PROVIDER_NAMES = {
    "DIGITALOCEAN": "DigitalOcean", "OPENAI": "OpenAI", "ANTHROPIC": "Anthropic",
    "META": "Meta", "MISTRAL": "Mistral", "DEEPSEEK": "DeepSeek", "GOOGLE": "Google",
    "COHERE": "Cohere", "XAI": "xAI", "NVIDIA": "NVIDIA", "QWEN": "Qwen", "ALIBABA": "Alibaba",
    "HUGGINGFACE": "Hugging Face", "MICROSOFT": "Microsoft", "AMAZON": "Amazon",
}  # fmt: skip
"""How providers spell their own names; others are title-cased."""


def provider_name(value: str) -> str:
    """A provider as people write it: ``MODEL_PROVIDER_DIGITALOCEAN`` -> ``DigitalOcean``."""
    name = value.removeprefix("MODEL_PROVIDER_")
    if not name or name in ("UNKNOWN", "unknown"):
        return "unknown"
    return PROVIDER_NAMES.get(name.upper()) or name.replace("_", " ").title()


def _count_current(conn: sa.Connection, column: Any) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for value, n in conn.execute(sa.select(column, sa.func.count()).group_by(column)):
        counts[value or "unknown"] += int(n)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _price(text: str | None) -> float | None:
    """A price from ``model_change_fields`` (JSON text; NULL means absent, i.e. no price)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _prices(conn: sa.Connection, since: datetime | None) -> tuple[list[PriceSeries], int]:
    fields, runs, models = schema.model_change_fields, schema.sync_runs, schema.models
    query = (
        sa.select(
            fields.c.model_uuid,
            fields.c.path,
            fields.c.old_value,
            fields.c.new_value,
            runs.c.observed_at,
        )
        .select_from(fields.join(runs, runs.c.id == fields.c.run_id))
        .where(fields.c.path.like("pricing.%"), _since(runs.c.observed_at, since))
        .order_by(runs.c.observed_at, fields.c.run_id, fields.c.path)
    )
    changes: dict[str, dict[str, list[tuple[datetime, float | None, float | None]]]] = {}
    for uuid, path, old, new, when in conn.execute(query):
        key = path.removeprefix("pricing.")
        changes.setdefault(uuid, {}).setdefault(key, []).append((when, _price(old), _price(new)))
    if not changes:
        return [], 0
    latest = sorted(changes, key=lambda u: max(c[-1][0] for c in changes[u].values()))
    shown = latest[::-1][:MAX_PRICE_CHARTS]
    info = {
        row.uuid: row
        for row in conn.execute(
            sa.select(models.c.uuid, models.c.id, models.c.first_seen_at).where(
                models.c.uuid.in_(shown)
            )
        )
    }
    pricing = schema.model_pricing
    current = {
        (row.model_uuid, row.price_key): float(row.price)
        for row in conn.execute(sa.select(pricing).where(pricing.c.model_uuid.in_(shown)))
    }
    end = conn.execute(
        sa.select(sa.func.max(runs.c.observed_at)).where(runs.c.status == "succeeded")
    ).scalar_one()
    series = []
    for uuid in shown:
        first_seen = info[uuid].first_seen_at
        start = max(first_seen, since) if since is not None else first_seen
        steps: dict[str, list[PricePoint]] = {}
        for key, events in sorted(changes[uuid].items()):
            points: list[PricePoint] = []
            if start < events[0][0]:
                points.append(PricePoint(start, events[0][1], changed=False))
            points += [PricePoint(when, new, changed=True) for when, _old, new in events]
            if end is not None and end > events[-1][0]:
                now = current.get((uuid, key), events[-1][2])
                points.append(PricePoint(end, now, changed=False))
            steps[key] = points
        series.append(PriceSeries(uuid, info[uuid].id or uuid, steps))
    return series, len(changes)


def _latest_changes(
    conn: sa.Connection, since: datetime | None
) -> tuple[list[dict[str, Any]], int]:
    """The latest changes, newest first, identical changes in one run grouped into one row:
    ``{observed_at, run_id, kind, changes, models: [{uuid, id, name}]}``."""
    view = _catalog_changes.c
    where = _since(view.observed_at, since)
    total = conn.execute(sa.select(sa.func.count()).select_from(_catalog_changes).where(where))
    query = (
        sa.select(_catalog_changes)
        .where(where)
        .order_by(view.observed_at.desc(), view.change_id.desc())
        .limit(MAX_CHANGES_READ)
    )
    groups: dict[tuple[int, str, str], dict[str, Any]] = {}
    for row in conn.execute(query):
        changes = json.loads(row.changes) if isinstance(row.changes, str) else row.changes
        key = (row.run_id, row.kind, json.dumps(changes, sort_keys=True))
        if key not in groups:
            if len(groups) == MAX_CHANGES:
                break
            groups[key] = {"observed_at": row.observed_at, "run_id": row.run_id,
                           "kind": row.kind, "changes": changes, "models": []}  # fmt: skip
        groups[key]["models"].append(
            {
                "uuid": row.model_uuid,
                "id": row.model_id or row.model_uuid,
                "name": row.model_name or "",
            }
        )
    return list(groups.values()), total.scalar_one()


def _model_sections(engine: Engine, uuids: Sequence[str]) -> list[ModelSection]:
    if not uuids:
        return []
    models = schema.models
    with engine.connect() as conn:
        found = {
            row.uuid: row
            for row in conn.execute(
                sa.select(
                    models.c.uuid,
                    models.c.id,
                    models.c.name,
                    models.c.provider,
                    models.c.lifecycle_status,
                    models.c.removed_at,
                ).where(models.c.uuid.in_(uuids))
            )
        }
    sections = [
        ModelSection(
            uuid=uuid,
            model_id=row.id or uuid,
            name=row.name or "",
            provider=provider_name(row.provider or ""),
            lifecycle_status=row.lifecycle_status or "",
            removed_at=row.removed_at,
            history=queries.model_history(engine, uuid),
        )
        for uuid in uuids
        if (row := found.get(uuid)) is not None
    ]
    return sorted(sections, key=lambda s: (s.model_id, s.uuid))


# -- drawing ------------------------------------------------------------------------------------

WIDTH = 540
"""A chart's viewBox width: about the width it is drawn at in a 1400 px window, so its text
is drawn at the size the stylesheet gives it (12 px ticks), not shrunk."""
PRICE_WIDTH = 520
"""The same for a price chart, two to a row."""


@dataclass(frozen=True)
class _Frame:
    """A chart's plot area inside its viewBox."""

    height: int
    width: int = WIDTH
    left: int = 60
    right: int = 16
    top: int = 22
    bottom: int = 34

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def base(self) -> int:
        return self.height - self.bottom


def _num(value: float) -> str:
    """A coordinate, short."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _label(value: float) -> str:
    """A number for people: integers plainly, others with up to 4 significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _dollars(value: float) -> str:
    """A price per million tokens: ``$0.75``, ``$12``, ``$0.0004``."""
    if value == int(value) and abs(value) < 1e15:
        return f"${int(value):,}"
    return f"${value:.2f}" if abs(value) >= 0.1 else f"${value:.2g}"


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top`` (about ``count`` intervals)."""
    return nice_range(0, top, count)


def nice_range(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering ``[low, high]`` in about ``count`` intervals, starting at the
    round value at or below ``low``: an axis scaled to the data, not to zero."""
    if not high > low:
        high = low + (abs(low) * 0.1 or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    n = math.ceil((high - first) / step - 1e-9)
    return [round(first + i * step, 12) for i in range(n + 1)]


def _svg(
    chart: str, frame: _Frame, label: str, body: Iterable[str], unit: str = "", **data: str
) -> str:
    attributes = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in data.items())
    title = f'<text class="unit" x="4" y="12">{escape(unit)}</text>' if unit else ""
    return (
        f'<svg class="chart" data-chart="{escape(chart)}"{attributes} '
        f'viewBox="0 0 {frame.width} {frame.height}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">' + title + "".join(body) + "</svg>"
    )


def _y_axis(
    frame: _Frame, ticks: Sequence[float], show: Callable[[float], str] = _label
) -> Iterable[str]:
    low, high = ticks[0], ticks[-1]
    for tick in ticks:
        y = frame.base - (tick - low) / ((high - low) or 1) * frame.plot_height
        yield (
            f'<line class="grid" x1="{frame.left}" x2="{frame.width - frame.right}" '
            f'y1="{_num(y)}" y2="{_num(y)}"/>'
            f'<text class="tick y" x="{frame.left - 6}" y="{_num(y + 4)}" text-anchor="end">'
            f"{escape(show(tick))}</text>"
        )


def _scale(frame: _Frame, ticks: Sequence[float]) -> Callable[[float], float]:
    low, high = ticks[0], ticks[-1]
    return lambda value: frame.base - (value - low) / ((high - low) or 1) * frame.plot_height


def _x_labels(frame: _Frame, labels: Sequence[tuple[float, str]], room: int = 80) -> Iterable[str]:
    """Labels under the x axis, thinned so they never overlap."""
    if not labels:
        return
    every = max(1, math.ceil(len(labels) / max(1, frame.plot_width // room)))
    chosen = list(labels[::every])
    if labels[-1] not in chosen and len(labels) > 1:
        if chosen and labels[-1][0] - chosen[-1][0] < room:
            chosen.pop()
        chosen.append(labels[-1])
    for x, text in chosen:
        half = len(text) * 3.5  # about half the width of 12px text
        anchor = "end" if x + half > frame.width - 2 else "start" if x - half < 2 else "middle"
        yield (
            f'<text class="tick x" x="{_num(x)}" y="{frame.base + 18}" text-anchor="{anchor}">'
            f"{escape(text)}</text>"
        )


def size_chart(sizes: Sequence[tuple[date, int, int, int, int]]) -> str:
    """Models in the catalog at the end of each day: a line with a point per day, on an axis
    scaled to the counts (so 300 -> 308 is a visible rise, not a flat line)."""
    frame = _Frame(height=240)
    counts = [s[1] for s in sizes]
    ticks = nice_range(min(counts), max(counts))
    first, last = sizes[0][0], sizes[-1][0]
    span = (last - first).days

    def x(day: date) -> float:
        if span == 0:
            return frame.left + frame.plot_width / 2
        return frame.left + (day - first).days / span * frame.plot_width

    y = _scale(frame, ticks)
    body = list(_y_axis(frame, ticks))
    points = [(x(day), y(models)) for day, models, *_ in sizes]
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{_num(px)},{_num(py)}" for i, (px, py) in enumerate(points)
    )
    body.append(f'<path class="line" d="{path}" data-points="{len(points)}"/>')
    for (px, py), (day, models, added, removed, restored) in zip(points, sizes, strict=True):
        tip = f"{day}: {models} models ({added} added, {removed} removed, {restored} restored)"
        body.append(
            f'<circle class="point" cx="{_num(px)}" cy="{_num(py)}" r="4" '
            f'data-value="{models}" data-day="{day}"><title>{escape(tip)}</title></circle>'
        )
    days = [
        (px, f"{size[0]:%b} {size[0].day}") for (px, _), size in zip(points, sizes, strict=True)
    ]
    body += _x_labels(frame, days, room=56)
    return _svg("size", frame, "Models in the catalog per day", body, unit="models")


def run_label(when: datetime, same_day: bool) -> str:
    """How a run is named on an axis: its UTC date, with the time when a day had several."""
    when = when.astimezone(UTC)
    return f"{when:%b} {when.day} {when:%H:%M}" if same_day else f"{when:%b} {when.day}"


def changes_chart(runs: Sequence[RunChanges]) -> str:
    """Changes per run, stacked by kind, each run labelled by the date it observed."""
    frame = _Frame(height=260)
    ticks = nice_ticks(max(sum(r.counts.values()) for r in runs))
    slot = frame.plot_width / len(runs)
    bar = min(40.0, slot * 0.7)
    body = list(_y_axis(frame, ticks))
    days = Counter(run.observed_at.astimezone(UTC).date() for run in runs)
    labels = []
    for i, run in enumerate(runs):
        centre = frame.left + slot * (i + 0.5)
        shared = days[run.observed_at.astimezone(UTC).date()] > 1
        labels.append((centre, run_label(run.observed_at, shared)))
        bottom = float(frame.base)
        for kind in KINDS:
            count = run.counts.get(kind, 0)
            if not count:
                continue
            height = count / ticks[-1] * frame.plot_height
            bottom -= height
            tip = f"run {run.run_id}, {format_instant(run.observed_at)}: {count} {kind}"
            body.append(
                f'<rect class="bar kind-{kind}" x="{_num(centre - bar / 2)}" y="{_num(bottom)}" '
                f'width="{_num(bar)}" height="{_num(height)}" fill="{KIND_COLOURS[kind]}" '
                f'data-run="{run.run_id}" data-kind="{kind}" data-value="{count}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    longest = max(len(text) for _, text in labels)
    body += _x_labels(frame, labels, room=max(44, longest * 7 + 8))
    return _svg("changes", frame, "Changes per run, by kind", body, unit="changes")


def count_chart(chart: str, label: str, counts: Sequence[tuple[str, int]]) -> str:
    """Horizontal bars: how many current models have each value."""
    row = 26
    frame = _Frame(height=len(counts) * row + 20, left=200, right=56, top=10, bottom=10)
    top = max(n for _, n in counts)
    body = []
    for i, (value, n) in enumerate(counts):
        y = frame.top + i * row
        width = max(1.0, n / top * frame.plot_width)
        body.append(
            f'<text class="label" x="{frame.left - 8}" y="{y + 16}" text-anchor="end">'
            f"{escape(_clip(value, 28))}<title>{escape(value)}</title></text>"
            f'<rect class="bar" x="{frame.left}" y="{y + 3}" width="{_num(width)}" height="18" '
            f'data-value="{n}"><title>{escape(f"{value}: {n} models")}</title></rect>'
            f'<text class="count" x="{_num(frame.left + width + 6)}" y="{y + 16}">{n}</text>'
        )
    return _svg(chart, frame, label, body)


def price_chart(series: PriceSeries) -> str:
    """One model's prices as steps over time, a line per price key, in $ per million tokens:
    each line starts at the price first seen and holds every price until the next change,
    the last one to the chart's edge."""
    frame = _Frame(height=210, width=PRICE_WIDTH, left=64)
    times = [p.when for points in series.steps.values() for p in points]
    values = [p.price for points in series.steps.values() for p in points if p.price is not None]
    ticks = nice_range(min(values, default=0.0) * 0.9, max(values, default=1.0) * 1.05)
    start, end = min(times), max(times)
    span = (end - start).total_seconds() or 3600.0
    edge = span / 12  # room after the last point, so a price that just changed is a step

    def x(when: datetime) -> float:
        seconds = (when - start).total_seconds()
        return frame.left + seconds / (span + edge) * frame.plot_width

    y = _scale(frame, ticks)
    right = frame.left + frame.plot_width
    body = list(_y_axis(frame, ticks, _dollars))
    for colour, (key, points) in zip(itertools.cycle(PALETTE), series.steps.items(), strict=False):
        body.append(
            f'<path class="line" d="{_step_path(points, x, y, right)}" stroke="{colour}" '
            f'data-key="{escape(key)}" data-points="{len(points)}"/>'
        )
        for point in points:
            if not point.changed or point.price is None:
                continue
            tip = f"{key}: {_dollars(point.price)} per million tokens from {_day(point.when)}"
            body.append(
                f'<circle class="point" cx="{_num(x(point.when))}" cy="{_num(y(point.price))}" '
                f'r="3.5" fill="{colour}" data-key="{escape(key)}" data-value="{point.price:g}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    ends = [(x(start), f"{start:%b} {start.day}"), (x(end), f"{end:%b} {end.day}")]
    body += _x_labels(frame, ends if ends[0][1] != ends[1][1] else ends[:1], room=80)
    return _svg(
        "price", frame, f"Prices of {series.model_id}", body, unit="$ per million tokens",
        model=series.model_uuid,
    )  # fmt: skip


def _step_path(
    points: Sequence[PricePoint],
    x: Callable[[datetime], float],
    y: Callable[[float], float],
    right: float,
) -> str:
    """A step line: each price holds until the next point, the last to ``right``; no line
    while there is no price."""
    path: list[str] = []
    drawing = False
    for point, following in zip(points, [*points[1:], None], strict=True):
        if point.price is None:
            drawing = False
            continue
        if drawing:
            path.append(f"V{_num(y(point.price))}")
        else:
            path.append(f"M{_num(x(point.when))},{_num(y(point.price))}")
        drawing = True
        path.append(f"H{_num(x(following.when) if following is not None else right)}")
    return " ".join(path)


def _day(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


# -- the page -----------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; --ink: #1f2430; --muted: #667085; --line: #e4e7ec;
  --panel: #ffffff; --page: #f5f6f8; --accent: #3a6fd8; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 0 0 6px; }
.sub, .note, footer { color: var(--muted); }
.note { font-size: 12px; margin: 6px 0 0; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr));
  gap: 12px; margin: 18px 0; }
.stat { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; }
.stat b { display: block; font-size: 22px; }
.stat span { color: var(--muted); font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 16px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 16px; margin-bottom: 16px; min-width: 0; }
.empty { background: var(--panel); border: 1px dashed var(--muted); border-radius: 8px;
  padding: 28px; font-size: 16px; text-align: center; }
svg.chart { display: block; width: 100%; height: auto; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .tick, svg .label, svg .count, svg .unit { fill: var(--muted); font-size: 12px; }
svg .label { fill: var(--ink); font-size: 13px; }
svg .unit { font-weight: 600; }
svg .line { fill: none; stroke-width: 2.5; stroke-linejoin: round; }
svg .line:not([stroke]) { stroke: var(--accent); }
svg .point { stroke: #fff; stroke-width: 1.5; }
svg .point:not([fill]), svg rect.bar:not([fill]) { fill: var(--accent); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin-top: 6px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; }
.prices { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 14px; }
.prices .panel { margin: 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; white-space: nowrap; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
.kind { display: inline-block; padding: 0 7px; border-radius: 9px; color: #fff; font-size: 12px; }
.kind-added { background: #2e9e5b; } .kind-changed { background: #3a6fd8; }
.kind-removed { background: #d64545; } .kind-restored { background: #e0a526; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
section.model { scroll-margin-top: 12px; margin-top: 20px; }
section.model + section.model { border-top: 1px solid var(--line); padding-top: 16px; }
section.model .sub { margin: 0 0 6px; }
section.model:target { outline: 2px solid var(--accent); }
footer { padding: 8px 20px 28px; font-size: 12px; }
"""


def render(data: ReportData) -> str:
    """The whole page, as one HTML document: the template ``etl/templates/report.html``
    (autoescaped) given the data and the charts drawn from it."""
    charts: dict[str, Any] = {}
    if not data.empty:
        charts = {
            "size": Markup(size_chart(data.sizes)) if data.sizes else None,
            "changes": Markup(changes_chart(data.runs)) if data.runs else None,
            "providers": Markup(
                count_chart("providers", "Current models by provider", data.providers)
            )
            if data.providers
            else None,
            "lifecycle": Markup(
                count_chart("lifecycle", "Current models by lifecycle status", data.lifecycles)
            )
            if data.lifecycles
            else None,
            "prices": [
                (
                    series,
                    Markup(price_chart(series)),
                    list(zip(series.steps, itertools.cycle(PALETTE), strict=False)),
                )
                for series in data.prices
            ],
        }
    return _template().render(
        data=data,
        charts=charts,
        css=Markup(CSS),
        version=__version__,
        kind_colours=KIND_COLOURS,
        sections={model.uuid for model in data.models},
        events=sum(len(group["models"]) for group in data.changes),
    )


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("etl", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        instant=format_instant,
        day=_day,
        date=lambda when: f"{when.astimezone(UTC):%b} {when.astimezone(UTC).day}",
        thousands=lambda number: f"{number:,}",
        plural=plural,
    )
    environment.globals.update(limited=_limited, field_changes=_field_changes)
    return environment.get_template("report.html")


def _limited(what: str, shown: int, total: int) -> str:
    return f"All {total} {what}" if shown >= total else f"The latest {shown} of {total} {what}"


def _value(value: Any) -> str:
    if value is None:
        return "∅"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return _clip(text, 60)


def _field_changes(changes: Any) -> tuple[list[tuple[str, str, str]], int]:
    """The first few changed paths of a change, each with its old and new value shortened,
    and how many more there are."""
    if not isinstance(changes, dict) or not changes:
        return [], 0
    items = sorted(changes.items())
    shown = []
    for path, change in items[:MAX_FIELDS_SHOWN]:
        old, new = (
            (change.get("old"), change.get("new")) if isinstance(change, dict) else (None, None)
        )
        shown.append((path, _value(old), _value(new)))
    return shown, max(0, len(items) - MAX_FIELDS_SHOWN)


def build_report(engine: Engine | None, *, source: str, since: datetime | None = None) -> str:
    """Reads the database and renders the page (see :func:`collect` and :func:`render`)."""
    return render(collect(engine, source=source, since=since))


def write_report(html: str, output: str | os.PathLike[str]) -> Path:
    """Writes the page atomically (see :func:`etl.files.replace_file`): a new file gets the
    umask's permissions, an existing one keeps its own, a symlink at the path is replaced.

    Returns:
        The file's absolute path.

    Raises:
        ConfigError: The file cannot be written there.
    """
    path = Path(output).expanduser().absolute()
    try:
        files.replace_file(path, html.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path
