"""A rule's options cannot stall the engine or silently switch the rule off: regexes run in linear
time (RE2), a pattern RE2 cannot run is a config error, and durations and numeric bounds are finite,
non-negative, and durations between a second and 400 days. Each refusal names the file, the rule
and the field."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from streams.core.ruleset import ConfigError, RuleSet, build_ruleset
from tests.core.rules.test_kinds import decoded, event, ids, rule, run

RULES, SCORING = "config/rules.yaml", "config/scoring.yaml"


def build(*rules: dict[str, Any], scoring: dict[str, Any] | None = None) -> RuleSet:
    return build_ruleset({"lists": {}, "rules": list(rules)}, scoring or {}, RULES, SCORING, "config")


def threshold(**options: Any) -> dict[str, Any]:
    base = rule("t", "threshold", select={"events": ["export"]}, group_by=["actor.id"], window="1h", at_least=3)
    base.update(options)
    return base


def sequence(**options: Any) -> dict[str, Any]:
    base = rule(
        "s", "sequence", first={"events": ["request"]}, then={"events": ["action"]},
        join=[{"name": "request", "first": "request_id", "then": "request_id"}], within="60s",
    )  # fmt: skip
    base.update(options)
    return base


def absence(**options: Any) -> dict[str, Any]:
    base = rule(
        "a", "absence", first={"events": ["action"]}, then={"events": ["request"]},
        join=[{"name": "request", "first": "request_id", "then": "request_id"}], within="10m",
    )  # fmt: skip
    base.update(options)
    return base


def match(where: dict[str, Any], **options: Any) -> dict[str, Any]:
    return rule("m", "match", select={"events": ["action", "export", "report"], "where": where}, **options)


# -- regexes --------------------------------------------------------------------------------------


def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    """``^(a+)+$`` backtracks 2**35 times on Python's ``re`` against this reason; RE2 answers at once."""
    rs = build(match({"field": "reason", "regex": "^(a+)+$"}, suppress=0))
    evil = event("report.filed", "evil", 0, reason="a" * 35 + "b")
    fine = event("report.filed", "fine", 1, reason="a" * 35)
    started = time.perf_counter()
    _, _, alerts = run(rs, [evil, fine])
    assert time.perf_counter() - started < 2.0  # generous: the backtracking engine takes hours
    assert ids(alerts) == [["fine"]]


def test_a_long_hostile_text_is_matched_quickly() -> None:
    rs = build(match({"field": "reason", "regex": "(x+x+)+y"}, suppress=0))
    raw = event("report.filed", "evil", 0, reason="x" * 1999)
    started = time.perf_counter()
    run(rs, [raw])
    decoded(raw)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        (r"(a)\1", "not supported in linear time (RE2: no backreferences or lookaround): invalid escape sequence"),
        (r"lead-(?=broker)", "not supported in linear time"),
        (r"(?<!x)lead", "not supported in linear time"),
        (r"(?P<x>a)(?P=x)", "not supported in linear time"),
        ("lead-(broker", "invalid regular expression: missing )"),
    ],
)
def test_a_pattern_re2_cannot_run_is_a_config_error(pattern: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(match({"field": "reason", "regex": pattern}))
    assert str(info.value).startswith(f"{RULES}: rule 'm': select.where.regex: ")
    assert fragment in str(info.value)


def test_a_booster_regex_is_checked_the_same_way() -> None:
    scoring = {"boosters": {"odd": {"points": 5, "when": {"field": "reason", "regex": r"(a)\1"}}}}
    with pytest.raises(ConfigError) as info:
        build(match({"field": "reason", "exists": True}), scoring=scoring)
    assert str(info.value).startswith(f"{SCORING}: boosters.odd.when.regex: regular expression not supported")


# -- durations and numeric bounds -----------------------------------------------------------------

BAD_OPTIONS = [
    # (rule, field as shown, fragment)
    (threshold(window=float("inf")), "window", "a duration must be finite"),
    (threshold(window=".inf"), "window", "input should be a duration"),
    (threshold(window="9" * 400 + "d"), "window", "a duration must be at most 400d"),
    (threshold(window="401d"), "window", "a duration must be at most 400d"),
    (threshold(window=0.000001), "window", "a duration must be at least 1s"),
    (threshold(window="500ms"), "window", "a duration must be at least 1s"),
    (threshold(window=0), "window", "greater than 0"),
    (threshold(window=-60), "window", "a duration cannot be negative"),
    (threshold(window=float("nan")), "window", "a duration must be finite"),
    (threshold(at_least=None, above=float("nan")), "above", "finite number"),
    (threshold(at_least=None, above=float("inf")), "above", "finite number"),
    (threshold(at_least=None, above=-1), "above", "greater than or equal to 0"),
    (threshold(at_least=-5), "at_least", "greater than or equal to 0"),
    (threshold(at_least=float("inf")), "at_least", "finite number"),
    (threshold(suppress="1ms"), "suppress", "a duration must be at least 1s"),
    (threshold(suppress=float("inf")), "suppress", "a duration must be finite"),
    (sequence(within=float("inf")), "within", "a duration must be finite"),
    (sequence(within=0.5), "within", "a duration must be at least 1s"),
    (sequence(within="1000w"), "within", "a duration must be at most 400d"),
    (sequence(after_within="61m"), "after_within", "less than or equal to 3600"),
    (sequence(after_within=-1), "after_within", "a duration cannot be negative"),
    (absence(lookback=-1), "lookback", "a duration cannot be negative"),
    (absence(lookback=float("inf")), "lookback", "a duration must be finite"),
    (absence(lookback="0.5s"), "lookback", "a duration must be at least 1s"),
    (match({"field": "record_count", "gt": float("nan")}), "select.where.gt", "finite number"),
    (match({"field": "record_count", "lt": -1}), "select.where.lt", "greater than or equal to 0"),
    (match({"field": "record_count", "gte": float("inf")}), "select.where.gte", "finite number"),
    (match({"field": "actor.created_at", "age_lt": float("inf")}), "select.where.age_lt", "must be finite"),
    (match({"field": "actor.created_at", "age_gt": "1ms"}), "select.where.age_gt", "at least 1s"),
    (match({"field": "record_count", "eq": float("nan")}), "select.where.eq", "finite"),
    (match({"field": "record_count", "in": [1, float("nan")]}), "select.where.in.1", "finite"),
]


@pytest.mark.parametrize(("raw", "field", "fragment"), BAD_OPTIONS, ids=[f"{r['id']}-{f}-{i}" for i, (r, f, _) in
                                                                        enumerate(BAD_OPTIONS)])  # fmt: skip
def test_an_option_that_would_switch_a_rule_off_is_refused(raw: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(copy.deepcopy(raw))
    message = str(info.value)
    assert message.startswith(f"{RULES}: rule '{raw['id']}': {field}: "), message
    assert fragment in message


def test_the_bounds_themselves_are_accepted() -> None:
    rs = build(
        threshold(window="1s", at_least=0, suppress=0),
        sequence(within="400d", suppress="1s", after_within="1h"),
        absence(lookback=0),
        match({"field": "record_count", "gt": 0}),
    )
    assert [r.window for r in rs.rules] == [1.0, 400 * 86400.0, 600.0, 3600.0]


def test_the_bundled_rules_still_load() -> None:
    from streams.config.loader import load_rules

    assert len(load_rules(Path(__file__).resolve().parents[3] / "config").rules) == 11  # with host_reports
