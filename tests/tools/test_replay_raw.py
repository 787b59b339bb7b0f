"""modwatch replay --input NAME=PATH: raw records to modwatch.raw.NAME at their mapped event time, against
a real broker; rejected records are dead letters and not sent, records with only dropped actions are sent."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.cli.main import main
from streams.config.kafka import consume_all
from streams.inputs import load_mappings, resolve_inputs_dir
from streams.tools.broker import EmbeddedBroker
from streams.tools.replay import replay_raw

T0 = 1_591_185_600_000  # 2020-06-03T12:00:00Z in ms


def _zoom(event: str, ts: int | None, **obj: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "payload": {"account_id": "acc-1", "operator": "admin@example.com",
                                                        "operator_id": "op-1", "object": {"id": 1, **obj}}}  # fmt: skip
    if ts is not None:
        body["event_ts"] = ts
    return body


ZOOM_LINES = [
    json.dumps(_zoom("meeting.deleted", T0 + 1_000, uuid="u-1", host_id="h-1")),  # mapped
    json.dumps(_zoom("meeting.ended", T0 + 2_000, uuid="u-2")),  # unmapped action: dropped, sent
    json.dumps(_zoom("user.updated", T0 + 3_000, email="x@example.com")),  # no role: drop_when, sent
    '{"event": "meeting.deleted", "event_ts": ',  # invalid JSON: dead letter
    json.dumps(_zoom("meeting.deleted", None, uuid="u-5")),  # no time: dead letter
    json.dumps([_zoom("user.deactivated", T0 + 4_000, email="a@example.com"),
                _zoom("user.deleted", T0 + 5_000, email="b@example.com")]),  # an array: one record per item
]  # fmt: skip
CSV = """request_id,received_at,agency,requester_kind,jurisdiction,request_kind,targets
REQ-1,2020-06-03T12:00:00.500Z,Ministry,government,CN,takedown,meeting:809321987:US
REQ-2,2020-06-03T12:00:02.500Z,Court,court,DE,preservation,account:user-42:DE
REQ-3,2020-06-03T12:00:03.500Z,Court,court,Atlantis,takedown,account:user-43:DE
"""


@pytest.fixture
def logs(tmp_path: Path) -> list[tuple[str, str]]:
    zoom = tmp_path / "zoom.jsonl"
    zoom.write_text("\n".join(ZOOM_LINES) + "\n")
    register = tmp_path / "register.csv"
    register.write_text(CSV)
    return [("zoom-webhook", str(zoom)), ("requests-csv", str(register))]


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)


@pytest.mark.broker
def test_raw_records_arrive_on_their_topics_at_their_event_times(broker: EmbeddedBroker, logs: list[tuple[str, str]],
                                                                 tmp_path: Path) -> None:  # fmt: skip
    dead = tmp_path / "dead.jsonl"
    out = io.StringIO()
    stats = replay_raw(logs, load_mappings(resolve_inputs_dir(None)), broker.bootstrap, deadletter=str(dead), out=out)

    zoom = consume_all(broker.bootstrap, "modwatch.raw.zoom-webhook", idle_seconds=1.0)
    items = json.loads(ZOOM_LINES[5])
    expected = [(ZOOM_LINES[0].encode(), T0 + 1_000), (ZOOM_LINES[1].encode(), T0 + 2_000),
                (ZOOM_LINES[2].encode(), T0 + 3_000), (items[0], T0 + 4_000), (items[1], T0 + 5_000)]  # fmt: skip
    got = [(r.value if i < 3 else json.loads(r.value), r.timestamp) for i, r in enumerate(zoom)]
    assert got == expected
    assert all(r.key == hashlib.sha256(r.value).hexdigest()[:32].encode() for r in zoom)
    assert {dict(r.headers)["source"] for r in zoom} == {b"zoom-webhook"}

    register = consume_all(broker.bootstrap, "modwatch.raw.requests-csv", idle_seconds=1.0)
    rows = [(json.loads(r.value)["request_id"], r.timestamp) for r in register]
    assert rows == [("REQ-1", _ms("2020-06-03T12:00:00.500Z")), ("REQ-2", _ms("2020-06-03T12:00:02.500Z"))]
    assert json.loads(register[0].value)["targets"] == "meeting:809321987:US"  # the row as the mapping reads it

    reasons = sorted(json.loads(line)["reason"] for line in dead.read_text().splitlines())
    assert reasons == ["conversion_failed", "invalid_json", "missing_time"]
    assert (stats.sent, stats.dropped, stats.rejected_total, stats.failed) == (7, 3, 3, 0)
    assert stats.by_topic == {"modwatch.raw.zoom-webhook": 5, "modwatch.raw.requests-csv": 2}
    assert "3 of them with only dropped actions" in out.getvalue()


def test_dry_run_and_the_time_filter_need_no_broker(logs: list[tuple[str, str]]) -> None:
    mappings = load_mappings(resolve_inputs_dir(None))
    since = datetime.fromtimestamp((T0 + 2_000) / 1000, UTC)
    stats = replay_raw(logs, mappings, "127.0.0.1:1", since=since, dry_run=True, out=io.StringIO())
    assert stats.by_topic == {"modwatch.raw.zoom-webhook": 4, "modwatch.raw.requests-csv": 1}
    assert stats.filtered == 2
    with pytest.raises(ValueError, match="no mapping 'nope'"):
        replay_raw([("nope", logs[0][1])], mappings, "127.0.0.1:1", dry_run=True, out=io.StringIO())


def test_cli(logs: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    inputs = [f"--input={name}={path}" for name, path in logs]
    assert main(["replay", *inputs, "--dry-run"]) == 0  # (replay's summary goes to the stderr of its import)
    assert main(["replay", *inputs, "--dry-run", "--strict"]) == 1
    assert main(["replay", *inputs, logs[0][1], "--dry-run"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["replay", "--input", f"nope={logs[0][1]}", "--dry-run"]) == 2
    assert "no mapping 'nope'" in capsys.readouterr().err
    assert main(["replay", "--dry-run"]) == 2
