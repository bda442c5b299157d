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
from urllib.parse import parse_qs

from etl.config import MODELS_PATH
from etl.errors import InvalidResponseError
from etl.http import Fetched, Fetcher, parse_url, without_query

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
        return models, True, _page_number(next_url, where)

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
        known_pages: The page digests of a listing already checked and stored (the listing
            memo, :mod:`etl.memo`). While each page is byte for byte that listing's page of
            the same number, it is held unparsed; when the last one matches too, the walk ends
            with :attr:`known` True and nothing parsed or counted. The first page that differs
            has the held ones parsed and checked, in order, as if none had been held.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        api_url: str,
        per_page: int,
        public_only: bool = False,
        usecases: Sequence[str] = (),
        known_pages: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.fetcher = fetcher
        self.api_url = api_url
        self.per_page = per_page
        self.public_only = public_only
        self.usecases = usecases
        self.known_pages = known_pages
        self.known = False
        self._previous: list[Any] | None = None

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
        held: list[Fetched] = []
        page = 1
        while True:
            limit = MAX_PAGES if self.expected_pages is None else self.expected_pages + PAGE_MARGIN
            if page > limit:
                raise InvalidResponseError(
                    f"the API kept sending pages past page {page - 1} "
                    f"(meta.pages says {self.expected_pages}); stopped to avoid a loop"
                )
            matching = len(held) == page - 1 < len(self.known_pages)  # every page so far
            known = self.known_pages[page - 1] if matching else None
            fetched = self.fetcher.get_json(self.url, self.params(page), known)
            if not fetched.parsed:
                held.append(fetched)
                if page == len(self.known_pages):  # the whole listing, byte for byte
                    self.known = True
                    self.pages = page
                    yield from (Page(number, [], f) for number, f in enumerate(held, 1))
                    return
                page += 1
                continue
            for number, earlier in enumerate(held, 1):  # held pages are pages like any other
                checked, more = self._take(number, self.fetcher.parse(earlier))
                yield checked
                if not more:  # cannot happen for the same bytes; stop where they say
                    return
            held = []
            checked, more = self._take(page, fetched)
            yield checked
            if not more:
                return
            page += 1

    def _take(self, page: int, fetched: Fetched) -> tuple[Page, bool]:
        """Checks and counts one parsed page; returns it and whether the listing goes on."""
        where = f"GET {fetched.url}"
        models, has_next, next_page = self.read(fetched.payload, where, page)
        if page == 1:
            self._check_page_count(len(models), where)
        if models and models == self._previous:
            raise InvalidResponseError(
                f"{where}: page {page} repeats page {page - 1}'s models "
                "(the API ignores the page asked for); stopped to avoid a loop"
            )
        self._previous = models
        if not models:
            return Page(page, models, fetched), False
        if next_page is not None and next_page <= page:
            raise InvalidResponseError(
                f"page {page}'s next link points back to page {next_page}: a pagination loop"
            )
        return Page(page, models, fetched), bool(has_next or page < (self.expected_pages or 0))

    def _check_page_count(self, first_page: int, where: str) -> None:
        """Refuses a ``meta.pages`` that ``meta.total`` cannot fill at the first page's size.

        The page size is what the server sent (it may send fewer than we ask), so a server
        that caps ``per_page`` still pages; one claiming 10**9 pages of 300 models does not.
        """
        if self.total is None or self.expected_pages is None:
            return
        size = min(self.per_page, first_page) if first_page else self.per_page
        allowed = max(1, -(-self.total // size))
        if self.expected_pages > allowed:
            raise InvalidResponseError(
                f"{where}: meta.pages is {self.expected_pages}, but meta.total "
                f"{self.total} at {size} a page makes at most {allowed}"
            )


def _count_field(meta: dict[str, Any], name: str, where: str) -> int:
    value = meta.get(name) or 0  # the gateway leaves out zeros
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidResponseError(f"{where}: meta.{name} is {value!r}, not a count")
    return value


def _page_number(url: str, where: str) -> int | None:
    """The page a ``next`` link names (None when it names none).

    Raises:
        InvalidResponseError: The link is not a URL (``http://[``).
    """
    try:
        query = parse_url(url).query or ""
    except ValueError as exc:
        raise InvalidResponseError(
            f"{where}: unparsable next link {without_query(url)!r} ({exc})"
        ) from None
    values = parse_qs(query).get("page")
    if values and values[0].isdigit():
        return int(values[0])
    return None


def _kind(value: Any) -> str:
    for kind, name in ((dict, "an object"), (list, "a list"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__
