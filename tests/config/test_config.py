"""Loading the rule set: the default config, and one-failure configs whose errors must name the file,
the rule and the field. Each directory in tests/config/bad_configs holds one mistake; the first line
of its rules.yaml says which message fragment the error must contain (``# expect: ...``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.main import main
from streams.config.loader import ConfigError, load_rules

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
BAD = sorted(
    p for p in (Path(__file__).resolve().parent / "bad_configs").iterdir() if p.is_dir()
)
DEFAULT_RULES = {
    "rapid_takedown",
    "cross_jurisdiction",
    "bulk_export",
    "cumulative_exfiltration",
    "undocumented_action",
    "cross_region_access",
    "fabricated_reports",
    "host_reports",
    "takedown_burst",
    "unlogged_request",
}


def expected_fragment(config_dir: Path) -> str:
    first = (config_dir / "rules.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{config_dir}: first line must be '# expect: <fragment>'"
    return first.removeprefix("# expect: ")


def test_there_is_a_bad_config_per_mistake() -> None:
    assert {p.name for p in BAD} >= {
        "bad_duration",
        "unknown_key",
        "unknown_kind",
        "missing_field",
        "duplicate_id",
        "unknown_list",
        "two_operators",
        "bad_regex",
        "unknown_booster",
        "invalid_yaml",
        "both_bounds",
        "unknown_event_type",
        "unknown_field_path",
        "unknown_summary_field",
        "field_of_another_event",
        "backreference_regex",
        "infinite_window",
        "tiny_window",
        "nan_bound",
        "negative_bound",
    }


@pytest.mark.parametrize("config_dir", BAD, ids=[p.name for p in BAD])
def test_bad_config_is_refused_with_a_precise_message(config_dir: Path) -> None:
    fragment = expected_fragment(config_dir)
    with pytest.raises(ConfigError) as info:
        load_rules(config_dir)
    message = str(info.value)
    assert message.startswith(f"{config_dir / 'rules.yaml'}: ")
    assert fragment in message
    assert "\n" not in message


def test_default_config_loads() -> None:
    rules = load_rules(CONFIG)
    alerting = [rule for rule in rules.rules if rule.config.mode != "observe"]
    assert len(alerting) == 10
    assert {rule.id for rule in alerting} == DEFAULT_RULES
    assert [rule.id for rule in rules.rules if rule.config.mode == "observe"] == ["request_latency"]
    assert {rule.kind for rule in rules.rules} == {"sequence", "threshold", "cardinality", "match", "absence"}
    assert rules.get("bulk_export").window == 86400.0
    assert set(rules.lists) == {"sensitive_tags", "personal_fields", "severe_categories"}
    with pytest.raises(KeyError):
        rules.get("no_such_rule")


def test_missing_config_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config directory"):
        load_rules(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"rules\.yaml: no such file"):
        load_rules(tmp_path)


def test_validate_accepts_the_default_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate", "--config", str(CONFIG)]) == 0
    out, err = capsys.readouterr()
    assert "11 rules OK (10 live, 0 shadow, 1 observe)" in out  # host_reports the tenth live rule
    assert err == ""


@pytest.mark.parametrize("name", ["bad_duration", "unknown_kind", "invalid_yaml"])
def test_validate_refuses_a_bad_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    config_dir = next(p for p in BAD if p.name == name)
    assert main(["rules", "validate", "--config", str(config_dir)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"modwatch: {config_dir / 'rules.yaml'}: ")
    assert expected_fragment(config_dir) in err
