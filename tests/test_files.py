"""etl.files and the files etl creates: another local user's planted symlink is never followed,
and permissions are the umask's (or an existing file's own)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etl import files
from etl.archive import ArchiveWriter
from etl.errors import ConfigError, DatabaseError
from etl.lock import run_lock
from etl.report import write_report


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file another user wants us to overwrite."""
    path = tmp_path / "victim"
    path.write_text("precious")
    return path


def test_a_new_report_honours_the_umask(tmp_path: Path) -> None:
    for mask, expected in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        path = tmp_path / f"report-{mask:o}.html"
        with umask(mask):
            write_report("<p>hi</p>", path)
        assert mode(path) == expected
        assert path.read_text() == "<p>hi</p>"


def test_an_existing_report_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old")
    path.chmod(0o600)
    with umask(0o022):
        write_report("new", path)
    assert path.read_text() == "new" and mode(path) == 0o600


def test_a_symlink_at_the_report_path_is_replaced_not_followed(
    tmp_path: Path, victim: Path
) -> None:
    path = tmp_path / "report.html"
    path.symlink_to(victim)
    write_report("<p>report</p>", path)
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and path.read_text() == "<p>report</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "victim"]


def test_a_report_that_cannot_be_written_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "report.html").mkdir()  # a folder in the way: the rename fails
    with pytest.raises(ConfigError, match="cannot write the report to"):
        write_report("x", tmp_path / "report.html")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_symlink_planted_at_the_lock_file_is_refused(tmp_path: Path, victim: Path) -> None:
    from etl import db

    database = tmp_path / "catalog.db"
    Path(f"{database}.lock").symlink_to(victim)
    engine = db.create_engine(f"sqlite:///{database}")
    try:
        with (
            pytest.raises(DatabaseError, match=r"catalog.db.lock for the run lock"),
            run_lock(engine),
        ):
            pass
    finally:
        engine.dispose()
    assert victim.read_text() == "precious"


def test_the_lock_file_is_created_with_the_umask_and_holds_the_pid(tmp_path: Path) -> None:
    from etl import db

    database = tmp_path / "catalog.db"
    engine = db.create_engine(f"sqlite:///{database}")
    try:
        with umask(0o077), run_lock(engine):
            lock = Path(f"{database}.lock")
            assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        engine.dispose()
    assert mode(lock) == 0o600


def test_a_fifo_planted_at_the_lock_file_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.lock")
    with pytest.raises(OSError, match="not a regular file"):
        files.open_lock(tmp_path / "x.lock")


def test_a_symlink_planted_at_the_archive_partial_file_is_refused(
    tmp_path: Path, victim: Path
) -> None:
    started = datetime(2026, 12, 3, 1, 2, 3, tzinfo=UTC)
    folder = tmp_path / "archive" / "2026" / "12" / "03"
    folder.mkdir(parents=True)
    partial = folder / "20261203T010203Z-run7.jsonl.gz.partial"
    partial.symlink_to(victim)
    with pytest.raises(ConfigError, match=r"cannot create .*run7.jsonl.gz.partial: File exists"):
        ArchiveWriter(tmp_path / "archive", started, 7)
    assert victim.read_text() == "precious"


def test_the_archive_file_honours_the_umask(tmp_path: Path) -> None:
    started = datetime(2026, 12, 3, 1, 2, 3, tzinfo=UTC)
    with umask(0o027):
        writer = ArchiveWriter(tmp_path, started, 8)
    path = writer.commit()
    assert mode(path) == 0o640
