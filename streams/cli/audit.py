"""``modwatch audit`` and ``modwatch verify``: the tamper-evident alert record on the command line.

Registered on the parser by ``add_audit_commands`` (called from ``streams.cli.main.build_parser``);
``main(argv)`` runs just these two commands. Exit codes: 0 intact / audited, 1 the log has
problems, 2 bad usage, a missing file, or a log ``audit`` refuses to continue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.cli.common import UsageError, key_from_env
from streams.core.ruleset import ConfigError

AUDIT_EPILOG = """example:
  MODWATCH_AUDIT_KEY=... modwatch audit --output /var/log/modwatch/alerts.audit \\
      --checkpoint /mnt/other-host/alerts.audit.checkpoint --hmac-key-env MODWATCH_AUDIT_KEY

After each batch the log is synced, then the checkpoint (entry count, last hash, an HMAC when keyed)
replaced. Keep the checkpoint where whoever can write the log cannot: it is what shows a cut tail.
A half-written last line (a crash mid-write) is moved to <log>.partial and auditing continues."""

VERIFY_EPILOG = """example:
  modwatch verify alerts.audit --hmac-key-env MODWATCH_AUDIT_KEY --checkpoint alerts.audit.checkpoint

Exit 0 when intact, 1 when anything is wrong (altered, deleted, inserted, reordered, a bad or missing
mac, a keyed log without its key, a header that contradicts the entries or the key, a tail cut short
of the checkpoint, a half-written last line), 2 when a file is missing. Without --checkpoint a cut
tail cannot be detected; without the key an unkeyed rebuild of a keyed log cannot."""


def add_audit_commands(sub: Any) -> None:
    """Add ``audit`` and ``verify`` to ``sub`` (the subparsers of the ``modwatch`` parser)."""
    au = sub.add_parser(
        "audit",
        help="append every alert from the alerts topic to a hash-chained, tamper-evident log",
        epilog=AUDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    au.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka brokers (default: $MODWATCH_BOOTSTRAP_SERVERS, the settings file, 127.0.0.1:9092)",
    )
    au.add_argument(
        "--settings",
        metavar="FILE",
        help="service settings YAML (default: $MODWATCH_SETTINGS or config/modwatch.yaml if present)",
    )
    au.add_argument("--output", "-o", required=True, metavar="FILE", help="audit log (appended; created if missing)")
    au.add_argument(
        "--checkpoint", metavar="FILE", help="checkpoint replaced after each batch (default FILE.checkpoint)"
    )
    au.add_argument("--hmac-key-env", metavar="VAR", help="environment variable holding the HMAC key (optional)")
    au.add_argument("--group", default="modwatch-audit", help="consumer group (default modwatch-audit)")
    au.add_argument("--exit-after-idle", type=float, metavar="SECONDS", help="stop after this long without alerts")
    au.set_defaults(func=cmd_audit)
    vf = sub.add_parser(
        "verify",
        help="check an audit log against its chain, key and checkpoint (exit 1 on any problem)",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vf.add_argument("path", metavar="FILE")
    vf.add_argument("--hmac-key-env", metavar="VAR", help="environment variable holding the HMAC key")
    vf.add_argument("--checkpoint", metavar="FILE", help="the checkpoint modwatch audit wrote (detects a cut tail)")
    vf.set_defaults(func=cmd_verify)


def cmd_audit(args: argparse.Namespace) -> int:
    from streams.config.settings import load_settings
    from streams.outputs.audit import AuditError, AuditLog, consume_alerts, default_checkpoint

    settings = load_settings(args.settings, bootstrap_servers=args.bootstrap_servers)
    checkpoint = args.checkpoint or default_checkpoint(args.output)
    try:
        log = AuditLog(args.output, key_from_env(args.hmac_key_env), checkpoint)
    except AuditError as exc:
        sys.stderr.write(f"modwatch audit: {exc}\n")
        return 2
    for note in log.notes:
        sys.stderr.write(f"audit: {note}\n")
    sys.stderr.write(f"audit: {settings.topics.alerts} -> {args.output} (continuing at entry {log.seq + 1}; "
                     f"checkpoint {checkpoint})\n")  # fmt: skip
    try:
        consume_alerts(settings.bootstrap_servers, settings.topics.alerts, log, group=args.group,
                       idle_exit=args.exit_after_idle, security=settings.kafka)  # fmt: skip
    finally:
        log.close()
        sys.stderr.write(f"audit: {log.summary()}\n")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from streams.outputs.audit import check, default_checkpoint

    for path in (args.path, args.checkpoint):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    report = check(args.path, key_from_env(args.hmac_key_env), args.checkpoint)
    for problem in report.problems:
        print(f"{args.path}: {problem}")
    if report.legacy and report.entries:
        print(f"{args.path}: warning: no header (a log from before headers): it does not say whether it is keyed")
    if not report.keyed and not report.problems:
        print(f"{args.path}: warning: unkeyed: whoever can write it could have rebuilt it; only a key prevents that")
    if args.checkpoint is None:
        beside = default_checkpoint(args.path)
        hint = f" (there is one at {beside}: --checkpoint {beside})" if beside.is_file() else ""
        print(f"{args.path}: note: without --checkpoint, a cut tail cannot be detected{hint}")
    if report.problems:
        partial = all(p.kind == "partial" for p in report.problems)
        verdict = "INCOMPLETE: a half-written last line" if partial else "TAMPERED"
        print(f"{args.path}: {verdict} ({len(report.problems)} problem(s))")
        return 1
    keyed = "keyed, mac checked" if report.keyed else "unkeyed"
    against = f", matches {args.checkpoint}" if args.checkpoint else ""
    print(f"{args.path}: intact ({report.entries} entries, {keyed}{against})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Just ``audit`` and ``verify``, as ``modwatch`` runs them."""
    parser = argparse.ArgumentParser(prog="modwatch", description="The tamper-evident alert record.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_audit_commands(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    try:
        code: int = args.func(args)
    except (ConfigError, UsageError) as exc:
        sys.stderr.write(f"modwatch: {exc}\n")
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
