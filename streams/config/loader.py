"""Loading the rule set from a directory: ``rules.yaml`` (named lists and rules) and ``scoring.yaml``
(bands, boosters). The files are read and parsed here; ``streams.core.ruleset`` compiles them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streams.core.ruleset import ConfigError, RuleSet, build_ruleset

__all__ = ["RULES_FILE", "SCORING_FILE", "ConfigError", "RuleSet", "load_rules"]

RULES_FILE = "rules.yaml"
SCORING_FILE = "scoring.yaml"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def load_rules(config_dir: str | Path) -> RuleSet:
    """Load and compile every rule in ``config_dir``; raise ConfigError on the first problem."""
    base = Path(config_dir)
    if not base.is_dir():
        raise ConfigError(f"{base}: no such config directory")
    rules_path, scoring_path = base / RULES_FILE, base / SCORING_FILE
    raw = _read_yaml(rules_path)
    scoring_raw = _read_yaml(scoring_path) if scoring_path.exists() else {}
    return build_ruleset(raw, scoring_raw, str(rules_path), str(scoring_path), str(base))
