"""Faust's own floor: a tiny Faust app with one agent that decodes nothing and counts records.

Started by the live benchmark as ``python -m bench.trivial_app`` with the worker's environment
(``MODWATCH_*``: same brokers, input topic, session settings, app id per run) and the same Faust
settings (``streams.live.app._faust_settings`` plus the benchmark's ``$BENCH_FAUST`` overrides) on the
same event loop (``$BENCH_LOOP``) and fetch wait. Its count is served as ``modwatch_events_processed_total`` on
``$MODWATCH_METRICS_PORT``, so the benchmark times it exactly as it times the worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.config.settings import Settings
from streams.live.app import _faust_settings
from streams.live.faust_ext.faust_patches import (
    FETCH_MAX_WAIT_MS,
    deliver_without_tasks,
    set_fetch_max_wait,
    wake_fetch_on_buffer_drop,
)
from streams.live.worker import ensure_topics, use_event_loop

from .worker_variant import overrides


class _Count(Collector):
    def __init__(self) -> None:
        self.value = 0

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("modwatch_events_processed", "Records the trivial agent read", labels=[])
        family.add_metric([], self.value)
        yield family


def main() -> int:
    settings = Settings()
    logging.basicConfig(level=logging.WARNING)
    ensure_topics(settings)
    use_event_loop(os.environ.get("BENCH_LOOP", "uvloop"))
    extra = overrides()
    set_fetch_max_wait(extra.pop("fetch_max_wait_ms", FETCH_MAX_WAIT_MS))  # null: Faust's 1,500 ms
    if extra.pop("fast_delivery", True):  # as the worker: Faust's floor with the same change to Faust
        deliver_without_tasks()
    if extra.pop("wake_on_buffer_drop", True):  # as the worker
        wake_fetch_on_buffer_drop()
    import faust

    app = faust.App(settings.app_id, **{**_faust_settings(settings), **extra})
    topic = app.topic(*settings.topics.input_topics(), value_serializer="raw", key_serializer="raw")
    count = _Count()
    registry = CollectorRegistry()
    registry.register(count)
    start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)

    @app.agent(topic, name="count")
    async def counter(stream: faust.StreamT) -> None:
        async for _event in stream.events():
            count.value += 1

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None  # as in streams/live/worker.py: else the root logger is set to DEBUG
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
