"""The ``etl`` command: parse options, call one function, print its result.

Exit codes: 0 ok, 2 usage, 3 auth, 4 API unreachable, 5 invalid API response, 6 database error,
7 another run holds the lock, 8 an alert target refused a message (see README).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
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
from etl.output import plural
from etl.sanitize import visible

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from etl.lock import RunLock

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("etl.cli")


def _fail(ctx: click.Context, text: str, exit_code: int) -> NoReturn:
    """Says why the command failed: ``etl: <text>`` on stderr (escaped: one line, no control
    characters from an API or a file), or a JSON log line (with ``exit_code``, and the
    traceback under ``-v``) when logs are JSON."""
    obj = ctx.obj or {}
    if obj.get("log_format") == "json":
        log.error("%s", text, exc_info=bool(obj.get("verbose")), extra={"exit_code": exit_code})
    else:
        if obj.get("verbose"):
            traceback.print_exc()
        click.echo(f"etl: {visible(text)}", err=True)
    ctx.exit(exit_code)


class EtlGroup(click.Group):
    """Maps every :class:`EtlError`, and every usage error, to one line on stderr and its
    documented exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Runs the command; a usage error is one line, ``etl: error: ...``, exit 2."""
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if not standalone_mode:
                raise
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"etl: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            if not standalone_mode:
                raise
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            if not standalone_mode:
                raise
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except OSError as exc:
            if exc.errno != errno.EPIPE or not standalone_mode:
                raise
            # Python's advice for SIGPIPE: point stdout at /dev/null so the exit flush is quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)  # the reader of our output went away (`etl runs | head`)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

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


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite: ``nan`` and ``inf`` are usage errors."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


MAX_LIMIT = 1_000_000
"""The most rows ``etl runs --limit`` asks for (a larger number overflows some databases)."""

_ENV_DATABASE = (
    "ETL_DATABASE_URL: the database (same as --database-url before the command).",
    "ETL_SQLITE_BUSY_TIMEOUT: seconds SQLite waits for another connection's lock (30).",
)
_ENV_LOGS = ("ETL_LOG_FORMAT: text or json logs (same as --log-format).",)
_ENV_TOKEN = (
    "DIGITALOCEAN_ACCESS_TOKEN: the API token (never printed).",
    "DIGITALOCEAN_TOKEN: the token when DIGITALOCEAN_ACCESS_TOKEN is unset.",
)
_EXIT_READ = ("0 success", "2 usage: a bad option or value", "6 database: missing, unreachable, "
              "or its schema behind or ahead of this etl")  # fmt: skip
_EXIT_API = ("3 authentication: no token, or the API refused it",
             "4 API unreachable, or a rate limit longer than --max-wait",
             "5 invalid API response", "6 database error", "7 another run holds the lock",
             "130 / 143 interrupted (SIGINT / SIGTERM): rolled back")  # fmt: skip
_OUTPUT = (
    "Output: a table for people (sized to the terminal on a TTY, long cells cut with …, control "
    "characters escaped); --json one JSON array, --nl one JSON object per line, --csv CSV with "
    "a header (cells starting with = + - @ tab or CR get a leading ' so spreadsheets do not run "
    "them), --csv-raw the same CSV unchanged. Timestamps are ISO 8601 UTC."
)


def _epilog(env: Sequence[str], exits: Sequence[str], output: str | None = _OUTPUT) -> str:
    """The end of a command's ``--help``: its output, the variables it reads, its exit codes."""
    parts = [output] if output else []
    parts.append("\b\nEnvironment:\n" + "\n".join(f"  {line}" for line in env))
    parts.append("\b\nExit codes:\n" + "\n".join(f"  {line}" for line in exits))
    return "\n\n".join(parts)


def output_options(func: F) -> F:
    """``--json`` / ``--nl`` / ``--csv`` / ``--csv-raw``: how a listing command prints its rows.

    The command receives ``fmt``: one of :data:`etl.output.FORMATS` (``table`` by default).
    Two formats at once is a usage error.
    """
    flags = {"as_json": "json", "as_nl": "nl", "as_csv": "csv", "as_csv_raw": "csv-raw"}

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        chosen = [fmt for name, fmt in flags.items() if kwargs.pop(name)]
        if len(chosen) > 1:
            raise click.UsageError(
                "choose one output format: " + " or ".join(f"--{f}" for f in chosen)
            )
        return func(*args, fmt=chosen[0] if chosen else "table", **kwargs)

    options = [
        ("--csv-raw", "as_csv_raw", "Print CSV with every cell exactly as stored."),
        ("--csv", "as_csv", "Print CSV with a header; formula-like cells get a leading '."),
        ("--nl", "as_nl", "Print one JSON object per line."),
        ("--json", "as_json", "Print one JSON array."),
    ]
    for flag, name, text in options:
        command = click.option(flag, name, is_flag=True, help=text)(command)
    return command  # type: ignore[return-value]


@cli.command(
    epilog=_epilog(
        (*_ENV_TOKEN, *_ENV_DATABASE, *_ENV_LOGS),
        ("0 success", "2 usage: a bad option or value", *_EXIT_API),
        "Output: one summary line; --json one JSON object.",
    )
)
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
    type=FiniteFloat(0),
    default=60.0,
    help="Longest rate-limit wait in seconds; a longer one fails the run (exit 4).",
)
@click.option(
    "--max-response-mb",
    envvar="ETL_MAX_RESPONSE_MB",
    show_envvar=True,
    type=FiniteFloat(min=0.001),
    default=50.0,
    help="Refuse a response body larger than this (exit 5).",
)
@click.option(
    "--run-timeout",
    envvar="ETL_RUN_TIMEOUT",
    show_envvar=True,
    metavar="DURATION",
    default="30m",
    help="Fail the run (exit 4, nothing written) when it takes longer than this: seconds, "
    "or e.g. 90s, 30m, 2h.",
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
    run_timeout: str,
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
        run_timeout=_seconds(run_timeout, "--run-timeout"),
        notify=None if dry_run else _alert_targets(alerts),
    )
    result = run_sync(settings)
    log_summary(log, "sync finished", result.as_dict())
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    what = "dry run" if dry_run else f"run {result.run_id}"
    click.echo(
        f"{what} {result.status}: {plural(result.models_seen, 'model')} on "
        f"{plural(result.pages, 'page')}, {result.inserted} inserted, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.removed} removed, {result.restored} restored, "
        f"{plural(result.warnings, 'warning')}; {plural(result.requests, 'request')}, "
        f"{plural(result.retries, 'retry', 'retries')}, {result.duration_s:.2f}s"
    )


def _seconds(text: str, option: str) -> float:
    """A positive duration: plain seconds (``90``) or with a unit (``90s``, ``30m``, ``2h``)."""
    from etl.times import parse_duration

    plain = text.strip().replace(".", "", 1).isdigit()
    try:
        seconds = float(text) if plain else parse_duration(text).total_seconds()
    except ConfigError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{option} {text!r} is not a duration (use e.g. 90, 90s, 30m, 2h)")
    return seconds


@cli.command(
    epilog=_epilog(
        (*_ENV_DATABASE, *_ENV_LOGS),
        (
            "0 success",
            "2 usage: a bad option or value",
            "5 some files could not be loaded (each is named; the others were loaded): not a "
            "snapshot, or larger than --max-file-mb once inflated",
            "6 database error",
            "7 another run holds the lock",
            "130 / 143 interrupted (SIGINT / SIGTERM): rolled back",
        ),
        "Output: one summary line; --json one JSON object.",
    )
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--as-of",
    metavar="T",
    help="Observation time of files that carry none (archive files carry their own).",
)
@click.option("--dry-run", is_flag=True, help="Load and report, then roll everything back.")
@click.option(
    "--max-file-mb",
    envvar="ETL_MAX_FILE_MB",
    show_envvar=True,
    type=FiniteFloat(min=0, min_open=True),
    default=1024.0,
    help="Refuse a file larger than this once inflated, without reading further (exit 5).",
)
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
    max_file_mb: float,
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
        max_file_bytes=max(1, int(max_file_mb * 1024 * 1024)),
    )
    log_summary(log, "backfill finished", {**result.as_dict(), "failed": len(result.failed)})
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        what = "dry run" if dry_run else "backfill"
        click.echo(
            f"{what}: {plural(result.loaded, 'snapshot')} loaded, {result.skipped} already "
            f"loaded, {result.partial} partial, {len(result.failed)} failed of "
            f"{plural(result.files, 'file')}; {result.inserted} inserted, {result.updated} "
            f"updated, {result.removed} removed, {result.restored} restored, "
            f"{plural(result.warnings, 'warning')}; {result.duration_s:.2f}s"
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


@cli.command()
@click.option(
    "--repair",
    is_flag=True,
    help="Rewrite the history tables from the stored observations (one transaction) when "
    "they differ.",
)
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="Differences printed at most.")  # fmt: skip
@json_option
@click.pass_obj
def verify(obj: dict[str, Any], repair: bool, limit: int, as_json: bool) -> None:
    """Check that the history tables are what the stored observations derive.

    Prints each difference (table, key, expected, found); exit 0 when there is none, 8 when
    there are (after --repair too: they were found, then repaired).
    """
    from etl.errors import VerifyFailed
    from etl.pipeline import run_verify
    from etl.sanitize import visible

    differences = run_verify(obj["database_url"], repair=repair)
    if as_json:
        click.echo(json.dumps([d.__dict__ for d in differences[:limit]], default=str))
    else:
        for d in differences[:limit]:
            click.echo(visible(f"{d.table} {list(d.key)}: expected {d.expected}, found {d.found}"))
    if not differences:
        if not as_json:
            click.echo("the history tables are exactly what the observations derive")
        return
    more = f" (first {limit} shown)" if len(differences) > limit else ""
    done = "; repaired from the observations" if repair else "; `etl verify --repair` rewrites them"
    raise VerifyFailed(f"{len(differences)} difference(s){more}{done}")


@cli.group("db")
def db_group() -> None:
    """Manage the database schema (Alembic migrations)."""


_DB_EPILOG = _epilog(
    _ENV_DATABASE,
    ("0 success", "2 usage: an unknown revision", "6 database error"),
    "Output: one line, the revision the database is at.",
)


@contextmanager
def _migration_errors() -> Iterator[None]:
    """Alembic's own errors (e.g. a database at a revision this etl does not know) as a
    one-line exit 6."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        raise DatabaseError(
            f"{exc}; `etl db current` shows where the database is, `etl --version` this etl"
        ) from exc


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[RunLock]:
    """The run lock (no sync or backfill meanwhile: exit 7), and SIGTERM as an exception, so
    a stopped migration rolls its revision back."""
    from etl import signals
    from etl.lock import run_lock

    with signals.as_exceptions(), run_lock(engine) as lock:
        yield lock


@db_group.command("upgrade", epilog=_DB_EPILOG)
@click.argument("revision", default="head")
@click.pass_obj
def db_upgrade(obj: dict[str, Any], revision: str) -> None:
    """Migrate the schema up to REVISION (default: head; +1 for one step)."""
    from etl import db
    from etl.pipeline import derive_if_stale

    db.check_revision_argument(revision)
    with (
        db.errors(obj["database_url"]) as engine,
        _migration_errors(),
        _migration_lock(engine) as lock,
    ):
        db.upgrade(engine, revision)
        if db.current(engine) == db.SCHEMA_HEAD and derive_if_stale(engine, lock):
            log.info("derived the history from the stored observations")
        click.echo(f"database at {db.current(engine) or 'base'}")


@db_group.command("downgrade", epilog=_DB_EPILOG, context_settings={"ignore_unknown_options": True})
@click.argument("revision")
@click.pass_obj
def db_downgrade(obj: dict[str, Any], revision: str) -> None:
    """Migrate the schema down to REVISION (-1 for one step; ``base`` removes every table)."""
    from etl import db

    db.check_revision_argument(revision)
    with db.errors(obj["database_url"]) as engine, _migration_errors(), _migration_lock(engine):
        db.downgrade(engine, revision)
        click.echo(f"database at {db.current(engine) or 'base'}")


@db_group.command("current", epilog=_DB_EPILOG)
@click.pass_obj
def db_current(obj: dict[str, Any]) -> None:
    """Print the schema revision the database is at, and how it stands against the code."""
    from etl import db

    with db.read_only(obj["database_url"]) as engine:
        current = db.current(engine)
    click.echo(f"{current or 'base'} ({db.describe_revision(current)})")


@db_group.command(
    "history",
    epilog=_epilog(
        (), ("0 success",), "Output: one line per revision, newest first, as Alembic prints it."
    ),
)
def db_history() -> None:
    """List the schema revisions this etl knows, newest first (no database needed)."""
    from etl import db

    for line in db.revision_history():
        click.echo(line)


@contextmanager
def read_engine(obj: dict[str, Any]) -> Iterator[Engine | None]:
    """A read-only engine on a database at head, or None when it was never initialised.

    Raises:
        DatabaseError: No such database file, unreachable, or behind or ahead of the code.
    """
    from etl import db

    with db.read_only(obj["database_url"]) as engine:
        yield engine if db.check_schema(engine) else None


_READ_EPILOG = _epilog(_ENV_DATABASE, _EXIT_READ)


@cli.command(epilog=_READ_EPILOG)
@click.option(
    "--limit", type=click.IntRange(1, MAX_LIMIT), default=20, help="How many runs (at most 1e6)."
)
@output_options
@click.pass_obj
def runs(obj: dict[str, Any], limit: int, fmt: str) -> None:
    """List the latest sync and backfill runs, newest first: when each observed the catalog,
    its mode and source (the backfilled file), how long it took and what it changed."""
    from etl import queries
    from etl.output import write_rows

    with read_engine(obj) as engine:
        rows = queries.recent_runs(engine, limit) if engine else []
    write_rows(rows, queries.RUN_COLUMNS, fmt)


@cli.command(
    epilog=_epilog(
        _ENV_DATABASE,
        (
            "0 healthy (or no --max-age and a sync succeeded)",
            "1 unhealthy: no successful complete sync, or the last finished longer ago than "
            "--max-age",
            *_EXIT_READ[1:],
        ),
        "Output: the last successful, complete, unfiltered sync and, when another run came "
        "after it, the latest run; --json / --nl one JSON object (healthy, age_seconds, "
        "max_age_seconds, last_sync, last_run); --csv / --csv-raw those two runs as rows.",
    )
)
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Exit 1 when the last successful, complete, unfiltered sync finished longer ago than "
    "this (e.g. 2h, 1d). Backfills and filtered or partial syncs do not count.",
)
@output_options
@click.pass_obj
def status(obj: dict[str, Any], max_age: str | None, fmt: str) -> None:
    """A health check: when the last successful, complete, unfiltered sync finished."""
    from etl import queries
    from etl.output import to_json, write_rows
    from etl.sanitize import visible
    from etl.times import format_instant, parse_duration

    limit = parse_duration(max_age) if max_age else None
    with read_engine(obj) as engine:
        last_sync = queries.last_healthy_sync(engine) if engine else None
        latest = queries.last_run(engine) if engine else None
    age = datetime.now(UTC) - last_sync["finished_at"] if last_sync else None
    healthy = age is not None and (limit is None or age <= limit)
    if fmt in ("json", "nl"):
        click.echo(
            to_json(
                {
                    "healthy": healthy,
                    "age_seconds": round(age.total_seconds()) if age else None,
                    "max_age_seconds": round(limit.total_seconds()) if limit else None,
                    "last_sync": last_sync,
                    "last_run": latest,
                }
            )
        )
    elif fmt != "table":
        rows = [{"run": "last_sync", **last_sync}] if last_sync else []
        rows += [{"run": "last_run", **latest}] if latest else []
        write_rows(rows, ("run", *queries.RUN_COLUMNS), fmt)
    else:
        if last_sync is None:
            click.echo("no successful complete sync yet")
        else:
            click.echo(
                f"last complete sync: run {last_sync['id']} finished "
                f"{format_instant(last_sync['finished_at'])}, {_ago(age)} ago: "
                f"{plural(last_sync['models_seen'], 'model')}, {last_sync['inserted']} inserted, "
                f"{last_sync['updated']} updated, {last_sync['removed']} removed, "
                f"{last_sync['restored']} restored"
            )
        if latest and (last_sync is None or latest["id"] != last_sync["id"]):
            error = f": {visible(latest['error'])}" if latest["error"] else ""
            click.echo(
                f"latest run: run {latest['id']} ({latest['mode']}) {latest['status']}, "
                f"observed {format_instant(latest['observed_at'])}{error}"
            )
    if not healthy:
        if max_age:
            why = (
                "no successful complete sync (backfills and filtered or partial syncs do not count)"
                if age is None
                else f"the last complete sync finished {_ago(age)} ago"
            )
            click.echo(f"etl: stale: {why} (--max-age {visible(max_age)})", err=True)
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


@cli.command(epilog=_epilog(_ENV_DATABASE, (*_EXIT_READ[:1], "2 usage: a bad option, or no "
                                            "such model", *_EXIT_READ[2:])))  # fmt: skip
@click.argument("model")
@output_options
@click.pass_obj
def history(obj: dict[str, Any], model: str, fmt: str) -> None:
    """Every content MODEL has had (a uuid or a model id), oldest first, with the change that
    opened it and the field paths it changed (as `etl changes` names them)."""
    from etl import queries
    from etl.output import write_rows

    columns: tuple[str, ...] = ("valid_from", "valid_to", "opened_by_run", "kind", "version",
                                "name", "lifecycle_status", "fields")  # fmt: skip
    with read_engine(obj) as engine:
        if engine is None:
            raise ConfigError(f"no model has uuid or id {model!r} (the database is empty)")
        rows = queries.model_history(engine, model)
    if fmt != "table":
        columns = ("uuid", *columns, "closed_by_run", "content_hash", "changes")
    write_rows(rows, columns, fmt)


@cli.command(epilog=_READ_EPILOG)
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
    fmt: str,
) -> None:
    """List what changed in the catalog, oldest first, with the field paths each change
    touched (``pricing.output_price_per_million``)."""
    from etl import queries
    from etl.output import write_rows
    from etl.times import parse_instant

    start = parse_instant(since) if since else None
    end = parse_instant(until) if until else None
    with read_engine(obj) as engine:
        rows = queries.list_changes(engine, start, end, kinds) if engine else []
    columns: tuple[str, ...] = ("observed_at", "run_id", "kind", "model_uuid", "model_id")
    columns += ("fields",) if fmt == "table" else ("model_name", "fields", "changes")
    write_rows(rows, columns, fmt)


@cli.command("models", epilog=_READ_EPILOG)
@click.option("--as-of", metavar="T", help="The catalog as it was at T (default: now).")
@output_options
@click.pass_obj
def models_command(obj: dict[str, Any], as_of: str | None, fmt: str) -> None:
    """List the catalog as it was at a moment: one row per model present then."""
    from etl import queries
    from etl.output import write_rows
    from etl.times import parse_instant

    when = parse_instant(as_of) if as_of else datetime.now(UTC)
    with read_engine(obj) as engine:
        rows = queries.models_as_of(engine, when) if engine else []
    columns = ("uuid", "id", "name", "provider", "lifecycle_status", "version", "valid_from")
    write_rows(rows, columns, fmt)


@cli.command(
    epilog=_epilog(
        _ENV_DATABASE,
        (*_EXIT_READ[:2], "2 usage: also, the file cannot be written", *_EXIT_READ[2:]),
        "Output: the HTML file's path on stdout.",
    )
)
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


@cli.command(
    epilog=_epilog(
        (),
        (
            "0 success",
            "2 usage: a bad option, or the database already holds runs",
            "6 database error",
        ),
        "Output: what was loaded, the report's path, and commands to try next.",
    )
)
@click.option(
    "--database-url",
    default="sqlite:///demo.db",
    help="Where to load the demo (never ETL_DATABASE_URL, so a real catalog is safe); it must "
    "be empty or missing.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="demo-report.html",
    help="The HTML report to write.",
)
def demo(database_url: str, output: str) -> None:
    """Try etl without a token: load a week of simulated catalog history from a fake
    DigitalOcean API on 127.0.0.1, through the real sync and backfill, and write its report."""
    from etl.demo import run_demo

    result = run_demo(database_url, output)
    url = result.database_url
    click.echo(
        f"demo: a week of catalog history in {url}: {plural(result.snapshots, 'day')} "
        f"backfilled from snapshots, {plural(result.syncs, 'sync')} against a fake API on "
        f"127.0.0.1; {plural(result.models_now, 'model')} now, "
        f"{plural(result.changes, 'change')} over the week"
    )
    click.echo(f"report: {result.report}")
    click.echo("next, try:")
    for command in ("runs", "status --max-age 2h", "changes --since 7d", "models",
                    f"history {result.example_model}", "changes --kind removed --csv"):  # fmt: skip
        click.echo(f"  etl --database-url {url} {command}")
    click.echo("then the real catalog: DIGITALOCEAN_ACCESS_TOKEN=... etl sync (or make sync)")


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
    from etl import db

    with db.errors(obj["database_url"]) as engine:
        if not db.check_schema(engine):
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
