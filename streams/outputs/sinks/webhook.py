"""POST each alert as JSON to a webhook (a chat channel, a SOAR). Queueing, retries with backoff
and failure counting are ``QueuedSink``'s (streams/outputs/sinks/queued.py): a failing endpoint delays
delivery, never the stream."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp

from streams.core.alerts import Alert
from streams.core.scoring import Severity
from streams.outputs.sinks.queued import REFUSED, SENT, QueuedSink

if TYPE_CHECKING:
    from streams.outputs.metrics import Health

log = logging.getLogger(__name__)


class WebhookSink(QueuedSink):
    name = "webhook"
    pages = True

    def __init__(self, url: str, min_severity: Severity = Severity.HIGH, capacity: int = 1000,
                 max_backoff: float = 30.0, timeout: float = 5.0, health: Health | None = None) -> None:  # fmt: skip
        super().__init__(min_severity, capacity, 1, max_backoff, timeout, health=health)
        self.url = url

    async def attempt(self, session: aiohttp.ClientSession, alerts: list[Alert]) -> str:
        (alert,) = alerts
        async with session.post(self.url, data=alert.to_json(), headers={"Content-Type": "application/json"}) as resp:
            if resp.status < 300:
                return SENT
            if resp.status < 500 and resp.status != 429:
                # Not retried (it would be refused again), so this page is lost: say which one.
                reason = (await resp.text())[:300]
                log.error("webhook refused alert %s: HTTP %d %s", alert.alert_id, resp.status, reason)
                return REFUSED
            return f"HTTP {resp.status}"
