"""``modwatch backtest --jobs N``: one log over N engine processes, with the output of one.

Rule keys are split over the processes as the live worker splits them over keyed partitions
(``partition_of``). Each process reads and decodes the whole log, so event time, lateness and the
timers move exactly as in one process; it admits every event (the same verdicts everywhere, as every
process sees the same events) and routes it, but applies an event only to the keys it owns and
holds timers only for those. Process 0 alone counts the events (``observe_event``, late,
duplicates, id conflicts), raises the integrity alerts and writes the dead letters.

Order. In one process, event ``i``'s alerts come from ``apply``, key by key in ``route``'s order,
then from ``advance``, key by key in timer order ``(when, key)``. Every alert is tagged
``(i, 0, position in route, key)`` or ``(i, 1, when, key)``; each process writes its alerts in tag
order to a temporary file, and the parent merges the files. Suppression, alert-id dedupe and
sequence regrouping live in a key's record, so they are the same whichever process holds the key.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from streams.core.alerts import Alert
from streams.core.decode import DEFAULT_LIMITS, ID_CONFLICT, Decoded, Limits, Rejected
from streams.core.engine import Engine
from streams.core.rules.base import Hit, Role, Rule
from streams.core.ruleset import RuleSet
from streams.core.state import CONFLICT, NEW, Shard
from streams.core.stats import EngineStats
from streams.core.topology import partition_of
from streams.offline.backtest import BacktestResult, decoded_events
from streams.offline.logio import DeadLetterFile, check_readable, iter_lines, total_size
from streams.offline.outputs import check_outputs
from streams.offline.progress import Progress

MAX_JOBS = 8  # the default's cap: past it, each process's share of the rules is small beside reading the log

Tag = tuple[int, int, float, str]  # (event index, 0 apply | 1 advance, route position | when, key)


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))


class _TimedShard(Shard):
    """A shard that remembers the deadline each key fired at in the last ``due`` (for the tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.fired: dict[str, float] = {}

    def due(self, watermark: float) -> list[str]:
        if len(self._scheduled) > self._peak:
            self._peak = len(self._scheduled)
        keys, fired, heap, scheduled = [], {}, self._heap, self._scheduled
        while heap and heap[0][0] <= watermark:
            when, key = heapq.heappop(heap)
            if scheduled.get(key) == when:
                del scheduled[key]
                keys.append(key)
                fired[key] = when
        self.fired = fired
        return keys


class _PartEngine(Engine):
    """The engine of one process: notes which key (and phase) each alert came from, and counts a
    rule failing in ``route`` in process 0 only (every process routes every event)."""

    def __init__(self, ruleset: RuleSet, lateness: float, pseudonymize: bytes | None, primary: bool) -> None:
        super().__init__(ruleset, lateness=lateness, pseudonymize=pseudonymize)
        self.primary = primary
        self.routing = False
        self.advancing = False
        self.emitted: list[tuple[bool, str]] = []  # (from advance, key), one per alert

    def route(self, decoded: Decoded) -> dict[str, list[Role]]:
        self.routing = True
        try:
            return super().route(decoded)
        finally:
            self.routing = False

    def advance(self, shard: Shard) -> list[Alert]:
        self.advancing = True
        try:
            return super().advance(shard)
        finally:
            self.advancing = False

    def _emit_in(self, record: dict[str, Any], rule: Rule, key: str, hit: Hit, entry: list[Any]) -> Alert | None:
        alert = super()._emit_in(record, rule, key, hit, entry)
        if alert is not None:
            self.emitted.append((self.advancing, key))
        return alert

    def _rule_error(self, rule: Rule, view: dict[str, Any]) -> None:
        if self.routing and not self.primary:
            return
        super()._rule_error(rule, view)


@dataclass
class _Job:
    paths: list[str]
    ruleset: RuleSet
    jobs: int
    deadletter: str | None
    since: datetime | None
    until: datetime | None
    limits: Limits
    lateness: float
    pseudonymize: bytes | None
    progress: Progress | None


@dataclass
class _Part:
    """What a process sends back (its alerts are in its file)."""

    stats: EngineStats
    read: int = 0
    filtered: int = 0
    unwritten: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


def _run_part(job: _Job, part: int, alerts_path: str) -> _Part:
    primary = part == 0
    engine = _PartEngine(job.ruleset, job.lateness, job.pseudonymize, primary)
    shard = _TimedShard()
    result = BacktestResult(engine=engine)
    lines = iter_lines(job.paths, job.limits.max_bytes)
    if primary and job.progress is not None:
        lines = job.progress.wrap_lines(lines, total_size(job.paths))
    owned: dict[str, bool] = {}  # key -> this process owns it (crc32 once per key)
    jobs, emitted = job.jobs, engine.emitted
    with DeadLetterFile(job.deadletter if primary else None) as dead, open(alerts_path, "wb") as out:
        events = decoded_events(lines, result, dead, job.limits, job.since, job.until)
        for index, decoded in enumerate(events):
            verdict = engine.admit(decoded)
            if verdict != NEW:
                if verdict == CONFLICT and primary:
                    alert = engine.conflict_alert(decoded)
                    pickle.dump(((index, 0, 0.0, ""), alert), out)
                    if result.line is not None:
                        result.rejected[ID_CONFLICT] += 1
                        dead.write(result.line, Rejected(ID_CONFLICT, f"event_id: {decoded.event.event_id!r} was "
                                                         "seen before with other content"))  # fmt: skip
                continue
            routes = engine.route(decoded)
            mine: list[str] = []
            for key in routes:
                own = owned.get(key)
                if own is None:
                    own = owned[key] = partition_of(key, jobs) == part
                if own:
                    mine.append(key)
            alerts = engine.step(shard, decoded, routes=routes, keys=mine, primary=primary)
            if not alerts:
                continue
            positions = {key: float(pos) for pos, key in enumerate(routes)}
            for alert, (advanced, key) in zip(alerts, emitted, strict=True):
                tag = (index, 1, shard.fired[key], key) if advanced else (index, 0, positions[key], key)
                pickle.dump((tag, alert), out)
            emitted.clear()
    if primary and job.progress is not None:
        job.progress.done()
    return _Part(engine.stats, result.read, result.filtered, dead.unwritten, dict(result.rejected))


def _child(job: _Job, part: int, alerts_path: str, conn: Any) -> None:
    try:
        conn.send(("ok", _run_part(job, part, alerts_path)))
    except BaseException as exc:  # reported to the parent, which raises it
        try:
            conn.send(("error", exc, traceback.format_exc()))
        except Exception:  # an exception that does not pickle
            conn.send(("error", RuntimeError(str(exc)), traceback.format_exc()))
    finally:
        conn.close()


def _alerts_in(path: str) -> Iterator[tuple[Tag, Alert]]:
    with open(path, "rb") as fh:
        while True:
            try:
                yield pickle.load(fh)
            except EOFError:
                return


def _merge_stats(parts: list[_Part]) -> EngineStats:
    """Process 0's counters, plus what the others counted for their keys (alerts, suppressed, rule
    errors, request latencies); the per-event counters are process 0's alone."""
    stats = parts[0].stats
    for part in parts[1:]:
        stats.alerts.update(part.stats.alerts)
        stats.suppressed.update(part.stats.suppressed)
        stats.rule_errors.update(part.stats.rule_errors)
        for key, hist in part.stats.request_latency.items():
            mine = stats.request_latency.get(key)
            if mine is None:
                stats.request_latency[key] = hist
                continue
            mine.counts = [a + b for a, b in zip(mine.counts, hist.counts, strict=True)]
            mine.sum += hist.sum
            mine.count += hist.count
    return stats


def run_parallel(
    paths: list[str],
    ruleset: RuleSet,
    jobs: int,
    *,
    output: IO[str] | None = None,
    deadletter: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
    lateness: float = 300.0,
    pseudonymize: bytes | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """``run_backtest`` over ``jobs`` forked processes: the same alerts in the same order, the same
    dead letters and counters. Process 0 draws ``progress`` (it reads the whole log, as each does)."""
    check_readable(paths)
    check_outputs(paths, {"deadletter": deadletter})
    started = time.monotonic()
    job = _Job(paths, ruleset, jobs, deadletter, since, until, limits, lateness, pseudonymize, progress)
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="modwatch-jobs-") as tmp:
        files = [os.path.join(tmp, f"alerts-{part}.pickle") for part in range(jobs)]
        children, conns = [], []
        for part in range(jobs):
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(job, part, files[part], send), daemon=True)
            child.start()
            send.close()
            children.append(child)
            conns.append(receive)
        replies = []
        try:
            for conn in conns:
                try:
                    replies.append(conn.recv())
                except EOFError:
                    replies.append(("error", RuntimeError("a backtest process died without a result"), ""))
        finally:
            for conn in conns:
                conn.close()
            for child in children:
                child.join()
        for reply in replies:
            if reply[0] == "error":
                raise reply[1]
        parts: list[_Part] = [reply[1] for reply in replies]
        engine = Engine(ruleset, lateness=lateness, pseudonymize=pseudonymize)
        engine.stats = _merge_stats(parts)
        first = parts[0]
        result = BacktestResult(read=first.read, filtered=first.filtered, engine=engine, unwritten=first.unwritten)
        result.rejected.update(first.rejected)
        for _, alert in heapq.merge(*(_alerts_in(path) for path in files), key=lambda item: item[0]):
            result.alerts.append(alert)
            if output is not None:
                output.write(alert.to_json() + "\n")
    result.elapsed = time.monotonic() - started
    return result
