"""Prometheus metrics: every metric in one place.

The engine and the pipeline keep plain counters and histograms (``EngineStats``, ``Health``); a
collector turns them into metric families at scrape time, so the hot path never touches
prometheus-client and a backtest can write the same metrics to a textfile. Every metric is built
against a registry passed in (tests use a fresh ``CollectorRegistry``).

Labels are bounded: event types, rule ids, severities, ISO regions (anything else is ``other``),
requester jurisdiction and kind, destination kind, yes/no flags, input topics, sink names, reject
reasons. Never a user, account, meeting or employee id.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.core.decode import REASONS
from streams.core.engine import Engine
from streams.core.scoring import Severity
from streams.core.stats import Histogram

log = logging.getLogger(__name__)

# Arrival-to-alert processing latency: the goal is a page within seconds of a sub-minute takedown,
# so the buckets resolve milliseconds to a few seconds, with a tail for a stalled pipeline.
PROCESSING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


OTHER = "other"  # a label value beyond a bounded list
CONTEXT_TABLES = ("staff", "accounts", "geoip")  # the lookups whose misses are counted


@dataclass
class InputStats:
    """One raw input of the live worker (``streams.live.raw_inputs``). The counters are kept with
    bounded keys: ``dropped`` by an action of the mapping's own list (``actions``) or ``other``;
    ``rejected`` by reason (the mapper's and decode's, a fixed list); ``context_misses`` by table."""

    actions: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()  # created at zero
    normalized: int = 0  # contract events made from the input's records
    dropped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    context_misses: Counter[str] = field(default_factory=Counter)

    def action_label(self, action: str) -> str:
        return action if action in self.actions else OTHER


@dataclass
class Health:
    """Pipeline health the live worker records (a backtest leaves it empty)."""

    started: float = field(default_factory=time.time)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason
    processing: Histogram = field(default_factory=lambda: Histogram(PROCESSING_BUCKETS))
    end_offsets: dict[str, int] = field(default_factory=dict)  # input topic -> sum of high watermarks
    committed: dict[str, int] = field(default_factory=dict)  # input topic -> sum of committed offsets
    last_commit_progress: float = field(default_factory=time.time)  # wall time committed offsets last moved
    rebalances: int = 0
    sink_failures: Counter[str] = field(default_factory=Counter)
    sink_dropped: Counter[str] = field(default_factory=Counter)
    state_keys: dict[str, int] = field(default_factory=dict)  # rule -> keys holding state
    sinks: list[str] = field(default_factory=list)  # names of the configured sinks
    timers: int = 0
    unlogged_states: int = 0  # changed keys whose value was too big for a changelog record
    changelog_records: int = 0  # state changes written to the changelog (values and tombstones)
    changelog_bytes: int = 0  # their keys and values, serialised
    inputs: dict[str, InputStats] = field(default_factory=dict)  # raw input id -> its counters
    # Incidents (the worker running the incidents stage), by severity and risk object kind (bounded:
    # five severities, the kinds of incidents.yaml); updates also by change (attached, escalated).
    incidents_opened: Counter[tuple[str, str]] = field(default_factory=Counter)
    incidents_updated: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    incidents_closed: Counter[tuple[str, str]] = field(default_factory=Counter)
    open_incidents: dict[tuple[str, str], int] = field(default_factory=dict)

    def record_incidents(self, changes: Iterable[tuple[str, str, str]], open_now: Iterable[tuple[str, str]]) -> None:
        """``changes``: (change, severity, kind) of each incident update; ``open_now``: (severity, kind)
        of every open incident (a series that falls to none stays, at 0)."""
        for change, severity, kind in changes:
            if change == "opened":
                self.incidents_opened[(severity, kind)] += 1
            elif change == "closed":
                self.incidents_closed[(severity, kind)] += 1
            else:
                self.incidents_updated[(change, severity, kind)] += 1
        counts = Counter(open_now)
        self.open_incidents = {key: counts.get(key, 0) for key in {*self.open_incidents, *counts}}

    def record_offsets(self, end: dict[str, int], committed: dict[str, int]) -> None:
        if committed != self.committed:
            self.last_commit_progress = time.time()
        self.end_offsets, self.committed = end, committed


def _histogram(name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Histogram]]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in series:
        cumulative, buckets = 0, []
        for bound, count in zip([*hist.buckets, float("inf")], hist.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric(values, buckets, sum_value=hist.sum)
    return family


def _family(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str, labels: list[str],
            items: Iterable[tuple[Any, float]]) -> Metric:  # fmt: skip
    family = kind(name, doc, labels=labels)
    for key, value in sorted(items, key=lambda kv: str(kv[0])):
        values = list(key) if isinstance(key, tuple) else ([key] if labels else [])
        family.add_metric([str(v) for v in values], value)
    return family


def _counter(name: str, doc: str, labels: list[str], items: Iterable[tuple[Any, float]]) -> Metric:
    return _family(CounterMetricFamily, name, doc, labels, items)


def _gauge(name: str, doc: str, labels: list[str], items: Iterable[tuple[Any, float]]) -> Metric:
    return _family(GaugeMetricFamily, name, doc, labels, items)


class ModwatchCollector(Collector):
    """Exports an engine's counters, and the live pipeline's health when there is one."""

    def __init__(self, engine: Engine, health: Health | None = None, live: bool = False) -> None:
        self.engine = engine
        self.health = health or Health()
        self.live = live

    def _zeros(self) -> None:
        """Create every bounded series at zero, so ``increase()`` and ``rate()`` see the first
        alert or dead letter (a counter that appears already at 1 shows no increase)."""
        stats, health = self.engine.stats, self.health
        for rule in self.engine.rules:
            if rule.config.mode == "observe":
                continue
            for severity in Severity:
                stats.alerts.setdefault((rule.id, severity.label), 0)
            stats.suppressed.setdefault(rule.id, 0)
            stats.rule_errors.setdefault(rule.id, 0)
        for reason in REASONS:
            health.dead_letters.setdefault(reason, 0)
        for sink in health.sinks:
            health.sink_failures.setdefault(sink, 0)
            health.sink_dropped.setdefault(sink, 0)
        for stats_of in health.inputs.values():
            for reason in stats_of.reasons:
                stats_of.rejected.setdefault(reason, 0)
            for table in CONTEXT_TABLES:
                stats_of.context_misses.setdefault(table, 0)

    def collect(self) -> Iterator[Metric]:
        self._zeros()
        stats, health = self.engine.stats, self.health
        yield _counter("modwatch_events_processed", "Events evaluated, by type and region (target's, else actor's)",
                       ["event_type", "region"], stats.events_by_region.items())  # fmt: skip
        yield _counter("modwatch_late_events", "Events older than the watermark: beyond the allowed lateness",
                       [], [((), stats.late)])  # fmt: skip
        yield _counter("modwatch_duplicate_events", "Redelivered events skipped", [], [((), stats.duplicates)])
        yield _counter("modwatch_event_id_conflicts", "Event ids reused with other content (not evaluated, "
                       "dead-lettered, raised as an integrity alert)", [], [((), stats.id_conflicts)])  # fmt: skip
        yield _counter("modwatch_dead_letters", "Records rejected to the dead-letter topic or file, by reason",
                       ["reason"], health.dead_letters.items())  # fmt: skip
        yield _counter(
            "modwatch_moderation_actions",
            "Moderation actions by type, target region, whether they fulfil an external request, whether ticketed",
            ["action", "target_region", "linked_request", "ticketed"], stats.actions.items(),
        )  # fmt: skip
        yield _counter("modwatch_exported_records", "Records exported, by destination kind and personal data",
                       ["destination_kind", "personal_data"], stats.exported.items())  # fmt: skip
        yield _histogram(
            "modwatch_request_to_action_seconds",
            "Event time from an external request to the action or export fulfilling it",
            ["jurisdiction", "requester_kind"],
            ((list(key), hist) for key, hist in sorted(stats.request_latency.items())),
        )  # fmt: skip
        yield _counter("modwatch_alerts", "Alerts raised, by rule and severity", ["rule", "severity"],
                       stats.alerts.items())  # fmt: skip
        yield _counter("modwatch_alerts_suppressed", "Repeat alerts of an open incident, suppressed", ["rule"],
                       stats.suppressed.items())  # fmt: skip
        yield _counter("modwatch_rule_errors", "Rule evaluation errors (the event went on to other rules)", ["rule"],
                       stats.rule_errors.items())  # fmt: skip
        dropped = [((unit.id,), unit.held_dropped) for unit in self.engine.units if hasattr(unit, "held_dropped")]
        yield _counter("modwatch_held_events_dropped", "Events a sequence or absence rule (or a group of "
                       "sequences, by its id) stopped holding for a key holding its maximum (a sequence's oldest "
                       "go, an absence's newest)", ["rule"], dropped)  # fmt: skip
        if not self.live:
            return
        yield _gauge("modwatch_up", "1 while the worker runs", [], [((), 1.0)])
        yield _gauge("modwatch_heartbeat_timestamp_seconds", "Wall time of the last scrape", [], [((), time.time())])
        yield _gauge("modwatch_start_time_seconds", "Wall time the worker started", [], [((), health.started)])
        yield _histogram("modwatch_processing_latency_seconds", "Wall time from a record's arrival to its alerts",
                         [], [([], health.processing)])  # fmt: skip
        yield _gauge("modwatch_consumer_end_offset", "Sum of high watermarks of an input topic's assigned partitions",
                     ["topic"], health.end_offsets.items())  # fmt: skip
        yield _gauge("modwatch_consumer_committed_offset", "Sum of committed offsets of an input topic",
                     ["topic"], health.committed.items())  # fmt: skip
        lag = {t: max(0, end - health.committed.get(t, 0)) for t, end in health.end_offsets.items()}
        yield _gauge("modwatch_consumer_lag", "End offset minus committed offset, per input topic", ["topic"],
                     lag.items())  # fmt: skip
        yield _gauge("modwatch_last_commit_progress_timestamp_seconds", "Wall time committed offsets last advanced",
                     [], [((), health.last_commit_progress)])  # fmt: skip
        yield _counter("modwatch_rebalances", "Partition assignments received", [], [((), health.rebalances)])
        yield _gauge("modwatch_state_keys", "Keys holding state, per rule (counted every 5 s, less often when "
                     "counting would take over 2% of the worker's time)", ["rule"],
                     health.state_keys.items())  # fmt: skip
        yield _counter("modwatch_state_unlogged", "Changed keys not written to the changelog: the value was over "
                       "the producer's record size (a restart recovers the key's previous value)", [],
                       [((), health.unlogged_states)])  # fmt: skip
        yield _counter("modwatch_changelog_records", "State changes written to the changelog (a changed key "
                       "at most twice per offset commit)", [], [((), health.changelog_records)])  # fmt: skip
        yield _counter("modwatch_changelog_bytes", "Bytes of keys and values written to the changelog", [],
                       [((), health.changelog_bytes)])  # fmt: skip
        yield _gauge("modwatch_timers", "Keys with a pending event-time deadline", [], [((), health.timers)])
        yield _counter("modwatch_sink_failures", "Alert deliveries that failed, by sink", ["sink"],
                       health.sink_failures.items())  # fmt: skip
        yield _counter("modwatch_sink_dropped", "Alerts dropped because a sink's buffer was full", ["sink"],
                       health.sink_dropped.items())  # fmt: skip
        yield from _input_metrics(health.inputs)
        yield from _incident_metrics(health)


def _incident_metrics(health: Health) -> Iterator[Metric]:
    by = ["severity", "risk_object"]
    yield _counter("modwatch_incidents_opened", "Incidents opened, by severity and risk object kind", by,
                   health.incidents_opened.items())  # fmt: skip
    yield _counter("modwatch_incidents_updated", "Incident revisions adding an alert (attached) or raising its "
                   "severity (escalated), by change, severity and risk object kind", ["change", *by],
                   health.incidents_updated.items())  # fmt: skip
    yield _counter("modwatch_incidents_closed", "Incidents closed after their quiet time, by severity and risk "
                   "object kind", by, health.incidents_closed.items())  # fmt: skip
    yield _gauge("modwatch_open_incidents", "Open incidents, by severity and risk object kind", by,
                 health.open_incidents.items())  # fmt: skip


def _input_metrics(inputs: dict[str, InputStats]) -> Iterator[Metric]:
    """Per raw input (its id, from the settings: bounded): records normalized, dropped, rejected and the
    context lookups that failed."""
    by = sorted(inputs.items())
    yield _counter("modwatch_input_events_normalized", "Contract events made from a raw input's records",
                   ["input"], [((name, ), s.normalized) for name, s in by])  # fmt: skip
    yield _counter("modwatch_input_records_dropped", "Raw records dropped as unmapped or by drop_when, by input "
                   "and source action (the mapping's own actions; others as 'other')", ["input", "action"],
                   [((name, a), n) for name, s in by for a, n in s.dropped.items()])  # fmt: skip
    yield _counter("modwatch_input_records_rejected", "Raw records that could not be mapped (dead letters), by "
                   "input and reason", ["input", "reason"],
                   [((name, r), n) for name, s in by for r, n in s.rejected.items()])  # fmt: skip
    yield _counter("modwatch_input_context_misses", "Context lookups that failed (the event kept, tagged), by "
                   "input and table", ["input", "table"],
                   [((name, t), n) for name, s in by for t, n in s.context_misses.items()])  # fmt: skip


def registry_for(engine: Engine, health: Health | None = None, live: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ModwatchCollector(engine, health, live))
    return registry


def write_textfile(path: str, engine: Engine, health: Health | None = None) -> None:
    """``backtest --metrics FILE``: the same metrics in Prometheus' text format."""
    write_to_textfile(path, registry_for(engine, health))


def serve(registry: CollectorRegistry, host: str, port: int) -> None:
    """Start the metrics endpoint; port 0 disables it. Raises ConfigError naming ``host:port`` when it
    cannot be bound (the command line prints it in one line)."""
    if port:
        try:
            start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            from streams.core.ruleset import ConfigError

            raise ConfigError(
                f"metrics: cannot bind {host}:{port} ({exc.strerror or exc}); set metrics_port "
                "(MODWATCH_METRICS_PORT) to a free port, or 0 for no metrics endpoint"
            ) from None
        log.info("metrics on http://%s:%d/metrics", host, port)
