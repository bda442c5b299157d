"""History as a projection: a pure fold of the stored observations, in time order.

Every run stores what it observed (:mod:`etl.observe`): which models, with which content, and
whether the listing may mark models removed. The history tables are a function of those
observations taken in (observed_at, run id) order. :func:`fold` applies one run to a
:class:`State` and returns what that run did (:class:`Effects`); nothing here touches a
database. The rules (the README's "How history is derived"):

* A model's content is its normalised JSON (:func:`etl.transform.content_hash`); a new history
  row opens only when that changes, and always shows at least one changed field.
* ``raw`` of a history row is the model as received by the run that opened the row.
* A model absent from a run that marks removals is removed; one that comes back is restored.
* An agreement's content at a run is the greatest (name, description, url) over every model
  present in that run.
* A usecase membership opens when a usecase listing first holds the model and ends when a
  complete usecase listing no longer does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from etl.transform import changed_fields

AgreementValues = tuple[str | None, str | None, str | None]
"""An agreement's (name, description, url)."""


class Content(NamedTuple):
    """One distinct model content, as stored once in ``observed_contents`` (a named tuple: a
    sync makes one for every model it holds, three times faster than a frozen dataclass).

    Attributes:
        content_id: Its key.
        uuid: The model it belongs to.
        content_hash: Hash of the normalised model: equal contents have equal hashes.
        raw_hash: Digest of the model's JSON as received.
        version: (major, minor, patch).
        agreement: The agreement's uuid and values the model carries, or None.
    """

    content_id: int
    uuid: str
    content_hash: str
    raw_hash: str
    version: tuple[int, int, int]
    agreement: tuple[str, AgreementValues] | None


class ContentSource(Protocol):
    """Contents by id (:class:`etl.observe.Contents`); ``raw`` is read only where needed."""

    def __getitem__(self, content_id: int) -> Content: ...

    def raw(self, content_id: int) -> Any: ...

    def prefetch(self, ids: Sequence[int]) -> None:
        """Reads these contents at once (a hint: ``[]`` works without it)."""

    def prefetch_raw(self, ids: Sequence[int]) -> None:
        """Reads these contents' ``raw`` at once (a hint, likewise)."""

    def agreements(self, ids: Iterable[int]) -> set[tuple[str, AgreementValues] | None]:
        """``{self[i].agreement for i in ids}`` (which it may read without the rest)."""


@dataclass(frozen=True)
class Run:
    """One run's observation.

    Attributes:
        run_id: ``sync_runs.id``.
        observed_at: When the catalog was observed.
        members: The content id of every model the run holds, by model uuid.
        marks_removals: Whether the listing was complete and unfiltered, so that a present
            model missing from it is removed.
        usecases: For each usecase listed: its members' uuids, and whether that listing was
            complete.
        snapshot_id: The stored snapshot; runs that share one saw the same models.
        also_present: Models a confirming listing found whose content the run did not keep:
            a present one stays as it is, instead of being removed.
        seen: How many models the run listed (``sync_runs.models_seen``), for its counts.
    """

    run_id: int
    observed_at: datetime
    members: Mapping[str, int]
    marks_removals: bool
    usecases: Mapping[str, tuple[frozenset[str], bool]] = field(default_factory=dict)
    snapshot_id: int | None = None
    also_present: frozenset[str] = frozenset()
    seen: int | None = None


@dataclass(slots=True)
class ModelState:
    """A model as the fold has it after the runs so far.

    ``first_seen_at`` is None only in a state read from the tables (:func:`etl.load.load_state`):
    it never changes once set, so the loader reads it only for the rows a run rewrites.
    """

    content_id: int
    present: bool
    first_seen_at: datetime | None
    removed_at: datetime | None = None


@dataclass
class AgreementState:
    values: AgreementValues
    first_seen_at: datetime


@dataclass
class State:
    """Everything the next run's effects depend on."""

    models: dict[str, ModelState] = field(default_factory=dict)
    agreements: dict[str, AgreementState] = field(default_factory=dict)
    versions: set[tuple[str, int, int, int]] = field(default_factory=set)
    usecases: dict[tuple[str, str], datetime] = field(default_factory=dict)
    """Open usecase memberships: (model uuid, usecase) -> since when."""
    last_snapshot: int | None = None
    """The snapshot of the last run folded, for the shortcut in :func:`fold`."""


@dataclass
class Effects:
    """What one run did.

    Attributes:
        opened: (model uuid, content id) of each history row the run opens.
        closed: Model uuids whose open history row the run closes.
        events: (model uuid, kind, field changes or None), kind one of added, changed,
            removed, restored.
        agreements_opened: Agreement uuids whose content the run (re)opens.
        agreements_closed: Agreement uuids whose open history row the run closes.
        versions: (model uuid, major, minor, patch) first seen in this run.
        usecases_opened: (model uuid, usecase) memberships the run opens.
        usecases_closed: (model uuid, usecase, since) memberships the run ends.
        touched: Model uuids whose ``models`` row changes.
        previous: For each model already known whose row opens, the content it held until
            then (whose child rows the tables hold).
    """

    opened: list[tuple[str, int]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    events: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    agreements_opened: list[str] = field(default_factory=list)
    agreements_closed: list[str] = field(default_factory=list)
    versions: list[tuple[str, int, int, int]] = field(default_factory=list)
    usecases_opened: list[tuple[str, str]] = field(default_factory=list)
    usecases_closed: list[tuple[str, str, datetime]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    previous: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.events or self.agreements_opened or self.usecases_opened
                    or self.usecases_closed)  # fmt: skip

    def count(self, kind: str) -> int:
        """How many events of ``kind`` the run had."""
        return sum(1 for _, event, _ in self.events if event == kind)


def fold(state: State, run: Run, contents: ContentSource) -> Effects:
    """Applies one run to ``state`` (in place) and returns its effects.

    A run that saw the same snapshot as the run before it, and whose present models are
    exactly that snapshot's, changes nothing: it is decided without looking at a model. The
    property tests hold this shortcut to the full fold.

    Args:
        state: The state after every earlier run.
        run: The next run in (observed_at, run id) order.
        contents: Every content the run's members name.
    """
    effects = Effects()
    if _repeats(state, run):
        _fold_usecases(state, run, effects)
        return effects
    t = run.observed_at
    # What the loop below reads, read at once: the contents of the members it looks at and
    # their previous ones, and the raw JSON of those whose content changed (for their field
    # diff). Nothing else of a model is read: a state read from the tables holds only ids.
    looked_at = unsettled(state, run.members)
    moved = [
        (state.models[uuid].content_id, run.members[uuid])
        for uuid in looked_at
        if uuid in state.models and state.models[uuid].content_id != run.members[uuid]
    ]
    contents.prefetch([*(before for before, _ in moved), *(run.members[u] for u in looked_at)])
    contents.prefetch_raw(
        [
            content_id
            for before, after in moved
            if contents[before].content_hash != contents[after].content_hash
            for content_id in (before, after)
        ]
    )
    for uuid in sorted(looked_at):
        content = contents[run.members[uuid]]
        model = state.models.get(uuid)
        if model is None:
            state.models[uuid] = ModelState(content.content_id, True, t)
            _open(effects, state, uuid, content, "added", None)
            continue
        same = model.content_id == content.content_id or (
            contents[model.content_id].content_hash == content.content_hash
        )
        if model.present and same:
            continue
        diff = (
            None
            if same
            else changed_fields(contents.raw(model.content_id), contents.raw(content.content_id))
        )
        if model.present:
            effects.closed.append(uuid)
            _open(effects, state, uuid, content, "changed", diff)
        else:
            model.present, model.removed_at = True, None
            _open(effects, state, uuid, content, "restored", diff or None)
        effects.previous[uuid] = model.content_id
        model.content_id = content.content_id
    if run.marks_removals:
        gone = [
            uuid
            for uuid, model in state.models.items()
            if model.present and uuid not in run.members and uuid not in run.also_present
        ]
        for uuid in sorted(gone):
            model = state.models[uuid]
            model.present, model.removed_at = False, t
            effects.closed.append(uuid)
            effects.events.append((uuid, "removed", None))
            effects.touched.add(uuid)
    _fold_agreements(state, run, contents, effects)
    _fold_usecases(state, run, effects)
    state.last_snapshot = run.snapshot_id
    return effects


def unsettled(state: State, members: Mapping[str, int]) -> list[str]:
    """The members a run must look at: those new, absent until now, or holding another
    content than before. A model present with the same content is left as it is, so only
    these can open a history row."""
    models = state.models
    return [
        uuid
        for uuid, content_id in members.items()
        if (known := models.get(uuid)) is None
        or known.content_id != content_id
        or not known.present
    ]


def _repeats(state: State, run: Run) -> bool:
    if run.snapshot_id is None or run.snapshot_id != state.last_snapshot or run.also_present:
        return False
    present = sum(1 for model in state.models.values() if model.present)
    return present == len(run.members)


def _open(
    effects: Effects,
    state: State,
    uuid: str,
    content: Content,
    kind: str,
    diff: dict[str, Any] | None,
) -> None:
    effects.opened.append((uuid, content.content_id))
    effects.events.append((uuid, kind, diff))
    effects.touched.add(uuid)
    version = (uuid, *content.version)
    if version not in state.versions:
        state.versions.add(version)
        effects.versions.append(version)


def _fold_agreements(state: State, run: Run, contents: ContentSource, effects: Effects) -> None:
    chosen: dict[str, AgreementValues] = {}
    # A catalog's models share a few agreements: each distinct one is compared once (and
    # read once: the contents of unchanged models are not read for it). Their order does
    # not matter: _order is one-to-one on what flatten gives (no empty text).
    carried = contents.agreements(run.members.values())
    for agreement in carried:
        if agreement is None:
            continue
        uuid, values = agreement
        best = chosen.get(uuid)
        if best is None or _order(values) > _order(best):
            chosen[uuid] = values
    for uuid in sorted(chosen):
        values = chosen[uuid]
        known = state.agreements.get(uuid)
        if known is None:
            state.agreements[uuid] = AgreementState(values, run.observed_at)
        elif known.values == values:
            continue
        else:
            known.values = values
            effects.agreements_closed.append(uuid)
        effects.agreements_opened.append(uuid)


def _order(values: AgreementValues) -> tuple[str, ...]:
    return tuple(value or "" for value in values)


def _fold_usecases(state: State, run: Run, effects: Effects) -> None:
    for usecase in sorted(run.usecases):
        members, complete = run.usecases[usecase]
        members = members & state.models.keys()
        for uuid in sorted(members):
            if (uuid, usecase) not in state.usecases:
                state.usecases[(uuid, usecase)] = run.observed_at
                effects.usecases_opened.append((uuid, usecase))
        if complete:
            for (uuid, name), since in sorted(state.usecases.items()):
                if name == usecase and uuid not in members:
                    del state.usecases[(uuid, name)]
                    effects.usecases_closed.append((uuid, name, since))
