"""Rule kinds. Importing this package registers every kind in ``RULE_KINDS``."""

from streams.core.rules import absence, cardinality, match, sequence, threshold
from streams.core.rules.base import RULE_KINDS, Hit, Role, Rule, RuleConfig

__all__ = [
    "RULE_KINDS", "Hit", "Role", "Rule", "RuleConfig", "absence", "cardinality", "match", "sequence", "threshold",
]
