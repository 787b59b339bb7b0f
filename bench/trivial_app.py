"""Faust's own floor: a tiny Faust app with one agent that decodes nothing and counts records.

Started by the live benchmark as ``python -m bench.trivial_app`` with the worker's environment
(``MODWATCH_*``: same brokers, input topic, session settings, app id per run) and the same Faust
settings (``streams.live.app._faust_settings`` plus the benchmark's ``$BENCH_FAUST`` overrides) on the
same event loop (``$BENCH_LOOP``), on the worker's Faust transport with the same consumer settings
(``fetch_max_wait_ms``, ``fast_delivery``, ``wake_on_buffer_drop`` in ``$BENCH_FAUST``:
``streams.live.faust_ext.settings``). With all three at Faust's own values (the "Faust defaults"
variant) it runs on Faust's own ``kafka://`` transport: Faust as it is, none of modwatch's corrections.
Its count is served as ``modwatch_events_processed_total`` on
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
from streams.live.faust_ext.settings import FAUST_FETCH_MAX_WAIT_MS, FETCH_MAX_WAIT_MS, App
from streams.live.faust_ext.transport import SCHEME
from streams.live.faust_ext.transport import register as register_transport
from streams.live.worker import ensure_topics, use_event_loop

from .worker_variant import overrides

#: The consumer settings at Faust's own behaviour (the benchmark's "Faust defaults").
FAUST_CONSUMER = {"fetch_max_wait_ms": FAUST_FETCH_MAX_WAIT_MS, "fast_delivery": False, "wake_on_buffer_drop": False}


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
    # As the worker: Faust's floor with the same changes to Faust's consumer.
    consumer = {
        "fetch_max_wait_ms": extra.pop("fetch_max_wait_ms", FETCH_MAX_WAIT_MS) or FAUST_FETCH_MAX_WAIT_MS,  # null
        "fast_delivery": bool(extra.pop("fast_delivery", True)),
        "wake_on_buffer_drop": bool(extra.pop("wake_on_buffer_drop", True)),
    }
    conf = {**_faust_settings(settings), **extra, **consumer}
    if consumer == FAUST_CONSUMER:  # Faust as it is: its own transport
        conf["broker"] = [url.replace(f"{SCHEME}://", "kafka://", 1) for url in conf["broker"]]
    register_transport()
    import faust

    app = App(settings.app_id, **conf)
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
