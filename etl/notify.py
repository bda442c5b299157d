"""Change alerts: one message per target per run that changed the catalog, sent with Apprise.

A run writes its messages to ``notify_outbox`` in its own transaction (:func:`enqueue_run`), so
a run that commits has its alerts and one that rolls back has none. After the commit
:func:`deliver_pending` sends what is pending, oldest first for each target, and marks each
message delivered in a short transaction of its own. A failed delivery stays pending; later
runs try again, after a backoff, and in order. A process killed between the commit and the
delivery leaves the message pending for the next run. One killed after a target accepted a
message but before it was marked sends it again: receivers dedupe on the idempotency key.

Target URLs hold secrets (webhook tokens, SMTP passwords) and come from the command line, the
environment or a config file at every run. A target is stored only as the HMAC-SHA256 of
Apprise's canonical form of its URL, keyed with a random key made for each database by its
first run that has a target (``notify_key``), and a label naming its scheme (``slack://***``).
The key makes the hashes useless outside their database; a reader of the database can still
test a URL they guess against them, so the database stays as private as it always had to be.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import queries, schema
from etl.errors import ConfigError, Interrupted, NotifyError
from etl.http import mask, redact_target, truncate, url_secrets
from etl.lock import run_lock
from etl.logs import log_summary
from etl.sanitize import visible
from etl.times import format_instant
from etl.transform import canonical_json

log = logging.getLogger("etl.notify")

KINDS = ("added", "removed", "restored", "changed")
"""Change kinds, in the order a message lists them."""
MAX_PENDING = 1000
"""Default cap on undelivered messages per target (``--notify-max-pending``)."""
MAX_LINES = 40
"""Lines of a message body, the "and N more" line included."""
MAX_CHARS = 3500
"""Characters of a message body: under Slack's, Teams' and email clients' comfortable limits."""
MAX_VALUE = 80
"""Characters shown of an old or new value."""
MAX_NAMED = 3
"""Models named on a grouped line before "and N more"."""
MAX_EVENTS = 1000
"""Events carried by a message's JSON; a larger run says how many it left out."""
BACKOFF_FIRST = 60.0
BACKOFF_MAX = 3600.0
"""Seconds before a failing target is tried again: 1 minute, doubling, at most an hour."""
JSON_SCHEMES = frozenset({"json", "jsons"})
"""Apprise's generic JSON webhooks: their messages also carry the structured events."""
_ABRIDGED = re.compile(r"\S\.\.\.\S")
_SYMBOLS = {"added": "+", "removed": "-", "restored": "^", "changed": "~"}


@dataclass(frozen=True)
class Filters:
    """Which events a target hears of; an empty tuple lets everything through.

    Attributes:
        kinds: Change kinds (``added``, ``removed``, ``restored``, ``changed``).
        fields: Globs on dotted field paths (``pricing.*``): a ``changed`` event keeps only its
            matching fields and is left out when none match; other kinds are not affected.
        models: Globs on the model id, case-insensitive.
    """

    kinds: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    def select(self, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The events that pass, each ``changed`` one with only its matching fields."""
        kept = []
        for event in events:
            if self.kinds and event["kind"] not in self.kinds:
                continue
            if self.models and not _matches(event["model_id"] or "", self.models):
                continue
            changes = event["changes"] or {}
            if self.fields and event["kind"] == "changed":
                changes = {path: v for path, v in changes.items() if _matches(path, self.fields)}
                if not changes:
                    continue
            kept.append({**event, "changes": changes})
        return kept

    def with_tags(self, tags: Iterable[object]) -> Filters:
        """These filters, with those a config file sets for one target in its tags replacing
        them filter by filter: ``kind:K``, ``field:GLOB``, ``model:GLOB`` (other tags ignored).

        Raises:
            ConfigError: A ``kind:`` tag names no kind.
        """
        found: dict[str, list[str]] = {"kind": [], "field": [], "model": []}
        for tag in sorted(str(t) for t in tags):
            name, colon, value = tag.partition(":")
            if colon and value and name in found:
                found[name].append(value)
        for kind in found["kind"]:
            if kind not in KINDS:
                raise ConfigError(f"tag kind:{kind}: choose from {', '.join(KINDS)}")
        return Filters(
            tuple(found["kind"]) or self.kinds,
            tuple(found["field"]) or self.fields,
            tuple(found["model"]) or self.models,
        )


def _matches(text: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(text.lower(), glob.lower()) for glob in globs)


@dataclass(frozen=True)
class Target:
    """Where alerts go.

    Attributes:
        url: Apprise's canonical form of the target's URL. Secret: never shown or stored.
        label: What is shown and stored instead (``slack://***``).
        filters: Which events it hears of.
    """

    url: str = field(repr=False)
    label: str
    filters: Filters

    @property
    def structured(self) -> bool:
        """Whether messages also carry the events as JSON (Apprise's ``json://``/``jsons://``)."""
        return urlsplit(self.url).scheme in JSON_SCHEMES


@dataclass(frozen=True)
class Targets:
    """The targets configured for a run.

    Attributes:
        items: The targets, each URL once.
        max_pending: Undelivered messages kept per target; past it the oldest are dropped.
    """

    items: tuple[Target, ...]
    max_pending: int = MAX_PENDING


def load_targets(
    urls: Sequence[str],
    config_file: str | None,
    filters: Filters,
    max_pending: int = MAX_PENDING,
) -> Targets | None:
    """Resolves the targets given on the command line and in an Apprise config file.

    Args:
        urls: Apprise URLs (``--notify``, ``ETL_NOTIFY_URLS``); ``filters`` apply to them.
        config_file: An Apprise YAML or text config; its targets' ``kind:``, ``field:`` and
            ``model:`` tags replace ``filters`` filter by filter.
        filters: The command line's filters.
        max_pending: See :class:`Targets`.

    Returns:
        The targets, or None when none is given.

    Raises:
        ConfigError: A URL Apprise cannot send to, or a config file without a usable target.
    """
    if not urls and not config_file:
        return None
    apprise = _apprise()
    found: dict[str, Target] = {}
    for number, url in enumerate(urls, 1):
        service = apprise.Apprise.instantiate(url.strip())
        if service is None:
            raise ConfigError(
                f"--notify target #{number} ({redact_target(url)}) is not an Apprise URL etl "
                "can send to: an unknown scheme or a malformed URL (`apprise --details` lists "
                "the schemes)"
            )
        _add(found, service, filters)
    if config_file:
        config = apprise.AppriseConfig()
        loaded = apprise.Apprise()
        config.add(str(Path(config_file).absolute()))
        loaded.add(config)
        services = list(loaded)
        if not services:
            raise ConfigError(
                f"--notify-config {config_file}: no target could be read from it (check it "
                "with `apprise --config FILE --dry-run`)"
            )
        for service in services:
            _add(found, service, filters.with_tags(service.tags))
    return Targets(tuple(found.values()), max_pending)


def _add(found: dict[str, Target], service: Any, filters: Filters) -> None:
    url = str(service.url(privacy=False))
    found.setdefault(url, Target(url, redact_target(url), filters))


@dataclass(frozen=True)
class Message:
    """One run's alert for one target."""

    title: str
    body: str
    payload: dict[str, Any]


def compose(events: Sequence[Mapping[str, Any]], run_id: int) -> Message:
    """Summarises a run's events (as :func:`etl.queries.run_changes` returns them).

    Changes that are the same for several models (an agreement edit) make one line with a
    count. The body is capped at :data:`MAX_LINES` lines and :data:`MAX_CHARS` characters,
    ending with "and N more"; the payload holds up to :data:`MAX_EVENTS` events.
    """
    observed_at = format_instant(events[0]["observed_at"]) if events else ""
    by_kind: dict[str, list[Mapping[str, Any]]] = {kind: [] for kind in KINDS}
    for event in events:
        by_kind[event["kind"]].append(event)
    counts = ", ".join(f"{len(by_kind[k])} {k}" for k in KINDS if by_kind[k])
    sections = [
        (f"{kind.capitalize()} ({len(items)}):", _lines(kind, items))
        for kind, items in by_kind.items()
        if items
    ]
    body = _capped(sections) + f"\n(run {run_id}, observed {observed_at})"
    payload = {
        "run_id": run_id,
        "observed_at": observed_at,
        "events_total": len(events),
        "events": [_event_json(event) for event in events[:MAX_EVENTS]],
    }
    return Message(f"DigitalOcean GenAI catalog: {counts}", body, payload)


def _lines(kind: str, events: Sequence[Mapping[str, Any]]) -> list[str]:
    symbol = _SYMBOLS[kind]
    events = sorted(events, key=_model)
    if kind != "changed":
        return [f"{symbol} {_model(event)}" for event in events]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        groups.setdefault(canonical_json(event["changes"]), []).append(event)
    lines = []
    for members in sorted(groups.values(), key=lambda group: (-len(group), _model(group[0]))):
        diff = "; ".join(
            f"{visible(path)}: {_value(values['old'])} -> {_value(values['new'])}"
            for path, values in sorted(members[0]["changes"].items())
        )
        if len(members) == 1:
            lines.append(f"{symbol} {_model(members[0])}: {diff}")
            continue
        named = ", ".join(visible(str(m["model_id"])) for m in members[:MAX_NAMED])
        rest = f" and {len(members) - MAX_NAMED} more" if len(members) > MAX_NAMED else ""
        lines.append(f"{symbol} {len(members)} models: {diff} ({named}{rest})")
    return lines


def _model(event: Mapping[str, Any]) -> str:
    name = f" ({visible(event['model_name'])})" if event["model_name"] else ""
    return f"{visible(str(event['model_id'] or event['model_uuid']))}{name}"


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    text = visible(value if isinstance(value, str) else canonical_json(value))
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def _capped(sections: Sequence[tuple[str, list[str]]]) -> str:
    lines: list[str] = []
    size = 0
    left = 0
    for heading, items in sections:
        if left:
            left += len(items)
            continue
        lines.append(heading)
        size += len(heading) + 1
        for shown, item in enumerate(items):
            if len(lines) >= MAX_LINES - 1 or size + len(item) + 1 > MAX_CHARS - 40:
                left = len(items) - shown
                break
            lines.append(item)
            size += len(item) + 1
    if left:
        lines.append(f"... and {left} more")
    return "\n".join(lines)


def _event_json(event: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": event["kind"],
        "model_uuid": event["model_uuid"],
        "model_id": event["model_id"],
        "model_name": event["model_name"],
        "changes": event["changes"] or {},
    }


def enqueue_run(conn: Connection, run_id: int, targets: Targets | None) -> int:
    """Writes a run's alerts to the outbox, inside the transaction that wrote its changes.

    Reads the run's events from ``model_changes``, and for each target whose filters let some
    through writes one pending message; a run without changes writes none. A target past
    ``max_pending`` undelivered messages has its oldest dropped, with a warning.

    Returns:
        How many messages were written.
    """
    if not targets or not targets.items:
        return 0
    now = datetime.now(UTC)
    key = _hash_key(conn, create=True)
    assert key is not None
    hashes = _remember(conn, targets, key, now)
    events = queries.run_changes(conn, run_id)
    written = 0
    for target in targets.items if events else ():
        selected = target.filters.select(events)
        if not selected:
            continue
        message = compose(selected, run_id)
        target_hash = hashes[target.url]
        payload = {**message.payload, "idempotency_key": f"etl-run{run_id}-{target_hash[:16]}"}
        conn.execute(
            schema.notify_outbox.insert().values(
                target_hash=target_hash,
                run_id=run_id,
                created_at=now,
                status="pending",
                title=message.title,
                body=message.body,
                payload=payload,
                attempts=0,
            )
        )
        written += 1
        _drop_oldest(conn, target, target_hash, targets.max_pending)
    return written


def _hash_key(conn: Connection, create: bool = False) -> bytes | None:
    """The database's random key for target hashes; made, when ``create``, by the first run
    that has a target (under the run lock, so by one process)."""
    key = conn.execute(sa.select(schema.notify_key.c.hash_key)).scalar()
    if key is None and create:
        key = secrets.token_hex(32)
        conn.execute(schema.notify_key.insert().values(id=1, hash_key=key))
    return None if key is None else bytes.fromhex(key)


def _target_hash(key: bytes, url: str) -> str:
    return hmac.new(key, url.encode(), hashlib.sha256).hexdigest()


def _remember(conn: Connection, targets: Targets, key: bytes, now: datetime) -> dict[str, str]:
    """Records each target's hash and label, and that this run had it; returns the hashes."""
    table = schema.notify_targets
    hashes = {target.url: _target_hash(key, target.url) for target in targets.items}
    known = set(
        conn.execute(
            sa.select(table.c.target_hash).where(table.c.target_hash.in_(hashes.values()))
        ).scalars()
    )
    for target in targets.items:
        target_hash = hashes[target.url]
        if target_hash in known:
            conn.execute(
                table.update().where(table.c.target_hash == target_hash).values(last_seen_at=now)
            )
        else:
            conn.execute(
                table.insert().values(
                    target_hash=target_hash,
                    label=target.label,
                    first_seen_at=now,
                    last_seen_at=now,
                )
            )
    return hashes


def _drop_oldest(conn: Connection, target: Target, target_hash: str, max_pending: int) -> None:
    outbox = schema.notify_outbox
    over = list(
        conn.execute(
            sa.select(outbox.c.message_id)
            .where(outbox.c.target_hash == target_hash, outbox.c.status == "pending")
            .order_by(outbox.c.message_id.desc())
            .offset(max_pending)
        ).scalars()
    )
    if over:
        conn.execute(outbox.update().where(outbox.c.message_id.in_(over)).values(status="dropped"))
        log.warning(
            "alerts to %s #%s: more than %d undelivered; dropped the %d oldest",
            target.label,
            target_hash[:8],
            max_pending,
            len(over),
        )


@dataclass
class Delivery:
    """What :func:`deliver_pending` did.

    Attributes:
        delivered: Messages the targets accepted.
        failed: Delivery attempts that failed (each leaves its message pending).
        pending: Messages still pending for the configured targets.
        unconfigured: Messages pending for targets this run was not given.
    """

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    unconfigured: int = 0


def deliver_pending(
    engine: Engine,
    targets: Targets | None,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> Delivery:
    """Sends pending messages to the configured targets, oldest first, after the commit.

    A target that fails keeps its message and every later one pending (order is kept) and is
    not tried again before its backoff ends, unless ``force``. Nothing here fails the run:
    errors are logged and counted, and SIGTERM or SIGINT only ends the delivery.

    Args:
        engine: The catalog database.
        targets: The targets configured now; messages for others stay pending.
        force: Ignore backoff (``etl notify retry``).
        now: The current time (tests).

    Returns:
        The counts, also logged when anything was pending.
    """
    result = Delivery()
    if not targets or not targets.items:
        return result
    now = now or datetime.now(UTC)
    try:
        with engine.connect() as conn:
            key = _hash_key(conn)
        if key is None:  # no run ever had a target: nothing can be pending
            return result
        hashes = {_target_hash(key, target.url): target for target in targets.items}
        for target_hash, target in hashes.items():
            _deliver_to(engine, target, target_hash, force, now, result)
        result.unconfigured = _pending_elsewhere(engine, hashes)
    except (Interrupted, KeyboardInterrupt):
        # The run committed before: a signal now only ends the delivery, not the run.
        log.warning("alerts: delivery interrupted; what is pending goes with the next run")
    except Exception as exc:  # a delivery never fails the run it follows
        result.failed += 1
        hidden = set().union(*(url_secrets(t.url) for t in targets.items))
        log.error("alerts: delivery stopped: %s", mask(truncate(str(exc)), hidden))
    if any(asdict(result).values()):
        log_summary(log, "alerts delivered", asdict(result))
    return result


def retry_now(engine: Engine, targets: Targets) -> Delivery:
    """Delivers what is pending for ``targets`` now, whatever the backoff, holding the run lock
    so that no sync delivers the same messages at the same time.

    Raises:
        LockHeldError: A sync or backfill is running (it delivers when it ends).
    """
    with run_lock(engine):
        return deliver_pending(engine, targets, force=True)


def _deliver_to(
    engine: Engine, target: Target, target_hash: str, force: bool, now: datetime, result: Delivery
) -> None:
    outbox = schema.notify_outbox
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                sa.select(outbox)
                .where(outbox.c.target_hash == target_hash, outbox.c.status == "pending")
                .order_by(outbox.c.message_id)
            ).mappings()
        )
    if not rows:
        return
    wait_until = rows[0]["next_attempt_at"]
    if wait_until is not None and wait_until > now and not force:
        result.pending += len(rows)
        log.info(
            "alerts to %s #%s: %d pending; next try after %s",
            target.label,
            target_hash[:8],
            len(rows),
            format_instant(wait_until),
        )
        return
    for sent, row in enumerate(rows):
        error = _send(target, row["title"], row["body"], row["payload"])
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now}
        if error is None:
            values.update(status="delivered", delivered_at=now, last_error=None)
        else:
            backoff = min(BACKOFF_FIRST * 2 ** (attempts - 1), BACKOFF_MAX)
            values.update(last_error=error, next_attempt_at=now + timedelta(seconds=backoff))
        with engine.begin() as conn:
            conn.execute(
                outbox.update().where(outbox.c.message_id == row["message_id"]).values(**values)
            )
        if error is not None:
            result.failed += 1
            result.pending += len(rows) - sent
            log.warning(
                "alerts to %s #%s: run %d's message not delivered (attempt %d): %s; "
                "%d pending, next try after %s",
                target.label,
                target_hash[:8],
                row["run_id"],
                attempts,
                error,
                len(rows) - sent,
                format_instant(values["next_attempt_at"]),
            )
            return
        result.delivered += 1


def _pending_elsewhere(engine: Engine, configured: Mapping[str, Target]) -> int:
    outbox = schema.notify_outbox
    query = sa.select(sa.func.count()).where(
        outbox.c.status == "pending", outbox.c.target_hash.not_in(configured)
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _send(target: Target, title: str, body: str, payload: Mapping[str, Any]) -> str | None:
    """Sends one message; returns None when the target accepted it, else why not (no secret)."""
    apprise = _apprise()
    with _apprise_log() as reasons:
        try:
            service = apprise.Apprise.instantiate(target.url)
            if target.structured:
                # NotifyJSON adds its payload_extras to the JSON it posts and sends its headers.
                service.payload_extras = {**service.payload_extras, "etl": dict(payload)}
                service.headers = {**service.headers, "Idempotency-Key": payload["idempotency_key"]}
            sender = apprise.Apprise()
            sender.add(service)
            accepted = bool(sender.notify(body=body, title=title, body_format="text"))
        except Exception as exc:  # a plugin's own failure is a failed delivery
            reasons.append(f"{type(exc).__name__}: {exc}")
            accepted = False
    if accepted:
        return None
    # Apprise shows a private value as its first and last characters around "...": masked too.
    why = _ABRIDGED.sub("***", "; ".join(reasons) or "not accepted")
    return mask(truncate(why, 300), url_secrets(target.url))


def send_test(url: str) -> str:
    """Sends a test message to ``url`` (``etl notify test``), without the outbox.

    Returns:
        The target's label.

    Raises:
        ConfigError: Not an Apprise URL etl can send to.
        NotifyError: The target did not accept the message.
    """
    targets = load_targets([url], None, Filters())
    assert targets is not None
    target = targets.items[0]
    payload = {"test": True, "idempotency_key": f"etl-test-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"}
    body = (
        "A test message from etl. Alerts arrive like this one, one per run that changes the "
        "DigitalOcean GenAI model catalog."
    )
    error = _send(target, "etl: test alert", body, payload)
    if error is not None:
        raise NotifyError(f"{target.label} did not take the test message: {error}")
    return target.label


STATUS_COLUMNS = (
    "target", "run_id", "created_at", "state", "attempts", "last_attempt_at", "next_attempt_at",
    "last_error", "target_last_seen_at",
)  # fmt: skip


def undelivered(engine: Engine) -> list[dict[str, Any]]:
    """Messages not delivered (``etl notify status``), oldest first.

    ``state`` is ``pending`` (not tried yet), ``failing`` (tried and failed; tried again later)
    or ``dropped`` (past ``--notify-max-pending``); ``target`` is the label and the first
    characters of the keyed hash, which tell targets of one scheme apart;
    ``target_last_seen_at`` is when a run last had the target configured.
    """
    outbox, targets = schema.notify_outbox, schema.notify_targets
    query = (
        sa.select(outbox, targets.c.label, targets.c.last_seen_at)
        .select_from(outbox.join(targets))
        .where(outbox.c.status != "delivered")
        .order_by(outbox.c.message_id)
    )
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    for row in rows:
        row["target"] = f"{row['label']} #{row['target_hash'][:8]}"
        row["state"] = (
            "failing" if row["status"] == "pending" and row["attempts"] else row["status"]
        )
        row["target_last_seen_at"] = row["last_seen_at"]
    return rows


@contextmanager
def _apprise_log() -> Iterator[list[str]]:
    """Collects Apprise's warnings and errors, which name what went wrong, for etl to mask and
    report; nothing Apprise logs reaches the terminal or the logs directly."""
    reasons: list[str] = []
    handler = _Collect(reasons)
    logger = logging.getLogger("apprise")
    logger.addHandler(handler)
    try:
        yield reasons
    finally:
        logger.removeHandler(handler)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(" ".join(record.getMessage().split()))


def _apprise() -> Any:
    """Apprise, imported when alerts are configured (it takes a quarter second), with its own
    logger cut off: its messages may quote target URLs, so they go only through etl's masking."""
    import apprise

    logger = logging.getLogger("apprise")
    if not logger.handlers or logger.propagate:
        logger.propagate = False
        logger.addHandler(logging.NullHandler())
    return apprise
