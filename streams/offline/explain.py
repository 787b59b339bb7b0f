"""``modwatch explain``: why an alert fired.

The engine keeps no evidence beyond the alert itself, so an explanation replays the log with the same
rules (alert ids are deterministic: the replay mints the same ids) and records, for the alerts asked
about, the rule's hit: the events that completed the pattern, the group key, the facts. The score is
then recomputed from the hit with the rule set's scorer, booster by booster, and the contributing
events are read back from the log by id with all their contract fields.

Event fields come from untrusted producers: the text renderer strips control characters so that an
explanation printed on a terminal cannot carry escape sequences.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from streams.core.alerts import Alert, Pseudonymizer
from streams.core.decode import DEFAULT_LIMITS, Decoded, Limits, decode
from streams.core.engine import Engine, Replay
from streams.core.events import parse_time
from streams.core.rules.base import Hit, Rule
from streams.core.ruleset import RuleSet
from streams.core.scoring import Bands, ScoringConfig, Severity
from streams.offline.backtest import BacktestResult, decoded_events
from streams.offline.logio import DeadLetterFile, Line, check_readable, iter_lines


class AlertNotFound(KeyError):
    """The alert id asked about is not raised by these rules over this log."""

    def __init__(self, alert_id: str, message: str) -> None:
        super().__init__(alert_id)
        self.alert_id = alert_id
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class BoosterEffect:
    name: str
    points: int
    applied: bool
    description: str = ""


@dataclass(frozen=True, slots=True)
class ExplainedEvent:
    event_id: str
    ts: float | None  # None when the event is not in the log (or outside --since/--until)
    view: dict[str, Any] | None  # the event as logged


@dataclass(frozen=True)
class Explanation:
    alert: Alert
    kind: str  # the rule kind
    condition: str  # the rule's condition, one line
    description: str  # the rule's description from the config
    events: tuple[ExplainedEvent, ...]  # in event-time order
    base: int
    boosters: tuple[BoosterEffect, ...]  # every booster the rule considers: applying ones first
    excluded: tuple[str, ...]  # boosters the rule does not consider (its score.boosters list)
    raw: int  # base + boosters, before clamping to 0-100
    score: int
    severity: Severity
    bands: Bands
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def applied(self) -> list[BoosterEffect]:
        return [b for b in self.boosters if b.applied]

    @property
    def not_applied(self) -> list[BoosterEffect]:
        return [b for b in self.boosters if not b.applied]

    def band_text(self) -> str:
        """``critical (>= 80)``: the severity and the band that gave it."""
        floor = {
            Severity.CRITICAL: self.bands.critical,
            Severity.HIGH: self.bands.high,
            Severity.MEDIUM: self.bands.medium,
            Severity.LOW: self.bands.low,
        }.get(self.severity)
        return f"{self.severity.label} (>= {floor})" if floor is not None else f"info (< {self.bands.low})"


# -- replaying the log with a recording engine ------------------------------------------------------


@dataclass(slots=True)
class _Record:
    rule: Rule
    hit: Hit
    alert: Alert


class _RecordingEngine(Engine):
    """The engine, unchanged, plus a copy of the hit behind every alert that ``want`` selects."""

    def __init__(self, ruleset: RuleSet, lateness: float, want: Callable[[Alert], bool],
                 pseudonymize: bytes | None = None) -> None:  # fmt: skip
        super().__init__(ruleset, lateness=lateness, pseudonymize=pseudonymize)
        self.want = want
        self.records: dict[str, _Record] = {}

    def build(self, rule: Rule, key: str, hit: Hit, new_id: str) -> Alert:
        alert = super().build(rule, key, hit, new_id)
        if self.want(alert):
            # A copy: the hit's views may be shared with rule state that later changes.
            self.records[new_id] = _Record(rule, copy.deepcopy(hit), alert)
        return alert


@dataclass
class Replayed:
    engine: Engine
    records: dict[str, _Record]
    alerts: int = 0  # alerts raised (all of them, not only the recorded ones)
    events: int = 0  # events processed
    first_ts: float | None = None
    last_ts: float | None = None
    complete: bool = True  # False when the replay stopped once every wanted alert was found


def replay(
    ruleset: RuleSet,
    paths: list[str],
    want: Callable[[Alert], bool],
    *,
    stop_after: set[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    lateness: float = 300.0,
    limits: Limits = DEFAULT_LIMITS,
    pseudonymize: bytes | None = None,
    period: bool = False,
) -> Replayed:
    """Run the log through the engine as ``backtest`` does, recording the alerts ``want`` selects.
    With ``stop_after``, stop as soon as all those alert ids have been raised: nothing later in the log
    can change an alert already raised. With ``period`` too, the rest of the log is only skimmed for
    its event times, so that ``first_ts``/``last_ts`` still span the whole log."""
    check_readable(paths)
    engine = _RecordingEngine(ruleset, lateness, want, pseudonymize)
    replay = Replay(engine)
    out = Replayed(engine=engine, records=engine.records)
    tally = BacktestResult(engine=engine)
    lines = iter_lines(paths, limits.max_bytes)
    with DeadLetterFile(None) as deadletters:
        for decoded in decoded_events(lines, tally, deadletters, limits, since, until):
            out.events += 1
            out.first_ts = decoded.ts if out.first_ts is None else min(out.first_ts, decoded.ts)
            out.last_ts = decoded.ts if out.last_ts is None else max(out.last_ts, decoded.ts)
            out.alerts += len(replay.feed(decoded))
            if stop_after is not None and stop_after.issubset(engine.records):
                out.complete = False
                break
    if not out.complete and period:
        _skim_times(lines, out, since, until)
    return out


_OCCURRED_AT = re.compile(rb'"occurred_at"\s*:\s*"([^"\\]{1,64})"')


def _skim_times(lines: Iterable[Line], out: Replayed, since: datetime | None, until: datetime | None) -> None:
    """Extend the replayed period over the remaining lines, reading only their timestamps (a line that
    would not decode may count: the period is for a chart's axis, not for evidence)."""
    lo = since.timestamp() if since else float("-inf")
    hi = until.timestamp() if until else float("inf")
    for line in lines:
        match = _OCCURRED_AT.search(line.raw)
        if match is None:
            continue
        try:
            ts = parse_time(match.group(1).decode("ascii")).timestamp()
        except (ValueError, UnicodeDecodeError):
            continue
        if lo <= ts < hi:
            out.first_ts = ts if out.first_ts is None else min(out.first_ts, ts)
            out.last_ts = ts if out.last_ts is None else max(out.last_ts, ts)


_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]{1,200})"')


def collect_events(
    paths: list[str],
    event_ids: Iterable[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, tuple[float, dict[str, Any]]]:
    """The first valid occurrence of each wanted event id in the logs: (event time, the event as logged).
    Only lines whose id is wanted are decoded (a cheap byte match finds the id first)."""
    wanted = set(event_ids)
    found: dict[str, tuple[float, dict[str, Any]]] = {}
    lo = since.timestamp() if since else float("-inf")
    hi = until.timestamp() if until else float("inf")
    for line in iter_lines(paths, limits.max_bytes):
        if len(found) == len(wanted):
            break
        match = _EVENT_ID.search(line.raw)
        if match is not None and match.group(1).decode("utf-8", "replace") not in wanted:
            continue
        out = decode(line.raw, limits)
        if not isinstance(out, Decoded):
            continue
        event_id = out.event.event_id
        if event_id in wanted and event_id not in found and lo <= out.ts < hi:
            found[event_id] = (out.ts, out.view)
    return found


# -- building explanations ----------------------------------------------------------------------------


def _booster_descriptions(ruleset: RuleSet) -> dict[str, str]:
    """Booster descriptions from the rule set's scoring.yaml (the compiled scorer keeps only points and
    tests). Best effort: an explanation without descriptions is still an explanation."""
    path = Path(ruleset.source) / "scoring.yaml"
    try:
        config = ScoringConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except Exception:  # missing, or changed since loading: descriptions are optional
        return {}
    return {name: " ".join(b.description.split()) for name, b in config.boosters.items()}


def _condition(rule: Rule) -> str:
    # rules.base.describe() dumps predicates through a callable-discriminated union, for which pydantic
    # warns that it serialises left to right; the text is right, the warning is noise on a terminal.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)
        return " ".join(rule.condition_text().split())


def _explanation(ruleset: RuleSet, record: _Record, events: dict[str, tuple[float, dict[str, Any]]],
                 descriptions: dict[str, str]) -> Explanation:  # fmt: skip
    rule, hit, alert = record.rule, record.hit, record.alert
    scorer = ruleset.scorer
    score = scorer.score(rule, hit)
    applied = {s.name: s.points for s in score.signals}
    wanted = rule.config.score.boosters
    considered = list(scorer.boosters) if wanted == "all" else list(wanted)
    boosters = [BoosterEffect(n, applied[n], True, descriptions.get(n, "")) for n in considered if n in applied]
    boosters += [
        BoosterEffect(n, scorer.boosters[n][0], False, descriptions.get(n, "")) for n in considered if n not in applied
    ]
    explained = []
    for event_id in hit.event_ids:
        ts_view = events.get(event_id)
        explained.append(ExplainedEvent(event_id, *ts_view) if ts_view else ExplainedEvent(event_id, None, None))
    order = {event_id: i for i, event_id in enumerate(hit.event_ids)}
    explained.sort(key=lambda e: (e.ts if e.ts is not None else float("inf"), order[e.event_id]))
    facts = {k: v for k, v in hit.facts.items() if k != "latency_seconds"}
    return Explanation(
        alert=alert,
        kind=rule.kind,
        condition=_condition(rule),
        description=" ".join(rule.config.description.split()),
        events=tuple(explained),
        base=score.base,
        boosters=tuple(boosters),
        excluded=tuple(n for n in scorer.boosters if n not in considered),
        raw=score.base + sum(applied.values()),
        score=score.value,
        severity=score.severity,
        bands=scorer.bands,
        facts=facts,
    )


def _build(ruleset: RuleSet, records: Sequence[_Record], paths: list[str], since: datetime | None,
           until: datetime | None, limits: Limits, pseudonymize: bytes | None) -> list[Explanation]:  # fmt: skip
    ids = {event_id for record in records for event_id in record.hit.event_ids}
    events = collect_events(paths, ids, since=since, until=until, limits=limits) if ids else {}
    if pseudonymize:
        # The alerts hide target ids behind pseudonyms: so must the events shown beside them.
        pseudo = Pseudonymizer(pseudonymize)
        events = {k: (ts, pseudo.view(view) or {}) for k, (ts, view) in events.items()}
    descriptions = _booster_descriptions(ruleset)
    return [_explanation(ruleset, record, events, descriptions) for record in records]


def explain_ids(
    ruleset: RuleSet,
    alert_ids: Sequence[str],
    log_paths: list[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    lateness: float = 300.0,
    limits: Limits = DEFAULT_LIMITS,
    pseudonymize: bytes | None = None,
) -> list[Explanation]:
    """Explanations of the given alerts, in the order asked. Raises AlertNotFound naming the first id
    these rules do not raise over these logs."""
    wanted = {a.strip() for a in alert_ids}
    run = replay(ruleset, log_paths, lambda a: a.alert_id in wanted, stop_after=wanted, since=since,
                 until=until, lateness=lateness, limits=limits, pseudonymize=pseudonymize)  # fmt: skip
    for alert_id in alert_ids:
        if alert_id.strip() not in run.records:
            logs = ", ".join(log_paths)
            raise AlertNotFound(
                alert_id,
                f"no alert {alert_id.strip()!r} in {logs} with the rules in {ruleset.source} "
                f"({run.alerts} alerts raised; alert ids are in the backtest output)",
            )
    records = [run.records[a.strip()] for a in alert_ids]
    return _build(ruleset, records, log_paths, since, until, limits, pseudonymize)


def explain(ruleset: RuleSet, alert_id: str, log_paths: list[str], **options: Any) -> Explanation:
    """Why ``alert_id`` fired: its events, the rule's condition, the score booster by booster."""
    return explain_ids(ruleset, [alert_id], log_paths, **options)[0]


@dataclass
class ExplainRun:
    explanations: list[Explanation]
    events: int
    first_ts: float | None
    last_ts: float | None


def explain_alerts(
    ruleset: RuleSet,
    log_paths: list[str],
    *,
    min_severity: Severity = Severity.HIGH,
    since: datetime | None = None,
    until: datetime | None = None,
    lateness: float = 300.0,
    limits: Limits = DEFAULT_LIMITS,
    pseudonymize: bytes | None = None,
    expected: Collection[str] | None = None,
) -> ExplainRun:
    """Explanations of every alert at or above ``min_severity`` (for ``backtest --explain`` and the
    report), in the order they fired, plus the period of the log. ``expected``: the ids of those alerts
    when a backtest already found them; the replay then stops after the last of them."""
    stop_after = set(expected) if expected is not None else None
    run = replay(ruleset, log_paths, lambda a: a.severity >= min_severity, stop_after=stop_after, since=since,
                 until=until, lateness=lateness, limits=limits, pseudonymize=pseudonymize, period=True)  # fmt: skip
    explanations = _build(ruleset, list(run.records.values()), log_paths, since, until, limits, pseudonymize)
    return ExplainRun(explanations, run.events, run.first_ts, run.last_ts)


# -- describing events ----------------------------------------------------------------------------------
