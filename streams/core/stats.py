"""What the engine counts, for the metrics and the backtest summary: plain counters and histograms,
turned into Prometheus metric families only at scrape time (``streams.outputs.metrics``)."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# Request-to-action latency buckets (seconds): dense around the one-minute processing requirement so
# that "acted within 60 s of the request" is a bucket boundary, then the hours and a day of routine,
# lawful handling.
LATENCY_BUCKETS = (5.0, 15.0, 30.0, 45.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86400.0)


class Histogram:
    """Bucket counts (not cumulative), sum and count: cheap to update, exported at scrape time."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


@dataclass
class EngineStats:
    """Counters the engine keeps; the metrics module and the backtest summary read them.
    Label values are bounded: event types, rule ids, severities, ISO regions or ``other``."""

    events: Counter[str] = field(default_factory=Counter)  # by event type
    events_by_region: Counter[tuple[str, str]] = field(default_factory=Counter)  # (event type, region)
    actions: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # (type, region, linked, ticketed)
    exported: Counter[tuple[str, str]] = field(default_factory=Counter)  # (destination kind, personal) -> records
    request_latency: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (jurisdiction, kind)
    late: int = 0
    duplicates: int = 0
    id_conflicts: int = 0  # event ids reused with other content
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, severity)
    suppressed: Counter[str] = field(default_factory=Counter)  # by rule
    rule_errors: Counter[str] = field(default_factory=Counter)  # by rule

    def observe_latency(self, jurisdiction: str, kind: str, seconds: float) -> None:
        key = (jurisdiction, kind)
        hist = self.request_latency.get(key)
        if hist is None:
            hist = self.request_latency[key] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)
