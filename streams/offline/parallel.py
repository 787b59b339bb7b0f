"""``modwatch backtest --jobs N``: one log over N engine processes, with the output of one.

Rule keys are split over the processes as the live worker splits them over keyed partitions
(``partition_of``). Every process reads every line, admits every event and moves event time with
it, so the watermark, lateness and the timers are the same in all. The log is cut in chunks of
``CHUNK`` lines, and only chunk ``c``'s owner, process ``c % N``, decodes it (contract validation is
as costly as the rest of admission), digests and routes its events. It sends every other process a
short note per line (a queue per pair of processes): for an event, its id, time, digest, the routes
of that process's keys and which parser made its view; for a rejected line, the rejection to
process 0 and nothing to the others. A process rebuilds the view of an event it has routes for from
the line it read, with the parser ``decode`` used, and hands the engine a stand-in for the event
model, which nothing it calls reads (``_NotDecoded``). It applies an event to the keys it owns only
and holds timers for those.

Counting. Each event is counted once, by its chunk's owner: ``observe_event``, late, duplicates,
id conflicts and their integrity alerts, rules failing to route, events outside --since/--until;
alerts, suppressions and rule errors by the process holding the key. The parent adds them up.
Process 0 alone writes the dead letters, its own chunks' and the others', in line order: it has
every rejection from the notes and sees every id conflict as it admits the event.

Order. In one process, event ``i``'s alerts come from ``apply``, key by key in ``route``'s order,
then from ``advance``, key by key in timer order ``(when, key)``. Every alert is tagged
``(i, 0, position in route, key)`` or ``(i, 1, when, key)``; each process writes its alerts in tag
order to a temporary file, and the parent merges the files. Suppression, alert-id dedupe and
sequence regrouping live in a key's record, so they are the same whichever process holds the key.

Waiting. A process decodes its next chunk before it waits for another's notes (it reads up to ``N``
chunks ahead), and a queue never blocks its sender, so no process waits for one that waits for it.
"""

from __future__ import annotations

import gc
import heapq
import json
import logging
import multiprocessing
import os
import pickle
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from multiprocessing import connection
from typing import IO, Any

import orjson

from streams.core.alerts import Alert
from streams.core.decode import DEFAULT_LIMITS, ID_CONFLICT, Decoded, Limits, Rejected, _fast_parse, _validate, decode
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
        self.in_route = False  # in ``route`` now (not ``routing``: an Engine attribute)
        self.failed: list[str] = []  # rules that failed routing the event last routed
        self.advancing = False
        self.emitted: list[tuple[bool, str]] = []  # (from advance, key), one per alert

    def route(self, decoded: Decoded) -> dict[str, list[Role]]:
        self.in_route = True
        try:
            return super().route(decoded)
        finally:
            self.in_route = False

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
        if self.in_route:  # counted by the owner of its chunk if the event is admitted (``_run_part``)
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


CHUNK = 128  # lines per chunk; chunk c is decoded, digested and routed by process c % jobs (its owner)

Routed = tuple[tuple[int, str, tuple[tuple[str, str], ...]], ...]  # (position in route, key, roles) of one process
# What a process is told of one line of a chunk: None (nothing to do: outside --since/--until, or
# rejected and it is not process 0), the rejection (process 0 only) or an event to admit:
# (event id, event time, content digest, whether orjson parsed it, the routes of the process's keys).
Note = tuple[str, float, bytes, bool, Routed]
Told = list[Note | Rejected | None]
Kept = list[tuple[Decoded, tuple[str, ...]] | None]  # the owner's own: each event and its rules failing to route


class _NotDecoded:
    """``Decoded.event`` of an event another process decoded: that process alone holds the model.

    Safe because a process other than the owner only calls ``Engine.step`` with the event's ``routes``
    and ``primary=False``, and then ``step``, ``apply`` and ``advance`` read ``decoded.ts`` and
    ``decoded.view`` alone (the model is read by ``route``, ``admit``, ``observe_event`` and
    ``conflict_alert``: the owner's). A future read of the model fails here, loudly, instead of
    giving a result that differs from ``--jobs 1``'s."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"decoded.event.{name} read for an event decoded in another process (see _NotDecoded)")


NOT_DECODED: Any = _NotDecoded()


def _decode(raw: bytes, limits: Limits) -> tuple[Decoded | Rejected, bool]:
    """``decode(raw, limits)``, and whether its view is ``orjson.loads(raw)`` (its fast path) rather
    than ``json.loads`` of the text: the other processes parse the line again the same way."""
    if len(raw) <= limits.max_bytes:
        data = _fast_parse(raw, limits)
        if data is not None:  # what decode does after the same two checks
            return _validate(data, limits, None), True
    return decode(raw, limits), False


def _view(raw: bytes, fast: bool) -> dict[str, Any]:
    """The view ``decode`` made of ``raw`` in the process that decoded it (``_decode``)."""
    return orjson.loads(raw) if fast else json.loads(raw.decode("utf-8"))


def _chunks(lines: Iterator[Line], result: BacktestResult) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    for line in lines:
        result.read += 1
        chunk.append(line)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prepare(engine: _PartEngine, job: _Job, lines: list[Line], result: BacktestResult) -> tuple[list[Told], Kept]:
    """Decode, digest and route a chunk this process owns: what each process is told of it (index:
    the process), and the events it keeps for itself. Counts the events outside the range."""
    lo = job.since.timestamp() if job.since else float("-inf")
    hi = job.until.timestamp() if job.until else float("inf")
    jobs, limits = job.jobs, job.limits
    told: list[Told] = [[] for _ in range(jobs)]
    kept: Kept = []
    for line in lines:
        if line.oversize is None:
            out, fast = _decode(line.raw, limits)
        else:
            out, fast = line.oversize.rejected(limits.max_bytes), False
        if not isinstance(out, Decoded) or not lo <= out.ts < hi:
            if isinstance(out, Decoded):
                result.filtered += 1
            told[0].append(None if isinstance(out, Decoded) else out)
            for notes in told[1:]:
                notes.append(None)
            kept.append(None)
            continue
        digest = content_digest(out.view)
        engine.failed = []
        routes = engine.route(out)
        split: list[list[tuple[int, str, tuple[tuple[str, str], ...]]]] = [[] for _ in range(jobs)]
        for pos, (key, roles) in enumerate(routes.items()):
            split[engine.owner(key)].append((pos, key, tuple((role.rule.id, role.side) for role in roles)))
        event_id = out.event.event_id
        for part, notes in enumerate(told):
            notes.append((event_id, out.ts, digest, fast, tuple(split[part])))
        kept.append((out, tuple(engine.failed)))
    return told, kept


def _run_part(job: _Job, part: int, alerts_path: str, inbox: list[Any], outbox: list[Any]) -> _Part:
    """Process ``part``: reads every line; decodes, digests and routes its chunks and tells the others
    what they need of them; admits every event; counts its chunks' events; applies its keys; fires
    its timers. Process 0 also writes every dead letter."""
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
    chunks = enumerate(_chunks(lines, result))
    ahead: deque[tuple[int, list[Line], Told | None, Kept | None]] = deque()
    index = -1
    with DeadLetterFile(job.deadletter if primary else None) as dead, open(alerts_path, "wb") as out:
        while True:
            # Read ahead to this process's next chunk, so the others never wait for what it applies.
            while len(ahead) <= jobs:
                number, chunk = next(chunks, (-1, []))
                if number < 0:
                    break
                told: Told | None = None
                kept: Kept | None = None
                if number % jobs == part:
                    everyone, kept = _prepare(engine, job, chunk, result)
                    for other, box in enumerate(outbox):
                        if other != part:
                            box.put(everyone[other])
                    told = everyone[part]
                ahead.append((number, chunk, told, kept))
            if not ahead:
                break
            number, chunk, told, kept = ahead.popleft()
            if told is None:
                told = inbox[number % jobs].get()
            own = kept is not None
            for i, (line, note) in enumerate(zip(chunk, told, strict=True)):
                if note is None:
                    continue
                if isinstance(note, Rejected):  # process 0 only
                    result.rejected[note.reason] += 1
                    dead.write(line, note)
                    continue
                index += 1
                event_id, ts, digest, fast, routed = note
                verdict = recent.check(event_id, ts, digest)
                if verdict != NEW:
                    if verdict == DUPLICATE:
                        stats.duplicates += own
                        continue
                    if own:
                        stats.id_conflicts += 1
                        pickle.dump(((index, 0, 0.0, ""), engine.conflict_alert(kept[i][0])), out)  # type: ignore[index]
                    if primary:
                        result.rejected[ID_CONFLICT] += 1
                        dead.write(line, Rejected(ID_CONFLICT, f"event_id: {event_id!r} was seen before with "
                                                               "other content"))  # fmt: skip
                    continue
                if own:
                    decoded, failed = kept[i]  # type: ignore[index,misc]
                    for rule_id in failed:  # counted here, once, for an admitted event only
                        stats.rule_errors[rule_id] += 1
                        log.error("rule %s failed on event %r", rule_id, event_id)
                else:
                    decoded = Decoded(NOT_DECODED, _view(line.raw, fast) if routed else {}, ts)
                routes = {key: [roles[role] for role in keyed] for _, key, keyed in routed}
                alerts = engine.step(shard, decoded, routes=routes, primary=own)
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
    """Every process's counters added up: each event is counted by its chunk's owner, each alert,
    suppression, rule error and request latency by the process holding its key (or owning its event).
    A counter added to ``EngineStats`` without a way to add it up here fails, instead of being lost."""
    stats = parts[0].stats
    for part in parts[1:]:
        for name in (f.name for f in fields(EngineStats)):
            mine, theirs = getattr(stats, name), getattr(part.stats, name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            elif type(mine) is int:
                setattr(stats, name, mine + theirs)
            elif name == "request_latency":
                for key, hist in theirs.items():
                    found = mine.get(key)
                    if found is None:
                        mine[key] = hist
                        continue
                    found.counts = [a + b for a, b in zip(found.counts, hist.counts, strict=True)]
                    found.sum += hist.sum
                    found.count += hist.count
            else:
                raise TypeError(f"EngineStats.{name}: no rule to add it up over processes")
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
        filtered = sum(part.filtered for part in parts)  # each chunk's owner counted its own
        result = BacktestResult(read=first.read, filtered=filtered, engine=engine, unwritten=first.unwritten)
        result.rejected.update(first.rejected)
        for _, alert in heapq.merge(*(_alerts_in(path) for path in files), key=lambda item: item[0]):
            result.alerts.append(alert)
            if output is not None:
                output.write(alert.to_json() + "\n")
    result.elapsed = time.monotonic() - started
    return result
