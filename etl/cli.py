"""The ``etl`` command: parse options, call one function, print its result.

Exit codes: 0 ok, 2 usage, 3 auth, 4 API unreachable, 5 invalid API response, 6 database error,
7 another run holds the lock, 8 an alert target refused a message (see README).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from etl import __version__
from etl.config import DEFAULT_API_URL, DEFAULT_DATABASE_URL, MAX_PER_PAGE, Settings
from etl.errors import (
    ConfigError,
    DatabaseError,
    EtlError,
    Interrupted,
    InvalidResponseError,
    NotifyError,
)
from etl.logs import FORMATS, log_summary, setup_logging

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("etl.cli")


def _fail(ctx: click.Context, text: str, exit_code: int) -> NoReturn:
    """Says why the command failed: ``etl: <text>`` on stderr, or a JSON log line (with
    ``exit_code``, and the traceback under ``-v``) when logs are JSON."""
    obj = ctx.obj or {}
    if obj.get("log_format") == "json":
        log.error("%s", text, exc_info=bool(obj.get("verbose")), extra={"exit_code": exit_code})
    else:
        if obj.get("verbose"):
            traceback.print_exc()
        click.echo(f"etl: {text}", err=True)
    ctx.exit(exit_code)


class EtlGroup(click.Group):
    """Maps every :class:`EtlError` to one line on stderr and its documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EtlError as exc:
            _fail(ctx, f"error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted (SIGINT); the run was rolled back", 130)
        except Interrupted as exc:
            _fail(ctx, f"{exc}; the run was rolled back", exc.exit_code)


@click.group(
    cls=EtlGroup,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.option(
    "--database-url",
    envvar="ETL_DATABASE_URL",
    show_envvar=True,
    default=DEFAULT_DATABASE_URL,
    help="SQLAlchemy URL of the catalog database.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail; show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
@click.option(
    "--log-format",
    type=click.Choice(FORMATS, case_sensitive=False),
    envvar="ETL_LOG_FORMAT",
    show_envvar=True,
    default="text",
    help="Logs on stderr: text lines (UTC-stamped when not a terminal) or one JSON object "
    "per line.",
)
@click.version_option(__version__, prog_name="etl")
@click.pass_context
def cli(ctx: click.Context, database_url: str, verbose: bool, quiet: bool, log_format: str) -> None:
    """Sync DigitalOcean's GenAI model catalog into SQL, with its full history."""
    log_format = log_format.lower()
    setup_logging(verbose, quiet, log_format)
    ctx.obj = {
        "database_url": database_url,
        "verbose": verbose,
        "quiet": quiet,
        "log_format": log_format,
    }


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(func)


def target_options(func: F) -> F:
    """``--notify URL`` (repeatable, or ETL_NOTIFY_URLS) and ``--notify-config FILE``."""
    func = click.option(
        "--notify-config",
        type=click.Path(exists=True, dir_okay=False),
        help="Apprise YAML or text config of alert targets; tags kind:K, field:GLOB and "
        "model:GLOB set a target's own filters.",
    )(func)
    return click.option(
        "--notify",
        "notify_urls",
        multiple=True,
        metavar="URL",
        envvar="ETL_NOTIFY_URLS",
        show_envvar=True,
        help="Send change alerts to this Apprise URL (repeatable; the variable is "
        "space-separated). Never printed or stored.",
    )(func)


def alert_options(func: F) -> F:
    """The alert targets and their filters: ``--notify-kind``, ``--notify-field``,
    ``--notify-model``, ``--notify-max-pending``."""
    func = click.option(
        "--notify-max-pending",
        type=click.IntRange(1),
        default=1000,
        help="Undelivered alerts kept per target; past it the oldest are dropped.",
    )(func)
    func = click.option(
        "--notify-model",
        multiple=True,
        metavar="GLOB",
        help="Alert only on models whose id matches (repeatable).",
    )(func)
    func = click.option(
        "--notify-field",
        multiple=True,
        metavar="GLOB",
        help="Alert on changes only to matching fields, e.g. pricing.* (repeatable).",
    )(func)
    func = click.option(
        "--notify-kind",
        multiple=True,
        type=click.Choice(["added", "removed", "restored", "changed"]),
        help="Alert only on this kind of change (repeatable).",
    )(func)
    return target_options(func)


def _alert_targets(options: dict[str, Any]) -> Any:
    """The targets and filters of :func:`alert_options`, resolved (None: no alerts)."""
    from etl.notify import Filters, load_targets

    filters = Filters(options["notify_kind"], options["notify_field"], options["notify_model"])
    return load_targets(
        options["notify_urls"], options["notify_config"], filters, options["notify_max_pending"]
    )


@cli.command()
@click.option(
    "--api-url",
    envvar="DIGITALOCEAN_API_URL",
    show_envvar=True,
    default=DEFAULT_API_URL,
    help="Base URL of the DigitalOcean API.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the API token (when DIGITALOCEAN_ACCESS_TOKEN / DIGITALOCEAN_TOKEN "
    "are unset).",
)
@click.option(
    "--per-page",
    type=click.IntRange(1, MAX_PER_PAGE),
    default=MAX_PER_PAGE,
    help="Models per page.",
)
@click.option("--public-only", is_flag=True, help="List only public models (no removals).")
@click.option(
    "--usecase",
    "usecases",
    multiple=True,
    metavar="U",
    help="List only models for this usecase, e.g. agent (repeatable; no removals).",
)
@click.option("--max-retries", type=click.IntRange(0, 100), default=5, help="Retries per request.")
@click.option(
    "--max-wait",
    type=click.FloatRange(0),
    default=60.0,
    help="Longest rate-limit wait in seconds; a longer one fails the run (exit 4).",
)
@click.option(
    "--max-response-mb",
    envvar="ETL_MAX_RESPONSE_MB",
    show_envvar=True,
    type=click.FloatRange(min=0.001),
    default=50.0,
    help="Refuse a response body larger than this (exit 5).",
)
@click.option(
    "--archive-dir",
    envvar="ETL_ARCHIVE_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False),
    help="Also write the run's raw responses here (one gzip JSON-lines file per run).",
)
@click.option(
    "--with-usecases",
    is_flag=True,
    help="Also list the catalog once per usecase and record model_usecases "
    "(one more paged listing per usecase value).",
)
@click.option("--dry-run", is_flag=True, help="Fetch and report what would change; write nothing.")
@alert_options
@json_option
@click.pass_obj
def sync(
    obj: dict[str, Any],
    /,
    api_url: str,
    token_file: str | None,
    per_page: int,
    public_only: bool,
    usecases: tuple[str, ...],
    max_retries: int,
    max_wait: float,
    max_response_mb: float,
    archive_dir: str | None,
    with_usecases: bool,
    dry_run: bool,
    as_json: bool,
    **alerts: Any,
) -> None:
    """Fetch the whole model catalog and bring the database up to date."""
    from etl.config import check_api_url, parse_usecase, resolve_token
    from etl.pipeline import run_sync

    api_url = check_api_url(api_url)
    usecases = tuple(dict.fromkeys(parse_usecase(u) for u in usecases))
    settings = Settings(
        database_url=obj["database_url"],
        api_url=api_url,
        token=resolve_token(token_file, os.environ),
        per_page=per_page,
        public_only=public_only,
        usecases=usecases,
        max_retries=max_retries,
        max_wait=max_wait,
        dry_run=dry_run,
        archive_dir=archive_dir,
        with_usecases=with_usecases,
        max_response_bytes=int(max_response_mb * 1024 * 1024),
        notify=None if dry_run else _alert_targets(alerts),
    )
    result = run_sync(settings)
    log_summary(log, "sync finished", result.as_dict())
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    what = "dry run" if dry_run else f"run {result.run_id}"
    click.echo(
        f"{what} {result.status}: {result.models_seen} models on {result.pages} pages, "
        f"{result.inserted} inserted, {result.updated} updated, {result.unchanged} unchanged, "
        f"{result.removed} removed, {result.restored} restored, {result.warnings} warnings; "
        f"{result.requests} requests, {result.retries} retries, {result.duration_s:.2f}s"
    )


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--as-of",
    metavar="T",
    help="Observation time of files that carry none (archive files carry their own).",
)
@click.option("--dry-run", is_flag=True, help="Load and report, then roll everything back.")
@click.option(
    "--notify-backfill",
    is_flag=True,
    help="Send alerts for the changes of each snapshot loaded (backfills send none otherwise).",
)
@alert_options
@json_option
@click.pass_obj
def backfill(
    obj: dict[str, Any],
    /,
    paths: tuple[str, ...],
    as_of: str | None,
    dry_run: bool,
    notify_backfill: bool,
    as_json: bool,
    **alerts: Any,
) -> None:
    """Load archived catalog snapshots (files or folders) into the history."""
    from etl.pipeline import run_backfill
    from etl.times import parse_instant

    when = parse_instant(as_of) if as_of else None
    show_bar = sys.stderr.isatty() and not obj["quiet"] and not as_json

    result = run_backfill(
        obj["database_url"],
        paths,
        as_of=when,
        dry_run=dry_run,
        progress=_progress_bar if show_bar else lambda items: items,
        alerts=_alert_targets(alerts) if notify_backfill and not dry_run else None,
    )
    log_summary(log, "backfill finished", {**result.as_dict(), "failed": len(result.failed)})
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        what = "dry run" if dry_run else "backfill"
        click.echo(
            f"{what}: {result.loaded} snapshots loaded, {result.skipped} already loaded, "
            f"{result.partial} partial, {len(result.failed)} failed of {result.files} files; "
            f"{result.inserted} inserted, {result.updated} updated, {result.removed} removed, "
            f"{result.restored} restored, {result.warnings} warnings; {result.duration_s:.2f}s"
        )
    if result.failed:
        raise InvalidResponseError(
            f"{len(result.failed)} of {result.files} files could not be loaded: "
            + "; ".join(result.failed[:3])
            + ("; ..." if len(result.failed) > 3 else "")
        )


def _progress_bar(items: Any) -> Iterator[Any]:
    with click.progressbar(items, label="backfill", file=sys.stderr) as bar:
        yield from bar


@cli.group("db")
def db_group() -> None:
    """Manage the database schema (Alembic migrations)."""


@contextmanager
def _migration_errors() -> Iterator[None]:
    """Alembic's own errors (an unknown revision, on either side) as a one-line exit 6."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        raise DatabaseError(
            f"{exc}; `etl db current` shows where the database is, `etl --version` this etl"
        ) from exc


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def db_upgrade(obj: dict[str, Any], revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    from etl import db

    with db.errors(obj["database_url"]) as engine, _migration_errors():
        db.upgrade(engine, revision)
        click.echo(f"database at {db.current(engine) or 'base'}")


@db_group.command("downgrade")
@click.argument("revision")
@click.pass_obj
def db_downgrade(obj: dict[str, Any], revision: str) -> None:
    """Migrate the schema down to REVISION (``base`` removes every table)."""
    from etl import db

    with db.errors(obj["database_url"]) as engine, _migration_errors():
        db.downgrade(engine, revision)
        click.echo(f"database at {db.current(engine) or 'base'}")


@db_group.command("current")
@click.pass_obj
def db_current(obj: dict[str, Any]) -> None:
    """Print the schema revision the database is at, and the code's head."""
    from etl import db

    with db.errors(obj["database_url"]) as engine:
        current = db.current(engine)
        head = db.head_revision()
        state = "up to date" if current == head else f"behind head {head}"
        click.echo(f"{current or 'base'} ({state})")


def output_options(func: F) -> F:
    """``--json`` / ``--csv``: how a listing command prints its rows (default: aligned table)."""
    func = click.option("--csv", "fmt", flag_value="csv", help="Print CSV with a header.")(func)
    func = click.option("--json", "fmt", flag_value="json", help="Print a JSON array.")(func)
    return func


@contextmanager
def read_engine(obj: dict[str, Any]) -> Iterator[Engine | None]:
    """An engine on a database at head, or None when the database was never initialised."""
    from etl import db

    with db.errors(obj["database_url"]) as engine:
        yield engine if db.check_schema(engine) else None


@cli.command()
@click.option("--limit", type=click.IntRange(1), default=20, help="How many runs.")
@json_option
@click.pass_obj
def runs(obj: dict[str, Any], limit: int, as_json: bool) -> None:
    """List the most recent sync and backfill runs, newest first."""
    from etl import queries
    from etl.output import write_rows

    with read_engine(obj) as engine:
        rows = queries.recent_runs(engine, limit) if engine else []
    write_rows(rows, queries.RUN_COLUMNS, "json" if as_json else "table")


@cli.command()
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Exit 1 when the last successful run finished longer ago than this (e.g. 2h, 1d).",
)
@json_option
@click.pass_obj
def status(obj: dict[str, Any], max_age: str | None, as_json: bool) -> None:
    """Show the last successful run; with --max-age, a health check for monitoring."""
    from etl import queries
    from etl.output import to_json
    from etl.times import format_instant, parse_duration

    limit = parse_duration(max_age) if max_age else None
    with read_engine(obj) as engine:
        success = queries.last_run(engine, "succeeded") if engine else None
        latest = queries.last_run(engine) if engine else None
    now = datetime.now(UTC)
    age = now - success["finished_at"] if success else None
    healthy = success is not None and (limit is None or (age is not None and age <= limit))
    if as_json:
        click.echo(
            to_json(
                {
                    "healthy": healthy,
                    "age_seconds": round(age.total_seconds()) if age else None,
                    "last_success": success,
                    "last_run": latest,
                }
            )
        )
    elif success is None:
        click.echo("no successful run yet")
    else:
        click.echo(
            f"last successful run {success['id']} ({success['mode']}) finished "
            f"{format_instant(success['finished_at'])}, {_ago(age)} ago: "
            f"{success['models_seen']} models, {success['inserted']} inserted, "
            f"{success['updated']} updated, {success['removed']} removed, "
            f"{success['restored']} restored"
        )
        if latest and latest["id"] != success["id"]:
            click.echo(f"latest run {latest['id']} {latest['status']}: {latest['error'] or ''}")
    if not healthy:
        why = "no successful run" if success is None else f"last success {_ago(age)} ago"
        click.echo(f"etl: stale: {why} (--max-age {max_age})" if max_age else "", err=True)
        raise SystemExit(1)


def _ago(age: timedelta | None) -> str:
    seconds = int(age.total_seconds()) if age else 0
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


@cli.command()
@click.argument("model")
@json_option
@click.pass_obj
def history(obj: dict[str, Any], model: str, as_json: bool) -> None:
    """Every version of MODEL's content (MODEL is a uuid or a model id), oldest first."""
    from etl import queries
    from etl.output import write_rows

    columns = ("valid_from", "valid_to", "opened_by_run", "kind", "version", "name",
               "lifecycle_status", "changed_fields")  # fmt: skip
    with read_engine(obj) as engine:
        if engine is None:
            raise ConfigError(f"no model has uuid or id {model!r} (the database is empty)")
        rows = queries.model_history(engine, model)
    if as_json:
        write_rows(rows, (*columns, "uuid", "closed_by_run", "content_hash", "changes"), "json")
    else:
        write_rows(rows, columns)


@cli.command()
@click.option("--since", metavar="T", help="From this time on (ISO 8601, or an age like 7d).")
@click.option("--until", metavar="T", help="Before this time.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(["added", "changed", "removed", "restored"]),
    help="Only changes of this kind (repeatable).",
)
@output_options
@click.pass_obj
def changes(
    obj: dict[str, Any],
    since: str | None,
    until: str | None,
    kinds: tuple[str, ...],
    fmt: str | None,
) -> None:
    """List what changed in the catalog, oldest first."""
    from etl import queries
    from etl.output import write_rows
    from etl.times import parse_instant

    start = parse_instant(since) if since else None
    end = parse_instant(until) if until else None
    with read_engine(obj) as engine:
        rows = queries.list_changes(engine, start, end, kinds) if engine else []
    columns: tuple[str, ...] = ("observed_at", "run_id", "kind", "model_uuid", "model_id")
    columns += ("model_name", "changes") if fmt == "json" else ("fields",)
    write_rows(rows, columns, fmt or "table")


@cli.command("models")
@click.option("--as-of", metavar="T", help="The catalog as it was at T (default: now).")
@output_options
@click.pass_obj
def models_command(obj: dict[str, Any], as_of: str | None, fmt: str | None) -> None:
    """List the catalog as it was at a moment."""
    from etl import queries
    from etl.output import write_rows
    from etl.times import parse_instant

    when = parse_instant(as_of) if as_of else datetime.now(UTC)
    with read_engine(obj) as engine:
        rows = queries.models_as_of(engine, when) if engine else []
    columns = ("uuid", "id", "name", "provider", "lifecycle_status", "version", "valid_from")
    write_rows(rows, columns, fmt or "table")


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="report.html",
    help="The HTML file to write.",
)
@click.option("--since", metavar="T", help="Only changes from this time on (ISO 8601, or 30d).")
@click.pass_obj
def report(obj: dict[str, Any], output: str, since: str | None) -> None:
    """Write the catalog as one self-contained HTML page: charts, changes, model histories."""
    from etl import db
    from etl.report import build_report, write_report
    from etl.times import parse_instant

    start = parse_instant(since) if since else None
    with read_engine(obj) as engine:
        html = build_report(engine, source=db.mask_url(obj["database_url"]), since=start)
    click.echo(write_report(html, output))


@cli.group("notify")
def notify_group() -> None:
    """Change alerts: what is undelivered, deliver it now, send a test message."""


@notify_group.command("status")
@json_option
@click.pass_obj
def notify_status(obj: dict[str, Any], as_json: bool) -> None:
    """List alerts not delivered: pending, failing (tried, to be retried) and dropped."""
    from etl.notify import STATUS_COLUMNS, undelivered
    from etl.output import write_rows

    with read_engine(obj) as engine:
        rows = undelivered(engine) if engine else []
    if not rows and not as_json:
        click.echo("no undelivered alerts")
        return
    write_rows(rows, STATUS_COLUMNS, "json" if as_json else "table")


@notify_group.command("retry")
@target_options
@json_option
@click.pass_obj
def notify_retry(
    obj: dict[str, Any], notify_urls: tuple[str, ...], notify_config: str | None, as_json: bool
) -> None:
    """Deliver pending alerts to the given targets now, whatever their backoff."""
    from etl.notify import Filters, load_targets, retry_now

    targets = load_targets(notify_urls, notify_config, Filters())
    if targets is None:
        raise ConfigError("no target: pass --notify URL or --notify-config FILE")
    with read_engine(obj) as engine:
        if engine is None:
            raise ConfigError("the database is empty: nothing to deliver")
        result = retry_now(engine, targets)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
    else:
        click.echo(
            f"{result.delivered} delivered, {result.failed} failed, {result.pending} still "
            f"pending, {result.unconfigured} pending for targets not given"
        )
    if result.failed:
        raise NotifyError(f"{result.failed} deliveries failed; `etl notify status` shows why")


@notify_group.command("test")
@click.argument("url")
def notify_test(url: str) -> None:
    """Send a test message to the Apprise URL URL."""
    from etl.notify import send_test

    click.echo(f"sent a test message to {send_test(url)}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="etl")
