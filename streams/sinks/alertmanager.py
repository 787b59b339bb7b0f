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

Like the webhook sink, the stream only enqueues: a full queue drops the alert (counted in
``modwatch_sink_dropped_total{sink="alertmanager"}`` and logged by id), and a failing Alertmanager
is retried with backoff from a background task, each failed attempt counted in
``modwatch_sink_failures_total{sink="alertmanager"}``. Alerts queued together are sent in one POST.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import aiohttp

from ..alerts import Alert, iso
from ..scoring import Severity

if TYPE_CHECKING:
    from ..metrics import Health

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


class AlertmanagerSink:
    name = "alertmanager"
    pages = True

    def __init__(self, url: str, min_severity: Severity = Severity.HIGH, resolve_after: float = 3600.0,
                 capacity: int = 1000, batch: int = 64, max_backoff: float = 30.0, timeout: float = 5.0,
                 health: Health | None = None) -> None:  # fmt: skip
        self.endpoint = alerts_endpoint(url)
        self.min_severity = min_severity
        self.resolve_after = resolve_after
        self.capacity = capacity
        self.batch = batch
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.health = health
        self.queue: asyncio.Queue[Alert] | None = None
        self.stats: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def deliver(self, alert: Alert) -> None:
        """Called on the stream for every alert: filter and enqueue, never wait."""
        if alert.severity < self.min_severity:
            return
        if self.queue is None:
            self.queue = asyncio.Queue(self.capacity)
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            if self.health is not None:
                self.health.sink_dropped[self.name] += 1
            log.error("alertmanager queue full (%d): dropped alert %s", self.capacity, alert.alert_id)

    async def start(self) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue(self.capacity)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _failed(self) -> None:
        self.stats["failures"] += 1
        if self.health is not None:
            self.health.sink_failures[self.name] += 1

    async def _run(self) -> None:
        assert self.queue is not None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                alerts = [await self.queue.get()]
                while len(alerts) < self.batch and not self.queue.empty():
                    alerts.append(self.queue.get_nowait())
                await self._send(session, alerts)

    async def _send(self, session: aiohttp.ClientSession, alerts: list[Alert]) -> None:
        """POST one batch until Alertmanager takes it. A 4xx other than 429 is not retried: the
        same payload would be refused again; it is counted as a failure and logged with the reason."""
        ids = ", ".join(a.alert_id for a in alerts)
        backoff = 0.5
        while True:
            # endsAt is computed per attempt, so a delivery delayed by retries still stays open.
            body = json.dumps([to_alertmanager(a, self.resolve_after) for a in alerts])
            try:
                async with session.post(self.endpoint, data=body,
                                        headers={"Content-Type": "application/json"}) as resp:  # fmt: skip
                    if resp.status < 300:
                        self.stats["sent"] += len(alerts)
                        return
                    if resp.status < 500 and resp.status != 429:
                        self.stats["rejected"] += len(alerts)
                        self._failed()
                        log.error("alertmanager refused alerts %s: HTTP %d %s", ids, resp.status,
                                  (await resp.text())[:300])  # fmt: skip
                        return
                    reason = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = type(exc).__name__
            self._failed()
            log.warning("alertmanager delivery of %s failed (%s); retrying in %.1fs", ids, reason, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
