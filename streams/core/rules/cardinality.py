"""``cardinality``: the number of distinct values of a field per group key over a sliding window.

State per key: each distinct value with the last time it was seen (capped: once the bound is met
there is no need to remember more values than the bound asks for, plus slack).

``min_events`` asks for enough events as well as enough distinct values: severe reports against two
of one host's meetings are two reports, or eight. The events of a window are counted from the ids
kept for the alert (the newest ``MAX_IDS``), hence the bound.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from streams.core.rules.base import Hit, RuleConfig, State, describe, register
from streams.core.rules.duration import format_duration
from streams.core.rules.predicate import Context, compile_path
from streams.core.rules.threshold import (
    MAX_IDS,
    Windowed,
    WindowedConfig,
    add_id,
    in_window,
    remember_latest,
    window_hit,
)


class CardinalityConfig(WindowedConfig):
    kind: Literal["cardinality"]
    field: str = Field(min_length=1)  # whose distinct values are counted
    # ... and the events in the window must be at least this many (1: any number will do).
    min_events: int = Field(default=1, ge=1, le=MAX_IDS)


@register
class CardinalityRule(Windowed):
    kind = "cardinality"
    config_model = CardinalityConfig
    facts = frozenset({"distinct", "count", "window"})

    def __init__(self, config: CardinalityConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.ccfg = config
        self.values = compile_path(config.field)
        bound = config.at_least if config.at_least is not None else (config.above or 0) + 1
        self.cap = int(bound) * 4 + 16

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        if state is None:
            state = {"v": {}, "i": []}
        ids = add_id(state["i"], ts, view["event_id"])
        if ids is None:
            return state, []
        state["i"] = ids
        remember_latest(state, ts, view)
        seen: dict[str, float] = state["v"]
        for value in self.values(Context(view, ts)):
            if isinstance(value, str | int) and not isinstance(value, bool):
                key = str(value)
                if seen.get(key, -1.0) < ts:
                    seen[key] = ts
        if len(seen) > self.cap:
            for key, _ in sorted(seen.items(), key=lambda kv: kv[1])[: len(seen) - self.cap]:
                del seen[key]
        # Windows ending at this event and at the newest event seen (an out-of-order arrival may
        # complete a window that ends later than itself).
        best_end, best = ts, 0
        for end in {ts, max(seen.values(), default=ts)}:
            distinct = sum(1 for t in seen.values() if end - self.size < t <= end)
            if distinct > best:
                best_end, best = end, distinct
        if not self.reached(best):
            return state, []
        window = in_window(state["i"], best_end - self.size, best_end)
        if len(window) < self.ccfg.min_events:
            return state, []
        hit = window_hit(state.get("lv"), window, ts, view)
        hit.facts = {"distinct": best, "count": len(window), "window": format_duration(self.size)}
        return state, [hit]

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        horizon = watermark - self.size
        state["v"] = {k: t for k, t in state["v"].items() if t > horizon}
        state["i"] = [x for x in state["i"] if x[0] > horizon]
        return (state if state["v"] or state["i"] else None), []

    def deadline(self, state: State) -> float | None:
        times = [t for t, _ in state["i"]] + list(state["v"].values()) if state else []
        return min(times) + self.size + self.slack if times else None

    def condition_text(self) -> str:
        keys = ", ".join(g[0] for g in self.groups)
        events = f" in at least {self.ccfg.min_events} events" if self.ccfg.min_events > 1 else ""
        return (
            f"distinct {self.ccfg.field} per {keys} within {format_duration(self.size)} {self.bound_text()}{events}, "
            f"over {'/'.join(self.ccfg.select.events)} where {describe(self.ccfg.select.where)}"
        )


__all__ = ["CardinalityConfig", "CardinalityRule", "RuleConfig"]
