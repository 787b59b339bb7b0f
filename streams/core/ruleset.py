"""A rule set built from its parsed configuration: named lists, rules and scoring, compiled.

Pure: it takes the mappings a loader parsed (``streams.config.loader`` reads the YAML files) and the
names to show in errors. All or nothing: any error raises one ConfigError naming the file, the rule
and the field, e.g. ``config/rules.yaml: rule 'bulk_export': window: input should be a duration``.
A half-built rule set never runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from streams.core.rules import RULE_KINDS, Rule, RuleConfig
from streams.core.rules.predicate import UnknownListError, referenced_lists
from streams.core.scoring import Scorer, ScoringConfig


class ConfigError(Exception):
    """A configuration problem; the message is meant to be shown as is."""


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    scorer: Scorer
    lists: dict[str, list[str]]
    source: str

    def get(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(f"no rule {rule_id!r} in {self.source}")


def format_error(error: ValidationError, skip: int = 0) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in first["loc"]][skip:]
    # Union branch tags (rule kinds, predicate shapes) clutter the path: drop them.
    loc = [p for p in loc if p not in RULE_KINDS and p not in ("all", "any", "not", "condition")]
    path = ".".join(loc) or "(rule)"
    message = first["msg"].removeprefix("Value error, ")
    more = error.error_count() - 1
    return f"{path}: {message}" + (f" (and {more} more)" if more > 0 else "")


def _rule_adapter() -> TypeAdapter[Any]:
    models = tuple(cls.config_model for cls in RULE_KINDS.values())
    union = Annotated[Union[models], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(union)


def build_ruleset(raw: Any, scoring_raw: Any, rules_path: str, scoring_path: str, source: str) -> RuleSet:
    """Compile parsed ``rules.yaml`` (``raw``) and ``scoring.yaml`` (``scoring_raw``, None when absent);
    ``rules_path`` and ``scoring_path`` name them in errors, ``source`` names the rule set."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{rules_path}: expected a mapping with 'rules' (and optionally 'lists')")
    unknown = set(raw) - {"lists", "rules"}
    if unknown:
        raise ConfigError(f"{rules_path}: unknown top-level key {sorted(unknown)[0]!r} (expected lists, rules)")
    lists = _load_lists(rules_path, raw.get("lists") or {})

    try:
        scoring = ScoringConfig.model_validate(scoring_raw or {})
    except ValidationError as exc:
        raise ConfigError(f"{scoring_path}: {format_error(exc)}") from None
    try:
        scorer = Scorer(scoring, lists)
    except UnknownListError as exc:
        raise ConfigError(f"{scoring_path}: {exc}") from None

    entries = raw.get("rules")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{rules_path}: 'rules' must be a non-empty list")
    adapter = _rule_adapter()
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = entry.get("id") if isinstance(entry, dict) else None
        label = f"rule {name!r}" if isinstance(name, str) else f"rule #{index + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{rules_path}: {label}: expected a mapping")
        if entry.get("kind") not in RULE_KINDS:
            kinds = ", ".join(sorted(RULE_KINDS))
            raise ConfigError(f"{rules_path}: {label}: kind: expected one of {kinds}, got {entry.get('kind')!r}")
        try:
            config: RuleConfig = adapter.validate_python(entry)
        except ValidationError as exc:
            raise ConfigError(f"{rules_path}: {label}: {format_error(exc)}") from None
        if config.id in seen:
            raise ConfigError(f"{rules_path}: {label}: id: duplicate rule id")
        seen.add(config.id)
        missing = sorted(_lists_used(config) - set(lists))
        if missing:
            raise ConfigError(f"{rules_path}: {label}: unknown list '${missing[0]}'")
        if not config.enabled:
            continue
        try:
            rule = RULE_KINDS[config.kind](config, lists)
        except (ValueError, UnknownListError) as exc:
            raise ConfigError(f"{rules_path}: {label}: {exc}") from None
        try:
            scorer.bind(rule)
        except ValueError as exc:
            raise ConfigError(f"{rules_path}: {label}: score.boosters: {exc}") from None
        rules.append(rule)
    return RuleSet(tuple(rules), scorer, lists, source)


def _load_lists(path: str, raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: lists: expected a mapping of name to list of strings")
    out: dict[str, list[str]] = {}
    for name, values in raw.items():
        if not isinstance(values, list) or not all(isinstance(v, str | int) for v in values):
            raise ConfigError(f"{path}: lists: {name}: expected a list of strings")
        out[str(name)] = [str(v) for v in values]
    return out


def _lists_used(config: RuleConfig) -> set[str]:
    found: set[str] = set()
    for attr in ("select", "first", "then"):
        selector = getattr(config, attr, None)
        if selector is not None:
            found |= referenced_lists(selector.where)
    found |= referenced_lists(getattr(config, "where", None))
    for key in getattr(config, "group_by", []) or []:
        value = getattr(key, "in_", None)
        if isinstance(value, str) and value.startswith("$"):
            found.add(value[1:])
    return found
