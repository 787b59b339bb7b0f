"""bytes -> Decoded | Rejected. Never raises: a rejection carries its reason.

The reason is a short, bounded-cardinality code (used as a metric label) plus a detail string that
names the offending field. Details never quote field values: events carry personal data.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from streams.core.events import EVENT_ADAPTER, EVENT_TYPES, AnyEvent

# Reason codes. Kept as constants because dashboards and alerting rules match on them.
EMPTY = "empty"
TOO_LARGE = "too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
TOO_DEEP = "too_deep"
UNKNOWN_TYPE = "unknown_event_type"
CONTRACT = "contract_violation"
BAD_TIME = "timestamp_out_of_range"
ID_CONFLICT = "event_id_conflict"  # not decode's: an event id reused with other content (``Engine.admit``)

REASONS = (EMPTY, TOO_LARGE, INVALID_UTF8, INVALID_JSON, NOT_OBJECT, TOO_DEEP, UNKNOWN_TYPE, CONTRACT, BAD_TIME,
           ID_CONFLICT)  # fmt: skip

EARLIEST = 946684800.0  # 2000-01-01T00:00:00Z: nothing this platform logged is older


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on hostile input; every one is a setting (see streams/config/settings.py)."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 32
    max_future_seconds: float = 86400.0


@dataclass(frozen=True, slots=True)
class Decoded:
    event: AnyEvent
    view: dict[str, Any]  # the parsed JSON object; rules read fields from it
    ts: float  # occurred_at as POSIX seconds


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str


DEFAULT_LIMITS = Limits()


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping early once past ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return deepest


def _describe(error: ValidationError) -> tuple[str, str]:
    first = error.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in first["loc"]]
    if first["type"] == "union_tag_invalid":
        return UNKNOWN_TYPE, f"event_type: must be one of {', '.join(EVENT_TYPES)}"
    if first["type"] == "union_tag_not_found":
        return CONTRACT, "event_type: field required"
    # The first location element is the discriminator value (the model's tag); drop it.
    if loc and loc[0] in EVENT_TYPES:
        loc = loc[1:]
    path = ".".join(loc) or "(event)"
    more = error.error_count() - 1
    suffix = f" (+{more} more)" if more > 0 else ""
    return CONTRACT, f"{path}: {first['msg'].removeprefix('Value error, ')}{suffix}"


def decode(raw: bytes | str, limits: Limits = DEFAULT_LIMITS, now: float | None = None) -> Decoded | Rejected:
    """Decode one record. ``now`` bounds future timestamps (the wall clock if not given)."""
    size = len(raw)
    if size > limits.max_bytes:
        return Rejected(TOO_LARGE, f"record is {size} bytes, limit {limits.max_bytes}")
    data = _fast_parse(raw, limits)
    if data is not None:
        return _validate(data, limits, now)
    # The slow path, for every record the fast one refused (an empty one among them): it names
    # the reason.
    if not raw.strip():
        return Rejected(EMPTY, "empty record")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejected(INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}")
    else:
        text = raw
    # Cheap bound first: depth can't exceed the number of openers. Only a suspicious record is walked.
    openers = text.count("{") + text.count("[")
    try:
        data = json.loads(text)
    except RecursionError:
        return Rejected(TOO_DEEP, f"nesting deeper than {limits.max_depth}")
    except ValueError as exc:
        return Rejected(INVALID_JSON, f"invalid JSON: {str(exc).split(':')[0]}")
    if not isinstance(data, dict):
        return Rejected(NOT_OBJECT, f"expected a JSON object, got {type(data).__name__}")
    if openers > limits.max_depth and _depth(data, limits.max_depth) > limits.max_depth:
        return Rejected(TOO_DEEP, f"nesting deeper than {limits.max_depth}")
    return _validate(data, limits, now)


def _fast_parse(raw: bytes | str, limits: Limits) -> dict[str, Any] | None:
    """The parsed object when orjson reads it as a JSON object within the depth limit, else None.

    orjson is stricter than ``json`` (no NaN or Infinity, no lone surrogates) and its errors do not
    say what ``decode`` reports, so whatever it refuses goes through ``json`` as before. One
    difference remains: an integer outside [-2**63, 2**64) becomes a float instead of an exact int.
    Every integer of the contract is bounded far below that, so such a record is rejected either way
    (``contract_violation``, with pydantic's wording for a float); in an unknown extra field the view
    holds the float. Checking for it costs more than orjson saves (a regex scan: ~5 us a record).
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    openers = raw.count(b"{") + raw.count(b"[") if isinstance(raw, bytes) else raw.count("{") + raw.count("[")
    if openers > limits.max_depth and _depth(data, limits.max_depth) > limits.max_depth:
        return None
    return data


def _validate(data: dict[str, Any], limits: Limits, now: float | None) -> Decoded | Rejected:
    try:
        event = EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        reason, detail = _describe(exc)
        return Rejected(reason, detail)
    ts = event.occurred_at.timestamp()
    horizon = (time.time() if now is None else now) + limits.max_future_seconds
    if ts < EARLIEST or ts > horizon:
        return Rejected(BAD_TIME, "occurred_at: before 2000 or too far in the future")
    return Decoded(event, data, ts)
