"""``modwatch worker``: start the live Faust worker (blocks until stopped).

Before Faust starts, the rule set is loaded (a bad config stops start-up here, with the file, rule
and field named, before anything connects) and the input, alerts and dead-letter topics are created
when missing. Faust creates its own internal topics (the keyed topic, the table changelog).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from .config import load_rules
from .settings import Settings

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> None:
    from .broker import create_topics

    names = {t: settings.topics.partitions for t in settings.topics.input_topics()}
    names[settings.topics.alerts] = 1
    names[settings.topics.deadletter] = 1
    create_topics(settings.bootstrap_servers, names)


#: A shorter wait for the worker's Kafka fetches (ms), opt-in through ``run_worker(fetch_max_wait_ms=...)``.
#: Faust hard-codes 1,500 ms and Tansu does not answer a waiting fetch when records arrive, so at a
#: trickle each stage (input -> route, keyed -> evaluate) holds records for up to 1.5 s: detection
#: latency p50 2.9 s at 250 events/s, 113 ms with 50 ms (bench/README.md, latency). Not the default:
#: with it, test_state_survives_a_graceful_restart failed (the restarted worker stopped consuming).
FETCH_MAX_WAIT_MS = 50


def set_fetch_max_wait(ms: int | None) -> None:
    """Make the Faust consumer created from now on wait at most ``ms`` for records (None: Faust's 1,500)."""
    from faust.transport.drivers import aiokafka as driver

    thread: Any = driver.AIOKafkaConsumerThread
    original = getattr(thread, "_modwatch_create_worker_consumer", None) or thread._create_worker_consumer
    thread._modwatch_create_worker_consumer = original
    if ms is None:
        thread._create_worker_consumer = original
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms  # read when the consumer starts its fetcher
        return consumer

    thread._create_worker_consumer = create


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


def run_worker(settings: Settings, loglevel: str = "info", loop: str = "uvloop",
               fetch_max_wait_ms: int | None = None) -> int:  # fmt: skip
    """Run until SIGINT/SIGTERM. Returns the process exit code."""
    import faust

    ruleset = load_rules(settings.rules_dir)
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "modwatch worker: %d rules from %s, brokers %s, inputs %s -> alerts %s",
        len(ruleset.rules), ruleset.source, settings.bootstrap_servers,
        ",".join(settings.topics.input_topics()), settings.topics.alerts,
    )  # fmt: skip
    ensure_topics(settings)
    log.info("event loop: %s", use_event_loop(loop))
    set_fetch_max_wait(fetch_max_wait_ms)
    from .app import create_app

    runtime = create_app(settings, ruleset)
    from .metrics import registry_for, serve

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


if __name__ == "__main__":  # pragma: no cover - `python -m streams.worker` for debugging
    sys.exit(run_worker(Settings()))
