"""``modwatch worker``: start the live Faust worker (blocks until stopped).

Before Faust starts, the rule set is loaded (a bad config stops start-up here, with the file, rule
and field named, before anything connects) and the input, alerts and dead-letter topics are created
when missing. Faust creates its own internal topics (the keyed topic, the table changelog).
"""

from __future__ import annotations

import logging
import sys

from .config import load_rules
from .settings import Settings

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> None:
    from .broker import create_topics

    names = {t: settings.topics.partitions for t in settings.topics.input_topics()}
    names[settings.topics.alerts] = 1
    names[settings.topics.deadletter] = 1
    create_topics(settings.bootstrap_servers, names)


def run_worker(settings: Settings, loglevel: str = "info") -> int:
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
    from .app import create_app

    runtime = create_app(settings, ruleset)
    from .metrics import registry_for, serve

    serve(registry_for(runtime.engine, runtime.health, live=True), settings.metrics_host, settings.metrics_port)
    worker = faust.Worker(runtime.app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m streams.worker` for debugging
    sys.exit(run_worker(Settings()))
