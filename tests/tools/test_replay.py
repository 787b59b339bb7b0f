"""streams.tools.replay against a real embedded broker: exact records, dead letters, filters and pacing."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.config.kafka import admin_client, consume_all
from streams.tools.broker import EmbeddedBroker, free_port
from streams.tools.replay import ReplayError, replay

pytestmark = pytest.mark.broker


def _actor(actor_id: str) -> dict[str, str]:
    return {"id": actor_id, "kind": "employee", "region": "US"}


def _suspend(event_id: str, at: str, actor: str = "emp-1") -> dict[str, Any]:
    return {
        "event_type": "account.suspend",
        "event_id": event_id,
        "occurred_at": at,
        "actor": _actor(actor),
        "target": {"kind": "account", "id": f"acct-{event_id}", "region": "DE"},
        "reason": "spam",
    }


def _export(event_id: str, at: str, actor: str = "emp-2") -> dict[str, Any]:
    return {
        "event_type": "data.export",
        "event_id": event_id,
        "occurred_at": at,
        "actor": _actor(actor),
        "target": {"kind": "dataset", "id": "users", "region": "US"},
        "record_count": 1200,
        "destination": {"kind": "external", "name": "vendor", "region": "US"},
        "unknown_future_field": {"kept": True},
    }


VALID = [
    _suspend("s1", "2024-03-01T10:00:00Z"),
    _export("x1", "2024-03-01T10:00:01.123Z"),
    _suspend("s2", "2024-03-01T12:00:02.500+02:00", actor="emp-3"),  # 10:00:02.5 UTC
    _export("x2", "2024-03-01T10:00:03Z", actor="emp-1"),
    _suspend("s3", "2024-03-01T10:00:04.999Z"),
]
BAD = [
    (b'{"event_type": "account.suspend", "event_id": "broken"', "invalid_json"),
    (json.dumps(_suspend("naive", "2024-03-01T10:00:00")).encode(), "contract_violation"),
    (json.dumps({**_suspend("unknown", "2024-03-01T10:00:00Z"), "event_type": "account.delete"}).encode(),
     "unknown_event_type"),
]  # fmt: skip


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _write_log(path: Path, events: list[dict[str, Any]], bad: Sequence[bytes] = ()) -> list[bytes]:
    """Valid lines first, one bad line after each of the first few; a blank line too. Returns lines."""
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    mixed: list[bytes] = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i < len(bad):
            mixed.append(bad[i])
    path.write_bytes(b"\n".join([*mixed[:2], b"", *mixed[2:]]) + b"\n")
    return lines


def _topic_for(prefix: str) -> Any:
    return lambda event_type: f"{prefix}-{event_type.split('.')[0]}"


def _key_for(view: dict[str, Any]) -> bytes:
    return str(view["actor"]["id"]).encode()


def test_replay_sends_exact_records_and_dead_letters_the_rest(
    broker: EmbeddedBroker, unique_prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    valid_lines = _write_log(log, VALID, [raw for raw, _ in BAD])
    dead = tmp_path / "dead.jsonl"
    out = io.StringIO()

    stats = replay(
        [str(log)], broker.bootstrap, _topic_for(unique_prefix), _key_for,
        partitions=3, deadletter=str(dead), out=out,
    )  # fmt: skip

    assert stats.sent == 5 and stats.failed == 0 and stats.filtered == 0
    assert stats.lines == 8  # the blank line is not a line
    assert stats.rejected == {"invalid_json": 1, "contract_violation": 1, "unknown_event_type": 1}
    account, data = f"{unique_prefix}-account", f"{unique_prefix}-data"
    assert stats.by_topic == {account: 3, data: 2}
    assert sorted(stats.topics_created) == [account, data]
    assert "sent 5 events" in out.getvalue() and "invalid_json 1" in out.getvalue()
    assert "\r" not in out.getvalue()  # StringIO is not a terminal: no progress line

    expected = {
        (_key_for(e), line, _ms(e["occurred_at"]),
         (("event_type", e["event_type"].encode()), ("event_id", e["event_id"].encode())))
        for e, line in zip(VALID, valid_lines, strict=True)
    }  # fmt: skip
    got = set()
    for topic in (account, data):
        for r in consume_all(broker.bootstrap, topic, idle_seconds=1.0):
            assert r.topic == topic == _topic_for(unique_prefix)(json.loads(r.value)["event_type"])
            got.add((r.key, r.value, r.timestamp, tuple(r.headers)))
    assert got == expected  # and so nothing from a bad line was sent
    with admin_client(broker.bootstrap) as admin:
        assert {t["name"]: len(t["partitions"]) for t in admin.describe_topics([account, data])} == {
            account: 3,
            data: 3,
        }

    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(d["line"], d["reason"]) for d in letters] == [
        (2, "invalid_json"),
        (5, "contract_violation"),
        (7, "unknown_event_type"),
    ]
    assert [d["raw"].encode() for d in letters] == [raw for raw, _ in BAD]
    assert all(d["source"] == str(log) for d in letters)


def test_since_until_filter_by_scanning(broker: EmbeddedBroker, unique_prefix: str, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    _write_log(log, VALID, [BAD[0][0]])
    stats = replay(
        [str(log)], broker.bootstrap, _topic_for(unique_prefix), _key_for,
        since=datetime(2024, 3, 1, 10, 0, 1, 123000, tzinfo=UTC),  # inclusive: x1 is in
        until=datetime(2024, 3, 1, 10, 0, 3, tzinfo=UTC),  # exclusive: x2 is out
        out=io.StringIO(),
    )  # fmt: skip
    assert (stats.sent, stats.filtered, stats.rejected) == (2, 3, {"invalid_json": 1})
    ids = {
        json.loads(r.value)["event_id"]
        for kind in ("account", "data")
        for r in consume_all(broker.bootstrap, f"{unique_prefix}-{kind}", idle_seconds=0.5)
    }
    assert ids == {"x1", "s2"}


def test_dry_run_decodes_and_counts_but_sends_nothing(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl.gz"
    with gzip.open(log, "wb") as fh:
        fh.write(b"\n".join(json.dumps(e).encode() for e in VALID) + b"\n" + BAD[1][0] + b"\n")
    out = io.StringIO()
    # No broker at all: a dry run must not try to connect.
    stats = replay(
        [str(log)], f"127.0.0.1:{free_port()}", _topic_for("dry"), _key_for,
        dry_run=True, progress=True, out=out,
    )  # fmt: skip
    assert (stats.sent, stats.rejected, stats.dry_run) == (5, {"contract_violation": 1}, True)
    assert stats.by_topic == {"dry-account": 3, "dry-data": 2}
    text = out.getvalue()
    assert "would send 5 events" in text
    assert "\rreplay: " in text and "%" in text  # the progress line was drawn, then cleared
    assert text.endswith("filtered 0\n")


def test_speed_preserves_event_time_gaps(broker: EmbeddedBroker, unique_prefix: str, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    _write_log(log, [_suspend("a", "2024-03-01T10:00:00Z"), _suspend("b", "2024-03-01T10:00:02Z")])
    stats = replay([str(log)], broker.bootstrap, _topic_for(unique_prefix), _key_for, speed=2.0, out=io.StringIO())
    assert stats.sent == 2
    assert stats.elapsed >= 0.95  # 2 s of event time at speed 2; machines are noisy, so no upper bound


def test_rate_paces_events_per_second(broker: EmbeddedBroker, unique_prefix: str, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    same_time = [_suspend(f"r{i}", "2024-03-01T10:00:00Z") for i in range(6)]
    _write_log(log, same_time)
    stats = replay([str(log)], broker.bootstrap, _topic_for(unique_prefix), _key_for, rate=10.0, out=io.StringIO())
    assert stats.sent == 6
    assert stats.elapsed >= 0.45  # five gaps of 0.1 s


def test_a_record_the_producer_refuses_is_a_dead_letter_not_a_crash(
    broker: EmbeddedBroker, unique_prefix: str, tmp_path: Path
) -> None:
    log, dead = tmp_path / "events.jsonl", tmp_path / "dead.jsonl"
    big = {**_suspend("big", "2024-03-01T10:00:01Z"), "reason": "x" * 1900}
    _write_log(log, [_suspend("small", "2024-03-01T10:00:00Z"), big, _suspend("after", "2024-03-01T10:00:02Z")])
    out = io.StringIO()
    stats = replay(
        [str(log)], broker.bootstrap, _topic_for(unique_prefix), _key_for,
        deadletter=str(dead), producer_config={"max_request_size": 1500}, out=out,
    )  # fmt: skip
    assert (stats.sent, stats.failed, stats.rejected) == (2, 1, {})
    assert "1 events were not acknowledged" in out.getvalue()
    [letter] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert (letter["line"], letter["reason"]) == (2, "send_failed")
    assert "MessageSizeTooLarge" in letter["detail"] and json.loads(letter["raw"])["event_id"] == "big"
    sent = consume_all(broker.bootstrap, f"{unique_prefix}-account", idle_seconds=0.5)
    assert [json.loads(r.value)["event_id"] for r in sent] == ["small", "after"]


def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    _write_log(log, VALID[:1])
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(ReplayError, match=f"cannot reach Kafka broker at {bootstrap}"):
        replay(
            [str(log)], bootstrap, _topic_for("x"), _key_for,
            producer_config={"bootstrap_timeout_ms": 1000}, out=io.StringIO(),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"speed": 2.0, "rate": 5.0}, "mutually exclusive"),
        ({"speed": 0.0}, "speed must be > 0"),
        ({"rate": -1.0}, "rate must be > 0"),
        ({"partitions": 0}, "partitions must be >= 1"),
        ({"since": datetime(2024, 3, 1)}, "since must carry a time zone"),
    ],
)
def test_contradictory_options_are_refused_before_any_work(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        replay([str(tmp_path / "missing.jsonl")], "127.0.0.1:1", _topic_for("x"), _key_for, **options)
