"""HTTP plumbing: the session, the retry policy, rate-limit hints and redaction.

Every request goes through :class:`Fetcher`. It retries only what is transient (connection
errors, timeouts, 429 and 500/502/503/504), honours ``Retry-After`` and ``ratelimit-reset`` on
429, and turns everything else into an :class:`~etl.errors.EtlError` with a message safe to show:
no token, no credentials in URLs, bodies truncated.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import requests
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
from etl.pages import parse_page

log = logging.getLogger("etl.http")

RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_BODY = 50 * 1024 * 1024
_SECRET_PARAMS = re.compile(r"(token|key|secret|password|auth|signature)", re.IGNORECASE)
_CHUNK = 1024 * 1024
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
    """

    url: str
    status: int
    body: bytes
    payload: Any
    fetched_at: datetime
    model_hashes: list[str] | None = None


def build_session(token: str) -> requests.Session:
    """A session that sends the bearer token and our User-Agent on every request."""
    session = requests.Session()
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
        max_body: Largest body accepted, in bytes.
        sleep: How to wait; defaults to :func:`sleep`, looked up at each wait.
        clock: Wall clock, for HTTP dates and ``ratelimit-reset``.
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
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.deadline = deadline
        self.timeout = timeout
        self.max_body = max_body
        self.sleep = sleep or (lambda seconds: globals()["sleep"](seconds))
        self.clock = clock
        self.requests = 0
        self.retries = 0

    def get_json(self, url: str, params: Mapping[str, Any] | list[tuple[str, Any]]) -> Fetched:
        """GETs ``url`` with ``params`` and returns the parsed JSON, retrying transient failures.

        Raises:
            AuthError: 401 or 403.
            ApiUnavailableError: Retries exhausted, or a rate limit longer than ``max_wait``.
            InvalidResponseError: Another 4xx, a body that is not JSON, or one over the size cap.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.max_retries + 1) | stop_after_delay(self.deadline),
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=self._log_retry,
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
            return retrying(self._attempt, url, params, shown)
        except TransientError as exc:
            raise ApiUnavailableError(
                f"GET {shown} failed after {self.requests - before} attempts: {exc.reason}"
            ) from None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.wait_hint is not None:
            return exc.wait_hint
        backoff = wait_exponential_jitter(initial=1, max=self.max_wait, jitter=1)
        return float(backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        reason = exc.reason if isinstance(exc, TransientError) else repr(exc)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "retrying after %s: waiting %.1fs (attempt %d of %d)",
            reason,
            wait,
            state.attempt_number + 1,
            self.max_retries + 1,
        )

    def _attempt(
        self, url: str, params: Mapping[str, Any] | list[tuple[str, Any]], shown: str
    ) -> Fetched:
        self.requests += 1
        try:
            with self.session.get(url, params=params, timeout=self.timeout, stream=True) as resp:
                status = resp.status_code
                if status in RETRIABLE_STATUSES:
                    raise TransientError(
                        f"HTTP {status} from {shown}", self._rate_limit_wait(resp, shown)
                    )
                body = self._read(resp, shown)
        except requests.Timeout as exc:
            raise TransientError(f"timeout on {shown} ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            raise TransientError(f"connection error on {shown} ({type(exc).__name__})") from None
        except requests.exceptions.ChunkedEncodingError:
            raise TransientError(f"connection broken mid-body on {shown}") from None
        if status in (401, 403):
            raise AuthError(
                f"the API refused the token (HTTP {status}: {self._error_message(body)}); "
                "check DIGITALOCEAN_ACCESS_TOKEN or --token-file"
            )
        if status >= 500:
            raise ApiUnavailableError(f"GET {shown}: HTTP {status}: {self._error_message(body)}")
        if status != 200:
            raise InvalidResponseError(f"GET {shown}: HTTP {status}: {self._error_message(body)}")
        try:
            payload, hashes = parse_page(body)
        except (ValueError, UnicodeDecodeError):
            start = truncate(self._unsecret(body.decode("utf-8", "replace")), 80)
            raise InvalidResponseError(f"GET {shown}: not JSON: {start!r}") from None
        except RecursionError:  # json.loads recurses once per level of nesting
            raise InvalidResponseError(f"GET {shown}: JSON nested too deeply to parse") from None
        return Fetched(shown, status, body, payload, datetime.now(UTC), hashes)

    def _unsecret(self, text: str) -> str:
        """``text`` with the bearer token masked, for a server that echoes it back."""
        header = str(self.session.headers.get("Authorization", ""))
        token = header.removeprefix("Bearer ").strip()
        return mask(text, [token])

    def _error_message(self, body: bytes) -> str:
        """A short, token-free summary of an error body."""
        return _error_message(body, self._unsecret)

    def _read(self, resp: requests.Response, shown: str) -> bytes:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise InvalidResponseError(
                f"GET {shown}: response of {int(declared)} bytes exceeds the cap of {self.max_body}"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_content(_CHUNK):
            size += len(chunk)
            if size > self.max_body:
                raise InvalidResponseError(
                    f"GET {shown}: response exceeds the cap of {self.max_body} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

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


def _error_message(body: bytes, unsecret: Callable[[str], str]) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "message" in data:
            return truncate(unsecret(f"{data.get('id', 'error')}: {data['message']}"))
    except ValueError:
        pass
    return truncate(unsecret(body.decode("utf-8", "replace"))) or "empty body"
