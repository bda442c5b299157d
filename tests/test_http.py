"""etl.http: what is retried and how long it waits, what is not, and what a message may show."""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from etl import __version__
from etl.config import MODELS_PATH
from etl.errors import ApiUnavailableError, AuthError, EtlError, InvalidResponseError
from etl.http import (
    Fetcher,
    build_session,
    parse_ratelimit_reset,
    parse_retry_after,
    parse_url,
    redact_url,
    without_query,
)
from tests.catalog import make_catalog
from tests.conftest import TOKEN
from tests.fakeapi import FakeApi, Fault

NOW = 1_750_000_000.0
"""The wall clock the fetchers in this module see, so HTTP dates give exact waits."""


@pytest.fixture
def server() -> Iterator[FakeApi]:
    with FakeApi(models=make_catalog(5), token=TOKEN) as api:
        yield api


@pytest.fixture
def retry_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Captures etl's log even after a CLI test has pointed it at its own stderr handler."""
    logger = logging.getLogger("etl")
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "handlers", [])
    caplog.set_level(logging.INFO, logger="etl")
    return caplog


def make_fetcher(waits: list[float], **kwargs: Any) -> Fetcher:
    """A fetcher that records each wait in ``waits`` instead of sleeping."""
    kwargs.setdefault("clock", lambda: NOW)
    return Fetcher(build_session(TOKEN), sleep=waits.append, **kwargs)


def get_page(fetcher: Fetcher, api: FakeApi, page: int = 1) -> Any:
    return fetcher.get_json(api.url + MODELS_PATH, [("page", page), ("per_page", 200)])


def http_date(timestamp: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(timestamp, UTC), usegmt=True)


# -- what every request carries -------------------------------------------------------------


def test_every_request_sends_the_bearer_token_and_user_agent(server: FakeApi) -> None:
    fetched = get_page(make_fetcher([]), server)
    assert len(fetched.payload["models"]) == 5
    (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"] == f"etl/{__version__}"


# -- what is retried ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault(action="reset"), "connection error"),
        (Fault(action="reset_mid_body"), "connection broken mid-body"),
        (Fault.server_error(500), "HTTP 500"),
        (Fault.server_error(502), "HTTP 502"),
        (Fault.server_error(503), "HTTP 503"),
        (Fault.server_error(504), "HTTP 504"),
        (Fault.rate_limited(retry_after="4"), "HTTP 429"),
    ],
    ids=["reset", "reset_mid_body", "500", "502", "503", "504", "429"],
)
def test_transient_failure_is_retried_and_logged_with_reason_and_wait(
    server: FakeApi, retry_log: pytest.LogCaptureFixture, fault: Fault, reason: str
) -> None:
    server.faults.append(fault)
    waits: list[float] = []
    fetcher = make_fetcher(waits)
    fetched = get_page(fetcher, server)
    assert len(fetched.payload["models"]) == 5
    assert [r.page for r in server.requests] == [1, 1]
    assert (fetcher.requests, fetcher.retries, len(waits)) == (2, 1, 1)
    (message,) = [r.getMessage() for r in retry_log.records if "retrying" in r.getMessage()]
    assert f"retrying after {reason}" in message
    assert f"waiting {waits[0]:.1f}s" in message


def test_read_timeout_is_retried(server: FakeApi, retry_log: pytest.LogCaptureFixture) -> None:
    server.faults.append(Fault(action="delay", delay=3.0))
    waits: list[float] = []
    fetched = get_page(make_fetcher(waits, timeout=(1, 0.2)), server)
    assert len(fetched.payload["models"]) == 5
    assert len(server.requests) == 2 and len(waits) == 1
    assert "retrying after timeout" in retry_log.text


def test_attempts_are_bounded_by_max_retries_and_counted_per_request(server: FakeApi) -> None:
    waits: list[float] = []
    fetcher = make_fetcher(waits, max_retries=2)
    get_page(fetcher, server)  # an earlier page's request must not count toward this one
    server.faults.append(Fault.server_error(503, page=2, times=10))
    with pytest.raises(ApiUnavailableError) as caught:
        get_page(fetcher, server, page=2)
    assert caught.value.exit_code == 4
    assert "failed after 3 attempts: HTTP 503" in str(caught.value)
    assert [r.page for r in server.requests] == [1, 2, 2, 2]
    assert len(waits) == 2


def test_no_retries_means_one_attempt(server: FakeApi) -> None:
    server.faults.append(Fault(action="reset", times=5))
    waits: list[float] = []
    with pytest.raises(
        ApiUnavailableError,
        match="failed after 1 attempt: connection error: connection reset by the server",
    ):
        get_page(make_fetcher(waits, max_retries=0), server)
    assert len(server.requests) == 1 and waits == []


# -- what is never retried ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "exit_code", "message"),
    [
        (400, InvalidResponseError, 5, "HTTP 400: bad_request"),
        (401, AuthError, 3, "the API refused the token (HTTP 401"),
        (403, AuthError, 3, "the API refused the token (HTTP 403"),
        (404, InvalidResponseError, 5, "HTTP 404: not_found"),
    ],
)
def test_client_error_is_never_retried(
    server: FakeApi, status: int, error: type[EtlError], exit_code: int, message: str
) -> None:
    server.faults.append(Fault(status=status, times=10))
    waits: list[float] = []
    with pytest.raises(error) as caught:
        get_page(make_fetcher(waits), server)
    assert caught.value.exit_code == exit_code
    assert message in str(caught.value)
    assert len(server.requests) == 1 and waits == []


def test_refused_token_is_not_retried_and_not_shown(server: FakeApi) -> None:
    server.token = "another-token"
    with pytest.raises(AuthError) as caught:
        get_page(make_fetcher([]), server)
    assert "DIGITALOCEAN_ACCESS_TOKEN" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(server.requests) == 1


# -- how long a rate limit makes us wait -------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [("7", 7.0), (http_date(NOW + 30), 30.0)],
    ids=["seconds", "http-date"],
)
def test_429_waits_what_retry_after_says(server: FakeApi, retry_after: str, wait: float) -> None:
    server.faults.append(Fault.rate_limited(retry_after=retry_after, reset=int(NOW) + 50))
    waits: list[float] = []
    get_page(make_fetcher(waits), server)
    assert waits == [wait]


@pytest.mark.parametrize("retry_after", ["0", "-5", "soon", http_date(NOW - 60), "inf", None])
def test_429_without_a_usable_retry_after_waits_until_ratelimit_reset(
    server: FakeApi, retry_after: str | None
) -> None:
    server.faults.append(Fault.rate_limited(retry_after=retry_after, reset=int(NOW) + 12))
    waits: list[float] = []
    get_page(make_fetcher(waits), server)
    assert waits == [12.0]
    assert len(server.requests) == 2


def test_429_without_any_hint_backs_off_within_the_cap(server: FakeApi) -> None:
    server.faults.append(Fault.rate_limited(retry_after=None, reset=int(NOW) - 5, times=3))
    waits: list[float] = []
    get_page(make_fetcher(waits, max_wait=2.5), server)
    assert len(waits) == 3
    assert all(0 < wait <= 2.5 for wait in waits)


@pytest.mark.parametrize(
    ("retry_after", "reset", "wait_shown", "when"),
    [
        ("120", None, "120s", datetime.fromtimestamp(NOW + 120, UTC)),
        (None, int(NOW) + 3600, "3600s", datetime.fromtimestamp(NOW + 3600, UTC)),
    ],
    ids=["retry-after", "ratelimit-reset"],
)
def test_rate_limit_longer_than_max_wait_fails_at_once_saying_when_to_retry(
    server: FakeApi, retry_after: str | None, reset: int | None, wait_shown: str, when: datetime
) -> None:
    server.faults.append(Fault.rate_limited(retry_after=retry_after, reset=reset))
    waits: list[float] = []
    with pytest.raises(ApiUnavailableError) as caught:
        get_page(make_fetcher(waits, max_wait=60), server)
    assert caught.value.exit_code == 4
    assert str(caught.value) == (
        f"rate limited by the API for {wait_shown}, longer than --max-wait 60s; "
        f"retry after {when.isoformat(timespec='seconds')}"
    )
    assert len(server.requests) == 1 and waits == []


def test_absurd_retry_after_fails_cleanly(server: FakeApi) -> None:
    server.faults.append(Fault.rate_limited(retry_after="99999999999999"))
    with pytest.raises(ApiUnavailableError, match="longer than --max-wait 60s; retry after"):
        get_page(make_fetcher([]), server)


# -- messages never show secrets ---------------------------------------------------------------


def test_failure_message_redacts_the_url(server: FakeApi) -> None:
    server.faults.append(Fault.server_error(503, times=10))
    url = server.url.replace("http://", "http://user:hunter2@") + MODELS_PATH
    with pytest.raises(ApiUnavailableError) as caught:
        make_fetcher([], max_retries=1).get_json(url, [("page", 1), ("api_key", "s3cr3t")])
    message = str(caught.value)
    assert "hunter2" not in message and "s3cr3t" not in message
    assert "api_key" not in message and "(page 1)" in message  # the URL without its query


# -- header parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        (http_date(NOW + 30), 30.0),
        ("Sun, 15 Jun 2025 15:07:10 GMT", 30.0),  # NOW + 30 with its weekday spelt out
        (None, None),
        ("", None),
        ("0", None),
        ("-3", None),
        (http_date(NOW - 1), None),
        ("soon", None),
        ("Mon, 99 Foo 2025 25:61:00 GMT", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (str(int(NOW) + 10), 10.0),
        (str(int(NOW)), None),
        (str(int(NOW) - 10), None),
        ("0", None),
        (None, None),
        ("", None),
        ("tomorrow", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_ratelimit_reset(value: str | None, expected: float | None) -> None:
    assert parse_ratelimit_reset(value, NOW) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://api.digitalocean.com/v2/gen-ai/models?page=2&per_page=200",
            "https://api.digitalocean.com/v2/gen-ai/models?page=2&per_page=200",
        ),
        ("https://user:pa55@api.example.com:8443/v2", "https://***@api.example.com:8443/v2"),
        ("https://dop_v1_abc@api.example.com/v2", "https://***@api.example.com/v2"),
        (
            "https://h/v2?page=1&token=t0k&api_key=k&access_token=a&password=p&X-Amz-Signature=s",
            "https://h/v2?page=1&token=***&api_key=***&access_token=***&password=***"
            "&X-Amz-Signature=***",
        ),
        ("http://u:p@[::1]:8080/v2?page=1", "http://***@[::1]:8080/v2?page=1"),
    ],
    ids=["clean", "user-password", "user-only", "secret-params", "ipv6"],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# -- one URL parser --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://api.digitalocean.com", "api.digitalocean.com", None),
        ("HTTP://LocalHost:8080/v2", "localhost", 8080),
        ("http://[::1]:80", "[::1]", 80),
    ],
)
def test_parse_url_reads_what_requests_connects_to(url: str, host: str, port: int | None) -> None:
    parsed = parse_url(url)
    assert (parsed.host, parsed.port) == (host, port)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://evil.example:80\\@127.0.0.1:80", "URL parsers disagree"),
        ("http://127.0.0.1\t:80", "spaces, control or non-ASCII"),
        (" http://127.0.0.1", "spaces, control or non-ASCII"),
        ("http://bücher.example", "spaces, control or non-ASCII"),
        ("http://[", "unparsable"),
        ("http://127.0.0.1:99999", "invalid port"),
    ],
)
def test_parse_url_refuses_what_parsers_could_read_differently(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_url(url)


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("https://h/x?token=t#f", "https://h/x"),
        ("http://u:p@h/x", "http://***@h/x"),
        ("http://[", "http://["),
        ("/p\x1b]0;t\x07", "/p\\x1b]0;t\\x07"),
    ],
)
def test_without_query(location: str, shown: str) -> None:
    assert without_query(location) == shown


# -- the run's deadline ----------------------------------------------------------------------


def test_a_retry_that_would_outlive_the_run_fails_at_once(server: FakeApi) -> None:
    server.faults.append(Fault.rate_limited(retry_after="20", times=5))
    now = [1000.0]
    waits: list[float] = []
    fetcher = make_fetcher(waits, run_timeout=15, monotonic=lambda: now[0])
    with pytest.raises(ApiUnavailableError) as caught:
        get_page(fetcher, server)
    assert str(caught.value).endswith(
        "a retry in 20.0s would pass --run-timeout 15s; nothing was written"
    )
    assert waits == [] and len(server.requests) == 1


def test_no_request_starts_after_the_run_deadline(server: FakeApi) -> None:
    now = [1000.0]
    fetcher = make_fetcher([], run_timeout=60, monotonic=lambda: now[0])
    get_page(fetcher, server)
    now[0] += 61
    with pytest.raises(ApiUnavailableError, match=r"longer than --run-timeout 60s \(during GET"):
        get_page(fetcher, server, page=2)
    assert len(server.requests) == 1


# -- errors name their cause ---------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fails_with(url: str, caplog: pytest.LogCaptureFixture) -> str:
    fetcher = make_fetcher([], max_retries=1)
    with (
        caplog.at_level(logging.DEBUG, logger="etl.http"),
        pytest.raises(ApiUnavailableError) as caught,
    ):
        fetcher.get_json(url + MODELS_PATH, {"page": 1, "per_page": 200, "api_key": "s3cr3t"})
    message = str(caught.value)
    assert message.count("127.0.0.1") + message.count("example.invalid") == 1  # the URL once
    assert "?page" not in message and "s3cr3t" not in message and "per_page" not in message
    assert "failed after 2 attempts: " in message
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 2 and all(" ms" in line for line in debug)  # each attempt, timed
    return message


def test_connection_refused_is_named(caplog: pytest.LogCaptureFixture) -> None:
    message = _fails_with(f"http://127.0.0.1:{_free_port()}", caplog)
    assert message.endswith(
        "connection error: connection refused (is anything listening on that port?)"
    )


def test_tls_failure_is_named(server: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    message = _fails_with(server.url.replace("http://", "https://"), caplog)
    assert ": TLS error: " in message


def test_a_name_that_does_not_resolve_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    def no_such_host(host: str, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)  # no DNS query leaves the machine
    message = _fails_with("https://api.example.invalid", caplog)
    assert message.endswith("connection error: the host name did not resolve (DNS)")


def test_each_response_is_logged_at_debug(
    server: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="etl.http"):
        get_page(make_fetcher([]), server)
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert line.startswith(f"GET {server.url}{MODELS_PATH}?") and ": HTTP 200, " in line
    assert " bytes, " in line and line.endswith(" ms")
