"""What the HTTP sinks share: a bounded queue filled by the stream, emptied by a background sender
that retries with backoff.

The stream only enqueues (``deliver`` never waits). A full queue drops the alert, counted in
``modwatch_sink_dropped_total{sink=...}`` and logged by id: never silent. A failing endpoint is
retried with exponential backoff, each failed attempt counted in ``modwatch_sink_failures_total``;
a refusal that would repeat (HTTP 4xx other than 429) is counted and logged, not retried. On
shutdown the sender gets ``drain_seconds`` to empty the queue before it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from streams.core.alerts import Alert
from streams.core.incidents import IncidentUpdate
from streams.core.scoring import Severity

if TYPE_CHECKING:
    from streams.outputs.metrics import Health

log = logging.getLogger(__name__)

SENT, REFUSED = "sent", "refused"


@dataclass(frozen=True, slots=True)
class IncidentPage:
    """An incident revision on its way out; ``replaces``: the labels it was last sent with, when
    they changed (a raised severity, new top rules), for the sink to resolve that alert."""

    update: IncidentUpdate
    replaces: dict[str, str] | None = None


Item = Alert | IncidentPage  # what the queue holds


def item_id(item: Item) -> str:
    return f"alert {item.alert_id}" if isinstance(item, Alert) else f"incident {item.update.incident.incident_id}"


class QueuedSink(ABC):
    name = "queued"
    pages = True

    def __init__(self, min_severity: Severity = Severity.HIGH, capacity: int = 1000, batch: int = 1,
                 max_backoff: float = 30.0, timeout: float = 5.0, drain_seconds: float = 5.0,
                 health: Health | None = None) -> None:  # fmt: skip
        self.min_severity = min_severity
        self.capacity = capacity
        self.batch = batch
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.drain_seconds = drain_seconds
        self.health = health
        self.queue: asyncio.Queue[Item] | None = None
        self.stats: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def attempt(self, session: aiohttp.ClientSession, alerts: list[Item]) -> str:
        """Called by the sender for one batch (alerts, and incident revisions from ``enqueue``): POST
        it; return ``SENT``, ``REFUSED`` (logged, not retried) or a short reason to retry with. May
        raise aiohttp/OS errors (retried)."""

    def deliver(self, alert: Alert) -> None:
        """Called on the stream for every alert: filter and enqueue, never wait."""
        if alert.severity < self.min_severity:
            return
        self.enqueue(alert)

    def enqueue(self, item: Item) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue(self.capacity)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            if self.health is not None:
                self.health.sink_dropped[self.name] += 1
            log.error("%s queue full (%d): dropped %s", self.name, self.capacity, item_id(item))

    async def start(self) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue(self.capacity)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is None:
            return
        if self.queue is not None and not self.queue.empty():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), self.drain_seconds)
            if not self.queue.empty():
                log.error("%s: %d alerts still queued at shutdown", self.name, self.queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _failed(self) -> None:
        self.stats["failures"] += 1
        if self.health is not None:
            self.health.sink_failures[self.name] += 1

    async def _run(self) -> None:
        assert self.queue is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            while True:
                alerts = [await self.queue.get()]
                while len(alerts) < self.batch and not self.queue.empty():
                    alerts.append(self.queue.get_nowait())
                try:
                    await self._send(session, alerts)
                finally:
                    for _ in alerts:
                        self.queue.task_done()

    async def _send(self, session: aiohttp.ClientSession, alerts: list[Item]) -> None:
        ids = ", ".join(item_id(a) for a in alerts)
        backoff = 0.5
        while True:
            try:
                outcome = await self.attempt(session, alerts)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                outcome = type(exc).__name__
            if outcome == SENT:
                self.stats["sent"] += len(alerts)
                return
            self._failed()
            if outcome == REFUSED:
                self.stats["rejected"] += len(alerts)
                return
            log.warning("%s delivery of %s failed (%s); retrying in %.1fs", self.name, ids, outcome, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
