"""The rule protocol, the registry of rule kinds, and what every rule config shares.

A rule kind is one file: a frozen config model with ``kind: Literal[...]`` and a Rule subclass,
registered with ``@register``. The loader builds a discriminated union from the registry.

State. A rule keeps small, JSON-serialisable state per shard key (lists and dicts of numbers and
strings), because the live worker stores it in a changelog-backed Faust table. Methods receive the
state and return the new state (or None when nothing is left); they never keep references to it.
Times are POSIX seconds of event time; nothing here reads the wall clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.core.rules.duration import Duration
from streams.core.rules.predicate import Context, Predicate, Test, compile_path, compile_predicate

ACTION_TYPES = ("meeting.shutdown", "account.suspend", "account.quarantine", "account.terminate", "content.remove")
EVENT_GROUPS: dict[str, tuple[str, ...]] = {
    "action": ACTION_TYPES,
    "export": ("data.export",),
    "request": ("request.received",),
    "grant": ("access.grant",),
    "report": ("report.filed",),
}
ALL_TYPES = ("request.received", *ACTION_TYPES, "data.export", "access.grant", "report.filed")

# Facts the engine adds to every alert's summary, beside the rule kind's own (``Rule.facts``).
ALERT_FACTS = frozenset({"group", "score", "severity"})

State = Any  # JSON-serialisable
Held = str | dict[str, Any]  # an event kept in state: see ``hold``


def expand_types(names: list[str]) -> frozenset[str]:
    out: set[str] = set()
    for name in names:
        if name in EVENT_GROUPS:
            out.update(EVENT_GROUPS[name])
        elif name in ALL_TYPES:
            out.add(name)
        else:
            choices = ", ".join([*EVENT_GROUPS, *ALL_TYPES])
            raise ValueError(f"unknown event type or group {name!r} (one of {choices})")
    return frozenset(out)


class Selector(BaseModel):
    """Which events a rule (or one side of a pair) looks at: event types and a predicate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[str] = Field(min_length=1)
    where: Predicate | None = None

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        expand_types(value)
        return value


class ScoreSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: int = Field(ge=0, le=100)
    boosters: list[str] | Literal["all"] = "all"


class RuleConfig(BaseModel):
    """Options every rule kind has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    kind: str
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    summary: str = Field(min_length=1, max_length=1000)
    score: ScoreSpec
    # live: alerts go everywhere; shadow: recorded and counted, never sent to pagers or webhooks;
    # observe: no alerts at all, hits only feed metrics (the request-to-action latency histogram).
    mode: Literal["live", "shadow", "observe"] = "live"
    enabled: bool = True
    suppress: Duration | None = None  # default: the rule's window, or 1h; 0: none
    # always: the rule's alerts page on their own (at or above the paging severity), as well as through
    # the incident they join; false: they page only through incidents (streams/core/incidents.py).
    page: Literal["always"] | Literal[False] = False


@dataclass(slots=True)
class Hit:
    """A detection before scoring: the rule's evidence for one incident."""

    anchor: str  # what makes the incident unique under its key: contributing event ids
    ts: float  # event time of the detection (the last contributing event, or the deadline)
    first_seen: float
    event_ids: list[str]
    view: dict[str, Any]  # the event that completed the pattern
    first: dict[str, Any] | None = None  # the earlier event of a pair
    facts: dict[str, Any] = field(default_factory=dict)  # count, total, latency... for the summary
    rule_id: str | None = None  # set by a rule group: the member rule that detected it


@dataclass(frozen=True, slots=True)
class Role:
    """Why an event goes to a shard for a rule: as the single event, or one side of a pair."""

    rule: Rule
    side: str  # "event", "first" or "then"


# Fields worth keeping when an event is held in state (a pair's first side, a pending event).
# Everything else, including unknown extra fields and a request's target list, is dropped.
_KEEP = (
    "event_id", "event_type", "occurred_at", "actor", "ticket_id", "request_id", "reason", "approved_by",
    "tags", "requester", "request_kind", "deadline_seconds", "confidential", "target", "record_count",
    "fields", "subject_regions", "destination", "grantee", "system", "scope", "remote", "category",
)  # fmt: skip
# What a summary, a booster or a pair's ``where`` may read: the event they see may be a held one.
HELD_FIELDS = frozenset((*_KEEP, "target_count"))


_last_held: list[Any] = [None, None, None]  # (view, its compact form, its held form)


def compact(view: dict[str, Any]) -> dict[str, Any]:
    """The fields worth keeping in state, as a dict (what a held event reads back as)."""
    if _last_held[0] is view:
        return _last_held[1]
    out = {k: view[k] for k in _KEEP if k in view}
    targets = view.get("targets")
    if isinstance(targets, list) and targets:
        out["target_count"] = len(targets)
    _last_held[0], _last_held[1], _last_held[2] = view, out, None
    return out


def hold(view: dict[str, Any]) -> Held:
    """An event as a rule keeps it in state: its compact form as one JSON string, a third of the
    memory of the dict tree. Held values are never mutated, so rules and keys that keep the same
    event share one string (a one-entry cache keyed by the view's identity). A view JSON cannot
    carry exactly (NaN, an integer beyond 64 bits, a lone surrogate: only the lenient decode path
    lets these through) is held as its dict, which ``unhold`` reads as well."""
    out = compact(view)
    held = _last_held[2]
    if held is None:
        try:
            data = orjson.dumps(out)
        except orjson.JSONEncodeError:
            held = out
        else:
            # orjson writes NaN and infinities as null: such a view would not read back equal.
            held = out if b"null" in data and orjson.loads(data) != out else data.decode()
        _last_held[2] = held
    return held


def unhold(held: Held) -> dict[str, Any]:
    """A held event's fields, as ``compact`` made them. State saved before events were held as
    strings holds the dict itself."""
    if isinstance(held, str):
        out: dict[str, Any] = orjson.loads(held)
        return out
    return held


class Rule(ABC):
    """Base class of every rule kind. Subclasses set ``config_model`` and implement the hooks."""

    config_model: ClassVar[type[RuleConfig]]
    kind: ClassVar[str]
    # The facts a hit of this kind carries (``Hit.facts``), which a summary may name: ``{count}``.
    facts: ClassVar[frozenset[str]] = frozenset()
    stateful: ClassVar[bool] = True
    # True when the rule's anchors already make one incident per time bucket (no interval check).
    bucketed: ClassVar[bool] = False

    def __init__(self, config: RuleConfig, lists: dict[str, list[str]]) -> None:
        self.config = config
        self.id = config.id
        self.lists = lists

    # -- routing --------------------------------------------------------------------------------
    @abstractmethod
    def route(self, ctx: Context, event_type: str) -> list[tuple[str, str]]:
        """Called for every event: the (shard key, side) pairs this event must reach. Empty when the
        rule does not care about the event. Must be cheap: it runs on the hot path."""

    # -- evaluation -----------------------------------------------------------------------------
    @abstractmethod
    def apply(self, state: State, view: dict[str, Any], ts: float, side: str) -> tuple[State, list[Hit]]:
        """Called with the shard's state for this rule (None if empty) and one routed event."""

    def advance(self, state: State, watermark: float) -> tuple[State, list[Hit]]:
        """Called when the watermark passes ``deadline(state)``: expire old entries, fire timers."""
        return state, []

    def deadline(self, state: State) -> float | None:
        """The event time at which ``advance`` must next be called; None when never."""
        return None

    def event_deadline(self, ts: float, side: str) -> float | None:
        """An upper bound on ``deadline(state)`` after an event at ``ts`` was applied: adding an
        entry can only bring the deadline down to the entry's own. Lets the engine reschedule a key
        without scanning its state; an early bound only costs a spare wake-up."""
        return None

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type ``route`` may accept (the engine skips the rule for others)."""
        return frozenset(ALL_TYPES)

    @property
    def window(self) -> float:
        return 3600.0

    def condition_text(self) -> str:
        """One line for ``explain``: what the rule looks for."""
        return self.config.description or self.config.title


def selector_test(selector: Selector, lists: dict[str, list[str]]) -> tuple[frozenset[str], Test]:
    return expand_types(selector.events), compile_predicate(selector.where, lists)


def key_getter(path: str, name: str | None = None) -> Callable[[dict[str, Any]], list[str]]:
    """Shard keys from a field path: ``actor.id=emp-1``. Several values give several keys."""
    get = compile_path(path)
    prefix = f"{name or path}="

    def keys(view: dict[str, Any]) -> list[str]:
        values = get(Context(view, 0.0))
        return [prefix + str(v) for v in values if isinstance(v, str | int) and not isinstance(v, bool)]

    return keys


RULE_KINDS: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule kind to the registry; a duplicate name is a programming error."""
    kind = cls.kind
    if kind in RULE_KINDS:
        raise RuntimeError(f"rule kind {kind!r} registered twice ({RULE_KINDS[kind].__name__}, {cls.__name__})")
    RULE_KINDS[kind] = cls
    return cls


def describe(pred: Any) -> str:
    """A predicate as compact text for ``explain`` and the rules reference."""
    if pred is None:
        return "(always)"
    import json

    return json.dumps(pred.model_dump(by_alias=True, exclude_none=True), separators=(", ", ": "))
