"""``absence``: an event A not accompanied by an event B on the same join key within a bound.

Fired when event time (the watermark) passes A + ``within``, so a B arriving late but within the
allowed lateness still cancels it. ``lookback`` lets a B shortly *before* A count too (a request
logged just before the action that cites it).
"""

from __future__ import annotations

import bisect
from typing import Any, Literal

from pydantic import Field

from .base import Hit, State, hold, register, unhold
from .duration import Duration, format_duration
from .sequence import PairConfig, Paired


class AbsenceConfig(PairConfig):
    kind: Literal["absence"]
    lookback: Duration = Field(default=0.0, ge=0)


@register
class AbsenceRule(Paired):
    kind = "absence"
    config_model = AbsenceConfig

    def __init__(self, config: AbsenceConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.acfg = config

    @property
    def window(self) -> float:
        return self.acfg.within + self.acfg.lookback

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        if state is None:
            state = {"a": [], "b": []}
        if side == "first":
            event_id = view["event_id"]
            if not any(a[1] == event_id for a in state["a"]):
                state["a"].append([ts, event_id, hold(view)])
        else:
            bisect.insort(state["b"], ts)
        return state, []

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        within, lookback = self.acfg.within, self.acfg.lookback
        hits, pending = [], []
        for a_ts, a_id, a_view in state["a"]:
            if a_ts + within >= watermark:
                pending.append([a_ts, a_id, a_view])
                continue
            lo = bisect.bisect_left(state["b"], a_ts - lookback)
            if lo < len(state["b"]) and state["b"][lo] <= a_ts + within:
                continue  # the expected event came
            hits.append(
                Hit(
                    anchor=a_id,
                    ts=a_ts + within,
                    first_seen=a_ts,
                    event_ids=[a_id],
                    view=unhold(a_view),
                    facts={"within": format_duration(within)},
                )
            )
        state["a"] = pending
        keep_from = min([watermark, *(a[0] for a in pending)]) - lookback
        state["b"] = state["b"][bisect.bisect_left(state["b"], keep_from) :]
        return (state if state["a"] or state["b"] else None), hits

    def deadline(self, state: State) -> float | None:
        if not state:
            return None
        if state["a"]:
            return min(a[0] for a in state["a"]) + self.acfg.within + 0.001
        return state["b"][0] + self.acfg.lookback + 0.001 if state["b"] else None

    def condition_text(self) -> str:
        joins = " or ".join(f"{j.first} = {j.then}" for j in self.acfg.join)
        return (
            f"{'/'.join(self.acfg.first.events)} with no {'/'.join(self.acfg.then.events)} from "
            f"{format_duration(self.acfg.lookback)} before to {format_duration(self.acfg.within)} after, "
            f"joined on {joins}"
        )
