"""Tuning commands: ``modwatch rules diff``, ``modwatch explain``, and ``backtest --explain / --report``.

Registered on the parser by ``add_tuning_commands`` (called from ``streams.cli.main.build_parser``). Errors
are raised as ConfigError / LogFileError / UsageError, which ``streams.cli.main`` prints in one line
and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.core.decode import Limits
    from streams.core.ruleset import RuleSet
    from streams.offline.backtest import BacktestResult

DIFF_EPILOG = """examples:
  modwatch rules diff --config config --config config-tuned examples/events.jsonl
  modwatch rules diff --config config --config config-tuned last-year.jsonl.gz --since 2020-06-01T00:00:00Z --limit 0

Alerts are matched by alert_id (rule id + group key + incident anchor), so the same incident keeps its
id across configs. Exit 0 (or, with --exit-code, 1 when the alerts differ); 2 for a bad config or log."""

EXPLAIN_EPILOG = """examples:
  modwatch explain 3abd4daf9ec4896708b5344e --log examples/events.jsonl
  modwatch backtest examples/events.jsonl --output alerts.jsonl --explain     # every high/critical alert

Replays the log with the rules (alert ids are deterministic) and prints the contributing events in
event time, the rule's condition, and the score booster by booster."""


def _range_args(p: argparse.ArgumentParser) -> None:
    from streams.cli.common import int_at_least, non_negative_float
    from streams.cli.common import parse_time_arg as _time

    p.add_argument("--since", type=_time, metavar="T", help="skip events before T (RFC 3339), as backtest did")
    p.add_argument("--until", type=_time, metavar="T", help="skip events at or after T (RFC 3339), as backtest did")
    p.add_argument("--lateness", type=non_negative_float, default=300.0, metavar="SECONDS",
                   help="allowed out-of-order lateness in event time, as backtest used (default 300)")  # fmt: skip
    p.add_argument("--max-record-bytes", type=int_at_least(1024), default=1024 * 1024, metavar="N",
                   help="reject lines longer than N bytes, as backtest did (default 1 MiB)")  # fmt: skip


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from streams.core.decode import Limits

    return {
        "since": args.since,
        "until": args.until,
        "lateness": args.lateness,
        "limits": Limits(max_bytes=args.max_record_bytes),
    }


def add_tuning_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    rules_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``rules diff`` and ``explain``. ``config_arg`` adds the usual single ``--config DIR``."""
    diff = rules_sub.add_parser(
        "diff",
        help="run two rule sets over the same log: alerts only A raises, only B raises, severity changes",
        description="Run rule set A and rule set B over the same event logs and report what B would change: "
        "the alerts only A raises, only B raises, and those whose severity (or score, or mode) changed.",
        epilog=DIFF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("--config", action="append", dest="configs", metavar="DIR", required=True,
                      help="a rules directory; give it twice: first A (e.g. current), then B (the change)")  # fmt: skip
    diff.add_argument("paths", nargs="+", metavar="LOG", help="event logs (JSONL, plain or .gz)")
    _range_args(diff)
    from streams.cli.common import non_negative_int

    diff.add_argument("--limit", type=non_negative_int, default=50, metavar="N",
                      help="alerts listed per section (0: all)")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when the alerts differ (for CI)")
    diff.set_defaults(func=cmd_rules_diff)

    ex = sub.add_parser(
        "explain",
        help="why an alert fired: its events in order, the rule's condition, each booster's effect",
        description="Explain alerts by id: replay the log with the rules, then show the contributing events "
        "with their times, the rule's condition, and the score: base, each booster that applied and its "
        "points, the boosters that did not, and the severity band.",
        epilog=EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("alert_ids", nargs="+", metavar="ALERT_ID", help="alert ids from the backtest output")
    ex.add_argument("--log", action="append", dest="logs", metavar="LOG", required=True,
                    help="the event log the alert came from (repeat for several files, in order)")  # fmt: skip
    config_arg(ex)
    _range_args(ex)
    ex.add_argument("--pseudonymize-key-env", metavar="VAR",
                    help="as given to backtest: its alert ids carry target ids pseudonymised by this key")  # fmt: skip
    ex.set_defaults(func=cmd_explain)


# -- commands ---------------------------------------------------------------------------------------------


def cmd_rules_diff(args: argparse.Namespace) -> int:
    from streams.cli.common import UsageError
    from streams.config.loader import load_rules
    from streams.offline.diff import diff_rulesets, render_text

    configs: list[str] = args.configs
    if len(configs) != 2:
        raise UsageError(f"rules diff: give --config exactly twice (A then B), got {len(configs)}")
    ruleset_a, ruleset_b = load_rules(configs[0]), load_rules(configs[1])
    result = diff_rulesets(ruleset_a, ruleset_b, args.paths, **_options(args))
    print(render_text(result, limit=args.limit))
    return 1 if args.exit_code and not result.identical else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from streams.cli.common import key_from_env as _audit_key
    from streams.config.loader import load_rules
    from streams.core.alerts import MIN_KEY_BYTES
    from streams.offline.explain import AlertNotFound, explain_ids
    from streams.offline.explain_text import render_text

    ruleset = load_rules(args.config)
    key = _audit_key(args.pseudonymize_key_env, MIN_KEY_BYTES)
    try:
        explanations = explain_ids(ruleset, args.alert_ids, args.logs, pseudonymize=key, **_options(args))
    except AlertNotFound as exc:
        texts = _explain_with_incidents(args, ruleset, key, exc)
    else:
        texts = [render_text(ex) for ex in explanations]
    print("\n\n".join(texts))
    return 0


def _explain_with_incidents(args: argparse.Namespace, ruleset: RuleSet, key: bytes | None,
                            missing: Exception) -> list[str]:  # fmt: skip
    """``explain`` given ids that are not all alert ids: those that are incident ids over the log are
    explained as incidents (their alerts' timeline); any other id is an error, as before."""
    from streams.cli.common import UsageError
    from streams.config.loader import load_incidents
    from streams.offline.explain import AlertNotFound, explain_ids
    from streams.offline.explain_text import render_text
    from streams.offline.incidents import explain_incident, find_incidents, render_incident_text

    options = {**_options(args), "pseudonymize": key}
    incidents = {i.incident_id: i for i in find_incidents(ruleset, load_incidents(args.config), args.logs, **options)}
    alert_ids = [a.strip() for a in args.alert_ids if a.strip() not in incidents]
    try:
        alerts = iter(explain_ids(ruleset, alert_ids, args.logs, **options) if alert_ids else [])
    except AlertNotFound:
        raise UsageError(f"{missing}; nor an incident id of the {len(incidents)} incidents raised") from None
    texts = []
    for given in args.alert_ids:
        incident = incidents.get(given.strip())
        if incident is None:
            texts.append(render_text(next(alerts)))
        else:
            texts.append(render_incident_text(explain_incident(incident, ruleset, args.logs, **options)))
    return texts


def backtest_extras(args: argparse.Namespace, ruleset: RuleSet, result: BacktestResult, limits: Limits) -> None:
    """``backtest --explain`` and ``--report FILE``, after the summary. Both need the hits behind the high
    and critical alerts, which the backtest does not keep: the log is replayed again, up to the last of them."""
    from streams.cli.common import UsageError
    from streams.cli.common import key_from_env as _audit_key
    from streams.core.alerts import MIN_KEY_BYTES
    from streams.core.scoring import Severity
    from streams.offline.explain import explain_alerts
    from streams.offline.explain_text import render_text
    from streams.offline.outputs import AtomicOutput, OutputError
    from streams.offline.report import ReportData, render_report

    key = _audit_key(getattr(args, "pseudonymize_key_env", None), MIN_KEY_BYTES)
    serious = [a.alert_id for a in result.alerts if a.severity >= Severity.HIGH]
    run = explain_alerts(ruleset, args.paths, since=args.since, until=args.until, lateness=args.lateness,
                         limits=limits, pseudonymize=key, expected=serious)  # fmt: skip
    if args.explain:
        if run.explanations:
            print("\n\n".join(render_text(ex) for ex in run.explanations))
        else:
            print("no high or critical alerts to explain")
    if args.report:
        period = (run.first_ts, run.last_ts) if run.first_ts is not None and run.last_ts is not None else None
        data = ReportData(result, run.explanations, list(args.paths), ruleset.source, period)
        config = getattr(args, "incident_config", None)
        if config is not None:
            from streams.offline.incidents import page_count

            data.incidents = result.incidents()
            data.pages = page_count(result.alerts, result.updates, Severity.parse(config.paging_severity))
        try:
            with AtomicOutput(args.report) as fh:  # a failed report leaves the previous one
                fh.write(render_report(data))
        except (OSError, OutputError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split(": ")[-1]
            raise UsageError(f"{args.report}: cannot write the report: {detail}") from None
        sys.stderr.write(f"report written to {args.report}\n")


def write_backtest_incidents(args: argparse.Namespace, result: BacktestResult) -> None:
    """``backtest --incidents FILE``: each incident's final revision, and the pages with and without them."""
    from streams.core.scoring import Severity
    from streams.offline.incidents import page_count, write_incidents
    from streams.offline.outputs import AtomicOutput

    with AtomicOutput(args.incidents) as out:
        written = write_incidents(out, result.incidents())
    pages = page_count(result.alerts, result.updates, Severity.parse(args.incident_config.paging_severity))
    sys.stderr.write(f"incidents: {written:,}  pages: {pages.before:,} without incidents, {pages.after:,} with them "
                     f"({pages.incidents:,} incidents + {pages.always:,} page: always alerts)\n"
                     f"incidents written to {args.incidents}\n")  # fmt: skip
