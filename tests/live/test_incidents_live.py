"""Incidents through the live worker: the same incident ids and final revisions as the backtest.

The stage's logic (``IncidentStage``) is tested first without a broker, fed the backtest's alerts in
interleavings several keyed partitions could produce; then a real worker against the embedded
broker, its ``modwatch.incidents`` topic read back and compared with ``backtest --incidents``.
"""

from __future__ import annotations

import json
import random

import pytest

from streams.config.loader import load_incidents, load_rules
from streams.core.alerts import Alert
from streams.core.incidents import IncidentEngine
from streams.live.incidents_stage import MARK_HEADER, IncidentStage, alert_record, mark_record
from streams.offline.backtest import run_backtest
from streams.outputs.metrics import Health
from tests.worker_harness import REPO, WorkerProcess, read_topic, worker_env

from .test_worker import EXAMPLE, replay_file

CONFIG = REPO / "config"


def backtest_incidents() -> tuple[list[Alert], dict[str, str], float]:
    result = run_backtest([str(EXAMPLE)], load_rules(CONFIG), incidents=IncidentEngine(load_incidents(CONFIG)))
    assert result.engine is not None
    final = {i.incident_id: i.to_json() for i in result.incidents()}
    return result.alerts, final, max(a.last_seen for a in result.alerts)


def _run_stage(alerts: list[Alert], partitions: int, seed: int) -> tuple[dict[str, str], Health]:
    """The alerts spread over ``partitions`` keyed partitions (each in its own order), interleaved at
    random, each partition marking its watermark as it goes, the stage released after every record."""
    rng = random.Random(seed)
    lanes: list[list[Alert]] = [[] for _ in range(partitions)]
    for alert in alerts:
        lanes[rng.randrange(partitions)].append(alert)
    health = Health()
    stage = IncidentStage(load_incidents(CONFIG), partitions, health)
    stage.loaded = True
    final: dict[str, str] = {}
    positions = [0] * partitions
    while any(positions[p] < len(lanes[p]) for p in range(partitions)):
        p = rng.choice([p for p in range(partitions) if positions[p] < len(lanes[p])])
        alert = lanes[p][positions[p]]
        positions[p] += 1
        if stage.wants(alert):
            stage.on_record(alert_record(alert)[1], [])
        # The partition's watermark: below its next alert (lateness of event time behind it).
        after = lanes[p][positions[p]].last_seen if positions[p] < len(lanes[p]) else float("inf")
        _key, value, headers = mark_record(p, min(alert.last_seen, after - 1.0))
        stage.on_record(value, headers)
        for update in stage.release():
            final[update.incident.incident_id] = update.incident.to_json()
        if rng.random() < 0.1:  # a restart: the state read back from its snapshot
            snapshot = json.loads(json.dumps(stage.snapshot()))
            stage = IncidentStage(load_incidents(CONFIG), partitions, health)
            stage.restore(snapshot)
            stage.on_record(alert_record(alert)[1], [])  # and the last record read again
    for p in range(partitions):  # event time moves on past the log's end, as the backtest's does
        _key, value, headers = mark_record(p, float("inf"))
        stage.on_record(value, headers)
    for update in stage.release():
        final[update.incident.incident_id] = update.incident.to_json()
    return final, health


@pytest.mark.parametrize(("partitions", "seed"), [(1, 0), (3, 1), (4, 2), (8, 3)])
def test_stage_gives_the_backtests_incidents_whatever_the_interleaving(partitions, seed):
    alerts, expected, _ = backtest_incidents()
    assert len(expected) == 9
    # Per partition, alerts come in the order raised (by time: the backtest raised them so).
    final, health = _run_stage(sorted(alerts, key=lambda a: a.last_seen), partitions, seed)
    assert final.keys() == expected.keys()
    # The backtest's final revisions are closed: so are the stage's once event time passes them.
    for incident_id, text in expected.items():
        assert json.loads(final[incident_id]) == json.loads(text)
    assert sum(health.incidents_opened.values()) == 9
    assert sum(health.incidents_closed.values()) == 9
    assert sum(health.open_incidents.values()) == 0


def test_stage_waits_for_every_partition_and_drops_foreign_records():
    alerts, _, _ = backtest_incidents()
    stage = IncidentStage(load_incidents(CONFIG), 2)
    first = next(a for a in alerts if stage.wants(a))
    stage.on_record(alert_record(first)[1], [])
    stage.on_record(b"not json", [])
    stage.on_record(mark_record(0, first.last_seen + 10)[1], [(MARK_HEADER, b"1")])
    assert stage.release() == []  # partition 1 has not reported: nothing is released
    stage.on_record(mark_record(1, first.last_seen + 10)[1], [(MARK_HEADER, b"1")])
    assert stage.watermark() == first.last_seen + 10
    stage.release()
    assert not stage.feed.pending
    assert first.alert_id in stage.feed.engine.recent


@pytest.mark.broker
def test_live_incidents_match_the_backtest(broker, unique_prefix, tmp_path):
    """Replay the example to a worker; the last revision of each incident on the incidents topic is
    the backtest's final revision, byte for byte."""
    _, expected, _ = backtest_incidents()
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path, MODWATCH_TOPICS__INCIDENTS=f"{unique_prefix}.incidents")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()

    def final(records: list[object]) -> dict[str, str]:
        out: dict[str, str] = {}
        for record in records:
            value = record.value.decode()  # type: ignore[attr-defined]
            incident = json.loads(value)
            previous = out.get(incident["incident_id"])
            if previous is None or json.loads(previous)["revision"] <= incident["revision"]:
                out[incident["incident_id"]] = value
        return out

    try:
        replay_file(broker.bootstrap, unique_prefix, EXAMPLE)
        records = read_topic(broker.bootstrap, f"{unique_prefix}.incidents", until=lambda r: final(r) == expected,
                             timeout=240)  # fmt: skip
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    live = final(records)
    assert live.keys() == expected.keys(), worker.log_tail()
    assert live == expected
    # Keyed by incident id, every revision once or repeated identically (at least once).
    by_revision: dict[tuple[str, int], str] = {}
    for record in records:
        incident = json.loads(record.value)
        assert record.key.decode() == incident["incident_id"]
        assert by_revision.setdefault((incident["incident_id"], incident["revision"]), record.value) == record.value
    revisions = {(k, r) for k, r in by_revision}
    for incident_id, text in expected.items():
        assert {(incident_id, r) for r in range(1, json.loads(text)["revision"] + 1)} <= revisions
