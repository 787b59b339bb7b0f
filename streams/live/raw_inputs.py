"""Raw sources in the live worker: records of the raw topics (``settings.inputs``) -> contract events.

Each record is what ``modwatch replay --input`` or ``modwatch receive zoom`` stored: one JSON value
(an array gives one record per item; a CSV source's row is stored as a JSON object). It is mapped
by its input's mapping and enriched with the context tables exactly as ``normalize`` and
``backtest --input`` do (``streams.inputs``: ``Mapping.map`` then ``enrich_mapped``), so the worker
sees the events a backtest of the same raw logs sees. ``Normalizer`` holds no Kafka or Faust
objects; the ``Router`` (``streams.live.pipeline``) routes what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from streams.config.settings import Settings
from streams.core.decode import INVALID_JSON, INVALID_UTF8, TOO_LARGE, Limits, Rejected
from streams.core.ruleset import ConfigError
from streams.inputs import Dropped, Mapped, Mapping, load_mappings, resolve_inputs_dir
from streams.inputs.context import Context, ContextStats, enrich_mapped
from streams.inputs.mapping import REASONS, Outcome
from streams.outputs.metrics import Health, InputStats

NO_CONTEXT = Context()


@dataclass(frozen=True)
class RawInput:
    name: str  # the input id: the mapping id, written in the provenance as backtest --input NAME does
    topic: str
    mapping: Mapping


def resolve_raw_inputs(settings: Settings) -> list[RawInput]:
    """The ``inputs`` setting against the mappings (``inputs_dir``, else ./config/inputs, else the
    bundled ones). An unknown mapping is a ConfigError naming the setting and the known ids."""
    if not settings.inputs:
        return []
    mappings = load_mappings(resolve_inputs_dir(settings.inputs_dir))
    out = []
    for index, item in enumerate(settings.inputs):
        mapping = mappings.get(item.mapping)
        if mapping is None:
            raise ConfigError(f"settings: inputs.{index}.mapping: no input mapping {item.mapping!r} "
                              f"(have: {', '.join(sorted(mappings))})")  # fmt: skip
        out.append(RawInput(item.mapping, item.topic_name(), mapping))
    return out


def known_actions(mapping: Mapping) -> tuple[str, ...]:
    """The source actions a mapping names (mapped, or in a ``drop_when``): the bounded label values."""
    named = list(mapping.spec.actions)
    for condition in mapping.spec.drop_when:
        named.extend(condition.actions or ())
    return tuple(dict.fromkeys(named))


class Normalizer:
    """Maps and enriches the records of the raw topics, counting per input in ``health.inputs``."""

    def __init__(self, inputs: Iterable[RawInput], limits: Limits, context: Callable[[], Context] | None = None,
                 health: Health | None = None) -> None:  # fmt: skip
        self.by_topic = {item.topic: item for item in inputs}
        self.limits = limits
        self.context = context or (lambda: NO_CONTEXT)
        self.health = health or Health()
        self.stats: dict[str, InputStats] = {}
        self._context_stats: dict[str, ContextStats] = {}
        for item in self.by_topic.values():
            stats = InputStats(actions=known_actions(item.mapping), reasons=REASONS)
            self.health.inputs[item.name] = self.stats[item.name] = stats
            self._context_stats[item.name] = ContextStats(misses=stats.context_misses)

    @property
    def topics(self) -> list[str]:
        return sorted(self.by_topic)

    def input_of(self, topic: str) -> RawInput | None:
        return self.by_topic.get(topic)

    def normalize(self, item: RawInput, value: bytes) -> list[Outcome]:
        """Every outcome of one raw record, in order: ``Mapped`` (enriched, decoded again),
        ``Dropped`` (counted here) or ``Rejected`` (counted here; the caller dead-letters it)."""
        stats = self.stats[item.name]
        outcomes: list[Outcome] = []
        for record in self._records(value):
            if isinstance(record, Rejected):
                outcomes.append(record)
                continue
            outcomes.extend(item.mapping.map(record, item.name, self.limits))
        ctx = self.context()
        out: list[Outcome] = []
        for outcome in outcomes:
            if isinstance(outcome, Mapped):
                outcome = enrich_mapped(outcome, ctx, self._context_stats[item.name], self.limits)
                stats.normalized += 1
            elif isinstance(outcome, Dropped):
                stats.dropped[stats.action_label(outcome.action)] += 1
            else:
                stats.rejected[outcome.reason] += 1
            out.append(outcome)
        return out

    def _records(self, value: bytes) -> list[object]:
        """The raw records of a stored value, as ``streams.inputs.reader`` reads a JSON line."""
        if len(value) > self.limits.max_bytes:
            return [Rejected(TOO_LARGE, f"record over the limit of {self.limits.max_bytes} bytes")]
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            reason = INVALID_UTF8 if "utf-8" in str(exc).lower() else INVALID_JSON
            return [Rejected(reason, f"invalid JSON: {exc.msg}")]
        return list(parsed) if isinstance(parsed, list) else [parsed]
