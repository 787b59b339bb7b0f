"""``match``: one event satisfies a predicate. Stateless; the engine suppresses repeats per key."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from streams.core.rules.base import (
    Hit,
    Rule,
    RuleConfig,
    Selector,
    State,
    describe,
    key_getter,
    register,
    selector_test,
)
from streams.core.rules.predicate import Context


class MatchConfig(RuleConfig):
    kind: Literal["match"]
    select: Selector
    group_by: str = "actor.id"  # one incident per key and ``suppress``-long bucket of event time


@register
class MatchRule(Rule):
    kind = "match"
    config_model = MatchConfig
    stateful = False
    bucketed: ClassVar[bool] = True

    def __init__(self, config: MatchConfig, lists: dict[str, list[str]]) -> None:
        super().__init__(config, lists)
        self.cfg = config
        self.types, self.test = selector_test(config.select, lists)
        self.keys = key_getter(config.group_by)
        self.bucket = config.suppress or 3600.0

    @property
    def event_types(self) -> frozenset[str]:
        return self.types

    def route(self, ctx: Context, event_type: str) -> list[tuple[str, str]]:
        if event_type not in self.types or not self.test(ctx):
            return []
        return [(key, "event") for key in self.keys(ctx.view)[:1]]

    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        # The incident is the key's time bucket, not the first event to arrive in it, so the alert
        # id does not depend on arrival order; later events in the bucket repeat the same id.
        bucket = math.floor(ts / self.bucket)
        event_id = view["event_id"]
        return None, [Hit(anchor=f"bucket:{bucket}", ts=ts, first_seen=ts, event_ids=[event_id], view=view)]

    def condition_text(self) -> str:
        return f"one {'/'.join(self.cfg.select.events)} event where {describe(self.cfg.select.where)}"
