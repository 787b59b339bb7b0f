"""``kill -9`` of the worker in the middle of a replay, then a restart: every alert the log produces is
published (compared with ``modwatch backtest``), a repeat carries the same ``alert_id``, and windows
opened before the crash complete after it (state comes back from the changelog)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..worker_harness import WorkerProcess, read_topic, worker_env
from .harness import (
    Published,
    Replayer,
    Samples,
    backtest_alerts,
    event_index,
    generated_log,
    metrics_port,
    replay_now,
    scrape,
    split_log,
    total,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.broker

EVENTS = 2000
SEED = 3  # a log with windows that span the crash: bulk exports and a cumulative exfiltration
PART1 = 1150  # lines replayed (slowly) while the first worker runs and is killed
KILL_AFTER = 700  # the first worker is killed once it has evaluated this many events
COMMITTED_AT_KILL = 200  # ...and committed at least this many (the earliest spanning window starts at 103)
RATE = 80.0  # events/s: the crash lands mid-replay


def test_kill_9_mid_replay_loses_nothing_and_repeats_keep_their_ids(broker, unique_prefix, tmp_path: Path) -> None:
    log = generated_log(tmp_path / "events.jsonl", EVENTS, SEED)
    part1, part2 = split_log(log, PART1, tmp_path)
    expected = backtest_alerts(log)
    topic = f"{unique_prefix}.events"
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path)

    first = WorkerProcess(env, tmp_path / "worker1.log").start()
    second = WorkerProcess(env, tmp_path / "worker2.log")
    try:
        wait_ready(first)
        replayer = Replayer(broker.bootstrap, topic, part1, rate=RATE)
        replayer.start()
        # Killed once it has evaluated KILL_AFTER events and its metrics show a commit (sampled every
        # 5 s): the offsets below that commit are never redelivered, so their windows must come back
        # from the changelog.
        before = wait_until(lambda: _progressed(first), 90, f"the first worker to evaluate {KILL_AFTER} events",
                            diagnostics=first.log_tail)  # fmt: skip
        committed_before = int(total(before, "modwatch_consumer_committed_offset"))
        evaluated_before = int(total(before, "modwatch_events_processed_total"))
        first.kill()
        assert replayer.is_alive(), "the replay must still be running when the worker dies"
        second.start()
        replayer.join_ok()
        replay_now(broker.bootstrap, topic, part2)
        records = read_topic(broker.bootstrap, f"{unique_prefix}.alerts",
                             until=lambda r: Published.of(r).ids >= set(expected), timeout=120)  # fmt: skip
        assert second.alive(), second.log_tail()
        # The recovered state is counted for the metrics (``Evaluator.census``, in slices).
        wait_until(lambda: total(scrape(metrics_port(second)), "modwatch_state_keys") > 0, 30,
                   "modwatch_state_keys to count the recovered state", diagnostics=second.log_tail)  # fmt: skip
    finally:
        first.kill()
        second.stop()

    published = Published.of(records)
    missing, extra = set(expected) - published.ids, published.ids - set(expected)
    print(f"kill -9 after {evaluated_before} of {EVENTS} events evaluated (committed offset {committed_before}); "
          f"{len(published.ids & set(expected))}/{len(expected)} alerts published, {published.repeats} repeats, "
          f"{len(published.differing_repeats())} repeats with different content")  # fmt: skip
    assert not missing, f"{len(missing)}/{len(expected)} alerts never published: {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} alert ids the backtest does not produce: {sorted(extra)[:5]}"
    # A repeat (redelivery after the crash) is the same incident with the same id: consumers drop it.
    assert published.differing_repeats() == []

    # State came back from the changelog: an alert whose events were evaluated partly by the killed
    # worker (offsets it had committed, never redelivered) and partly after the restart (lines
    # replayed only once the first worker was dead) needed the first worker's window.
    spanning = [a for a in expected.values()
                if min(map(event_index, a["event_ids"])) - 1 < committed_before
                and max(map(event_index, a["event_ids"])) - 1 >= PART1]  # fmt: skip
    assert spanning, "the log must hold a window that spans the crash for this test to mean anything"
    assert {a["alert_id"] for a in spanning} <= published.ids
    log = (tmp_path / "worker2.log").read_text(errors="replace")
    assert "recover" in log.lower(), second.log_tail()


def _progressed(worker: WorkerProcess) -> Samples | None:
    samples = scrape(metrics_port(worker))
    evaluated = total(samples, "modwatch_events_processed_total")
    committed = total(samples, "modwatch_consumer_committed_offset")
    return samples if evaluated >= KILL_AFTER and committed >= COMMITTED_AT_KILL else None
