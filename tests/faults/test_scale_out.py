"""Scale-out: two workers in one consumer group on four-partition topics publish the same alerts as
one worker (and as ``modwatch backtest``); a second worker joining mid-replay — a rebalance that moves
partitions and their table state — loses no incident and adds none."""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.config.loader import load_rules
from streams.core.decode import Limits
from streams.core.engine import Engine
from streams.core.topology import Headers
from streams.live.pipeline import Evaluator, Router
from streams.tools.broker import free_port

from ..worker_harness import REPO, WorkerProcess, read_topic, worker_env
from .harness import (
    EXAMPLE,
    Published,
    Replayer,
    backtest_alerts,
    generated_log,
    metrics_port,
    processed,
    replay_now,
    scrape,
    split_log,
    total,
    wait_ready,
    wait_until,
)

PARTITIONS = 4


def rebalances(worker: WorkerProcess) -> int:
    return int(total(scrape(metrics_port(worker)), "modwatch_rebalances_total"))


def start_pair(env: dict[str, str], workdir: Path, name: str) -> tuple[WorkerProcess, WorkerProcess]:
    """Two workers in one group, each holding partitions once this returns."""
    a = WorkerProcess(env, workdir / f"{name}-a.log").start()
    b = WorkerProcess({**env, "MODWATCH_METRICS_PORT": _port(), "MODWATCH_WEB_PORT": _port()},
                      workdir / f"{name}-b.log")  # fmt: skip
    wait_ready(a)
    b.start()
    wait_ready(b)
    # The first worker is told to rejoin when the second arrives: its second assignment is the split.
    wait_until(lambda: rebalances(a) >= 2, 90, "the first worker's assignment after the second joined",
               diagnostics=a.log_tail)  # fmt: skip
    return a, b


def _port() -> str:
    return str(free_port())


def published(bootstrap: str, prefix: str, expected: set[str]) -> Published:
    return Published.of(read_topic(bootstrap, f"{prefix}.alerts", until=lambda r: Published.of(r).ids >= expected,
                                   timeout=120))  # fmt: skip


#: Rules that fire on the first window to reach their bound among the events arrived so far.
WINDOWED = frozenset(rule.id for rule in load_rules(REPO / "config").rules if rule.kind in ("threshold", "cardinality"))


@dataclass
class Incidents:
    """Live alerts against the backtest's, incident by incident.

    An alert matches the backtest's by id. A windowed rule's alert may instead match one of the same
    rule and key whose events overlap (``reanchored``): its events arrived in another order than the
    log's (two workers reading partitions at their own pace, as after a rebalance), so its first
    window to reach the bound started at another event; the backtest reads in log order. The same
    incident, alerted once, under the id of that window. Anything else is ``missing`` or ``extra``.
    """

    missing: list[str]
    extra: list[str]
    reanchored: list[tuple[str, str]]

    @classmethod
    def of(cls, expected: dict[str, dict[str, Any]], got: Published) -> Incidents:
        live = {r["alert_id"]: r for r in got.records}
        unmatched = {i: a for i, a in live.items() if i not in expected}
        missing, reanchored = [], []
        for alert_id, alert in expected.items():
            if alert_id in live:
                continue
            incident = (alert["rule_id"], alert["group_key"])
            twin = None if alert["rule_id"] not in WINDOWED else next(
                (i for i, a in unmatched.items()
                 if (a["rule_id"], a["group_key"]) == incident and set(a["event_ids"]) & set(alert["event_ids"])),
                None)  # fmt: skip
            if twin is None:
                missing.append(alert_id)
            else:
                reanchored.append((alert_id, twin))
                del unmatched[twin]
        return cls(missing, sorted(unmatched), reanchored)


def incidents(bootstrap: str, prefix: str, expected: dict[str, dict[str, Any]]) -> tuple[Published, Incidents]:
    records = read_topic(bootstrap, f"{prefix}.alerts", timeout=120,
                         until=lambda r: not Incidents.of(expected, Published.of(r)).missing)  # fmt: skip
    got = Published.of(records)
    return got, Incidents.of(expected, got)


@pytest.mark.broker
def test_two_workers_publish_the_same_alerts_as_one(broker, unique_prefix, tmp_path: Path) -> None:
    expected = backtest_alerts(EXAMPLE)
    one, two = f"{unique_prefix}-1", f"{unique_prefix}-2"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = WorkerProcess(worker_env(broker.bootstrap, one, tmp_path / "one", partitions=PARTITIONS),
                           tmp_path / "single.log").start()  # fmt: skip
    pair: tuple[WorkerProcess, ...] = ()
    try:
        pair = start_pair(worker_env(broker.bootstrap, two, tmp_path / "two", partitions=PARTITIONS), tmp_path, "pair")
        wait_ready(single)
        replay_now(broker.bootstrap, f"{one}.events", EXAMPLE, partitions=PARTITIONS)
        replay_now(broker.bootstrap, f"{two}.events", EXAMPLE, partitions=PARTITIONS)
        by_one = published(broker.bootstrap, one, set(expected))
        by_two = published(broker.bootstrap, two, set(expected))
        shares = [processed(w) for w in pair]
        assert single.alive() and all(w.alive() for w in pair)
    finally:
        for worker in (single, *pair):
            worker.stop()
    print(f"one worker: {len(by_one.ids)} alerts ({by_one.repeats} repeats); two workers: {len(by_two.ids)} alerts "
          f"({by_two.repeats} repeats), events evaluated {shares[0]} + {shares[1]} of 600; backtest {len(expected)}")
    assert by_two.ids == by_one.ids == set(expected)
    assert by_one.differing_repeats() == by_two.differing_repeats() == []
    # Both workers did part of the work (otherwise this proves nothing about scale-out).
    assert min(shares) > 0 and sum(shares) >= 600


@pytest.mark.broker
@pytest.mark.parametrize("local", ["true", "false"])
def test_a_worker_joining_mid_replay_loses_nothing_and_adds_nothing(broker, unique_prefix, tmp_path: Path,
                                                                     local: str) -> None:  # fmt: skip
    """Every incident of the backtest alerted, and no other (``Incidents``: a threshold may be
    alerted under the id of another window of the same incident). Both paths: events evaluated in
    place (the default) and all through the keyed topic. With evaluation in place this failed 4
    times in 5 until the worker held partitions back until Faust's seek to their committed offsets
    (``streams.live.faust_ext.consumer.Consumer.resume_partitions``): pairs went missing."""
    log = generated_log(tmp_path / "events.jsonl", 2000, seed=3)
    expected = backtest_alerts(log)
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path, partitions=PARTITIONS, MODWATCH_LOCAL_EVALUATION=local)
    first = WorkerProcess(env, tmp_path / "first.log").start()
    second = WorkerProcess({**env, "MODWATCH_METRICS_PORT": _port(), "MODWATCH_WEB_PORT": _port()},
                           tmp_path / "second.log")  # fmt: skip
    try:
        wait_ready(first)
        replayer = Replayer(broker.bootstrap, f"{unique_prefix}.events", log, rate=80.0, partitions=PARTITIONS)
        replayer.start()
        wait_until(lambda: processed(first) >= 400, 90, "400 events evaluated before the join",
                   diagnostics=first.log_tail)  # fmt: skip
        joined_at = processed(first)
        second.start()
        wait_ready(second)
        wait_until(lambda: rebalances(first) >= 2, 90, "the rebalance", diagnostics=first.log_tail)
        rebalanced_at = processed(first)
        assert replayer.is_alive(), "the join must land mid-replay"
        replayer.join_ok()
        got, found = incidents(broker.bootstrap, unique_prefix, expected)
        shares = (processed(first), processed(second))
        assert first.alive() and second.alive()
    finally:
        first.stop()
        second.stop()
    print(f"second worker joined after {joined_at} of 2000 events (rebalanced at {rebalanced_at}); "
          f"{len(got.ids & set(expected))}/{len(expected)} alerts by id, {len(found.reanchored)} re-anchored "
          f"{found.reanchored}, {len(found.missing)} missing, {len(found.extra)} extra, {got.repeats} repeats; "
          f"events evaluated {shares[0]} + {shares[1]}")
    assert (found.missing, found.extra) == ([], []), (found.missing[:5], found.extra[:5])
    assert got.differing_repeats() == []
    assert shares[1] > 0, "the second worker must have taken partitions"
    # Each event counted once where it was evaluated; a rebalance repeats some (at least once), and
    # none may be missing (events lost without changing an alert would slip past the ids above).
    assert sum(shares) >= 2000, shares
    # The first worker kept half its partitions, and Faust's recovery read those from where its data
    # was, not from the changelog's start (``streams.live.faust_ext.store``); the two it gave up it no longer holds.
    started = _recovery_starts((tmp_path / "first.log").read_text(errors="replace"))
    assert len(started) == 2 and all(offset > 0 for offset in started.values()), started


@pytest.mark.broker
@pytest.mark.parametrize("standby", [0, 1])
def test_a_survivor_reads_back_only_what_it_does_not_hold(broker, unique_prefix, tmp_path: Path,
                                                          standby: int) -> None:  # fmt: skip
    """One of two workers stops mid-replay. The survivor keeps the state partitions it held and reads
    the others from the changelog's start; with ``standby_replicas: 1`` it holds a copy of those too
    (``streams.live.faust_ext.store``; Faust's in-memory store dropped the copies when a recovery ended), and reads
    none from the start. The alerts are the backtest's either way."""
    log = generated_log(tmp_path / "events.jsonl", 2000, seed=5)
    before, after = split_log(log, 1200, tmp_path)
    expected = backtest_alerts(log)
    env = worker_env(broker.bootstrap, unique_prefix, tmp_path, partitions=PARTITIONS,
                     MODWATCH_STANDBY_REPLICAS=str(standby))  # fmt: skip
    pair = start_pair(env, tmp_path, "pair")
    survivor, leaving = pair
    try:
        replay_now(broker.bootstrap, f"{unique_prefix}.events", before, partitions=PARTITIONS)
        wait_until(lambda: processed(survivor) + processed(leaving) >= 1200, 120, "1,200 events evaluated",
                   diagnostics=survivor.log_tail)  # fmt: skip
        time.sleep(3)  # the copies read the last state changes
        leaving.stop()
        replay_now(broker.bootstrap, f"{unique_prefix}.events", after, partitions=PARTITIONS)
        got, found = incidents(broker.bootstrap, unique_prefix, expected)
        assert survivor.alive()
    finally:
        for worker in pair:
            worker.stop()
    started = _recovery_starts((tmp_path / "pair-a.log").read_text(errors="replace"))
    print(f"the survivor's recovery started at {started}; {len(got.ids & set(expected))}/{len(expected)} alerts "
          f"by id, {len(found.reanchored)} re-anchored, {len(found.missing)} missing, {len(found.extra)} extra")
    from_start = sorted(partition for partition, offset in started.items() if offset < 0)
    assert len(started) == 4 and len(from_start) == (0 if standby else 2), started
    assert (found.missing, found.extra) == ([], []), (found.missing[:5], found.extra[:5])
    assert got.differing_repeats() == []


_START_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|$", re.M)


def _recovery_starts(log: str) -> dict[int, int]:
    """Partition -> offset where the worker's last recovery began reading each active changelog
    partition (Faust's "Reading Starts At - Active" table, level info; -1 is the start)."""
    table = log.rfind("Reading Starts At - Active")
    assert table >= 0, "no recovery in the log"
    end = log.find("\n[", table)  # the next log record
    starts: dict[int, int] = {}
    topic = ""
    for name, partition, offset in _START_ROW.findall(log[table : end if end >= 0 else len(log)]):
        topic = topic if name == "\u3003" else name  # Faust writes a repeated topic as a ditto mark
        if topic.endswith("-state-changelog"):  # the rule state's; the incidents stage's table recovers too
            starts[int(partition)] = int(offset)
    return starts


def test_incidents_match_by_id_or_for_a_windowed_rule_by_overlapping_events() -> None:
    def alert(alert_id: str, rule: str, key: str, *events: str) -> dict[str, Any]:
        return {"alert_id": alert_id, "rule_id": rule, "group_key": key, "event_ids": list(events)}

    expected = {a["alert_id"]: a for a in (
        alert("same", "rapid_takedown", "request=r1", "e1", "e2"),
        alert("window", "fabricated_reports", "target.id=m", "e658", "e667", "e691"),
        alert("pair", "rapid_takedown", "request=r2", "e848", "e850"),
        alert("apart", "fabricated_reports", "target.id=n", "e1", "e2", "e3"),
    )}  # fmt: skip
    got = Published([
        alert("same", "rapid_takedown", "request=r1", "e1", "e2"),
        alert("later", "fabricated_reports", "target.id=m", "e667", "e691", "e715"),  # same incident
        alert("unlogged", "unlogged_request", "request=r2", "e861"),  # another incident
        alert("other", "fabricated_reports", "target.id=n", "e7", "e8", "e9"),  # no event in common
        alert("other", "fabricated_reports", "target.id=n", "e7", "e8", "e9"),
    ])  # fmt: skip
    found = Incidents.of(expected, got)
    assert found.reanchored == [("window", "later")]
    assert found.missing == ["pair", "apart"]
    assert found.extra == ["other", "unlogged"]


# -- the same, without a broker: what a rebalance or a slow second worker does to event time ---------

SOURCES = ("in:0", "in:1")


def _source(raw: bytes) -> int:
    """The input partition of an event: by actor, as replay keys it (two partitions)."""
    return zlib.crc32(json.loads(raw)["actor"]["id"].encode()) % 2


def _evaluate(order: list[tuple[int, bytes]], expect: bool) -> tuple[set[str], int]:
    """Two routers (one per input partition, as two workers would have) feeding one evaluator."""
    ruleset = load_rules(REPO / "config")
    engine = Engine(ruleset)
    evaluator = Evaluator(engine, {}, PARTITIONS)
    if expect:
        evaluator.expect(set(SOURCES))
    routers = [Router(Engine(ruleset), "keyed", "dead", PARTITIONS, Limits()) for _ in SOURCES]
    ids: set[str] = set()
    for offset, raw in order:
        source = _source(raw)
        for out in routers[source].on_record("in", source, offset, None, raw):
            ids |= {a.alert_id for a in evaluator.on_record(out.partition or 0, out.value, out.headers)}
    return ids, engine.stats.late


def test_an_input_partition_read_late_does_not_make_its_events_late() -> None:
    """One router sends its whole partition before the other starts (a worker that joins, or
    rejoins, later): with every input partition expected, the keyed watermark waits for the second,
    and the alerts are the backtest's. Without it (the bug: only sources already heard from counted),
    the second partition's events were late and absence timers fired before their answers."""
    lines = [line.encode() for line in EXAMPLE.read_text().splitlines()]
    one_first = sorted(enumerate(lines), key=lambda item: _source(item[1]))
    expected = set(backtest_alerts(EXAMPLE))
    ids, late = _evaluate(one_first, expect=True)
    broken, broken_late = _evaluate(one_first, expect=False)
    print(f"partition 0 routed before partition 1: {len(ids & expected)}/{len(expected)} alerts, {late} late events; "
          f"without waiting for partition 1: {broken_late} late, {len(expected - broken)} missing, "
          f"{len(broken - expected)} new ids")  # fmt: skip
    assert ids == expected and late == 0
    assert broken != expected  # the scenario does exercise the watermark


def test_a_router_speaks_only_for_the_partitions_it_owns() -> None:
    """After a rebalance a router forgets partitions it lost (no stale idle announcement for a
    partition another worker reads) and announces an owned partition that stays silent as idle."""
    router = Router(Engine(load_rules(REPO / "config")), "keyed", "dead", 1, Limits(), idle_seconds=0.2)
    raw = EXAMPLE.read_text().splitlines()[0].encode()
    router.on_record("in", 0, 0, None, raw)
    router.on_record("in", 1, 0, None, raw)
    router.assign({"in:1", "in:2"})  # lost 0, kept 1, gained 2 (not read yet)
    first = Headers.parse(router.tick()[0].headers).tick
    assert first is not None and set(first) == {"in:1"} and first["in:1"] is not None
    wait_until(lambda: Headers.parse(router.tick()[0].headers).tick == {"in:1": None, "in:2": None}, 10,
               "both owned partitions announced idle", interval=0.05)  # fmt: skip


def test_a_silent_partition_with_records_left_is_behind_not_idle() -> None:
    """A partition the consumer has not read to its end (paused by a rebalance, its tables
    recovering, a slow fetch) is not announced idle however long it is silent: idle, it would let
    the watermark run ahead of its events, which would then be late and skipped by stateful rules."""
    router = Router(Engine(load_rules(REPO / "config")), "keyed", "dead", 1, Limits(), idle_seconds=0.05)
    raw = EXAMPLE.read_text().splitlines()[0].encode()
    router.assign({"in:0", "in:1"})
    router.on_record("in", 0, 41, None, raw)  # in:0 read up to offset 41; in:1 not read at all
    ends = {"in:0": 50, "in:1": 7}
    seen: list[tuple[str, int | None]] = []

    def caught_up(source: str, next_offset: int | None) -> bool:
        seen.append((source, next_offset))
        return next_offset is not None and next_offset >= ends[source]

    time.sleep(0.1)
    report = Headers.parse(router.tick(caught_up)[0].headers).tick
    assert report is not None and report["in:0"] is not None and "in:1" not in report  # behind: not idle
    assert sorted(set(seen)) == [("in:0", 42), ("in:1", None)]
    ends.update({"in:0": 42})
    report = Headers.parse(router.tick(caught_up)[0].headers).tick
    assert report == {"in:0": None}  # read to its end and silent: idle
    router.assign({"in:0", "in:1"})  # a rebalance pauses every source: their silence counts from it
    report = Headers.parse(router.tick(caught_up)[0].headers).tick
    assert report is not None and report["in:0"] is not None
