"""Change alerts against real receivers on 127.0.0.1: a JSON webhook (Apprise ``json://``), an
SMTP server (aiosmtpd, for ``mailto://``), and receivers that fail with 500, are down, or hold
a request until the sender is killed. Real syncs against the fake API drive them."""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from etl import notify, schema
from tests.catalog import make_catalog
from tests.conftest import TOKEN, table_rows
from tests.fakeapi import FakeApi
from tests.test_processes import etl_process, wait_for, wait_until_lock_is_free

HOOK_SECRET = "hookS3cretPathToken42"
SMTP_PASSWORD = "mailS3cretPassw0rd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Webhook:
    """A JSON webhook: records every POST it accepts as (path, headers, JSON body).

    Attributes:
        status: What it answers (500 makes it a failing receiver).
        hold: While set, each request is read and then held without an answer (not recorded)
            until :meth:`release`.
    """

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.held: list[str] = []
        self.status = 200
        self.hold = False
        self._release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.hold:
                    hook.held.append(self.path)
                    hook._release.wait(30)
                    return
                if hook.status == 200:
                    hook.received.append((self.path, dict(self.headers), body))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def messages(self, path: str = "/hook") -> list[dict[str, Any]]:
        """The JSON bodies received on ``path``, in arrival order."""
        return [body for got, _, body in self.received if got == path]

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """The fake API with a 20-model catalog."""
    with FakeApi(models=make_catalog(20), token=TOKEN) as server:
        yield server


def sync(run_etl: Any, db_url: str, api: FakeApi, *args: str) -> Any:
    result = run_etl("--database-url", db_url, "sync", "--api-url", api.url, *args)
    assert result.exit_code == 0, result.output
    return result


def change(api: FakeApi, index: int, **fields: Any) -> None:
    """Publishes the catalog with model ``index`` changed."""
    models = list(api.models)
    models[index] = {**models[index], **fields}
    api.models = models


def outbox(engine: sa.Engine) -> list[dict[str, Any]]:
    return table_rows(engine, "notify_outbox")


def test_one_message_per_run_with_changes_and_none_without(
    run_etl: Any, db_url: str, api: FakeApi, hook: Webhook
) -> None:
    sync(run_etl, db_url, api)
    target = ("--notify", hook.url())
    model = api.models[3]
    change(api, 3, lifecycle_status="deprecated", name="GPT-4o (old)")
    sync(run_etl, db_url, api, *target)
    sync(run_etl, db_url, api, *target)  # nothing changed: nothing sent

    assert len(hook.received) == 1
    _, headers, message = hook.received[0]
    assert message["title"] == "DigitalOcean GenAI catalog: 1 changed"
    assert f"~ {model['id']} (GPT-4o (old)): lifecycle_status: " in message["message"]
    assert "-> deprecated" in message["message"]
    [event] = message["etl"]["events"]
    assert event["kind"] == "changed" and event["model_uuid"] == model["uuid"]
    assert event["model_id"] == model["id"] and event["model_name"] == "GPT-4o (old)"
    assert event["changes"]["name"] == {"old": model["name"], "new": "GPT-4o (old)"}
    assert message["etl"]["run_id"] == 2
    assert headers["Idempotency-Key"] == message["etl"]["idempotency_key"]
    assert message["etl"]["idempotency_key"].startswith("etl-run2-")


def test_filters_on_the_command_line_and_per_target_in_a_config_file(
    run_etl: Any, db_url: str, api: FakeApi, hook: Webhook, tmp_path: Path
) -> None:
    sync(run_etl, db_url, api)
    config = tmp_path / "alerts.yml"
    config.write_text(
        "urls:\n"
        f"  - {hook.url('prices')}:\n"
        "      tag: field:pricing.*\n"
        f"  - {hook.url('removals')}:\n"
        "      tag: kind:removed\n"
    )
    models = [dict(m) for m in api.models]
    gpt = next(m for m in models if m["id"].startswith("openai-gpt-4o"))
    claude = next(m for m in models if m["id"].startswith("anthropic-"))
    for model in (gpt, claude):
        model["pricing"] = {**model["pricing"], "output_price_per_million": 99.0}
        model["lifecycle_status"] = "deprecated"
    removed = next(m for m in models if m["id"].startswith("openai-o3-mini"))
    api.models = [m for m in models[1:] if m is not removed]  # and a model not of openai

    sync(
        run_etl, db_url, api,
        "--notify", hook.url("openai"), "--notify-model", "OPENAI-*",
        "--notify-kind", "changed", "--notify-field", "lifecycle_status",
        "--notify-config", str(config),
    )  # fmt: skip

    [openai] = hook.messages("/openai")
    assert [(e["model_id"], list(e["changes"])) for e in openai["etl"]["events"]] == [
        (gpt["id"], ["lifecycle_status"])
    ]
    [prices] = hook.messages("/prices")  # its own field filter; the command line's kind and model
    assert {e["model_id"] for e in prices["etl"]["events"]} == {gpt["id"]}
    assert list(prices["etl"]["events"][0]["changes"]) == ["pricing.output_price_per_million"]
    [removals] = hook.messages("/removals")  # its own kind; the command line's model glob
    assert [(e["kind"], e["model_id"]) for e in removals["etl"]["events"]] == [
        ("removed", removed["id"])
    ]


def test_an_agreement_edit_is_one_line_with_a_count(
    run_etl: Any, db_url: str, api: FakeApi, hook: Webhook
) -> None:
    sync(run_etl, db_url, api)
    shared = max(
        {m["agreement"]["uuid"] for m in api.models},
        key=lambda uuid: sum(m["agreement"]["uuid"] == uuid for m in api.models),
    )
    members = sorted(m["id"] for m in api.models if m["agreement"]["uuid"] == shared)
    assert len(members) == 8
    api.models = [
        {**m, "agreement": {**m["agreement"], "name": "New Licence v2"}}
        if m["agreement"]["uuid"] == shared
        else m
        for m in api.models
    ]

    sync(run_etl, db_url, api, "--notify", hook.url())

    [message] = hook.messages()
    assert message["title"] == "DigitalOcean GenAI catalog: 8 changed"
    lines = message["message"].splitlines()
    assert lines[0] == "Changed (8):"
    assert lines[1].startswith("~ 8 models: agreement.name: ")
    assert lines[1].endswith(f"-> New Licence v2 ({', '.join(members[:3])} and 5 more)")
    assert len(message["etl"]["events"]) == 8


def test_a_receiver_down_for_three_runs_gets_all_three_in_order_once_each(
    run_etl: Any, db_url: str, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "BACKOFF_FIRST", 0.0)  # every run retries at once
    sync(run_etl, db_url, api)
    port = _free_port()
    target = ("--notify", f"json://127.0.0.1:{port}/hook")
    for run in range(3):
        change(api, run, lifecycle_status="deprecated")
        result = sync(run_etl, db_url, api, *target)  # exit 0: delivery never fails a sync
        assert "not delivered" in result.stderr
    receiver = Webhook(port)
    try:
        sync(run_etl, db_url, api, *target)
        sync(run_etl, db_url, api, *target)
    finally:
        receiver.close()

    messages = receiver.messages()
    assert [m["etl"]["run_id"] for m in messages] == [2, 3, 4]
    assert [m["etl"]["events"][0]["model_id"] for m in messages] == [
        m["id"] for m in api.models[:3]
    ]


def test_a_failing_receiver_is_retried_after_its_backoff_and_reported(
    run_etl: Any, db_url: str, api: FakeApi, hook: Webhook, engine: sa.Engine
) -> None:
    sync(run_etl, db_url, api)
    hook.status = 500
    change(api, 0, lifecycle_status="deprecated")
    sync(run_etl, db_url, api, "--notify", hook.url())
    [row] = outbox(engine)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "error=500" in row["last_error"]
    status = run_etl("--database-url", db_url, "notify", "status", "--json")
    [shown] = json.loads(status.stdout)
    assert shown["state"] == "failing" and shown["target"].startswith("json://*** #")
    hook.status = 200
    targets = notify.load_targets([hook.url()], None, notify.Filters())

    soon = row["next_attempt_at"] - timedelta(seconds=1)
    assert notify.deliver_pending(engine, targets, now=soon).pending == 1  # backing off
    assert notify.deliver_pending(engine, targets, now=row["next_attempt_at"]).delivered == 1

    assert len(hook.messages()) == 1
    assert run_etl("--database-url", db_url, "notify", "status").stdout == (
        "no undelivered alerts\n"
    )


def test_past_max_pending_the_oldest_are_dropped_and_counted(
    run_etl: Any, db_url: str, api: FakeApi, engine: sa.Engine
) -> None:
    sync(run_etl, db_url, api)
    down = ("--notify", f"json://127.0.0.1:{_free_port()}/hook", "--notify-max-pending", "2")
    for run in range(3):
        change(api, run, lifecycle_status="deprecated")
        result = sync(run_etl, db_url, api, *down)
    assert "more than 2 undelivered; dropped the 1 oldest" in result.stderr
    assert [(r["run_id"], r["status"]) for r in outbox(engine)] == [
        (2, "dropped"),
        (3, "pending"),
        (4, "pending"),
    ]
    status = run_etl("--database-url", db_url, "notify", "status", "--json")
    assert [r["state"] for r in json.loads(status.stdout)] == ["dropped", "failing", "pending"]


def test_sigkill_after_the_commit_loses_nothing(
    run_etl: Any, db_url: str, api: FakeApi, hook: Webhook, engine: sa.Engine, tmp_path: Path
) -> None:
    sync(run_etl, db_url, api)
    change(api, 5, lifecycle_status="deprecated")
    hook.hold = True  # the delivery reaches the receiver, which never answers
    args = ["--database-url", db_url, "sync", "--api-url", api.url, "--notify", hook.url()]
    with etl_process(tmp_path, *args) as child:
        wait_for("a delivery", lambda: bool(hook.held), child)
        child.signal(signal.SIGKILL)
        child.wait()
    hook.release()
    hook.hold = False
    [row] = outbox(engine)
    assert row["status"] == "pending" and row["run_id"] == 2
    assert table_rows(engine, "sync_runs")[-1]["status"] == "succeeded"  # committed before
    wait_until_lock_is_free(engine)

    sync(run_etl, db_url, api, "--notify", hook.url())
    sync(run_etl, db_url, api, "--notify", hook.url())

    assert [m["etl"]["run_id"] for m in hook.messages()] == [2]
    assert hook.messages()[0]["etl"]["events"][0]["model_id"] == api.models[5]["id"]


def test_sigterm_during_delivery_ends_it_and_the_run_still_succeeds(
    run_etl: Any, api: FakeApi, hook: Webhook, tmp_path: Path
) -> None:
    # What the signal stops is the same on every dialect (the run has committed): SQLite only.
    db_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    sync(run_etl, db_url, api)
    change(api, 5, lifecycle_status="deprecated")
    hook.hold = True
    args = ["--database-url", db_url, "sync", "--api-url", api.url, "--notify", hook.url()]
    with etl_process(tmp_path, *args) as child:
        wait_for("a delivery", lambda: bool(hook.held), child)
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.stderr
    assert "alerts: delivery interrupted; what is pending goes with the next run" in child.stderr
    assert "run 2 succeeded" in child.stdout
    hook.release()
    hook.hold = False

    sync(run_etl, db_url, api, "--notify", hook.url())

    assert [m["etl"]["run_id"] for m in hook.messages()] == [2]


class Mailbox:
    """An SMTP server (aiosmtpd) that takes one login and keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                box.messages.append(envelope.content.decode())
                return "250 OK"

        def login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = isinstance(data, LoginPassword) and data.password == SMTP_PASSWORD.encode()
            return AuthResult(success=ok)

        self.port = _free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=login,
            auth_require_tls=False,
        )
        self.controller.start()

    def url(self) -> str:
        return (
            f"mailto://etl:{SMTP_PASSWORD}@127.0.0.1:{self.port}"
            "?from=etl@example.com&to=ops@example.com"
        )


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    yield box
    box.controller.stop()


def test_mail_and_a_test_message(run_etl: Any, db_url: str, api: FakeApi, mailbox: Mailbox) -> None:
    sync(run_etl, db_url, api)
    change(api, 2, lifecycle_status="deprecated")
    sync(run_etl, db_url, api, "--notify", mailbox.url())
    result = run_etl("notify", "test", mailbox.url())

    assert result.exit_code == 0 and result.stdout == "sent a test message to mailto://***\n"
    alert, test = mailbox.messages
    assert "Subject: DigitalOcean GenAI catalog: 1 changed" in alert
    assert api.models[2]["id"] in alert
    assert "Subject: etl: test alert" in test


def test_a_target_url_secret_is_nowhere(
    run_etl: Any, api: FakeApi, hook: Webhook, mailbox: Mailbox, tmp_path: Path
) -> None:
    # As for the API token, SQLite stands for every dialect: its file can be searched too.
    db_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    json_url = f"json://etl:{HOOK_SECRET}@127.0.0.1:{hook.port}/{HOOK_SECRET}"
    down = f"json://127.0.0.1:{_free_port()}/{HOOK_SECRET}x"
    sync(run_etl, db_url, api)
    change(api, 1, lifecycle_status="deprecated")
    outputs = [
        run_etl(
            "-v", "--database-url", db_url, "sync", "--api-url", api.url,
            env={"ETL_NOTIFY_URLS": f"{json_url} {mailbox.url()} {down}"},
        ),
        run_etl("--database-url", db_url, "notify", "status"),
        run_etl("--database-url", db_url, "notify", "status", "--json"),
        run_etl("-v", "--database-url", db_url, "notify", "retry", "--notify", down),
        run_etl("-v", "notify", "test", down),
        run_etl("--database-url", db_url, "sync", "--notify", f"nosuch://{HOOK_SECRET}"),
        run_etl("--database-url", db_url, "report", "--output", str(tmp_path / "r.html")),
    ]  # fmt: skip

    assert [r.exit_code for r in outputs] == [0, 0, 0, 9, 9, 2, 0]
    assert len(hook.messages(f"/{HOOK_SECRET}")) == 1 and len(mailbox.messages) == 1
    texts = [r.output for r in outputs] + [(tmp_path / "r.html").read_text()]
    engine = sa.create_engine(db_url)
    texts += [repr(table_rows(engine, table)) for table in schema.metadata.tables]
    engine.dispose()
    texts += [path.read_bytes().decode("latin-1") for path in tmp_path.glob("catalog.db*")]
    for secret in (HOOK_SECRET, HOOK_SECRET[-10:], SMTP_PASSWORD, SMTP_PASSWORD[-10:]):
        assert not [text for text in texts if secret in text]
    assert "json://*** #" in outputs[1].output


def test_backfills_notify_only_when_asked(
    run_etl: Any, db_url: str, hook: Webhook, tmp_path: Path
) -> None:
    models = make_catalog(5)
    (tmp_path / "2026-03-01.json").write_text(json.dumps(models))
    (tmp_path / "2026-03-02.json").write_text(json.dumps(models[1:]))
    (tmp_path / "2026-03-03.json").write_text(json.dumps(models[2:]))
    backfill = ("--database-url", db_url, "backfill", "--notify", hook.url())

    assert run_etl(*backfill, str(tmp_path / "2026-03-01.json")).exit_code == 0
    assert run_etl(*backfill, str(tmp_path / "2026-03-02.json")).exit_code == 0
    assert hook.received == []
    result = run_etl(*backfill, "--notify-backfill", str(tmp_path / "2026-03-03.json"))

    assert result.exit_code == 0, result.output
    [message] = hook.messages()
    assert message["title"] == "DigitalOcean GenAI catalog: 1 removed"
    assert message["message"].startswith(f"Removed (1):\n- {models[1]['id']} (")
    assert message["etl"]["observed_at"] == "2026-03-03T00:00:00Z"


def test_a_long_message_is_capped_with_and_n_more() -> None:
    events = [
        {"observed_at": datetime(2026, 12, 1, tzinfo=UTC), "kind": "added", "model_uuid": str(i),
         "model_id": f"model-{i:03}", "model_name": f"Model {i}", "changes": None}
        for i in range(300)
    ]  # fmt: skip

    message = notify.compose(events, 7)

    lines = message.body.splitlines()
    assert lines[0] == "Added (300):" and lines[1] == "+ model-000 (Model 0)"
    assert len(lines) <= notify.MAX_LINES + 1 and len(message.body) <= notify.MAX_CHARS
    shown = sum(line.startswith("+ ") for line in lines)
    assert lines[-2] == f"... and {300 - shown} more"
    assert lines[-1] == "(run 7, observed 2026-12-01T00:00:00Z)"
    assert message.payload["events_total"] == 300
