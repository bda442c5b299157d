"""etl.client: the listing walks every page once, asks for its filters itself, and never loops."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.client import PAGE_MARGIN, Listing
from etl.errors import ApiUnavailableError, InvalidResponseError
from etl.http import Fetcher, build_session
from etl.pages import parse_page, raw_hash
from tests.catalog import is_public, make_catalog, make_model, usecases_for
from tests.conftest import TOKEN
from tests.fakeapi import MODELS_PATH, FakeApi, Fault, RecordedRequest

CATALOG = make_catalog(23)


@pytest.fixture
def server() -> Iterator[FakeApi]:
    with FakeApi(models=CATALOG, token=TOKEN) as api:
        yield api


def listing(api: FakeApi, per_page: int = 5, **kwargs: Any) -> Listing:
    fetcher = Fetcher(build_session(TOKEN), max_retries=2, sleep=lambda seconds: None)
    return Listing(fetcher, api.url, per_page, **kwargs)


def walk(listing: Listing) -> list[dict[str, Any]]:
    return [model for page in listing for model in page.models]


def link(api: FakeApi, **params: Any) -> str:
    return f"{api.url}{MODELS_PATH}?{urlencode(params)}"


def test_walks_every_page_once_asking_each_by_number(server: FakeApi) -> None:
    walked = listing(server, per_page=5)
    models = walk(walked)
    assert [m["uuid"] for m in models] == [m["uuid"] for m in CATALOG]
    assert [r.page for r in server.requests] == [1, 2, 3, 4, 5]
    assert all(r.query["per_page"] == ["5"] for r in server.requests)
    assert walked.complete and walked.pages == 5 and walked.total == 23


def test_a_next_link_that_drops_the_filters_does_not_widen_the_listing(server: FakeApi) -> None:
    def bare_next(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        pages = body.get("links", {}).get("pages", {})
        if "next" in pages:  # no per_page, no filters: the whole catalog, 20 a page
            pages["next"] = link(server, page=(request.page or 1) + 1)
        return body

    server.transform = bare_next
    usecases = ("MODEL_USECASE_AGENT", "MODEL_USECASE_REASONING")
    walked = listing(server, per_page=2, public_only=True, usecases=usecases)
    models = walk(walked)
    expected = [m["uuid"] for m in CATALOG if is_public(m) and set(usecases) & set(usecases_for(m))]
    assert len(expected) > 4, "the filter should leave several pages"
    assert [m["uuid"] for m in models] == expected
    assert len(server.requests) == -(-len(expected) // 2)
    for number, request in enumerate(server.requests, start=1):
        assert request.query["page"] == [str(number)]
        assert request.query["per_page"] == ["2"]
        assert request.query["public_only"] == ["true"]
        assert request.query["usecases"] == list(usecases)


def test_next_link_alone_says_there_is_more(server: FakeApi) -> None:
    def no_meta(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        del body["meta"]
        return body

    server.transform = no_meta
    assert len(walk(listing(server, per_page=5))) == 23
    assert [r.page for r in server.requests] == [1, 2, 3, 4, 5]


def test_meta_pages_alone_says_there_is_more(server: FakeApi) -> None:
    def no_links(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        body["links"] = {}
        return body

    server.transform = no_links
    walked = listing(server, per_page=5)
    assert len(walk(walked)) == 23
    assert [r.page for r in server.requests] == [1, 2, 3, 4, 5]
    assert walked.complete


def test_an_empty_page_ends_the_listing(server: FakeApi) -> None:
    def empty_from_page_3(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        if (request.page or 1) >= 3:
            body["models"] = []  # meta and links still promise more
        return body

    server.transform = empty_from_page_3
    walked = listing(server, per_page=5)
    assert len(walk(walked)) == 10
    assert [r.page for r in server.requests] == [1, 2, 3]
    assert not walked.complete


@pytest.mark.parametrize("target", [1, 2], ids=["earlier-page", "same-page"])
def test_a_next_link_back_to_a_fetched_page_is_a_loop(server: FakeApi, target: int) -> None:
    def loop_on_page_2(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        if request.page == 2:
            body["links"]["pages"]["next"] = link(server, page=target, per_page=5)
        return body

    server.transform = loop_on_page_2
    with pytest.raises(InvalidResponseError) as caught:
        walk(listing(server, per_page=5))
    assert caught.value.exit_code == 5
    assert f"page 2's next link points back to page {target}: a pagination loop" in str(
        caught.value
    )
    assert [r.page for r in server.requests] == [1, 2]


def test_more_pages_than_meta_pages_allows_is_a_loop(server: FakeApi) -> None:
    def endless(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        page = request.page or 1
        if not body["models"]:  # past the end: invent a model and a next page, forever
            body["models"] = [make_model(1000 + page)]
        body["links"] = {"pages": {"next": link(server, page=page + 1, per_page=5)}}
        return body

    server.transform = endless
    with pytest.raises(InvalidResponseError) as caught:
        walk(listing(server, per_page=5))
    assert caught.value.exit_code == 5
    assert "kept sending pages past page 7 (meta.pages says 5)" in str(caught.value)
    assert [r.page for r in server.requests] == list(range(1, 5 + PAGE_MARGIN + 1))


def test_a_page_that_keeps_failing_stops_the_listing_without_skipping_it(
    server: FakeApi,
) -> None:
    server.faults.append(Fault.server_error(503, page=2, times=3))
    pages_seen = []
    with pytest.raises(ApiUnavailableError) as caught:
        for page in listing(server, per_page=5):
            pages_seen.append(page.number)
    assert caught.value.exit_code == 4
    assert "(page 2) failed after 3 attempts" in str(caught.value)
    assert pages_seen == [1]
    assert [r.page for r in server.requests] == [1, 2, 2, 2]


def test_a_page_that_fails_once_is_fetched_again_not_skipped(server: FakeApi) -> None:
    server.faults.append(Fault(action="reset", page=3))
    assert len(walk(listing(server, per_page=5))) == 23
    assert [r.page for r in server.requests] == [1, 2, 3, 3, 4, 5]


def test_a_server_that_caps_per_page_still_pages(server: FakeApi) -> None:
    server.ignore_per_page = True  # 20 a page, whatever we ask: meta.pages follows that size
    found = walk(listing(server, per_page=200))
    assert [m["uuid"] for m in found] == [m["uuid"] for m in CATALOG]
    assert [r.page for r in server.requests] == [1, 2]


@pytest.mark.parametrize(
    ("pages", "allowed"), [(6, 5), (10**9, 5)], ids=["one-too-many", "a-billion"]
)
def test_meta_pages_more_than_meta_total_fills_is_refused(
    server: FakeApi, pages: int, allowed: int
) -> None:
    def inflate(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        body["meta"]["pages"] = pages
        return body

    server.transform = inflate
    with pytest.raises(InvalidResponseError) as caught:
        walk(listing(server))
    assert str(caught.value).endswith(
        f"meta.pages is {pages}, but meta.total 23 at 5 a page makes at most {allowed}"
    )
    assert len(server.requests) == 1


def test_the_archive_reader_refuses_an_unparsable_next_link_too() -> None:
    from etl.client import Tally

    page = {"links": {"pages": {"next": "http://[/v2?page=2"}}, "models": CATALOG[:1]}
    with pytest.raises(InvalidResponseError, match=r"page 1: unparsable next link 'http://\[/v2' "):
        Tally().read(page, "page 1", 1)


# -- each model's digest is of its exact bytes ------------------------------------------------

_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
_models = st.lists(
    st.fixed_dictionaries(
        {"uuid": _texts},
        optional={"name": _texts, "n": st.integers() | st.floats(allow_nan=False), "x": st.none()},
    ),
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(
    models=_models,
    spaces=st.lists(st.sampled_from(["", " ", "\n", "\t "]), min_size=12, max_size=12),
    ascii_only=st.booleans(),
)
def test_each_model_is_digested_from_its_exact_bytes(
    models: list[dict[str, Any]], spaces: list[str], ascii_only: bool
) -> None:
    """The listing keys each model by the digest of its bytes as sent: the model's own slice,
    spaces, escapes and characters beyond ASCII as they were (character offsets in the text
    are not byte offsets in the body once a character is not ASCII)."""
    texts = [json.dumps(m, ensure_ascii=ascii_only, indent=1 if i % 2 else None)
             for i, m in enumerate(models)]  # fmt: skip
    gap = iter(spaces)
    array = "[" + next(gap) + ("," + next(gap)).join(texts) + next(gap) + "]"
    body = '{"meta":' + next(gap) + '{"total":1},"models":' + array + next(gap) + "}"
    payload, hashes = parse_page(body.encode())
    assert payload == json.loads(body)
    assert hashes == [raw_hash(text) for text in texts]
