"""Deterministic synthetic event logs: routine trust-and-safety traffic, optionally with the case's incidents.

``generate`` yields event dicts in non-decreasing ``occurred_at`` order. Routine work starts as a
"primary" event (a report, a request, an export...) drawn at exponential gaps; its follow-ups (the
ticketed takedown hours later, the answer to a lawful request days later) wait in a heap until the
clock reaches them. Only pending follow-ups are held, so memory does not grow with the log.

Everything comes from ``random.Random`` seeded from ``seed`` (routine traffic and incidents from two
separate streams), event ids are sequence numbers in output order and no wall clock is read: the
same arguments always give the same bytes.

Every routine moderation action and export carries a ``ticket_id``. Incident events carry a
``scenario`` field, which the contract ignores, so that tests can find them (see examples/README.md).
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import io
import json
import random
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TextIO

from streams.tools.generate_routine import (
    _EVENTS_PER_PRIMARY,
    _PERSONAL,
    _ROUTINE_TABLE,
    _TS_STAFF,
    DAY,
    DEFAULT_EVENTS_PER_DAY,
    DEFAULT_START,
    HOUR,
    MINUTE,
    SECOND,
    Event,
    _employee,
    _event,
    _iso,
    _World,
)

__all__ = ["DEFAULT_EVENTS_PER_DAY", "DEFAULT_START", "INCIDENTS", "SCENARIOS", "Event", "generate", "write_log"]

# --- incidents: one function per case fact; each returns [(ms, event)] ------------------------------

_LIAISON = {"id": "emp-liaison-01", "kind": "employee", "region": "CN", "role": "liaison"}
_CN_GOVERNMENT = {"kind": "government", "jurisdiction": "CN"}
Plan = list[tuple[int, Event]]


def _tiananmen_shutdown(w: _World, t: int, span: int) -> Plan:
    rng = w.rng
    tags = ("political", "tiananmen")
    meetings = [w.target("meeting", region, tags) for region in ("US", "US", "US", "HK")]
    request_id = w.request_id()
    plan: Plan = [(t, _event("request.received", dict(_LIAISON), request_id=request_id,
                             requester={**_CN_GOVERNMENT, "agency": "Ministry of State Security"},
                             request_kind="takedown", targets=meetings, deadline_seconds=60,
                             confidential=True))]
    for meeting in meetings:
        plan.append((t + rng.randint(20 * SECOND, 50 * SECOND),
                     _event("meeting.shutdown", dict(_LIAISON), request_id=request_id, target=meeting)))
    for meeting in (meetings[0], meetings[3]):
        host = {"kind": "account", "id": meeting["owner_id"], "region": meeting["region"],
                "tags": ["political"]}
        plan.append((t + rng.randint(51 * SECOND, 59 * SECOND),
                     _event("account.suspend", dict(_LIAISON), request_id=request_id, target=host)))
    return plan


def _participant_export(w: _World, t: int, span: int) -> Plan:
    meeting = w.target("meeting", "US", ("political", "tiananmen"))
    request_id = w.request_id()
    agency = "Ministry of Public Security"
    return [
        (t, _event("request.received", dict(_LIAISON), request_id=request_id,
                   requester={**_CN_GOVERNMENT, "agency": agency}, request_kind="user_data",
                   targets=[meeting], confidential=True)),
        (t + w.rng.randint(3 * MINUTE, 9 * MINUTE),
         _event("data.export", _employee("emp-eng-031", "US", "engineering"),
                request_id=request_id, target=meeting, record_count=4000, fields=list(_PERSONAL),
                subject_regions={"US": 1900, "HK": 800, "CN": 700, "GB": 600},
                destination={"kind": "government", "name": agency, "region": "CN"})),
    ]


def _xinjiang_accounts(w: _World, t: int, span: int) -> Plan:
    request_id = w.request_id()
    later = min(w.rng.randint(2 * HOUR, 6 * HOUR), span // 50)
    return [
        (t, _event("request.received", dict(_LIAISON), request_id=request_id,
                   requester={**_CN_GOVERNMENT, "agency": "Cyberspace Administration of China"},
                   request_kind="user_data", confidential=True,
                   targets=[{"kind": "dataset", "id": "accounts", "region": "CN", "tags": ["xinjiang"]}])),
        (t + max(later, MINUTE),
         _event("data.export", _employee("emp-eng-007", "US", "engineering"),
                request_id=request_id, target={"kind": "dataset", "id": "accounts", "region": "US"},
                record_count=23000, fields=["account_id", "user_id"],
                subject_regions={"CN": 15000, "US": 3000, "HK": 1200, "TW": 900, "CA": 800, "GB": 800,
                                 "DE": 700, "AU": 600},
                destination={"kind": "external", "name": "spreadsheet", "region": "CN"})),
    ]


def _fabricated_reports(w: _World, t: int, span: int) -> Plan:
    rng = w.rng
    meeting = w.target("meeting", "US", ("religious",))
    reporters = [w.user(t, DAY, 3 * DAY, region) for region in ("HK", "US", "CA")]
    reporters.insert(1, dict(_LIAISON))
    offsets = (0, rng.randint(5 * MINUTE, 12 * MINUTE), rng.randint(15 * MINUTE, 25 * MINUTE),
               rng.randint(30 * MINUTE, 39 * MINUTE))
    plan: Plan = [(t + offset, _event("report.filed", reporter, target=meeting, category=category))
                  for offset, reporter, category in zip(offsets, reporters, ("terrorism", "violence", "csam",
                                                                             "terrorism"), strict=True)]
    plan.append((t + offsets[-1] + 10 * MINUTE,
                 _event("meeting.shutdown", _employee("emp-exec-02", "US", "executive"),
                        reason="reported for terrorism, violence and csam", target=meeting)))
    return plan


def _off_books_access(w: _World, t: int, span: int) -> Plan:
    return [(t, _event("access.grant", _employee("emp-eng-019", "US", "engineering"),
                       grantee=_employee("emp-liaison-01", "CN"), system={"id": "us-jump-07", "region": "US"},
                       scope="prod-servers", remote=True))]


def _quarantine_christian_group(w: _World, t: int, span: int) -> Plan:
    account = w.target("account", "US", ("religious",))
    return [(t, _event("account.quarantine", dict(_LIAISON), reason="flagged", target=account))]


def _cumulative_exfiltration(w: _World, t: int, span: int) -> Plan:
    rng = w.rng
    actor = _employee("emp-mk-004", "US", "marketing")
    spacing = min(3 * DAY, span * 6 // 70)  # 8 exports over ~3 weeks, compressed in short logs
    plan: Plan = []
    for i in range(8):
        records = rng.randint(200, 400)
        us = records * rng.randint(60, 80) // 100
        at = t + i * spacing + rng.randint(-spacing * 3 // 10, spacing * 3 // 10) if i else t
        plan.append((at, _event("data.export", dict(actor), ticket_id=w.ticket(),
                                target={"kind": "dataset", "id": "contacts", "region": "US"},
                                record_count=records, fields=["name", "email", "phone"],
                                subject_regions={"US": us, "GB": records - us},
                                destination={"kind": "external", "name": "lead-broker", "region": "SG"})))
    return plan


def _unlogged_request(w: _World, t: int, span: int) -> Plan:
    return [(t, _event("meeting.shutdown", dict(_TS_STAFF[16]), request_id=w.request_id(),
                       target=w.target("meeting", "US", ("political",))))]


# (scenario, builder, where in the span it starts); the order follows the case's chronology.
INCIDENTS: tuple[tuple[str, Callable[[_World, int, int], Plan], float], ...] = (
    ("cumulative_exfiltration", _cumulative_exfiltration, 0.06),
    ("quarantine_christian_group", _quarantine_christian_group, 0.12),
    ("off_books_access", _off_books_access, 0.22),
    ("fabricated_reports", _fabricated_reports, 0.34),
    ("xinjiang_accounts", _xinjiang_accounts, 0.46),
    ("unlogged_request", _unlogged_request, 0.58),
    ("participant_export", _participant_export, 0.70),
    ("tiananmen_shutdown", _tiananmen_shutdown, 0.86),
)
SCENARIOS: tuple[str, ...] = tuple(name for name, _, _ in INCIDENTS)


def _plan_incidents(w: _World, start: int, span: int) -> int:
    """Push every incident event into the heap; returns how many there are."""
    count = 0
    for name, build, share in INCIDENTS:
        t = start + int(span * (share + w.rng.uniform(-0.015, 0.015)))
        for ms, event in build(w, t, span):
            event["scenario"] = name
            w.at(ms, event)
            count += 1
    return count


def generate(events: int, seed: int = 0, incidents: bool = False, start: datetime = DEFAULT_START,
             events_per_day: float = DEFAULT_EVENTS_PER_DAY) -> Iterator[Event]:
    """Yield exactly ``events`` event dicts, oldest first, spanning about ``events / events_per_day`` days.

    With ``incidents`` the case's scenarios (``SCENARIOS``) are placed across the span; they count
    towards ``events``, so ``events`` must be at least their number. Their multi-day steps are
    compressed in logs shorter than about a month. Nothing is read from the wall clock.

    Treat the events as read-only: nested objects may be shared (a request and its answer name the
    same target dict).
    """
    # Checked here, not in the generator body, so that a bad call fails before any file is opened.
    if events < 0:
        raise ValueError("events must be >= 0")
    if events_per_day <= 0:
        raise ValueError("events_per_day must be > 0")
    if start.tzinfo is None:
        raise ValueError("start must carry a time zone")
    rng = random.Random(seed)
    world = _World(rng)
    start_ms = int(start.timestamp() * SECOND)
    routine_left = events
    if incidents:
        # Incidents draw from their own random stream, so that turning them on leaves the routine
        # draws alone; they share the heap and the id counters, so no id is given out twice.
        world.rng = random.Random(f"modwatch-incidents-{seed}")
        routine_left -= _plan_incidents(world, start_ms, int(events / events_per_day * DAY))
        world.rng = rng
        if routine_left < 0:
            raise ValueError(f"events must be at least {events - routine_left} to hold every incident")
    return _run(world, start_ms, routine_left, DAY * _EVENTS_PER_PRIMARY / events_per_day)


def _run(world: _World, start_ms: int, routine_left: int, mean_gap: float) -> Iterator[Event]:
    """The clock loop: draw primaries, release every heap entry the clock has passed."""
    rng, heap = world.rng, world.heap
    clock = float(start_ms)
    emitted = 0
    while True:
        now = int(clock)
        while heap and (heap[0][0] <= now or routine_left <= 0):
            ms, _, event = heapq.heappop(heap)
            if "scenario" not in event:
                if routine_left <= 0:
                    continue  # an answer that would fall after the end of the log
                routine_left -= 1
            emitted += 1
            event["event_id"] = f"ev-{emitted:06d}"
            event["occurred_at"] = _iso(ms)
            yield event
        if routine_left <= 0:
            return
        rng.choice(_ROUTINE_TABLE)(world, now)
        clock += rng.expovariate(1.0) * mean_gap


def write_log(path: str, events: int, seed: int = 0, incidents: bool = False, progress: TextIO | None = None,
              events_per_day: float = DEFAULT_EVENTS_PER_DAY, start: datetime = DEFAULT_START) -> int:
    """Stream a generated log to ``path`` as JSONL (gzip when it ends in ``.gz``); returns the count.

    The gzip header carries no file name or time, so a ``.gz`` log is as reproducible as a plain one.
    ``progress`` gets a line every 100,000 events and one at the end.
    """
    stream = generate(events, seed, incidents, start, events_per_day)  # raises before the file exists
    dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
    written = 0
    batch: list[str] = []
    with contextlib.ExitStack() as stack:
        out: io.BufferedWriter | gzip.GzipFile = stack.enter_context(open(path, "wb"))
        if path.endswith(".gz"):
            out = stack.enter_context(gzip.GzipFile("", "wb", compresslevel=6, fileobj=out, mtime=0))
        for event in stream:
            batch.append(dumps(event))
            written += 1
            if len(batch) == 1024:
                out.write(("\n".join(batch) + "\n").encode())
                batch.clear()
            if progress is not None and written % 100_000 == 0:
                progress.write(f"generated {written}/{events} events\n")
        if batch:
            out.write(("\n".join(batch) + "\n").encode())
    if progress is not None:
        progress.write(f"wrote {written} events to {path}\n")
    return written
