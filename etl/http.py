"""HTTP plumbing: the session, the retry policy, rate-limit hints and redaction.

Every request goes through :class:`Fetcher`. It retries only what is transient (connection
errors, timeouts, 429 and 500/502/503/504), honours ``Retry-After`` and ``ratelimit-reset`` on
429, and turns everything else into an :class:`~etl.errors.EtlError` with a message safe to show:
no token, no credentials in URLs, bodies truncated.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from etl import __version__
from etl.errors import ApiUnavailableError, AuthError, InvalidResponseError
from etl.pages import page_digest, parse_page
from etl.sanitize import visible

log = logging.getLogger("etl.http")

RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_BODY = 50 * 1024 * 1024
MAX_JSON_VALUES = 250_000
"""Most JSON values (counted as ``:`` and ``,`` bytes) a page may hold: a full page of 200
models holds about 24,000. Parsed, each small value costs a few hundred bytes, so this keeps
a hostile page of millions of tiny keys from taking gigabytes."""
_ALL_BUT_SEPARATORS = bytes(b for b in range(256) if b not in b":,")


def json_values(body: bytes) -> int:
    """How many JSON values ``body`` holds, counted as :data:`MAX_JSON_VALUES` counts them
    (one pass: the separators are all that is left once every other byte is deleted)."""
    return len(body.translate(None, _ALL_BUT_SEPARATORS))


MAX_REDIRECTS = 5
"""Redirects followed within one attempt (each to the same scheme, host and port)."""
ATTEMPT_TIMEOUT = 120.0
"""Seconds one attempt may take from connecting to the last byte of its body."""
_SECRET_PARAMS = re.compile(r"(token|key|secret|password|auth|signature)", re.IGNORECASE)
_CHUNK = 64 * 1024
"""Bytes read (and, since urllib3 2.6, inflated) at a time: a compressed bomb stops at the cap."""
_VISIBLE_ASCII = re.compile(r"[!-~]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ERROR_BODY_PARSED = 64 * 1024
"""Largest error body parsed as JSON for its message; a longer one is only quoted."""


def parse_url(url: str) -> urllib3.util.Url:
    """Parses ``url`` exactly as requests does when it connects, refusing any ambiguity.

    The host a URL is checked against must be the host we connect to, so a URL that
    ``urllib.parse`` reads with another scheme, host or port than urllib3 (requests' parser)
    does, e.g. ``http://evil.example\\@127.0.0.1``, is refused, as is one with spaces, control or
    non-ASCII characters.

    Raises:
        ValueError: The URL is unparsable or ambiguous; the message says why, without the URL.
    """
    if not _VISIBLE_ASCII.fullmatch(url):
        raise ValueError("it holds spaces, control or non-ASCII characters")
    try:
        other = urlsplit(url)
        other_port = other.port
    except ValueError as exc:  # "Port out of range", "Invalid IPv6 URL"
        raise ValueError("invalid port" if "Port" in str(exc) else "unparsable") from None
    try:
        parsed = urllib3.util.parse_url(url)
    except ValueError:
        raise ValueError("unparsable") from None
    host = parsed.host.strip("[]") if parsed.host else None
    ours = ((parsed.scheme or "").lower(), host, parsed.port, parsed.auth is not None)
    theirs = (other.scheme.lower(), other.hostname, other_port, "@" in other.netloc)
    if ours != theirs:
        raise ValueError("URL parsers disagree on its scheme, host or port")
    return parsed


def _origin(url: urllib3.util.Url) -> tuple[str, str, int | None]:
    scheme = url.scheme or ""
    return scheme, url.host or "", url.port or _DEFAULT_PORTS.get(scheme)


def without_query(url: str) -> str:
    """``url`` to show in a message: no query, fragment or user info, controls escaped.

    Works on any text, parsable or not: it is for locations a server sent.
    """
    head = re.split(r"[?#]", url, maxsplit=1)[0]
    return visible(re.sub(r"^([^/?#]*//)[^/?#]*@", r"\1***@", head))


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,31}")


def sleep(seconds: float) -> None:
    """How retries wait; a module-level hook so tests can make waiting instant."""
    time.sleep(seconds)


def redact_url(url: str) -> str:
    """Returns ``url`` without credentials: user info dropped, secret-looking parameters masked."""
    parts = urlsplit(url)
    # Keep the host as written (an IPv6 literal keeps its brackets); drop only the user info.
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = urlencode(
        [(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in parse_qsl(parts.query, True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_target(url: str) -> str:
    """An alert target's label, its scheme alone: ``slack://***``.

    Apprise URLs carry their secrets anywhere (host, path, user info, query), so nothing past
    the scheme is shown.
    """
    scheme = url.partition("://")[0].strip().lower() if "://" in url else ""
    return f"{scheme if _SCHEME.fullmatch(scheme) else '?'}://***"


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (the longest first) replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def url_secrets(url: str) -> set[str]:
    """Every piece of ``url`` past its scheme that could be a secret, as written and decoded:
    user, password, host, path segments and query values of three characters or more."""
    rest = url.partition("://")[2]
    pieces = {piece for piece in re.split(r"[/:@?&=#;,]+", rest) if len(piece) >= 3}
    return pieces | {unquote(piece) for piece in pieces}


def truncate(text: str, limit: int = 200) -> str:
    """Shortens ``text`` to one line of at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date).

    Returns:
        A positive number of seconds, or None when there is no usable hint (missing, zero or
        negative, unparsable).
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return seconds if seconds > 0 and math.isfinite(seconds) else None


def parse_ratelimit_reset(value: str | None, now: float) -> float | None:
    """Seconds until ``ratelimit-reset`` (a Unix time), or None when absent, bad or past."""
    try:
        seconds = float(value or "") - now
    except ValueError:
        return None
    return seconds if seconds > 0 and math.isfinite(seconds) else None


class TransientError(Exception):
    """A failure worth retrying; ``wait_hint`` is what the server asked us to wait, if anything."""

    def __init__(self, reason: str, wait_hint: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_hint = wait_hint


@dataclass(frozen=True)
class Fetched:
    """One successful response.

    Attributes:
        url: The URL asked for, redacted.
        status: The HTTP status.
        body: The raw body.
        payload: The body parsed as JSON.
        fetched_at: When the response arrived.
        model_hashes: One digest per element of ``payload["models"]`` (see :mod:`etl.pages`).
        digest: The body's :func:`etl.pages.page_digest`.
        parsed: False when the body was the one the caller said it knew (``payload`` is None
            until :meth:`Fetcher.parse`).
    """

    url: str
    status: int
    body: bytes
    payload: Any
    fetched_at: datetime
    model_hashes: list[str] | None = None
    digest: str = ""
    parsed: bool = True


class _Session(requests.Session):
    """A session that never follows a redirect itself, nor even parses where one points (a
    ``Location`` of ``http://[`` would raise from inside requests): :class:`Fetcher` decides,
    and follows only those to the same scheme, host and port, so the token stays there."""

    def resolve_redirects(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(())


def build_session(token: str) -> requests.Session:
    """A session that sends the bearer token and our User-Agent on every request."""
    session = _Session()
    session.headers.update(
        {
            "Authorization": f"Bearer {token}",
            "User-Agent": f"etl/{__version__}",
            "Accept": "application/json",
        }
    )
    return session


class Fetcher:
    """GETs JSON with retries, counting requests and retries for the run's record.

    Args:
        session: The session to send through (carries the token).
        max_retries: Retries after the first attempt.
        max_wait: Longest wait a rate limit may impose; a longer one fails at once.
        deadline: Seconds one request may spend across all its attempts.
        timeout: (connect, read) timeouts in seconds.
        max_body: Largest body accepted, in bytes (as inflated, after any Content-Encoding).
        attempt_timeout: Seconds one attempt may take, connecting and reading the whole body
            included (a server trickling bytes cannot hold it longer).
        run_timeout: Seconds the whole run may take from now (None: no limit); past it every
            request fails with exit 4, one in flight included.
        sleep: How to wait; defaults to :func:`sleep`, looked up at each wait.
        clock: Wall clock, for HTTP dates and ``ratelimit-reset``.
        monotonic: The clock deadlines are measured on.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        max_retries: int = 5,
        max_wait: float = 60.0,
        deadline: float = 300.0,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_body: int = DEFAULT_MAX_BODY,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        run_timeout: float | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.deadline = deadline
        self.timeout = timeout
        self.max_body = max_body
        self.sleep = sleep or (lambda seconds: globals()["sleep"](seconds))
        self.clock = clock
        self.monotonic = monotonic
        self.attempt_timeout = attempt_timeout
        self.run_timeout = run_timeout
        self.run_deadline = None if run_timeout is None else monotonic() + run_timeout
        self.requests = 0
        self.retries = 0

    def get_json(
        self,
        url: str,
        params: Mapping[str, Any] | list[tuple[str, Any]],
        known: str | None = None,
    ) -> Fetched:
        """GETs ``url`` with ``params`` and returns the parsed JSON, retrying transient failures.

        A body whose digest is ``known`` is returned unparsed (``parsed`` False): the caller
        knows what it holds, and parses it with :meth:`parse` only if it turns out to need it.

        Raises:
            AuthError: 401 or 403.
            ApiUnavailableError: Retries exhausted, a rate limit longer than ``max_wait``, a
                transport failure, or the run past its ``run_timeout``.
            InvalidResponseError: Another 4xx, a redirect elsewhere, a body that cannot be
                decoded, is not JSON, or is over the size or value caps.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.max_retries + 1) | stop_after_delay(self.deadline),
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=lambda state: self._log_retry(state, shown),
            reraise=True,
        )
        # The URL as requests sends it (it encodes a list of pairs the same way): preparing a
        # whole request just to show its URL cost a millisecond a page.
        query = urlencode(
            list(params.items()) if isinstance(params, Mapping) else params, doseq=True
        )
        shown = redact_url(f"{url}?{query}" if query else url)
        before = self.requests
        try:
            return retrying(self._attempt, url, params, shown, known)
        except TransientError as exc:
            attempts = self.requests - before
            raise ApiUnavailableError(
                f"GET {_short(shown)} failed after {attempts} "
                f"{'attempt' if attempts == 1 else 'attempts'}: {exc.reason}"
            ) from None

    def _run_left(self) -> float:
        """Seconds left before the run's deadline (infinite without one)."""
        if self.run_deadline is None:
            return math.inf
        return self.run_deadline - self.monotonic()

    def _run_timed_out(self, shown: str) -> ApiUnavailableError:
        return ApiUnavailableError(
            f"the run took longer than --run-timeout {self.run_timeout:g}s (during GET {shown}); "
            "nothing was written"
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.wait_hint is not None:
            wait = exc.wait_hint
        else:
            backoff = wait_exponential_jitter(initial=1, max=self.max_wait, jitter=1)
            wait = float(backoff(state))
        if wait >= self._run_left():  # waiting would outlive the run: fail now
            reason = exc.reason if isinstance(exc, TransientError) else repr(exc)
            raise ApiUnavailableError(
                f"{reason}; a retry in {wait:.1f}s would pass --run-timeout "
                f"{self.run_timeout:g}s; nothing was written"
            )
        return wait

    def _log_retry(self, state: RetryCallState, shown: str) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        reason = exc.reason if isinstance(exc, TransientError) else repr(exc)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "retrying after %s from %s: waiting %.1fs (attempt %d of %d)",
            reason,
            _short(shown),
            wait,
            state.attempt_number + 1,
            self.max_retries + 1,
        )

    def _attempt(
        self,
        url: str,
        params: Mapping[str, Any] | list[tuple[str, Any]],
        shown: str,
        known: str | None,
    ) -> Fetched:
        run_left = self._run_left()
        if run_left <= 0:
            raise self._run_timed_out(shown)
        self.requests += 1
        budget = min(self.attempt_timeout, run_left)
        deadline = self.monotonic() + budget
        began = time.monotonic()
        try:
            with _alarm(budget):
                status, body = self._exchange(url, params, shown, deadline)
        except _DeadlinePassed:
            log.debug("GET %s: no complete response after %.0f ms", shown, _ms(began))
            if budget >= self.attempt_timeout:
                raise TransientError(
                    f"no complete response within {self.attempt_timeout:g}s"
                ) from None
            raise self._run_timed_out(shown) from None
        except TransientError as exc:
            log.debug("GET %s: %s after %.0f ms", shown, exc.reason, _ms(began))
            raise
        log.debug("GET %s: HTTP %d, %d bytes, %.0f ms", shown, status, len(body), _ms(began))
        if status in (401, 403):
            raise AuthError(
                f"the API refused the token (HTTP {status}: {self._error_message(body)}); "
                "check DIGITALOCEAN_ACCESS_TOKEN or --token-file"
            )
        if status >= 500:
            raise ApiUnavailableError(f"GET {shown}: HTTP {status}: {self._error_message(body)}")
        if status != 200:
            raise InvalidResponseError(f"GET {shown}: HTTP {status}: {self._error_message(body)}")
        fetched = Fetched(shown, status, body, None, datetime.now(UTC), None,
                          page_digest(body), parsed=False)  # fmt: skip
        return fetched if fetched.digest == known else self.parse(fetched)

    def parse(self, fetched: Fetched) -> Fetched:
        """``fetched`` with its body parsed (and each model's bytes digested).

        Raises:
            InvalidResponseError: The body is not JSON, or holds too many values to parse.
        """
        if fetched.parsed:
            return fetched
        body, shown = fetched.body, fetched.url
        if len(body) > MAX_JSON_VALUES:  # a shorter body cannot hold that many separators
            values = json_values(body)
            if values > MAX_JSON_VALUES:
                raise InvalidResponseError(
                    f"GET {shown}: response holds more than {MAX_JSON_VALUES:,} JSON values "
                    f"({values:,} separators); refused unparsed"
                )
        try:
            payload, hashes = parse_page(body)
        except (ValueError, UnicodeDecodeError):
            start = truncate(self._unsecret(body.decode("utf-8", "replace")), 80)
            raise InvalidResponseError(f"GET {shown}: not JSON: {start!r}") from None
        except RecursionError:  # json.loads recurses once per level of nesting
            raise InvalidResponseError(f"GET {shown}: JSON nested too deeply to parse") from None
        return replace(fetched, payload=payload, model_hashes=hashes, parsed=True)

    def _exchange(
        self,
        url: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None,
        shown: str,
        deadline: float,
    ) -> tuple[int, bytes]:
        """One attempt: the request, any same-origin redirects, the whole body.

        Every exception requests, urllib3 or http.client raise ends here as a
        :class:`TransientError` (worth retrying) or an :class:`~etl.errors.EtlError`.
        """
        origin = _origin(parse_url(url))
        visited = {url}
        try:
            for _ in range(MAX_REDIRECTS + 1):
                read_timeout = max(0.001, min(self.timeout[1], deadline - self.monotonic()))
                with self.session.get(
                    url,
                    params=params,
                    timeout=(self.timeout[0], read_timeout),
                    stream=True,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status_code
                    if resp.is_redirect:
                        url, params = self._redirect(resp, origin, shown), None
                        if url in visited:
                            raise InvalidResponseError(
                                f"GET {shown}: a redirect loop (back to {without_query(url)})"
                            )
                        visited.add(url)
                        continue
                    if status in RETRIABLE_STATUSES:
                        raise TransientError(f"HTTP {status}", self._rate_limit_wait(resp, shown))
                    return status, self._read(resp, shown, deadline)
        except requests.exceptions.ContentDecodingError as exc:
            raise InvalidResponseError(
                f"GET {shown}: the body could not be decoded as its Content-Encoding says: "
                f"{_reason(exc)}"
            ) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            log.debug("GET %s: %s", shown, _reason(exc))
            raise TransientError("connection broken mid-body") from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientError(transport_cause(exc)) from None
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise ApiUnavailableError(
                f"GET {shown}: {type(exc).__name__}: {_reason(exc)}"
            ) from None
        raise InvalidResponseError(f"GET {shown}: more than {MAX_REDIRECTS} redirects")

    def _redirect(
        self, resp: requests.Response, origin: tuple[str, str, int | None], shown: str
    ) -> str:
        """Where a redirect points, if it stays on ``origin`` (same scheme, host and port).

        Raises:
            InvalidResponseError: It points anywhere else, or nowhere we can parse.
        """
        location = resp.headers["location"]
        try:
            target = urljoin(resp.url, location)
            parsed = parse_url(target)
        except ValueError:
            raise InvalidResponseError(
                f"GET {shown}: HTTP {resp.status_code} redirect to an unparsable location "
                f"{without_query(location)!r}"
            ) from None
        if _origin(parsed) != origin or parsed.auth is not None:
            raise InvalidResponseError(
                f"GET {shown}: HTTP {resp.status_code} redirect to {without_query(target)}; "
                "only redirects to the same scheme, host and port are followed"
            )
        return target

    def _unsecret(self, text: str) -> str:
        """``text`` with the bearer token masked, for a server that echoes it back."""
        header = str(self.session.headers.get("Authorization", ""))
        token = header.removeprefix("Bearer ").strip()
        return mask(text, [token])

    def _error_message(self, body: bytes) -> str:
        """A short, token-free summary of an error body."""
        return _error_message(body, self._unsecret)

    def _read(self, resp: requests.Response, shown: str, deadline: float) -> bytes:
        """The whole body, inflated, refused past ``max_body`` bytes or past ``deadline``."""
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise InvalidResponseError(
                f"GET {shown}: response of {int(declared)} bytes exceeds the cap of {self.max_body}"
            )
        body = bytearray()
        for chunk in resp.iter_content(_CHUNK):
            body += chunk
            if len(body) > self.max_body:
                raise InvalidResponseError(
                    f"GET {shown}: response exceeds the cap of {self.max_body} bytes"
                )
            if self.monotonic() > deadline:  # where no alarm can cut the read short
                raise _DeadlinePassed
        return bytes(body)

    def _rate_limit_wait(self, resp: requests.Response, shown: str) -> float | None:
        if resp.status_code != 429:
            return None
        now = self.clock()
        wait = parse_retry_after(resp.headers.get("Retry-After"), now)
        if wait is None:
            wait = parse_ratelimit_reset(resp.headers.get("ratelimit-reset"), now)
        if wait is not None and wait > self.max_wait:
            try:
                when = datetime.fromtimestamp(now + wait, UTC).isoformat(timespec="seconds")
            except (OverflowError, ValueError, OSError):  # a hint centuries ahead
                when = "a time too far ahead to show"
            raise ApiUnavailableError(
                f"rate limited by the API for {wait:.0f}s, longer than --max-wait "
                f"{self.max_wait:g}s; retry after {when}"
            )
        return wait


def _short(url: str) -> str:
    """A redacted URL for an error line: without its query, and the page it asked for."""
    parts = urlsplit(url)
    page = dict(parse_qsl(parts.query)).get("page")
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return f"{bare} (page {page})" if page else bare


def _ms(began: float) -> float:
    return (time.monotonic() - began) * 1000


def transport_cause(exc: BaseException) -> str:
    """Why a request got no response, in words: the host name did not resolve, the connection
    was refused or reset, TLS failed, or a timeout. (The caller names the URL, once.)"""
    chain = _causes(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timeout: no connection within the connect timeout"
    if isinstance(exc, requests.Timeout):
        return "timeout: no response within the read timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        detail = next((str(c) for c in chain if isinstance(c, ssl.SSLError)), "handshake failed")
        return f"TLS error: {truncate(detail, 120)}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-body"
    names = {type(c).__name__ for c in chain}
    if "NameResolutionError" in names or any(isinstance(c, socket.gaierror) for c in chain):
        return "connection error: the host name did not resolve (DNS)"
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return "connection error: connection refused (is anything listening on that port?)"
    if any(isinstance(c, ConnectionResetError) for c in chain):
        return "connection error: connection reset by the server"
    return f"connection error ({type(chain[-1]).__name__})"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, through requests' and urllib3's wrappers."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if any(item is s for s in seen) or len(seen) > 20:
            continue
        seen.append(item)
        linked = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo += [link for link in linked if isinstance(link, BaseException)]
    return seen


def _error_message(body: bytes, unsecret: Callable[[str], str]) -> str:
    if len(body) <= _ERROR_BODY_PARSED:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and "message" in data:
                return truncate(unsecret(f"{data.get('id', 'error')}: {data['message']}"))
        except (ValueError, RecursionError):
            pass
    text = body[:_ERROR_BODY_PARSED].decode("utf-8", "replace")
    return truncate(unsecret(text)) or "empty body"


def _reason(exc: BaseException) -> str:
    """The innermost reason requests and urllib3 wrap around a failure, on one short line."""
    while exc.args and isinstance(exc.args[-1], BaseException):
        exc = exc.args[-1]
    return truncate(str(exc) or type(exc).__name__, 120)


class _DeadlinePassed(BaseException):
    """An attempt's deadline: a BaseException, so no ``except Exception`` in requests or urllib3
    catches it on the way out of a blocked read."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raises :class:`_DeadlinePassed` in this thread after ``seconds``, wherever it is blocked
    (connecting, reading headers byte by byte, reading the body).

    SIGALRM reaches only the main thread; elsewhere the body loop's own deadline check is all.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _DeadlinePassed

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
