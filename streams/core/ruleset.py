"""A rule set built from its parsed configuration: named lists, rules and scoring, compiled.

Pure: it takes the mappings a loader parsed (``streams.config.loader`` reads the YAML files) and the
names to show in errors. All or nothing: any error raises one ConfigError with every problem found,
one per line, each naming the file, the rule and the field, e.g. ``config/rules.yaml: rule
'bulk_export': window: input should be a duration``. A half-built rule set never runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from streams.core.contract_paths import booster_path_problems, rule_path_problems
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


def format_errors(error: ValidationError) -> list[str]:
    """Every problem pydantic found, as ``field: message`` lines, one per field."""
    by_path: dict[str, tuple[str, str]] = {}
    for item in error.errors(include_url=False, include_input=False):
        # Union branch tags (rule kinds, predicate shapes, the types a value may take) clutter the path.
        loc = [str(p) for p in item["loc"]]
        loc = [p for p in loc if p not in RULE_KINDS and p not in _TAGS and "[" not in p]
        path = ".".join(loc) or "(rule)"
        message = item["msg"].removeprefix("Value error, ")
        # When a value fits none of the types a field takes, say why it fails the one it is closest
        # to (our own check), not that it is not each of the others.
        if path not in by_path or (by_path[path][0].endswith("_type") and not item["type"].endswith("_type")):
            by_path[path] = (item["type"], message)
    # Likewise a value that is not a string because it is a list with a bad item: report the item.
    return [
        f"{path}: {message}"
        for path, (kind, message) in by_path.items()
        if not (kind.endswith("_type") and any(other.startswith(path + ".") for other in by_path))
    ]


def format_error(error: ValidationError) -> str:
    """The problems pydantic found as lines (``format_errors``) in one text."""
    return "\n".join(format_errors(error))


_TAGS = frozenset({"all", "any", "not", "condition", "str", "int", "float", "bool", "GroupKey"})


def _rule_adapter() -> TypeAdapter[Any]:
    models = tuple(cls.config_model for cls in RULE_KINDS.values())
    union = Annotated[Union[models], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(union)


def build_ruleset(raw: Any, scoring_raw: Any, rules_path: str, scoring_path: str, source: str) -> RuleSet:
    """Compile parsed ``rules.yaml`` (``raw``) and ``scoring.yaml`` (``scoring_raw``, None when absent);
    ``rules_path`` and ``scoring_path`` name them in errors, ``source`` names the rule set. Every
    problem found is reported, one per line (file, rule, field), in one ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{rules_path}: expected a mapping with 'rules' (and optionally 'lists')")
    unknown = set(raw) - {"lists", "rules"}
    if unknown:
        raise ConfigError(f"{rules_path}: unknown top-level key {sorted(unknown)[0]!r} (expected lists, rules)")
    lists = _load_lists(rules_path, raw.get("lists") or {})
    errors: list[str] = []

    scorer: Scorer | None = None
    try:
        scoring = ScoringConfig.model_validate(scoring_raw or {})
    except ValidationError as exc:
        errors += [f"{scoring_path}: {line}" for line in format_errors(exc)]
    else:
        errors += [f"{scoring_path}: {line}" for line in booster_path_problems(scoring)]
        try:
            scorer = Scorer(scoring, lists)
        except UnknownListError as exc:
            errors.append(f"{scoring_path}: {exc}")

    entries = raw.get("rules")
    if not isinstance(entries, list) or not entries:
        errors.append(f"{rules_path}: 'rules' must be a non-empty list")
        raise ConfigError("\n".join(errors))
    adapter = _rule_adapter()
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = entry.get("id") if isinstance(entry, dict) else None
        label = f"{rules_path}: " + (f"rule {name!r}" if isinstance(name, str) else f"rule #{index + 1}")
        if not isinstance(entry, dict):
            errors.append(f"{label}: expected a mapping")
            continue
        if entry.get("kind") not in RULE_KINDS:
            kinds = ", ".join(sorted(RULE_KINDS))
            errors.append(f"{label}: kind: expected one of {kinds}, got {entry.get('kind')!r}")
            continue
        try:
            config: RuleConfig = adapter.validate_python(entry)
        except ValidationError as exc:
            errors += [f"{label}: {line}" for line in format_errors(exc)]
            continue
        problems: list[str] = []
        if config.id in seen:
            problems.append("id: duplicate rule id")
        seen.add(config.id)
        problems += [f"unknown list '${name}'" for name in sorted(_lists_used(config) - set(lists))]
        problems += rule_path_problems(config, RULE_KINDS[config.kind].facts)
        if problems or not config.enabled:
            errors += [f"{label}: {line}" for line in problems]
            continue
        try:
            rule = RULE_KINDS[config.kind](config, lists)
        except (ValueError, UnknownListError) as exc:
            errors.append(f"{label}: {exc}")
            continue
        if scorer is not None:
            try:
                scorer.bind(rule)
            except ValueError as exc:
                errors.append(f"{label}: score.boosters: {exc}")
        rules.append(rule)
    if errors:
        raise ConfigError("\n".join(errors))
    assert scorer is not None  # no errors: the scoring compiled
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
