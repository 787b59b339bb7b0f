"""Every rule fixture in config/fixtures, run through the engine with the default rule set.

The same cases run under ``modwatch rules test``; here each case is its own test, so a failure names the
file and the case and prints what the engine raised instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from streams.config.loader import RuleSet, load_rules
from streams.offline.fixtures import Case, fixture_paths, format_result, load_fixture, run_case

CONFIG = Path(__file__).resolve().parents[2] / "config"
PATHS = fixture_paths(CONFIG)
CASES: list[tuple[Path, Case]] = [(path, case) for path in PATHS for case in load_fixture(path).cases]


@functools.cache
def default_rules() -> RuleSet:
    return load_rules(CONFIG)


def test_fixture_files_exist() -> None:
    assert len(PATHS) >= 9
    assert len(CASES) >= 9 * 2


@pytest.mark.parametrize(("path", "case"), CASES, ids=[f"{p.name}: {c.name}" for p, c in CASES])
def test_case(path: Path, case: Case) -> None:
    result = run_case(default_rules(), case, str(path))
    assert result.ok, format_result(result)


def test_every_rule_has_firing_and_quiet_cases() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for _, case in CASES:
        quiet.update(case.expect_none)
        for expect in case.expect:
            if expect.count == 0 or expect.severity_at_most is not None:
                quiet.add(expect.rule)
            else:
                firing.add(expect.rule)
    # observe-mode rules feed metrics and raise no alerts: there is nothing for a fixture to expect.
    enabled = {rule.id for rule in default_rules().rules if rule.config.enabled and rule.config.mode != "observe"}
    assert len(enabled) == 10  # host_reports (severe reports over one host's meetings) is the tenth
    assert sorted(enabled - firing) == [], "rules without a firing case"
    assert sorted(enabled - quiet) == [], "rules without a quiet case"


def test_each_rule_has_its_own_fixture_file() -> None:
    rules_in_files = {load_fixture(path).rule: path.stem for path in PATHS}
    for rule in default_rules().rules:
        if rule.config.mode != "observe":
            assert rules_in_files.get(rule.id) == rule.id
