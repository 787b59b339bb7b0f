"""``modwatch backtest --jobs N``: one log over N engine processes, with the output of one.

Rule keys are split over the processes as the live worker splits them over keyed partitions
(``partition_of``). Each process reads and decodes the whole log, so event time, lateness and the
timers move exactly as in one process. The log is cut in chunks of ``CHUNK`` lines; process
``c % N`` computes chunk ``c``'s content digests and routes and sends every other process the digests
and the routes of its keys (a queue per pair of processes), so no event is routed twice. Each
process admits every event with those digests (the same verdicts everywhere), applies an event only
to the keys it owns and holds timers only for those. Process 0 alone counts the events
(``observe_event``, late, duplicates, id conflicts, rules failing to route), raises the integrity
alerts and writes the dead letters.

Order. In one process, event ``i``'s alerts come from ``apply``, key by key in ``route``'s order,
then from ``advance``, key by key in timer order ``(when, key)``. Every alert is tagged
``(i, 0, position in route, key)`` or ``(i, 1, when, key)``; each process writes its alerts in tag
order to a temporary file, and the parent merges the files. Suppression, alert-id dedupe and
sequence regrouping live in a key's record, so they are the same whichever process holds the key.
"""

from __future__ import annotations

import gc
import heapq
import logging
import multiprocessing
import os
import pickle
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import connection
from typing import IO, Any

from streams.core.alerts import Alert
from streams.core.decode import DEFAULT_LIMITS, ID_CONFLICT, Decoded, Limits, Rejected, decode
from streams.core.engine import Engine, content_digest
from streams.core.rules.base import Hit, Role, Rule
from streams.core.ruleset import RuleSet
from streams.core.state import DUPLICATE, NEW, Shard
from streams.core.stats import EngineStats
from streams.core.topology import partition_of
from streams.offline.backtest import BacktestResult
from streams.offline.logio import DeadLetterFile, Line, check_readable, iter_lines, total_size
from streams.offline.outputs import check_outputs
from streams.offline.progress import Progress

log = logging.getLogger(__name__)

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
    """The engine of one process: notes which key (and phase) each alert came from, and notes the
    rules failing in ``route`` instead of counting them (an event is routed before it is admitted)."""

    def __init__(self, ruleset: RuleSet, lateness: float, pseudonymize: bytes | None, primary: bool,
                 jobs: int) -> None:  # fmt: skip
        super().__init__(ruleset, lateness=lateness, pseudonymize=pseudonymize)
        self.primary = primary
        self.jobs = jobs
        self.owners: dict[str, int] = {}  # key -> its process (crc32 once per key)
        self.routing = False
        self.failed: list[str] = []  # rules that failed routing the event last routed
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

    def owner(self, key: str) -> int:
        found = self.owners.get(key)
        if found is None:
            found = self.owners[key] = partition_of(key, self.jobs)
        return found

    def _rule_error(self, rule: Rule, view: dict[str, Any]) -> None:
        if self.routing:  # counted by process 0 if the event is admitted (``_run_part``)
            self.failed.append(rule.id)
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


CHUNK = 128  # lines per chunk; chunk c is prepared (digests, routes) by process c % jobs

Item = tuple[Line, Decoded | Rejected | None]  # a line and its event, rejection, or None (outside the range)
Routed = tuple[tuple[int, str, tuple[tuple[str, str], ...]], ...]  # (position in route, key, roles) of one process
Prepared = list[tuple[bytes, tuple[str, ...], Routed] | None]  # per line: digest, route failures, own routes


def _items(job: _Job, lines: Iterator[Line], result: BacktestResult) -> Iterator[list[Item]]:
    lo = job.since.timestamp() if job.since else float("-inf")
    hi = job.until.timestamp() if job.until else float("inf")
    limits = job.limits
    chunk: list[Item] = []
    for line in lines:
        result.read += 1
        out: Decoded | Rejected | None
        out = decode(line.raw, limits) if line.oversize is None else line.oversize.rejected(limits.max_bytes)
        if isinstance(out, Decoded) and not lo <= out.ts < hi:
            result.filtered += 1
            out = None
        chunk.append((line, out))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prepare(engine: _PartEngine, items: list[Item], jobs: int) -> list[Prepared]:
    """A chunk's digests and routes, split by the process owning each key (index: the process)."""
    out: list[Prepared] = [[] for _ in range(jobs)]
    for _, decoded in items:
        if not isinstance(decoded, Decoded):
            for prepared in out:
                prepared.append(None)
            continue
        digest = content_digest(decoded.view)
        engine.failed = []
        routes = engine.route(decoded)
        failed = tuple(engine.failed)
        split: list[list[tuple[int, str, tuple[tuple[str, str], ...]]]] = [[] for _ in range(jobs)]
        for pos, (key, roles) in enumerate(routes.items()):
            split[engine.owner(key)].append((pos, key, tuple((role.rule.id, role.side) for role in roles)))
        for part, prepared in enumerate(out):
            prepared.append((digest, failed if part == 0 else (), tuple(split[part])))
    return out


def _run_part(job: _Job, part: int, alerts_path: str, inbox: list[Any], outbox: list[Any]) -> _Part:
    """Process ``part``: reads and decodes every line; prepares its chunks (digest, routes) for all
    and receives the others'; admits every event; applies its keys; fires its timers."""
    primary, jobs = part == 0, job.jobs
    # What the parent built (rules, modules) is never garbage: out of the collector's walks. A process
    # holds a few chunks of decoded events that survive young collections; rarer ones cost less.
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    engine = _PartEngine(job.ruleset, job.lateness, job.pseudonymize, primary, jobs)
    shard = _TimedShard()
    result = BacktestResult(engine=engine)
    stats, recent, roles, emitted = engine.stats, engine.recent, engine.roles, engine.emitted
    lines = iter_lines(job.paths, job.limits.max_bytes)
    if primary and job.progress is not None:
        lines = job.progress.wrap_lines(lines, total_size(job.paths))
    chunks = enumerate(_items(job, lines, result))
    ahead: deque[tuple[int, list[Item], Prepared | None]] = deque()
    index = -1
    with DeadLetterFile(job.deadletter if primary else None) as dead, open(alerts_path, "wb") as out:
        while True:
            # Read ahead to this process's next chunk, so the others never wait for what it applies.
            while len(ahead) <= jobs:
                number, items = next(chunks, (-1, []))
                if number < 0:
                    break
                mine = None
                if number % jobs == part:
                    prepared = _prepare(engine, items, jobs)
                    for other, box in enumerate(outbox):
                        if other != part:
                            box.put(prepared[other])
                    mine = prepared[part]
                ahead.append((number, items, mine))
            if not ahead:
                break
            number, items, mine = ahead.popleft()
            if mine is None:
                mine = inbox[number % jobs].get()
            for (line, decoded), prep in zip(items, mine, strict=True):
                if not isinstance(decoded, Decoded):
                    if decoded is not None and primary:
                        result.rejected[decoded.reason] += 1
                        dead.write(line, decoded)
                    continue
                assert prep is not None
                index += 1
                digest, failed, routed = prep
                verdict = recent.check(decoded.event.event_id, decoded.ts, digest)
                if verdict != NEW:
                    if not primary:
                        continue
                    if verdict == DUPLICATE:
                        stats.duplicates += 1
                        continue
                    stats.id_conflicts += 1
                    pickle.dump(((index, 0, 0.0, ""), engine.conflict_alert(decoded)), out)
                    result.rejected[ID_CONFLICT] += 1
                    dead.write(line, Rejected(ID_CONFLICT, f"event_id: {decoded.event.event_id!r} was "
                                                           "seen before with other content"))  # fmt: skip
                    continue
                for rule_id in failed:  # counted here, once, for an admitted event only
                    stats.rule_errors[rule_id] += 1
                    log.error("rule %s failed on event %r", rule_id, decoded.event.event_id)
                routes = {key: [roles[role] for role in keyed] for _, key, keyed in routed}
                alerts = engine.step(shard, decoded, routes=routes, primary=primary)
                if not alerts:
                    continue
                positions = {key: float(pos) for pos, key, _ in routed}
                for alert, (advanced, key) in zip(alerts, emitted, strict=True):
                    tag = (index, 1, shard.fired[key], key) if advanced else (index, 0, positions[key], key)
                    pickle.dump((tag, alert), out)
                emitted.clear()
    if primary and job.progress is not None:
        job.progress.done()
    return _Part(engine.stats, result.read, result.filtered, dead.unwritten, dict(result.rejected))


def _child(job: _Job, part: int, alerts_path: str, boxes: list[list[Any]], conn: Any) -> None:
    try:
        inbox, outbox = [row[part] for row in boxes], boxes[part]
        conn.send(("ok", _run_part(job, part, alerts_path, inbox, outbox)))
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
        boxes = [[context.Queue() for _ in range(jobs)] for _ in range(jobs)]  # [sender][receiver]
        children, conns = [], []
        for part in range(jobs):
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(job, part, files[part], boxes, send), daemon=True)
            child.start()
            send.close()
            children.append(child)
            conns.append(receive)
        replies: dict[int, Any] = {}
        try:
            while len(replies) < jobs:
                for ready in connection.wait([c for i, c in enumerate(conns) if i not in replies]):
                    part = next(i for i, c in enumerate(conns) if c is ready)
                    try:
                        replies[part] = conns[part].recv()
                    except EOFError:
                        replies[part] = ("error", RuntimeError("a backtest process died without a result"), "")
                    if replies[part][0] == "error":  # the others would wait for its chunks forever
                        for child in children:
                            if child.is_alive():
                                child.terminate()
                        raise replies[part][1]
        finally:
            for conn in conns:
                conn.close()
            for child in children:
                child.join()
            for row in boxes:
                for box in row:
                    box.close()
        replies = dict(sorted(replies.items()))
        parts: list[_Part] = [reply[1] for reply in replies.values()]
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
