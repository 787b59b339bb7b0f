"""The ``modwatch`` command. Each subcommand parses its arguments and calls a library function;
``main(argv)`` returns the exit code so tests can call it in-process.

Exit codes: 0 success, 1 the work ran but found a failure (``--strict`` rejections, failing rule
fixtures), 2 bad usage, a missing file or an invalid configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.cli import common as num
from streams.cli.common import UsageError, key_from_env, parse_time_arg
from streams.config.loader import ConfigError, RuleSet, load_rules, resolve_rules_dir
from streams.core.alerts import MIN_KEY_BYTES
from streams.offline.logio import LogFileError
from streams.offline.outputs import OutputError

if TYPE_CHECKING:
    from streams.config.settings import Settings

EPILOG = """examples:
  modwatch demo                                   # embedded broker, worker, replay, alerts on screen
  modwatch backtest examples/events.jsonl --output alerts.jsonl --deadletter rejected.jsonl
  modwatch rules validate --config config
  modwatch rules init my-rules                    # an editable copy of the bundled rules

Rules directory, first that applies: --config DIR, $MODWATCH_CONFIG, (worker) the settings' rules_dir,
./config if it holds a rules.yaml, else the rules bundled with modwatch.
"""

CONFIG_HELP = ("rules directory with rules.yaml and scoring.yaml (default: $MODWATCH_CONFIG, ./config if it "
               "holds a rules.yaml, else the bundled rules)")  # fmt: skip


def _rules_dir(given: str | None, settings_dir: str | None = None) -> str:
    """The rules directory to use (``resolve_rules_dir``); says so on stderr when it is the bundled one."""
    return str(resolve_rules_dir(given, settings_dir, notify=lambda line: sys.stderr.write(line + "\n")))


def _load(config: str) -> RuleSet:
    return load_rules(config)


# -- subcommands ----------------------------------------------------------------------------------


def cmd_backtest(args: argparse.Namespace) -> int:
    from streams.core.decode import Limits
    from streams.offline.backtest import print_summary, run_backtest
    from streams.offline.logio import check_readable
    from streams.offline.outputs import AtomicOutput, check_outputs
    from streams.offline.progress import Progress

    if args.jobs == 0:  # one per core
        from streams.offline.parallel import default_jobs

        args.jobs = default_jobs()
    if args.input:  # raw audit logs: mapped, enriched, merged, then the rules (streams/cli/inputs.py)
        if args.jobs > 1:
            raise UsageError(f"--jobs {args.jobs} runs over event logs (PATH ...), not --input: use --jobs 1")
        from streams.cli.inputs import cmd_backtest_raw

        return cmd_backtest_raw(args, _load(args.config))
    if not args.paths:
        raise UsageError("give event logs (PATH ...) or raw logs (--input NAME=PATH)")
    refused = [flag for flag, given in (("--report", args.report), ("--explain", args.explain),
                                        ("--incidents", args.incidents), ("--metrics", args.metrics)) if given]
    if args.jobs > 1 and refused:
        raise UsageError(f"--jobs {args.jobs} does not combine with {', '.join(refused)}: use --jobs 1")
    ruleset = _load(args.config)
    limits = Limits(max_bytes=args.max_record_bytes)
    out_path = Path(args.output)
    # Before anything is opened for writing: a refused or failing run leaves every output as it was.
    check_readable(args.paths)
    check_outputs(args.paths, {"--output": args.output, "--deadletter": args.deadletter, "--report": args.report,
                               "--metrics": args.metrics, "--incidents": args.incidents})  # fmt: skip
    incidents = None
    if args.incidents or args.report:  # the report has an incidents section
        from streams.config.loader import load_incidents
        from streams.core.incidents import IncidentEngine

        args.incident_config = load_incidents(args.config)
        incidents = IncidentEngine(args.incident_config)
    common: dict[str, Any] = {"output": None, "deadletter": args.deadletter, "since": args.since, "until": args.until,
              "limits": limits, "lateness": args.lateness, "progress": Progress("backtest"),
              "pseudonymize": key_from_env(args.pseudonymize_key_env, MIN_KEY_BYTES)}  # fmt: skip
    with AtomicOutput(out_path) as output:
        common["output"] = output
        if args.jobs > 1:
            from streams.offline.parallel import run_parallel

            result = run_parallel(args.paths, ruleset, args.jobs, **common)
        else:
            result = run_backtest(args.paths, ruleset, incidents=incidents, **common)
    print_summary(result)
    if args.incidents:
        from streams.cli.tuning import write_backtest_incidents

        write_backtest_incidents(args, result)
    if args.report or args.explain:
        from streams.cli.tuning import backtest_extras

        backtest_extras(args, ruleset, result, limits)
    if args.metrics:
        from streams.outputs.metrics import Health, write_textfile

        assert result.engine is not None
        write_textfile(args.metrics, result.engine, Health(dead_letters=result.rejected))
        sys.stderr.write(f"metrics written to {args.metrics}\n")
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
    modes = Counter(r.config.mode for r in ruleset.rules)
    detail = ", ".join(f"{modes[m]} {m}" for m in ("live", "shadow", "observe") if modes[m] or m != "observe")
    print(f"{ruleset.source}: {len(ruleset.rules)} rules OK ({detail})")
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    from streams.offline.fixtures import fixture_paths, format_result, run_fixtures

    ruleset = _load(args.config)
    paths = fixture_paths(args.config, args.paths)
    if not paths:
        raise UsageError(f"no fixture files found (looked in {Path(args.config) / 'fixtures'})")
    results = run_fixtures(ruleset, paths)
    failed = [r for r in results if not r.ok]
    for result in results:
        if not result.ok or args.verbose:
            print(format_result(result))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_rules_init(args: argparse.Namespace) -> int:
    from streams.config.loader import copy_bundled_rules

    written = copy_bundled_rules(args.dir, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(f"{args.dir}: edit rules.yaml and scoring.yaml, then: modwatch rules test --config {args.dir}")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    from streams.config.settings import load_settings

    overrides = {"bootstrap_servers": getattr(args, "bootstrap_servers", None)}
    partitions = getattr(args, "partitions", None)
    settings = load_settings(getattr(args, "settings", None), **overrides)
    if partitions is not None:
        topics = settings.topics.model_copy(update={"partitions": partitions})
        settings = settings.model_copy(update={"topics": topics})
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.live.worker import run_worker

    settings = _settings(args)
    rules_dir = _rules_dir(args.config, settings.explicit_rules_dir())
    settings = settings.model_copy(update={"rules_dir": rules_dir})
    load_rules(settings.rules_dir)  # fail before anything starts
    return run_worker(settings, loglevel=args.loglevel)


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.core.topology import input_key
    from streams.tools.replay import replay

    settings = _settings(args)
    if args.speed is not None and args.rate is not None:
        raise UsageError("give --speed or --rate, not both")
    if args.input:
        from streams.cli.receive import cmd_replay_raw

        return cmd_replay_raw(args, settings)
    if not args.paths:
        raise UsageError("give event logs (PATH ...) or raw logs (--input NAME=PATH)")
    stats = replay(
        args.paths,
        settings.bootstrap_servers,
        settings.topics.topic_for,
        input_key,
        partitions=settings.topics.partitions,
        speed=args.speed,
        rate=args.rate,
        since=args.since,
        until=args.until,
        deadletter=args.deadletter,
        security=settings.kafka,
        dry_run=args.dry_run,
    )
    if stats.failed:
        return 1  # the broker refused or never acknowledged some events (they are in the dead-letter file)
    return 1 if args.strict and stats.rejected_total else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.tools.demo import run_demo

    return run_demo(
        args.log, config_dir=args.config, speed=args.speed, idle_exit=args.exit_after_idle,
        metrics_port=args.metrics_port, raw=args.raw,
    )  # fmt: skip


def cmd_generate(args: argparse.Namespace) -> int:
    from streams.tools.generate import DEFAULT_EVENTS_PER_DAY, write_log

    try:
        written = write_log(
            args.output, args.events, seed=args.seed, incidents=args.incidents,
            events_per_day=args.events_per_day or DEFAULT_EVENTS_PER_DAY,
            progress=sys.stderr if sys.stderr.isatty() else None,
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sys.stderr.write(f"wrote {written:,} events to {args.output}\n")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    import yaml

    settings = _settings(args)
    print(yaml.safe_dump(settings.redacted(), sort_keys=False), end="")
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
            "--config", metavar="DIR", help=CONFIG_HELP,
        )  # fmt: skip

    def kafka_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                       help="Kafka brokers (default: $MODWATCH_BOOTSTRAP_SERVERS, the settings file, 127.0.0.1:9092)")
        p.add_argument("--settings", metavar="FILE",
                       help="service settings YAML (default: $MODWATCH_SETTINGS or config/modwatch.yaml if present)")
        p.add_argument("--partitions", type=num.int_at_least(1, 256), metavar="N",
                       help="partitions of the topics modwatch creates (default: settings topics.partitions, 1)")

    bt = sub.add_parser(
        "backtest",
        help="run the rules over JSONL event logs",
        description="Run the rules over JSONL event logs (plain or .gz) and write one alert per line.",
        epilog="example:\n  modwatch backtest examples/events.jsonl --output alerts.jsonl --deadletter bad.jsonl\n"
        "  modwatch backtest --input requests-csv=examples/raw/register.csv \\\n"
        "      --input zoom-webhook=examples/raw/zoom.jsonl --context examples/context -o alerts.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bt.add_argument("paths", nargs="*", metavar="PATH", help="event logs, one JSON object per line")
    config_arg(bt)
    bt.add_argument("--output", "-o", required=True, metavar="FILE", help="where to write alerts (JSONL)")
    bt.add_argument("--deadletter", metavar="FILE", help="where to write rejected lines with their reasons")
    bt.add_argument("--since", type=parse_time_arg, metavar="T", help="skip events before T (RFC 3339)")
    bt.add_argument("--until", type=parse_time_arg, metavar="T", help="skip events at or after T (RFC 3339)")
    bt.add_argument("--strict", action="store_true", help="exit 1 if any line was rejected")
    bt.add_argument("--pseudonymize-key-env", metavar="VAR",
                    help="replace target and data-subject ids in alerts with an HMAC keyed by this variable")
    bt.add_argument("--metrics", metavar="FILE", help="write the run's metrics in Prometheus textfile format")
    bt.add_argument("--lateness", type=num.non_negative_float, default=300.0, metavar="SECONDS",
                    help="allowed out-of-order lateness in event time (default 300)")  # fmt: skip
    bt.add_argument("--max-record-bytes", type=num.int_at_least(1024), default=1024 * 1024, metavar="N",
                    help="reject lines longer than N bytes (default 1 MiB)")  # fmt: skip
    bt.add_argument("--report", metavar="FILE", help="also write a self-contained HTML report (charts, explanations)")
    bt.add_argument("--explain", action="store_true", help="after the summary, explain every high/critical alert")
    bt.add_argument("--jobs", "-j", type=num.int_at_least(0, 64), default=1, metavar="N",
                    help="engine processes, rule keys split among them as over the worker's partitions; the "
                    "output is byte-identical to --jobs 1 (default 1; 0: one per core, at most 8; not with "
                    "--input, --report, --explain, --incidents, --metrics)")  # fmt: skip
    bt.add_argument("--incidents", metavar="FILE", help="also write the incidents (JSONL: each one's final revision; "
                    "incidents.yaml in the rules directory) and print the pages with and without them")
    from streams.cli.inputs import add_raw_input_args

    add_raw_input_args(bt)
    bt.set_defaults(func=cmd_backtest)

    wk = sub.add_parser(
        "worker",
        help="run the live Faust worker: input topics -> rules -> alerts topic",
        description="Consume the input topics, evaluate the rules with state in changelog-backed tables, "
        "publish alerts to the alerts topic (and the configured sinks). Stops on Ctrl-C / SIGTERM.",
        epilog="example:\n  modwatch worker --config config --bootstrap-servers 127.0.0.1:9092\n"
        "  MODWATCH_TOPICS__PARTITIONS=4 modwatch worker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(wk)
    kafka_args(wk)
    wk.add_argument("--loglevel", "-l", default="info", choices=["debug", "info", "warning", "error"])
    wk.set_defaults(func=cmd_worker)

    rp = sub.add_parser(
        "replay",
        help="produce a JSONL event log to the input topics",
        description="Produce each valid event of JSONL logs (plain or .gz) to its input topic, keyed by actor, "
        "with the Kafka timestamp set to occurred_at and the event type in a header. Invalid lines are "
        "never sent: they go to --deadletter.",
        epilog="examples:\n  modwatch replay examples/events.jsonl --bootstrap-servers 127.0.0.1:9092\n"
        "  modwatch replay last-year.jsonl.gz --speed 3600 --since 2020-06-01T00:00:00Z\n"
        "  modwatch replay --input zoom-webhook=zoom.jsonl --input okta=okta.jsonl.gz --speed 60",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("paths", nargs="*", metavar="PATH")
    kafka_args(rp)
    rp.add_argument("--speed", type=num.positive_float, metavar="X",
                    help="X times faster than event time (60: an hour a minute)")
    rp.add_argument("--rate", type=num.positive_float, metavar="N", help="replay at N events per second")
    rp.add_argument("--since", type=parse_time_arg, metavar="T", help="skip events before T (RFC 3339)")
    rp.add_argument("--until", type=parse_time_arg, metavar="T", help="skip events at or after T (RFC 3339)")
    rp.add_argument("--deadletter", metavar="FILE", help="where to write rejected lines (default: count only)")
    rp.add_argument("--dry-run", action="store_true", help="validate and count, send nothing")
    rp.add_argument("--strict", action="store_true", help="exit 1 if any line was rejected")
    rp.set_defaults(func=cmd_replay)
    from streams.cli.receive import add_raw_replay_arguments, add_receive_commands

    add_raw_replay_arguments(rp)
    add_receive_commands(sub)

    dm = sub.add_parser(
        "demo",
        help="run everything locally: embedded broker, worker, replay of the example, alerts on screen",
        epilog="example:\n  modwatch demo\n  modwatch demo --speed 20000 --exit-after-idle 15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(dm)
    dm.add_argument("--log", default="examples/events.jsonl", metavar="PATH", help="event log to replay")
    dm.add_argument("--speed", type=num.positive_float, metavar="X", help="replay speed (default: as fast as possible)")
    dm.add_argument("--exit-after-idle", type=num.positive_float, metavar="SECONDS",
                    help="stop once no alert arrived for this long after the replay (default: until Ctrl-C)")
    dm.add_argument("--metrics-port", type=num.port_number, default=9464, metavar="PORT",
                    help="metrics port (0: a free one)")
    dm.add_argument("--raw", action="store_true", help="the raw path: publish examples/context, replay the raw "
                    "logs of examples/raw (register, Zoom webhooks, Okta) to the raw topics the worker reads")
    dm.set_defaults(func=cmd_demo)

    gen = sub.add_parser(
        "generate",
        help="write a realistic synthetic event log (deterministic for a seed)",
        description="Write routine moderation, request, export, grant and report traffic, optionally with the "
        "case's incidents injected. Streams to disk: any size fits in constant memory.",
        epilog="examples:\n  modwatch generate --events 1000000 --seed 1 --incidents --output year.jsonl.gz\n"
        "  modwatch generate --events 600 --seed 7 --incidents --events-per-day 15 --output examples/events.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--events", type=num.non_negative_int, required=True, metavar="N")
    gen.add_argument("--seed", type=int, default=0, metavar="S")
    gen.add_argument("--incidents", action="store_true", help="inject the case's patterns")
    gen.add_argument("--events-per-day", type=num.positive_float, metavar="R",
                     help="event-time density (default ~2,740: 1M a year)")
    gen.add_argument("--output", "-o", required=True, metavar="FILE", help="JSONL output (.gz to compress)")
    gen.set_defaults(func=cmd_generate)

    st = sub.add_parser(
        "settings",
        help="print the effective service settings (secrets shown as **********)",
        epilog="example:\n  MODWATCH_TOPICS__PARTITIONS=4 modwatch settings --settings config/modwatch.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kafka_args(st)
    st.set_defaults(func=cmd_settings)

    from streams.cli.audit import add_audit_commands

    add_audit_commands(sub)

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
    test = rules_sub.add_parser(
        "test",
        help="run rule fixtures: event logs with the alerts they must and must not produce",
        epilog="example:\n  modwatch rules test                      # every file in config/fixtures\n"
        "  modwatch rules test config/fixtures/rapid_takedown.yaml -v",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(test)
    test.add_argument("paths", nargs="*", metavar="PATH", help="fixture files or directories")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.set_defaults(func=cmd_rules_test)
    init = rules_sub.add_parser(
        "init",
        help="copy the bundled rules.yaml, scoring.yaml and fixtures/ into DIR for editing",
        epilog="example:\n  modwatch rules init my-rules && modwatch rules validate --config my-rules",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("dir", metavar="DIR", help="where to copy them (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist already")
    init.set_defaults(func=cmd_rules_init)

    from streams.cli.tuning import add_tuning_commands

    add_tuning_commands(sub, rules_sub, config_arg)
    from streams.cli.inputs import add_input_commands

    add_input_commands(sub)
    from streams.cli.context import add_context_commands

    add_context_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if "config" in vars(args) and func is not cmd_worker:  # the worker weighs its settings file too
            args.config = _rules_dir(args.config)
        return func(args)
    except (ConfigError, LogFileError, OutputError, UsageError) as exc:
        sys.stderr.write(f"modwatch: {exc}\n")
        return 2
    except BrokenPipeError:
        # `modwatch ... | head`: the reader left; stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        # Broker unreachable, topic creation refused...: one line, not a traceback.
        from streams.config.kafka import BrokerError
        from streams.tools.replay import ReplayError

        if isinstance(exc, BrokerError | ReplayError):
            sys.stderr.write(f"modwatch: {exc}\n")
            return 2
        raise
    except KeyboardInterrupt:
        sys.stderr.write("modwatch: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
