"""``threshold``: a count, or the sum of a numeric field, per group key over a sliding event-time window.

State per key is bucketed so that it stays small however busy the key is: a window is divided into
``RESOLUTION`` buckets, so a 30-day window holds at most ~240 numbers per key and a window is exact
to 1/240 of its length. The most recent contributing event ids are kept (for the alert and to drop
redelivered events).

The bound is checked at every event, over the windows containing it, not when a window closes: a
30-day sum of small exports alerts at the export that takes it past the bound, with the total so far
(``{total}``, ``{count}``), however long the window. Expiry (``advance``) only drops old buckets.

A threshold's state is a list, ``[buckets, ids, latest ts, latest held event]``: a key with one
event in its window spent more on a dict and a nested ``lv`` list than on what they held. State
saved as ``{"b": buckets, "i": ids, "lv": [ts, held event]}`` is still read.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.core.rules.base import (
    Hit,
    Rule,
    RuleConfig,
    Selector,
    State,
    describe,
    hold,
    register,
    selector_test,
    unhold,
)
from streams.core.rules.duration import Duration, format_duration
from streams.core.rules.predicate import Bound, Context, compile_path

RESOLUTION = 240
MAX_IDS = 50


class GroupKey(BaseModel):
    """A group-by path, optionally keeping only some of its values (e.g. sensitive tags)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(min_length=1)
    in_: list[str] | str | None = Field(default=None, alias="in")


class WindowedConfig(RuleConfig):
    select: Selector
    group_by: list[GroupKey | str] = Field(min_length=1)
    window: Duration = Field(gt=0)
    at_least: Bound | None = None
    above: Bound | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> WindowedConfig:
        if (self.at_least is None) == (self.above is None):
            raise ValueError("give exactly one of at_least or above")
        return self


class ThresholdConfig(WindowedConfig):
    kind: Literal["threshold"]
    aggregate: Literal["count", "sum"] = "count"
    field: str | None = None  # the numeric field summed when aggregate is sum

    @model_validator(mode="after")
    def _field_for_sum(self) -> ThresholdConfig:
        if self.aggregate == "sum" and not self.field:
            raise ValueError("aggregate 'sum' needs a field")
        return self


class Windowed(Rule):
    """Shared by threshold and cardinality: selection, group keys, the bound."""

    def __init__(self, config: WindowedConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.wcfg = config
        self.types, self.test = selector_test(config.select, lists)
        self.size = config.window
        self.res = max(config.window / RESOLUTION, 0.001)
        # Expired buckets and ids are dropped in batches, an eighth of a window at a time: a busy key
        # is then visited 8 times per window instead of at every bucket. Windows are computed from
        # the entries' times, so entries kept a little longer never change a result.
        self.slack = max(2 * self.res, self.size / 8)
        self.groups = []
        for spec in config.group_by:
            key = GroupKey(field=spec) if isinstance(spec, str) else spec
            allowed: frozenset[str] | None = None
            if isinstance(key.in_, str):
                if not key.in_.startswith("$") or key.in_[1:] not in lists:
                    raise ValueError(f"group_by: unknown list {key.in_!r}")
                allowed = frozenset(lists[key.in_[1:]])
            elif key.in_ is not None:
                allowed = frozenset(key.in_)
            self.groups.append((key.field, compile_path(key.field), allowed))

    @property
    def window(self) -> float:
        return self.size

    @property
    def event_types(self) -> frozenset[str]:
        return self.types

    def event_deadline(self, ts: float, side: str) -> float | None:
        return math.floor(ts / self.res) * self.res + self.size + self.slack

    def route(self, ctx: Context, event_type: str) -> list[tuple[str, str]]:
        if event_type not in self.types or not self.test(ctx):
            return []
        out = []
        for name, get, allowed in self.groups:
            for value in get(ctx):
                usable = isinstance(value, str | int) and not isinstance(value, bool)
                if usable and (allowed is None or value in allowed):
                    out.append((f"{name}={value}", "event"))
        return out

    def reached(self, total: float) -> bool:
        if self.wcfg.at_least is not None:
            return total >= self.wcfg.at_least
        return total > (self.wcfg.above or 0.0)

    def bound_text(self) -> str:
        if self.wcfg.at_least is not None:
            return f"at least {self.wcfg.at_least:g}"
        return f"above {self.wcfg.above:g}"


def in_window(ids: list[list[Any]], lo: float, hi: float) -> list[list[Any]]:
    return [entry for entry in ids if lo < entry[0] <= hi]


def remember_latest(state: dict[str, Any], ts: float, view: dict[str, Any]) -> None:
    """Keep the newest event's fields, so an alert describes the window's last event even when an
    older event arrived last (out of order)."""
    latest = state.get("lv")
    if latest is None or ts >= latest[0]:
        state["lv"] = [ts, hold(view)]


def window_hit(latest: list[Any] | None, window: list[list[Any]], ts: float, view: dict[str, Any]) -> Hit:
    """A hit over the events of a window: anchored on its first event, ending at its last.
    ``latest`` is the newest event seen, [ts, held event], or None."""
    if not window:
        return Hit(anchor=view["event_id"], ts=ts, first_seen=ts, event_ids=[view["event_id"]], view=view)
    last_ts = window[-1][0]
    last_view = unhold(latest[1]) if latest is not None and latest[0] == last_ts else view
    return Hit(
        anchor=window[0][1],
        ts=last_ts,
        first_seen=window[0][0],
        event_ids=[event_id for _, event_id in window],
        view=last_view,
    )


def add_id(ids: list[list[Any]], ts: float, event_id: str) -> list[list[Any]] | None:
    """``ids`` with [ts, id] added in time order (the newest ``MAX_IDS``), or None if the id is
    already there (a redelivery). A new list of the exact size: an insert into an empty list
    reserves four slots, and most keys hold one event."""
    for _, known in ids:
        if known == event_id:
            return None
    pos = bisect.bisect_right(ids, [ts, event_id])
    out = ids[:pos] + [[ts, event_id]] + ids[pos:]  # noqa: RUF005  (unpacking leaves spare slots)
    return out[-MAX_IDS:] if len(out) > MAX_IDS else out


@register
class ThresholdRule(Windowed):
    kind = "threshold"
    config_model = ThresholdConfig
    facts = frozenset({"total", "count", "window"})

    def __init__(self, config: ThresholdConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.tcfg = config
        self.value = compile_path(config.field) if config.aggregate == "sum" and config.field else None

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        if self.value is not None:
            values = [v for v in self.value(Context(view, ts)) if isinstance(v, int | float)]
            amount = float(sum(values))
        else:
            amount = 1.0
        state = [[], [], None, None] if state is None else _read(state)
        ids = add_id(state[1], ts, view["event_id"])
        if ids is None:
            return state, []
        state[1] = ids
        if state[2] is None or ts >= state[2]:  # as ``remember_latest``
            state[2], state[3] = ts, hold(view)
        buckets: list[list[float]] = state[0]
        start = math.floor(ts / self.res) * self.res
        pos = bisect.bisect_left(buckets, [start])
        if pos < len(buckets) and buckets[pos][0] == start:
            buckets[pos][1] += amount
            buckets[pos][2] += 1
        else:
            state[0] = buckets = buckets[:pos] + [[start, amount, 1]] + buckets[pos:]  # noqa: RUF005  (as add_id)
        best_end, total, count = self._best_window(buckets, pos)
        if not self.reached(total):
            return state, []
        window = in_window(state[1], best_end - self.size, best_end + self.res)
        hit = window_hit(state[2:], window, ts, view)
        hit.facts = {"total": total, "count": int(count), "window": format_duration(self.size)}
        return state, [hit]

    def _best_window(self, buckets: list[list[float]], pos: int) -> tuple[float, float, float]:
        """The window containing bucket ``pos`` with the largest total: (end bucket start, total, count).
        Windows ending at each bucket from ``pos`` up to one window later are considered, so an event
        arriving out of order still completes the window it belongs to."""
        best = (buckets[pos][0], -math.inf, 0.0)
        limit = buckets[pos][0] + self.size
        for end in range(pos, len(buckets)):
            end_start = buckets[end][0]
            if end_start >= limit:
                break
            lo = bisect.bisect_right(buckets, [end_start - self.size, math.inf])
            window = buckets[lo : end + 1]
            total = sum(b[1] for b in window)
            if total > best[1]:
                best = (end_start, total, sum(b[2] for b in window))
        return best

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        state = _read(state)
        horizon = watermark - self.size - self.res
        state[0] = [b for b in state[0] if b[0] > horizon]
        state[1] = [x for x in state[1] if x[0] > horizon]
        return (state if state[0] else None), []

    def deadline(self, state: State) -> float | None:
        buckets = _read(state)[0] if state else None
        return buckets[0][0] + self.size + self.slack if buckets else None

    def condition_text(self) -> str:
        what = "events" if self.tcfg.aggregate == "count" else f"sum of {self.tcfg.field}"
        keys = ", ".join(g[0] for g in self.groups)
        return (
            f"{what} per {keys} within {format_duration(self.size)} {self.bound_text()}, "
            f"over {'/'.join(self.tcfg.select.events)} where {describe(self.tcfg.select.where)}"
        )


def _read(state: State) -> list[Any]:
    """A threshold's saved state as a list, whichever shape it was saved in."""
    if isinstance(state, dict):
        latest = state.get("lv") or [None, None]
        return [state["b"], state["i"], latest[0], latest[1]]
    return state
