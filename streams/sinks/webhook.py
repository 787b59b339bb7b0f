"""POST each alert as JSON to a webhook, from a bounded queue, retrying with backoff.

The stream only enqueues. When the queue is full the alert is dropped, counted and logged by id:
never silently. A failing endpoint delays delivery, never the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import TYPE_CHECKING

import aiohttp

from ..alerts import Alert
from ..scoring import Severity

if TYPE_CHECKING:
    from ..metrics import Health

log = logging.getLogger(__name__)


class WebhookSink:
    name = "webhook"
    pages = True

    def __init__(self, url: str, min_severity: Severity = Severity.HIGH, capacity: int = 1000,
                 max_backoff: float = 30.0, timeout: float = 5.0, health: Health | None = None) -> None:  # fmt: skip
        self.url = url
        self.health = health
        self.min_severity = min_severity
        self.queue: asyncio.Queue[Alert] | None = None
        self.capacity = capacity
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.stats: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def deliver(self, alert: Alert) -> None:
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
            log.error("webhook queue full (%d): dropped alert %s", self.capacity, alert.alert_id)

    async def start(self) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue(self.capacity)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self.queue is not None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                alert = await self.queue.get()
                backoff = 0.5
                while True:
                    try:
                        async with session.post(self.url, data=alert.to_json(),
                                                headers={"Content-Type": "application/json"}) as resp:  # fmt: skip
                            if resp.status < 500 and resp.status != 429:
                                self.stats["sent" if resp.status < 400 else "rejected"] += 1
                                break
                            self.stats["failures"] += 1
                    except (TimeoutError, aiohttp.ClientError, OSError):
                        self.stats["failures"] += 1
                    if self.health is not None:
                        self.health.sink_failures[self.name] += 1
                    log.warning("webhook delivery of %s failed; retrying in %.1fs", alert.alert_id, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
