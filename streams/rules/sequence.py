"""``sequence``: an event A, then an event B on the same join key within a time bound.

Order-insensitive within the allowed lateness: when B arrives before A (A is late), B waits in state
until the watermark passes it, and A arriving then still matches. A pair predicate (``where``) sees B
as the current event and A under ``first.``.

Join keys are tried in order for B: a takedown carrying the request's id joins on ``request``; one
without it falls back to the target it acted on. A is stored under every key it offers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import Hit, Rule, RuleConfig, Selector, State, compact, describe, register, selector_test
from .duration import Duration, format_duration
from .predicate import Context, Predicate, compile_path, compile_predicate


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


class SequenceConfig(PairConfig):
    kind: Literal["sequence"]
    where: Predicate | None = None


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


@register
class SequenceRule(Paired):
    kind = "sequence"
    config_model = SequenceConfig

    def __init__(self, config: SequenceConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.scfg = config
        self.pair_test = compile_predicate(config.where, lists)

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        if state is None:
            state = {"a": [], "b": []}
        event_id = view["event_id"]
        mine = state["a"] if side == "first" else state["b"]
        for entry in mine:
            if entry[1] == event_id:
                return state, []
        mine.append([ts, event_id, compact(view)])
        within = self.scfg.within
        hits = []
        if side == "then":
            for a_ts, a_id, a_view in state["a"]:
                if a_ts <= ts <= a_ts + within:
                    hit = self._pair(a_ts, a_id, a_view, ts, event_id, view)
                    if hit is not None:
                        hits.append(hit)
        else:
            for b_ts, b_id, b_view in state["b"]:
                if ts <= b_ts <= ts + within:
                    hit = self._pair(ts, event_id, mine[-1][2], b_ts, b_id, b_view)
                    if hit is not None:
                        hits.append(hit)
        return state, hits

    def _pair(
        self, a_ts: float, a_id: str, a_view: dict[str, Any], b_ts: float, b_id: str, b_view: dict[str, Any]
    ) -> Hit | None:
        if not self.pair_test(Context(b_view, b_ts, first=a_view)):
            return None
        latency = b_ts - a_ts
        return Hit(
            anchor=f"{a_id}|{b_id}",
            ts=b_ts,
            first_seen=a_ts,
            event_ids=[a_id, b_id],
            view=b_view,
            first=a_view,
            facts={"latency": format_duration(latency), "latency_seconds": round(latency, 3)},
        )

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        within = self.scfg.within
        state["a"] = [a for a in state["a"] if a[0] + within >= watermark]
        # A pending B can only meet an A that is not late, i.e. one at or after the watermark.
        state["b"] = [b for b in state["b"] if b[0] >= watermark]
        return (state if state["a"] or state["b"] else None), []

    def deadline(self, state: State) -> float | None:
        if not state:
            return None
        earliest = float("inf")
        for b in state["b"]:
            if b[0] < earliest:
                earliest = b[0]
        within = self.scfg.within
        for a in state["a"]:
            if a[0] + within < earliest:
                earliest = a[0] + within
        return earliest + 0.001 if earliest != float("inf") else None

    def condition_text(self) -> str:
        joins = " or ".join(f"{j.first} = {j.then}" for j in self.scfg.join)
        return (
            f"{'/'.join(self.scfg.first.events)} then {'/'.join(self.scfg.then.events)} within "
            f"{format_duration(self.scfg.within)}, joined on {joins}, where {describe(self.scfg.where)}"
        )
