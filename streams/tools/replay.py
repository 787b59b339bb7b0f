"""Replay JSONL event logs into Kafka: the library behind ``modwatch replay``.

Each line is decoded exactly as the live worker and ``backtest`` decode it. A rejected line goes to
the dead-letter file with its reason and is never sent. A valid event is produced unchanged (the
original bytes) to ``topic_for(event_type)`` with key ``key_for(view)``, Kafka timestamp = its
``occurred_at`` and the headers ``event_type`` and ``event_id``, so that consumers see event time,
not replay time.

Raw sources (``replay_raw``, ``modwatch replay --input NAME=PATH``): each raw record of a source's log
is produced to ``modwatch.raw.<NAME>`` as that source would deliver it, with the Kafka timestamp of its
event time, found by mapping it with the mapping ``NAME`` (``streams.inputs``). The value is the
record as JSON: a line holding one JSON value is sent unchanged, an item of a line holding an array
and a CSV row (header -> cell) are serialised. The key is the value's sha256 (32 hex characters, as
``modwatch receive zoom`` keys what Zoom posts), the header ``source`` names the input. A record the
mapping rejects (no time, a failed conversion...) goes to the dead-letter file with its reason and is
not sent. A record whose actions are all dropped (unmapped, or ``drop_when``) is sent, with the time
the mapping's ``time`` reads from it: a real source delivers it too, and the consumer drops and counts
it; one without a readable time is a ``missing_time`` dead letter. Several sources are interleaved in
event time, each in its own file's order.

Pacing, for both: as fast as the broker takes it (default), ``speed`` (event-time gaps divided by
``speed``, measured from the first sent record: 60 replays an hour a minute), or ``rate`` (records
per second).
"""

from __future__ import annotations

import hashlib
import heapq
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import kafka.errors
import orjson
from kafka import KafkaProducer

from streams.config.kafka import BrokerError, create_topics, kafka_client
from streams.core.decode import DEFAULT_LIMITS, Limits, Rejected
from streams.inputs import Dropped, Mapped, records
from streams.inputs.convert import ConversionError
from streams.inputs.expr import Compiled, Scope, compile_expr, compile_path
from streams.inputs.mapping import MISSING_TIME
from streams.offline.logio import DeadLetterFile, Line, check_readable, decode_line, iter_lines
from streams.offline.outputs import check_outputs
from streams.offline.progress import Progress

if TYPE_CHECKING:
    from streams.config.settings import KafkaSecurity
    from streams.inputs import Mapping as InputMapping

#: Raw records of source NAME go to ``RAW_TOPIC_PREFIX + NAME``.
RAW_TOPIC_PREFIX = "modwatch.raw."

#: Reason written to the dead-letter file for a valid event the broker did not accept.
SEND_FAILED = "send_failed"

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "client_id": "modwatch-replay",
    # acks=all (with kafka-python's default idempotence): a retried batch is neither duplicated nor
    # reordered within a partition, and a record counted as sent is on every in-sync replica. Replay
    # is a bulk, offline job, so the extra round trip costs nothing that matters; with one broker
    # (Tansu) it is the same as acks=1 anyway.
    "acks": "all",
    # Throughput: let records gather into large batches. 10 ms of linger is invisible next to paced
    # replay's own sleeps, and at full speed batches fill long before it expires.
    "linger_ms": 10,
    "batch_size": 256 * 1024,
}
_CONNECT_TIMEOUT = 10.0  # seconds: fail fast, with a clear message, when nothing answers at the bootstrap address

_SLEEP_SLICE = 0.2  # long paced sleeps are sliced so progress keeps moving


class ReplayError(RuntimeError):
    """Replay could not run or finish: broker unreachable, topic creation failed, flush timed out."""


@dataclass
class ReplayStats:
    """What one replay did. ``sent`` counts records the broker acknowledged (in a dry run: would send)."""

    lines: int = 0
    sent: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    filtered: int = 0
    dropped: int = 0  # raw records sent although every action in them is dropped (unmapped, drop_when)
    failed: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    topics_created: list[str] = field(default_factory=list)
    bytes_read: int = 0
    unwritten: int = 0  # rejected lines not written: the dead-letter file reached its size cap
    elapsed: float = 0.0
    dry_run: bool = False

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def rate(self) -> float:
        """Events sent per second of wall time."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        """One human line (two when something failed), printed at the end of every replay."""
        verb = "would send" if self.dry_run else "sent"
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items()))
        text = (
            f"replay: {verb} {self.sent} events from {self.lines} lines in {self.elapsed:.1f} s "
            f"({self.rate:,.0f} events/s); rejected {self.rejected_total}"
            + (f" ({reasons})" if reasons else "")
            + f"; filtered {self.filtered}"
            + (f"; {self.dropped} of them with only dropped actions" if self.dropped else "")
        )
        if self.unwritten:
            text += f"\nreplay: {self.unwritten} rejected lines were not written: the dead-letter file reached its cap"
        if self.failed:
            text += (
                f"\nreplay: {self.failed} events were not acknowledged by the broker "
                "(those it refused are in the dead-letter file)"
            )
        return text


class _Deliveries:
    """Acknowledgements and failures reported by the producer's I/O thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acked: Counter[str] = Counter()
        self.failed: list[tuple[Line, str]] = []

    def track(self, future: Any, topic: str, line: Line) -> None:
        def ok(_metadata: object) -> None:
            with self._lock:
                self.acked[topic] += 1

        def failed(exc: BaseException) -> None:
            with self._lock:
                self.failed.append((line, _describe(exc)))

        future.add_callback(ok)
        future.add_errback(failed)

    def take_failed(self) -> list[tuple[Line, str]]:
        with self._lock:
            taken, self.failed = self.failed, []
        return taken


def _describe(exc: BaseException) -> str:
    # Kafka client errors name the condition, never the record: safe for a dead-letter detail.
    return f"{type(exc).__name__}: {exc}"[:300]


def _uncompressed_size(path: Path) -> int:
    """Bytes a log yields when read: gzip's trailer holds the size (mod 4 GiB) of the last member."""
    size = path.stat().st_size
    if path.suffix != ".gz" or size < 18:
        return size
    with path.open("rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return size
        fh.seek(-4, 2)
        isize: int = struct.unpack("<I", fh.read(4))[0]
    return isize


def _bound(value: datetime | None, name: str) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone")
    return value.timestamp()


def _check_options(speed: float | None, rate: float | None, partitions: int, since: datetime | None,
                   until: datetime | None) -> None:  # fmt: skip
    _bound(since, "since"), _bound(until, "until")
    if speed is not None and rate is not None:
        raise ValueError("speed and rate are mutually exclusive")
    if speed is not None and not speed > 0:
        raise ValueError("speed must be > 0")
    if rate is not None and not rate > 0:
        raise ValueError("rate must be > 0")
    if partitions < 1:
        raise ValueError("partitions must be >= 1")


class _Sender:
    """The producer side of a replay: topic creation on first use, send, delivery tracking."""

    def __init__(
        self,
        bootstrap: str,
        partitions: int,
        producer_config: Mapping[str, Any] | None,
        security: KafkaSecurity | None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.partitions = partitions
        self.deliveries = _Deliveries()
        self.created: list[str] = []
        self._known: set[str] = set()
        config = {**_PRODUCER_DEFAULTS, **(producer_config or {})}
        timeout = config.pop("bootstrap_timeout_ms", _CONNECT_TIMEOUT * 1000) / 1000
        try:
            self.producer = kafka_client(KafkaProducer, bootstrap, security, timeout=timeout, **config)
        except BrokerError as exc:
            raise ReplayError(str(exc)) from exc

    def send(self, topic: str, line: Line, value: bytes, key: bytes | None, ts: float,
             headers: list[tuple[str, bytes]], dead: DeadLetterFile) -> None:  # fmt: skip
        """Called for each record that passed decoding (or mapping) and the time filter, after pacing."""
        if topic not in self._known:
            try:
                self.created += create_topics(self.bootstrap, {topic: self.partitions}, security=self.security)
            except BrokerError as exc:
                raise ReplayError(str(exc)) from exc
            self._known.add(topic)
        try:
            future = self.producer.send(topic, value=value, key=key, timestamp_ms=round(ts * 1000), headers=headers)
        except kafka.errors.MessageSizeTooLargeError as exc:
            # Refused before it left this process: the line is kept as a dead letter, replay goes on.
            dead.write(line, Rejected(SEND_FAILED, _describe(exc)))
            return
        except kafka.errors.KafkaError as exc:
            # Anything else here (a metadata timeout) means the broker is gone: every further line
            # would block for max_block_ms, so stop with a clear message instead.
            raise ReplayError(f"broker at {self.bootstrap} stopped taking records: {exc}") from exc
        self.deliveries.track(future, topic, line)

    def write_failures(self, dead: DeadLetterFile) -> None:
        """Dead-letter the records the broker refused; called from the replay thread only."""
        for line, detail in self.deliveries.take_failed():
            dead.write(line, Rejected(SEND_FAILED, detail))

    def flush(self, timeout: float) -> None:
        try:
            self.producer.flush(timeout=timeout)
        except kafka.errors.KafkaError as exc:
            raise ReplayError(
                f"broker at {self.bootstrap} did not acknowledge all records within {timeout:g} s: {exc}"
            ) from exc

    def close(self, timeout: float) -> None:
        self.producer.close(timeout=timeout)


@dataclass(frozen=True, slots=True)
class _Record:
    """One record to send: its topic, the line it came from (for a dead letter), what goes on the wire."""

    topic: str
    line: Line
    value: bytes
    key: bytes | None
    ts: float
    headers: list[tuple[str, bytes]]
    dropped: bool = False  # a raw record whose actions are all dropped


_Source = Callable[[DeadLetterFile, ReplayStats], Iterator[_Record]]


def replay(
    paths: list[str],
    bootstrap: str,
    topic_for: Callable[[str], str],
    key_for: Callable[[dict[str, Any]], bytes | None],
    *,
    partitions: int = 1,
    speed: float | None = None,
    rate: float | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    deadletter: str | None = None,
    producer_config: Mapping[str, Any] | None = None,
    security: KafkaSecurity | None = None,
    progress: bool | None = None,
    dry_run: bool = False,
    flush_timeout: float = 60.0,
    out: TextIO = sys.stderr,
) -> ReplayStats:
    """Replay ``paths`` (JSONL, plain or .gz, in order) to the broker at ``bootstrap``.

    ``since`` is inclusive and ``until`` exclusive; both must be time-zone aware. Events outside are
    counted as ``filtered`` (found by scanning: seeking by time is not possible in a log file).
    Missing topics are created with ``partitions`` partitions before their first record is sent.
    ``progress`` defaults to "``out`` is a terminal"; the summary line is always written to ``out``.
    ``security`` is the settings' ``kafka`` (TLS, SASL) for every client replay makes.

    Raises ``ValueError`` for contradictory options, :class:`~streams.offline.logio.LogFileError` for an
    unreadable input and :class:`ReplayError` when the broker cannot be reached or does not take
    the records in time. A record the broker refuses is a dead letter (reason ``send_failed``).
    """
    _check_options(speed, rate, partitions, since, until)
    check_readable(paths)
    check_outputs(paths, {"deadletter": deadletter})

    def events(dead: DeadLetterFile, stats: ReplayStats) -> Iterator[_Record]:
        for line in iter_lines(paths):
            stats.lines += 1
            stats.bytes_read += line.size + 1
            result = decode_line(line)
            if isinstance(result, Rejected):
                stats.rejected[result.reason] = stats.rejected.get(result.reason, 0) + 1
                dead.write(line, result)
                continue
            event = result.event
            headers = [("event_type", event.event_type.encode()), ("event_id", event.event_id.encode())]
            yield _Record(topic_for(event.event_type), line, line.raw, key_for(result.view), result.ts, headers)

    return _run(events, bootstrap, sum(_uncompressed_size(Path(p)) for p in paths), partitions=partitions,
                speed=speed, rate=rate, since=since, until=until, deadletter=deadletter,
                producer_config=producer_config, security=security, progress=progress, dry_run=dry_run,
                flush_timeout=flush_timeout, out=out)  # fmt: skip


def replay_raw(
    inputs: list[tuple[str, str]],
    mappings: Mapping[str, InputMapping],
    bootstrap: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
    partitions: int = 1,
    speed: float | None = None,
    rate: float | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    deadletter: str | None = None,
    producer_config: Mapping[str, Any] | None = None,
    security: KafkaSecurity | None = None,
    progress: bool | None = None,
    dry_run: bool = False,
    flush_timeout: float = 60.0,
    out: TextIO = sys.stderr,
) -> ReplayStats:
    """Replay raw logs ``inputs`` ([(source name, path)]) to ``modwatch.raw.<name>``, each record with
    the Kafka timestamp of its event time (module docstring). An unknown source name is a ValueError
    naming the known ones; the other options, errors and the summary are :func:`replay`'s."""
    _check_options(speed, rate, partitions, since, until)
    for name, _ in inputs:
        if name not in mappings:
            raise ValueError(f"no mapping '{name}' (have: {', '.join(sorted(mappings))})")
    paths = [path for _, path in inputs]
    check_readable(paths)
    check_outputs(paths, {"deadletter": deadletter})

    def merged(dead: DeadLetterFile, stats: ReplayStats) -> Iterator[_Record]:
        streams = [_raw_records(name, path, mappings[name], limits, dead, stats) for name, path in inputs]
        # Each source keeps its own order; sources are interleaved by event time (lazily: bounded memory).
        return heapq.merge(*streams, key=lambda record: record.ts)

    return _run(merged, bootstrap, sum(_uncompressed_size(Path(p)) for p in paths), partitions=partitions,
                speed=speed, rate=rate, since=since, until=until, deadletter=deadletter,
                producer_config=producer_config, security=security, progress=progress, dry_run=dry_run,
                flush_timeout=flush_timeout, out=out)  # fmt: skip


def _raw_records(name: str, path: str, mapping: InputMapping, limits: Limits, dead: DeadLetterFile,
                 stats: ReplayStats) -> Iterator[_Record]:  # fmt: skip
    """The sendable raw records of one source, in file order; rejections written to ``dead``."""
    topic, headers = RAW_TOPIC_PREFIX + name, [("source", name.encode())]
    read_time = _time_reader(mapping)

    def reject(line: Line, rejected: Rejected) -> None:
        stats.rejected[rejected.reason] = stats.rejected.get(rejected.reason, 0) + 1
        dead.write(line, Rejected(rejected.reason, f"{name}: {rejected.detail}"))

    def lines() -> Iterator[Line]:
        for line in iter_lines([path], limits.max_bytes):
            stats.bytes_read += line.size + 1
            if line.oversize is None:
                yield line
            else:  # never held by iter_lines: its length and digest only
                stats.lines += 1
                reject(line, line.oversize.rejected(limits.max_bytes))

    for raw in records(lines(), mapping.format, limits):
        stats.lines += 1
        line = Line(raw.path, raw.number, raw.raw)
        if raw.error is not None:
            reject(line, raw.error)
            continue
        outcomes = mapping.map(raw.record, name, limits)
        for outcome in outcomes:
            if isinstance(outcome, Rejected):
                reject(line, outcome)
        times = [o.ts for o in outcomes if isinstance(o, Mapped)]
        dropped = not times and all(isinstance(o, Dropped) for o in outcomes)
        if dropped:
            ts = read_time(raw.record)
            if ts is None:
                reject(line, Rejected(MISSING_TIME, "every action dropped, and no time to send the record at"))
                continue
            times = [ts]
        if not times:
            continue  # rejected: never sent
        single = mapping.format == "json" and not raw.raw.lstrip().startswith(b"[")
        value = raw.raw if single else orjson.dumps(raw.record)
        key = hashlib.sha256(value).hexdigest()[:32].encode()
        yield _Record(topic, line, value, key, min(times), headers, dropped)


def _time_reader(mapping: InputMapping) -> Callable[[Any], float | None]:
    """The event time of a record whose actions are all dropped (so the mapper gave none): the
    mapping's ``time`` read from it as for a mapped action (its first inner record with ``unwrap``,
    its first item with ``explode``); None when there is none."""
    spec = mapping.spec
    read = compile_expr(spec.time)
    unwrap = compile_path(spec.unwrap) if spec.unwrap else None
    explode: Compiled | None = compile_path(spec.explode) if spec.explode else None

    def time_of(record: Any) -> float | None:
        inner = unwrap(Scope(record)) if unwrap is not None else [record]
        first = next((r for r in inner if isinstance(r, dict)), None) if isinstance(inner, list) else None
        if first is None:
            return None
        items = explode(Scope(first)) if explode is not None else None
        scope = Scope(first, items[0], True) if isinstance(items, list) and items else Scope(first)
        try:
            value = read(scope)
            when = datetime.fromisoformat(value) if isinstance(value, str) else None
        except (ConversionError, ValueError):
            return None
        return when.timestamp() if when is not None and when.tzinfo is not None else None

    return time_of


def _run(source: _Source, bootstrap: str, total_bytes: int, *, partitions: int, speed: float | None,
         rate: float | None, since: datetime | None, until: datetime | None, deadletter: str | None,
         producer_config: Mapping[str, Any] | None, security: KafkaSecurity | None, progress: bool | None,
         dry_run: bool, flush_timeout: float, out: TextIO) -> ReplayStats:  # fmt: skip
    """The loop both replays share: time filter, pacing, sending, delivery tracking, the summary."""
    lo, hi = _bound(since, "since"), _bound(until, "until")
    stats = ReplayStats(dry_run=dry_run)
    bar = Progress("replay", out)
    bar.enabled = out.isatty() if progress is None else progress
    bar.total_bytes = total_bytes
    sender = None if dry_run else _Sender(bootstrap, partitions, producer_config, security)
    started = time.monotonic()
    anchor: tuple[float, float] | None = None  # (event time, wall time) of the first record sent
    attempted = 0
    aborted = True
    try:
        with DeadLetterFile(deadletter) as dead:
            for record in source(dead, stats):
                if (lo is not None and record.ts < lo) or (hi is not None and record.ts >= hi):
                    stats.filtered += 1
                else:
                    if speed is not None:
                        anchor = anchor or (record.ts, time.monotonic())
                        _sleep_until(anchor[1] + (record.ts - anchor[0]) / speed, bar)
                    elif rate is not None:
                        _sleep_until(started + attempted / rate, bar)
                    attempted += 1
                    stats.dropped += record.dropped
                    if sender is None:
                        stats.by_topic[record.topic] = stats.by_topic.get(record.topic, 0) + 1
                    else:
                        sender.send(record.topic, record.line, record.value, record.key, record.ts, record.headers,
                                    dead)  # fmt: skip
                        sender.write_failures(dead)
                bar.count, bar.done_bytes = attempted, stats.bytes_read
                bar.update()
            if sender is not None:
                sender.flush(flush_timeout)
                sender.write_failures(dead)
            stats.unwritten = dead.unwritten
        aborted = False
    finally:
        if sender is None:
            stats.sent = attempted
        else:
            # After an error, do not wait for records that may never be acknowledged.
            sender.close(0 if aborted else flush_timeout)
            stats.by_topic = dict(sender.deliveries.acked)
            stats.sent = sum(stats.by_topic.values())
            stats.failed = attempted - stats.sent
            stats.topics_created = sender.created
        stats.elapsed = time.monotonic() - started
        bar.done()
        out.write(("replay aborted: " if aborted else "") + stats.summary() + "\n")
        out.flush()
    return stats


def _sleep_until(deadline: float, bar: Progress) -> None:
    """Sleep until ``deadline`` (monotonic), in slices so that the progress line keeps moving."""
    while (delay := deadline - time.monotonic()) > 0:
        time.sleep(min(delay, _SLEEP_SLICE))
        bar.update()


__all__ = ["RAW_TOPIC_PREFIX", "SEND_FAILED", "ReplayError", "ReplayStats", "replay", "replay_raw"]
