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
from streams.core.scoring import Severity
from streams.outputs.sinks.queued import REFUSED, SENT, QueuedSink

if TYPE_CHECKING:
    from streams.outputs.metrics import Health

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
# Alert labels that identify one request rather than a class of incident: annotations, not labels.
ANNOTATION_ONLY = frozenset({"request_id"})
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_EVENT_IDS = 50  # an annotation, not a log: the full list is in the alerts topic


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


class AlertmanagerSink(QueuedSink):
    name = "alertmanager"
    pages = True

    def __init__(self, url: str, min_severity: Severity = Severity.HIGH, resolve_after: float = 3600.0,
                 capacity: int = 1000, batch: int = 64, max_backoff: float = 30.0, timeout: float = 5.0,
                 health: Health | None = None) -> None:  # fmt: skip
        super().__init__(min_severity, capacity, batch, max_backoff, timeout, health=health)
        self.endpoint = alerts_endpoint(url)
        self.resolve_after = resolve_after

    async def attempt(self, session: aiohttp.ClientSession, alerts: list[Alert]) -> str:
        """POST one batch. A 4xx other than 429 is not retried: the same payload would be refused
        again. endsAt is computed per attempt, so a delivery delayed by retries still stays open."""
        body = json.dumps([to_alertmanager(a, self.resolve_after) for a in alerts])
        async with session.post(self.endpoint, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status < 300:
                return SENT
            if resp.status < 500 and resp.status != 429:
                ids = ", ".join(a.alert_id for a in alerts)
                log.error("alertmanager refused alerts %s: HTTP %d %s", ids, resp.status, (await resp.text())[:300])
                return REFUSED
            return f"HTTP {resp.status}"
