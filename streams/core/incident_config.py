"""What ``incidents.yaml`` holds, validated: the risk objects (which parties of an alert accumulate
risk, with what weight) and the incident rules (when a risk object's alerts open an incident, and
how long an incident stays open without a new alert).

Pure: ``build_incidents_config`` takes the mapping a loader parsed (``streams.config.loader`` reads
the file) and the file's name for errors. All or nothing, like the rule set: every problem found is
reported in one ConfigError, one per line, each naming the file, the item and the field, e.g.
``config/incidents.yaml: rule 'accumulated_risk': window: input should be a duration``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.core.alerts import SUBJECT_PATHS
from streams.core.rules.duration import Duration
from streams.core.ruleset import ConfigError, format_errors
from streams.core.scoring import Severity

#: The alert fields a risk object may be made of: the actor, and the parties in ``Alert.subjects``.
RISK_FIELDS = ("actor_id", *SUBJECT_PATHS)

SeverityName = Literal["info", "low", "medium", "high", "critical"]


class RiskObject(BaseModel):
    """A party alerts accumulate risk on: ``fields`` name its value (joined with `` / `` when several:
    the requester is its agency and jurisdiction); an alert lacking one of them does not concern it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    fields: list[Literal["actor_id", "target.owner_id", "requester.agency", "requester.jurisdiction",
                         "request_id", "grantee.id"]] = Field(min_length=1)  # fmt: skip
    weight: float = Field(gt=0, le=10)  # an alert adds its score times this


class IncidentRule(BaseModel):
    """When a risk object's alerts open an incident; the first rule (in file order) that holds opens it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    objects: list[str] | None = None  # risk object kinds it applies to (default: all)
    window: Duration = 86400.0  # the alerts within this much event time count together
    quiet: Duration = 6 * 3600.0  # an incident closes this long after its last alert
    risk_at_least: float | None = Field(default=None, gt=0)  # accumulated weighted score
    distinct_rules: int | None = Field(default=None, ge=2, le=20)  # alerts of this many rules
    severity_at_least: SeverityName | None = None  # any single alert this severe
    severity: SeverityName = "high"  # the least severity of an incident this rule opens

    @model_validator(mode="after")
    def _has_condition(self) -> IncidentRule:
        if self.risk_at_least is None and self.distinct_rules is None and self.severity_at_least is None:
            raise ValueError("give at least one of risk_at_least, distinct_rules, severity_at_least")
        return self


class RiskBands(BaseModel):
    """An incident's severity rises to ``high`` or ``critical`` once its accumulated risk reaches these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high: float = Field(default=150, gt=0)
    critical: float = Field(default=300, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RiskBands:
        if self.high > self.critical:
            raise ValueError("high must not be above critical")
        return self

    def severity(self, risk: float) -> Severity:
        return Severity.CRITICAL if risk >= self.critical else Severity.HIGH if risk >= self.high else Severity.INFO


class IncidentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    risk_objects: list[RiskObject] = Field(min_length=1)
    rules: list[IncidentRule] = Field(min_length=1)
    min_severity: SeverityName = "low"  # alerts below this add no risk
    # max: within a window each rule adds its highest alert's weighted score, so risk accumulates across
    # rules and a rule repeating itself adds nothing more (its own threshold is for that); sum: every alert.
    risk_per_rule: Literal["max", "sum"] = "max"
    paging_severity: SeverityName = "high"  # incidents (and page: always alerts) at or above it page
    risk_severity: RiskBands = RiskBands()
    max_alerts: int = Field(default=50, ge=1, le=1000)  # alert ids kept per risk object and incident
    top_rules: int = Field(default=5, ge=1, le=20)  # rule ids an incident lists, by risk

    def rules_for(self, kind: str) -> list[IncidentRule]:
        return [rule for rule in self.rules if rule.objects is None or kind in rule.objects]


_ITEMS = {"risk_objects": ("risk object", "kind"), "rules": ("rule", "id")}


def build_incidents_config(raw: Any, path: str) -> IncidentsConfig:
    """Validate parsed ``incidents.yaml``; raise ConfigError naming ``path``, the item and the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'risk_objects' and 'rules'")
    errors: list[str] = []
    for name, (label, key) in _ITEMS.items():
        items = raw.get(name)
        if not isinstance(items, list):
            continue
        model = RiskObject if name == "risk_objects" else IncidentRule
        for index, item in enumerate(items):
            ident = item.get(key) if isinstance(item, dict) else None
            where = f"{path}: {label} " + (repr(ident) if isinstance(ident, str) else f"#{index + 1}")
            if not isinstance(item, dict):
                errors.append(f"{where}: expected a mapping")
                continue
            try:
                model.model_validate(item)
            except ValidationError as exc:
                errors += [f"{where}: {line}" for line in format_errors(exc)]
    if errors:
        raise ConfigError("\n".join(errors))
    try:
        config = IncidentsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in format_errors(exc))) from None
    errors += _cross_checks(config, path)
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def _cross_checks(config: IncidentsConfig, path: str) -> list[str]:
    errors = []
    kinds = [o.kind for o in config.risk_objects]
    for kind in sorted({k for k in kinds if kinds.count(k) > 1}):
        errors.append(f"{path}: risk object {kind!r}: kind: duplicate risk object kind")
    ids = [r.id for r in config.rules]
    for rule_id in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"{path}: rule {rule_id!r}: id: duplicate rule id")
    for rule in config.rules:
        for kind in rule.objects or ():
            if kind not in kinds:
                errors.append(f"{path}: rule {rule.id!r}: objects: unknown risk object kind {kind!r} "
                              f"(defined: {', '.join(kinds)})")  # fmt: skip
    for obj in config.risk_objects:
        if not config.rules_for(obj.kind):
            errors.append(f"{path}: risk object {obj.kind!r}: kind: no rule applies to it")
    return errors
