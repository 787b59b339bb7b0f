"""``modwatch context publish DIR``: the context tables (staff, accounts, tickets) of a directory to
their compacted topics, which every live worker reads whole (``streams.live.context_tables``).

``add_context_commands`` registers ``context`` (called from ``streams.cli.main.build_parser``). Errors
are ConfigError (a bad row: file, line and column) or BrokerError, printed in one line (exit 2).
"""

from __future__ import annotations

import argparse
import sys

CONTEXT_EPILOG = """examples:
  modwatch context publish examples/context --bootstrap-servers 127.0.0.1:9092
  modwatch context publish /srv/hr-export --dry-run        # read and check the rows, send nothing

DIR holds staff, accounts and tickets as NAME.csv or NAME.jsonl (docs/inputs.md, "Context"). Each row
goes to <topics.context_prefix><table> (default modwatch.context.staff...), keyed by its id (a
ticket's ticket_id): a later row with the same key replaces the earlier one in every worker. A row
left out of DIR is not deleted from the topic."""


def cmd_context_publish(args: argparse.Namespace) -> int:
    from streams.config.settings import load_settings
    from streams.live.context_tables import context_topics, publish_context

    settings = load_settings(args.settings, bootstrap_servers=args.bootstrap_servers)
    prefix = settings.topics.context_prefix
    counts = publish_context(args.directory, settings.bootstrap_servers, prefix, security=settings.kafka,
                             dry_run=args.dry_run)  # fmt: skip
    topics = context_topics(prefix)
    verb = "checked (dry run)" if args.dry_run else "published"
    for table, topic in topics.items():
        if table in counts:
            sys.stdout.write(f"{table}: {counts[table]} rows {verb} to {topic}\n")
        else:
            sys.stdout.write(f"{table}: no {table}.csv or {table}.jsonl in {args.directory}: nothing sent\n")
    return 0


def add_context_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``context publish`` to ``sub`` (the subparsers of the ``modwatch`` parser)."""
    context = sub.add_parser("context", help="context tables for the live worker's raw inputs")
    context_sub = context.add_subparsers(dest="context_command", metavar="ACTION")
    context_sub.required = True
    publish = context_sub.add_parser(
        "publish",
        help="write a directory's context tables to their compacted topics",
        description="Read staff, accounts and tickets from DIR (as backtest --context does), check every row, "
        "and write one record per row to the table's topic, created compacted when missing.",
        epilog=CONTEXT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("directory", metavar="DIR", help="directory of staff, accounts and tickets tables")
    publish.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                         help="Kafka brokers (default: $MODWATCH_BOOTSTRAP_SERVERS, the settings file, "
                         "127.0.0.1:9092)")  # fmt: skip
    publish.add_argument("--settings", metavar="FILE", help="service settings YAML (default: $MODWATCH_SETTINGS "
                         "or config/modwatch.yaml if present)")  # fmt: skip
    publish.add_argument("--dry-run", action="store_true", help="read and check the rows; send nothing")
    publish.set_defaults(func=cmd_context_publish)
