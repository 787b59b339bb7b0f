"""``modwatch normalize``: raw logs of one or several sources -> one JSONL log of contract events.

Each input is a source name (a mapping id) and a file (plain or .gz, read by ``logio.iter_lines``).
Every record is mapped (``streams.inputs``); mapped events are merged in event time (occurred_at,
then the source name, then the position in its file, so the output is the same for the same inputs)
and written one per line as the mapper built them (keys sorted). Rejected records go to the
dead-letter file with their reason; dropped ones are counted per source and action. With context
tables (``streams.inputs.context``), each mapped event is enriched and decoded again before it is
held; failed lookups are counted per source and table.

Memory: all mapped events of a run are held and sorted in memory before writing, as their JSON text
(bounded memory, a k-way merge of per-source sorted runs, is not done yet). ``map_inputs`` is the same
work for ``backtest --input`` (streams/offline/raw_backtest.py), which feeds the engine instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from streams.core.decode import DEFAULT_LIMITS, Limits, Rejected
from streams.inputs.context import Context, ContextStats, enrich_mapped
from streams.inputs.mapping import Dropped, Mapped, Mapping
from streams.inputs.reader import records
from streams.offline.logio import DeadLetterFile, Line, check_readable, iter_lines


@dataclass
class SourceStats:
    name: str
    path: str
    read: int = 0  # records read (a JSON array line counts each item)
    mapped: int = 0  # events written
    dropped: Counter[str] = field(default_factory=Counter)  # by source action
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    context: ContextStats = field(default_factory=ContextStats)  # failed lookups by table


@dataclass
class NormalizeResult:
    sources: list[SourceStats]
    written: int = 0


@dataclass(frozen=True, slots=True)
class MappedLine:
    """One event in event-time order: the raw record's file and line, the event's JSON text."""

    path: str
    number: int
    text: str


def check_inputs(inputs: list[tuple[str, str]], mappings: dict[str, Mapping]) -> None:
    """Before any work: an unknown source name raises ValueError naming the known ones, a missing
    file LogFileError."""
    for name, _ in inputs:
        if name not in mappings:
            raise ValueError(f"no mapping '{name}' (have: {', '.join(sorted(mappings))})")
    check_readable([path for _, path in inputs])


def normalize(inputs: list[tuple[str, str]], mappings: dict[str, Mapping], output: IO[str],
              deadletter: str | None = None, limits: Limits = DEFAULT_LIMITS,
              now: float | None = None, context: Context | None = None) -> NormalizeResult:  # fmt: skip
    """Map (and with ``context`` enrich) every record of ``inputs`` ([(source name, path)]), write the
    events to ``output`` in event time, rejected records to ``deadletter``. Inputs are checked first
    (``check_inputs``)."""
    check_inputs(inputs, mappings)
    with DeadLetterFile(deadletter) as dead:
        stats, events = map_inputs(inputs, mappings, dead, limits, now, context)
    for event in events:
        output.write(event.text + "\n")
    return NormalizeResult(stats, len(events))


def map_inputs(inputs: list[tuple[str, str]], mappings: dict[str, Mapping], dead: DeadLetterFile,
               limits: Limits = DEFAULT_LIMITS, now: float | None = None,
               context: Context | None = None) -> tuple[list[SourceStats], list[MappedLine]]:  # fmt: skip
    """Every mapped (and enriched) event of ``inputs``, merged in event time (occurred_at, source
    name, order of the inputs, position in the file); rejected records written to ``dead``."""
    pending: list[tuple[float, str, int, int, str, int, str]] = []
    stats: list[SourceStats] = []
    for order, (name, path) in enumerate(inputs):
        mapping, source = mappings[name], SourceStats(name, path)
        stats.append(source)
        position = 0
        lines = _held(iter_lines([path], limits.max_bytes), name, source, dead, limits)
        for raw in records(lines, mapping.format, limits):
            source.read += 1
            line = Line(raw.path, raw.number, raw.raw)
            outcomes = [raw.error] if raw.error is not None else mapping.map(raw.record, name, limits, now)
            for outcome in outcomes:
                if isinstance(outcome, Mapped):
                    if context is not None:
                        outcome = enrich_mapped(outcome, context, source.context, limits, now)
                    source.mapped += 1
                    pending.append((outcome.ts, name, order, position, raw.path, raw.number, outcome.line))
                    position += 1
                elif isinstance(outcome, Dropped):
                    source.dropped[outcome.action] += 1
                else:
                    assert isinstance(outcome, Rejected)
                    source.rejected[outcome.reason] += 1
                    dead.write(line, Rejected(outcome.reason, f"{name}: {outcome.detail}"))
    pending.sort(key=lambda item: item[:4])
    return stats, [MappedLine(path, number, text) for *_, path, number, text in pending]


def _held(lines: Iterator[Line], name: str, source: SourceStats, dead: DeadLetterFile,
          limits: Limits) -> Iterator[Line]:  # fmt: skip
    """The lines the reader parses. An over-long line was never held (``iter_lines`` keeps its length and
    digest only): it is a ``too_large`` dead letter here."""
    for line in lines:
        if line.oversize is None:
            yield line
            continue
        source.read += 1
        rejected = line.oversize.rejected(limits.max_bytes)
        source.rejected[rejected.reason] += 1
        dead.write(line, Rejected(rejected.reason, f"{name}: {rejected.detail}"))


def format_summary(result: NormalizeResult, top: int = 10) -> list[str]:
    """Per source: records read, events mapped, dropped as unmapped by action (top ``top``), rejected."""
    lines = []
    for s in result.sources:
        rejected = ", ".join(f"{reason} {n}" for reason, n in s.rejected.most_common()) or "0"
        lines.append(f"{s.name} ({s.path}): {s.read} read, {s.mapped} mapped, "
                     f"{sum(s.dropped.values())} dropped, {sum(s.rejected.values())} rejected")  # fmt: skip
        if s.dropped:
            shown = s.dropped.most_common(top)
            more = len(s.dropped) - len(shown)
            lines.append("  dropped by action (unmapped or drop_when): " + ", ".join(f"{a} {n}" for a, n in shown)
                         + (f" (+{more} more actions)" if more > 0 else ""))  # fmt: skip
        if s.rejected:
            lines.append(f"  rejected: {rejected}")
        if s.context.misses:
            misses = ", ".join(f"{table} {n}" for table, n in sorted(s.context.misses.items()))
            lines.append(f"  context misses (kept, tagged context:unknown_*): {misses}")
        if s.context.invalid:
            lines.append(f"  context: {s.context.invalid} events kept as mapped (enriched, they were invalid)")
    lines.append(f"{result.written} events written")
    return lines
