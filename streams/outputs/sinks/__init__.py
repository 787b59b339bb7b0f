"""Ways out for alerts besides the alerts topic: one file each. ``SinkSet`` fans an alert out, and
an incident revision to the sinks that take them (``deliver_incident``: Alertmanager, the webhook).

A sink never blocks the stream: ``deliver`` is synchronous and cheap (append to a file, or enqueue
for a background sender). Shadow-mode alerts are recorded (file, topic, metrics) but never sent to
pagers or webhooks.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Protocol

from streams.core.alerts import Alert
from streams.core.incidents import IncidentUpdate

if TYPE_CHECKING:
    from streams.config.settings import Settings
    from streams.outputs.metrics import Health

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str
    pages: bool  # True for sinks that notify people: shadow alerts skip them

    def deliver(self, alert: Alert) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SinkSet:
    def __init__(self, sinks: list[Sink], failures: Counter[str] | None = None) -> None:
        self.sinks = sinks
        self.failures: Counter[str] = failures if failures is not None else Counter()
        self.delivered: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings, health: Health | None = None) -> SinkSet:
        sinks: list[Sink] = []
        if settings.alerts_jsonl:
            from streams.outputs.sinks.jsonl import JsonlSink

            sinks.append(JsonlSink(settings.alerts_jsonl))
        if settings.webhook_url:
            from streams.core.scoring import Severity
            from streams.outputs.sinks.webhook import WebhookSink

            severity = Severity.parse(settings.webhook_min_severity)
            sinks.append(WebhookSink(settings.webhook_url, severity, health=health,
                                     incidents=settings.webhook_incidents))  # fmt: skip
        if settings.alertmanager_url:
            from streams.core.scoring import Severity
            from streams.outputs.sinks.alertmanager import AlertmanagerSink

            sinks.append(AlertmanagerSink(
                settings.alertmanager_url, Severity.parse(settings.alertmanager_min_severity),
                resolve_after=settings.alertmanager_resolve_after_seconds, health=health,
                paging=settings.alertmanager_paging,
            ))  # fmt: skip
        if health is not None:
            health.sinks = [sink.name for sink in sinks]
        return cls(sinks, health.sink_failures if health is not None else None)

    def deliver(self, alert: Alert) -> None:
        for sink in self.sinks:
            if sink.pages and alert.mode == "shadow":
                continue
            try:
                sink.deliver(alert)
                self.delivered[sink.name] += 1
            except Exception:
                self.failures[sink.name] += 1
                log.exception("sink %s failed for alert %s", sink.name, alert.alert_id)

    def deliver_incident(self, update: IncidentUpdate) -> None:
        for sink in self.sinks:
            deliver = getattr(sink, "deliver_incident", None)
            if deliver is None:
                continue
            try:
                deliver(update)
                self.delivered[sink.name] += 1
            except Exception:
                self.failures[sink.name] += 1
                log.exception("sink %s failed for incident %s", sink.name, update.incident.incident_id)

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()

    async def stop(self) -> None:
        for sink in self.sinks:
            await sink.stop()
