"""The fake API and its catalog follow the spec, so tests built on them test the real thing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.catalog import PROVIDERS, USECASES, is_public, make_catalog, make_model, usecases_for
from tests.fakeapi import MODELS_PATH, FakeApi, Fault, RecordedRequest

TOKEN = "t0ken"
ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "spec" / "openapi" / "list_models_response.schema.json"
MODEL_FIELDS = {
    "agreement", "benchmark_score", "capabilities", "context_window", "created_at",
    "description", "endpoints", "id", "is_foundational", "kb_default_chunk_size",
    "kb_max_chunk_size", "kb_min_chunk_size", "lifecycle_status", "modalities",
    "model_availability", "name", "parameter_count", "parent_uuid", "pricing", "provider",
    "reasoning_efforts", "settings", "thinking", "type", "updated_at", "upload_complete", "url",
    "uuid", "version",
}  # fmt: skip
"""Every property of ``apiModelPublic``."""


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def get(session: requests.Session, api: FakeApi, **params: Any) -> requests.Response:
    return session.get(api.url + MODELS_PATH, params=params, timeout=5)


def link_query(link: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(link).query)


def schema_errors(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """A small JSON Schema check: types, enums, and no property the schema does not define."""
    kind = schema.get("type")
    expected: dict[str, tuple[type, ...]] = {
        "object": (dict,),
        "array": (list,),
        "string": (str,),
        "boolean": (bool,),
        "integer": (int,),
        "number": (int, float),
    }
    if kind in expected and (
        not isinstance(value, expected[kind]) or (kind in ("integer", "number") and value is True)
    ):
        return [f"{where}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in enum"]
    errors = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                errors.append(f"{where}.{key}: not in the spec")
            else:
                errors += schema_errors(item, schema["properties"][key], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{index}]")
    return errors


@pytest.mark.parametrize("per_page", [2, 7, 200])
def test_three_pages_link_to_each_other_and_cover_the_catalog(
    session: requests.Session, per_page: int
) -> None:
    catalog = make_catalog(2 * per_page + 1)
    with FakeApi(models=catalog, token=TOKEN) as api:
        url: str | None = f"{api.url}{MODELS_PATH}?per_page={per_page}"
        bodies = []
        while url:
            response = session.get(url, timeout=5)
            assert response.status_code == 200
            bodies.append(response.json())
            url = bodies[-1]["links"].get("pages", {}).get("next")

    assert [body["meta"] for body in bodies] == [
        {"total": len(catalog), "page": page, "pages": 3} for page in (1, 2, 3)
    ]
    assert [sorted(body["links"]["pages"]) for body in bodies] == [
        ["last", "next"],
        ["first", "last", "next", "previous"],
        ["first", "previous"],
    ]
    middle = bodies[1]["links"]["pages"]
    for name, page in {"first": "1", "previous": "1", "next": "3", "last": "3"}.items():
        assert middle[name].startswith(f"{api.url}{MODELS_PATH}?")
        assert link_query(middle[name]) == {"page": [page], "per_page": [str(per_page)]}
    assert [model for body in bodies for model in body["models"]] == catalog
    assert [len(body["models"]) for body in bodies] == [per_page, per_page, 1]


def test_short_listings_have_no_links_and_pages_past_the_end_are_empty(
    session: requests.Session,
) -> None:
    with FakeApi(models=make_catalog(5), token=TOKEN) as api:
        first = get(session, api).json()
        past = get(session, api, page=4).json()
        api.models = []
        empty = get(session, api).json()

    assert first["links"] == {}
    assert first["meta"] == {"total": 5, "page": 1, "pages": 1}
    assert len(first["models"]) == 5
    assert past["models"] == []
    assert past["meta"] == {"total": 5, "page": 4, "pages": 1}
    assert sorted(past["links"]["pages"]) == ["first", "previous"]
    assert empty == {"links": {}, "meta": {"total": 0, "page": 1, "pages": 0}, "models": []}


def test_per_page_defaults_to_20_and_is_clamped_to_1_200(session: requests.Session) -> None:
    with FakeApi(models=make_catalog(250), token=TOKEN) as api:
        default = get(session, api).json()
        big = get(session, api, per_page=1000).json()
        small = get(session, api, per_page=0).json()
        api.ignore_per_page = True
        ignored = get(session, api, per_page=50).json()
        bad = get(session, api, per_page="ten")

    assert (len(default["models"]), default["meta"]["pages"]) == (20, 13)
    assert (len(big["models"]), big["meta"]["pages"]) == (200, 2)
    assert (len(small["models"]), small["meta"]["pages"]) == (1, 250)
    assert len(ignored["models"]) == 20
    assert link_query(ignored["links"]["pages"]["next"])["per_page"] == ["20"]
    assert bad.status_code == 400
    assert bad.json()["id"] == "bad_request"


def test_filters_keep_public_models_and_any_of_the_repeated_usecases(
    session: requests.Session,
) -> None:
    catalog = make_catalog(60)
    wanted = ["MODEL_USECASE_KNOWLEDGEBASE", "MODEL_USECASE_REASONING"]
    expected = [m for m in catalog if is_public(m) and set(usecases_for(m)) & set(wanted)]
    with FakeApi(models=catalog, token=TOKEN) as api:
        public = get(session, api, public_only="true", per_page=200).json()
        both = get(session, api, public_only="true", usecases=wanted, per_page=2)
        unknown = get(session, api, usecases=["MODEL_USECASE_AGENT", "MODEL_USECASE_NOPE"])
        sent = api.requests[1].query

    assert public["models"] == [m for m in catalog if is_public(m)]
    assert 30 <= public["meta"]["total"] < 50
    assert sent["usecases"] == wanted
    assert both.json()["meta"]["total"] == len(expected) > 2
    assert both.json()["models"] == expected[:2]
    assert link_query(both.json()["links"]["pages"]["next"]) == {
        "page": ["2"],
        "per_page": ["2"],
        "public_only": ["true"],
        "usecases": wanted,
    }
    assert unknown.status_code == 400
    assert unknown.json()["id"] == "bad_request"
    assert "MODEL_USECASE_NOPE" in unknown.json()["message"]


def test_filters_can_be_given_explicitly(session: requests.Session) -> None:
    catalog = make_catalog(4)
    ids = [m["uuid"] for m in catalog]
    usecases = {ids[0]: ["MODEL_USECASE_AUDIO"], ids[2]: ["MODEL_USECASE_AUDIO"]}
    with FakeApi(models=catalog, token=TOKEN, public={ids[1], ids[2]}, usecases=usecases) as api:
        public = get(session, api, public_only="true").json()["models"]
        audio = get(session, api, usecases="MODEL_USECASE_AUDIO").json()["models"]
        api.public = {ids[3]}
        changed = get(session, api, public_only="true").json()["models"]

    assert [m["uuid"] for m in public] == ids[1:3]
    assert [m["uuid"] for m in audio] == [ids[0], ids[2]]
    assert [m["uuid"] for m in changed] == [ids[3]]


def test_wrong_or_missing_token_gets_401_and_every_response_has_rate_limit_headers() -> None:
    with FakeApi(models=make_catalog(3), token=TOKEN) as api:
        wrong = requests.get(
            api.url + MODELS_PATH, headers={"Authorization": "Bearer nope"}, timeout=5
        )
        missing = requests.get(api.url + MODELS_PATH, timeout=5)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        elsewhere = requests.get(api.url + "/v2/gen-ai/agents", headers=headers, timeout=5)
        posted = requests.post(api.url + MODELS_PATH, headers=headers, json={}, timeout=5)
        ok = requests.get(api.url + MODELS_PATH, headers=headers, timeout=5)

    body = {"id": "unauthorized", "message": "Unable to authenticate you."}
    assert (wrong.status_code, wrong.json()) == (401, body)
    assert (missing.status_code, missing.json()) == (401, body)
    assert (elsewhere.status_code, elsewhere.json()["id"]) == (404, "not_found")
    assert (posted.status_code, posted.json()["id"]) == (405, "method_not_allowed")
    assert ok.status_code == 200
    responses = [wrong, missing, elsewhere, posted, ok]
    assert [r.headers["ratelimit-remaining"] for r in responses] == [
        "4999", "4998", "4997", "4996", "4995"
    ]  # fmt: skip
    for response in responses:
        assert response.headers["ratelimit-limit"] == "5000"
        assert int(response.headers["ratelimit-reset"]) > time.time()
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["x-request-id"]
    assert len({r.headers["x-request-id"] for r in responses}) == 5


def test_rate_limited_fault_sends_retry_after_then_the_page(session: requests.Session) -> None:
    with FakeApi(models=make_catalog(3), token=TOKEN) as api:
        fault = Fault.rate_limited(retry_after="7", reset=1_700_000_000)
        api.faults.append(fault)
        limited = get(session, api)
        ok = get(session, api)

        assert api.faults == []
        assert len(api.requests) == 2
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert limited.headers["ratelimit-reset"] == "1700000000"
    assert limited.json() == {"id": "too_many_requests", "message": "API rate limit exceeded."}
    assert ok.status_code == 200
    assert len(ok.json()["models"]) == 3
    assert fault.served == 1


def test_faults_match_their_page_and_serve_their_times(session: requests.Session) -> None:
    with FakeApi(models=make_catalog(10), token=TOKEN) as api:
        fault = Fault.server_error(503, page=2, times=2)
        api.faults.append(fault)
        statuses = [get(session, api, page=page, per_page=5) for page in (1, 2, 2, 2)]

    assert [r.status_code for r in statuses] == [200, 503, 503, 200]
    assert statuses[1].json()["id"] == "server_error"
    assert fault.served == 2


def test_fault_bodies_and_headers(session: requests.Session) -> None:
    with FakeApi(models=make_catalog(3), token="other") as api:
        api.faults += [
            Fault(
                status=502, body="<html>Bad gateway</html>", headers={"content-type": "text/html"}
            ),
            Fault(headers={"ratelimit-remaining": "3"}),
            Fault(status=200, body={"models": "not a list"}),
        ]
        html = get(session, api)
        decorated = get(session, api)
        broken = get(session, api)

    assert (html.status_code, html.text) == (502, "<html>Bad gateway</html>")
    assert html.headers["Content-Type"] == "text/html"
    # A fault without a body decorates the normal response: here the 401 for the wrong token.
    assert (decorated.status_code, decorated.headers["ratelimit-remaining"]) == (401, "3")
    assert broken.json() == {"models": "not a list"}


def test_reset_fault_raises_connection_error_and_the_next_request_works(
    session: requests.Session,
) -> None:
    with FakeApi(models=make_catalog(3), token=TOKEN) as api:
        api.faults.append(Fault(action="reset"))
        with pytest.raises(requests.ConnectionError):
            get(session, api)
        assert get(session, api).status_code == 200
        assert len(api.requests) == 2


def test_reset_mid_body_fault_breaks_the_body(session: requests.Session) -> None:
    with FakeApi(models=make_catalog(10), token=TOKEN) as api:
        api.faults.append(Fault(action="reset_mid_body"))
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            get(session, api)
        assert get(session, api).status_code == 200


def test_delay_fault_makes_the_client_time_out(session: requests.Session) -> None:
    started = time.monotonic()
    with FakeApi(models=make_catalog(3), token=TOKEN) as api:
        api.faults.append(Fault(action="delay", delay=5))
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(api.url + MODELS_PATH, timeout=0.1)
    assert time.monotonic() - started < 2  # stop() does not wait for the sleeping handler


def test_transform_and_replaced_catalog(session: requests.Session) -> None:
    def drop_meta(request: RecordedRequest, body: dict[str, Any]) -> dict[str, Any]:
        del body["meta"]
        body["links"] = {"pages": {"next": f"{api.url}{MODELS_PATH}?page={request.page}"}}
        return body

    with FakeApi(models=make_catalog(3), token=TOKEN) as api:
        api.transform = drop_meta
        looped = get(session, api, page=2).json()
        api.transform = None
        api.models = make_catalog(7, seed=1)
        replaced = get(session, api).json()

    assert sorted(looped) == ["links", "models"]
    assert looped["links"]["pages"]["next"].endswith("?page=2")
    assert replaced["meta"]["total"] == 7
    assert replaced["models"][0] == make_model(0, seed=1)


def test_requests_are_recorded_in_order(session: requests.Session) -> None:
    with FakeApi(models=make_catalog(3), token=TOKEN) as api:
        api.faults.append(Fault(action="reset"))
        with pytest.raises(requests.ConnectionError):
            get(session, api, page=1)
        get(session, api, page=2, usecases=["MODEL_USECASE_AGENT", "MODEL_USECASE_TEXT"])
        recorded = list(api.requests)
        api.reset_log()
        assert api.requests == []

    assert [(r.path, r.page, r.method) for r in recorded] == [
        (MODELS_PATH, 1, "GET"),
        (MODELS_PATH, 2, "GET"),
    ]
    assert recorded[1].query["usecases"] == ["MODEL_USECASE_AGENT", "MODEL_USECASE_TEXT"]
    assert recorded[1].headers["authorization"] == f"Bearer {TOKEN}"


def test_stop_ends_every_server_thread(session: requests.Session) -> None:
    before = set(threading.enumerate())
    api = FakeApi(models=make_catalog(3), token=TOKEN).start()
    assert get(session, api).status_code == 200  # leaves a keep-alive connection open
    api.stop()
    assert set(threading.enumerate()) == before
    with pytest.raises(requests.ConnectionError):
        get(session, api)


def test_models_are_about_2_5_kb_with_zero_values_omitted() -> None:
    catalog = make_catalog(250)
    sizes = sorted(len(json.dumps(model)) for model in catalog)
    assert 2200 <= sizes[len(sizes) // 2] <= 2800
    assert sum(2000 <= size <= 3000 for size in sizes) > 0.9 * len(sizes)

    assert set().union(*catalog) == MODEL_FIELDS
    for field in ("is_foundational", "thinking", "parameter_count", "parent_uuid", "url"):
        assert any(field not in model for model in catalog), field
    for model in catalog:
        assert isinstance(model["context_window"], str)
        assert int(model["context_window"]) > 0
        for key, value in model.items():
            if key != "benchmark_score":
                assert value not in (False, 0, "", [], None), (model["id"], key)
    assert {"0", "3", "6", "9"} == {
        str(len(m["created_at"].partition(".")[2].rstrip("Z"))) for m in catalog
    }
    assert len({m["agreement"]["uuid"] for m in catalog}) == 5
    assert {m["provider"] for m in catalog} == set(PROVIDERS)
    assert {m["lifecycle_status"] for m in catalog} == {"active", "public-preview", "deprecated"}
    parents = {m["parent_uuid"] for m in catalog if "parent_uuid" in m}
    assert parents & {m["uuid"] for m in catalog}


def test_catalog_is_deterministic_and_overridable() -> None:
    assert make_catalog(20, seed=3) == make_catalog(20, seed=3)
    assert make_model(5, seed=3)["uuid"] != make_model(5, seed=4)["uuid"]
    model = make_model(5, description=None, is_foundational=False, extra={"new": 1})
    assert model["description"] is None
    assert model["is_foundational"] is False
    assert model["extra"] == {"new": 1}
    assert model["id"].endswith("-5")

    catalog = make_catalog(150)
    assert 0.55 < sum(map(is_public, catalog)) / len(catalog) < 0.78
    for model in catalog:
        usecases = usecases_for(model)
        assert 1 <= len(usecases) <= 3
        assert len(set(usecases)) == len(usecases)
        assert set(usecases) <= set(USECASES)


def test_responses_follow_the_spec_schema(session: requests.Session) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} not found")
    schema = json.loads(SCHEMA.read_text())
    with FakeApi(models=make_catalog(150), token=TOKEN) as api:
        bodies = [get(session, api, page=page, per_page=50).json() for page in (1, 2, 3)]
    for body in bodies:
        assert schema_errors(body, schema) == []


def test_runs_as_a_process_that_prints_its_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "--models", "25", "--token", "secret"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        response = requests.get(
            url + MODELS_PATH, headers={"Authorization": "Bearer secret"}, timeout=5
        )
        assert url.startswith("http://127.0.0.1:")
        assert response.json()["meta"] == {"total": 25, "page": 1, "pages": 2}
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
