"""``modwatch worker``: start the live Faust worker (blocks until stopped).

Before Faust starts, the rule set is loaded (a bad config stops start-up here, with the file, rule
and field named, before anything connects; so does an ``inputs`` entry naming no mapping) and the
input, raw input, alerts, dead-letter and context table topics are created
when missing. Faust creates its own internal topics (the keyed topic, the table changelog).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from streams.config.loader import load_rules
from streams.config.settings import Settings
from streams.live.faust_ext.patches import check_versions
from streams.live.faust_ext.settings import FAUST_FETCH_MAX_WAIT_MS, FETCH_MAX_WAIT_MS

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> None:
    from streams.config.kafka import create_topics
    from streams.live.context_tables import create_context_topics

    names = {t: settings.topics.partitions for t in settings.topics.input_topics()}
    names.update({item.topic_name(): settings.topics.partitions for item in settings.inputs})
    names[settings.topics.alerts] = 1
    names[settings.topics.deadletter] = 1
    names[settings.topics.incidents] = 1
    create_topics(settings.bootstrap_servers, names, security=settings.kafka)
    if settings.inputs:
        create_context_topics(settings.bootstrap_servers, settings.topics.context_prefix, security=settings.kafka)


def use_event_loop(name: str = "uvloop") -> str:
    """Install the event loop policy Faust will run on; returns the one in use.

    Called before the app is created: Faust and aiokafka bind to the loop they first see. uvloop
    (the default) made the worker measurably faster (bench/README.md); ``asyncio`` is the standard
    loop, also the fallback when uvloop is not installed.
    """
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on the standard asyncio loop")
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    if name != "asyncio":
        raise ValueError(f"unknown event loop {name!r} (expected uvloop or asyncio)")
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    return "asyncio"


def run_worker(
    settings: Settings,
    loglevel: str = "info",
    loop: str = "uvloop",
    fetch_max_wait_ms: int | None = FETCH_MAX_WAIT_MS,
    fast_delivery: bool = True,
    wake_on_buffer_drop: bool = True,
) -> int:
    """Run until SIGINT/SIGTERM. Returns the process exit code. The last three are the app's consumer
    settings (``streams.live.faust_ext.settings``), for the benchmark: ``fetch_max_wait_ms=None`` is
    Faust's 1,500 ms, ``fast_delivery=False`` leaves Faust's delivery of records as it is
    (``Consumer.wait_first``), and ``wake_on_buffer_drop=False`` leaves its fetch loop's waits for a
    paused stream partition as they are (``Consumer.on_buffer_drop``; the wake-up after a
    rebalance's seek, part of ``Consumer.perform_seek``, stays).

    Refuses to start (``UnsupportedVersion``, a ``ConfigError``) before anything connects when
    faust-streaming or aiokafka is installed outside the tested ranges (``patches.check_versions``)."""
    import faust

    check_versions()
    ruleset = load_rules(settings.rules_dir)
    from streams.live.raw_inputs import resolve_raw_inputs

    raw_inputs = resolve_raw_inputs(settings)  # an unknown mapping stops start-up here, naming the setting
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "modwatch worker: %d rules from %s, brokers %s, inputs %s -> alerts %s",
        len(ruleset.rules), ruleset.source, settings.bootstrap_servers,
        ",".join(settings.topics.input_topics()), settings.topics.alerts,
    )  # fmt: skip
    for item in raw_inputs:
        log.info("raw input %s: %s (mapping version %d)", item.name, item.topic, item.mapping.version)
    ensure_topics(settings)
    log.info("event loop: %s", use_event_loop(loop))
    from streams.live.app import create_app

    consumer = {
        "fetch_max_wait_ms": FAUST_FETCH_MAX_WAIT_MS if fetch_max_wait_ms is None else fetch_max_wait_ms,
        "fast_delivery": fast_delivery,
        "wake_on_buffer_drop": wake_on_buffer_drop,
    }
    runtime = create_app(settings, ruleset, consumer)
    from streams.outputs.metrics import registry_for, serve

    serve(registry_for(runtime.engine, runtime.health, live=True), settings.metrics_host, settings.metrics_port)
    worker = faust.Worker(runtime.app, loglevel=loglevel, quiet=True)
    # Faust's terminal spinner, at --loglevel warning or above, sets the root logger to DEBUG so that
    # it can spin on every record: every aiokafka and Faust debug call then builds a LogRecord
    # (measured: the worker ran at a fraction of its speed). The spinner is for terminals anyway.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m streams.live.worker` for debugging
    sys.exit(run_worker(Settings()))
