"""Raw sources through the live worker against the embedded broker: the raw examples with their
context, published and replayed, raise in a real ``modwatch worker`` exactly the alerts of
``modwatch backtest --input ... --context examples/context``."""

from __future__ import annotations

import io
import json
import urllib.request

import pytest

from streams.config.kafka import consume_all
from streams.config.loader import load_rules
from streams.inputs import load_mappings, resolve_inputs_dir
from streams.inputs.context_files import load_context
from streams.live.context_tables import context_topics, publish_context
from streams.offline.raw_backtest import run_raw_backtest
from streams.tools.replay import replay_raw
from tests.worker_harness import REPO, WorkerProcess, alert_ids, read_topic, worker_env

pytestmark = pytest.mark.broker

RAW = REPO / "examples" / "raw"
CONTEXT = REPO / "examples" / "context"
INPUTS = [("requests-csv", str(RAW / "register.csv")), ("zoom-webhook", str(RAW / "zoom.jsonl")),
          ("okta", str(RAW / "okta.jsonl"))]  # fmt: skip


def test_the_live_worker_raises_the_alerts_of_a_raw_backtest_with_context(broker, unique_prefix, tmp_path):
    mappings = load_mappings(resolve_inputs_dir(None))
    expected = run_raw_backtest(INPUTS, mappings, load_rules(REPO / "config"), context=load_context(CONTEXT))
    want = {a.alert_id: a.to_dict() for a in expected.backtest.alerts}
    assert len(want) == 5  # examples/README.md, "Raw logs with context"

    prefix = f"{unique_prefix}.context."
    counts = publish_context(CONTEXT, broker.bootstrap, prefix)
    assert counts == {"staff": 7, "accounts": 5, "tickets": 2}
    inputs = json.dumps([{"mapping": name} for name, _ in INPUTS])
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path, MODWATCH_INPUTS=inputs,
                     MODWATCH_TOPICS__CONTEXT_PREFIX=prefix)  # fmt: skip
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        stats = replay_raw(INPUTS, mappings, broker.bootstrap, out=io.StringIO())
        assert stats.rejected_total == 0
        records = read_topic(broker.bootstrap, f"{unique_prefix}.alerts", until=lambda r: alert_ids(r) >= set(want),
                             timeout=180)  # fmt: skip
        assert worker.alive(), worker.log_tail()
        metrics = _scrape(int(env["MODWATCH_METRICS_PORT"]))
    finally:
        worker.stop()
    live: dict[str, dict[str, object]] = {}
    for record in records:
        alert = json.loads(record.value)
        assert live.setdefault(alert["alert_id"], alert) == alert
    assert set(live) == set(want), worker.log_tail()
    for alert_id, alert in want.items():
        assert live[alert_id] == alert
    # Per input: what was normalized and dropped, and the context lookups that failed, as the backtest counted.
    for source in expected.inputs.sources:
        assert f'modwatch_input_events_normalized_total{{input="{source.name}"}} {float(source.mapped)}' in metrics
        for table, misses in source.context.misses.items():
            line = f'modwatch_input_context_misses_total{{input="{source.name}",table="{table}"}} {float(misses)}'
            assert line in metrics
    assert not consume_all(broker.bootstrap, f"{unique_prefix}.deadletter", idle_seconds=1.0)


def test_an_unknown_mapping_stops_start_up_naming_the_setting(broker, unique_prefix, tmp_path):
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path, MODWATCH_INPUTS='[{"mapping": "nope"}]')
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    assert worker.proc is not None
    code = worker.proc.wait(60)
    assert code == 2, worker.log_tail()
    assert "inputs.0.mapping: no input mapping 'nope'" in worker.log_tail()


def test_context_publish_writes_one_record_per_row_keyed_by_id(broker, unique_prefix):
    prefix = f"{unique_prefix}.context."
    publish_context(CONTEXT, broker.bootstrap, prefix)
    staff = consume_all(broker.bootstrap, context_topics(prefix)["staff"], idle_seconds=1.0)
    keys = [r.key.decode() for r in staff]
    assert "liaison@corp.example" in keys and "ZOPLI01" in keys  # each identity of one person
    row = json.loads(next(r.value for r in staff if r.key == b"ZOPLI01"))
    assert row["person"] == "p-liaison" and "manager" not in row  # an empty cell is left out
    tickets = consume_all(broker.bootstrap, context_topics(prefix)["tickets"], idle_seconds=1.0)
    assert sorted(r.key for r in tickets) == [b"IT-5521", b"TS-1088"]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())
