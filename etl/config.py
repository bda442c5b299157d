"""Settings: everything a run needs to know, resolved once and frozen."""

from __future__ import annotations

import ipaddress
import logging
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from etl.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from etl.notify import Targets

log = logging.getLogger("etl")

DEFAULT_API_URL = "https://api.digitalocean.com"
DEFAULT_DATABASE_URL = "sqlite:///catalog.db"
MODELS_PATH = "/v2/gen-ai/models"
MAX_PER_PAGE = 200
DEFAULT_RUN_TIMEOUT = 30 * 60.0
"""Seconds a sync may take, every request and wait included (``--run-timeout``)."""
_TOKEN = re.compile(r"[!-~]+")
"""Visible ASCII: anything else cannot travel in an Authorization header (RFC 6750)."""

USECASES = (
    "MODEL_USECASE_UNKNOWN",
    "MODEL_USECASE_AGENT",
    "MODEL_USECASE_FINETUNED",
    "MODEL_USECASE_KNOWLEDGEBASE",
    "MODEL_USECASE_GUARDRAIL",
    "MODEL_USECASE_REASONING",
    "MODEL_USECASE_SERVERLESS",
    "MODEL_USECASE_EVALUATION_JUDGE",
    "MODEL_USECASE_CODING",
    "MODEL_USECASE_AUDIO",
    "MODEL_USECASE_RERANKING",
    "MODEL_USECASE_TEXT",
)
"""The spec's ``apiModelUsecase`` enum: the parameter's own enum lists only the first seven,
but the API takes every value of the model's enum."""


@dataclass(frozen=True)
class Settings:
    """One run's configuration.

    Attributes:
        database_url: SQLAlchemy URL of the catalog database.
        api_url: Base URL of the DigitalOcean API (no path).
        token: API bearer token; never printed (``repr`` hides it).
        per_page: Page size asked of the API, 1 to 200.
        public_only: Send ``public_only=true``.
        usecases: Usecase filter values (full enum names).
        max_retries: Retries per request after the first attempt.
        max_wait: Longest single wait, in seconds, that a rate limit may impose.
        deadline: Total seconds a request may spend retrying.
        connect_timeout: Seconds to open a connection.
        read_timeout: Seconds to wait for a response.
        dry_run: Fetch and compare, write nothing.
        archive_dir: Where to archive each run's raw responses (None: nowhere).
        with_usecases: Also list the catalog once per usecase and record memberships.
        list_attempts: Listings tried when the catalog moves while we page.
        max_response_bytes: Largest response body accepted.
        run_timeout: Seconds the whole run may take before it fails (exit 4, nothing written).
        notify: Where to send change alerts (None: nowhere; always None on a dry run).
        listing_memo: Let a listing byte for byte the last run's skip parsing
            (:mod:`etl.memo`); False only where tests hold the memo to the plain path.
    """

    database_url: str = DEFAULT_DATABASE_URL
    api_url: str = DEFAULT_API_URL
    token: str = field(default="", repr=False)
    per_page: int = MAX_PER_PAGE
    public_only: bool = False
    usecases: tuple[str, ...] = ()
    max_retries: int = 5
    max_wait: float = 60.0
    deadline: float = 300.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    dry_run: bool = False
    archive_dir: str | None = None
    with_usecases: bool = False
    list_attempts: int = 3
    max_response_bytes: int = 50 * 1024 * 1024
    run_timeout: float = DEFAULT_RUN_TIMEOUT
    notify: Targets | None = field(default=None, repr=False)
    listing_memo: bool = True

    @property
    def filtered(self) -> bool:
        """Whether the listing is narrowed, so it cannot prove a model was removed."""
        return self.public_only or bool(self.usecases)

    def filters(self) -> dict[str, object]:
        """The filters as stored in ``sync_runs.filters``."""
        result: dict[str, object] = {}
        if self.public_only:
            result["public_only"] = True
        if self.usecases:
            result["usecases"] = list(self.usecases)
        return result


def resolve_token(token_file: str | None, environ: Mapping[str, str]) -> str:
    """Finds the API token: DIGITALOCEAN_ACCESS_TOKEN, else DIGITALOCEAN_TOKEN, else the file.

    Raises:
        AuthError: No token anywhere, or the file cannot be read.
    """
    for name in ("DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN"):
        token = environ.get(name, "").strip()
        if token:
            return _check_token(token, name)
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise AuthError(
                f"--token-file {token_file} is not text (not UTF-8); it must hold the token alone"
            ) from None
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by group or others; chmod 600 it", token_file)
        if token:
            return _check_token(token, f"--token-file {token_file}")
        raise AuthError(f"--token-file {token_file} is empty")
    raise AuthError(
        "no API token: set DIGITALOCEAN_ACCESS_TOKEN (or DIGITALOCEAN_TOKEN), "
        "or pass --token-file PATH"
    )


def _check_token(token: str, source: str) -> str:
    # requests would otherwise fail with an error that quotes the whole header, token included.
    if not _TOKEN.fullmatch(token):
        raise AuthError(
            f"the token from {source} holds spaces, line breaks or non-ASCII characters; "
            "it must be the token alone, on one line"
        )
    return token


def check_api_url(url: str) -> str:
    """Validates the API base URL, parsed as requests will parse it when it connects.

    Plain http is allowed only to a loopback host; user info is refused (the token travels as
    a bearer header, and a URL's credentials would replace it with Basic auth); so is a URL
    that two parsers read differently (see :func:`etl.http.parse_url`).

    Raises:
        ConfigError: Any of those.
    """
    from etl.http import parse_url  # lazily: requests is slow to import

    try:
        parts = parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"--api-url is not a URL etl can use safely: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise ConfigError(f"--api-url must be an http(s) URL with a host, got {parts.scheme}:")
    if parts.auth is not None:
        raise ConfigError(
            f"--api-url {parts.scheme}://{parts.host}: must not hold a user name or password "
            "(the token is sent as a bearer header)"
        )
    host = parts.host.strip("[]")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"--api-url http://{parts.host}: plain http is refused except to "
            "a loopback host; use https"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_usecase(value: str) -> str:
    """Accepts a usecase case-insensitively, with or without its ``MODEL_USECASE_`` prefix.

    Raises:
        ConfigError: Not a value of the spec's enum.
    """
    name = value.strip().upper()
    if not name.startswith("MODEL_USECASE_"):
        name = "MODEL_USECASE_" + name
    if name not in USECASES:
        choices = ", ".join(u.removeprefix("MODEL_USECASE_").lower() for u in USECASES)
        raise ConfigError(f"unknown usecase {value!r}; choose from {choices}")
    return name
