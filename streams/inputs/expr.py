"""Field expressions: how a mapping reads one value out of a raw record, compiled once to a closure.

An expression is a mapping of these keys (a bare string is short for ``{path: ...}``):

- a source, exactly one of: ``path`` (dotted names, ``[n]`` an index, ``[*]`` every item -> a
  list; with ``explode``, ``item.`` starts at the current item), ``const``, ``coalesce`` (a list of
  expressions, the first that is not null), ``template`` (``"{a.b}-{c}"``, null if a path is missing),
  ``param`` with ``in`` (the value of the first item named ``param`` in the ``[{name, value}]`` list
  at the path ``in``; ``name:`` and ``value:`` give other key names);
- then, in this order: ``regex`` with ``group`` (default 1) over a string (no match: null),
  ``replace`` (``{from, to}``: every occurrence of a text in a string, or in each string of a list), ``map``
  (a table; a value not in it is null), ``convert`` (streams/inputs/convert.py), ``parts`` with
  ``sep`` (``kind:id:region`` -> an object; applied to each item of a list), and ``default`` for a
  null result or a failed conversion.

Regular expressions run on RE2 (google-re2) when it is installed, otherwise on Python's ``re`` after
``check_pattern`` has refused what can backtrack without bound: backreferences, lookarounds and
quantified groups that hold a quantifier.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.inputs.convert import CONVERSIONS, ConversionError, split_parts

try:  # linear-time matching when the project has it
    import re2 as _re2  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _re2 = None

SOURCES = ("path", "const", "coalesce", "template", "param")
_MISSING = object()


class Replace(BaseModel):
    """``replace: {from: " ", to: ""}``: every occurrence of ``from`` (a plain text, not a pattern)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", min_length=1)
    to: str


class Expr(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    const: Any = _MISSING
    coalesce: list[Expr] | None = None
    template: str | None = None
    param: str | None = None
    in_: str | None = Field(default=None, alias="in")
    name: str = Field(default="name", min_length=1)
    value: str = Field(default="value", min_length=1)
    regex: str | None = None
    group: int | str = 1
    replace: Replace | None = None
    map: dict[str, Any] | None = None
    convert: str | None = None
    parts: list[str] | None = Field(default=None, min_length=1)
    sep: str = Field(default=":", min_length=1)
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> Expr:
        if (self.param is None) != (self.in_ is None):
            raise ValueError("param: give both 'param' (the name sought) and 'in' (the path to the list)")
        given = [name for name in SOURCES if self._has(name)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SOURCES)} (got {', '.join(given) or 'none'})")
        if self.convert is not None and self.convert not in CONVERSIONS:
            raise ValueError(f"convert: unknown conversion {self.convert!r}; one of {', '.join(CONVERSIONS)}")
        if self.regex is not None:
            check_pattern(self.regex)
        if self.path is not None:
            parse_path(self.path)
        if self.template is not None:
            for name in _template_paths(self.template):
                parse_path(name)
        if self.param is None and {"name", "value"} & self.model_fields_set:
            raise ValueError("name, value: only with param")
        if self.in_ is not None:
            parse_path(self.in_)
        return self

    def _has(self, name: str) -> bool:
        value = getattr(self, name)
        return value is not _MISSING if name == "const" else value is not None


@dataclass(frozen=True, slots=True)
class Scope:
    """What an expression reads: the record, and with ``explode`` the current item and its index."""

    record: Any
    item: Any = None
    explode: bool = False


Compiled = Callable[[Scope], Any]

# -- paths ------------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"([^.\[\]]*)((?:\[(?:\d+|\*)\])*)")
_INDEX = re.compile(r"\[(\d+|\*)\]")


def parse_path(path: str) -> list[str | int]:
    """``a.b[0].c[*]`` -> ["a", "b", 0, "c", "*"]; raises ValueError naming the path when malformed."""
    steps: list[str | int] = []
    if not path:
        raise ValueError("path: empty")
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None or (not match.group(1) and not match.group(2)):
            raise ValueError(f"path {path!r}: malformed segment {segment!r}")
        if match.group(1):
            steps.append(match.group(1))
        for index in _INDEX.findall(match.group(2)):
            steps.append("*" if index == "*" else int(index))
    return steps


def _walk(value: Any, steps: list[str | int]) -> Any:
    for position, step in enumerate(steps):
        if step == "*":
            if not isinstance(value, list):
                return None
            rest = steps[position + 1 :]
            found = [_walk(item, rest) for item in value]
            return [v for v in found if v is not None]
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and step < len(value) else None
        else:
            value = value.get(step) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def compile_path(path: str) -> Compiled:
    steps = parse_path(path)
    if steps and steps[0] == "item":
        rest = steps[1:]

        def read_item(scope: Scope) -> Any:
            if scope.explode:
                return _walk(scope.item, rest)
            return _walk(scope.record, steps)

        return read_item
    return lambda scope: _walk(scope.record, steps)


# -- templates and patterns -----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def _template_paths(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def _compile_template(template: str) -> Compiled:
    readers = {name: compile_path(name) for name in _template_paths(template)}

    def render(scope: Scope) -> Any:
        values = {}
        for name, read in readers.items():
            value = read(scope)
            if value is None or isinstance(value, dict | list):
                return None
            values[name] = value if isinstance(value, str) else str(value)
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)

    return render


def check_pattern(pattern: str) -> None:
    """Refuse a pattern that may backtrack without bound on Python's ``re`` (RE2 never does, but a
    mapping must load the same way on every installation): backreferences, lookarounds, and a
    quantified group holding a quantifier (``(a+)+``). Also refuses what does not compile."""
    if re.search(r"\\[1-9]|\(\?P=|\(\?<?[=!]", pattern):
        raise ValueError("regex: backreferences and lookarounds are not allowed (they can backtrack without bound)")
    stack: list[bool] = []  # per open group: holds a quantifier
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            stack.append(False)
        elif ch == ")" and stack:
            inner = stack.pop()
            following = pattern[i + 1 : i + 2]
            if inner and following in ("*", "+", "{"):
                raise ValueError("regex: a repeated group holding a quantifier can backtrack without bound")
            if stack and (inner or following in ("*", "+", "{", "?")):
                stack[-1] = True
        elif ch in "*+{?" and stack:
            stack[-1] = True
        i += 1
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex: {exc}") from None


def _compile_regex(pattern: str, group: int | str) -> Callable[[Any], Any]:
    compiled = (_re2 or re).compile(pattern)

    def apply(value: Any) -> Any:
        if not isinstance(value, str):
            return None
        match = compiled.search(value)
        if match is None:
            return None
        try:
            return match.group(group)
        except (IndexError, KeyError):
            raise ConversionError(f"regex has no group {group!r}") from None

    return apply


def _compile_param(sought: str, in_path: str, name_key: str, value_key: str) -> Compiled:
    """The value of the first item of the list at ``in_path`` whose ``name_key`` equals ``sought``
    (a list of any length); null when there is no list, no such item, or the item has no value."""
    read = compile_path(in_path)

    def select(scope: Scope) -> Any:
        items = read(scope)
        if not isinstance(items, list):
            return None
        for item in items:
            if isinstance(item, dict) and item.get(name_key) == sought:
                return item.get(value_key)
        return None

    return select


def _compile_replace(old: str, new: str) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if isinstance(value, list):
            return [item.replace(old, new) if isinstance(item, str) else item for item in value]
        return value.replace(old, new) if isinstance(value, str) else value

    return apply


# -- the compiler ---------------------------------------------------------------------------------


def compile_expr(expr: Expr) -> Compiled:
    """The closure that evaluates ``expr``. It returns None for a missing value and raises
    ConversionError when a conversion fails and there is no ``default``."""
    source: Compiled
    if expr.path is not None:
        source = compile_path(expr.path)
    elif expr.coalesce is not None:
        options = [compile_expr(option) for option in expr.coalesce]

        def first(scope: Scope) -> Any:
            for option in options:
                value = option(scope)
                if value is not None:
                    return value
            return None

        source = first
    elif expr.template is not None:
        source = _compile_template(expr.template)
    elif expr.param is not None and expr.in_ is not None:
        source = _compile_param(expr.param, expr.in_, expr.name, expr.value)
    else:
        constant = expr.const
        source = lambda scope: constant  # noqa: E731

    steps: list[Callable[[Any], Any]] = []
    if expr.regex is not None:
        steps.append(_compile_regex(expr.regex, expr.group))
    if expr.replace is not None:
        steps.append(_compile_replace(expr.replace.from_, expr.replace.to))
    if expr.map is not None:
        table = expr.map
        steps.append(lambda value: table.get(_key(value)) if value is not None else None)
    if expr.convert is not None:
        steps.append(CONVERSIONS[expr.convert])
    if expr.parts is not None:
        names, sep = list(expr.parts), expr.sep

        def parts(value: Any) -> Any:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(item, str) for item in items):
                raise ConversionError(f"parts: expected strings such as {sep.join(names)}")
            out = [split_parts(item, names, sep) for item in items]
            return out if isinstance(value, list) else out[0]

        steps.append(parts)
    default = expr.default

    def evaluate(scope: Scope) -> Any:
        value = source(scope)
        try:
            for step in steps:
                if value is None:
                    break
                value = step(value)
        except ConversionError:
            if default is None:
                raise
            return default
        return default if value is None else value

    return evaluate


def _key(value: Any) -> Any:
    """Map tables have string keys (YAML); numbers and booleans are looked up as JSON writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value if isinstance(value, str) else None
