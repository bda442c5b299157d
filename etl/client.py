"""Paging through ``GET /v2/gen-ai/models``: knows HTTP and JSON, nothing of SQL.

:class:`Listing` walks the pages once. Every request names its own ``page`` and carries
``per_page`` and the filters, so a ``next`` link that drops a filter cannot widen the listing;
``next`` and ``meta.pages`` only say whether there is more. After the walk, :attr:`Listing.complete`
says whether the listing provably holds the whole catalog.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from etl.config import MODELS_PATH
from etl.errors import InvalidResponseError
from etl.http import Fetched, Fetcher

PAGE_MARGIN = 2
"""Pages beyond ``meta.pages`` tolerated before the listing counts as a loop."""
MAX_PAGES = 100_000
"""Hard stop for a server that sends neither ``meta.pages`` nor an end."""


@dataclass(frozen=True)
class Page:
    """One page of the listing: its number, its models as sent, and the response."""

    number: int
    models: list[Any]
    fetched: Fetched


@dataclass
class Tally:
    """What a walk through pages has seen, and whether that provably is the whole catalog.

    The live listing and the archive reader both count pages through this, so "complete" means
    the same thing for a sync and a backfill.
    """

    total: int | None = None
    expected_pages: int | None = None
    pages: int = 0
    page_numbers: set[int] = field(default_factory=set)
    models: int = 0
    uuids: set[str] = field(default_factory=set)
    duplicates: int = 0
    without_uuid: int = 0
    inconsistency: str | None = None

    @property
    def complete(self) -> bool:
        """True when the walk provably saw the whole catalog exactly once."""
        return (
            self.inconsistency is None
            and self.total is not None
            and self.duplicates == 0
            and len(self.uuids) + self.without_uuid == self.total
            and self.page_numbers >= set(range(1, (self.expected_pages or 0) + 1))
        )

    def read(self, data: Any, where: str, number: int) -> tuple[list[Any], bool, int | None]:
        """Checks one page's shape and counts it.

        Args:
            data: The page as parsed JSON.
            where: Names the page in error messages.
            number: The page's number.

        Returns:
            The page's models, whether a ``next`` link is present, and the page it names.

        Raises:
            InvalidResponseError: The page is not a listing.
        """
        if not isinstance(data, dict):
            raise InvalidResponseError(f"{where}: expected a JSON object, got {_kind(data)}")
        models = data.get("models") or []
        if not isinstance(models, list):
            raise InvalidResponseError(f"{where}: 'models' is {_kind(models)}, not a list")
        meta = data.get("meta")
        if meta is not None:
            if not isinstance(meta, dict):
                raise InvalidResponseError(f"{where}: 'meta' is {_kind(meta)}, not an object")
            total = _count_field(meta, "total", where)
            pages = _count_field(meta, "pages", where)
            if self.total is not None and total != self.total:
                self.inconsistency = f"meta.total changed from {self.total} to {total}"
            if self.expected_pages is not None and pages != self.expected_pages:
                self.inconsistency = f"meta.pages changed from {self.expected_pages} to {pages}"
            self.total, self.expected_pages = total, pages
        self.pages += 1
        self.page_numbers.add(number)
        self._count(models)
        links = data.get("links") or {}
        pages_links = links.get("pages") if isinstance(links, dict) else None
        next_url = pages_links.get("next") if isinstance(pages_links, dict) else None
        if not isinstance(next_url, str) or not next_url:
            return models, False, None
        return models, True, _page_number(next_url)

    def _count(self, models: list[Any]) -> None:
        for model in models:
            self.models += 1
            uuid = model.get("uuid") if isinstance(model, dict) else None
            if isinstance(uuid, str) and uuid:
                if uuid in self.uuids:
                    self.duplicates += 1
                else:
                    self.uuids.add(uuid)
            else:
                self.without_uuid += 1


class Listing(Tally):
    """One walk through the paged list of models.

    Args:
        fetcher: Sends the requests.
        api_url: Base URL of the API.
        per_page: Page size to ask for.
        public_only: Send ``public_only=true``.
        usecases: Send these as repeated ``usecases`` parameters.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        api_url: str,
        per_page: int,
        public_only: bool = False,
        usecases: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.fetcher = fetcher
        self.api_url = api_url
        self.per_page = per_page
        self.public_only = public_only
        self.usecases = usecases

    @property
    def url(self) -> str:
        return self.api_url.rstrip("/") + MODELS_PATH

    def params(self, page: int) -> list[tuple[str, Any]]:
        """The query of one page's request."""
        params: list[tuple[str, Any]] = [("page", page), ("per_page", self.per_page)]
        if self.public_only:
            params.append(("public_only", "true"))
        params.extend(("usecases", usecase) for usecase in self.usecases)
        return params

    def __iter__(self) -> Iterator[Page]:
        page = 1
        while True:
            limit = MAX_PAGES if self.expected_pages is None else self.expected_pages + PAGE_MARGIN
            if page > limit:
                raise InvalidResponseError(
                    f"the API kept sending pages past page {page - 1} "
                    f"(meta.pages says {self.expected_pages}); stopped to avoid a loop"
                )
            fetched = self.fetcher.get_json(self.url, self.params(page))
            models, has_next, next_page = self.read(fetched.payload, f"GET {fetched.url}", page)
            yield Page(page, models, fetched)
            if not models:
                return
            if next_page is not None and next_page <= page:
                raise InvalidResponseError(
                    f"page {page}'s next link points back to page {next_page}: a pagination loop"
                )
            if not (has_next or page < (self.expected_pages or 0)):
                return
            page += 1


def _count_field(meta: dict[str, Any], name: str, where: str) -> int:
    value = meta.get(name) or 0  # the gateway leaves out zeros
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidResponseError(f"{where}: meta.{name} is {value!r}, not a count")
    return value


def _page_number(url: str) -> int | None:
    values = parse_qs(urlsplit(url).query).get("page")
    if values and values[0].isdigit():
        return int(values[0])
    return None


def _kind(value: Any) -> str:
    for kind, name in ((dict, "an object"), (list, "a list"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__
