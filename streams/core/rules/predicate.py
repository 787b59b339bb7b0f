"""Declarative predicates over an event's fields: no eval, no code in YAML.

A condition names a field path and one operator::

    {field: target.region, ne_field: first.requester.jurisdiction}
    {field: fields, in: $personal_fields}
    {all: [...]}, {any: [...]}, {not: {...}}

Paths are dotted. A list met on the way is flattened (``targets.id`` is every target's id), and
``@keys`` takes a mapping's keys (``subject_regions.@keys``). A path starting ``first.`` reads the
earlier event of a sequence; every other path reads the current event. When a path yields several
values the comparison holds if it holds for any of them; a missing field satisfies nothing except
``exists: false``.

Predicates are compiled once into closures, so evaluating one is a few dict lookups.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Union

import re2
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from streams.core.rules.duration import Duration

Getter = Callable[["Context"], list[Any]]
Test = Callable[["Context"], bool]


class Context:
    """What a predicate sees: the current event, the earlier event of a pair, the event time."""

    __slots__ = ("first", "memo", "ts", "view")

    def __init__(self, view: dict[str, Any], ts: float, first: dict[str, Any] | None = None) -> None:
        self.view = view
        self.ts = ts
        self.first = first
        self.memo: dict[str, list[str]] = {}  # join keys already computed for this event (routing)


def _walk(root: Any, parts: Sequence[str]) -> list[Any]:
    current = [root]
    for part in parts:
        nxt: list[Any] = []
        for node in current:
            if part == "@keys":
                if isinstance(node, dict):
                    nxt.extend(node.keys())
            elif isinstance(node, dict):
                value = node.get(part)
                if value is None:
                    continue
                if isinstance(value, list):
                    nxt.extend(value)
                else:
                    nxt.append(value)
        current = nxt
        if not current:
            break
    return current


def compile_path(path: str) -> Getter:
    parts = path.split(".")
    if parts[0] == "first":
        rest = parts[1:]

        def get_first(ctx: Context) -> list[Any]:
            return _walk(ctx.first, rest) if ctx.first is not None else []

        return get_first
    if len(parts) == 1:
        key = parts[0]

        def get_top(ctx: Context) -> list[Any]:
            value = ctx.view.get(key)
            if value is None:
                return []
            return value if isinstance(value, list) else [value]

        return get_top

    if len(parts) == 2 and "@keys" not in parts:
        outer, inner = parts

        def get_two(ctx: Context) -> list[Any]:
            # The common case (``target.id``) without the general walk's list building.
            node = ctx.view.get(outer)
            if isinstance(node, dict):
                value = node.get(inner)
                if value is None:
                    return []
                return value if isinstance(value, list) else [value]
            if isinstance(node, list):
                return _walk(ctx.view, parts)
            return []

        return get_two

    def get(ctx: Context) -> list[Any]:
        return _walk(ctx.view, parts)

    return get


# User regexes run on RE2: matching takes time linear in the text, whatever the pattern, so no
# pattern (``^(a+)+$``) and no event text can stall the engine. RE2 has no backreferences and no
# lookaround; a pattern using them is a config error. Errors are raised, not also logged by RE2.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2; ValueError with the reason when it cannot be."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError):
            raise ValueError(f"invalid regular expression: {reason}") from None
        raise ValueError(
            f"regular expression not supported in linear time (RE2: no backreferences or lookaround): {reason}"
        ) from None


def _timestamp(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


_OPS = (
    "eq", "ne", "in", "not_in", "exists", "gt", "gte", "lt", "lte", "regex",
    "eq_field", "ne_field", "age_lt", "age_gt",
)  # fmt: skip

# Numbers in conditions and bounds are finite: NaN compares false with everything and an infinite
# bound is never reached (or always). Bounds are non-negative too, as every number in the contract is.
Bound = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a number must be finite")
    return value


# Checked after the union, so a bad value gives one error, not one per type it is not.
Scalar = Annotated[str | int | float | bool, AfterValidator(_finite)]


class Condition(BaseModel):
    """One field and exactly one operator."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(min_length=1)
    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | str | None = Field(default=None, alias="in")
    not_in: list[Scalar] | str | None = None
    exists: bool | None = None
    gt: Bound | None = None
    gte: Bound | None = None
    lt: Bound | None = None
    lte: Bound | None = None
    regex: str | None = Field(default=None, max_length=1000)
    eq_field: str | None = None
    ne_field: str | None = None
    age_lt: Duration | None = None
    age_gt: Duration | None = None

    @field_validator("regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [op for op in _OPS if getattr(self, "in_" if op == "in" else op) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one operator ({', '.join(_OPS)}), got {given or 'none'}")
        return self

    def operator(self) -> tuple[str, Any]:
        for op in _OPS:
            value = getattr(self, "in_" if op == "in" else op)
            if value is not None:
                return op, value
        raise AssertionError("validated to have one operator")


class All(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    all: list[Predicate] = Field(min_length=1)


class Any_(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    any: list[Predicate] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    not_: Predicate = Field(alias="not")


def _predicate_tag(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "condition"
    return type(value).__name__


# A callable discriminator keeps config errors short: one branch is validated, not all four.
Predicate = Annotated[
    Union[  # noqa: UP007 - a forward-referenced recursive alias
        Annotated[All, Tag("all")],
        Annotated[Any_, Tag("any")],
        Annotated[Not, Tag("not")],
        Annotated[Condition, Tag("condition")],
    ],
    Discriminator(_predicate_tag),
]

All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()


class UnknownListError(ValueError):
    pass


def _members(value: list[Scalar] | str, lists: dict[str, list[str]]) -> frozenset[Any]:
    if isinstance(value, str):
        if not value.startswith("$"):
            return frozenset([value])
        name = value[1:]
        if name not in lists:
            raise UnknownListError(f"unknown list {value!r} (defined lists: {', '.join(sorted(lists)) or 'none'})")
        return frozenset(lists[name])
    return frozenset(value)


def compile_predicate(pred: Predicate | None, lists: dict[str, list[str]]) -> Test:
    """Turn a validated predicate into a closure; ``None`` is always true."""
    if pred is None:
        return lambda ctx: True
    # The hot combinators and operators are loops rather than ``all``/``any`` over a generator: a
    # generator per test was a good part of routing's cost (routing runs for every event).
    if isinstance(pred, All):
        parts = [compile_predicate(p, lists) for p in pred.all]

        def all_of(ctx: Context) -> bool:
            for part in parts:  # noqa: SIM110  (no generator: see above)
                if not part(ctx):
                    return False
            return True

        return all_of
    if isinstance(pred, Any_):
        parts = [compile_predicate(p, lists) for p in pred.any]

        def any_of(ctx: Context) -> bool:
            for part in parts:  # noqa: SIM110  (no generator: see above)
                if part(ctx):
                    return True
            return False

        return any_of
    if isinstance(pred, Not):
        inner = compile_predicate(pred.not_, lists)
        return lambda ctx: not inner(ctx)
    return _compile_condition(pred, lists)


def _compile_condition(cond: Condition, lists: dict[str, list[str]]) -> Test:
    get = compile_path(cond.field)
    op, arg = cond.operator()
    if op == "exists":
        want = bool(arg)
        return lambda ctx: bool(get(ctx)) is want
    if op == "eq":

        def equal(ctx: Context) -> bool:
            for v in get(ctx):  # noqa: SIM110  (no generator: see above)
                if v == arg:
                    return True
            return False

        return equal
    if op == "ne":
        return lambda ctx: any(v != arg for v in get(ctx))
    if op in ("in", "not_in"):
        members = _members(arg, lists)
        if op == "in":

            def member(ctx: Context) -> bool:
                for v in get(ctx):  # noqa: SIM110  (no generator: see above)
                    if (None if isinstance(v, _CONTAINERS) else v) in members:  # ``_hashable``, inlined
                        return True
                return False

            return member
        return lambda ctx: any(_hashable(v) not in members for v in get(ctx))
    if op in ("gt", "gte", "lt", "lte"):
        bound = float(arg)
        compare: Callable[[float], bool] = {
            "gt": lambda v: v > bound,
            "gte": lambda v: v >= bound,
            "lt": lambda v: v < bound,
            "lte": lambda v: v <= bound,
        }[op]
        return lambda ctx: any(_is_number(v) and compare(v) for v in get(ctx))
    if op == "regex":
        pattern = compile_regex(arg)
        return lambda ctx: any(isinstance(v, str) and pattern.search(v) is not None for v in get(ctx))
    if op in ("eq_field", "ne_field"):
        other = compile_path(arg)
        if op == "eq_field":
            return lambda ctx: _cross(get(ctx), other(ctx), equal=True)
        return lambda ctx: _cross(get(ctx), other(ctx), equal=False)
    # age_lt / age_gt: how long before the event the timestamp in the field lies.
    limit = float(arg)
    if op == "age_lt":
        return lambda ctx: any((t := _timestamp(v)) is not None and ctx.ts - t < limit for v in get(ctx))
    return lambda ctx: any((t := _timestamp(v)) is not None and ctx.ts - t > limit for v in get(ctx))


_CONTAINERS = (dict, list)


def _hashable(value: Any) -> Any:
    return value if not isinstance(value, _CONTAINERS) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cross(left: list[Any], right: list[Any], *, equal: bool) -> bool:
    """Compare two fields. Both must be present; ``ne_field`` holds if any left value differs from
    every right value (a target outside every one of the requester's jurisdictions)."""
    if not left or not right:
        return False
    if equal:
        return any(v in right for v in left)
    return any(v not in right for v in left)


def referenced_lists(pred: Predicate | None) -> set[str]:
    """Names of ``$lists`` a predicate uses (for validation messages)."""
    if pred is None:
        return set()
    if isinstance(pred, All):
        return set().union(*(referenced_lists(p) for p in pred.all))
    if isinstance(pred, Any_):
        return set().union(*(referenced_lists(p) for p in pred.any))
    if isinstance(pred, Not):
        return referenced_lists(pred.not_)
    found = set()
    for value in (pred.in_, pred.not_in):
        if isinstance(value, str) and value.startswith("$"):
            found.add(value[1:])
    return found
