"""A real HTTP server on 127.0.0.1 that follows the spec of ``GET /v2/gen-ai/models``.

It ships in the package so that ``etl demo`` can run a real sync without a token; the tests
use it through ``tests/fakeapi.py``. The remote API is the one thing the tests cannot use for
real, so this fake follows the spec
(``shared/spec``) closely, with the gRPC gateway's habits, and lets tests inject the failures a
real network produces::

    with FakeApi(models=make_catalog(300), token="t0ken") as api:
        api.faults.append(Fault.rate_limited(retry_after="1"))
        requests.get(api.url + MODELS_PATH, headers={"Authorization": "Bearer t0ken"})

Paging follows the DigitalOcean conventions: ``page`` (default 1) and ``per_page`` (default 20,
clamped to 1..200), ``meta`` with ``total``, ``page`` and ``pages``, and ``links.pages`` holding
only the links that make sense (``first`` and ``previous``, as the GenAI API names it, past page
1; ``next`` and ``last`` before the last page). A listing that fits on one page has ``links: {}``.
An empty listing has ``meta.pages == 0``. ``page`` below 1 is served as page 1; a page past the
end has ``models: []``. ``public_only`` takes Go's boolean spellings; ``usecases`` may repeat and
takes any value of the ``apiModelUsecase`` enum (the parameter's own enum in the spec is an older,
shorter copy); anything else gets a 400 ``bad_request``.

Run as ``python -m etl.fakeapi --models N [--seed S] [--port P] [--token T]`` for benchmarks:
it prints its base URL as the first line on stdout and serves until killed. ``--catalog-file PATH``
serves the models of a JSON array instead (a catalog the caller generated or changed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlencode, urlsplit

from etl.fakecatalog import USECASES, is_public, make_catalog, usecases_for

MODELS_PATH = "/v2/gen-ai/models"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 200
RATE_LIMIT = 5000
DEFAULT_TOKEN = "t0ken"

FaultAction = Literal["respond", "reset", "reset_mid_body", "delay"]

_JSON = "application/json"
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})  # Go's strconv.ParseBool
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Unable to authenticate you."),
    403: ("forbidden", "You do not have access for the attempted action."),
    404: ("not_found", "The resource you requested could not be found."),
    405: ("method_not_allowed", "Only GET is supported on this resource."),
    429: ("too_many_requests", "API rate limit exceeded."),
    500: ("server_error", "Unexpected server-side error"),
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        path: The path, without the query string.
        query: The query parameters; repeated ones keep every value, in order.
        headers: The request headers, names in lower case.
        method: The HTTP method.
    """

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    method: str = "GET"

    @property
    def page(self) -> int | None:
        """The page asked for: 1 when ``page`` is absent or below 1, None when not an integer."""
        raw = self.query.get("page", ["1"])[0]
        try:
            return max(1, int(raw))
        except ValueError:
            return None


@dataclass
class Fault:
    """A failure served instead of the normal response, for retry and failure tests.

    Faults wait in :attr:`FakeApi.faults`; each request to the models path takes the first one
    whose ``page`` matches, before anything else (even authentication) is checked.

    Attributes:
        status: Status code for ``respond`` (and ``delay``, ``reset_mid_body``).
        headers: Headers added to, or replacing, the usual ones (``Content-Length`` excepted).
        body: Raw bytes, text, or a dict sent as JSON. None sends the spec's error body for
            the status when it is 400 or more, and the normal page otherwise (so a fault with
            only ``headers`` decorates a normal response).
        page: Only requests for this page match; None matches any page.
        action: ``respond`` sends status, headers and body; ``reset`` closes the connection
            (with a TCP reset) without any response, which requests raises as
            ``ConnectionError``; ``reset_mid_body`` sends the headers with the full
            ``Content-Length``, then half of the body, then closes, which requests raises as
            ``ChunkedEncodingError``; ``delay`` waits ``delay`` seconds, then responds as
            ``respond`` does (a normal page by default), for read timeouts.
        delay: Seconds to wait for ``delay``.
        times: How many requests this fault serves before it leaves the queue.
        served: How many requests it has served so far.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | None = None
    page: int | None = None
    action: FaultAction = "respond"
    delay: float = 0.0
    times: int = 1
    served: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.action not in get_args(FaultAction):
            raise ValueError(f"unknown fault action {self.action!r}")
        if self.times < 1:
            raise ValueError("a fault must serve at least one request (times >= 1)")
        if self.delay < 0:
            raise ValueError("delay cannot be negative")

    @classmethod
    def rate_limited(
        cls,
        retry_after: str | None = "1",
        reset: int | None = None,
        *,
        page: int | None = None,
        times: int = 1,
    ) -> Fault:
        """A 429 with ``ratelimit-remaining: 0`` and the spec's ``too_many_requests`` body.

        Args:
            retry_after: ``Retry-After`` value (seconds or an HTTP date); None leaves it out,
                as the API does when the hourly limit (not the burst limit) is hit.
            reset: ``ratelimit-reset`` Unix time to send; None keeps the server's usual one.
            page: Only match requests for this page.
            times: How many requests get the 429.

        Returns:
            The fault.
        """
        headers = {"ratelimit-remaining": "0"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if reset is not None:
            headers["ratelimit-reset"] = str(reset)
        return cls(status=429, headers=headers, page=page, times=times)

    @classmethod
    def server_error(cls, status: int = 503, *, page: int | None = None, times: int = 1) -> Fault:
        """A 5xx with the spec's ``server_error`` body.

        Args:
            status: The status code.
            page: Only match requests for this page.
            times: How many requests get the error.

        Returns:
            The fault.
        """
        return cls(status=status, page=page, times=times)


Transform = Callable[[RecordedRequest, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Catalog:
    """The models as served: each pre-serialised once, with its filter attributes."""

    source: list[dict[str, Any]]
    length: int
    blobs: list[bytes]
    public: list[bool]
    usecases: list[frozenset[str]]
    selections: dict[tuple[bool, frozenset[str]], list[int]] = field(default_factory=dict)

    def select(self, public_only: bool, usecases: frozenset[str]) -> list[int] | None:
        """Indexes of the models a filter keeps, or None when it keeps them all."""
        if not public_only and not usecases:
            return None
        key = (public_only, usecases)
        selected = self.selections.get(key)
        if selected is None:
            selected = [
                index
                for index in range(self.length)
                if (self.public[index] or not public_only)
                and (not usecases or not usecases.isdisjoint(self.usecases[index]))
            ]
            self.selections[key] = selected
        return selected


class FakeApi:
    """The GenAI list-models endpoint, served from a background thread on 127.0.0.1.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Attributes tests may
    change at any time, even while requests are in flight:

    Attributes:
        models: The catalog. Assigning a new list publishes it atomically; a list changed in
            place is re-read only when its length changes, so reassign it after editing models.
        token: The only accepted bearer token; None accepts any request.
        public: Uuids of the public models; None uses :func:`etl.fakecatalog.is_public`.
        usecases: Usecases of each uuid; None uses :func:`etl.fakecatalog.usecases_for`.
        faults: Queue of :class:`Fault` to serve instead of normal responses.
        requests: Every request received, faulted ones included, in arrival order.
        transform: Called with the request and the normal JSON body of a page; its result is
            sent instead, to break ``meta``, ``links`` or ``models`` on purpose.
        ignore_per_page: Serve the default 20 a page whatever ``per_page`` says.
    """

    def __init__(
        self,
        models: list[dict[str, Any]] | None = None,
        *,
        token: str | None = DEFAULT_TOKEN,
        public: set[str] | None = None,
        usecases: dict[str, list[str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Prepare the server; nothing listens until :meth:`start`.

        Args:
            models: The catalog; None for an empty one.
            token: The only accepted bearer token; None disables authentication.
            public: Uuids of the public models; None uses the catalog's own rule.
            usecases: Usecases of each uuid; None uses the catalog's own rule.
            host: Address to listen on.
            port: Port to listen on; 0 picks a free one.
        """
        self.token = token
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.transform: Transform | None = None
        self.ignore_per_page = False
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._public = public
        self._usecases = usecases
        self._models: list[dict[str, Any]] = []
        self._catalog = _Catalog([], 0, [], [], [])
        self.models = [] if models is None else models
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._stopping = threading.Event()
        self._remaining = RATE_LIMIT
        self._reset_at = 0

    # -- configuration -------------------------------------------------------------------------

    @property
    def models(self) -> list[dict[str, Any]]:
        """The catalog being served."""
        return self._models

    @models.setter
    def models(self, models: list[dict[str, Any]]) -> None:
        self._models = models
        self._catalog = self._build(models)

    @property
    def public(self) -> set[str] | None:
        """Uuids of the public models; None uses :func:`etl.fakecatalog.is_public`."""
        return self._public

    @public.setter
    def public(self, public: set[str] | None) -> None:
        self._public = public
        self._catalog = self._build(self._models, reuse=self._catalog)

    @property
    def usecases(self) -> dict[str, list[str]] | None:
        """Usecases of each uuid; None uses :func:`etl.fakecatalog.usecases_for`."""
        return self._usecases

    @usecases.setter
    def usecases(self, usecases: dict[str, list[str]] | None) -> None:
        self._usecases = usecases
        self._catalog = self._build(self._models, reuse=self._catalog)

    @property
    def url(self) -> str:
        """Base URL of the running server, without a path, e.g. ``http://127.0.0.1:54321``."""
        if self._url is None:
            raise RuntimeError("FakeApi has not been started")
        return self._url

    def reset_log(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self.requests.clear()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeApi:
        """Start listening and serving in a daemon thread.

        Returns:
            The server itself.
        """
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), self)
        self._reset_at = int(time.time()) + 3600
        self._url = f"http://{self._host}:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeApi {self._url}",
            daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and wait for every server thread to end."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a "delay" fault
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request handling (called from the server's threads) ------------------------------------

    def _build(self, models: list[dict[str, Any]], reuse: _Catalog | None = None) -> _Catalog:
        if reuse is not None and reuse.source is models and reuse.length == len(models):
            blobs = reuse.blobs
        else:
            blobs = [
                json.dumps(model, ensure_ascii=False, separators=(",", ":")).encode()
                for model in models
            ]
        public = self._public
        usecases = self._usecases
        return _Catalog(
            source=models,
            length=len(models),
            blobs=blobs,
            public=[
                is_public(model) if public is None else model.get("uuid") in public
                for model in models
            ],
            usecases=[
                frozenset(
                    usecases_for(model)
                    if usecases is None
                    else usecases.get(str(model.get("uuid")), ())
                )
                for model in models
            ],
        )

    def _current_catalog(self) -> _Catalog:
        catalog = self._catalog
        if catalog.source is not self._models or catalog.length != len(self._models):
            with self._lock:
                catalog = self._catalog = self._build(self._models)
        return catalog

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self.faults):
                if fault.page is None or fault.page == request.page:
                    fault.served += 1
                    if fault.served >= fault.times:
                        del self.faults[index]
                    return fault
        return None

    def _usual_headers(self) -> dict[str, str]:
        with self._lock:
            self._remaining = max(0, self._remaining - 1)
            remaining = self._remaining
        return {
            "Content-Type": _JSON,
            "ratelimit-limit": str(RATE_LIMIT),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(self._reset_at),
            "x-request-id": str(uuid.uuid4()),
        }

    def _respond(self, request: RecordedRequest, fault: Fault | None = None) -> _Response:
        """The response to send: the normal one, or the one ``fault`` asks for."""
        headers = self._usual_headers()
        if fault is not None and (fault.body is not None or fault.status >= 400):
            status, body = fault.status, _fault_body(fault)
        else:
            normal = self._handle(request)
            status, body = normal.status, normal.body
            headers.update(normal.headers)
            if fault is not None and status == HTTPStatus.OK:
                status = fault.status
        if fault is not None:
            _merge_headers(headers, fault.headers)
        return _Response(status, headers, body)

    def _handle(self, request: RecordedRequest) -> _Response:
        """The normal response to ``request``, following the spec."""
        if request.method != "GET":
            return _error(405, headers={"Allow": "GET"})
        if self.token is not None and not _authorized(request, self.token):
            return _error(401)
        if request.path != MODELS_PATH:
            return _error(404)
        try:
            page = max(1, _int_param(request, "page", 1))
            per_page = min(MAX_PER_PAGE, max(1, _int_param(request, "per_page", DEFAULT_PER_PAGE)))
            public_only = _bool_param(request, "public_only")
            usecases = frozenset(request.query.get("usecases", ()))
        except ValueError as exc:
            return _error(400, str(exc))
        unknown = sorted(usecases.difference(USECASES))
        if unknown:
            return _error(400, f"invalid value for usecases: {', '.join(unknown)}")
        if self.ignore_per_page:
            per_page = DEFAULT_PER_PAGE

        catalog = self._current_catalog()
        selected = catalog.select(public_only, usecases)
        total = catalog.length if selected is None else len(selected)
        pages = -(-total // per_page)
        start = (page - 1) * per_page
        if selected is None:
            blobs = catalog.blobs[start : start + per_page]
        else:
            blobs = [catalog.blobs[index] for index in selected[start : start + per_page]]
        links = self._links(request, page, pages, per_page)
        meta = {"total": total, "page": page, "pages": pages}
        body = b"".join(
            (
                b'{"links":',
                _dumps(links),
                b',"meta":',
                _dumps(meta),
                b',"models":[',
                b",".join(blobs),
                b"]}",
            )
        )
        transform = self.transform
        if transform is not None:
            body = _dumps(transform(request, json.loads(body)))
        return _Response(HTTPStatus.OK, {}, body)

    def _links(self, request: RecordedRequest, page: int, pages: int, per_page: int) -> Any:
        found: dict[str, str] = {}
        if page > 1:
            found["first"] = self._page_url(request, 1, per_page)
            found["previous"] = self._page_url(request, page - 1, per_page)
        if page < pages:
            found["next"] = self._page_url(request, page + 1, per_page)
            found["last"] = self._page_url(request, pages, per_page)
        return {"pages": found} if found else {}

    def _page_url(self, request: RecordedRequest, page: int, per_page: int) -> str:
        params = [("page", str(page)), ("per_page", str(per_page))]
        params += [
            (name, value)
            for name, values in request.query.items()
            if name not in ("page", "per_page")
            for value in values
        ]
        return f"{self.url}{MODELS_PATH}?{urlencode(params)}"


class _Handler(BaseHTTPRequestHandler):
    """Turns each HTTP request into a call to :class:`FakeApi`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    server_version = "FakeGenAI/1.0"
    disable_nagle_algorithm = True  # no 40 ms stalls between the headers and body writes
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet: :attr:`FakeApi.requests` is the log."""

    def _dispatch(self) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        request = RecordedRequest(
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            method=self.command,
        )
        api._record(request)
        self._discard_body()
        fault = api._take_fault(request) if request.path == MODELS_PATH else None
        if fault is None:
            self._send(api._respond(request))
            return
        if fault.action == "reset":
            self._abort()
            return
        if fault.action == "delay" and api._stopping.wait(fault.delay):
            self._abort()  # the server is stopping: don't keep its thread
            return
        self._send(api._respond(request, fault), truncate=fault.action == "reset_mid_body")

    # Every method reaches the fake, which answers 405 to all but GET, as the API does.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _discard_body(self) -> None:
        """Read a request body so the next request on the connection parses."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _send(self, response: _Response, *, truncate: bool = False) -> None:
        no_body = response.status in (204, 304) or response.status < 200
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if not no_body:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if no_body or self.command == "HEAD":
            return
        if truncate:
            self.wfile.write(response.body[: len(response.body) // 2])
            self.close_connection = True
            return
        self.wfile.write(response.body)

    def _abort(self) -> None:
        """Close the connection with a TCP reset and no response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.mark_aborted(self.connection)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can drop its open connections and join its threads."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], api: FakeApi) -> None:
        self.api = api
        self._guard = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._aborted: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with getfqdn(), slow without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(
            target=self._work, args=(request, client_address), daemon=True, name="FakeApi worker"
        )
        with self._guard:
            self._connections.add(request)
            self._workers.add(worker)
        worker.start()

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._guard:
                self._connections.discard(request)
                self._workers.discard(threading.current_thread())

    def mark_aborted(self, connection: socket.socket) -> None:
        with self._guard:
            self._aborted.add(connection)

    def shutdown_request(self, request: Any) -> None:
        with self._guard:
            aborted = request in self._aborted
            self._aborted.discard(request)
        if aborted:
            self.close_request(request)  # no FIN first: SO_LINGER 0 turns the close into a RST
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away, or stop() closed the socket: nothing to report
        super().handle_error(request, client_address)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut every open connection down and wait for the handler threads to end."""
        with self._guard:
            connections = list(self._connections)
            workers = list(self._workers)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _merge_headers(headers: dict[str, str], extra: dict[str, str]) -> None:
    """Add ``extra`` to ``headers``, replacing same-named ones whatever their case."""
    for name, value in extra.items():
        if name.lower() == "content-length":
            continue  # always computed from the body sent
        for existing in [key for key in headers if key.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value


def _error_id(status: int) -> tuple[str, str]:
    if status in _ERRORS:
        return _ERRORS[status]
    if status >= 500:
        return _ERRORS[500]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "example_error", "some error message"
    return phrase.lower().replace(" ", "_").replace("-", "_"), phrase + "."


def _error(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> _Response:
    error_id, default = _error_id(status)
    body = _dumps({"id": error_id, "message": message or default})
    return _Response(status, headers or {}, body)


def _fault_body(fault: Fault) -> bytes:
    if fault.body is None:
        return _error(fault.status).body
    if isinstance(fault.body, bytes):
        return fault.body
    if isinstance(fault.body, str):
        return fault.body.encode()
    return _dumps(fault.body)


def _authorized(request: RecordedRequest, token: str) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and credentials == token


def _int_param(request: RecordedRequest, name: str, default: int) -> int:
    values = request.query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise ValueError(f"invalid value for {name}: {values[0]!r} is not an integer") from None


def _bool_param(request: RecordedRequest, name: str) -> bool:
    values = request.query.get(name)
    if not values or values[0] in _FALSE:
        return False
    if values[0] in _TRUE:
        return True
    raise ValueError(f"invalid value for {name}: {values[0]!r} is not a boolean")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a generated catalog until killed; the first stdout line is the base URL.

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m etl.fakeapi", description="Serve a fake GenAI list-models API."
    )
    parser.add_argument("--models", type=int, help="catalog size (with --catalog-file: at most)")
    parser.add_argument("--seed", type=int, default=0, help="catalog seed (default 0)")
    parser.add_argument(
        "--catalog-file", metavar="PATH", help="serve the models of this JSON array instead"
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help=f"token (default {DEFAULT_TOKEN})")
    args = parser.parse_args(argv)
    if args.catalog_file is not None:
        with open(args.catalog_file, encoding="utf-8") as handle:
            models = json.load(handle)
        if not isinstance(models, list):
            parser.error(f"--catalog-file {args.catalog_file}: not a JSON array of models")
        models = models if args.models is None else models[: args.models]
    elif args.models is None:
        parser.error("one of --models or --catalog-file is required")
    else:
        models = make_catalog(args.models, seed=args.seed)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    api = FakeApi(models, token=args.token, port=args.port)
    with api:
        print(api.url, flush=True)
        print(f"serving {len(models)} models at {api.url}{MODELS_PATH}", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
