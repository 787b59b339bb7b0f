"""The ``modwatch`` command. Each subcommand parses its arguments and calls a library function;
``main(argv)`` returns the exit code so tests can call it in-process.

Exit codes: 0 success, 1 the work ran but found a failure (``--strict`` rejections, failing rule
fixtures), 2 bad usage, a missing file or an invalid configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, RuleSet, load_rules
from .logio import LogFileError

DEFAULT_CONFIG = os.environ.get("MODWATCH_CONFIG", "config")

EPILOG = """examples:
  modwatch demo                                   # embedded broker, worker, replay, alerts on screen
  modwatch backtest examples/events.jsonl --output alerts.jsonl --deadletter rejected.jsonl
  modwatch rules validate --config config
"""


class UsageError(Exception):
    pass


def _time(text: str) -> object:
    from .events import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an RFC 3339 timestamp with a time zone ({exc})") from None


def _load(config: str) -> RuleSet:
    return load_rules(config)


# -- subcommands ----------------------------------------------------------------------------------


def cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest import print_summary, run_backtest
    from .decode import Limits
    from .progress import Progress

    ruleset = _load(args.config)
    limits = Limits(max_bytes=args.max_record_bytes)
    out_path = Path(args.output)
    with out_path.open("w", encoding="utf-8") as output:
        result = run_backtest(
            args.paths,
            ruleset,
            output=output,
            deadletter=args.deadletter,
            since=args.since,
            until=args.until,
            limits=limits,
            lateness=args.lateness,
            progress=Progress("backtest"),
        )
    print_summary(result)
    sys.stderr.write(f"alerts written to {out_path}")
    if args.deadletter and sum(result.rejected.values()):
        sys.stderr.write(f"; rejected lines to {args.deadletter}")
    sys.stderr.write("\n")
    if args.strict and sum(result.rejected.values()):
        sys.stderr.write("--strict: some lines were rejected\n")
        return 1
    return 0


def cmd_rules_validate(args: argparse.Namespace) -> int:
    ruleset = _load(args.config)
    live = sum(1 for r in ruleset.rules if r.config.mode == "live")
    print(f"{ruleset.source}: {len(ruleset.rules)} rules OK ({live} live, {len(ruleset.rules) - live} shadow)")
    return 0


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modwatch",
        description="Monitor moderation actions and data exports for anomalies.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config", default=DEFAULT_CONFIG, metavar="DIR",
            help="rules directory with rules.yaml and scoring.yaml (default: $MODWATCH_CONFIG or ./config)",
        )  # fmt: skip

    bt = sub.add_parser(
        "backtest",
        help="run the rules over JSONL event logs",
        description="Run the rules over JSONL event logs (plain or .gz) and write one alert per line.",
        epilog="example:\n  modwatch backtest examples/events.jsonl --output alerts.jsonl --deadletter bad.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bt.add_argument("paths", nargs="+", metavar="PATH", help="event logs, one JSON object per line")
    config_arg(bt)
    bt.add_argument("--output", "-o", required=True, metavar="FILE", help="where to write alerts (JSONL)")
    bt.add_argument("--deadletter", metavar="FILE", help="where to write rejected lines with their reasons")
    bt.add_argument("--since", type=_time, metavar="T", help="skip events before T (RFC 3339)")
    bt.add_argument("--until", type=_time, metavar="T", help="skip events at or after T (RFC 3339)")
    bt.add_argument("--strict", action="store_true", help="exit 1 if any line was rejected")
    bt.add_argument("--lateness", type=float, default=300.0, metavar="SECONDS",
                    help="allowed out-of-order lateness in event time (default 300)")  # fmt: skip
    bt.add_argument("--max-record-bytes", type=int, default=1024 * 1024, metavar="N",
                    help="reject lines longer than N bytes (default 1 MiB)")  # fmt: skip
    bt.set_defaults(func=cmd_backtest)

    rules = sub.add_parser("rules", help="check and test the rule set")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    rules_sub.required = True
    validate = rules_sub.add_parser(
        "validate",
        help="schema-check the rule set without running anything (exit 0 or 2)",
        epilog="example:\n  modwatch rules validate --config config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(validate)
    validate.set_defaults(func=cmd_rules_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, LogFileError, UsageError) as exc:
        sys.stderr.write(f"modwatch: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("modwatch: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
