"""A mapping's fixtures: raw records with what each must become (``modwatch inputs test``).

File ``fixtures/<id>.yaml``::

    mapping: okta
    cases:
      - name: suspend maps to account.suspend
        record: {...raw record...}
        events: [{...the contract event(s), provenance included...}]
      - name: login is dropped
        record: {...}
        dropped: user.session.start
      - name: missing actor is rejected
        record: {...}
        rejected: contract_violation

Events are compared whole (exact JSON values), so a fixture pins the mapping's output; a change of
output is a change of the mapping's ``version``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.config.loader import read_yaml_file
from streams.core.ruleset import ConfigError
from streams.inputs.loader import describe_error, fixtures_file
from streams.inputs.mapping import Dropped, Mapped, Mapping, Rejected


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    record: Any
    input: str | None = None  # the source name written in the provenance (default: the mapping id)
    events: list[dict[str, Any]] | None = None
    dropped: str | None = None
    rejected: str | None = None

    @model_validator(mode="after")
    def _one_expectation(self) -> Case:
        if sum(x is not None for x in (self.events, self.dropped, self.rejected)) != 1:
            raise ValueError("give exactly one of events, dropped, rejected")
        return self


class FixtureFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mapping: str
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    mapping: str
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'} {self.mapping}: {self.name}"
        return "\n".join([head, *(f"    {p}" for p in self.problems)])


def load_fixtures(path: Path) -> FixtureFile:
    data = read_yaml_file(path, "fixtures file")
    try:
        return FixtureFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_error(exc)}") from None


def run_case(mapping: Mapping, case: Case) -> CaseResult:
    """Map the case's record and compare every outcome with what the case expects."""
    result = CaseResult(mapping.id, case.name)
    outcomes = mapping.map(case.record, case.input)
    got_events = [o.event for o in outcomes if isinstance(o, Mapped)]
    got_dropped = [o.action for o in outcomes if isinstance(o, Dropped)]
    got_rejected = [f"{o.reason} ({o.detail})" for o in outcomes if isinstance(o, Rejected)]
    if case.events is not None:
        if got_events != case.events:
            result.problems += _event_diff(case.events, got_events)
        if got_dropped or got_rejected:
            result.problems.append(f"also dropped {got_dropped} / rejected {got_rejected}")
    elif case.dropped is not None:
        if got_dropped != [case.dropped] or got_events or got_rejected:
            result.problems.append(f"expected dropped {case.dropped!r}; got events {len(got_events)}, "
                                   f"dropped {got_dropped}, rejected {got_rejected}")  # fmt: skip
    else:
        reasons = [o.reason for o in outcomes if isinstance(o, Rejected)]
        if reasons != [case.rejected]:
            result.problems.append(f"expected rejected {case.rejected!r}; got events {len(got_events)}, "
                                   f"dropped {got_dropped}, rejected {got_rejected}")  # fmt: skip
    return result


def _event_diff(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[str]:
    if len(expected) != len(got):
        return [f"expected {len(expected)} event(s), got {len(got)}: {json.dumps(got, sort_keys=True)}"]
    problems = []
    for number, (want, have) in enumerate(zip(expected, got, strict=True), start=1):
        for path in sorted(_differences(want, have)):
            problems.append(f"event {number}: {path}: expected {_get(want, path)!r}, got {_get(have, path)!r}")
    return problems


def _differences(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= _differences(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{prefix}{key}.")
        return out
    # bool vs int matter here: the contract's types are exact
    return set() if (a == b and type(a) is type(b)) else {prefix.rstrip(".")}


_ABSENT = "<absent>"


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data.get(part, _ABSENT) if isinstance(data, dict) else _ABSENT
    return data


def run_fixtures(directory: str | Path, mappings: dict[str, Mapping], ids: list[str] | None = None) -> list[CaseResult]:
    """Every case of the fixtures of ``ids`` (all mappings when None). A mapping without a fixtures
    file, or a fixtures file naming another mapping, is a failing result, not a skip."""
    results: list[CaseResult] = []
    for mapping_id in ids if ids is not None else sorted(mappings):
        mapping = mappings.get(mapping_id)
        if mapping is None:
            raise ConfigError(f"{directory}: no mapping '{mapping_id}' (have: {', '.join(sorted(mappings))})")
        path = fixtures_file(directory, mapping_id)
        if not path.is_file():
            results.append(CaseResult(mapping_id, "fixtures", [f"{path}: no fixtures file"]))
            continue
        fixture = load_fixtures(path)
        if fixture.mapping != mapping_id:
            results.append(CaseResult(mapping_id, "fixtures", [f"{path}: names mapping '{fixture.mapping}'"]))
            continue
        results += [run_case(mapping, case) for case in fixture.cases]
    return results
