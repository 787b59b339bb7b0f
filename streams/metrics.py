"""Prometheus metrics. The engine and pipeline keep plain counters; a collector turns them into
metric families at scrape time, so the hot path never touches prometheus-client.

Every metric is built against a registry passed in (tests use a fresh ``CollectorRegistry``).
No label carries a user, account, meeting or employee id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .app import Runtime
    from .settings import Settings

log = logging.getLogger(__name__)


class RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        engine, router = self.runtime.engine, self.runtime.router
        stats = engine.stats
        up = GaugeMetricFamily("modwatch_up", "1 while the worker runs")
        up.add_metric([], 1.0)
        yield up
        beat = GaugeMetricFamily("modwatch_heartbeat_timestamp_seconds", "Wall time of this scrape's heartbeat")
        beat.add_metric([], time.time())
        yield beat
        events = CounterMetricFamily("modwatch_events_processed", "Events evaluated, by type", labels=["event_type"])
        for event_type, count in sorted(stats.events.items()):
            events.add_metric([event_type], count)
        yield events
        late = CounterMetricFamily("modwatch_late_events", "Events older than the watermark (lateness exceeded)")
        late.add_metric([], stats.late)
        yield late
        dups = CounterMetricFamily("modwatch_duplicate_events", "Redelivered events skipped")
        dups.add_metric([], stats.duplicates)
        yield dups
        dead = CounterMetricFamily("modwatch_dead_letters", "Records sent to the dead-letter topic", labels=["reason"])
        for reason, count in sorted(router.dead.items()):
            dead.add_metric([reason], count)
        yield dead
        alerts = CounterMetricFamily("modwatch_alerts", "Alerts raised", labels=["rule", "severity"])
        for (rule, severity), count in sorted(stats.alerts.items()):
            alerts.add_metric([rule, severity], count)
        yield alerts
        sup = CounterMetricFamily("modwatch_alerts_suppressed", "Repeat alerts suppressed", labels=["rule"])
        for rule, count in sorted(stats.suppressed.items()):
            sup.add_metric([rule], count)
        yield sup
        errors = CounterMetricFamily("modwatch_rule_errors", "Rule evaluation errors", labels=["rule"])
        for rule, count in sorted(stats.rule_errors.items()):
            errors.add_metric([rule], count)
        yield errors
        sinks = CounterMetricFamily("modwatch_sink_failures", "Alert deliveries that failed", labels=["sink"])
        for sink, count in sorted(self.runtime.sinks.failures.items()):
            sinks.add_metric([sink], count)
        yield sinks


def serve_metrics(runtime: Runtime, settings: Settings, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Start the metrics endpoint (``settings.metrics_host:metrics_port``; port 0 disables it)."""
    registry = registry or CollectorRegistry()
    registry.register(RuntimeCollector(runtime))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return registry
