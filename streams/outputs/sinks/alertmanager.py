"""Push alerts to Prometheus Alertmanager (``POST /api/v2/alerts``), so a page carries the incident.

Each alert at or above ``min_severity`` becomes one Alertmanager alert:

- labels (what routing, grouping and inhibition see): ``alertname`` (the rule id), ``rule``,
  ``severity``, ``alert_id``, ``source="modwatch"`` and the alert's bounded labels (``jurisdiction``,
  ``agency``, ``requester_kind``, ``target_region``, ``actor_region``, ``event_type``...). ``alert_id``
  is a label so two incidents of one rule with the same regions stay two pages; a redelivered alert
  has the same id, so Alertmanager merges it instead of paging twice.
- annotations (what the page shows): ``title``, ``summary``, ``description``, ``alert_id``,
  ``event_ids``, ``score``, ``signals``, ``first_seen``, ``last_seen``, ``request_id``.
- ``startsAt`` is the incident's first event time; ``endsAt`` is the send time plus
  ``resolve_after`` seconds. A modwatch alert says that a pattern *happened*; no later event says it
  is over, so the alert resolves by itself after ``resolve_after`` (default one hour) unless it is
  sent again. ``resolve_after=0`` leaves ``endsAt`` unset: Alertmanager's ``resolve_timeout`` applies.

With ``paging="incidents"`` (the default: ``alertmanager_paging``), alerts reach Alertmanager only
when their rule is ``page: always`` (``Alert.page``); the rest page through their incident
(``deliver_incident``): one Alertmanager alert per incident at or above ``min_severity``, labels
``alertname="modwatch_incident"``, ``incident_id``, ``risk_object`` (its kind), ``severity``,
``rules`` (its top rules) and ``source``; annotations its summary, its contributing alert ids and
counts. Each revision is sent again with the same labels, so Alertmanager updates that alert;
``endsAt`` as above while it is open, the send time once it is closed (resolved). When a revision
changes a label (a raised severity, other top rules), the alert of the old labels is resolved in
the same POST. ``paging="alerts"`` sends every alert on its own, as before incidents.

Queueing, retries and counting are ``QueuedSink``'s (streams/outputs/sinks/queued.py); alerts queued
together are sent in one POST.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from streams.core.alerts import Alert, iso
from streams.core.incidents import Incident, IncidentUpdate
from streams.core.scoring import Severity
from streams.outputs.sinks.queued import REFUSED, SENT, IncidentPage, Item, QueuedSink, item_id

if TYPE_CHECKING:
    from streams.outputs.metrics import Health

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
# Alert labels that identify one request rather than a class of incident: annotations, not labels.
ANNOTATION_ONLY = frozenset({"request_id"})
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_EVENT_IDS = 50  # an annotation, not a log: the full list is in the alerts topic
INCIDENT_ALERTNAME = "modwatch_incident"
MAX_OPEN = 10_000  # incidents whose last labels are remembered (to resolve them when labels change)


def alerts_endpoint(url: str) -> str:
    """``http://am:9093`` or ``http://am:9093/`` or the full API URL -> the v2 alerts endpoint."""
    url = url.rstrip("/")
    return url if url.endswith(API_PATH) else url + API_PATH


def to_alertmanager(alert: Alert, resolve_after: float, now: float | None = None) -> dict[str, Any]:
    """One modwatch alert as an Alertmanager v2 ``postableAlert``."""
    labels = {
        "alertname": alert.rule_id,
        "rule": alert.rule_id,
        "severity": alert.severity.label,
        "alert_id": alert.alert_id,
        "source": "modwatch",
    }
    for name, value in sorted(alert.labels.items()):
        if name not in ANNOTATION_ONLY and name not in labels and value and _LABEL_NAME.match(name):
            labels[name] = value
    ids = alert.event_ids[:MAX_EVENT_IDS]
    more = len(alert.event_ids) - len(ids)
    event_ids = ",".join(ids) + (f",… (+{more})" if more > 0 else "")
    annotations = {
        "title": alert.title,
        "summary": alert.summary,
        "description": (
            f"{alert.title} ({alert.rule_id}, {alert.severity.label}, score {alert.score}). {alert.summary}\n"
            f"Signals: {', '.join(alert.signals) or 'none'}. Events {event_ids}, "
            f"{iso(alert.first_seen)} to {iso(alert.last_seen)} (event time). Alert id {alert.alert_id}."
        ),
        "alert_id": alert.alert_id,
        "event_ids": event_ids,
        "score": str(alert.score),
        "signals": ",".join(alert.signals),
        "first_seen": iso(alert.first_seen),
        "last_seen": iso(alert.last_seen),
    }
    if alert.labels.get("request_id"):
        annotations["request_id"] = alert.labels["request_id"]
    payload: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": iso(alert.first_seen)}
    if resolve_after > 0:
        now = time.time() if now is None else now
        # endsAt must not precede startsAt; an alert replayed from the future (clock skew) still resolves.
        payload["endsAt"] = iso(max(now, alert.first_seen) + resolve_after)
    return payload


def incident_labels(incident: Incident) -> dict[str, str]:
    """What identifies an incident's Alertmanager alert; the same labels on every revision update it."""
    return {
        "alertname": INCIDENT_ALERTNAME,
        "incident_id": incident.incident_id,
        "risk_object": incident.kind,
        "severity": incident.severity.label,
        "rules": ",".join(incident.rule_ids()),
        "source": "modwatch",
    }


def incident_to_alertmanager(update: IncidentUpdate, resolve_after: float, now: float | None = None,
                             labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One incident revision as a ``postableAlert``; with ``labels`` (an earlier revision's), that
    alert resolved. A closed incident is resolved (``endsAt`` the send time)."""
    incident = update.incident
    now = time.time() if now is None else now
    alert_ids = ",".join(incident.alert_ids) + (
        f",… (+{incident.alert_count - len(incident.alert_ids)})" if incident.alert_count > len(incident.alert_ids)
        else "")  # fmt: skip
    annotations = {
        "title": f"Incident: {incident.kind} {incident.value}",
        "summary": incident.summary,
        "description": (
            f"{incident.summary}. {incident.alert_count} alert(s), {iso(incident.first_seen)} to "
            f"{iso(incident.last_seen)} (event time), revision {incident.revision}, {incident.status}. "
            f"Incident id {incident.incident_id}: modwatch explain {incident.incident_id} --log ..."
        ),
        "incident_id": incident.incident_id,
        "risk_object": f"{incident.kind}: {incident.value}",
        "alert_ids": alert_ids,
        "alert_count": str(incident.alert_count),
        "score": str(incident.score),
        "revision": str(incident.revision),
        "status": incident.status,
        "first_seen": iso(incident.first_seen),
        "last_seen": iso(incident.last_seen),
    }
    start = incident.first_seen
    payload: dict[str, Any] = {"labels": labels or incident_labels(incident), "annotations": annotations,
                               "startsAt": iso(start)}  # fmt: skip
    if labels is not None or incident.status == "closed":
        payload["endsAt"] = iso(max(now, start))
    elif resolve_after > 0:
        payload["endsAt"] = iso(max(now, start) + resolve_after)
    return payload


class AlertmanagerSink(QueuedSink):
    name = "alertmanager"
    pages = True

    def __init__(self, url: str, min_severity: Severity = Severity.HIGH, resolve_after: float = 3600.0,
                 capacity: int = 1000, batch: int = 64, max_backoff: float = 30.0, timeout: float = 5.0,
                 health: Health | None = None, paging: str = "alerts") -> None:  # fmt: skip
        super().__init__(min_severity, capacity, batch, max_backoff, timeout, health=health)
        self.endpoint = alerts_endpoint(url)
        self.resolve_after = resolve_after
        self.paging = paging  # "incidents": only page-always alerts on their own; "alerts": every alert
        self.labels: dict[str, dict[str, str]] = {}  # open incident id -> the labels it was last sent with

    def deliver(self, alert: Alert) -> None:
        if self.paging == "incidents" and not alert.page:
            return
        super().deliver(alert)

    def deliver_incident(self, update: IncidentUpdate) -> None:
        """Called on the stream for every incident revision (with ``paging="incidents"``)."""
        incident = update.incident
        if self.paging != "incidents" or incident.severity < self.min_severity:
            return
        labels = incident_labels(incident)
        previous = self.labels.pop(incident.incident_id, None)
        if incident.status != "closed":
            self.labels[incident.incident_id] = labels
            while len(self.labels) > MAX_OPEN:
                del self.labels[next(iter(self.labels))]
        self.enqueue(IncidentPage(update, previous if previous not in (None, labels) else None))

    def payloads(self, items: list[Item]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        now = time.time()
        for item in items:
            if isinstance(item, Alert):
                out.append(to_alertmanager(item, self.resolve_after, now))
                continue
            if item.replaces is not None:
                out.append(incident_to_alertmanager(item.update, self.resolve_after, now, item.replaces))
            out.append(incident_to_alertmanager(item.update, self.resolve_after, now))
        return out

    async def attempt(self, session: aiohttp.ClientSession, alerts: list[Item]) -> str:
        """POST one batch. A 4xx other than 429 is not retried: the same payload would be refused
        again. endsAt is computed per attempt, so a delivery delayed by retries still stays open."""
        body = json.dumps(self.payloads(alerts))
        async with session.post(self.endpoint, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status < 300:
                return SENT
            if resp.status < 500 and resp.status != 429:
                ids = ", ".join(item_id(a) for a in alerts)
                log.error("alertmanager refused alerts %s: HTTP %d %s", ids, resp.status, (await resp.text())[:300])
                return REFUSED
            return f"HTTP {resp.status}"
