"""Alert, its deterministic id, and the summary sentence.

An alert id depends only on the rule, the group key and the incident's anchor (its defining event
ids), so the same input and config always give the same ids, and a redelivered event reproduces the
id instead of minting a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.core.rules.predicate import Context, compile_path
from streams.core.scoring import Severity

_PLACEHOLDER = re.compile(r"\{([A-Za-z_@][A-Za-z0-9_.@]*)(?:\|([^{}]*))?\}")


def alert_id(rule_id: str, group_key: str, anchor: str) -> str:
    digest = hashlib.sha256(f"{rule_id}\x1f{group_key}\x1f{anchor}".encode()).hexdigest()
    return digest[:24]


def iso(ts: float) -> str:
    """Event time as RFC 3339 UTC with milliseconds (stable text for byte-identical output)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Alert:
    alert_id: str
    rule_id: str
    severity: Severity
    score: int
    title: str
    summary: str
    actor_id: str | None
    group_key: str
    event_ids: list[str]
    first_seen: float
    last_seen: float
    signals: list[str]
    labels: dict[str, str]
    mode: str = "live"
    facts: dict[str, Any] = field(default_factory=dict)
    # Internal, never in ``to_json`` (the alert's bytes stay as they were): whether the rule is
    # ``page: always``, and the parties the incident engine keys risk on (``subjects_for``).
    page: bool = False
    subjects: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "severity": self.severity.label,
            "score": self.score,
            "title": self.title,
            "summary": self.summary,
            "actor_id": self.actor_id,
            "group_key": self.group_key,
            "event_ids": self.event_ids,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "signals": self.signals,
            "labels": self.labels,
            "mode": self.mode,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(
            alert_id=data["alert_id"],
            rule_id=data["rule_id"],
            severity=Severity.parse(data["severity"]),
            score=int(data["score"]),
            title=data["title"],
            summary=data["summary"],
            actor_id=data.get("actor_id"),
            group_key=data["group_key"],
            event_ids=list(data["event_ids"]),
            first_seen=_parse_iso(data["first_seen"]),
            last_seen=_parse_iso(data["last_seen"]),
            signals=list(data.get("signals", [])),
            labels=dict(data.get("labels", {})),
            mode=data.get("mode", "live"),
        )


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# Labels every alert carries when the incident has them: bounded, useful for routing a page.
LABEL_PATHS = {
    "event_type": "event_type",
    "actor_region": "actor.region",
    "target_region": "target.region",
    "target_kind": "target.kind",
    "destination_kind": "destination.kind",
    "destination_region": "destination.region",
    "grantee_region": "grantee.region",
    "system_region": "system.region",
    "jurisdiction": "first.requester.jurisdiction",
    "requester_kind": "first.requester.kind",
    "agency": "first.requester.agency",
    "request_id": "request_id",
}
_LABEL_GETTERS = {name: compile_path(path) for name, path in LABEL_PATHS.items()}


def labels_for(ctx: Context) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, get in _LABEL_GETTERS.items():
        values = get(ctx)
        if values and isinstance(values[0], str | int | float):
            out[name] = str(values[0])
    if "request_id" not in out and ctx.first is not None and ctx.first.get("request_id"):
        out["request_id"] = str(ctx.first["request_id"])
    return out


# The parties an alert concerns besides its actor, for the incident engine's risk objects: the
# target's owner and the requester (from the request of a pair, or the event itself when it is one).
SUBJECT_PATHS = {
    "target.owner_id": ("target.owner_id", "first.target.owner_id"),
    "requester.agency": ("first.requester.agency", "requester.agency"),
    "requester.jurisdiction": ("first.requester.jurisdiction", "requester.jurisdiction"),
    "request_id": ("request_id", "first.request_id"),
    "grantee.id": ("grantee.id",),
}
_SUBJECT_GETTERS = {name: tuple(compile_path(p) for p in paths) for name, paths in SUBJECT_PATHS.items()}


def subjects_for(ctx: Context) -> dict[str, str]:
    """``Alert.subjects``: the first value of each ``SUBJECT_PATHS`` entry the incident has."""
    out: dict[str, str] = {}
    for name, getters in _SUBJECT_GETTERS.items():
        for get in getters:
            values = get(ctx)
            if values and isinstance(values[0], str | int) and not isinstance(values[0], bool):
                out[name] = str(values[0])
                break
    return out


class Template:
    """A summary with ``{path}`` placeholders: event fields (``actor.id``, ``first.requester.agency``)
    or facts the rule computed (``{latency}``, ``{total}``). A missing value prints as ``?``, or as
    the fallback given after a bar: ``{subject_regions|none}``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.paths = {m.group(1): compile_path(m.group(1)) for m in _PLACEHOLDER.finditer(text)}

    def render(self, ctx: Context, facts: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in facts:
                return _fmt(facts[name])
            values = self.paths[name](ctx)
            if not values:
                return match.group(2) if match.group(2) is not None else "?"
            return ", ".join(_fmt(v) for v in values[:10]) + (" …" if len(values) > 10 else "")

        return _PLACEHOLDER.sub(replace, self.text)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    return str(value)


#: A pseudonymisation key shorter than this is refused: a short key can be found by trying keys
#: against a known id, and then every pseudonym reverses (HMAC-SHA256: 32 bytes is its output size).
MIN_KEY_BYTES = 32


class Pseudonymizer:
    """Replaces the ids of the people the alerts are *about* with a keyed HMAC, consistently (the
    same id always gives the same pseudonym, so analysts can still correlate) and irreversibly
    without the key.

    Persons' ids, pseudonymised: targets (``target.id``, ``targets[].id``), their owners
    (``target.owner_id``, ``targets[].owner_id``), data subjects (they appear only as counts per region),
    and reporters: the actor of a ``report.filed`` event is a member of the public filing a report,
    so its ``actor.id`` is pseudonymised too (in the alert's ``actor_id``, summary and group key).
    Group and join keys naming one of these (``target.id=``, ``target.owner_id=``, ``target=``,
    ``targets.id=``, ``targets.owner_id=``, and ``actor.id=`` when the actor is a reporter) carry the
    pseudonym.

    Kept in clear: the employees under investigation, which is the point of the alerts: the actors
    of moderation actions, exports, grants and requests (``actor.id``), grantees (``grantee.id``);
    and ids that name no person (``system.id``, ``request_id``, ``ticket_id``, ``event_id``).
    """

    KEY_PREFIXES = ("target=", "target.id=", "target.owner_id=", "targets.id=", "targets.owner_id=")
    REPORTER_EVENTS = frozenset({"report.filed"})  # event types whose actor is a reporter, not staff

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes, not {len(key)}")
        self.key = key

    def __call__(self, value: str) -> str:
        return "p_" + hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    @classmethod
    def reporter(cls, view: dict[str, Any] | None) -> bool:
        """Whether ``view``'s actor is a reporter (a person to protect) rather than an employee."""
        return view is not None and view.get("event_type") in cls.REPORTER_EVENTS

    def group_key(self, key: str, *views: dict[str, Any] | None) -> str:
        """``key`` with the id it names pseudonymised when that id is a person's; ``views`` are the
        events the key was taken from (an ``actor.id=`` key names a reporter when one is a report)."""
        reporter = any(self.reporter(view) for view in views)
        prefixes = (*self.KEY_PREFIXES, "actor.id=") if reporter else self.KEY_PREFIXES
        for prefix in prefixes:
            if key.startswith(prefix):
                return prefix + self(key[len(prefix) :])
        return key

    def view(self, view: dict[str, Any] | None) -> dict[str, Any] | None:
        """A copy of the event with every person's id pseudonymised (the original is not changed)."""
        if view is None:
            return None
        out = dict(view)
        target = view.get("target")
        if isinstance(target, dict):
            out["target"] = self._person(target, ("id", "owner_id"))
        targets = view.get("targets")
        if isinstance(targets, list):
            out["targets"] = [self._person(t, ("id", "owner_id")) if isinstance(t, dict) else t for t in targets]
        actor = view.get("actor")
        if isinstance(actor, dict) and self.reporter(view):
            out["actor"] = self._person(actor, ("id",))
        return out

    def _person(self, entity: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        return {**entity, **{k: self(str(entity[k])) for k in fields if entity.get(k) is not None}}
