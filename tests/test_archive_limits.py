"""Issue 13, case 7: a hostile archive file fails alone, in bounded memory.

Each hostile file is real and crafted here (a gzip bomb, a long JSON-lines file, a line of
millions of values); each runs through a real ``python -m etl backfill`` whose peak RSS (VmHWM)
is read at exit, and must end with exit 5, one ``etl: error:`` line naming the file, no
traceback, and nothing loaded.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db
from etl.archive import BadSnapshot, SnapshotReader, read_snapshot
from tests.catalog import make_catalog
from tests.conftest import TOKEN
from tests.fakeapi import FakeApi
from tests.measure import MIB, run_measured
from tests.test_backfill import catalog_state, response

PEAK_MIB = 300


def gzip_members(block: bytes, total: int) -> bytes:
    """``total`` bytes of ``block`` repeated, as gzip members each compressed once: cheap."""
    member = gzip.compress(block * (64 * MIB // len(block)), compresslevel=9, mtime=0)
    return member * (total // (64 * MIB))


def key_bomb(path: Path) -> None:
    """A 1.25 GiB repetition of ``{"a":`` (no newline), about 1.3 MB gzip-compressed."""
    path.write_bytes(gzip_members(b'{"a":' * 13_107 + b" ", 1280 * MIB))


def space_bomb(path: Path) -> None:
    """1.25 GiB of spaces in one deflate stream, streamed through the compressor."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * MIB
    with path.open("wb") as out:
        for _ in range(1280):
            out.write(packer.compress(chunk))
        out.write(packer.flush())


def junk_lines(path: Path, size: int, *, compress: bool = False) -> None:
    """``size`` bytes of JSON lines that look like models (each a distinct uuid)."""
    lines = b"".join(
        b'{"uuid":"junk-%08d","name":"junk model %d","version":"1.0","tags":["a","b"]}\n' % (i, i)
        for i in range(10_000)
    )
    with gzip.open(path, "wb", compresslevel=1) if compress else path.open("wb") as out:
        for _ in range(size // len(lines) + 1):
            out.write(lines)


def shapeless_lines(path: Path) -> None:
    """200 MB of valid JSON lines that are not a catalog (no uuid, no models, no body)."""
    block = b"".join(
        b'{"id":%d,"name":"row %d","values":[1,2,3]}\n' % (i, i) for i in range(20_000)
    )
    with path.open("wb") as out:
        for _ in range(200 * MIB // len(block) + 1):
            out.write(block)


def long_line(path: Path) -> None:
    """An archive record of 70 MB on one line: longer than the 64 MiB line cap."""
    with path.open("wb") as out:
        out.write(b'{"fetched_at":"2026-01-01T00:00:00Z","url":"u","status":200,"body":"')
        for _ in range(70):
            out.write(b"x" * MIB)
        out.write(b'"}\n')


def many_values(path: Path) -> None:
    """One model line of 1,000,000 tiny keys (12 MB): refused before it is parsed."""
    keys = b",".join(b'"%x":0' % i for i in range(1_000_000))
    path.write_bytes(b'{"uuid":"u",' + keys + b"}\n")


CASES = {
    "gzip-bomb-of-keys": (key_bomb, "b.jsonl.gz", (), "inflates to more than 1024 MiB"),
    "gzip-bomb-of-spaces": (space_bomb, "s.json.gz", (), "inflates to more than 1024 MiB"),
    "60-MB-lines-cap-50": (
        lambda p: junk_lines(p, 60 * MIB), "j.jsonl", ("--max-file-mb", "50"),
        "inflates to more than 50 MiB",
    ),
    "60-MB-gzip-lines-cap-50": (
        lambda p: junk_lines(p, 60 * MIB, compress=True), "j.jsonl.gz", ("--max-file-mb", "50"),
        "inflates to more than 50 MiB",
    ),
    "200-MB-lines-not-a-catalog": (
        shapeless_lines, "rows.jsonl", (), "wrong shape: expected API responses, archive "
        "records or models (line 1)",
    ),
    "70-MB-line": (long_line, "long.jsonl", (), "line 1 is longer than 64 MiB"),
    "million-keys-line": (
        many_values, "keys.jsonl", (), "line 1 holds more than 250,000 JSON values",
    ),
}  # fmt: skip


def run_rows(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("sync_runs"):
                return 0
            return int(conn.execute(sa.text("SELECT count(*) FROM sync_runs")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_file_is_refused_in_bounded_memory(tmp_path: Path, case: str) -> None:
    make, name, options, message = CASES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / name
    make(path)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    code, stderr, peak_mib, seconds = run_measured(
        tmp_path, "--database-url", url, "backfill", "--as-of", "2026-01-01", *options, str(path)
    )
    print(f"{case}: {path.stat().st_size / MIB:.1f} MiB file, peak RSS {peak_mib:.0f} MiB, "
          f"{seconds:.1f}s")  # fmt: skip
    assert code == 5, stderr
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("etl: error:")]
    assert f"{path}: {message}" in line, line
    assert run_rows(url) == 0
    assert peak_mib < PEAK_MIB


def test_max_file_mb_must_be_a_positive_finite_number(tmp_path: Path, run_etl: Any) -> None:
    path = tmp_path / "s-2026-01-01.json"
    path.write_text(json.dumps(response(make_catalog(2))))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    for value in ("0", "-1", "nan", "inf", "lots"):
        result = run_etl("--database-url", url, "backfill", "--max-file-mb", value, str(path))
        assert result.exit_code == 2, (value, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--max-file-mb" in lines[0], lines
    result = run_etl("--database-url", url, "backfill", str(path), env={"ETL_MAX_FILE_MB": "0"})
    assert result.exit_code == 2
    result = run_etl("backfill", "--help")
    assert "ETL_MAX_FILE_MB" in result.output


def test_the_cap_refuses_only_the_large_file(tmp_path: Path, run_etl: Any) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    small = folder / "small-2026-01-01.json"
    small.write_text(json.dumps(response(make_catalog(3))))
    large = folder / "large-2026-01-02.json.gz"
    large.write_bytes(gzip.compress(json.dumps(response(make_catalog(400))).encode()))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = run_etl("--database-url", url, "backfill", "--max-file-mb", "0.1", str(folder))
    assert result.exit_code == 5, result.output
    assert "1 snapshot loaded" in result.stdout
    assert f"{large}: inflates to more than 0.1 MiB" in result.stderr
    assert run_rows(url) == 1


def test_a_normal_archive_backfills_as_it_was_synced(tmp_path: Path, run_etl: Any) -> None:
    archive = tmp_path / "archive"
    synced = f"sqlite:///{tmp_path / 'synced.db'}"
    catalogs = [make_catalog(250, seed=1), make_catalog(240, seed=1), make_catalog(250, seed=2)]
    with FakeApi(models=catalogs[0], token=TOKEN) as api:
        for catalog in catalogs:
            api.models = catalog
            result = run_etl("--database-url", synced, "sync", "--api-url", api.url,
                             "--per-page", "100", "--archive-dir", str(archive))  # fmt: skip
            assert result.exit_code == 0, result.output
    assert len(list(archive.rglob("*.jsonl.gz"))) == 3
    url = f"sqlite:///{tmp_path / 'c.db'}"
    code, stderr, peak_mib, _ = run_measured(tmp_path, "--database-url", url, "backfill",
                                             str(archive))  # fmt: skip
    print(f"normal archive: peak RSS {peak_mib:.0f} MiB")
    assert code == 0, stderr
    engines = [db.create_engine(synced), db.create_engine(url)]
    try:
        assert catalog_state(engines[1]) == catalog_state(engines[0])
    finally:
        for engine in engines:
            engine.dispose()


# -- the reader itself ---------------------------------------------------------------------------


def write_lines(path: Path, items: list[Any]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\n \t\n", "empty"),
        (b'{"uuid":"a"}\n{"uuid":\n', "invalid JSON on line 2"),
        (b'{\n  "models": [\n', "invalid JSON on line 1"),
        (b'\n\n{"models": [1,\n', "invalid JSON on line 3"),
        (b'{"uuid":"a"}\n[1]\n', "wrong shape: expected API responses, archive records or models"),
        (b'[{"uuid":"a"}]\n{"uuid":"b"}\n', "wrong shape"),
        (b'{"uuid":"a"}\n\xff\n', "not UTF-8 text"),
        (b"[" * 100_000, "JSON nested too deeply to parse"),
        (gzip.compress(b'{"uuid":"a"}\n', mtime=0)[:-6], "cannot read it"),
        (gzip.compress(b'{"uuid":"a"}\n', mtime=0) + b"garbage", "cannot read it"),
    ],
)
def test_bad_files_say_why(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(BadSnapshot, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_snapshot(path)


def test_gzip_members_and_zero_padding_read_as_one_stream(tmp_path: Path) -> None:
    models = make_catalog(5)
    text = "".join(json.dumps(m) + "\n" for m in models).encode()
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(gzip.compress(text[:100]) + b"\0" * 7 + gzip.compress(text[100:]))
    assert [m["uuid"] for m in read_snapshot(path).models] == [m["uuid"] for m in models]


def test_formats_read_as_before(tmp_path: Path) -> None:
    models = make_catalog(4)
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(response(models), indent=2))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(models))
    lines = write_lines(tmp_path / "lines.jsonl", models)
    for path in (pretty, bare, lines):
        content = read_snapshot(path)
        assert content.models == models and content.known_complete, path
        assert content.hashes is not None and len(content.hashes) == 4


def test_a_repeated_line_is_taken_from_the_previous_file_by_its_digest(tmp_path: Path) -> None:
    models = make_catalog(3)
    first = write_lines(tmp_path / "a.jsonl", [response(models)])
    second = write_lines(tmp_path / "b.jsonl", [response(models)])
    changed = write_lines(tmp_path / "c.jsonl", [response(models[:2])])
    reader = SnapshotReader()
    one = reader.read(first)
    two = reader.read(second)
    assert two.models[0] is one.models[0]  # the parse was reused, not repeated
    assert all(len(digest) == 32 for digest, _ in reader._previous)  # digests, never bytes
    assert len(reader.read(changed).models) == 2


def test_the_uncapped_reader_reads_a_large_line(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(response([{"uuid": "u", "blob": "x" * (3 * MIB)}])) + "\n")
    with pytest.raises(BadSnapshot, match="more than 2 MiB"):
        SnapshotReader(2 * MIB).read(path)
    assert SnapshotReader(None).read(path).models[0]["uuid"] == "u"
