"""The synthetic log generator: deterministic, valid against the contract, streaming, and honest.

"Honest" means the routine traffic stays on the right side of the case's patterns (ticketed, in the
requester's jurisdiction, no fabricated-report bursts), and the injected incidents are present,
once each, with the shape CASE.md describes. The committed example must be exactly what the
documented call produces.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.core.decode import Decoded, decode
from streams.core.events import ACTION_TYPES
from streams.offline.logio import iter_lines
from streams.tools.generate import SCENARIOS, generate, write_log

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "events.jsonl"
EXAMPLE_README = ROOT / "examples" / "README.md"
# Must match the call documented in examples/README.md (checked below).
EXAMPLE_CALL = 'write_log("examples/events.jsonl", 600, seed=7, incidents=True, events_per_day=15)'
EXAMPLE_KWARGS: dict[str, Any] = {"events": 600, "seed": 7, "incidents": True, "events_per_day": 15}

PERSONAL = {"name", "email", "ip_address", "phone"}
SEVERE = {"terrorism", "csam", "violence"}
NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()  # decode() bounds future times by "now"


def _decode_all(lines: list[bytes]) -> list[Decoded]:
    decoded = []
    for number, line in enumerate(lines, start=1):
        result = decode(line, now=NOW)
        assert isinstance(result, Decoded), f"line {number}: {result}"
        decoded.append(result)
    return decoded


def _lines(path: Path) -> list[bytes]:
    return [line.raw for line in iter_lines([str(path)])]


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def log_with_incidents() -> list[dict[str, Any]]:
    # Dumped and re-parsed so that tests see exactly what a file would hold, not shared dicts.
    return [json.loads(json.dumps(e)) for e in generate(4000, seed=3, incidents=True, events_per_day=100)]


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE.read_text().splitlines()]


# --- determinism and the contract --------------------------------------------------------------------


def test_same_seed_same_bytes_and_different_seed_different_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert write_log(str(a), 3000, seed=11, incidents=True) == 3000
    write_log(str(b), 3000, seed=11, incidents=True)
    write_log(str(c), 3000, seed=12, incidents=True)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("incidents", [False, True])
@pytest.mark.parametrize("events_per_day", [18.0, 2740.0])
def test_every_line_decodes_in_order_with_unique_ids(tmp_path: Path, incidents: bool,
                                                     events_per_day: float) -> None:
    path = tmp_path / "log.jsonl"
    write_log(str(path), 5000, seed=5, incidents=incidents, events_per_day=events_per_day)
    decoded = _decode_all(_lines(path))
    assert len(decoded) == 5000
    times = [d.ts for d in decoded]
    assert times == sorted(times)
    ids = [d.event.event_id for d in decoded]
    assert len(set(ids)) == len(ids)
    assert all(d.view["occurred_at"].endswith("Z") and len(d.view["occurred_at"]) == 24 for d in decoded)


INCIDENT_EVENTS = 27  # 7 tiananmen + 2 participant + 2 xinjiang + 5 fabricated + 1 + 1 + 8 exfiltration + 1


@pytest.mark.parametrize("events", [0, 1, 2, 999])
def test_exactly_the_requested_number_of_events(events: int) -> None:
    assert sum(1 for _ in generate(events, seed=1)) == events


@pytest.mark.parametrize("events", [INCIDENT_EVENTS, INCIDENT_EVENTS + 1, 999])
def test_incidents_count_towards_the_requested_number(events: int) -> None:
    log = list(generate(events, seed=1, incidents=True))
    assert len(log) == events
    assert sum(1 for e in log if "scenario" in e) == INCIDENT_EVENTS


def test_bad_arguments_fail_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="events"):
        generate(-1)
    with pytest.raises(ValueError, match="every incident"):
        generate(10, incidents=True)
    with pytest.raises(ValueError, match="events_per_day"):
        generate(10, events_per_day=0)
    with pytest.raises(ValueError, match="time zone"):
        generate(10, start=datetime(2020, 1, 1))
    path = tmp_path / "never.jsonl"
    with pytest.raises(ValueError):
        write_log(str(path), 10, incidents=True)
    assert not path.exists()


def test_span_follows_events_per_day() -> None:
    events = list(generate(20_000, seed=2, events_per_day=2000))
    days = (_ts(events[-1]) - _ts(events[0])) / 86400
    assert 9 <= days <= 11


# --- incidents ---------------------------------------------------------------------------------------


def test_incidents_present_iff_requested(log_with_incidents: list[dict[str, Any]]) -> None:
    assert {e["scenario"] for e in log_with_incidents if "scenario" in e} == set(SCENARIOS)
    assert not any("scenario" in e for e in generate(4000, seed=3, events_per_day=100))


def test_incidents_do_not_disturb_the_routine_draws() -> None:
    plain = [(e["event_type"], e["occurred_at"]) for e in generate(300, seed=4)]
    mixed = [(e["event_type"], e["occurred_at"]) for e in generate(300, seed=4, incidents=True)
             if "scenario" not in e]
    assert plain[:200] == mixed[:200]


def _scenario(log: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in log if e.get("scenario") == name]


def test_incident_shapes(log_with_incidents: list[dict[str, Any]]) -> None:
    log = log_with_incidents
    received = {e["request_id"] for e in log if e["event_type"] == "request.received"}

    request, *actions = _scenario(log, "tiananmen_shutdown")
    assert request["confidential"] and request["requester"]["jurisdiction"] == "CN"
    assert {t["region"] for t in request["targets"]} == {"US", "HK"} and len(request["targets"]) == 4
    assert Counter(a["event_type"] for a in actions) == {"meeting.shutdown": 4, "account.suspend": 2}
    for action in actions:
        assert 20 <= _ts(action) - _ts(request) < 60
        assert action["request_id"] == request["request_id"] and "ticket_id" not in action
        assert action["actor"]["id"] == "emp-liaison-01"

    request, export = _scenario(log, "participant_export")
    assert export["request_id"] == request["request_id"] and 60 < _ts(export) - _ts(request) < 600
    assert export["record_count"] == sum(export["subject_regions"].values()) == 4000
    assert export["destination"] == {"kind": "government", "name": "Ministry of Public Security",
                                     "region": "CN"}

    request, export = _scenario(log, "xinjiang_accounts")
    assert export["record_count"] == sum(export["subject_regions"].values()) == 23000
    assert export["destination"]["kind"] == "external" and _ts(export) - _ts(request) >= 3600

    *reports, shutdown = _scenario(log, "fabricated_reports")
    assert len(reports) == 4 and {r["category"] for r in reports} <= SEVERE
    assert _ts(reports[-1]) - _ts(reports[0]) <= 40 * 60
    assert len({r["target"]["id"] for r in reports} | {shutdown["target"]["id"]}) == 1
    for report in reports:
        if report["actor"]["kind"] == "user":
            age = _ts(report) - datetime.fromisoformat(report["actor"]["created_at"]).timestamp()
            assert 86400 <= age <= 3 * 86400
    assert "ticket_id" not in shutdown and shutdown["actor"]["region"] == "US"

    (grant,) = _scenario(log, "off_books_access")
    assert grant["remote"] and grant["system"]["region"] == "US" and grant["grantee"]["region"] == "CN"
    assert not {"ticket_id", "expires_at", "approved_by"} & grant.keys()

    (quarantine,) = _scenario(log, "quarantine_christian_group")
    assert quarantine["target"]["tags"] == ["religious"] and "ticket_id" not in quarantine

    exports = _scenario(log, "cumulative_exfiltration")
    assert len(exports) == 8 and all("ticket_id" in e and e["record_count"] <= 400 for e in exports)
    assert len({e["actor"]["id"] for e in exports}) == 1
    for e in exports:
        in_day = [x["record_count"] for x in exports if 0 <= _ts(x) - _ts(e) < 86400]
        assert sum(in_day) <= 900
        assert e["destination"]["region"] not in e["subject_regions"]
    assert 14 * 86400 <= _ts(exports[-1]) - _ts(exports[0]) <= 28 * 86400

    (shutdown,) = _scenario(log, "unlogged_request")
    assert shutdown["request_id"] not in received and "ticket_id" not in shutdown


# --- routine traffic stays routine -------------------------------------------------------------------


def test_routine_actions_and_exports_are_ticketed(log_with_incidents: list[dict[str, Any]]) -> None:
    for e in log_with_incidents:
        if "scenario" not in e and e["event_type"] in (*ACTION_TYPES, "data.export", "access.grant"):
            assert "ticket_id" in e, e["event_id"]


def test_routine_requests_are_answered_in_jurisdiction(log_with_incidents: list[dict[str, Any]]) -> None:
    requests = {e["request_id"]: e for e in log_with_incidents if e["event_type"] == "request.received"}
    answered = 0
    for e in log_with_incidents:
        if "scenario" in e or e["event_type"] == "request.received" or "request_id" not in e:
            continue
        request = requests[e["request_id"]]
        jurisdiction = request["requester"]["jurisdiction"]
        assert e["target"]["region"] == jurisdiction, e["event_id"]
        delay = _ts(e) - _ts(request)
        if request["requester"]["kind"] == "partner":
            assert 10 <= delay <= 50 and "csam" in e["target"]["tags"]
        else:
            assert delay >= 3600
        if e["event_type"] == "data.export":
            assert e["destination"]["region"] == jurisdiction and set(e["subject_regions"]) == {jurisdiction}
            assert e["record_count"] < 50
        answered += 1
    assert answered > 20


def test_routine_personal_exports_go_only_to_their_subjects_or_the_local_authority(
    log_with_incidents: list[dict[str, Any]],
) -> None:
    for e in log_with_incidents:
        if "scenario" in e or e["event_type"] != "data.export":
            continue
        if PERSONAL & set(e["fields"]):
            assert e["destination"]["kind"] in ("data_subject", "government"), e["event_id"]
            assert set(e["subject_regions"]) == {e["destination"]["region"]}
        else:
            assert e["subject_regions"] == {} and e["destination"]["kind"] == "internal"


def test_routine_reports_never_look_fabricated(log_with_incidents: list[dict[str, Any]]) -> None:
    by_target: dict[str, list[float]] = defaultdict(list)
    for e in log_with_incidents:
        if "scenario" in e or e["event_type"] != "report.filed" or e["category"] not in SEVERE:
            continue
        assert e["actor"]["kind"] == "user"
        assert _ts(e) - datetime.fromisoformat(e["actor"]["created_at"]).timestamp() > 365 * 86400
        by_target[e["target"]["id"]].append(_ts(e))
    assert all(len(times) < 3 for times in by_target.values())


def test_routine_tags_are_never_political(log_with_incidents: list[dict[str, Any]]) -> None:
    for e in log_with_incidents:
        if "scenario" not in e and "target" in e:
            assert not {"political", "religious", "tiananmen"} & set(e["target"].get("tags", ()))


# --- streaming and files -----------------------------------------------------------------------------


def test_generating_200k_events_keeps_memory_flat() -> None:
    tracemalloc.start()
    try:
        count = sum(1 for _ in generate(200_000, seed=9, incidents=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_gz_output_is_readable_and_reproducible(tmp_path: Path) -> None:
    plain, gz, gz2 = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_log(str(plain), 2000, seed=8, incidents=True)
    write_log(str(gz), 2000, seed=8, incidents=True)
    write_log(str(gz2), 2000, seed=8, incidents=True)
    assert gzip.decompress(gz.read_bytes()) == plain.read_bytes()
    assert gz.read_bytes() == gz2.read_bytes()
    assert len(_decode_all(_lines(gz))) == 2000


def test_progress_lines() -> None:
    out = io.StringIO()
    write_log("/dev/null", 100_000, seed=1, progress=out)
    assert out.getvalue().splitlines() == [
        "generated 100000/100000 events",
        "wrote 100000 events to /dev/null",
    ]


# --- the committed example ---------------------------------------------------------------------------


def test_example_is_what_the_documented_call_produces(tmp_path: Path) -> None:
    assert EXAMPLE_CALL in EXAMPLE_README.read_text()
    regenerated = tmp_path / "events.jsonl"
    write_log(str(regenerated), **EXAMPLE_KWARGS)
    assert regenerated.read_bytes() == EXAMPLE.read_bytes(), "regenerate the example (see its README)"


def test_example_spans_about_five_weeks(example: list[dict[str, Any]]) -> None:
    assert len(example) == 600
    assert 30 <= (_ts(example[-1]) - _ts(example[0])) / 86400 <= 40


def test_example_holds_the_routine_edge_cases(example: list[dict[str, Any]]) -> None:
    requests = {e["request_id"]: e for e in example if e["event_type"] == "request.received"}
    answers = [(requests[e["request_id"]], e) for e in example
               if "scenario" not in e and e["event_type"] != "request.received" and "request_id" in e]

    def ticketed_at_home(request: dict[str, Any], answer: dict[str, Any]) -> bool:
        jurisdiction = request["requester"]["jurisdiction"]
        return bool(answer.get("ticket_id")) and answer["target"]["region"] == jurisdiction

    assert any(ticketed_at_home(r, a) and r["requester"]["kind"] == "partner"
               and "csam" in a["target"]["tags"]
               and _ts(a) - _ts(r) <= 50
               for r, a in answers), "fast partner CSAM takedown"
    assert any(ticketed_at_home(r, a) and r["requester"]["kind"] != "partner"
               and _ts(a) - _ts(r) >= 86400 for r, a in answers), "lawful request answered days later"
    routine = [e for e in example if "scenario" not in e]
    exports = [e for e in routine if e["event_type"] == "data.export"]
    assert any(e["destination"]["kind"] == "internal" and e["record_count"] >= 5000
               and not PERSONAL & set(e["fields"]) for e in exports), "big internal non-personal export"
    assert any(e["destination"]["kind"] == "data_subject" for e in exports), "user's own data export"
    assert any(e["event_type"] == "access.grant" and e["scope"] == "oncall" and e["ticket_id"]
               for e in routine), "ticketed on-call grant"
    shutdowns = [_ts(e) for e in routine if e["event_type"] == "meeting.shutdown" and e.get("ticket_id")
                 and "zoombombing" in e["target"].get("tags", ())]
    assert any(sum(1 for t in shutdowns if 0 <= t - s <= 3600) >= 4 for s in shutdowns), "zoombombing burst"
