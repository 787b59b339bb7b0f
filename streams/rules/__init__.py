"""Rule kinds. Importing this package registers every kind in ``RULE_KINDS``."""

from . import absence, cardinality, match, sequence, threshold
from .base import RULE_KINDS, Hit, Role, Rule, RuleConfig

__all__ = [
    "RULE_KINDS", "Hit", "Role", "Rule", "RuleConfig", "absence", "cardinality", "match", "sequence", "threshold",
]
