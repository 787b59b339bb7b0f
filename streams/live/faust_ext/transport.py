"""The worker's Faust transport: Faust's aiokafka transport with modwatch's consumer
(``streams.live.faust_ext.consumer``), registered as Faust registers its own.

Faust builds ``app.transport`` (and the producer's) from the scheme of the ``broker`` setting
(``faust.transport.by_url``: ``kafka://`` is its aiokafka transport). This one answers
``modwatch://``: ``register`` adds the scheme to ``faust.transport.drivers.TRANSPORTS``, and the
``faust.transports`` entry point in pyproject.toml names it too, for any Faust app in an environment
where modwatch is installed. Only the scheme differs from ``kafka://``: hosts, ports and the list of
brokers (``modwatch://h1:9092;h2:9092``) are read as Faust reads them, and the security settings
(``broker_credentials``, ``ssl_context``) reach aiokafka the same way. The producer is Faust's.
"""

from __future__ import annotations

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver

from streams.live.faust_ext.consumer import Consumer

SCHEME = "modwatch"  # broker URL ``modwatch://host:port``, the worker's ``broker`` setting for Faust


class Transport(driver.Transport):
    """Faust's aiokafka transport whose consumer is modwatch's."""

    Consumer = Consumer


def register() -> None:
    """Make ``modwatch://`` name this transport for Faust (``faust.transport.by_url``)."""
    TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")


def broker_urls(bootstrap_servers: str) -> list[str]:
    """``host:port,host:port`` (the ``bootstrap_servers`` setting) as Faust broker URLs of this transport."""
    return [f"{SCHEME}://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]
