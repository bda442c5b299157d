"""Pure functions: one model's JSON to the rows of every table, its normalised form and hash.

Nothing here touches the network or a database. The rules, documented in the README:

* The API (a gRPC gateway) leaves out fields at their zero value and may send ``null``. So absent,
  ``null`` and the zero value (``false``, ``0``, ``""``, ``[]``, ``{}``) mean the same thing.
* Absent booleans are false. Absent or empty strings and numbers are NULL. Version parts are the
  exception: an absent part is 0 (``{"major": 1}`` is version 1.0.0).
* A value of the wrong type, or one that does not fit its column, becomes NULL in the typed column
  and counts as a warning; ``raw`` always keeps the model exactly as received.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_BIGINT = 2**63 - 1
MAX_SHORT = 255
MAX_UUID = 64
MAX_TEXT_BYTES = 65_535
"""The most a TEXT column holds on MySQL/MariaDB (in UTF-8 bytes); the cap for every dialect."""
MAX_DEPTH = 100
"""Deepest nesting of objects and lists a model may have; deeper ones cannot be stored."""

KNOWN_FIELDS = frozenset(
    {
        "agreement", "benchmark_score", "capabilities", "context_window", "created_at",
        "description", "endpoints", "id", "is_foundational", "kb_default_chunk_size",
        "kb_max_chunk_size", "kb_min_chunk_size", "lifecycle_status", "modalities",
        "model_availability", "name", "parameter_count", "parent_uuid", "pricing", "provider",
        "reasoning_efforts", "settings", "thinking", "type", "updated_at", "upload_complete",
        "url", "uuid", "version",
    }
)  # fmt: skip
"""Every property of ``apiModelPublic`` in the spec; anything else is schema drift."""

PROVIDERS = frozenset(
    {"MODEL_PROVIDER_DIGITALOCEAN", "MODEL_PROVIDER_ANTHROPIC", "MODEL_PROVIDER_OPENAI"}
)
_TIMESTAMP_FIELDS = ("created_at", "updated_at")
_TEXT_COLUMNS: dict[str, int | None] = {
    "id": MAX_SHORT, "name": MAX_SHORT, "description": None, "parent_uuid": MAX_UUID, "url": None,
    "lifecycle_status": MAX_SHORT, "provider": MAX_SHORT, "type": MAX_SHORT,
    "model_availability": MAX_SHORT,
}  # fmt: skip
_BOOLEAN_COLUMNS = ("is_foundational", "upload_complete", "thinking")
_INTEGER_COLUMNS = (
    "kb_default_chunk_size",
    "kb_max_chunk_size",
    "kb_min_chunk_size",
    "context_window",
)
_INT64_FIELDS = frozenset(
    {"context_window", "kb_default_chunk_size", "kb_max_chunk_size", "kb_min_chunk_size"}
)
"""Top-level int64 fields: the gateway sends them as strings (``"12345"``, ``"0"``)."""
_VERSION_FIELDS = frozenset({"major", "minor", "patch"})
"""The int64 fields of ``version``."""
_NO_FIELDS: frozenset[str] = frozenset()
_INTEGER = re.compile(r"^\s*[+-]?\d{1,19}\s*$")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""Any surrogate left in a Python string is half a pair: json.loads joins whole pairs."""
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)


class BadModel(ValueError):
    """A model that cannot be stored at all (no usable uuid)."""


@dataclass
class FlatModel:
    """One model, flattened into rows.

    Attributes:
        uuid: The model's key.
        content_hash: Hash of the normalised model.
        model: The ``models`` row, without run-dependent columns.
        agreement: The ``agreements`` row, or None.
        version: (major, minor, patch).
        children: Rows for each child table, keyed by table name.
        raw_json: ``model["raw"]`` serialised, as it is stored.
        unknown_fields: Top-level fields the spec does not know.
        warnings: Values that did not fit their typed column.
        raw_hash: Digest of the model's bytes as received, when known (:mod:`etl.pages`).
    """

    uuid: str
    content_hash: str
    model: dict[str, Any]
    agreement: dict[str, Any] | None
    version: tuple[int, int, int]
    children: dict[str, list[dict[str, Any]]]
    raw_json: str
    unknown_fields: frozenset[str] = frozenset()
    warnings: list[str] = field(default_factory=list)
    raw_hash: str | None = None


def _is_zero(value: Any) -> bool:
    return (
        value is None
        or value is False
        or value == ""
        or value == []
        or value == {}
        or (type(value) in (int, float) and value == 0)
    )


def normalize(value: Any, int64: frozenset[str] = _INT64_FIELDS) -> Any:
    """Returns ``value`` with every zero-valued or null field dropped, recursively.

    Numbers compare by value: an integral float becomes an int (``1000.0`` is ``1000``), and
    the int64 fields the gateway sends as strings (``int64``) become ints, so ``"0"`` is a zero
    like ``0`` and absent. Booleans stay booleans. Timestamps lose trailing zeros of their
    fraction, so ``12:00:00.000Z`` equals ``12:00:00Z``. List order is kept; list elements are
    normalised but never dropped.
    """
    # The hot loop of every changed model: the zero test is inlined (see _is_zero).
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            kind = type(item)
            if kind is dict or kind is list or isinstance(item, dict | list):
                item = normalize(item, _VERSION_FIELDS if key == "version" else _NO_FIELDS)
                if not item:
                    continue
            elif kind is str:
                if not item:
                    continue
                if key in _TIMESTAMP_FIELDS:
                    item = _canonical_timestamp(item)
                elif key in int64 and _INTEGER.match(item):
                    item = int(item)
                    if not item:
                        continue
            elif item is None or item is False or ((kind is int or kind is float) and item == 0):
                continue
            elif kind is float and item.is_integer():
                item = int(item)
            result[key] = item
        return result
    if isinstance(value, list):
        return [_normal_item(item) for item in value]
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _normal_item(item: Any) -> Any:
    if isinstance(item, dict | list):
        return normalize(item, _NO_FIELDS)
    if type(item) is float and item.is_integer():
        return int(item)
    return item


def _canonical_timestamp(text: str) -> str:
    match = _TIMESTAMP.match(text)
    if not match:
        return text
    date, time, fraction, zone = match.groups()
    fraction = (fraction or "").rstrip("0")
    zone = "Z" if zone in ("Z", "z", "+00:00", "-00:00") else zone
    return f"{date}T{time}{'.' + fraction if fraction else ''}{zone}"


def canonical_json(value: Any) -> str:
    """Serialises ``value`` with sorted keys and no spaces: the form that gets hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(model: Mapping[str, Any]) -> str:
    """Returns the SHA-256 of the normalised model: equal for equal content, whatever the form."""
    return hashlib.sha256(canonical_json(normalize(model)).encode()).hexdigest()


class _Coercer:
    """Typed-column conversions that record a warning instead of failing."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.careful = True
        """Whether strings may be unstorable; the model's JSON tells when they cannot be."""

    def _warn(self, name: str, value: Any, why: str) -> None:
        shown = repr(value)
        self.warnings.append(f"{name}: {why} ({shown[:60]}{'...' if len(shown) > 60 else ''})")

    # Each method decides the usual case (a value of the right type) first: a model calls
    # them about 60 times, so flattening is mostly these calls.

    def text(self, name: str, value: Any, limit: int | None = None) -> str | None:
        if (
            type(value) is str
            and value
            and not self.careful
            and (limit is None or len(value) <= limit)
        ):
            return value
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            if _is_zero(value):
                return None
            self._warn(name, value, "not a string")
            return None
        if limit is not None and len(value) > limit:
            self._warn(name, value, f"longer than {limit} characters")
            return None
        problem = _unstorable(value) if self.careful else None
        if problem:
            self._warn(name, value, problem)
            return None
        return value

    def boolean(self, name: str, value: Any) -> bool:
        if value is True or value is False:
            return value
        if _is_zero(value):
            return False
        if not isinstance(value, bool):
            self._warn(name, value, "not a boolean")
            return False
        return value

    def integer(self, name: str, value: Any, *, zero: int | None = None) -> int | None:
        if type(value) is int and value and abs(value) <= MAX_BIGINT:
            return value
        if _is_zero(value):
            return zero
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                self._warn(name, value, "not an integer")
                return zero
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._warn(name, value, "not an integer")
            return zero
        if abs(value) > MAX_BIGINT:
            self._warn(name, value, "out of range")
            return zero
        return value or zero  # "0" is the gateway's zero, like 0 and absent

    def number(self, name: str, value: Any) -> float | None:
        if type(value) is float and value and math.isfinite(value) and abs(value) <= 1e300:
            return value  # the usual case, decided at once
        if _is_zero(value):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._warn(name, value, "not a number")
            return None
        number = float(value)
        if not math.isfinite(number) or abs(number) > 1e300:
            self._warn(name, value, "out of range")
            return None
        return number

    def timestamp(self, name: str, value: Any) -> datetime | None:
        if _is_zero(value):
            return None
        match = _TIMESTAMP.match(value) if isinstance(value, str) else None
        if not match:
            self._warn(name, value, "not an RFC 3339 timestamp")
            return None
        date, time, fraction, zone = match.groups()
        micro = (fraction or "").ljust(6, "0")[:6]
        zone = "+00:00" if zone in ("Z", "z") else zone
        try:
            parsed = datetime.fromisoformat(f"{date}T{time}.{micro}{zone}")
        except ValueError:
            self._warn(name, value, "not a valid date")
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is in year 0
            self._warn(name, value, "out of range")
            return None

    def mapping(self, name: str, value: Any) -> dict[str, Any]:
        if type(value) is dict:
            return value
        if _is_zero(value):
            return {}
        if not isinstance(value, dict):
            self._warn(name, value, "not an object")
            return {}
        return value

    def items(self, name: str, value: Any) -> list[Any]:
        if type(value) is list:
            return value
        if _is_zero(value):
            return []
        if not isinstance(value, list):
            self._warn(name, value, "not a list")
            return []
        return value

    def keys(self, name: str, value: Any) -> list[str]:
        """A list of short strings, deduplicated in order, bad elements dropped with a warning."""
        seen: dict[str, None] = {}
        for item in self.items(name, value):
            text = self.text(name, item, MAX_SHORT)
            if text is not None:
                seen.setdefault(text, None)
        return list(seen)


def flatten(model: Any) -> FlatModel:
    """Flattens one model as the API sent it.

    Args:
        model: One element of a listing's ``models``.

    Returns:
        The rows for every table.

    Raises:
        BadModel: The model is not an object or has no usable uuid.
    """
    if not isinstance(model, dict):
        raise BadModel(f"model is not an object: {str(model)[:60]!r}")
    c = _Coercer()
    uuid = c.text("uuid", model.get("uuid"), MAX_UUID)
    if uuid is None:
        raise BadModel(f"model without a usable uuid (id {str(model.get('id'))[:60]!r})")
    # Normalising, hashing and storing ``raw`` all recurse: a model nested deeper than
    # MAX_DEPTH could crash them. Few brackets in its JSON prove it is not, cheaply. The same
    # JSON is what gets stored as ``raw`` (raw_json), so making it costs nothing extra.
    too_deep = BadModel(f"model {uuid} is nested deeper than {MAX_DEPTH} levels")
    try:
        text = json.dumps(model, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise too_deep from None
    except ValueError:  # NaN or an infinity
        text = ""
    if (not text or text.count("{") + text.count("[") > MAX_DEPTH) and _nested_deeper_than(
        model, MAX_DEPTH
    ):
        raise too_deep
    if not text or _LONE_SURROGATE.search(text):
        # Python's JSON parser takes NaN, infinities and half a surrogate pair ("\ud800"), but
        # no database's JSON or text type does: even raw gets null or U+FFFD in their place.
        model = _repaired(model)
        c.warnings.append("NaN, infinity or lone surrogate replaced by null or U+FFFD in raw")
        text = json.dumps(model, ensure_ascii=False)
    c.careful = "\\u0000" in text or len(text) > MAX_TEXT_BYTES // 4

    agreement_json = c.mapping("agreement", model.get("agreement"))
    agreement_uuid = c.text("agreement.uuid", agreement_json.get("uuid"), MAX_UUID)
    agreement = None
    if agreement_uuid is not None:
        agreement = {
            "uuid": agreement_uuid,
            "name": c.text("agreement.name", agreement_json.get("name"), MAX_SHORT),
            "description": c.text("agreement.description", agreement_json.get("description")),
            "url": c.text("agreement.url", agreement_json.get("url")),
        }

    version_json = c.mapping("version", model.get("version"))
    version = (
        c.integer("version.major", version_json.get("major"), zero=0) or 0,
        c.integer("version.minor", version_json.get("minor"), zero=0) or 0,
        c.integer("version.patch", version_json.get("patch"), zero=0) or 0,
    )
    row: dict[str, Any] = {"uuid": uuid}
    for name, limit in _TEXT_COLUMNS.items():
        row[name] = c.text(name, model.get(name), limit)
    for name in _BOOLEAN_COLUMNS:
        row[name] = c.boolean(name, model.get(name))
    for name in _INTEGER_COLUMNS:
        row[name] = c.integer(name, model.get(name))
    for name in _TIMESTAMP_FIELDS:
        row[name] = c.timestamp(name, model.get(name))
    if row["provider"] is not None and row["provider"] not in PROVIDERS:
        c.warnings.append(f"provider: unknown value ({row['provider'][:60]!r}), kept")
    benchmark = model.get("benchmark_score")
    row.update(
        parameter_count=c.number("parameter_count", model.get("parameter_count")),
        version_major=version[0],
        version_minor=version[1],
        version_patch=version[2],
        agreement_uuid=agreement_uuid,
        benchmark_score=None if _is_zero(benchmark) else benchmark,
        raw=model,
    )
    children = _children(uuid, model, c)
    return FlatModel(
        uuid=uuid,
        content_hash=content_hash(model),
        model=row,
        agreement=agreement,
        version=version,
        children=children,
        unknown_fields=frozenset(model.keys() - KNOWN_FIELDS),
        warnings=c.warnings,
        raw_json=text,
    )


CHILD_SOURCES: dict[str, tuple[str, ...]] = {
    "model_capabilities": ("capabilities",),
    "model_modalities": ("modalities",),
    "model_endpoints": ("endpoints",),
    "model_endpoint_capabilities": ("endpoints",),
    "model_reasoning_efforts": ("reasoning_efforts",),
    "model_settings": ("settings",),
    "model_pricing": ("pricing",),
}
"""The fields of a model each child table is made from (by :func:`_children`, and nothing
else): where they are the same JSON, the table's rows for the model are the same."""


def _children(uuid: str, model: dict[str, Any], c: _Coercer) -> dict[str, list[dict[str, Any]]]:
    modalities = c.mapping("modalities", model.get("modalities"))
    endpoints: dict[str, list[str]] = {}
    for item in c.items("endpoints", model.get("endpoints")):
        item = c.mapping("endpoints[]", item)
        path = c.text("endpoints[].endpoint", item.get("endpoint"), MAX_SHORT)
        if path is not None:
            caps = endpoints.setdefault(path, [])
            for cap in c.keys("endpoints[].capabilities", item.get("capabilities")):
                if cap not in caps:
                    caps.append(cap)
    settings: dict[str, dict[str, Any]] = {}
    for item in c.items("settings", model.get("settings")):
        item = c.mapping("settings[]", item)
        name = c.text("settings[].name", item.get("name"), MAX_SHORT)
        if name is None or name in settings:
            continue
        options = c.keys("settings[].options", item.get("options"))
        settings[name] = {
            "model_uuid": uuid,
            "name": name,
            "type": c.text("settings[].type", item.get("type"), MAX_SHORT),
            "default_value": c.number("settings[].default_value", item.get("default_value")),
            "default_string": c.text("settings[].default_string", item.get("default_string")),
            "min": c.number("settings[].min", item.get("min")),
            "max": c.number("settings[].max", item.get("max")),
            "step": c.number("settings[].step", item.get("step")),
            "options": options or None,
        }
    pricing = []
    for key, value in c.mapping("pricing", model.get("pricing")).items():
        price = c.number(f"pricing.{key}", value)
        if price is not None and c.text("pricing key", key, MAX_SHORT) is not None:
            pricing.append({"model_uuid": uuid, "price_key": key, "price": price})
    capabilities = c.keys("capabilities", model.get("capabilities"))
    efforts = c.keys("reasoning_efforts", model.get("reasoning_efforts"))
    return {
        "model_capabilities": _rows(uuid, "capability", capabilities),
        "model_modalities": [
            {"model_uuid": uuid, "direction": direction, "modality": modality}
            for direction in ("input", "output")
            for modality in c.keys(f"modalities.{direction}", modalities.get(direction))
        ],
        "model_endpoints": _rows(uuid, "endpoint", endpoints),
        "model_endpoint_capabilities": [
            {"model_uuid": uuid, "endpoint": path, "capability": cap}
            for path, caps in endpoints.items()
            for cap in caps
        ],
        "model_reasoning_efforts": _rows(uuid, "effort", efforts),
        "model_settings": list(settings.values()),
        "model_pricing": pricing,
    }


def _unstorable(text: str) -> str | None:
    """Why a string cannot go into a text column on every dialect, or None when it can."""
    if "\x00" in text:
        return "holds a NUL character (PostgreSQL cannot store it)"
    if _LONE_SURROGATE.search(text):
        return "not valid Unicode (a lone surrogate)"
    if len(text) > MAX_TEXT_BYTES // 4 and len(text.encode()) > MAX_TEXT_BYTES:
        return f"longer than {MAX_TEXT_BYTES} bytes"
    return None


def _repaired(value: Any) -> Any:
    """``value`` with lone surrogates replaced by U+FFFD and non-finite numbers by None."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_repaired(key): _repaired(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_repaired(item) for item in value]
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    # iterative, so the check itself cannot hit the recursion limit
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            stack.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return False


def _rows(uuid: str, column: str, values: Iterable[str]) -> list[dict[str, Any]]:
    return [{"model_uuid": uuid, column: value} for value in values]


def changed_fields(old: Any, new: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Lists what differs between two models, by dotted path, on their normalised forms.

    Objects are compared key by key (``pricing.output_price_per_million``); lists and scalars
    whole.

    Returns:
        ``{path: {"old": value, "new": value}}``, with None for an absent side.
    """
    result: dict[str, dict[str, Any]] = {}
    if not (isinstance(old, dict) and isinstance(new, dict)):
        _diff(normalize(old), normalize(new), prefix, result)
        return result
    # Fields equal as received are equal normalised: only the others are normalised and compared.
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if not same_json(before, after):
            path = f"{prefix}.{key}" if prefix else key
            _diff(_normal_field(key, before), _normal_field(key, after), path, result)
    return result


def _normal_field(key: str, value: Any) -> Any:
    """One field's value as :func:`normalize` leaves it in its object (None: dropped)."""
    return normalize({key: value}).get(key)


def _diff(old: Any, new: Any, prefix: str, result: dict[str, dict[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            _diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key, result)
    elif not same_json(old, new):
        result[prefix] = {"old": old, "new": new}


def same_json(old: Any, new: Any) -> bool:
    """Whether two values are the same JSON: equal, and of the same types (``1`` is neither
    ``1.0`` nor ``true``, which Python calls equal)."""
    return old == new and not _differ_in_type(old, new)


def _differ_in_type(old: Any, new: Any) -> bool:
    """Whether two values Python calls equal differ in the content hash: ``1`` and ``true``
    (or such a pair inside a list or an object). Normalised numbers are ints or floats by
    value already. Walked rather than serialised: equal values have the same keys and
    lengths, so only the types of their leaves can tell them apart."""
    kind = type(old)
    if kind is not type(new):
        return True
    if kind is dict:
        return any(_differ_in_type(value, new[key]) for key, value in old.items())
    if kind is list:
        return any(map(_differ_in_type, old, new))
    return False


def snapshot_digest(models: Iterable[tuple[str, str]]) -> str:
    """A digest of a whole snapshot from its (uuid, content hash) pairs, in any order."""
    text = "".join([f"{uuid}={content};" for uuid, content in sorted(models)])
    # surrogatepass: a listed uuid may hold half a surrogate pair (the model is skipped)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
