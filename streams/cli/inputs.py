"""Input commands: ``modwatch inputs list|validate|test``, ``modwatch normalize`` and ``backtest --input``.

Registered on the parser by ``add_input_commands`` (called from ``streams.cli.main.build_parser``).
Errors are raised as ConfigError / LogFileError / UsageError, which ``streams.cli.main`` prints in
one line and turns into exit code 2. The mappings directory, first that applies: ``--inputs DIR``,
``./config/inputs``, the mappings bundled with modwatch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from streams.cli.common import UsageError, int_at_least

if TYPE_CHECKING:
    from streams.core.ruleset import RuleSet
    from streams.inputs import Mapping
    from streams.inputs.context import Context

CONTEXT_HELP = ("directory of context tables: staff, accounts, tickets (.csv or .jsonl) that fill regions, kinds, "
                "owners and tickets the sources lack (docs/inputs.md, Context)")  # fmt: skip
GEOIP_HELP = "a MaxMind database (.mmdb): fills an actor's unknown region (ZZ) from the event's source.ip"
INPUTS_HELP = "directory of mapping files (default: ./config/inputs if present, else the bundled mappings)"

NORMALIZE_EPILOG = """examples:
  modwatch normalize --input okta=logs/okta.jsonl.gz --input requests-csv=legal/register.csv -o events.jsonl
  modwatch normalize --input zoom-webhook=zoom.jsonl -o events.jsonl --deadletter rejected.jsonl
  modwatch backtest events.jsonl --output alerts.jsonl
  modwatch normalize --input zoom-webhook=zoom.jsonl --context examples/context -o events.jsonl

NAME is a mapping id (modwatch inputs list). Events are merged in event time (occurred_at, then
source, then position) and written as contract events, one JSON object per line. All events of a run
are held in memory before writing."""


def _dir(args: argparse.Namespace) -> Path:
    from streams.inputs import resolve_inputs_dir

    return resolve_inputs_dir(args.inputs)


def _mappings(args: argparse.Namespace) -> tuple[Path, dict[str, Mapping]]:
    from streams.inputs import load_mappings

    directory = _dir(args)
    return directory, load_mappings(directory)


def cmd_inputs_list(args: argparse.Namespace) -> int:
    directory, mappings = _mappings(args)
    print(f"{directory}: {len(mappings)} mappings")
    for mapping in mappings.values():
        print(f"{mapping.id} (version {mapping.version}, {mapping.format}): {mapping.spec.description}")
        for line in mapping.describe_actions():
            print(f"  {line}")
    return 0


def cmd_inputs_validate(args: argparse.Namespace) -> int:
    directory, mappings = _mappings(args)
    actions = sum(len(m.spec.actions) for m in mappings.values())
    print(f"{directory}: {len(mappings)} mappings OK ({actions} actions mapped)")
    return 0


def cmd_inputs_test(args: argparse.Namespace) -> int:
    from streams.inputs import run_fixtures

    directory, mappings = _mappings(args)
    results = run_fixtures(directory, mappings, args.ids or None)
    failed = [r for r in results if not r.ok]
    for result in results:
        if not result.ok or args.verbose:
            print(result.format())
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _parse_input(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH, such as okta=logs/okta.jsonl")
    return name, path


def _context(args: argparse.Namespace) -> Context | None:
    from streams.inputs.context_files import load_context

    if args.context is None and args.geoip is None:
        return None
    return load_context(args.context, args.geoip, notify=lambda line: sys.stderr.write(line + "\n"))


def cmd_normalize(args: argparse.Namespace) -> int:
    from streams.core.decode import Limits
    from streams.offline.logio import check_readable
    from streams.offline.normalize import format_summary, normalize
    from streams.offline.outputs import AtomicOutput, check_outputs

    _, mappings = _mappings(args)
    context = _context(args)
    out_path = Path(args.output)
    paths = [path for _, path in args.input]
    check_readable(paths)  # before anything is opened for writing: a failed run leaves the outputs as they were
    check_outputs(paths, {"--output": args.output, "--deadletter": args.deadletter})
    try:
        with AtomicOutput(out_path) as output:
            result = normalize(args.input, mappings, output, deadletter=args.deadletter,
                               limits=Limits(max_bytes=args.max_record_bytes), context=context)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for line in format_summary(result):
        sys.stderr.write(line + "\n")
    sys.stderr.write(f"events written to {out_path}")
    if args.deadletter and any(sum(s.rejected.values()) for s in result.sources):
        sys.stderr.write(f"; rejected records to {args.deadletter}")
    sys.stderr.write("\n")
    return 0


def cmd_backtest_raw(args: argparse.Namespace, ruleset: RuleSet) -> int:
    """``modwatch backtest --input NAME=PATH ...``: raw logs mapped, enriched and merged, then the rules."""
    from streams.cli.common import key_from_env
    from streams.core.alerts import MIN_KEY_BYTES
    from streams.core.decode import Limits
    from streams.offline.backtest import print_summary
    from streams.offline.logio import check_readable
    from streams.offline.normalize import format_summary
    from streams.offline.outputs import AtomicOutput, check_outputs
    from streams.offline.raw_backtest import run_raw_backtest

    if args.paths:
        raise UsageError("give event logs (PATH ...) or raw logs (--input NAME=PATH), not both")
    if args.report or args.explain:
        raise UsageError("--report and --explain read contract logs: run modwatch normalize first")
    _, mappings = _mappings(args)
    context = _context(args)
    paths = [path for _, path in args.input]
    check_readable(paths)  # before anything is opened for writing
    check_outputs(paths, {"--output": args.output, "--deadletter": args.deadletter, "--metrics": args.metrics,
                          "--incidents": args.incidents})  # fmt: skip
    incidents = None
    if args.incidents:
        from streams.config.loader import load_incidents
        from streams.core.incidents import IncidentEngine

        args.incident_config = load_incidents(args.config)
        incidents = IncidentEngine(args.incident_config)
    try:
        with AtomicOutput(Path(args.output)) as output:
            run = run_raw_backtest(args.input, mappings, ruleset, context=context, output=output,
                                   deadletter=args.deadletter, since=args.since, until=args.until,
                                   limits=Limits(max_bytes=args.max_record_bytes), lateness=args.lateness,
                                   pseudonymize=key_from_env(args.pseudonymize_key_env, MIN_KEY_BYTES),
                                   incidents=incidents)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for line in format_summary(run.inputs)[:-1]:  # its last line counts events written: none are here
        sys.stderr.write(line + "\n")
    sys.stderr.write(f"{run.inputs.written} events mapped\n")
    result = run.backtest
    print_summary(result)
    if args.incidents:
        from streams.cli.tuning import write_backtest_incidents

        write_backtest_incidents(args, result)
    if args.metrics:
        from streams.outputs.metrics import Health, write_textfile

        assert result.engine is not None
        write_textfile(args.metrics, result.engine, Health(dead_letters=result.rejected))
        sys.stderr.write(f"metrics written to {args.metrics}\n")
    sys.stderr.write(f"alerts written to {args.output}")
    rejected = sum(result.rejected.values()) + sum(sum(s.rejected.values()) for s in run.inputs.sources)
    if args.deadletter and rejected:
        sys.stderr.write(f"; rejected records to {args.deadletter}")
    sys.stderr.write("\n")
    return 1 if args.strict and rejected else 0


def add_raw_input_args(parser: argparse.ArgumentParser) -> None:
    """``backtest``'s raw-log options: ``--input NAME=PATH`` (repeatable), ``--inputs``, ``--context``, ``--geoip``."""
    parser.add_argument("--input", type=_parse_input, action="append", metavar="NAME=PATH",
                        help="instead of PATHs: a mapping id and a raw log (repeat for several sources)")  # fmt: skip
    parser.add_argument("--inputs", metavar="DIR", help=INPUTS_HELP)
    parser.add_argument("--context", metavar="DIR", help=CONTEXT_HELP)
    parser.add_argument("--geoip", metavar="FILE", help=GEOIP_HELP)


def add_input_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inputs`` (list, validate, test) and ``normalize`` to the ``modwatch`` parser."""
    raw = argparse.RawDescriptionHelpFormatter
    inputs = sub.add_parser("inputs", help="list, check and test the source mappings (raw audit logs -> events)")
    inputs_sub = inputs.add_subparsers(dest="inputs_command", metavar="ACTION")
    inputs_sub.required = True

    ls = inputs_sub.add_parser("list", help="each mapping: id, version, source, actions mapped",
                               epilog="example:\n  modwatch inputs list --inputs config/inputs", formatter_class=raw)
    ls.add_argument("--inputs", metavar="DIR", help=INPUTS_HELP)
    ls.set_defaults(func=cmd_inputs_list)

    validate = inputs_sub.add_parser("validate", help="schema-check every mapping file (exit 0 or 2)",
                                     epilog="example:\n  modwatch inputs validate --inputs config/inputs",
                                     formatter_class=raw)  # fmt: skip
    validate.add_argument("--inputs", metavar="DIR", help=INPUTS_HELP)
    validate.set_defaults(func=cmd_inputs_validate)

    test = inputs_sub.add_parser("test", help="run the mappings' fixtures: raw records and the events they "
                                 "must become (exit 1 on a failing case)",
                                 epilog="example:\n  modwatch inputs test\n  modwatch inputs test okta -v",
                                 formatter_class=raw)  # fmt: skip
    test.add_argument("--inputs", metavar="DIR", help=INPUTS_HELP)
    test.add_argument("ids", nargs="*", metavar="ID", help="mapping ids (default: all)")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.set_defaults(func=cmd_inputs_test)

    norm = sub.add_parser("normalize", help="map raw audit logs of one or several sources to one event log",
                          description="Map raw records (JSONL plain or .gz, or CSV with a header) to contract "
                          "events, merged in event time.", epilog=NORMALIZE_EPILOG, formatter_class=raw)  # fmt: skip
    norm.add_argument("--input", type=_parse_input, action="append", required=True, metavar="NAME=PATH",
                      help="a mapping id and a raw log (repeat for several sources)")
    norm.add_argument("--inputs", metavar="DIR", help=INPUTS_HELP)
    norm.add_argument("--output", "-o", required=True, metavar="FILE", help="where to write the events (JSONL)")
    norm.add_argument("--deadletter", metavar="FILE", help="where to write rejected records with their reasons")
    norm.add_argument("--max-record-bytes", type=int_at_least(1024), default=1024 * 1024, metavar="N",
                      help="reject raw records and events longer than N bytes (default 1 MiB)")  # fmt: skip
    norm.add_argument("--context", metavar="DIR", help=CONTEXT_HELP)
    norm.add_argument("--geoip", metavar="FILE", help=GEOIP_HELP)
    norm.set_defaults(func=cmd_normalize)
