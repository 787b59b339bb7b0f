"""``modwatch backtest``: run the engine over JSONL logs, write alerts, dead letters and a summary."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TextIO

from streams.core.alerts import Alert
from streams.core.decode import DEFAULT_LIMITS, ID_CONFLICT, Decoded, Limits, Rejected, decode
from streams.core.engine import Engine, Replay
from streams.core.incident_feed import IncidentFeed
from streams.core.incidents import Incident, IncidentEngine, IncidentUpdate
from streams.core.ruleset import RuleSet
from streams.offline.logio import DeadLetterFile, Line, check_readable, iter_lines, total_size
from streams.offline.outputs import check_outputs
from streams.offline.progress import Progress


@dataclass
class BacktestResult:
    read: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    filtered: int = 0
    alerts: list[Alert] = field(default_factory=list)
    elapsed: float = 0.0
    engine: Engine | None = None
    line: Line | None = None  # the line of the event last decoded (to dead-letter an id conflict)
    unwritten: int = 0  # rejected lines not written: the dead-letter file reached its size cap
    updates: list[IncidentUpdate] = field(default_factory=list)  # with an incident engine, in order

    def incidents(self) -> list[Incident]:
        """Each incident's final revision, by first alert time then id (``backtest --incidents``)."""
        final = {u.incident.incident_id: u.incident for u in self.updates}
        return sorted(final.values(), key=lambda i: (i.first_seen, i.incident_id))

    @property
    def late(self) -> int:
        return self.engine.stats.late if self.engine else 0

    @property
    def duplicates(self) -> int:
        return self.engine.stats.duplicates if self.engine else 0


def decoded_events(
    lines: Iterator[Line],
    result: BacktestResult,
    deadletters: DeadLetterFile,
    limits: Limits = DEFAULT_LIMITS,
    since: datetime | None = None,
    until: datetime | None = None,
    now: float | None = None,
) -> Iterator[Decoded]:
    """Decode lines, sending rejections to the dead-letter file and skipping events outside the range."""
    lo = since.timestamp() if since else float("-inf")
    hi = until.timestamp() if until else float("inf")
    for line in lines:
        result.read += 1
        # An over-long line was never held (logio): it is rejected by the length it had.
        out = decode(line.raw, limits, now=now) if line.oversize is None else line.oversize.rejected(limits.max_bytes)
        if not isinstance(out, Decoded):
            result.rejected[out.reason] += 1
            deadletters.write(line, out)
            continue
        if not lo <= out.ts < hi:
            result.filtered += 1
            continue
        result.line = line
        yield out


def run_backtest(
    paths: list[str],
    ruleset: RuleSet,
    *,
    output: IO[str] | None = None,
    deadletter: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
    lateness: float = 300.0,
    pseudonymize: bytes | None = None,
    progress: Progress | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    events: Iterable[Line] | None = None,
    dead: DeadLetterFile | None = None,
    incidents: IncidentEngine | None = None,
) -> BacktestResult:
    """Run every event of ``paths`` through a fresh engine. Alerts are written to ``output`` as
    they fire, one JSON object per line, in a deterministic order. ``events`` (lines of contract
    events already in memory, from ``backtest --input``) and ``dead`` (an open dead-letter file)
    replace ``paths`` and ``deadletter``. With ``incidents``, every alert goes through it in the order
    the live worker uses (``IncidentFeed``: once the engine's watermark passes it, by time then id) and
    event time moves it on with the watermark; its updates are in ``result.updates``."""
    check_readable(paths)
    check_outputs(paths, {"deadletter": deadletter})
    replay = Replay(Engine(ruleset, lateness=lateness, pseudonymize=pseudonymize))
    result = BacktestResult(engine=replay.engine)
    feed = IncidentFeed(incidents) if incidents is not None else None
    started = time.monotonic()
    lines = iter_lines(paths, limits.max_bytes) if events is None else iter(events)
    if progress is not None and events is None:
        lines = progress.wrap_lines(lines, total_size(paths))
    with contextlib.nullcontext(dead) if dead is not None else DeadLetterFile(deadletter) as deadletters:
        for decoded in decoded_events(lines, result, deadletters, limits, since, until):
            alerts = replay.feed(decoded)
            if replay.conflicted and result.line is not None:
                result.rejected[ID_CONFLICT] += 1
                deadletters.write(result.line, Rejected(ID_CONFLICT, f"event_id: {decoded.event.event_id!r} was "
                                                        "seen before with other content"))  # fmt: skip
            for alert in alerts:
                result.alerts.append(alert)
                if output is not None:
                    output.write(alert.to_json() + "\n")
                if on_alert is not None:
                    on_alert(alert)
                if feed is not None:
                    feed.add(alert)
            if feed is not None:
                result.updates += feed.release(replay.engine.watermark(replay.shard))
        if feed is not None:
            result.updates += feed.drain()
    result.unwritten = deadletters.unwritten
    if progress is not None:
        progress.done()
    result.elapsed = time.monotonic() - started
    return result


def print_summary(result: BacktestResult, out: TextIO | None = None) -> None:
    out = out or sys.stderr
    engine = result.engine
    assert engine is not None
    stats = engine.stats
    rate = result.read / result.elapsed if result.elapsed > 0 else 0.0
    out.write(
        f"events read: {result.read:,}  processed: {sum(stats.events.values()):,}  "
        f"rejected: {sum(result.rejected.values()):,}  late: {stats.late:,}  "
        f"duplicates skipped: {stats.duplicates:,}  outside --since/--until: {result.filtered:,}\n"
    )
    for reason, count in sorted(result.rejected.items()):
        out.write(f"  rejected {reason}: {count:,}\n")
    if result.unwritten:
        out.write(f"  not written to the dead-letter file (it reached its size cap): {result.unwritten:,}\n")
    out.write(f"alerts: {len(result.alerts):,}  suppressed: {sum(stats.suppressed.values()):,}  ")
    out.write(f"rule errors: {sum(stats.rule_errors.values()):,}  ({result.elapsed:.1f}s, {rate:,.0f} events/s)\n")
    by_rule: dict[str, Counter[str]] = {}
    for alert in result.alerts:
        by_rule.setdefault(alert.rule_id, Counter())[alert.severity.label] += 1
    order = ("critical", "high", "medium", "low", "info")
    for rule_id in sorted(by_rule):
        counts = by_rule[rule_id]
        parts = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
        supp = stats.suppressed.get(rule_id, 0)
        out.write(f"  {rule_id:<26} {parts}" + (f"  (+{supp} suppressed)" if supp else "") + "\n")
