"""The live worker against the embedded broker: same alerts as backtest, state that survives a
restart, dead letters with reasons. Each test runs real ``modwatch worker`` processes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.config.kafka import create_topics
from streams.config.loader import load_rules
from streams.core.topology import input_key
from streams.offline.backtest import run_backtest
from streams.tools.replay import replay
from tests.worker_harness import REPO, WorkerProcess, alert_ids, read_topic, worker_env

pytestmark = pytest.mark.broker

EXAMPLE = REPO / "examples" / "events.jsonl"


def backtest_alerts(path: Path) -> dict[str, dict[str, object]]:
    result = run_backtest([str(path)], load_rules(REPO / "config"))
    return {a.alert_id: a.to_dict() for a in result.alerts}


def replay_file(bootstrap: str, prefix: str, path: Path, partitions: int = 1) -> None:
    stats = replay([str(path)], bootstrap, lambda _t: f"{prefix}.events", input_key, partitions=partitions,
                   out=io.StringIO())  # fmt: skip
    assert stats.rejected_total == 0


def live_alerts(records: list[object]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for record in records:
        alert = json.loads(record.value)  # type: ignore[attr-defined]
        previous = out.setdefault(alert["alert_id"], alert)
        assert previous == alert, "a repeated alert id must carry the same alert"
    return out


@pytest.mark.parametrize("local", ["false", "true"])
def test_live_worker_matches_backtest(broker, unique_prefix, tmp_path, local):
    """Both paths: evaluation in place (the default) and every event through the keyed topic."""
    expected = backtest_alerts(EXAMPLE)
    assert len(expected) > 20
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path, MODWATCH_LOCAL_EVALUATION=local)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        replay_file(broker.bootstrap, unique_prefix, EXAMPLE)
        records = read_topic(broker.bootstrap, f"{unique_prefix}.alerts",
                             until=lambda r: alert_ids(r) >= set(expected), timeout=240)  # fmt: skip
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    live = live_alerts(records)
    assert set(live) == set(expected), worker.log_tail()
    for alert_id, alert in expected.items():
        assert live[alert_id] == alert
    # The record timestamp is the alert's event time; the key is its id.
    first = records[0]
    assert first.key.decode() == json.loads(first.value)["alert_id"]
    from streams.core.alerts import _parse_iso

    assert first.timestamp == round(_parse_iso(json.loads(first.value)["last_seen"]) * 1000)


def test_state_survives_a_graceful_restart(broker, unique_prefix, tmp_path):
    """Stop the worker halfway through the log and start a new one: windows opened before the
    restart (a sequence's request, a threshold's first reports) still complete after it."""
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    cut = _cut_inside_incidents(lines)
    first_half, second_half = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first_half.write_text("".join(lines[:cut]))
    second_half.write_text("".join(lines[cut:]))
    expected = backtest_alerts(EXAMPLE)
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path)
    alerts_topic = f"{unique_prefix}.alerts"

    worker = WorkerProcess(env, tmp_path / "worker1.log").start()
    try:
        replay_file(broker.bootstrap, unique_prefix, first_half)
        before_cut = {k for k, v in expected.items() if str(v["last_seen"]) < _time_of(lines[cut - 1])}
        read_topic(broker.bootstrap, alerts_topic, until=lambda r: alert_ids(r) >= before_cut, timeout=240)
    finally:
        # A graceful stop commits and flushes; a loaded machine can make it slow, so allow a minute.
        assert worker.stop(timeout=60) == 0, worker.log_tail()
    # It left the group (Tansu: in generation 0, ``patches.leave_group_from_generation_zero``), so the next
    # worker is assigned the partitions at once, not after the session timeout.
    stopped = (tmp_path / "worker1.log").read_text(errors="replace")
    assert "left the consumer group" in stopped or "LeaveGroup request succeeded" in stopped, worker.log_tail()
    worker = WorkerProcess(env, tmp_path / "worker2.log").start()
    try:
        replay_file(broker.bootstrap, unique_prefix, second_half)
        records = read_topic(broker.bootstrap, alerts_topic, until=lambda r: alert_ids(r) >= set(expected),
                             timeout=240)  # fmt: skip
    finally:
        worker.stop()
    live = live_alerts(records)
    assert set(live) == set(expected), worker.log_tail()
    log = (tmp_path / "worker2.log").read_text(errors="replace")
    assert "Recovery" in log or "recover" in log.lower()


def _time_of(line: str) -> str:
    return json.loads(line)["occurred_at"]


def _cut_inside_incidents(lines: list[str]) -> int:
    """A cut between the Tiananmen request and its takedowns, so the restart lands mid-window."""
    for index, line in enumerate(lines):
        event = json.loads(line)
        if event.get("scenario") == "tiananmen_shutdown" and event["event_type"] == "request.received":
            return index + 1
    raise AssertionError("the example log lost its tiananmen_shutdown scenario")


def test_bad_records_go_to_the_deadletter_topic(broker, unique_prefix, tmp_path):
    topic = f"{unique_prefix}.events"
    create_topics(broker.bootstrap, {topic: 1})
    good = [json.loads(line) for line in EXAMPLE.read_text().splitlines()[:40]]
    bad = [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_object"),
        (b"\xff\xfe\xfa", "invalid_utf8"),
        (
            json.dumps({**good[0], "event_id": "naive-1", "occurred_at": "2020-05-01T00:00:00"}).encode(),
            "contract_violation",
        ),
        (json.dumps({**good[0], "event_id": "odd-1", "event_type": "meeting.teleport"}).encode(), "unknown_event_type"),
    ]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for index, event in enumerate(good):
        producer.send(topic, json.dumps(event).encode(), key=b"k")
        if index % 8 == 0 and index // 8 < len(bad):
            producer.send(topic, bad[index // 8][0], key=b"bad", headers=[("origin", b"test")])
    producer.flush()
    producer.close()
    expected = set(backtest_alerts_for(good, tmp_path))
    assert expected, "the good records must produce alerts for this test to mean anything"
    worker = WorkerProcess(worker_env(broker.bootstrap, unique_prefix, tmp_path), tmp_path / "worker.log").start()
    try:
        dead = read_topic(broker.bootstrap, f"{unique_prefix}.deadletter", until=lambda r: len(r) >= len(bad))
        alerts = read_topic(broker.bootstrap, f"{unique_prefix}.alerts", until=lambda r: alert_ids(r) >= expected)
    finally:
        worker.stop()
    assert len(dead) == len(bad)
    reasons = []
    for record, (raw, _) in zip(dead, bad, strict=True):
        headers = dict(record.headers)
        assert record.value == raw  # the original bytes, untouched
        assert headers["mw-dl-topic"] == topic.encode()
        assert headers["mw-dl-partition"] == b"0"
        assert int(headers["mw-dl-offset"]) >= 0
        assert headers["origin"] == b"test"  # the producer's own headers are kept
        reasons.append(headers["mw-dl-reason"].decode())
    assert reasons == [reason for _, reason in bad]
    assert alert_ids(alerts) == expected  # the good records around the bad ones were processed


def backtest_alerts_for(events: list[dict[str, object]], tmp_path: Path) -> dict[str, dict[str, object]]:
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return backtest_alerts(path)


def test_changelog_end_offsets_come_from_a_fetch(session_broker, unique_prefix):
    """Tansu's ListOffsets(latest) counts the last record batch as one record; table recovery reads a
    changelog up to the end offset it is given, so the worker checks it with a Fetch."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.live.faust_ext.fetching import fetched_highwaters

    topic, empty = f"{unique_prefix}.changelog", f"{unique_prefix}.empty"
    create_topics(session_broker.bootstrap, {topic: 1, empty: 1})
    producer = KafkaProducer(bootstrap_servers=session_broker.bootstrap, linger_ms=200)
    producer.send(topic, b"first")
    producer.flush()
    for n in range(22):  # one batch: what a worker's last flush of state changes looks like
        producer.send(topic, str(n).encode())
    producer.flush()
    producer.close()

    async def ends() -> tuple[dict[object, int], dict[object, int | None]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=session_broker.bootstrap)
        await consumer.start()
        try:
            listed = await consumer.end_offsets([TopicPartition(topic, 0), TopicPartition(empty, 0)])
            return listed, await fetched_highwaters(consumer, listed)
        finally:
            await consumer.stop()

    listed, fetched = asyncio.run(ends())
    assert fetched[TopicPartition(topic, 0)] == 23
    assert fetched[TopicPartition(empty, 0)] == 0
    assert listed[TopicPartition(topic, 0)] <= 23  # Tansu says 2 here; Apache Kafka would say 23


def test_a_fetch_returns_only_the_active_partitions(session_broker, unique_prefix):
    """Faust's fetch loop passes its live set of active partitions to the consumer thread; aiokafka
    reads an empty one as every partition, and the records it then returns are dropped by Faust
    after the consumer's position has moved past them (a restarted worker lost the rest of its log)."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from streams.live.faust_ext.consumer import ConsumerThread

    topic = f"{unique_prefix}.events"
    create_topics(session_broker.bootstrap, {topic: 2})
    producer = KafkaProducer(bootstrap_servers=session_broker.bootstrap)
    for n in range(10):
        producer.send(topic, str(n).encode(), partition=n % 2)
    producer.flush()
    producer.close()
    first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
    thread = ConsumerThread.__new__(ConsumerThread)  # not started: what _fetch_records reads of it
    thread.consumer = SimpleNamespace(flow_active=True)  # type: ignore[assignment]

    async def fetches(fetch_records: object) -> list[dict[TopicPartition, list[int]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=session_broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([first, second])
            await consumer.seek_to_beginning(first, second)
            active: set[TopicPartition] = set()
            out = []

            async def fetch() -> dict[TopicPartition, list[int]]:
                got = await fetch_records(thread, consumer, active, timeout=1.0)  # type: ignore[operator]
                return {tp: [r.offset for r in records] for tp, records in got.items()}

            out.append(await fetch())  # nothing active
            positions = {tp: await consumer.position(tp) for tp in (first, second)}
            out.append({tp: [pos] for tp, pos in positions.items()})
            active.add(first)
            out.append(await fetch())
            active.add(second)
            out.append(await fetch())
            return out
        finally:
            await consumer.stop()

    faust = AIOKafkaConsumerThread._fetch_records
    assert asyncio.run(fetches(faust))[0] == {first: [0, 1, 2, 3, 4], second: [0, 1, 2, 3, 4]}  # the bug

    nothing, positions, only_first, then_second = asyncio.run(fetches(ConsumerThread._fetch_records))
    assert nothing == {}
    assert positions == {first: [0], second: [0]}  # nothing was consumed past
    assert only_first == {first: [0, 1, 2, 3, 4]}
    assert then_second == {second: [0, 1, 2, 3, 4]}
