"""Running things to measure them: child processes with their wall time and peak RSS, the fake
API as a process of its own, scratch databases, row counts, and the machine's facts."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "dop_v1_bench0123456789abcdef"
"""The token the bench's fake API accepts and its etl runs send."""


class BenchError(Exception):
    """A scenario could not be measured (a process failed, a database is unreachable)."""


@dataclass
class ProcessRun:
    """One child process, waited for with ``wait4``.

    Attributes:
        argv: What ran.
        returncode: Its exit code.
        wall_s: Wall time from spawn to exit (interpreter start included).
        peak_rss_mib: Its peak resident set size (``ru_maxrss``).
        stdout: What it printed.
        stderr: What it logged.
    """

    argv: list[str]
    returncode: int
    wall_s: float
    peak_rss_mib: float
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The last line of stdout, parsed as JSON."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise BenchError(f"{_shown(self.argv)} printed nothing")
        return json.loads(lines[-1])


def run_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> ProcessRun:
    """Runs ``argv`` to completion and measures it.

    The command is spawned by ``bench/spawn.py``, which times it and reads its own peak RSS
    with ``wait4`` (see there why not from here). Output goes to temporary files, not pipes, so
    a chatty child never blocks. Past ``timeout`` the whole process group is killed.

    Raises:
        BenchError: With ``check``, the child failed or ran past ``timeout``.
    """
    argv = [str(arg) for arg in argv]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(suffix=".json") as measured,
    ):
        launcher = [sys.executable, "-S", str(ROOT / "bench" / "spawn.py"), measured.name]
        process = subprocess.Popen(
            [*launcher, *argv], stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if check:
                raise BenchError(f"{_shown(argv)} ran past {timeout:.0f}s") from None
        out.seek(0)
        err.seek(0)
        try:
            facts = json.loads(Path(measured.name).read_text() or "{}")
        except ValueError:
            facts = {}
        run = ProcessRun(
            argv=argv,
            returncode=facts.get("status", process.returncode),
            wall_s=facts.get("wall_s", float("nan")),
            peak_rss_mib=facts.get("maxrss_kib", 0) / 1024,  # KiB on Linux
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )
    if check and run.returncode != 0:
        tail = " | ".join(run.stderr.strip().splitlines()[-3:])
        raise BenchError(f"{_shown(argv)} exited {run.returncode}: {tail}")
    return run


def _shown(argv: Sequence[str]) -> str:
    text = " ".join(argv)
    return text if len(text) < 160 else text[:157] + "..."


def python_env(**extra: str) -> dict[str, str]:
    """The environment of child processes: ours, the repo importable, the token set, no
    database URL of the user's."""
    env = dict(os.environ)
    for name in ("ETL_DATABASE_URL", "ETL_ARCHIVE_DIR", "DIGITALOCEAN_TOKEN"):
        env.pop(name, None)
    env["DIGITALOCEAN_ACCESS_TOKEN"] = TOKEN
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra)
    return env


def etl_command() -> list[str]:
    """``python -m etl``, as the bench runs every scenario."""
    return [sys.executable, "-m", "etl"]


def etl_script() -> list[str]:
    """The installed ``etl`` console script (what a user types), else ``python -m etl``."""
    script = Path(sys.executable).parent / "etl"
    return [str(script)] if script.exists() else etl_command()


# -- the fake API ---------------------------------------------------------------------------------


@contextmanager
def fake_apis(catalog_files: Sequence[Path], token: str = TOKEN) -> Iterator[list[str]]:
    """Serves each catalog file from its own ``python -m tests.fakeapi`` process.

    Yields:
        The base URL of each server, in the order of ``catalog_files``.
    """
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.fakeapi", "--catalog-file", str(path), "--token", token],
            cwd=ROOT,
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for path in catalog_files
    ]
    try:
        urls = []
        for process, path in zip(processes, catalog_files, strict=True):
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            if not url.startswith("http://"):
                raise BenchError(f"the fake API serving {path} did not start")
            urls.append(url)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- scratch databases ----------------------------------------------------------------------------


class Scratch:
    """The bench's databases: SQLite files in the work folder, PostgreSQL databases created on
    the server of ``postgres_url`` and dropped again.

    Args:
        workdir: Where SQLite files go.
        postgres_url: An administrative URL of the PostgreSQL server (None: no PostgreSQL).
    """

    def __init__(self, workdir: Path, postgres_url: str | None) -> None:
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.prefix = f"etl_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.created: set[str] = set()

    def new(self, dialect: str, name: str) -> str:
        """The URL of an empty database called ``name`` (emptied if it existed)."""
        if dialect == "sqlite":
            path = self.workdir / f"{name}.db"
            for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return f"sqlite:///{path}"
        if dialect != "postgresql":
            raise BenchError(f"unsupported database {dialect!r}")
        database = f"{self.prefix}_{name}".lower()
        self._admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        self._admin(f"CREATE DATABASE {database}")
        self.created.add(database)
        return self._server().set(database=database).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Removes one database made by :meth:`new`."""
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database in self.created:
            self._admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            self.created.discard(database)

    def drop_all(self) -> None:
        """Drops every PostgreSQL database still standing."""
        for database in sorted(self.created):
            try:
                self._admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            except BenchError as exc:
                print(f"bench: warning: {exc}", file=sys.stderr)
        self.created.clear()

    def _server(self) -> Any:
        from etl import db

        if not self.postgres_url:
            raise BenchError("no PostgreSQL URL (--postgres-url)")
        return db.parse_url(self.postgres_url)

    def _admin(self, sql: str) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self._server(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        except sa.exc.SQLAlchemyError as exc:
            raise BenchError(f"PostgreSQL: {str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()


def count_rows(url: str) -> dict[str, int]:
    """Rows in every table of the database (none before its first migration)."""
    import sqlalchemy as sa

    from etl import db

    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sorted(set(sa.inspect(conn).get_table_names()) - {"alembic_version"})
            return {
                name: int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {name}").scalar_one())
                for name in names
            }
    finally:
        engine.dispose()


def row_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Rows added (or, negative, removed) per table."""
    return {name: after.get(name, 0) - before.get(name, 0) for name in sorted(after)}


# -- the machine ----------------------------------------------------------------------------------


def machine_facts(postgres_url: str | None) -> dict[str, str]:
    """What the numbers were measured on."""
    import sqlalchemy

    facts = {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": _memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "SQLAlchemy": sqlalchemy.__version__,
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": _postgres_version(postgres_url) if postgres_url else "not measured",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": _commit(),
    }
    return facts


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def _memory() -> str:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return f"{int(match.group(1)) / 1024 / 1024:.1f} GiB" if match else "unknown"


def _postgres_version(url: str) -> str:
    import sqlalchemy as sa

    from etl import db

    try:
        engine = sa.create_engine(db.parse_url(url))
        try:
            with engine.connect() as conn:
                return str(conn.exec_driver_sql("SHOW server_version").scalar_one())
        finally:
            engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        return f"unreachable ({str(exc).splitlines()[0]})"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "etl", "migrations"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (etl/ or migrations/ modified)" if dirty else head
