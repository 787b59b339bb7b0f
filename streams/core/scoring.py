"""Signals -> score -> severity.

A rule gives a base score; boosters are named predicates over the incident (the completing event,
and under ``first.`` the earlier event of a pair) that add or subtract points. Severity comes from
configurable bands over the clamped 0-100 score. A rule may list which boosters it considers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.core.rules.base import Hit, Rule
from streams.core.rules.predicate import Context, Predicate, Test, compile_predicate


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (info, low, medium, high, critical)") from None


class Bands(BaseModel):
    """The lowest score of each severity; below ``low`` is info."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: int = Field(default=20, ge=0, le=100)
    medium: int = Field(default=40, ge=0, le=100)
    high: int = Field(default=60, ge=0, le=100)
    critical: int = Field(default=80, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        if not self.low <= self.medium <= self.high <= self.critical:
            raise ValueError("bands must increase: low <= medium <= high <= critical")
        return self

    def severity(self, score: int) -> Severity:
        if score >= self.critical:
            return Severity.CRITICAL
        if score >= self.high:
            return Severity.HIGH
        if score >= self.medium:
            return Severity.MEDIUM
        if score >= self.low:
            return Severity.LOW
        return Severity.INFO

    def floor(self, severity: Severity) -> int:
        """The lowest score of ``severity``'s band."""
        return {Severity.INFO: 0, Severity.LOW: self.low, Severity.MEDIUM: self.medium, Severity.HIGH: self.high,
                Severity.CRITICAL: self.critical}[severity]  # fmt: skip


class BoosterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    points: int = Field(ge=-100, le=100)
    description: str = ""
    when: Predicate


class ScoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bands: Bands = Bands()
    boosters: dict[str, BoosterConfig] = Field(default_factory=dict)
    #: Severity of the integrity alert for an event id reused with other content (``event_id_conflict``).
    id_conflict_severity: Literal["info", "low", "medium", "high", "critical"] = "high"


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    points: int


@dataclass(frozen=True, slots=True)
class Score:
    base: int
    signals: tuple[Signal, ...]
    value: int
    severity: Severity


class Scorer:
    def __init__(self, config: ScoringConfig, lists: dict[str, list[str]]) -> None:
        self.bands = config.bands
        self.integrity_severity = Severity.parse(config.id_conflict_severity)
        self.boosters: dict[str, tuple[int, Test]] = {
            name: (b.points, compile_predicate(b.when, lists)) for name, b in config.boosters.items()
        }
        self._per_rule: dict[str, list[tuple[str, int, Test]]] = {}

    def bind(self, rule: Rule) -> None:
        """Called once per rule at load time: resolve which boosters it considers."""
        wanted: list[str] | Literal["all"] = rule.config.score.boosters
        names = list(self.boosters) if wanted == "all" else wanted
        unknown = [n for n in names if n not in self.boosters]
        if unknown:
            raise ValueError(f"unknown booster {unknown[0]!r} (defined: {', '.join(self.boosters) or 'none'})")
        self._per_rule[rule.id] = [(n, *self.boosters[n]) for n in names]

    def score(self, rule: Rule, hit: Hit) -> Score:
        ctx = Context(hit.view, hit.ts, first=hit.first)
        signals = tuple(Signal(name, points) for name, points, test in self._per_rule[rule.id] if test(ctx))
        base = rule.config.score.base
        value = max(0, min(100, base + sum(s.points for s in signals)))
        return Score(base, signals, value, self.bands.severity(value))
