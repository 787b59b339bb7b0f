"""POST each alert as JSON to a webhook (a chat channel, a SOAR). Queueing, retries with backoff
and failure counting are ``QueuedSink``'s (streams/outputs/sinks/queued.py): a failing endpoint delays
delivery, never the stream. With ``incidents`` (``webhook_incidents``), each incident revision at or
above ``min_severity`` is POSTed too, as ``IncidentUpdate.to_json`` (its change, the alert that
caused it, whether it pages, and the incident)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp

from streams.core.alerts import Alert
from streams.core.incidents import IncidentUpdate
from streams.core.scoring import Severity
from streams.outputs.sinks.queued import REFUSED, SENT, IncidentPage, Item, QueuedSink, item_id

if TYPE_CHECKING:
    from streams.outputs.metrics import Health

log = logging.getLogger(__name__)


class WebhookSink(QueuedSink):
    name = "webhook"
    pages = True

    def __init__(self, url: str, min_severity: Severity = Severity.HIGH, capacity: int = 1000,
                 max_backoff: float = 30.0, timeout: float = 5.0, health: Health | None = None,
                 incidents: bool = False) -> None:  # fmt: skip
        super().__init__(min_severity, capacity, 1, max_backoff, timeout, health=health)
        self.url = url
        self.incidents = incidents

    def deliver_incident(self, update: IncidentUpdate) -> None:
        if self.incidents and update.incident.severity >= self.min_severity:
            self.enqueue(IncidentPage(update))

    async def attempt(self, session: aiohttp.ClientSession, alerts: list[Item]) -> str:
        (alert,) = alerts
        body = alert.to_json() if isinstance(alert, Alert) else alert.update.to_json()
        async with session.post(self.url, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status < 300:
                return SENT
            if resp.status < 500 and resp.status != 429:
                # Not retried (it would be refused again), so this page is lost: say which one.
                reason = (await resp.text())[:300]
                log.error("webhook refused %s: HTTP %d %s", item_id(alert), resp.status, reason)
                return REFUSED
            return f"HTTP {resp.status}"
