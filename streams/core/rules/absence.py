"""``absence``: an event A not accompanied by an event B on the same join key within a bound.

Fired when event time (the watermark) passes A + ``within``, so a B arriving late but within the
allowed lateness still cancels it. ``lookback`` lets a B shortly *before* A count too (a request
logged just before the action that cites it).

A key holds at most ``MAX_HELD`` A events, the oldest: a bulk takedown citing one request is a key
with thousands of them within ``within``, and held without a bound its state outgrew a changelog
record, and every further A copied the whole list. Unlike a sequence's, the newest go. A B that
cancels the oldest A cancels every later one too (it is within ``lookback`` before and ``within``
after each), and when no B comes the oldest A fires first, for the same key: a dropped A's own alert
would be that incident again, which the rule's suppression (by default its whole window) holds back.
"""

from __future__ import annotations

import bisect
from typing import Any, Literal

from pydantic import Field

from streams.core.rules.base import Hit, State, hold, register, unhold
from streams.core.rules.duration import Duration, format_duration
from streams.core.rules.sequence import MAX_HELD, PairConfig, Paired


class AbsenceConfig(PairConfig):
    kind: Literal["absence"]
    lookback: Duration = Field(default=0.0, ge=0)


@register
class AbsenceRule(Paired):
    kind = "absence"
    config_model = AbsenceConfig
    facts = frozenset({"within"})

    def __init__(self, config: AbsenceConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.acfg = config
        self.held_dropped = 0  # A events not held for ``MAX_HELD`` (a metric)

    @property
    def window(self) -> float:
        return self.acfg.within + self.acfg.lookback

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        firsts, times = ([], []) if state is None else _read(state)
        # New lists of the exact size: an append or insert would leave spare slots in every key.
        if side == "first":
            event_id = view["event_id"]
            if not any(a[1] == event_id for a in firsts):
                firsts = self._hold_oldest(firsts, ts, event_id, view)
        else:
            pos = bisect.bisect_right(times, ts)
            times = times[:pos] + [ts] + times[pos:]  # noqa: RUF005
        return [firsts, times], []

    def _hold_oldest(self, firsts: list[list[Any]], ts: float, event_id: str, view: dict[str, Any]) -> list[list[Any]]:
        """``firsts`` with this A added, keeping the ``MAX_HELD`` oldest (the one left out counted)."""
        if len(firsts) < MAX_HELD:
            return firsts + [[ts, event_id, hold(view)]]  # noqa: RUF005
        self.held_dropped += 1
        newest = max(range(len(firsts)), key=lambda i: firsts[i][0])
        if ts >= firsts[newest][0]:
            return firsts
        return firsts[:newest] + firsts[newest + 1 :] + [[ts, event_id, hold(view)]]

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        within, lookback = self.acfg.within, self.acfg.lookback
        firsts, times = _read(state)
        hits, pending = [], []
        for a_ts, a_id, a_view in firsts:
            if a_ts + within >= watermark:
                pending.append([a_ts, a_id, a_view])
                continue
            lo = bisect.bisect_left(times, a_ts - lookback)
            if lo < len(times) and times[lo] <= a_ts + within:
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
        keep_from = min([watermark, *(a[0] for a in pending)]) - lookback
        times = times[bisect.bisect_left(times, keep_from) :]
        return ([pending, times] if pending or times else None), hits

    def deadline(self, state: State) -> float | None:
        if not state:
            return None
        firsts, times = _read(state)
        if firsts:
            return min(a[0] for a in firsts) + self.acfg.within + 0.001
        return times[0] + self.acfg.lookback + 0.001 if times else None

    def condition_text(self) -> str:
        joins = " or ".join(f"{j.first} = {j.then}" for j in self.acfg.join)
        return (
            f"{'/'.join(self.acfg.first.events)} with no {'/'.join(self.acfg.then.events)} from "
            f"{format_duration(self.acfg.lookback)} before to {format_duration(self.acfg.within)} after, "
            f"joined on {joins}"
        )


def _read(state: State) -> tuple[list[list[Any]], list[float]]:
    """An absence's saved state, ``[first events [ts, id, held], times of the expected events]``;
    saved as ``{"a": ..., "b": ...}`` before (a dict cost more than the lists of a quiet key)."""
    if isinstance(state, dict):
        return state["a"], state["b"]
    return state[0], state[1]
