"""The ``etl`` command: parse options, call one function, print its result.

Exit codes: 0 ok, 2 usage, 3 auth, 4 API unreachable, 5 invalid API response, 6 database error,
7 another run holds the lock (see README).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from etl import __version__
from etl.config import DEFAULT_API_URL, DEFAULT_DATABASE_URL, MAX_PER_PAGE, Settings
from etl.errors import EtlError

F = TypeVar("F", bound=Callable[..., Any])


def _setup_logging(verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("etl: %(levelname)s: %(message)s"))
    root = logging.getLogger("etl")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO)
    root.propagate = False


class EtlGroup(click.Group):
    """Maps every :class:`EtlError` to one line on stderr and its documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EtlError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"etl: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("etl: interrupted", err=True)
            ctx.exit(130)


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
@click.version_option(__version__, prog_name="etl")
@click.pass_context
def cli(ctx: click.Context, database_url: str, verbose: bool, quiet: bool) -> None:
    """Sync DigitalOcean's GenAI model catalog into SQL, with its full history."""
    _setup_logging(verbose, quiet)
    ctx.obj = {"database_url": database_url, "verbose": verbose, "quiet": quiet}


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(func)


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
@click.option("--dry-run", is_flag=True, help="Fetch and report what would change; write nothing.")
@json_option
@click.pass_obj
def sync(
    obj: dict[str, Any],
    api_url: str,
    token_file: str | None,
    per_page: int,
    public_only: bool,
    usecases: tuple[str, ...],
    max_retries: int,
    max_wait: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Fetch the whole model catalog and bring the database up to date."""
    from etl.config import check_api_url, parse_usecase, resolve_token
    from etl.pipeline import run_sync

    settings = Settings(
        database_url=obj["database_url"],
        api_url=check_api_url(api_url),
        token=resolve_token(token_file, os.environ),
        per_page=per_page,
        public_only=public_only,
        usecases=tuple(dict.fromkeys(parse_usecase(u) for u in usecases)),
        max_retries=max_retries,
        max_wait=max_wait,
        dry_run=dry_run,
    )
    result = run_sync(settings)
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


@cli.group("db")
def db_group() -> None:
    """Manage the database schema (Alembic migrations)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def db_upgrade(obj: dict[str, Any], revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    from etl import db

    with db.errors(obj["database_url"]) as engine:
        db.upgrade(engine, revision)
        click.echo(f"database at {db.current(engine) or 'base'}")


@db_group.command("downgrade")
@click.argument("revision")
@click.pass_obj
def db_downgrade(obj: dict[str, Any], revision: str) -> None:
    """Migrate the schema down to REVISION (``base`` removes every table)."""
    from etl import db

    with db.errors(obj["database_url"]) as engine:
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="etl")
