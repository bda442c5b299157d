"""Issue 13: a hostile API cannot leak the token, hang a run, forge a log line or take memory.

Each case runs ``etl sync`` against a real server on 127.0.0.1 that answers with raw bytes the
test chooses (bad chunking, stacked encodings, trickled bodies, redirects anywhere), and checks
the documented exit code, one ``etl: error:`` line, nothing written, and no secret shown.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl.errors import ApiUnavailableError
from etl.http import Fetcher, build_session
from tests.catalog import make_catalog, make_model
from tests.conftest import TOKEN
from tests.fakeapi import MODELS_PATH
from tests.measure import MIB, run_measured
from tests.test_processes import child_env

Respond = Callable[["Request"], bytes | None]
"""Given a request, the raw bytes to send back (None: the handler wrote to the socket itself)."""


class Request:
    """One request as the hostile server read it: its head, and the socket to answer on."""

    def __init__(self, head: bytes, conn: socket.socket, server: Hostile) -> None:
        self.head = head
        self.conn = conn
        self.server = server
        line, *headers = head.decode("latin-1").split("\r\n")
        self.target = line.split(" ")[1]
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (h.partition(":") for h in headers if h)
        }

    @property
    def page(self) -> int:
        match = re.search(r"[?&]page=(\d+)", self.target)
        return int(match.group(1)) if match else 1


class Hostile:
    """A raw HTTP/1.1 server on 127.0.0.1 (or another loopback address) in a thread.

    Every connection serves one request: the head is read and recorded, ``respond`` decides
    the bytes sent back, then the connection is closed.
    """

    def __init__(self, respond: Respond, host: str = "127.0.0.1") -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self._listener = socket.create_server((host, 0))
        self.url = f"http://{host}:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Hostile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            request = Request(head.split(b"\r\n\r\n")[0], conn, self)
            self.requests.append(request)
            answer = self.respond(request)
            if answer is not None:
                conn.sendall(answer)


def response(
    body: bytes = b"", status: str = "200 OK", headers: dict[str, str] | None = None
) -> bytes:
    """Raw response bytes; ``Content-Length`` unless the headers say chunked."""
    fields = {"Content-Type": "application/json", "Connection": "close", **(headers or {})}
    if "Transfer-Encoding" not in fields:
        fields.setdefault("Content-Length", str(len(body)))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def page_body(models: list[Any], **extra: Any) -> bytes:
    """The only page of a listing, as the API sends it (``extra`` replaces its keys)."""
    meta = {"total": len(models), "page": 1, "pages": 1}
    return json.dumps({"links": {}, "meta": meta, "models": models, **extra}).encode()


MODELS = make_catalog(3)


def good_page(request: Request) -> bytes:
    return response(page_body(MODELS))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def sync(run_etl: Any, db_url: str, api_url: str, *args: str) -> Any:
    return run_etl("--database-url", db_url, "sync", "--api-url", api_url, *args)


def error_line(result: Any) -> str:
    """The one line an error leaves on stderr: no traceback, no raw control character."""
    assert "Traceback" not in result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("etl: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def run_rows(db_url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM sync_runs ORDER BY id")).mappings()
            return [dict(row) for row in rows]
    finally:
        engine.dispose()


def model_count(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM models")).scalar_one())
    finally:
        engine.dispose()


# -- case 1: the host checked is the host connected to -------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("http://evil.example:{port}\\@127.0.0.1:{port}", "URL parsers disagree"),
        ("http://127.0.0.1:{port}\\@127.0.0.1:{port}", "URL parsers disagree"),
        ("http://user:pw@127.0.0.1:{port}", "must not hold a user name or password"),
        ("http://dop_v1_x@127.0.0.1:{port}", "must not hold a user name or password"),
        ("http://127.0.0.1\t:{port}", "spaces, control or non-ASCII"),
        ("http://[", "unparsable"),
    ],
    ids=["backslash-evil", "backslash-loopback", "user-password", "user-only", "tab", "bracket"],
)
def test_ambiguous_or_credentialed_api_url_is_refused_before_connecting(
    run_etl: Any, sqlite_url: str, template: str, message: str
) -> None:
    with Hostile(good_page) as server:
        port = server.url.rsplit(":", 1)[1]
        result = sync(run_etl, sqlite_url, template.format(port=port))
    assert result.exit_code == 2
    line = error_line(result)
    assert message in line
    assert "127.0.0.1" not in line.split("--api-url", 1)[1].split(":", 1)[0]  # no misleading host
    assert "pw" not in line and "dop_v1_x" not in line
    assert server.requests == []


# -- case 2: redirects --------------------------------------------------------------------------


def redirect_to(location: str, status: str = "302 Found") -> Respond:
    return lambda request: response(status=status, headers={"Location": location})


def test_redirect_to_another_host_is_refused_and_the_token_never_leaves(
    run_etl: Any, sqlite_url: str
) -> None:
    with Hostile(good_page, host="127.0.0.2") as elsewhere:
        target = f"{elsewhere.url}{MODELS_PATH}?page=1&sig=s3cret"
        with Hostile(redirect_to(target)) as server:
            result = sync(run_etl, sqlite_url, server.url)
    assert result.exit_code == 5
    line = error_line(result)
    assert f"redirect to {elsewhere.url}{MODELS_PATH};" in line
    assert "only redirects to the same scheme, host and port are followed" in line
    assert "s3cret" not in line
    assert elsewhere.requests == []
    assert run_rows(sqlite_url)[-1]["status"] == "failed"
    assert model_count(sqlite_url) == 0


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("file:///etc/passwd", "redirect to file:///etc/passwd; only redirects to the same"),
        ("https://127.0.0.1:{port}/x?token=t", "redirect to https://127.0.0.1:{port}/x; only"),
        ("http://127.0.0.1:{other}/x", "redirect to http://127.0.0.1:{other}/x; only"),
        ("http://u:p@127.0.0.1:{port}/x", "redirect to http://***@127.0.0.1:{port}/x; only"),
        ("http://[", "redirect to an unparsable location 'http://['"),
        ("/a", "a redirect loop (back to http://127.0.0.1:{port}/a)"),
    ],
    ids=["file", "https-same-host", "other-port", "userinfo", "unparsable", "loop"],
)
def test_redirect_anywhere_else_is_an_invalid_response(
    run_etl: Any, sqlite_url: str, location: str, message: str
) -> None:
    with Hostile(lambda request: None) as other, Hostile(lambda request: None) as server:
        port, other_port = server.url.rsplit(":", 1)[1], other.url.rsplit(":", 1)[1]
        server.respond = redirect_to(location.format(port=port, other=other_port))
        if location == "/a":  # /v2/... -> /a -> /b -> /a
            server.respond = lambda r: response(
                status="301 Moved", headers={"Location": "/b" if r.target == "/a" else "/a"}
            )
        result = sync(run_etl, sqlite_url, server.url, "--max-retries", "0")
    assert result.exit_code == 5, result.stderr
    assert message.format(port=port, other=other_port) in error_line(result)
    assert other.requests == []
    assert len(server.requests) <= 3


def test_redirect_to_the_same_origin_is_followed_with_the_token(
    run_etl: Any, sqlite_url: str
) -> None:
    def respond(request: Request) -> bytes:
        if request.target.startswith(MODELS_PATH):
            return response(status="307 Temporary Redirect", headers={"Location": "/moved?page=1"})
        return good_page(request)

    with Hostile(respond) as server:
        result = sync(run_etl, sqlite_url, server.url)
    assert result.exit_code == 0, result.stderr
    assert [r.target for r in server.requests] == [
        f"{MODELS_PATH}?page=1&per_page=200",
        "/moved?page=1",
    ]
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {TOKEN}"}
    assert model_count(sqlite_url) == 3


# -- case 2: bodies requests and urllib3 cannot decode ------------------------------------------


def _gzip(data: bytes, times: int = 1) -> bytes:
    for _ in range(times):
        data = gzip.compress(data, compresslevel=1)
    return data


@pytest.mark.parametrize(
    ("answer", "exit_code", "message"),
    [
        (
            response(b"\x1f\x8bnot gzip at all", headers={"Content-Encoding": "gzip"}),
            5,
            "the body could not be decoded as its Content-Encoding says: Error -3",
        ),
        (
            response(
                _gzip(page_body(MODELS), 7), headers={"Content-Encoding": ", ".join(["gzip"] * 7)}
            ),
            5,
            "Content-Encoding says: Too many content encodings in the chain: 7 > 5",
        ),
        (
            response(b"zz\r\n{}\r\n0\r\n\r\n", headers={"Transfer-Encoding": "chunked"}),
            4,
            "connection broken mid-body",
        ),
        (response(b'{"models": [', headers={"Content-Length": "4000"}), 4, "mid-body"),
        (response(page_body(MODELS)[:-1] + b"\x1b]0;owned\x07"), 5, "not JSON"),
        (response(b"[" * 100_000 + b"]" * 100_000), 5, "JSON nested too deeply"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", 4, "connection error"),
        (b"NOT HTTP AT ALL\r\n\r\n", 4, "connection error"),
    ],
    ids=[
        "bad-gzip",
        "7-encodings",
        "bad-chunking",
        "short-body",
        "not-json",
        "deep",
        "headers",
        "garbage",
    ],
)
def test_undecodable_response_ends_in_one_line_and_a_documented_code(
    run_etl: Any, sqlite_url: str, answer: bytes, exit_code: int, message: str
) -> None:
    with Hostile(lambda request: answer) as server:
        result = sync(run_etl, sqlite_url, server.url, "--max-retries", "0")
    assert result.exit_code == exit_code, result.stderr
    assert message in error_line(result)
    assert model_count(sqlite_url) == 0


# -- case 3: bounded time and pages -------------------------------------------------------------


def trickle(head: bytes, body: bytes, every: float) -> Respond:
    """Sends ``head`` and then ``body`` a byte at a time, ``every`` seconds apart."""

    def respond(request: Request) -> None:
        request.conn.sendall(head)
        for byte in body:
            if request.server.stopping.wait(every):
                return
            request.conn.sendall(bytes([byte]))

    return respond


def test_a_trickled_body_ends_at_the_run_timeout_writing_nothing(
    run_etl: Any, sqlite_url: str
) -> None:
    body = page_body(MODELS)
    with Hostile(good_page) as server:
        assert sync(run_etl, sqlite_url, server.url).exit_code == 0
        server.respond = trickle(response(body)[: -len(body)], body, every=2.0)
        started = time.monotonic()
        result = sync(run_etl, sqlite_url, server.url, "--run-timeout", "1.5")
        took = time.monotonic() - started
    assert result.exit_code == 4, result.stderr
    assert "the run took longer than --run-timeout 1.5s" in error_line(result)
    assert 1.5 <= took < 3.5
    assert [run["status"] for run in run_rows(sqlite_url)] == ["succeeded", "failed"]
    assert model_count(sqlite_url) == 3


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_an_attempt_has_a_total_deadline_whatever_the_server_trickles(phase: str) -> None:
    body = page_body(MODELS)
    whole = response(body)
    split = 20 if phase == "headers" else len(whole) - len(body)
    with Hostile(trickle(whole[:split], whole[split:], every=0.2)) as server:
        fetcher = Fetcher(build_session(TOKEN), max_retries=1, attempt_timeout=0.5, sleep=[].append)
        started = time.monotonic()
        with pytest.raises(ApiUnavailableError) as caught:
            fetcher.get_json(server.url + MODELS_PATH, [("page", 1)])
        took = time.monotonic() - started
    assert "failed after 2 attempts: no complete response within" in str(caught.value)
    assert "within 0.5s" in str(caught.value)
    assert 1.0 <= took < 3.0  # two attempts of 0.5 s, not two bodies trickled to their end


def test_run_timeout_is_a_duration(run_etl: Any, sqlite_url: str) -> None:
    for bad in ("0", "-1", "soon", "inf"):
        result = sync(run_etl, sqlite_url, "http://127.0.0.1:9", "--run-timeout", bad)
        assert result.exit_code == 2
        assert f"--run-timeout {bad!r} is not a duration" in error_line(result)
    help_text = " ".join(run_etl("sync", "--help").stdout.split())
    assert "[env var: ETL_RUN_TIMEOUT; default: 30m]" in help_text


def test_meta_pages_beyond_what_meta_total_allows_stops_at_once(
    run_etl: Any, sqlite_url: str
) -> None:
    body = page_body(MODELS)
    data = json.loads(body)
    data["meta"]["pages"] = 10**9
    data["links"] = {"pages": {"next": f"{MODELS_PATH}?page=2"}}
    with Hostile(lambda request: response(json.dumps(data).encode())) as server:
        result = sync(run_etl, sqlite_url, server.url)
    assert result.exit_code == 5
    assert "meta.pages is 1000000000, but meta.total 3 at 3 a page makes at most 1" in (
        error_line(result)
    )
    assert len(server.requests) == 1


def test_a_server_ignoring_page_without_meta_stops_at_the_repeat(
    run_etl: Any, sqlite_url: str
) -> None:
    def respond(request: Request) -> bytes:
        next_page = f"{MODELS_PATH}?page={request.page + 1}"
        return response(
            json.dumps({"links": {"pages": {"next": next_page}}, "models": MODELS}).encode()
        )

    with Hostile(respond) as server:
        result = sync(run_etl, sqlite_url, server.url)
    assert result.exit_code == 5
    assert "page 2 repeats page 1's models" in error_line(result)
    assert len(server.requests) == 2
    assert model_count(sqlite_url) == 0


def test_an_unparsable_next_link_is_an_invalid_response(run_etl: Any, sqlite_url: str) -> None:
    body = page_body(MODELS, links={"pages": {"next": "http://["}})
    with Hostile(lambda request: response(body)) as server:
        result = sync(run_etl, sqlite_url, server.url)
    assert result.exit_code == 5
    assert "unparsable next link 'http://['" in error_line(result)


# -- case 4: the error line and sync_runs.error --------------------------------------------------


def test_a_hostile_error_body_is_escaped_on_stderr_and_in_sync_runs(
    run_etl: Any, sqlite_url: str
) -> None:
    message = "bad\x1b]0;owned\x07 \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x1b[2J\rcr \u202eevil"
    body = json.dumps({"id": "bad_request", "message": message + "x" * 5000}).encode()
    with Hostile(lambda request: response(body, status="400 Bad Request")) as server:
        result = sync(run_etl, sqlite_url, server.url)
    assert result.exit_code == 5
    line = error_line(result)
    assert "bad\\x1b]0;owned\\x07" in line and "\\u202eevil" in line
    stored = run_rows(sqlite_url)[-1]["error"]
    assert "bad\\x1b]0;owned\\x07" in stored
    assert stored.isprintable() and len(stored) <= 2000


# -- case 5: log forging -------------------------------------------------------------------------

FORGED = "\n2026-01-01T00:00:00Z etl: ERROR: FORGED"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_newline_in_an_api_string_cannot_forge_a_log_line(
    tmp_path: Path, log_format: str
) -> None:
    model = make_model(1, uuid="0000" + FORGED, context_window="not a number")
    with Hostile(lambda request: response(page_body([model]))) as server:
        child = subprocess.run(
            [sys.executable, "-m", "etl", "--log-format", log_format, "--database-url",
             f"sqlite:///{tmp_path / 'c.db'}", "sync", "--api-url", server.url],
            env=child_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert child.returncode == 0, child.stderr
    lines = child.stderr.splitlines()
    assert not any(line.startswith("2026-01-01T00:00:00Z") for line in lines), child.stderr
    if log_format == "json":
        messages = [json.loads(line)["message"] for line in lines]
        assert any(FORGED in message for message in messages)
    else:
        assert any("0000\\n2026-01-01T00:00:00Z etl: ERROR: FORGED" in line for line in lines)


# -- case 7: memory ------------------------------------------------------------------------------


def four_million_keys() -> bytes:
    """A 48 MB page: one object of 4,000,000 distinct small keys."""
    keys = b",".join(b'"%x":0' % i for i in range(4_000_000))
    return b'{"models":[{"uuid":"u",' + keys + b"}]}"


def gzip_bomb() -> bytes:
    """200 MB of spaces, gzip-compressed to about 200 KB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * MIB
    return b"".join(packer.compress(chunk) for _ in range(200)) + packer.flush()


@pytest.mark.parametrize(
    ("make_body", "headers", "message"),
    [
        (four_million_keys, {}, "response holds more than 250,000 JSON values"),
        (gzip_bomb, {"Content-Encoding": "gzip"}, "response exceeds the cap of 52428800 bytes"),
    ],
    ids=["4-million-keys", "gzip-bomb"],
)
def test_a_huge_response_fails_in_bounded_memory(
    tmp_path: Path, make_body: Callable[[], bytes], headers: dict[str, str], message: str
) -> None:
    answer = response(make_body(), headers=headers)
    with Hostile(lambda request: answer) as server:
        code, stderr, peak_mib, seconds = run_measured(
            tmp_path, "--database-url", f"sqlite:///{tmp_path / 'c.db'}", "sync", "--api-url",
            server.url,
        )  # fmt: skip
    print(f"peak RSS {peak_mib:.0f} MiB, {seconds:.1f}s")
    assert code == 5, stderr
    assert message in stderr
    assert peak_mib < 300
