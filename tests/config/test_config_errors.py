"""What ``rules validate`` finds beyond the shape of the options: field paths the event contract does
not have (with the closest real path suggested), and every problem of a config listed, one line
each, naming the file, the rule and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli.main import main
from streams.core.ruleset import ConfigError, build_ruleset

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ROOT / "streams" / "config" / "defaults"
RULES, SCORING = "config/rules.yaml", "config/scoring.yaml"


def defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    rules = yaml.safe_load((DEFAULTS / "rules.yaml").read_text(encoding="utf-8"))
    scoring = yaml.safe_load((DEFAULTS / "scoring.yaml").read_text(encoding="utf-8"))
    return rules, scoring


def refusal(rules: dict[str, Any], scoring: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_ruleset(rules, scoring, RULES, SCORING, "config")
    return str(info.value).splitlines()


def rule_of(rules: dict[str, Any], rule_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in rules["rules"] if r["id"] == rule_id)
    return found


# Each: a change to one default rule, and the line it must give.
PATH_MISTAKES = [
    ("bulk_export", ["group_by"], ["actor.idd"], "group_by: unknown field 'actor.idd' (did you mean 'actor.id'?)"),
    ("bulk_export", ["select", "where", "not", "field"], "destination.knd",
     "select.where.field: unknown field 'destination.knd' (did you mean 'destination.kind'?)"),
    ("bulk_export", ["field"], "record_cnt", "field: unknown field 'record_cnt' (did you mean 'record_count'?)"),
    ("cross_region_access", ["select", "where", "ne_field"], "system.regoin",
     "select.where.ne_field: unknown field 'system.regoin' (did you mean 'system.region'?)"),
    ("cross_jurisdiction", ["where", "any", 0, "ne_field"], "first.requester.jurisdictoin",
     "where.ne_field: unknown field 'first.requester.jurisdictoin' (did you mean 'first.requester.jurisdiction'?)"),
    ("cross_jurisdiction", ["where", "any", 0, "ne_field"], "first.record_count",
     "where.ne_field: field 'first.record_count' is not in request.received events"),
    ("cross_jurisdiction", ["where", "any", 0, "ne_field"], "first.targets.region",
     "where.ne_field: field 'first.targets.region' is not kept with an event held in state"),
    ("rapid_takedown", ["join", 1, "first"], "targets.idd",
     "join.1.first: unknown field 'targets.idd' (did you mean 'targets.id'?)"),
    ("rapid_takedown", ["join", 1, "then"], "targets.id", "join.1.then: field 'targets.id' is not in"),
    ("unlogged_request", ["first", "where", "field"], "request_idd",
     "first.where.field: unknown field 'request_idd' (did you mean 'request_id'?)"),
    ("fabricated_reports", ["select", "where", "all", 1, "any", 0, "field"], "actor.created",
     "select.where.field: unknown field 'actor.created' (did you mean 'actor.created_at'?)"),
    ("undocumented_action", ["select", "where", "field"], "first.ticket_id",
     "select.where.field: 'first.ticket_id': 'first.' reads the earlier event of a sequence, and there is none"),
    ("takedown_burst", ["summary"], "{count} takedowns of {target.tagz}",
     "summary: {target.tagz}: unknown field 'target.tagz' (did you mean 'target.tags'?)"),
    ("takedown_burst", ["summary"], "{count} takedowns ({latency})",
     "summary: {latency}: unknown field 'latency'"),
    ("rapid_takedown", ["summary"], "{latency} after {first.requester.agencyy}",
     "summary: {first.requester.agencyy}: unknown field 'first.requester.agencyy' (did you mean "
     "'first.requester.agency'?)"),
]  # fmt: skip


@pytest.mark.parametrize(("rule_id", "where", "value", "line"), PATH_MISTAKES,
                         ids=[f"{m[0]}-{'.'.join(map(str, m[1]))}-{m[2]}" for m in PATH_MISTAKES])  # fmt: skip
def test_a_path_the_contract_lacks_is_refused(rule_id: str, where: list[Any], value: Any, line: str) -> None:
    rules, scoring = defaults()
    node: Any = rule_of(rules, rule_id)
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = copy.deepcopy(value)
    lines = refusal(rules, scoring)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{RULES}: rule '{rule_id}': {line}"), lines[0]


def test_a_booster_path_the_contract_lacks_is_refused() -> None:
    rules, scoring = defaults()
    scoring["boosters"]["remote_access"]["when"]["field"] = "remot"
    scoring["boosters"]["confidential_request"]["when"]["field"] = "first.confidental"
    assert refusal(rules, scoring) == [
        f"{SCORING}: boosters.confidential_request.when.field: unknown field 'first.confidental' "
        "(did you mean 'first.confidential'?)",
        f"{SCORING}: boosters.remote_access.when.field: unknown field 'remot' (did you mean 'remote'?)",
    ]


def test_real_paths_of_every_shape_are_accepted() -> None:
    """Nested models, lists of models, a mapping's keys and one of its entries, ``event_type``, facts."""
    rules, scoring = defaults()
    burst = rule_of(rules, "takedown_burst")
    burst["summary"] = "{count} {group} {window} {score} {severity} {target.tags} {event_type} {actor.created_at}"
    export = rule_of(rules, "bulk_export")
    export["select"]["where"] = {"all": [{"field": "subject_regions.US", "gt": 0},
                                         {"field": "subject_regions.@keys", "ne_field": "destination.region"}]}
    rules["rules"].append({
        "id": "many_targets", "kind": "match", "title": "t", "score": {"base": 10},
        "summary": "{targets.id} {requester.agency} {deadline_seconds} {confidential}",
        "select": {"events": ["request"], "where": {"field": "targets.tags", "in": ["political"]}},
    })  # fmt: skip
    # the 11 default rules (host_reports among them) and many_targets
    assert len(build_ruleset(rules, scoring, RULES, SCORING, "config").rules) == 12


def test_every_problem_is_listed_on_its_own_line() -> None:
    """Was: ``window: Field required (and 1 more)``."""
    rules, scoring = defaults()
    export = rule_of(rules, "bulk_export")
    del export["window"]
    export["above"] = float("nan")
    export["group_by"] = ["actor.idd"]
    rule_of(rules, "rapid_takedown")["within"] = "1ms"
    rule_of(rules, "fabricated_reports")["select"]["where"]["all"][0] = {"field": "reason", "regex": "(?=x)"}
    scoring["bands"]["low"] = -1
    assert refusal(rules, scoring) == [
        f"{SCORING}: bands.low: Input should be greater than or equal to 0",
        f"{RULES}: rule 'rapid_takedown': within: a duration must be at least 1s (or 0)",
        f"{RULES}: rule 'bulk_export': window: Field required",
        f"{RULES}: rule 'bulk_export': above: Input should be a finite number",
        f"{RULES}: rule 'fabricated_reports': select.where.0.regex: regular expression not supported in linear time "
        "(RE2: no backreferences or lookaround): invalid perl operator: (?=",
    ]


def test_a_valid_rule_with_a_bad_path_beside_a_bad_option_lists_both() -> None:
    rules, scoring = defaults()
    rule_of(rules, "bulk_export")["group_by"] = ["actor.idd"]
    rule_of(rules, "undocumented_action")["suppress"] = float("inf")
    assert refusal(rules, scoring) == [
        f"{RULES}: rule 'bulk_export': group_by: unknown field 'actor.idd' (did you mean 'actor.id'?)",
        f"{RULES}: rule 'undocumented_action': suppress: a duration must be finite",
    ]


def test_validate_prints_every_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, scoring = defaults()
    export = rule_of(rules, "bulk_export")
    del export["window"]
    export["above"] = -5
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    (tmp_path / "scoring.yaml").write_text(yaml.safe_dump(scoring), encoding="utf-8")
    assert main(["rules", "validate", "--config", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    path = tmp_path / "rules.yaml"
    assert err.splitlines() == [
        f"modwatch: {path}: rule 'bulk_export': window: Field required",
        f"{path}: rule 'bulk_export': above: Input should be greater than or equal to 0",
    ]


def test_the_bundled_rules_and_fixtures_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate", "--config", str(ROOT / "config")]) == 0
    assert main(["rules", "test", "--config", str(ROOT / "config")]) == 0
