"""``sequence``: an event A, then an event B on the same join key within a time bound.

Order-insensitive within the allowed lateness: when B arrives before A (A is late), B waits in state
until the watermark passes it, and A arriving then still matches. A pair predicate (``where``) sees B
as the current event and A under ``first.``.

That is arrival order; in event time A must come first, unless ``after_within`` lets an A logged up
to that long *after* B pair too: a request logged only after the action it asked for is still that
action's request. B then waits until the watermark passes B + ``after_within``; the pair's latency
is negative and its facts say ``order: request logged after the action``.

Join keys are tried in order for B: a takedown carrying the request's id joins on ``request``; one
without it falls back to the target it acted on. A is stored under every key it offers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streams.core.rules.base import (
    Held,
    Hit,
    Rule,
    RuleConfig,
    Selector,
    State,
    compact,
    describe,
    hold,
    register,
    selector_test,
    unhold,
)
from streams.core.rules.duration import Duration, format_duration
from streams.core.rules.predicate import Context, Predicate, compile_path, compile_predicate

# Held events per key and side (first events, and pending ones waiting for a late first): the
# newest this many by event time. A dataset that ETL jobs export several times a second is a target
# key; unbounded, its pending exports within the allowed lateness (300 s) grew past the 1 MB a
# changelog record may hold at 2,000 events/s, and the worker's agent stopped on the failed write.
# A pending event only matters if its first arrives late, so the oldest go first.
MAX_HELD = 100


class JoinKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    first: str = Field(min_length=1)  # path in A
    then: str = Field(min_length=1)  # path in B


class PairConfig(RuleConfig):
    first: Selector
    then: Selector
    join: list[JoinKey] = Field(min_length=1)
    within: Duration = Field(gt=0)
    max_fanout: int = Field(default=1000, ge=1)  # keys taken from one event (a request's targets)


# The longest ``after_within``: a B waits that long past the watermark for an A logged after it, and
# a request logged "seconds to minutes" after its action is the case; beyond an hour a later request
# on the same target is more likely another request than this action's.
MAX_AFTER_WITHIN = 3600.0
LOGGED_AFTER = "request logged after the action"  # the ``order`` fact of a pair whose A came after B


class SequenceConfig(PairConfig):
    kind: Literal["sequence"]
    where: Predicate | None = None
    # How long after B its A may come and still pair (0: A must come first, in event time).
    after_within: Duration = Field(default=0.0, ge=0, le=MAX_AFTER_WITHIN)


def _values(path: str, get: Any, ctx: Context) -> list[str]:
    """Join-key values of an event; memoised per event, since several rules join on the same paths."""
    values = ctx.memo.get(path)
    if values is None:
        values = ctx.memo[path] = [str(v) for v in get(ctx) if isinstance(v, str | int) and not isinstance(v, bool)]
    return values


class Paired(Rule):
    """Routing shared by sequence and absence."""

    def __init__(self, config: PairConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.pcfg = config
        self.first_types, self.first_test = selector_test(config.first, lists)
        self.then_types, self.then_test = selector_test(config.then, lists)
        self.joins = [(j.name, j.first, compile_path(j.first), j.then, compile_path(j.then)) for j in config.join]

    @property
    def window(self) -> float:
        return self.pcfg.within

    @property
    def event_types(self) -> frozenset[str]:
        return self.first_types | self.then_types

    def event_deadline(self, ts: float, side: str) -> float | None:
        return ts + 0.001  # a pending B expires first; an A or an absence's B later (a spare wake-up)

    def route(self, ctx: Context, event_type: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if event_type in self.first_types and self.first_test(ctx):
            for name, first_path, get_first, _, _ in self.joins:
                for value in _values(first_path, get_first, ctx)[: self.pcfg.max_fanout]:
                    out.append((f"{name}={value}", "first"))
        if event_type in self.then_types and self.then_test(ctx):
            for name, _, _, then_path, get_then in self.joins:
                values = _values(then_path, get_then, ctx)
                if values:
                    out.extend((f"{name}={value}", "then") for value in values[: self.pcfg.max_fanout])
                    break
        return out


def expire_pairs(state: State, within: float, watermark: float, after: float = 0.0) -> State:
    """Drop the first events no later event can pair with any more, and the pending ones no first
    event can still reach; None when nothing is left."""
    state["a"] = [a for a in state["a"] if a[0] + within >= watermark]
    # A pending B can only meet an A that is not late, i.e. one at or after the watermark, and at
    # most ``after`` after B.
    state["b"] = [b for b in state["b"] if b[0] + after >= watermark]
    return state if state["a"] or state["b"] else None


def pairs_deadline(state: State, within: float, after: float = 0.0) -> float | None:
    """When ``expire_pairs`` next has something to drop."""
    if not state:
        return None
    earliest = float("inf")
    for b in state["b"]:
        if b[0] + after < earliest:
            earliest = b[0] + after
    for a in state["a"]:
        if a[0] + within < earliest:
            earliest = a[0] + within
    return earliest + 0.001 if earliest != float("inf") else None


@register
class SequenceRule(Paired):
    kind = "sequence"
    config_model = SequenceConfig
    facts = frozenset({"latency", "latency_seconds", "order"})

    def __init__(self, config: SequenceConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.scfg = config
        self.after = config.after_within
        self.pair_test = compile_predicate(config.where, lists)
        self.held_dropped = 0  # held events dropped for ``MAX_HELD`` (a metric)

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        if state is None:
            state = {"a": [], "b": []}
        event_id = view["event_id"]
        mine = state["a"] if side == "first" else state["b"]
        for entry in mine:
            if entry[1] == event_id:
                return state, []
        mine.append([ts, event_id, hold(view)])
        if len(mine) > MAX_HELD:
            mine.sort(key=lambda entry: entry[0])
            self.held_dropped += len(mine) - MAX_HELD
            del mine[: len(mine) - MAX_HELD]
        within, after = self.scfg.within, self.after
        hits = []
        if side == "then":
            for a_ts, a_id, a_view in state["a"]:
                if a_ts - after <= ts <= a_ts + within:
                    hit = self._pair(a_ts, a_id, unhold(a_view), ts, event_id, view)
                    if hit is not None:
                        hits.append(hit)
        else:
            for b_ts, b_id, b_view in state["b"]:
                if ts - after <= b_ts <= ts + within:
                    hit = self._pair(ts, event_id, compact(view), b_ts, b_id, unhold(b_view))
                    if hit is not None:
                        hits.append(hit)
        return state, hits

    def _pair(
        self, a_ts: float, a_id: str, a_view: dict[str, Any], b_ts: float, b_id: str, b_view: dict[str, Any]
    ) -> Hit | None:
        if not self.pair_test(Context(b_view, b_ts, first=a_view)):
            return None
        latency = b_ts - a_ts
        facts: dict[str, Any] = {"latency": format_duration(latency), "latency_seconds": round(latency, 3)}
        if latency < 0:  # A logged after B (``after_within``): the pair spans B to A
            facts = {"latency": "-" + format_duration(-latency), "latency_seconds": round(latency, 3),
                     "order": LOGGED_AFTER}  # fmt: skip
        return Hit(
            anchor=f"{a_id}|{b_id}",
            ts=max(a_ts, b_ts),
            first_seen=min(a_ts, b_ts),
            event_ids=[a_id, b_id],
            view=b_view,
            first=a_view,
            facts=facts,
        )

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        return expire_pairs(state, self.scfg.within, watermark, self.after), []

    def deadline(self, state: State) -> float | None:
        return pairs_deadline(state, self.scfg.within, self.after)

    def condition_text(self) -> str:
        joins = " or ".join(f"{j.first} = {j.then}" for j in self.scfg.join)
        after = f" (or logged up to {format_duration(self.after)} after it)" if self.after else ""
        return (
            f"{'/'.join(self.scfg.first.events)}{after} then {'/'.join(self.scfg.then.events)} within "
            f"{format_duration(self.scfg.within)}, joined on {joins}, where {describe(self.scfg.where)}"
        )


class SequenceGroup(Rule):
    """Sequence rules that share their first side and join keys, evaluated over one store per key.

    The default rules pair every request with the actions that follow it three times (a rapid
    takedown, an out-of-jurisdiction fulfilment, the request-to-action latency). Apart, each keeps
    its own copy of every request and of every action waiting for a late request, and the engine
    routes, stores and expires each copy. Together, a key holds one list of requests (kept for the
    longest member's ``within``) and one of pending actions, each action tagged with the members
    whose ``then`` it matched (a bit mask over the member ids saved in the state, so a state written
    under another configuration is read correctly). Hits carry the member's id and are scored,
    suppressed and counted as that member's.

    State: one flat list, ``[member ids, ts, event id, held event, mask, ts, ...]``, four slots per
    held event. Mask 0 marks a first event; any other mask a pending event and the members it waits
    for. Flat, because a key's memory is mostly containers: the ``{"m": ..., "a": [[...]], "b":
    [[...]]}`` saved before cost ~300 bytes more per key with one held event. That shape is still
    read (``group_parts``).

    Not a configured rule kind: the engine builds groups from the configured sequence rules.
    """

    kind = "sequence_group"

    def __init__(self, members: list[SequenceRule]) -> None:
        # A group has no config of its own: the engine reads configs of members only.
        head = members[0]
        self.members = members
        self.member_ids = [m.id for m in members]
        self.id = group_id(head)
        self.lists = head.lists
        self.first_types, self.first_test = head.first_types, head.first_test
        self.joins = head.joins
        self.max_fanout = head.pcfg.max_fanout  # part of the group's signature: the same for all
        self.keep = max(m.scfg.within for m in members)  # how long a first event stays useful
        self.after = max(m.after for m in members)  # how long a pending event waits past the watermark
        self.then_sides = {mask: f"then:{mask}" for mask in range(1, 1 << len(members))}
        # Called with a member and the event when the member's own code fails (the engine counts
        # and logs it as that rule's error); the other members go on. Without it, errors propagate.
        self.on_error: Callable[[Rule, dict[str, Any]], None] | None = None
        self.masks = {side: mask for mask, side in self.then_sides.items()}
        self.held_dropped = 0  # held events dropped for ``MAX_HELD`` (a metric)

    @property
    def window(self) -> float:
        return self.keep

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.first_types.union(*(m.then_types for m in self.members)))

    def event_deadline(self, ts: float, side: str) -> float | None:
        return ts + 0.001

    def route(self, ctx: Context, event_type: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if event_type in self.first_types and self.first_test(ctx):
            for name, first_path, get_first, _, _ in self.joins:
                for value in _values(first_path, get_first, ctx)[: self.max_fanout]:
                    out.append((f"{name}={value}", "first"))
        mask = 0
        for bit, member in enumerate(self.members):
            if event_type in member.then_types and self._guard(member, ctx.view, member.then_test, ctx):
                mask |= 1 << bit
        if mask:
            side = self.then_sides[mask]
            for name, _, _, then_path, get_then in self.joins:
                values = _values(then_path, get_then, ctx)
                if values:
                    out.extend((f"{name}={value}", side) for value in values[: self.max_fanout])
                    break
        return out

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        state = [self.member_ids] if state is None else self._read(state)
        event_id = view["event_id"]
        mask = 0 if side == "first" else self.masks[side]
        if event_id in state:  # a scan at C speed first: most events are new to the key
            for _, held_id, _, held_mask in _entries(state):
                if held_id == event_id and (held_mask == 0) == (mask == 0):
                    return state, []
        hits: list[Hit] = []
        if mask == 0:
            for b_ts, b_id, b_view, b_mask in _entries(state):
                if b_mask and ts - self.after <= b_ts:
                    self._pairs(hits, b_mask, ts, event_id, compact(view), b_ts, b_id, b_view)
        else:
            for a_ts, a_id, a_view, a_mask in _entries(state):
                if not a_mask and a_ts <= ts + self.after:
                    self._pairs(hits, mask, a_ts, a_id, a_view, ts, event_id, view)
        # Concatenation makes a list of the exact size; an append or ``[*state, ...]`` would leave
        # spare slots in every key's state.
        state = state + [ts, event_id, hold(view), mask]  # noqa: RUF005
        if len(state) > 1 + 4 * MAX_HELD:  # cheap test first: most keys hold a few events
            state = self._bounded(state, pending=mask != 0)
        return state, hits

    def _bounded(self, state: list[Any], pending: bool) -> list[Any]:
        """``state`` keeping the newest ``MAX_HELD`` held events of one side (first or pending)."""
        side = sorted((state[i], i) for i in range(1, len(state), 4) if bool(state[i + 3]) == pending)
        if len(side) <= MAX_HELD:
            return state
        drop = {i for _, i in side[: len(side) - MAX_HELD]}
        self.held_dropped += len(drop)
        return [state[0]] + [v for i in range(1, len(state), 4) if i not in drop for v in state[i : i + 4]]

    def _pairs(self, hits: list[Hit], mask: int, a_ts: float, a_id: str, a_view: Held,
               b_ts: float, b_id: str, b_view: Held) -> None:  # fmt: skip
        """Pair one A with one B for every member in ``mask`` whose time bound they meet. Either
        side may be held (a string), read back once, and only when some member can pair them."""
        first: dict[str, Any] | None = None
        then: dict[str, Any] = {}
        for bit, member in enumerate(self.members):
            if mask >> bit & 1 and a_ts - member.after <= b_ts <= a_ts + member.scfg.within:
                if first is None:
                    first, then = unhold(a_view), unhold(b_view)
                hit = self._guard(member, then, member._pair, a_ts, a_id, first, b_ts, b_id, then)
                if hit is not None:
                    hit.rule_id = member.id
                    hits.append(hit)

    def _guard(self, member: Rule, view: dict[str, Any], call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``; if it fails and ``on_error`` is set, report it for ``member`` and return None."""
        if self.on_error is None:
            return call(*args)
        try:
            return call(*args)
        except Exception:
            self.on_error(member, view)
            return None

    def _read(self, state: State) -> list[Any]:
        """A saved state in this group's shape and member order."""
        if type(state) is list and state[0] is self.member_ids:  # the common case, checked first
            return state
        if isinstance(state, list) and state[0] == self.member_ids:
            state[0] = self.member_ids  # one list for every key (a recovered state has its own copy)
            return state
        return self._remap(state)

    def _remap(self, state: State) -> list[Any]:
        """A state saved in the previous shape, or under other members (the configuration changed):
        translate the masks to this group's members; a pending event none of them waits for goes."""
        members, firsts, pending = group_parts(state)
        bit_of = {rule_id: bit for bit, rule_id in enumerate(self.member_ids)}
        moves = [(old, bit_of[rule_id]) for old, rule_id in enumerate(members) if rule_id in bit_of]
        flat: list[Any] = []
        for a_ts, a_id, a_view in firsts:
            flat += (a_ts, a_id, a_view, 0)
        for b_ts, b_id, b_view, old_mask in pending:
            mask = sum(1 << new for old, new in moves if old_mask >> old & 1)
            if mask:
                flat += (b_ts, b_id, b_view, mask)
        return [self.member_ids] + flat  # noqa: RUF005  (exact size, as in ``apply``)

    def merge(self, state: State, rule_id: str, firsts: list[Any], pending: list[Any]) -> list[Any]:
        """``state`` (None for none) with a member's first events [ts, id, held] and pending events
        [ts, id, held] added: its own state from before it was grouped, or its part of a group this
        engine does not form. Kept in time order, as the engine found them."""
        entries = [list(entry) for entry in _entries([self.member_ids] if state is None else self._read(state))]
        known = {e[1] for e in entries if e[3] == 0}
        entries += ([*a, 0] for a in firsts if a[1] not in known)
        waiting = {e[1]: e for e in entries if e[3]}
        bit = 1 << self.member_ids.index(rule_id)
        for b_ts, b_id, b_view in pending:
            if b_id in waiting:
                waiting[b_id][3] |= bit
            else:
                entries.append([b_ts, b_id, b_view, bit])
        entries.sort(key=lambda e: e[0])
        return [self.member_ids] + [value for entry in entries for value in entry]

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        """Drop the first events no member can pair any more (older than the longest ``within``),
        and the pending events no first event can still reach (one that is not late, i.e. at or
        after the watermark, can only be newer than them, or at most the longest ``after_within``
        older)."""
        state = self._read(state)
        kept: list[Any] = []
        after = self.after
        for entry in _entries(state):
            if (entry[0] + after >= watermark) if entry[3] else (entry[0] + self.keep >= watermark):
                kept += entry
        return ([state[0]] + kept if kept else None), []  # noqa: RUF005  (exact size, as in ``apply``)

    def deadline(self, state: State) -> float | None:
        """When ``advance`` next has something to drop."""
        state = self._read(state)
        earliest, keep, after = float("inf"), self.keep, self.after
        for i in range(1, len(state), 4):  # called for every key on every pass: indexes, no tuples
            when = state[i] + after if state[i + 3] else state[i] + keep
            if when < earliest:
                earliest = when
        return earliest + 0.001 if earliest != float("inf") else None

    def condition_text(self) -> str:
        return "shared store of " + ", ".join(self.member_ids)


def _entries(state: list[Any]) -> Iterator[tuple[Any, ...]]:
    """The held events of a group's state: (ts, event id, held event, mask)."""
    items = iter(state)
    next(items)  # the member ids
    return zip(items, items, items, items, strict=True)


def group_parts(state: State) -> tuple[list[str], list[list[Any]], list[list[Any]]]:
    """A group's state, in either shape it was saved in, as (member ids, first events [ts, id,
    held], pending events [ts, id, held, mask])."""
    if isinstance(state, dict):  # {"m": member ids, "a": first events, "b": pending events}
        return state["m"], state["a"], state["b"]
    firsts, pending = [], []
    for ts, event_id, held, mask in _entries(state):
        if mask:
            pending.append([ts, event_id, held, mask])
        else:
            firsts.append([ts, event_id, held])
    return state[0], firsts, pending


GROUP_PREFIX = "pairs:"


def is_group_id(unit_id: str) -> bool:
    """Whether state saved under this id is a group's: rule ids cannot hold the colon."""
    return unit_id.startswith(GROUP_PREFIX)


def group_id(rule: SequenceRule) -> str:
    """The group of a sequence rule: its first side and join keys (their names and paths)."""
    cfg = rule.scfg
    joins = ",".join(f"{j.name}:{j.first}:{j.then}" for j in cfg.join)
    where = describe(cfg.first.where) if cfg.first.where is not None else ""
    signature = f"{'/'.join(cfg.first.events)}|{where}|{joins}|{cfg.max_fanout}"
    digest = hashlib.sha256(signature.encode()).hexdigest()[:8]
    return f"{GROUP_PREFIX}{'/'.join(cfg.first.events)}:{digest}"


def group_sequences(rules: tuple[Rule, ...] | list[Rule]) -> list[Rule]:
    """The rules as the engine evaluates them: sequence rules sharing a group replaced by one
    ``SequenceGroup`` at the place of its first member; every other rule as it is."""
    by_group: dict[str, list[SequenceRule]] = {}
    for rule in rules:
        if isinstance(rule, SequenceRule):
            by_group.setdefault(group_id(rule), []).append(rule)
    out: list[Rule] = []
    placed: set[str] = set()
    for rule in rules:
        if not isinstance(rule, SequenceRule) or len(by_group[group_id(rule)]) == 1:
            out.append(rule)
        elif (gid := group_id(rule)) not in placed:
            placed.add(gid)
            out.append(SequenceGroup(by_group[gid]))
    return out
