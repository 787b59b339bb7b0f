"""Incidents: one page per person and pattern, with risk accumulating across rules.

A risk object is a party alerts concern (``incidents.yaml``: the actor, the target's owner, the
requester), and each alert adds its score times the object's weight to the object's risk (with
``risk_per_rule: max``, each rule only its highest alert's within the window). An
incident opens for a risk object when an incident rule holds over its alerts within the rule's
window: accumulated risk at least ``risk_at_least``, alerts of ``distinct_rules`` rules, or one alert
of ``severity_at_least``. Later alerts concerning it attach to the open incident and may raise its
severity; it closes after ``quiet`` event time without a new one. Event time only: nothing here
reads the clock, so a replay of last year opens and closes last year's incidents.

Pure and deterministic (``streams.core``): alerts in, ``IncidentUpdate`` out. The incident id is a
hash of the risk object and its first contributing alert id, so the same alerts in the same order
always give the same ids; each update carries the incident's revision (1 when it opens). An alert
id seen again (a redelivery) counts once.

One page per pattern: an alert opens at most one incident, and none when one of its risk objects
already has an open incident (it attaches to those instead). When several of its objects could
open one, the first in ``risk_objects`` order does (the actor before the target's owner before the
requester). Alerts below ``min_severity`` and alerts of ``shadow`` rules add no risk.

How a caller drives it (the backtest does this; the live path should do the same):

- ``observe(alert)`` for every alert the engine raises, in the order raised. It first closes what
  the alert's event time closes (``advance``), so the updates it returns may include closings.
- ``advance(event_time)`` as event time moves without alerts: pass the engine's watermark
  (``Engine.watermark(shard)``), not an event's own time, so that an alert fired late by a timer
  still finds its incident open. Cheap when nothing is due (one comparison).
- Send each ``IncidentUpdate`` on (``to_json``: stable bytes); a sink pages when ``update.pages``
  (an incident opened at or above ``paging_severity``, or raised to it). Alerts of ``page: always``
  rules (``Alert.page``) page on their own too, at or above the paging severity.
- For recovery, persist ``snapshot()`` (a small JSON-able dict: per risk object its capped alert
  list and open incident, the recent alert ids, the request-to-requester map) with the offsets of
  the alerts it reflects, and rebuild with ``IncidentEngine.restore(config, data)``. Alerts
  observed again after a restore are recognised by id and not counted twice.

Bounds: per risk object at most ``max_alerts`` (alert id, time, rule, risk, severity) entries,
expired by the longest window of the rules that apply to it; an incident lists at most
``max_alerts`` alert ids (its first ones: the evidence) and counts the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from streams.core.alerts import Alert, iso
from streams.core.incident_config import IncidentRule, IncidentsConfig, RiskObject
from streams.core.scoring import Severity

SNAPSHOT_VERSION = 1
MAX_RECENT = 100_000  # alert ids remembered to recognise a redelivery
MAX_REQUESTS = 10_000  # request ids remembered with their requester


def incident_id(kind: str, value: str, first_alert_id: str) -> str:
    digest = hashlib.sha256(f"incident\x1f{kind}\x1f{value}\x1f{first_alert_id}".encode()).hexdigest()
    return digest[:24]


@dataclass(frozen=True, slots=True)
class Incident:
    incident_id: str
    kind: str  # the risk object's kind and value
    value: str
    severity: Severity
    risk: float  # accumulated weighted score of its alerts (``risk_per_rule``): the sum of ``rule_risk``
    status: str  # "open" or "closed"
    first_seen: float  # event time of its first and last alert
    last_seen: float
    rule_risk: tuple[tuple[str, float], ...]  # risk per rule, in the order first seen
    alert_ids: tuple[str, ...]  # contributing alerts, the first max_alerts
    alert_count: int
    opened_by: str  # the incident rule that opened it
    reason: str  # which of its conditions held
    quiet: float  # seconds without an alert that close it
    revision: int

    @property
    def score(self) -> int:
        return round(self.risk)

    def rule_ids(self, top: int = 5) -> list[str]:
        """The rules that added the most risk, most first (ties in the order first seen)."""
        order = sorted(enumerate(self.rule_risk), key=lambda item: (-item[1][1], item[0]))
        return [rule_id for _, (rule_id, _) in order[:top]]

    @property
    def summary(self) -> str:
        rules = self.rule_ids()
        more = len(self.rule_risk) - len(rules)
        listed = ", ".join(rules) + (f" and {more} more" if more > 0 else "")
        return (f"{self.kind} {self.value}: {self.alert_count} alert(s) from {len(self.rule_risk)} rule(s) "
                f"({listed}), risk {self.score}; opened by {self.opened_by}: {self.reason}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "risk_object": {"kind": self.kind, "value": self.value},
            "severity": self.severity.label,
            "score": self.score,
            "status": self.status,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "rule_ids": self.rule_ids(),
            "alert_ids": list(self.alert_ids),
            "alert_count": self.alert_count,
            "opened_by": self.opened_by,
            "summary": self.summary,
            "revision": self.revision,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def state(self) -> dict[str, Any]:
        """Everything, as JSON-able values (``snapshot``); ``from_state`` reads it back."""
        return {"id": self.incident_id, "kind": self.kind, "value": self.value, "severity": int(self.severity),
                "risk": self.risk, "status": self.status, "first": self.first_seen, "last": self.last_seen,
                "rules": [list(r) for r in self.rule_risk], "alerts": list(self.alert_ids),
                "count": self.alert_count, "by": self.opened_by, "reason": self.reason, "quiet": self.quiet,
                "revision": self.revision}  # fmt: skip

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Incident:
        return cls(data["id"], data["kind"], data["value"], Severity(data["severity"]), float(data["risk"]),
                   data["status"], float(data["first"]), float(data["last"]),
                   tuple((str(r), float(v)) for r, v in data["rules"]), tuple(data["alerts"]), int(data["count"]),
                   data["by"], data["reason"], float(data["quiet"]), int(data["revision"]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class IncidentUpdate:
    """A new revision of an incident: ``change`` is ``opened``, ``attached`` (an alert joined it),
    ``escalated`` (an alert joined and raised its severity) or ``closed``."""

    change: str
    incident: Incident
    alert_id: str | None  # the alert that caused it (None for a closing)
    pages: bool  # opened at or above the paging severity, or raised to it

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "alert_id": self.alert_id, "pages": self.pages,
                "incident": self.incident.to_dict()}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# An entry of a risk object's alert list: [event time, alert id, rule id, weighted risk, severity].
Entry = list[Any]


@dataclass(slots=True)
class _Object:
    entries: list[Entry]
    incident: Incident | None = None


class IncidentEngine:
    def __init__(self, config: IncidentsConfig) -> None:
        self.config = config
        self.min_severity = Severity.parse(config.min_severity)
        self.paging = Severity.parse(config.paging_severity)
        self.rules = {o.kind: config.rules_for(o.kind) for o in config.risk_objects}
        self.horizon = {kind: max(r.window for r in rules) for kind, rules in self.rules.items()}
        self.objects: dict[str, _Object] = {}  # "kind=value" -> its alerts and open incident
        self.recent: dict[str, float] = {}  # alert id -> event time, in the order observed
        self.requests: dict[str, tuple[str, str]] = {}  # request id -> (agency, jurisdiction)
        self.now = float("-inf")
        self.next_due = float("inf")

    # -- the driver -------------------------------------------------------------------------------
    def observe(self, alert: Alert) -> list[IncidentUpdate]:
        """Updates caused by one alert (closings first, then its own). Nothing for an alert seen before,
        an alert of a shadow rule or one below ``min_severity``."""
        ts = alert.last_seen
        updates = self.advance(ts)
        fields = self._fields(alert)
        if alert.mode != "live" or alert.severity < self.min_severity or alert.alert_id in self.recent:
            return updates
        self._remember(alert.alert_id, ts)
        touched: list[tuple[RiskObject, str, _Object]] = []
        for obj in self.config.risk_objects:
            values = [fields.get(name) for name in obj.fields]
            if not all(values):
                continue
            value = " / ".join(str(v) for v in values)
            state = self.objects.setdefault(f"{obj.kind}={value}", _Object([]))
            entry = [ts, alert.alert_id, alert.rule_id, alert.score * obj.weight, int(alert.severity)]
            state.entries = [*state.entries, entry][-self.config.max_alerts :]
            touched.append((obj, value, state))
        open_ = [(obj, state) for obj, _, state in touched if state.incident is not None]
        if open_:
            for obj, state in open_:
                updates.append(self._attach(state, alert, alert.score * obj.weight))
        else:
            for obj, value, state in touched:
                update = self._try_open(obj, value, state, ts)
                if update is not None:
                    updates.append(update)
                    break
        self._schedule(touched)
        return updates

    def advance(self, event_time: float) -> list[IncidentUpdate]:
        """Close the incidents quiet since ``event_time - quiet`` and forget alerts past every window."""
        if event_time > self.now:
            self.now = event_time
        if self.now < self.next_due:
            return []
        updates: list[IncidentUpdate] = []
        next_due = float("inf")
        for key in list(self.objects):
            state = self.objects[key]
            incident = state.incident
            if incident is not None and incident.last_seen + incident.quiet <= self.now:
                closed = replace(incident, status="closed", revision=incident.revision + 1)
                updates.append(IncidentUpdate("closed", closed, None, False))
                state.incident = None
            horizon = self.horizon.get(key.split("=", 1)[0], 0.0)
            state.entries = [e for e in state.entries if e[0] + horizon > self.now]
            if state.incident is None and not state.entries:
                del self.objects[key]
                continue
            next_due = min(next_due, self._due(key, state))
        self.next_due = next_due
        cutoff = self.now - max(self.horizon.values(), default=0.0)
        for alert_id in [a for a, ts in self.recent.items() if ts < cutoff]:
            del self.recent[alert_id]
        return updates

    def open_incidents(self) -> list[Incident]:
        found = [s.incident for s in self.objects.values() if s.incident is not None]
        return sorted(found, key=lambda i: (i.first_seen, i.incident_id))

    # -- opening and attaching ------------------------------------------------------------------------
    def _try_open(self, obj: RiskObject, value: str, state: _Object, ts: float) -> IncidentUpdate | None:
        for rule in self.rules[obj.kind]:
            entries = [e for e in state.entries if e[0] > ts - rule.window]
            rule_risk: dict[str, float] = {}
            for e in entries:
                rule_risk[e[2]] = self._add(rule_risk.get(e[2], 0.0), e[3])
            risk = sum(rule_risk.values())
            reason = self._holds(rule, entries, risk)
            if reason is None:
                continue
            severity = max(Severity.parse(rule.severity), max(Severity(e[4]) for e in entries),
                           self.config.risk_severity.severity(risk))  # fmt: skip
            incident = Incident(
                incident_id=incident_id(obj.kind, value, entries[0][1]), kind=obj.kind, value=value,
                severity=severity, risk=risk, status="open", first_seen=min(e[0] for e in entries),
                last_seen=max(e[0] for e in entries), rule_risk=tuple(rule_risk.items()),
                alert_ids=tuple(e[1] for e in entries), alert_count=len(entries), opened_by=rule.id,
                reason=reason, quiet=rule.quiet, revision=1,
            )  # fmt: skip
            state.incident = incident
            return IncidentUpdate("opened", incident, entries[-1][1], severity >= self.paging)
        return None

    def _add(self, risk: float, more: float) -> float:
        """A rule's risk with one more alert's (``risk_per_rule``)."""
        return max(risk, more) if self.config.risk_per_rule == "max" else risk + more

    @staticmethod
    def _holds(rule: IncidentRule, entries: list[Entry], risk: float) -> str | None:
        """Which of ``rule``'s conditions the entries meet (the first that does), or None."""
        if not entries:
            return None
        if rule.severity_at_least is not None:
            floor = Severity.parse(rule.severity_at_least)
            if any(e[4] >= floor for e in entries):
                return f"an alert at or above {floor.label}"
        if rule.distinct_rules is not None and len({e[2] for e in entries}) >= rule.distinct_rules:
            return f"alerts of {len({e[2] for e in entries})} rules"
        if rule.risk_at_least is not None and risk >= rule.risk_at_least:
            return f"risk {round(risk)} at or above {rule.risk_at_least:g}"
        return None

    def _attach(self, state: _Object, alert: Alert, risk: float) -> IncidentUpdate:
        incident = state.incident
        assert incident is not None
        rule_risk = dict(incident.rule_risk)
        rule_risk[alert.rule_id] = self._add(rule_risk.get(alert.rule_id, 0.0), risk)
        total = sum(rule_risk.values())
        severity = max(incident.severity, alert.severity, self.config.risk_severity.severity(total))
        ids = incident.alert_ids
        if len(ids) < self.config.max_alerts:
            ids = (*ids, alert.alert_id)
        new = replace(incident, severity=severity, risk=total, first_seen=min(incident.first_seen, alert.last_seen),
                      last_seen=max(incident.last_seen, alert.last_seen), rule_risk=tuple(rule_risk.items()),
                      alert_ids=ids, alert_count=incident.alert_count + 1, revision=incident.revision + 1)  # fmt: skip
        state.incident = new
        raised = severity > incident.severity
        pages = raised and severity >= self.paging > incident.severity
        return IncidentUpdate("escalated" if raised else "attached", new, alert.alert_id, pages)

    # -- internals ------------------------------------------------------------------------------------
    def _fields(self, alert: Alert) -> dict[str, str]:
        """The values risk objects are made of; the requester of a request id learned from an earlier
        alert that named both (an action citing the request does not carry its requester)."""
        fields = dict(alert.subjects)
        if alert.actor_id:
            fields["actor_id"] = alert.actor_id
        for name, label in (("requester.agency", "agency"), ("requester.jurisdiction", "jurisdiction")):
            if name not in fields and alert.labels.get(label):
                fields[name] = alert.labels[label]
        request = fields.get("request_id") or alert.labels.get("request_id")
        if request:
            agency, place = fields.get("requester.agency"), fields.get("requester.jurisdiction")
            if agency and place:
                self.requests.pop(request, None)
                self.requests[request] = (agency, place)
                while len(self.requests) > MAX_REQUESTS:
                    del self.requests[next(iter(self.requests))]
            elif request in self.requests:
                fields["requester.agency"], fields["requester.jurisdiction"] = self.requests[request]
        return fields

    def _remember(self, alert_id: str, ts: float) -> None:
        self.recent[alert_id] = ts
        while len(self.recent) > MAX_RECENT:
            del self.recent[next(iter(self.recent))]

    def _due(self, key: str, state: _Object) -> float:
        horizon = self.horizon.get(key.split("=", 1)[0], 0.0)
        due = min((e[0] + horizon for e in state.entries), default=float("inf"))
        if state.incident is not None:
            due = min(due, state.incident.last_seen + state.incident.quiet)
        return due

    def _schedule(self, touched: list[tuple[RiskObject, str, _Object]]) -> None:
        for obj, value, state in touched:
            self.next_due = min(self.next_due, self._due(f"{obj.kind}={value}", state))

    # -- recovery -------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The engine's whole state as JSON-able values; ``restore`` rebuilds it."""
        return {
            "version": SNAPSHOT_VERSION,
            "now": self.now if self.now != float("-inf") else None,
            "objects": {
                key: {"entries": [list(e) for e in s.entries], "incident": s.incident.state() if s.incident else None}
                for key, s in self.objects.items()
            },
            "recent": [[a, ts] for a, ts in self.recent.items()],
            "requests": [[r, *v] for r, v in self.requests.items()],
        }

    @classmethod
    def restore(cls, config: IncidentsConfig, data: dict[str, Any]) -> IncidentEngine:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"incident state of version {data.get('version')!r}, expected {SNAPSHOT_VERSION}")
        engine = cls(config)
        engine.now = float(data["now"]) if data.get("now") is not None else float("-inf")
        for key, item in data["objects"].items():
            incident = Incident.from_state(item["incident"]) if item.get("incident") else None
            engine.objects[key] = _Object([list(e) for e in item["entries"]], incident)
            engine.next_due = min(engine.next_due, engine._due(key, engine.objects[key]))
        engine.recent = {str(a): float(ts) for a, ts in data.get("recent", [])}
        engine.requests = {str(r): (str(a), str(j)) for r, a, j in data.get("requests", [])}
        return engine
