"""The broker frozen (SIGSTOP) for longer than a session timeout in the middle of a replay, then
thawed (SIGCONT): the worker recovers by itself, nothing is lost, and the outage shows in its health
metrics (commits stop moving while input is pending; the group is rejoined)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from ..worker_harness import WorkerProcess, read_topic, worker_env
from .harness import (
    Published,
    Replayer,
    Sampler,
    backtest_alerts,
    generated_log,
    metrics_port,
    processed,
    replay_now,
    split_log,
    total,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.broker

EVENTS = 2000
PART1 = 600  # replayed at full speed and evaluated before the outage
RATE = 60.0  # the rest, paced, so that the outage lands mid-replay
SESSION_TIMEOUT = 6.0  # settings default (MODWATCH_SESSION_TIMEOUT_SECONDS)
PAUSE = 3 * SESSION_TIMEOUT


def test_broker_frozen_past_the_session_timeout_worker_recovers(broker, unique_prefix, tmp_path: Path) -> None:
    log = generated_log(tmp_path / "events.jsonl", EVENTS, seed=3)
    part1, part2 = split_log(log, PART1, tmp_path)
    expected = backtest_alerts(log)
    topic = f"{unique_prefix}.events"
    worker = WorkerProcess(worker_env(broker.bootstrap, unique_prefix, tmp_path), tmp_path / "worker.log").start()
    port = metrics_port(worker)
    try:
        wait_ready(worker)
        replay_now(broker.bootstrap, topic, part1)
        wait_until(lambda: processed(worker) >= PART1, 60, f"{PART1} events evaluated", diagnostics=worker.log_tail)
        with Sampler([port], interval=1.0) as sampler:
            replayer = Replayer(broker.bootstrap, topic, part2, rate=RATE)
            replayer.start()
            wait_until(lambda: processed(worker) >= PART1 + 200, 60, "the paced replay to be under way")
            paused_at, evaluated_at_pause = time.time(), processed(worker)
            broker.pause()
            try:
                time.sleep(PAUSE)  # the fault itself: the broker stays frozen this long
                assert worker.alive(), worker.log_tail()
            finally:
                broker.resume()
            resumed_at = time.time()
            replayer.join_ok(timeout=180)
            records = read_topic(broker.bootstrap, f"{unique_prefix}.alerts",
                                 until=lambda r: Published.of(r).ids >= set(expected), timeout=150)  # fmt: skip
            wait_until(lambda: _lag(sampler) == 0, 60, "the worker to commit everything after the outage")
        assert worker.alive(), worker.log_tail()
        evaluated = processed(worker)
    finally:
        worker.stop()

    got = Published.of(records)
    series = sampler.series[port]
    # Samples taken while the broker was frozen, after the last sample_health that could still see a
    # commit from before it (that timer runs every 5 s).
    during = [s for t, s in series if paused_at + 6 <= t <= resumed_at]
    commit_times = sorted({total(s, "modwatch_last_commit_progress_timestamp_seconds") for _, s in series})
    frozen = max(b - a for a, b in itertools.pairwise(commit_times))
    stuck = {total(s, "modwatch_last_commit_progress_timestamp_seconds") for s in during}
    lag_during = [total(s, "modwatch_consumer_lag") for s in during]
    rejoined = total(series[-1][1], "modwatch_rebalances_total") - 1
    print(f"broker frozen {PAUSE:g} s after {evaluated_at_pause} of {EVENTS} events; {len(got.ids)}/{len(expected)} "
          f"alerts, {len(got.ids - set(expected))} new ids, {got.repeats} repeats; {evaluated} evaluated; "
          f"{len(during)} samples during the pause: commit timestamp {len(stuck)} value(s), lag {min(lag_during):g}.."
          f"{max(lag_during):g}; longest gap between commit progress {frozen:.1f} s; rebalances after the first "
          f"{rejoined:g}")  # fmt: skip
    assert got.ids == set(expected), (sorted(set(expected) - got.ids)[:5], sorted(got.ids - set(expected))[:5])
    assert got.differing_repeats() == []
    # Health: while the broker was frozen, records were waiting (lag > 0) and commits did not move —
    # what ModwatchCommitStalled watches; afterwards commits moved on to the end of the input.
    assert len(during) >= 5 and len(stuck) == 1 and min(lag_during) > 0
    assert frozen >= PAUSE - 6.0, commit_times
    assert max(commit_times) > resumed_at
    assert total(series[-1][1], "modwatch_consumer_committed_offset") == EVENTS


def _lag(sampler: Sampler) -> float | None:
    series = sampler.series[sampler.ports[0]]
    if not series:
        return None
    samples = series[-1][1]
    end = total(samples, "modwatch_consumer_end_offset")
    return total(samples, "modwatch_consumer_lag") if end >= EVENTS else None
