"""Rule fixtures: small event logs with the alerts they must and must not produce.

A fixture file (``config/fixtures/<rule>.yaml``) holds cases::

    rule: rapid_takedown            # the rule the file is about (documentation; cases may check any)
    cases:
      - name: liaison shuts a meeting down 30 s after an MSS request
        events: [{...event...}, ...]         # the contract's JSON, written as YAML
        expect:                               # each must match a distinct alert
          - {rule: rapid_takedown, severity_at_least: critical, event_ids: [r1, a1]}
        expect_none: [cross_region_access]    # rules that must raise nothing in this case

An ``expect`` entry may give ``rule`` (required), ``severity`` / ``severity_at_least`` /
``severity_at_most``, ``event_ids`` (must all be among the alert's), ``signals`` (must all apply),
``count`` (how many alerts of that rule, default: at least one). ``expect_none`` lists rule ids.
The runner is shared by the test suite and ``modwatch rules test``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.config.loader import read_yaml_file
from streams.core.alerts import Alert
from streams.core.decode import Decoded, decode
from streams.core.engine import Engine, Replay
from streams.core.ruleset import ConfigError, RuleSet
from streams.core.scoring import Severity

FIXTURE_DIR = "fixtures"


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    severity: str | None = None
    severity_at_least: str | None = None
    severity_at_most: str | None = None
    event_ids: list[str] = Field(default_factory=list)
    signals: list[str] = Field(default_factory=list)
    count: int | None = Field(default=None, ge=0)

    def problems(self, alert: Alert) -> list[str]:
        out = []
        sev = alert.severity
        if self.severity and sev != Severity.parse(self.severity):
            out.append(f"severity {sev.label}, expected {self.severity}")
        if self.severity_at_least and sev < Severity.parse(self.severity_at_least):
            out.append(f"severity {sev.label} (score {alert.score}), expected at least {self.severity_at_least}")
        if self.severity_at_most and sev > Severity.parse(self.severity_at_most):
            out.append(f"severity {sev.label} (score {alert.score}), expected at most {self.severity_at_most}")
        missing = [e for e in self.event_ids if e not in alert.event_ids]
        if missing:
            out.append(f"event_ids {alert.event_ids} lack {missing}")
        absent = [s for s in self.signals if s not in alert.signals]
        if absent:
            out.append(f"signals {alert.signals} lack {absent}")
        return out


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    events: list[dict[str, Any]] = Field(min_length=1)
    expect: list[Expect] = Field(default_factory=list)
    expect_none: list[str] = Field(default_factory=list)


class FixtureFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    file: str
    case: str
    failures: list[str] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def title(self) -> str:
        return f"{self.file}: {self.case}"


def fixture_paths(config_dir: str | Path, paths: list[str] | None = None) -> list[Path]:
    if paths:
        found: list[Path] = []
        for name in paths:
            path = Path(name)
            found.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
        return found
    return sorted((Path(config_dir) / FIXTURE_DIR).glob("*.yaml"))


def load_fixture(path: Path) -> FixtureFile:
    raw = read_yaml_file(path, "fixture file")  # the rules' limits: regular file, size, aliases
    try:
        return FixtureFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None


def run_case(ruleset: RuleSet, case: Case, file: str = "") -> CaseResult:
    result = CaseResult(file, case.name)
    replay = Replay(Engine(ruleset))
    for index, event in enumerate(case.events):
        out = decode(json.dumps(event, default=str).encode(), now=float("inf"))
        if not isinstance(out, Decoded):
            result.failures.append(f"event #{index + 1} is invalid: {out.reason}: {out.detail}")
            continue
        result.alerts.extend(replay.feed(out))
    known = {rule.id for rule in ruleset.rules}
    for rule_id in [e.rule for e in case.expect] + case.expect_none:
        if rule_id not in known:
            result.failures.append(f"no rule {rule_id!r} in the rule set")
    used: set[str] = set()
    for expect in case.expect:
        candidates = [a for a in result.alerts if a.rule_id == expect.rule]
        if expect.count is not None and len(candidates) != expect.count:
            result.failures.append(f"expected {expect.count} {expect.rule} alert(s), got {len(candidates)}")
            continue
        if expect.count == 0:
            continue
        fitting = [a for a in candidates if a.alert_id not in used and not expect.problems(a)]
        if fitting:
            used.add(fitting[0].alert_id)
        elif candidates:
            why = "; ".join(expect.problems(candidates[0]))
            result.failures.append(f"{expect.rule}: alert {candidates[0].alert_id} does not fit: {why}")
        else:
            result.failures.append(f"{expect.rule}: expected an alert, got none")
    for rule_id in case.expect_none:
        unwanted = [a for a in result.alerts if a.rule_id == rule_id]
        for alert in unwanted:
            result.failures.append(f"{rule_id}: unexpected {alert.severity.label} alert: {alert.summary}")
    return result


def run_fixtures(ruleset: RuleSet, paths: list[Path]) -> list[CaseResult]:
    results: list[CaseResult] = []
    for path in paths:
        fixture = load_fixture(path)
        results.extend(run_case(ruleset, case, str(path)) for case in fixture.cases)
    return results


def format_result(result: CaseResult) -> str:
    if result.ok:
        return f"PASS {result.title}"
    lines = [f"FAIL {result.title}"]
    lines.extend(f"  - {failure}" for failure in result.failures)
    if result.alerts:
        lines.append("  alerts raised:")
        lines.extend(
            f"    {a.rule_id} {a.severity.label} score={a.score} events={a.event_ids} signals={a.signals}"
            for a in result.alerts
        )
    else:
        lines.append("  alerts raised: none")
    return "\n".join(lines)
