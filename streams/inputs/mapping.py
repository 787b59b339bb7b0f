"""A source mapping: the model of one mapping file and its compiled form, ``Mapping``.

``Mapping.map(record)`` turns one raw record into a list of outcomes, each one of:

- ``Mapped(event, decoded, line)``: the contract event as the mapper built it (``event``), the same
  event through ``streams.core.decode.decode`` (``decoded``: exactly what backtest and the worker
  read), and its JSON text with sorted keys (``line``: what ``modwatch normalize`` writes);
- ``Dropped(action, why)``: an action the mapping does not map (``unmapped``) or one ``drop_when``
  matched (``drop_when``); counted per source and action, never a dead letter;
- ``Rejected(reason, detail)``: a malformed record (no action, no time, a failed conversion, a
  contract violation...): a dead letter. Details name fields, never values.

A record gives one outcome, or several with ``unwrap`` (a list of records inside it) or ``explode``
(a list of items each of which becomes an event; ``item.`` paths read the current item).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.core import decode as dec
from streams.core.events import EVENT_TYPES, AccessGrant, DataExport, ModerationAction, ReportFiled, RequestReceived
from streams.inputs.convert import ConversionError
from streams.inputs.expr import Compiled, Expr, Scope, compile_expr, compile_path, parse_path

# The mapper's own rejection reasons (decode's come on top: contract_violation, timestamp_out_of_range...).
NOT_OBJECT = "not_object"
UNWRAP_MISSING = "unwrap_missing"
EXPLODE_MISSING = "explode_missing"
MISSING_ACTION = "missing_action"
MISSING_TIME = "missing_time"
MISSING_EVENT_ID = "missing_event_id"
CONVERSION = "conversion_failed"
REASONS = (NOT_OBJECT, UNWRAP_MISSING, EXPLODE_MISSING, MISSING_ACTION, MISSING_TIME, MISSING_EVENT_ID, CONVERSION,
           *dec.REASONS)  # fmt: skip

UNMAPPED = "unmapped"
DROP_WHEN = "drop_when"
SET_BY_MAPPER = ("event_id", "event_type", "occurred_at", "source")
ID_HASH_HEX = 24

_MODELS: dict[str, type[BaseModel]] = {
    "request.received": RequestReceived,
    "access.grant": AccessGrant,
    "data.export": DataExport,
    "report.filed": ReportFiled,
}


def _model(event_type: str) -> type[BaseModel]:
    return _MODELS.get(event_type, ModerationAction)


def contract_fields(event_type: str) -> dict[str, set[str] | None]:
    """Top-level field -> its sub-fields (None for a scalar or a list) for one event type."""
    out: dict[str, set[str] | None] = {}
    for name, info in _model(event_type).model_fields.items():
        annotation = info.annotation
        nested = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        sub = next((set(a.model_fields) for a in nested if issubclass(a, BaseModel)), None)
        out[name] = sub
    return out


ALL_FIELDS: dict[str, set[str] | None] = {}
for _type in EVENT_TYPES:
    for _name, _sub in contract_fields(_type).items():
        ALL_FIELDS[_name] = (ALL_FIELDS.get(_name) or set()) | _sub if _sub is not None else ALL_FIELDS.get(_name)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Spec):
    """A ``drop_when`` entry: the value at ``path`` is one of ``in``, or exists / does not."""

    path: str
    in_: list[Any] | None = Field(default=None, alias="in")
    exists: bool | None = None
    actions: list[str] | None = None  # only for these source actions (all when absent)

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        parse_path(self.path)
        if (self.in_ is None) == (self.exists is None):
            raise ValueError("give exactly one of 'in' and 'exists'")
        return self


class HashId(_Spec):
    hash: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _paths(self) -> HashId:
        for path in self.hash:
            parse_path(path)
        return self


class IdOrHash(Expr):
    """``event_id: {path: metadata.uid, or_hash: [time, type_uid]}``: the source's id when the
    expression gives one, else the hash of ``or_hash``'s paths (as ``{hash: [...]}``; no provenance id)."""

    or_hash: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _hash_paths(self) -> IdOrHash:
        for path in self.or_hash:
            parse_path(path)
        return self


class Keep(_Spec):
    """Values kept in the provenance (``source``) for the steps after mapping, which the contract
    ignores: ``ip``, the address the action came from, which geo-IP reads (``source.ip``)."""

    ip: Expr | None = None


class MappingSpec(_Spec):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1)
    description: str = Field(min_length=1)
    format: Literal["json", "csv"] = "json"
    unwrap: str | None = None
    explode: str | None = None
    action: Expr
    actions: dict[str, str] = Field(min_length=1)
    time: Expr
    event_id: HashId | IdOrHash | Expr
    fields: dict[str, Expr]
    per_action: dict[str, dict[str, Expr]] = Field(default_factory=dict)
    drop_when: list[Condition] = Field(default_factory=list)
    keep: Keep = Field(default_factory=Keep)

    @model_validator(mode="before")
    @classmethod
    def _event_id_form(cls, data: Any) -> Any:
        given = data.get("event_id") if isinstance(data, dict) else None
        if isinstance(given, dict) and "hash" in given:
            data = {**data, "event_id": HashId.model_validate(given)}
        elif isinstance(given, dict) and "or_hash" in given:
            data = {**data, "event_id": IdOrHash.model_validate(given)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> MappingSpec:
        for action, event_type in self.actions.items():
            if event_type not in EVENT_TYPES:
                raise ValueError(f"actions.{action}: {event_type!r} is not an event type ({', '.join(EVENT_TYPES)})")
        for action in self.per_action:
            if action not in self.actions:
                raise ValueError(f"per_action.{action}: not one of the mapped actions")
        for where, table in [("fields", self.fields), *((f"per_action.{a}", t) for a, t in self.per_action.items())]:
            for name in table:
                _check_field(f"{where}.{name}", name)
            names = sorted(table)
            for a, b in pairwise(names):
                if b.startswith(a + "."):
                    raise ValueError(f"{where}.{b}: {a} is given as a whole already")
        for path in (self.unwrap, self.explode):
            if path is not None:
                parse_path(path)
        return self


def _check_field(where: str, name: str) -> None:
    top, _, rest = name.partition(".")
    if top in SET_BY_MAPPER:
        raise ValueError(f"{where}: set by the mapper, not by a mapping")
    if top not in ALL_FIELDS:
        raise ValueError(f"{where}: {top!r} is not a field of the contract (docs/contract.md)")
    sub = ALL_FIELDS[top]
    if rest and (sub is None or rest not in sub):
        raise ValueError(f"{where}: {rest!r} is not a field of {top}")


# -- outcomes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mapped:
    event: dict[str, Any]
    decoded: dec.Decoded
    line: str  # the event's JSON, keys sorted: what normalize writes and what was decoded

    @property
    def ts(self) -> float:
        return self.decoded.ts


@dataclass(frozen=True, slots=True)
class Dropped:
    action: str
    why: str = UNMAPPED


Rejected = dec.Rejected
Outcome = Mapped | Dropped | dec.Rejected


# -- the compiled mapping -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Drop:
    read: Compiled
    values: frozenset[str] | None
    exists: bool | None
    actions: frozenset[str] | None

    def matches(self, action: str, scope: Scope) -> bool:
        if self.actions is not None and action not in self.actions:
            return False
        value = self.read(scope)
        if self.exists is not None:
            return (value is not None) == self.exists
        return value is not None and _text(value) in (self.values or frozenset())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Mapping:
    """A compiled mapping: ``Mapping(spec)``, or from a file with ``streams.inputs.loader.load_mapping``."""

    def __init__(self, spec: MappingSpec, source_path: str = "<mapping>") -> None:
        self.spec = spec
        self.source_path = source_path
        base = {name: compile_expr(expr) for name, expr in spec.fields.items()}
        self._fields: dict[str, dict[str, Compiled]] = {}
        for action, event_type in spec.actions.items():
            merged = {**base, **{n: compile_expr(e) for n, e in spec.per_action.get(action, {}).items()}}
            allowed = contract_fields(event_type)
            self._fields[action] = {n: f for n, f in sorted(merged.items()) if n.partition(".")[0] in allowed}
        self._action = compile_expr(spec.action)
        self._time = compile_expr(spec.time)
        self._id: Compiled | None = None if isinstance(spec.event_id, HashId) else compile_expr(spec.event_id)
        hashed = spec.event_id.hash if isinstance(spec.event_id, HashId) else getattr(spec.event_id, "or_hash", [])
        self._id_hash = [compile_path(p) for p in hashed]
        self._id_fallback = isinstance(spec.event_id, IdOrHash)
        self._keep = {name: compile_expr(expr) for name, expr in spec.keep if isinstance(expr, Expr)}
        self._drops = [
            _Drop(compile_path(c.path), None if c.in_ is None else frozenset(_text(v) for v in c.in_), c.exists,
                  None if c.actions is None else frozenset(c.actions))
            for c in spec.drop_when
        ]  # fmt: skip

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def format(self) -> str:
        return self.spec.format

    def map(self, record: Any, input_name: str | None = None, limits: dec.Limits = dec.DEFAULT_LIMITS,
            now: float | None = None) -> list[Outcome]:  # fmt: skip
        """Every outcome of one raw record, in order. ``input_name`` is the source name written in
        the provenance (the mapping id when not given); ``limits`` and ``now`` go to ``decode``."""
        if not isinstance(record, dict):
            return [Rejected(NOT_OBJECT, f"expected a JSON object, got {type(record).__name__}")]
        records: list[Any] = [record]
        if self.spec.unwrap is not None:
            inner = compile_path(self.spec.unwrap)(Scope(record))
            if not isinstance(inner, list):
                return [Rejected(UNWRAP_MISSING, f"unwrap: no list at {self.spec.unwrap}")]
            records = inner
        out: list[Outcome] = []
        for rec in records:
            if not isinstance(rec, dict):
                out.append(Rejected(NOT_OBJECT, f"expected a JSON object, got {type(rec).__name__}"))
            elif self.spec.explode is None:
                out.append(self._one(Scope(rec), None, input_name, limits, now))
            else:
                items = compile_path(self.spec.explode)(Scope(rec))
                if not isinstance(items, list):
                    out.append(Rejected(EXPLODE_MISSING, f"explode: no list at {self.spec.explode}"))
                    continue
                out += [self._one(Scope(rec, item, True), i, input_name, limits, now) for i, item in enumerate(items)]
        return out

    def _one(self, scope: Scope, index: int | None, input_name: str | None, limits: dec.Limits,
             now: float | None) -> Outcome:  # fmt: skip
        try:
            action = self._action(scope)
        except ConversionError as exc:
            return Rejected(CONVERSION, f"action: {exc}")
        if action is None or isinstance(action, dict | list):
            return Rejected(MISSING_ACTION, "action: no value")
        action = _text(action)
        for drop in self._drops:
            if drop.matches(action, scope):
                return Dropped(action, DROP_WHEN)
        event_type = self.spec.actions.get(action)
        if event_type is None:
            return Dropped(action, UNMAPPED)
        event: dict[str, Any] = {}
        for name, read in self._fields[action].items():
            try:
                value = read(scope)
            except ConversionError as exc:
                return Rejected(CONVERSION, f"{name}: {exc}")
            if value is not None:
                _set(event, name, value)
        try:
            when = self._time(scope)
        except ConversionError as exc:
            return Rejected(CONVERSION, f"time: {exc}")
        if when is None:
            return Rejected(MISSING_TIME, "time: no value")
        source_id = self._source_id(scope, index)
        if isinstance(source_id, Rejected):
            return source_id
        event_id = source_id if source_id is not None else self._hash_id(scope, index)
        provenance = {"input": input_name or self.id, "mapping": self.id, "version": self.version, "action": action}
        if source_id is not None:
            provenance["id"] = source_id
        provenance.update(self._kept(scope))
        event.update(event_type=event_type, event_id=event_id, occurred_at=when, source=provenance)
        line = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        decoded = dec.decode(line, limits, now)
        if isinstance(decoded, dec.Rejected):
            return decoded
        return Mapped(event, decoded, line)

    def _source_id(self, scope: Scope, index: int | None) -> str | dec.Rejected | None:
        read = self._id
        if read is None:
            return None
        try:
            value = read(scope)
        except ConversionError as exc:
            return Rejected(CONVERSION, f"event_id: {exc}")
        if value is None and self._id_fallback:
            return None
        if value is None or isinstance(value, dict | list | bool):
            return Rejected(MISSING_EVENT_ID, "event_id: no value")
        text = value if isinstance(value, str) else json.dumps(value)
        return text if index is None else f"{text}#{index}"

    def _kept(self, scope: Scope) -> dict[str, str]:
        """``keep``'s values that are texts; one that is missing or fails its conversion is left out
        (what is kept serves enrichment, and never rejects an event the contract accepts)."""
        out = {}
        for name, read in self._keep.items():
            try:
                value = read(scope)
            except ConversionError:
                continue
            if isinstance(value, str) and value:
                out[name] = value
        return out

    def _hash_id(self, scope: Scope, index: int | None) -> str:
        """sha256 of the mapping id, the declared values (and the item's index): a redelivered
        record gets the same id, two different records (almost surely) not."""
        values = [read(scope) for read in self._id_hash]
        payload = json.dumps([self.id, values, index], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:ID_HASH_HEX]

    def describe_actions(self) -> list[str]:
        """``source action -> event type`` lines, for ``modwatch inputs list``."""
        return [f"{a} -> {t}" for a, t in self.spec.actions.items()]


def _set(event: dict[str, Any], name: str, value: Any) -> None:
    parts = name.split(".")
    node = event
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
