"""Raw sources on the command line: ``modwatch receive zoom`` (the endpoint Zoom's webhooks post to) and
the raw path of ``modwatch replay`` (``--input NAME=PATH``: raw logs to ``modwatch.raw.<NAME>``).

``add_receive_commands`` registers ``receive`` (called from ``streams.cli.main.build_parser``);
``cmd_replay_raw`` is what ``modwatch replay`` runs when given ``--input``. Errors are raised as
ConfigError / UsageError / BrokerError, which ``streams.cli.main`` prints in one line (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from streams.cli import common as num
from streams.cli.common import UsageError

if TYPE_CHECKING:
    from streams.config.settings import Settings

RECEIVE_ZOOM_EPILOG = """examples:
  MODWATCH_ZOOM__SECRET_TOKEN=... modwatch receive zoom --port 8080 --bootstrap-servers kafka:9092
  modwatch receive zoom --port 8080 --secret-env ZOOM_WEBHOOK_SECRET --path /zoom/webhook

Binds 127.0.0.1 by default: put a TLS-terminating proxy (nginx, Caddy) in front and give Zoom its
https URL. Each request must carry a valid x-zm-signature made with the app's Secret Token and a
timestamp within zoom.max_age_seconds; the body is stored unchanged in the raw topic, and the answer
is 200 only once the broker acknowledged it (503 otherwise: Zoom delivers it again). Counters are
printed when it stops (Ctrl-C, SIGTERM)."""


def _settings(args: argparse.Namespace) -> Settings:
    from streams.config.settings import load_settings

    settings = load_settings(args.settings, bootstrap_servers=args.bootstrap_servers)
    if args.partitions is not None:
        topics = settings.topics.model_copy(update={"partitions": args.partitions})
        settings = settings.model_copy(update={"topics": topics})
    return settings


def cmd_receive_zoom(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from streams.live.receive_zoom import build_receiver, serve

    settings = _settings(args)
    secret = None
    if args.secret_env:
        value = os.environ.get(args.secret_env)
        if not value:
            raise UsageError(f"--secret-env: ${args.secret_env} is not set or empty")
        secret = SecretStr(value)
    path = args.path if args.path.startswith("/") else "/" + args.path
    receiver = build_receiver(settings.bootstrap_servers, settings.kafka, settings.zoom, topic=args.topic,
                              partitions=settings.topics.partitions, path=path, secret=secret)  # fmt: skip

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(port: int) -> None:
            sys.stderr.write(f"receive zoom: listening on http://{args.host}:{port}{path}, "
                             f"storing to {args.topic} at {settings.bootstrap_servers}\n")  # fmt: skip
            sys.stderr.flush()

        await serve(receiver, args.host, args.port, stop, ready)

    try:
        asyncio.run(run())
    finally:
        sys.stderr.write(receiver.counters.summary() + "\n")
    return 0


def parse_input(text: str) -> tuple[str, str]:
    """``NAME=PATH`` for ``--input`` (as ``modwatch normalize`` reads it)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH, such as zoom-webhook=zoom.jsonl")
    return name, path


def cmd_replay_raw(args: argparse.Namespace, settings: Settings) -> int:
    """``modwatch replay --input NAME=PATH ...``: called by ``cmd_replay`` with its settings."""
    from streams.inputs import load_mappings, resolve_inputs_dir
    from streams.tools.replay import replay_raw

    if args.paths:
        raise UsageError("give event logs (PATH ...) or raw logs (--input NAME=PATH), not both")
    mappings = load_mappings(resolve_inputs_dir(args.inputs))
    try:
        stats = replay_raw(
            args.input, mappings, settings.bootstrap_servers, partitions=settings.topics.partitions,
            speed=args.speed, rate=args.rate, since=args.since, until=args.until, deadletter=args.deadletter,
            security=settings.kafka, dry_run=args.dry_run,
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if stats.failed:
        return 1
    return 1 if args.strict and stats.rejected_total else 0


def add_raw_replay_arguments(rp: argparse.ArgumentParser) -> None:
    """``--input`` and ``--inputs`` on the ``replay`` parser."""
    rp.add_argument("--input", type=parse_input, action="append", metavar="NAME=PATH",
                    help="a raw log of source NAME (a mapping id), replayed to modwatch.raw.NAME with its records' "
                    "event times (repeat for several sources; instead of PATH ...)")  # fmt: skip
    rp.add_argument("--inputs", metavar="DIR",
                    help="directory of mapping files (default: ./config/inputs if present, else the bundled ones)")


def add_receive_commands(sub: Any) -> None:
    """Add ``receive zoom`` to ``sub`` (the subparsers of the ``modwatch`` parser)."""
    receive = sub.add_parser("receive", help="run an HTTP endpoint a source posts its events to (zoom)")
    receive_sub = receive.add_subparsers(dest="receive_command", metavar="SOURCE")
    receive_sub.required = True
    zoom = receive_sub.add_parser(
        "zoom",
        help="receive Zoom webhooks: verify each signature, store the body in the raw topic",
        description="An HTTP endpoint for Zoom's event notifications: answers the URL validation challenge, "
        "refuses unsigned, forged, stale, oversized and non-JSON requests, and stores each event's raw body "
        "in the raw topic before answering 200.",
        epilog=RECEIVE_ZOOM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    zoom.add_argument("--port", type=num.port_number, required=True, metavar="PORT", help="port to listen on")
    zoom.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: behind a proxy)")
    zoom.add_argument("--path", default="/", help="the URL path Zoom posts to (default /)")
    zoom.add_argument("--topic", default="modwatch.raw.zoom-webhook", help="raw topic (default %(default)s)")
    zoom.add_argument("--secret-env", metavar="VAR",
                      help="environment variable holding the Secret Token (default: the setting zoom.secret_token, "
                      "$MODWATCH_ZOOM__SECRET_TOKEN)")  # fmt: skip
    zoom.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                      help="Kafka brokers (default: $MODWATCH_BOOTSTRAP_SERVERS, the settings file, 127.0.0.1:9092)")
    zoom.add_argument("--settings", metavar="FILE",
                      help="service settings YAML (default: $MODWATCH_SETTINGS or config/modwatch.yaml if present)")
    zoom.add_argument("--partitions", type=num.int_at_least(1, 256), metavar="N",
                      help="partitions of the raw topic if it is created (default: settings topics.partitions, 1)")
    zoom.set_defaults(func=cmd_receive_zoom)
