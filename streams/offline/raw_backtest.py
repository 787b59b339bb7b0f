"""``modwatch backtest --input NAME=PATH ... [--context DIR]``: the rules over raw audit logs.

The raw records of every input are mapped, enriched and merged in event time exactly as
``modwatch normalize`` does (``normalize.map_inputs``), then each event's JSON text is decoded and fed
to a fresh engine exactly as ``backtest`` reads a contract log (``backtest.run_backtest``): so the
alerts are the ones ``normalize --context`` followed by a plain ``backtest`` of its output raises,
byte for byte. Rejected raw records and the engine's id conflicts go to one dead-letter file.

Memory: as normalize, every mapped event of the run is held (its JSON text) before the engine runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from streams.core.decode import DEFAULT_LIMITS, Limits
from streams.core.incidents import IncidentEngine
from streams.core.ruleset import RuleSet
from streams.inputs.context import Context
from streams.inputs.mapping import Mapping
from streams.offline.backtest import BacktestResult, run_backtest
from streams.offline.logio import DeadLetterFile, Line
from streams.offline.normalize import MappedLine, NormalizeResult, check_inputs, map_inputs
from streams.offline.outputs import check_outputs


@dataclass
class RawBacktestResult:
    inputs: NormalizeResult
    backtest: BacktestResult


def run_raw_backtest(
    inputs: list[tuple[str, str]],
    mappings: dict[str, Mapping],
    ruleset: RuleSet,
    *,
    context: Context | None = None,
    output: IO[str] | None = None,
    deadletter: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
    lateness: float = 300.0,
    pseudonymize: bytes | None = None,
    incidents: IncidentEngine | None = None,
) -> RawBacktestResult:
    """Map, enrich and merge ``inputs`` ([(mapping id, path)]), then run the rules over the events.
    Unknown mapping ids raise ValueError, missing files LogFileError, before any work."""
    check_inputs(inputs, mappings)
    check_outputs([path for _, path in inputs], {"deadletter": deadletter})
    with DeadLetterFile(deadletter) as dead:
        stats, events = map_inputs(inputs, mappings, dead, limits, None, context)
        result = run_backtest([], ruleset, output=output, since=since, until=until, limits=limits,
                              lateness=lateness, pseudonymize=pseudonymize, events=_lines(events),
                              dead=dead, incidents=incidents)  # fmt: skip
    return RawBacktestResult(NormalizeResult(stats, len(events)), result)


def _lines(events: list[MappedLine]) -> Iterator[Line]:
    """Each event as the line normalize would have written (an id conflict's dead letter names the
    raw record's file and line)."""
    for event in events:
        yield Line(event.path, event.number, event.text.encode("utf-8"))
