"""The field paths the event contract has, for checking the paths a rule reads.

A rule that names a field the contract lacks (``actor.idd``) reads nothing there: its condition never
holds, its key is never formed, its summary prints ``?``. The catalogue here is walked from the
pydantic models of ``streams.core.events``: nested models, tuples of models (``targets.id``, as the
predicate language flattens lists), mappings (``subject_regions.<region>``, ``subject_regions.@keys``).
Paths are checked per event type, so a rule over access grants cannot read ``record_count``.

Some paths read an event as a rule holds it in state (a pair's earlier side, a window's last event):
only the fields ``streams.core.rules.base.compact`` keeps are there (``held=True``).
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from streams.core import events
from streams.core.alerts import Template
from streams.core.rules.base import ALERT_FACTS, HELD_FIELDS, expand_types
from streams.core.rules.predicate import All, Any_, Not
from streams.core.scoring import ScoringConfig

Tree = dict[str, "Tree"]  # a path part -> what follows it; a leaf is {}; "*" stands for any key
_ANY_KEY = "*"
_MODELS: tuple[type[BaseModel], ...] = get_args(events.AnyEvent)


def _tree(annotation: Any) -> Tree:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _tree(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        merged: Tree = {}
        for arg in get_args(annotation):
            _merge(merged, _tree(arg))
        return merged
    if origin in (tuple, list, frozenset, set):
        return _tree(get_args(annotation)[0]) if get_args(annotation) else {}
    if origin is dict:
        return {_ANY_KEY: _tree(get_args(annotation)[1]), "@keys": {}}
    if origin is Literal or not isinstance(annotation, type) or not issubclass(annotation, BaseModel):
        return {}
    hints = typing.get_type_hints(annotation, include_extras=True)
    return {name: _tree(hints[name]) for name in annotation.model_fields}


def _merge(into: Tree, other: Tree) -> None:
    for key, sub in other.items():
        _merge(into.setdefault(key, {}), sub)


def _event_types(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(get_args(model.model_fields["event_type"].annotation))


TREES: dict[str, Tree] = {name: _tree(model) for model in _MODELS for name in _event_types(model)}


def _has(tree: Tree, parts: list[str]) -> bool:
    for part in parts:
        if part in tree:
            tree = tree[part]
        elif _ANY_KEY in tree and part != "@keys":
            tree = tree[_ANY_KEY]
        else:
            return False
    return True


def _spelled(tree: Tree, prefix: str = "") -> list[str]:
    """Every path of a tree, with ``<key>`` for a mapping's keys (for suggestions)."""
    out = []
    for key, sub in tree.items():
        path = f"{prefix}{'<key>' if key == _ANY_KEY else key}"
        out.append(path)
        out.extend(_spelled(sub, path + "."))
    return out


ALL_PATHS: tuple[str, ...] = tuple(sorted({p for tree in TREES.values() for p in _spelled(tree)}))


def path_problem(path: str, event_types: frozenset[str], held: frozenset[str] | None = None,
                 prefix: str = "") -> str | None:  # fmt: skip
    """Why ``path`` reads nothing on events of ``event_types`` (None when it reads something on at
    least one of them). ``held``: the top-level fields an event held in state keeps, when the path
    may read a held event. ``prefix`` (``first.``) is shown before the path in the message."""
    parts = path.split(".")
    shown = prefix + path
    if any(_has(TREES[t], parts) for t in event_types if t in TREES):
        if held is not None and parts[0] not in held:
            return f"field {shown!r} is not kept with an event held in state, so it reads nothing here"
        return None
    if any(_has(tree, parts) for tree in TREES.values()):
        return f"field {shown!r} is not in {', '.join(sorted(event_types))} events"
    candidates = sorted({p for t in event_types if t in TREES for p in _spelled(TREES[t])})
    close = difflib.get_close_matches(path, candidates, n=1) or difflib.get_close_matches(path, ALL_PATHS, n=1)
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    return f"unknown field {shown!r}{hint}"


# -- the paths a rule reads ---------------------------------------------------------------------


def _predicate_problems(pred: Any, loc: str, types: frozenset[str], first: frozenset[str] | None,
                        held: frozenset[str] | None) -> list[str]:  # fmt: skip
    """Problems of every path in a predicate: ``field``, and the paths ``eq_field``/``ne_field`` name."""
    if pred is None:
        return []
    if isinstance(pred, All | Any_):
        parts = pred.all if isinstance(pred, All) else pred.any
        return [line for p in parts for line in _predicate_problems(p, loc, types, first, held)]
    if isinstance(pred, Not):
        return _predicate_problems(pred.not_, loc, types, first, held)
    out = []
    for op in ("field", "eq_field", "ne_field"):
        path = getattr(pred, op)
        if path is not None and (problem := _problem(path, types, first, held)) is not None:
            out.append(f"{loc}.{op}: {problem}")
    return out


def _problem(path: str, types: frozenset[str], first: frozenset[str] | None, held: frozenset[str] | None) -> str | None:
    if path.startswith("first."):
        if first is None:
            return f"{path!r}: 'first.' reads the earlier event of a sequence, and there is none here"
        return path_problem(path.removeprefix("first."), first, HELD_FIELDS, prefix="first.")
    return path_problem(path, types, held)


def _summary_problems(text: str, facts: frozenset[str], types: frozenset[str], first: frozenset[str] | None,
                      held: frozenset[str] | None) -> list[str]:  # fmt: skip
    out = []
    for name in Template(text).paths:  # the placeholders, in order
        if name not in facts and (problem := _problem(name, types, first, held)) is not None:
            out.append(f"summary: {{{name}}}: {problem}")
    return out


def rule_path_problems(config: Any, facts: frozenset[str]) -> list[str]:
    """``field: problem`` for every path a rule's config reads that its events do not have: the
    selectors' ``where``, ``group_by``, ``field``, the join keys, a pair's ``where`` (``first.`` for the
    earlier event) and the summary's placeholders (``facts``: the names the rule kind fills in)."""
    facts = facts | ALERT_FACTS
    select = getattr(config, "select", None)
    if select is not None:  # threshold, cardinality, match: one event at a time
        types = expand_types(select.events)
        out = _predicate_problems(select.where, "select.where", types, None, None)
        keys = config.group_by if isinstance(config.group_by, list) else [config.group_by]
        for spec in keys:
            path = spec if isinstance(spec, str) else spec.field
            if (problem := path_problem(path, types)) is not None:
                out.append(f"group_by: {problem}")
        if getattr(config, "field", None) and (problem := path_problem(config.field, types)) is not None:
            out.append(f"field: {problem}")
        # A window's summary may describe its last event as held in state; a match's is the event.
        held = None if config.kind == "match" else HELD_FIELDS
        return out + _summary_problems(config.summary, facts, types, None, held)
    first, then = expand_types(config.first.events), expand_types(config.then.events)
    out = _predicate_problems(config.first.where, "first.where", first, None, None)
    out += _predicate_problems(config.then.where, "then.where", then, None, None)
    for index, join in enumerate(config.join):
        for side, path, types in (("first", join.first, first), ("then", join.then, then)):
            if (problem := path_problem(path, types)) is not None:
                out.append(f"join.{index}.{side}: {problem}")
    if config.kind == "absence":  # the alert describes the earlier event, held in state
        return out + _summary_problems(config.summary, facts, first, None, HELD_FIELDS)
    out += _predicate_problems(getattr(config, "where", None), "where", then, first, HELD_FIELDS)
    return out + _summary_problems(config.summary, facts, then, first, HELD_FIELDS)


def booster_path_problems(config: ScoringConfig) -> list[str]:
    """``boosters.<name>.when.field: problem`` for every path a booster reads that no event has. A
    booster scores every rule's incidents, so any event type (and under ``first.`` any) counts."""
    every = frozenset(TREES)
    return [
        line
        for name, booster in config.boosters.items()
        for line in _predicate_problems(booster.when, f"boosters.{name}.when", every, every, HELD_FIELDS)
    ]
