"""``modwatch rules diff``: what a rule change would have done to past alerts, before it ships.

Both rule sets run over the same log (the backtest engine, twice) and their alerts are matched by
``alert_id``. An id is a hash of the rule id, the group key and the incident's anchor, so an alert of a
rule whose id and key are unchanged keeps its id across configs; a change that moves an incident's
anchor (a threshold window that now starts on another event) shows as one alert only in A and one
only in B.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from streams.core.alerts import Alert, iso
from streams.core.decode import DEFAULT_LIMITS, Limits
from streams.core.ruleset import RuleSet
from streams.offline.backtest import run_backtest
from streams.offline.explain_text import safe_text


@dataclass(frozen=True)
class Diff:
    a_source: str
    b_source: str
    a_total: int
    b_total: int
    only_a: tuple[Alert, ...]
    only_b: tuple[Alert, ...]
    severity_changed: tuple[tuple[Alert, Alert], ...]  # (A's alert, B's alert)
    score_changed: tuple[tuple[Alert, Alert], ...]  # same severity, another score
    mode_changed: tuple[tuple[Alert, Alert], ...]  # e.g. live in A, shadow in B: pages in one only
    unchanged: int

    @property
    def identical(self) -> bool:
        return not (self.only_a or self.only_b or self.severity_changed or self.score_changed or self.mode_changed)

    def by_rule(self) -> dict[str, dict[str, int]]:
        """Per rule: alerts in A, in B, only in A, only in B, severity changed."""
        rows: dict[str, Counter[str]] = {}

        def row(rule_id: str) -> Counter[str]:
            return rows.setdefault(rule_id, Counter())

        for alert in self.only_a:
            row(alert.rule_id)["only_a"] += 1
        for alert in self.only_b:
            row(alert.rule_id)["only_b"] += 1
        for a, _ in self.severity_changed:
            row(a.rule_id)["severity"] += 1
        return {rule_id: dict(rows[rule_id]) for rule_id in sorted(rows)}


def _order(alert: Alert) -> tuple[float, str, str]:
    return (alert.last_seen, alert.rule_id, alert.alert_id)


def compare(alerts_a: list[Alert], alerts_b: list[Alert], a_source: str = "A", b_source: str = "B") -> Diff:
    """Match two runs' alerts by id."""
    a = {alert.alert_id: alert for alert in alerts_a}
    b = {alert.alert_id: alert for alert in alerts_b}
    severity, score, mode = [], [], []
    unchanged = 0
    for alert_id in a.keys() & b.keys():
        old, new = a[alert_id], b[alert_id]
        if old.mode != new.mode:
            mode.append((old, new))
        if old.severity != new.severity:
            severity.append((old, new))
        elif old.score != new.score:
            score.append((old, new))
        elif old.mode == new.mode:
            unchanged += 1
    return Diff(
        a_source=a_source,
        b_source=b_source,
        a_total=len(a),
        b_total=len(b),
        only_a=tuple(sorted((a[i] for i in a.keys() - b.keys()), key=_order)),
        only_b=tuple(sorted((b[i] for i in b.keys() - a.keys()), key=_order)),
        severity_changed=tuple(sorted(severity, key=lambda p: _order(p[0]))),
        score_changed=tuple(sorted(score, key=lambda p: _order(p[0]))),
        mode_changed=tuple(sorted(mode, key=lambda p: _order(p[0]))),
        unchanged=unchanged,
    )


def diff_rulesets(
    ruleset_a: RuleSet,
    ruleset_b: RuleSet,
    log_paths: list[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    lateness: float = 300.0,
    limits: Limits = DEFAULT_LIMITS,
) -> Diff:
    """Run both rule sets over ``log_paths`` and compare their alerts."""
    runs = [
        run_backtest(log_paths, ruleset, since=since, until=until, lateness=lateness, limits=limits)
        for ruleset in (ruleset_a, ruleset_b)
    ]
    return compare(runs[0].alerts, runs[1].alerts, ruleset_a.source, ruleset_b.source)


# -- the text renderer ----------------------------------------------------------------------------------


def _line(mark: str, alert: Alert, severity: str) -> str:
    return (
        f"  {mark} {iso(alert.last_seen)}  {alert.rule_id:<24} {severity:<26} {alert.alert_id}\n"
        f"      {safe_text(alert.summary, 400)}"
    )


def _sev(alert: Alert) -> str:
    return f"{alert.severity.label} {alert.score}" + ("" if alert.mode == "live" else f" [{alert.mode}]")


def _section(title: str, lines: list[str], limit: int) -> list[str]:
    out = ["", f"{title} ({len(lines)}):" if lines else f"{title}: none"]
    shown = lines if limit <= 0 else lines[:limit]
    out.extend(shown)
    if len(shown) < len(lines):
        out.append(f"  … and {len(lines) - len(shown)} more (--limit 0 shows all)")
    return out


def render_text(diff: Diff, limit: int = 50) -> str:
    """Counts, a per-rule table, then one entry per changed alert (at most ``limit`` per section)."""
    out = [
        f"A: {diff.a_source} ({diff.a_total} alerts)",
        f"B: {diff.b_source} ({diff.b_total} alerts)",
        f"only A raises: {len(diff.only_a)}  only B raises: {len(diff.only_b)}  "
        f"severity changed: {len(diff.severity_changed)}  score changed, same severity: {len(diff.score_changed)}  "
        f"mode changed: {len(diff.mode_changed)}  unchanged: {diff.unchanged}",
    ]
    if diff.identical:
        out.append("no differences")
        return "\n".join(out)
    rows = diff.by_rule()
    if rows:
        out += ["", f"  {'rule':<26} {'only A':>7} {'only B':>7} {'severity':>9}"]
        for rule_id, counts in rows.items():
            out.append(f"  {rule_id:<26} {counts.get('only_a', 0):>7} {counts.get('only_b', 0):>7} "
                       f"{counts.get('severity', 0):>9}")  # fmt: skip
    out += _section("only A raises", [_line("-", a, _sev(a)) for a in diff.only_a], limit)
    out += _section("only B raises", [_line("+", b, _sev(b)) for b in diff.only_b], limit)
    changed = []
    for a, b in diff.severity_changed:
        arrow = "↑" if b.severity > a.severity else "↓"
        changed.append(_line(arrow, b, f"{_sev(a)} → {_sev(b)}"))
    out += _section("severity changed", changed, limit)
    if diff.score_changed:
        out += _section("score changed, same severity",
                        [_line("~", b, f"{_sev(a)} → {b.score}") for a, b in diff.score_changed], limit)  # fmt: skip
    if diff.mode_changed:
        out += _section("mode changed", [_line("~", b, f"{a.mode} → {b.mode}") for a, b in diff.mode_changed], limit)
    return "\n".join(out)
