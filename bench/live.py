"""Live benchmarks against the embedded broker (Tansu): worker throughput and its Faust tunings,
scale-out, detection latency, state recovery.

Every throughput run reads events that were replayed into the input topic beforehand (not timed),
with a consumer group and internal topics of its own, so each starts from the first offset.
Variants run in interleaved rounds so that a burst of load from other users of the machine hits
several of them rather than one.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import multiprocessing
import os
import re
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.config.kafka import create_topics
from streams.core.topology import input_key
from streams.offline.logio import iter_lines
from streams.tools.broker import EmbeddedBroker, free_port
from streams.tools.replay import replay

from .common import CpuMeter, log, median, ratio
from .engine import ensure_log
from .procs import (
    FAUST_DEFAULTS,
    POLL,
    TRIVIAL,
    TRIVIAL_POLL,
    WORKER,
    Proc,
    app_env,
    time_processing,
    wait_processed,
)

LIVE_GOAL = 0.6  # worker >= 0.6x the trivial agent (the restated goal)
SCALE_GOAL = 1.6  # two workers >= 1.6x one
LATENCY_GOAL = 0.250  # p99 seconds

# One Faust setting changed at a time from Faust's defaults (on the asyncio loop): what each gives.
TUNINGS: dict[str, dict[str, Any]] = {
    "stream_buffer_maxsize=16384": {"stream_buffer_maxsize": 16384},
    "broker_max_poll_records=2000": {"broker_max_poll_records": 2000},
    "consumer_max_fetch_size=4MiB": {"consumer_max_fetch_size": 4 * 1024**2},
    "producer_linger=5ms": {"producer_linger": 0.005},
    "producer_max_batch_size=256KiB": {"producer_max_batch_size": 256 * 1024},
    "producer_threaded": {"producer_threaded": True},
    "fetch_max_wait=50ms": {"fetch_max_wait_ms": 50},
    "delivery without tasks": {"fast_delivery": True},
    "fetch loop woken on buffer drop": {"wake_on_buffer_drop": True},
}


def _replay(bootstrap: str, path: Path, topic: str, partitions: int) -> int:
    stats = replay([str(path)], bootstrap, lambda _t: topic, input_key, partitions=partitions, out=io.StringIO())
    if stats.sent == 0 or stats.rejected_total:
        raise RuntimeError(f"replay into {topic}: {stats.summary()}")
    return stats.sent


def raw_aiokafka(bootstrap: str, topic: str, total: int) -> float:
    """Records/s of a bare aiokafka consumer (no group, no decoding): the transport's limit."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as ATP

    async def run() -> float:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest")  # fmt: skip
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer.topics()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [ATP(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            # From the first fetch to the last record: aiokafka prefetches, so a first batch can hold
            # most of a small topic.
            count, started = 0, time.perf_counter()
            while count < total:
                batch = await consumer.getmany(timeout_ms=1000)
                count += sum(len(records) for records in batch.values())
            return count / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _run(kind: str, broker: EmbeddedBroker, app_id: str, topic: str, workdir: Path, total: int, loop: str,
         faust: dict[str, Any], partitions: int = 1, processes: int = 1) -> dict[str, Any]:  # fmt: skip
    bootstrap = broker.bootstrap
    env = app_env(bootstrap, app_id, topic, workdir, partitions, loop, faust)
    procs = []
    try:
        for index in range(processes):
            proc_env = dict(env)
            if index:
                proc_env = app_env(bootstrap, app_id, topic, workdir / f"p{index}", partitions, loop, faust)
            procs.append(Proc(kind, proc_env, workdir / f"{app_id}.log"))
        others: dict[str, Sequence[int]] = {"broker": [broker.pid]} if broker.pid is not None else {}
        timing = time_processing(procs, total, poll=TRIVIAL_POLL if kind == TRIVIAL else POLL, others=others)
        rebalances = sum(p.metric("modwatch_rebalances_total") or 0.0 for p in procs) if kind == WORKER else None
    finally:
        for proc in procs:
            proc.stop()
    return {"events_per_s": round(timing.events_per_s), "startup_s": round(timing.startup_s, 2),
            "span_s": round(timing.span_s, 2), "rebalances": rebalances, "cpu": timing.cpu,
            **({"overlap": timing.overlap} if timing.overlap else {})}  # fmt: skip


def _cpu_summary(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """Median cores used over the timed spans of ``runs``: by the timed processes, the broker, and
    the whole machine (busy, and stolen by the hypervisor)."""
    cpus = [run["cpu"] for run in runs if run.get("cpu")]
    picks = {
        "timed_cores": lambda c: c["cores"].get("timed"),
        "broker_cores": lambda c: c["cores"].get("broker"),
        "machine_busy_cores": lambda c: c.get("machine_busy_cores"),
        "machine_steal_cores": lambda c: c.get("machine_steal_cores"),
    }
    out = {}
    for name, pick in picks.items():
        values = [v for v in map(pick, cpus) if v is not None]
        if values:
            out[name] = round(median(values), 2)
    return out or None


def throughput(workdir: Path, events: int, rounds: int) -> dict[str, Any]:
    """The worker against the trivial agent, raw aiokafka, and each Faust tuning on its own."""
    path = ensure_log(workdir / f"live-{events}.jsonl", events, seed=3)
    untuned = ("asyncio", FAUST_DEFAULTS)
    variants: dict[str, tuple[str, str, dict[str, Any]]] = {
        "trivial agent, Faust defaults": (TRIVIAL, *untuned),
        "worker, Faust defaults": (WORKER, *untuned),
        "worker, uvloop": (WORKER, "uvloop", FAUST_DEFAULTS),
        **{f"worker, {name}": (WORKER, "asyncio", {**FAUST_DEFAULTS, **change}) for name, change in TUNINGS.items()},
        "worker as shipped": (WORKER, "uvloop", {}),
        "worker as shipped, without local evaluation": (WORKER, "uvloop", {"local_evaluation": False}),
        "trivial agent, same settings as shipped": (TRIVIAL, "uvloop", {}),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    raw: list[float] = []
    for rnd in range(rounds):
        # A fresh broker each round: Tansu keeps every record of every run in memory.
        with EmbeddedBroker() as broker:
            topic = "bench.events"
            log(f"live: round {rnd + 1}/{rounds}: replaying {events:,} events (not timed)")
            _replay(broker.bootstrap, path, topic, 1)
            raw.append(raw_aiokafka(broker.bootstrap, topic, events))
            log(f"live: raw aiokafka {raw[-1]:,.0f} records/s")
            order = list(variants) if rnd % 2 == 0 else list(reversed(variants))
            for index, name in enumerate(order):
                kind, loop, faust = variants[name]
                result = _run(kind, broker, f"r{rnd}v{index}", topic, workdir, events, loop, faust)
                runs[name].append(result)
                log(f"live: {name}: {result['events_per_s']:,} events/s")
    rate = {name: median([r["events_per_s"] for r in rs]) for name, rs in runs.items()}
    base = rate["worker, Faust defaults"]
    shipped, trivial = rate["worker as shipped"], rate["trivial agent, same settings as shipped"]
    return {
        "events": events,
        "rounds": rounds,
        "variants": {
            name: {"events_per_s": round(rate[name]), "runs": rs, "ratio_vs_untuned_worker": ratio(rate[name], base),
                   "cpu": _cpu_summary(rs)}
            for name, rs in runs.items()
        },
        "tunings_tested": TUNINGS,
        "faust_defaults": FAUST_DEFAULTS,
        "raw_aiokafka_records_per_s": round(median(raw)),
        "raw_aiokafka_runs": [round(r) for r in raw],
        "worker_vs_trivial_same_settings": ratio(shipped, trivial),
        "worker_vs_trivial_faust_defaults": ratio(shipped, rate["trivial agent, Faust defaults"]),
        "untuned_worker_vs_untuned_trivial": ratio(base, rate["trivial agent, Faust defaults"]),
        "trivial_vs_raw_aiokafka": ratio(trivial, median(raw)),
        "worker_vs_raw_aiokafka": ratio(shipped, median(raw)),
        "goal_worker_vs_trivial": LIVE_GOAL,
        "worker_without_local_evaluation_vs_trivial": ratio(
            rate["worker as shipped, without local evaluation"], trivial
        ),
        "local_evaluation_gain": ratio(shipped, rate["worker as shipped, without local evaluation"]),
        "met": shipped / trivial >= LIVE_GOAL,
    }


def scale_out(workdir: Path, events: int, rounds: int) -> dict[str, Any]:
    """One worker process against two, on 4-partition topics (shipped settings); two with a
    standby replica (``standby_replicas: 1``, Faust's default: each worker also reads the other's
    changelog); two sending their keyed records one by one (``bundle_keyed_records: false``); and
    one and two without local evaluation (one worker evaluates every keyed partition in place, two
    send each other about half of the events through the keyed topic)."""
    path = ensure_log(workdir / f"live-{events}.jsonl", events, seed=3)
    configs: dict[str, tuple[int, dict[str, Any]]] = {
        "1 worker": (1, {}),
        "2 workers": (2, {}),
        "2 workers, standby_replicas=1": (2, {"standby_replicas": 1}),
        "2 workers, without bundles": (2, {"bundle_keyed_records": False}),
        "1 worker, without local evaluation": (1, {"local_evaluation": False}),
        "2 workers, without local evaluation": (2, {"local_evaluation": False}),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for rnd in range(rounds):
        with EmbeddedBroker() as broker:
            topic = "bench.events4"
            log(f"scale-out: round {rnd + 1}/{rounds}: replaying {events:,} events into 4 partitions")
            _replay(broker.bootstrap, path, topic, 4)
            order = list(configs) if rnd % 2 == 0 else list(reversed(configs))
            for index, name in enumerate(order):
                processes, faust = configs[name]
                app_id = f"s{rnd}c{index}"
                result = _run(WORKER, broker, app_id, topic, workdir / app_id, events, "uvloop", faust,
                              partitions=4, processes=processes)  # fmt: skip
                runs[name].append(result)
                log(f"scale-out: {name}: {result['events_per_s']:,} events/s")
    rate = {name: median([r["events_per_s"] for r in rs]) for name, rs in runs.items()}
    r1, r2 = rate["1 worker"], rate["2 workers"]
    r2s = rate["2 workers, standby_replicas=1"]
    r1r, r2r = rate["1 worker, without local evaluation"], rate["2 workers, without local evaluation"]
    r2b = rate["2 workers, without bundles"]
    return {"events": events, "partitions": 4, "rounds": rounds, "runs": runs,
            "one_worker_events_per_s": round(r1), "two_workers_events_per_s": round(r2),
            "two_workers_standby_events_per_s": round(r2s),
            "one_worker_no_local_events_per_s": round(r1r), "two_workers_no_local_events_per_s": round(r2r),
            "ratio_two_vs_one": ratio(r2, r1), "ratio_two_standby_vs_one": ratio(r2s, r1),
            "standby_cost_two_workers": ratio(r2s, r2),
            "ratio_two_vs_one_no_local": ratio(r2r, r1r),
            "two_workers_no_bundles_events_per_s": round(r2b), "ratio_two_no_bundles_vs_one": ratio(r2b, r1),
            "bundles_gain_two_workers": ratio(r2, r2b),
            "cpu": {name: _cpu_summary(rs) for name, rs in runs.items()},
            "goal_ratio": SCALE_GOAL, "met": r2 / r1 >= SCALE_GOAL}  # fmt: skip


def _processed(procs: list[Proc]) -> float:
    return sum(p.processed() or 0.0 for p in procs)


def _failover_run(broker: EmbeddedBroker, lines: list[str], app_id: str, workdir: Path,
                  faust: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Two workers process ``lines[:-4]`` on 4 partitions; one stops (SIGTERM: it leaves the group
    at once); then one record reaches each partition. Time from the stop to the survivor having
    processed all four: the group's rebalance, the survivor's state recovery, and its first records."""
    body, markers = lines[:-4], lines[-4:]
    topic = f"{app_id}.events"
    (workdir / f"{app_id}.jsonl").write_text("\n".join(body) + "\n")
    _replay(broker.bootstrap, workdir / f"{app_id}.jsonl", topic, 4)
    envs = [app_env(broker.bootstrap, app_id, topic, workdir / f"{app_id}-{i}", 4, "uvloop", faust) for i in range(2)]
    procs = [Proc(WORKER, {**env, "BENCH_LOGLEVEL": "info"}, workdir / f"{app_id}-{i}.log")
             for i, env in enumerate(envs)]  # fmt: skip
    try:
        deadline = time.perf_counter() + 900
        while _processed(procs) < len(body):
            if time.perf_counter() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError(f"failover run {app_id}: workers did not process {len(body):,} events:\n"
                                   f"{procs[0].tail()}")  # fmt: skip
            time.sleep(0.2)
        time.sleep(6)  # the workers sample their state size every 5 s; standbys catch up
        keys = [int(p.metric("modwatch_state_keys") or 0) for p in procs]
        survivor = procs[0]
        before = survivor.processed() or 0.0
        log_from = survivor.log_path.stat().st_size
        stopped = time.perf_counter()
        procs[1].stop()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for partition, line in enumerate(markers):
            producer.send(topic, line.encode(), partition=partition)
        producer.flush()
        producer.close()
        while (survivor.processed() or 0.0) < before + len(markers):
            if time.perf_counter() - stopped > 600 or not survivor.alive():
                raise RuntimeError(f"failover run {app_id}: the survivor did not take over:\n{survivor.tail()}")
            time.sleep(0.1)
        took = time.perf_counter() - stopped
        time.sleep(6)
        keys_after = int(survivor.metric("modwatch_state_keys") or 0)
    finally:
        for proc in procs:
            proc.stop()
    recovered = _recovery_in_log(_log_after(survivor.log_path, log_from))
    return {"failover_s": round(took, 2), "state_keys_before": keys, "state_keys_after": keys_after, **recovered}


_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.M)
_START_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|$", re.M)


def _recovery_in_log(text: str) -> dict[str, Any]:
    """From a worker's Faust log (level info) after the stop: where its last recovery began reading
    each active changelog partition (Faust's "Reading Starts At - Active" table; -1 is the start)
    and how long the reading took ("Restoring state" to "Done reading")."""
    out: dict[str, Any] = {}
    table = text.rfind("Reading Starts At - Active")
    if table >= 0:
        end = text.find("\n[", table)  # the next log record
        rows = _START_ROW.findall(text[table : end if end >= 0 else len(text)])
        out["active_read_from_offset"] = {partition: int(offset) for _, partition, offset in rows}
    times: dict[str, datetime] = {}
    for mark, name in (("Restoring state from changelog topics", "start"), ("Done reading from changelog", "end")):
        at = text.rfind(mark)
        stamps = _LOG_TIME.findall(text[text.rfind("\n", 0, at) + 1 : at]) if at >= 0 else []
        if stamps:
            times[name] = datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f")
    if len(times) == 2 and text.rfind("Restoring state from changelog topics") > table:
        out["state_read_s"] = round((times["end"] - times["start"]).total_seconds(), 2)
    elif table >= 0:
        out["state_read_s"] = 0.0  # the last recovery found nothing to read ("Restoring state" not logged)
    return out


def _join_run(broker: EmbeddedBroker, lines: list[str], app_id: str, workdir: Path,
              faust: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One worker processes ``lines`` on 4 partitions, then a second joins. How long the first
    worker's streams stood still for the rebalance's recovery (its Faust log: the last "generation
    id" line before "Worker ready", to "Worker ready"), and what it read back meanwhile, though it
    keeps half of its partitions."""
    topic = f"{app_id}.events"
    (workdir / f"{app_id}.jsonl").write_text("\n".join(lines) + "\n")
    _replay(broker.bootstrap, workdir / f"{app_id}.jsonl", topic, 4)
    envs = [{**app_env(broker.bootstrap, app_id, topic, workdir / f"{app_id}-{i}", 4, "uvloop", faust),
             "BENCH_LOGLEVEL": "info"} for i in range(2)]  # fmt: skip
    first = Proc(WORKER, envs[0], workdir / f"{app_id}-0.log")
    procs = [first]
    try:
        deadline = time.perf_counter() + 900
        while (first.processed() or 0.0) < len(lines):
            if time.perf_counter() > deadline or not first.alive():
                raise RuntimeError(f"join run {app_id}: the worker did not process {len(lines):,} events:\n"
                                   f"{first.tail()}")  # fmt: skip
            time.sleep(0.2)
        time.sleep(6)  # the worker samples its state size every 5 s
        keys = int(first.metric("modwatch_state_keys") or 0)
        log_from = first.log_path.stat().st_size
        second = Proc(WORKER, envs[1], workdir / f"{app_id}-1.log")
        procs.append(second)
        deadline = time.perf_counter() + 300
        while True:
            text = _log_after(first.log_path, log_from)
            if "Worker ready" in text and "Worker ready" in second.log_path.read_text(errors="replace"):
                break
            if time.perf_counter() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError(f"join run {app_id}: no rebalance:\n{first.tail()}\n{second.tail()}")
            time.sleep(0.5)
        time.sleep(3)
        keys_after = int(first.metric("modwatch_state_keys") or 0)
    finally:
        for proc in procs:
            proc.stop()
    text = _log_after(first.log_path, log_from)
    ready = text.find("Worker ready")
    began = text.rfind("generation id", 0, ready)
    paused = (_time_at(text, ready) - _time_at(text, began)).total_seconds()
    recovered = _recovery_in_log(text[: text.find("\n", ready)])
    return {"paused_s": round(paused, 2), "state_keys_before": keys, "state_keys_after": keys_after, **recovered}


def _log_after(path: Path, offset: int) -> str:
    with path.open("rb") as log_file:
        log_file.seek(offset)
        return log_file.read().decode(errors="replace")


def _time_at(text: str, at: int) -> datetime:
    """The time stamp of the log record holding position ``at`` of ``text``."""
    stamps = _LOG_TIME.findall(text[text.rfind("\n", 0, at) + 1 : at])
    if not stamps:
        raise RuntimeError(f"no time stamp before position {at} of the log")
    return datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f")


def failover(workdir: Path, events: int, rounds: int) -> dict[str, Any]:
    """Two workers, one stopped: how long until the other processes the stopped one's partitions.
    As shipped (the worker's store reports the changelog offsets its data has reached, so the
    survivor reads back only the partitions it takes over: ``streams.live.faust_ext.store``), against Faust's
    in-memory store (``store: memory://``, what the worker used until 30 Nov 2026: every partition
    read from the changelog's start), and with standby replicas (``standby_replicas: 1``, meant to
    spare the survivor reading the state back)."""
    path = ensure_log(workdir / f"failover-{events + 4}.jsonl", events + 4, seed=3)
    lines = [line.raw.decode() for line in iter_lines([str(path)])]
    configs: dict[str, dict[str, Any]] = {
        "as shipped": {},
        "faust_memory_store": {"store": "memory://"},
        "standby_replicas=1": {"standby_replicas": 1},
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for rnd in range(rounds):
        with EmbeddedBroker() as broker:
            order = list(configs) if rnd % 2 == 0 else list(reversed(configs))
            for index, name in enumerate(order):
                result = _failover_run(broker, lines, f"fo{rnd}c{index}", workdir, configs[name])
                runs[name].append(result)
                log(f"failover: {name}: survivor took over in {result['failover_s']} s "
                    f"(state entries {result['state_keys_before']} -> {result['state_keys_after']})")  # fmt: skip
    joins: dict[str, list[dict[str, Any]]] = {"as shipped": [], "faust_memory_store": []}
    for rnd in range(rounds):
        with EmbeddedBroker() as broker:
            order = list(joins) if rnd % 2 == 0 else list(reversed(joins))
            for index, name in enumerate(order):
                result = _join_run(broker, lines[:-4], f"jo{rnd}c{index}", workdir, configs[name])
                joins[name].append(result)
                log(f"join: {name}: the first worker's streams stood still {result['paused_s']} s, "
                    f"reading back {result.get('state_read_s')} s")  # fmt: skip
    took = {name: median([r["failover_s"] for r in rs]) for name, rs in runs.items()}
    read = {name: median(times) if (times := [r["state_read_s"] for r in rs if "state_read_s" in r]) else None
            for name, rs in runs.items()}  # fmt: skip
    paused = {name: median([r["paused_s"] for r in rs]) for name, rs in joins.items()}

    def from_start(rs: list[dict[str, Any]]) -> list[int]:
        """Per run, the partitions a recovery read from the changelog's start (offset -1)."""
        return [sum(1 for o in r.get("active_read_from_offset", {}).values() if o < 0) for r in rs]

    return {"events": events, "partitions": 4, "rounds": rounds, "runs": runs,
            "failover_s": {name: round(t, 2) for name, t in took.items()},
            "state_read_s": {name: None if t is None else round(t, 2) for name, t in read.items()},
            "partitions_read_from_start": {name: from_start(rs) for name, rs in runs.items()},
            "ratio_shipped_vs_faust_store": ratio(took["as shipped"], took["faust_memory_store"]),
            "join_runs": joins,
            "join_paused_s": paused,
            "join_state_read_s": {name: median([r.get("state_read_s", 0.0) for r in rs]) for name, rs in joins.items()},
            "join_partitions_read_from_start": {name: from_start(rs) for name, rs in joins.items()},
            "ratio_join_paused_shipped_vs_faust_store": ratio(paused["as shipped"], paused["faust_memory_store"]),
            "ratio_standby_vs_none": ratio(took["standby_replicas=1"], took["as shipped"])}  # fmt: skip


# -- detection latency --------------------------------------------------------------------------


def _pair(n: int, ts: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """A confidential foreign request and the takedown of its meeting one second later (event time)."""
    actor = {"id": f"emp-liaison-{n % 7}", "kind": "employee", "region": "CN", "role": "liaison"}
    target = {"kind": "meeting", "id": f"mtg-bench-{n}", "region": "US", "owner_id": f"acct-bench-{n}",
              "tags": ["political"]}  # fmt: skip
    requester = {"agency": "Ministry of State Security", "kind": "government", "jurisdiction": "CN"}
    request = {"event_id": f"bench-req-{n}", "event_type": "request.received", "occurred_at": _iso(ts),
               "actor": actor, "request_id": f"REQ-BENCH-{n}", "requester": requester, "request_kind": "takedown",
               "targets": [target], "deadline_seconds": 60, "confidential": True}  # fmt: skip
    takedown = {"event_id": f"bench-td-{n}", "event_type": "meeting.shutdown", "occurred_at": _iso(ts + 1.0),
                "actor": actor, "request_id": f"REQ-BENCH-{n}", "target": target}  # fmt: skip
    return request, takedown


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _parse_ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _watch(bootstrap: str, topic: str, alerts: bool, ready: Any, stop: Any, out: Any) -> None:
    """Child process: read one topic, noting the wall time at which each takedown id shows up (in an
    alert's event ids, or in an echo record's headers). A process per topic: in a thread it fell
    seconds behind the producing loop on a busy machine. The baseline once read the whole input
    topic back, in the same consumer as the alerts: the alerts waited behind its fetches (p99 2-3 s
    at 250 events/s, where a watcher of their own saw 136 ms), and at 2,000 events/s it took a third
    of a core from the worker."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=5, auto_offset_reset="earliest")  # fmt: skip
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    if not alerts:
        consumer.seek_to_end(tp)
        consumer.position(tp)  # resolve the end now, before anything is timed
    seen: dict[str, float] = {}  # takedown event id -> wall time it was read
    ready.set()
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=20)
            now = time.time()
            for records in batch.values():
                for record in records:
                    if alerts:
                        for event_id in json.loads(record.value).get("event_ids", []):
                            if event_id.startswith("bench-td-"):
                                seen.setdefault(event_id, now)
                    else:
                        for key, value in record.headers or []:
                            if key == "event_id" and value.startswith(b"bench-td-"):
                                seen.setdefault(value.decode(), now)
    finally:
        out.put(seen)
        consumer.close()


def _percentiles(values: list[float], missing: int = 0) -> dict[str, float | None]:
    """Nearest-rank p50/p99 in ms; a pair whose alert never came counts as slower than any other
    (so a percentile that falls on one is None: "longer than the wait")."""
    ranked = sorted(values) + [float("inf")] * missing
    if not ranked:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}

    def rank(q: float) -> float | None:
        value = ranked[max(0, math.ceil(q * len(ranked)) - 1)]
        return None if value == float("inf") else round(value * 1000, 1)

    return {"p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": rank(1.0)}


def _slowest(sent_at: dict[str, float], alerted: dict[str, float], echoed: dict[str, float],
             stored_at: dict[str, float], count: int = 5) -> list[dict[str, Any]]:  # fmt: skip
    """The slowest pairs: when each was sent (s after the first timed send), and how long its takedown
    took to be acknowledged by the broker, to be read back from the echo topic, and to be alerted on.
    A stall the echo topic shares is the producer's, the broker's or the machine's, not the worker's."""
    first = min(sent_at.values(), default=0.0)

    def ms(at: dict[str, float], key: str) -> float | None:
        return round((at[key] - sent_at[key]) * 1000, 1) if key in at else None

    keys = sorted(sent_at, key=lambda k: alerted.get(k, float("inf")) - sent_at[k], reverse=True)[:count]
    return [{"pair": k, "sent_s": round(sent_at[k] - first, 2), "broker_ack_ms": ms(stored_at, k),
             "transport_ms": ms(echoed, k), "detection_ms": ms(alerted, k)} for k in keys]  # fmt: skip


def latency(workdir: Path, rate: float, seconds: float, every: float = 0.25, wait: float = 20.0,
            faust: dict[str, Any] | None = None, variant: str = "as shipped",
            warmup: float = 10.0) -> dict[str, Any]:  # fmt: skip
    """Produce a generated background stream at ``rate`` events/s with a rapid_takedown pair every
    ``every`` s; time from producing each takedown to its alert on the alerts topic, and, as the
    transport's baseline, to reading back a copy of it produced with it to an echo topic of its own
    (a broker's produce-to-fetch time, without reading the whole stream back). The first ``warmup`` s
    of background carry no pairs (the worker settles after its start). Alerts still missing ``wait``
    s after the last send count as slower than every other."""
    background = int(rate * (seconds + warmup)) + 1000
    path = ensure_log(workdir / f"latency-{background}.jsonl", background, seed=5, incidents=False,
                      events_per_day=rate * 86400)  # fmt: skip
    with EmbeddedBroker() as broker:
        topic, app_id = "lat.events", f"lat{int(rate)}-{len(list(workdir.glob('lat*-worker.log')))}"
        echo = f"{topic}.echo"
        create_topics(broker.bootstrap, {topic: 1, echo: 1})
        worker = Proc(WORKER, app_env(broker.bootstrap, app_id, topic, workdir, 1, "uvloop", faust or {}),
                      workdir / f"{app_id}-worker.log")  # fmt: skip
        # 5 ms of linger, as a real producer would: one batch per record made Tansu's fetches slower
        # as the topic grew (the watcher fell further and further behind the input topic).
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, acks=1)
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        watchers = []  # (process, ready, out): the alerts topic's, then the echo topic's
        for name in (f"{app_id}.alerts", echo):
            ready, out = ctx.Event(), ctx.Queue()
            args = (broker.bootstrap, name, name != echo, ready, stop, out)
            watchers.append((ctx.Process(target=_watch, args=args, daemon=True), ready, out))
        alerted: dict[str, float] = {}
        echoed: dict[str, float] = {}
        try:
            lines: Iterator[Any] = iter_lines([str(path)])
            # Warm up: the worker joins its group and processes a first event before timing starts.
            first = json.loads(next(lines).raw)
            producer.send(topic, json.dumps(first).encode(), headers=[("event_id", first["event_id"].encode())])
            producer.flush()
            wait_processed(worker, 1, timeout=120)
            for proc, _, _ in watchers:
                proc.start()
            if not all(ready.wait(60) for _, ready, _ in watchers):
                raise RuntimeError("latency: a watcher process did not start")
            sent_at: dict[str, float] = {}
            stored_at: dict[str, float] = {}
            log(f"latency: {rate:,.0f} events/s for {seconds:g} s, a rapid_takedown pair every {every:g} s")
            # Cores used over the measured stretch: the worker, the broker, this process (the load
            # generator) and the two watchers, and the whole machine.
            meter = CpuMeter({"worker": [worker.proc.pid], "broker": [broker.pid] if broker.pid else [],
                              "load generator": [os.getpid()],
                              "watchers": [proc.pid for proc, _, _ in watchers if proc.pid is not None]})  # fmt: skip
            started = time.perf_counter()
            sent, pairs, next_pair = 0, 0, started + warmup
            for line in lines:
                due = started + sent / rate
                if due > started + warmup + seconds:
                    break
                if not meter.started and due >= started + warmup:
                    meter.start()
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.002))
                event = json.loads(line.raw)
                producer.send(topic, line.raw, key=input_key(event),
                              headers=[("event_id", event["event_id"].encode())])  # fmt: skip
                sent += 1
                if now >= next_pair:
                    request, takedown = _pair(pairs, _parse_ts(event["occurred_at"]))
                    for item in (request, takedown):
                        headers = [("event_id", item["event_id"].encode())]
                        future = producer.send(topic, json.dumps(item).encode(), headers=headers)
                    producer.send(echo, b"", headers=headers)
                    sent_at[takedown["event_id"]] = time.time()  # wall time: compared in another process
                    # When the broker acknowledged the takedown (the producer's I/O thread runs this):
                    # the time the producer client held it before is the load generator's, not the worker's.
                    future.add_callback(lambda _md, k=takedown["event_id"]: stored_at.setdefault(k, time.time()))
                    sent += 2
                    pairs += 1
                    next_pair += every
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
            producer.flush()
            # Give the worker ``wait`` s to catch up; the watchers keep reading meanwhile.
            deadline = time.perf_counter() + wait
            while time.perf_counter() < deadline:
                if (worker.processed() or 0.0) >= sent + 1:
                    time.sleep(2.0)  # its last alerts are on their way
                    break
                time.sleep(0.5)
            processed = worker.processed() or 0.0
            changelog = tuple(worker.metric(f"modwatch_changelog_{what}_total") for what in ("records", "bytes"))
            alive = worker.alive()
        finally:
            try:
                producer.close()
                stop.set()
                alerted, echoed = (out.get(timeout=30) if proc.is_alive() else {} for proc, _, out in watchers)
                for proc, _, _ in watchers:
                    if proc.pid is not None:  # started: a failed start left the others unstarted
                        proc.join(10)
            finally:
                worker.stop()  # else a failed run left its worker running (seen: two, for half an hour)
    detection = [alerted[k] - t for k, t in sent_at.items() if k in alerted]
    transport = [echoed[k] - t for k, t in sent_at.items() if k in echoed]
    stored = [alerted[k] - t for k, t in stored_at.items() if k in alerted]
    det = _percentiles(detection, len(sent_at) - len(detection))
    base = _percentiles(transport, len(sent_at) - len(transport))
    p99 = det["p99_ms"]
    return {
        "variant": variant,
        "target_rate": rate,
        "achieved_rate": round(sent / elapsed),
        "seconds": round(elapsed - warmup, 1),
        "warmup_seconds": warmup,
        "pairs": len(sent_at),
        "alerts_matched": len(detection),
        "waited_after_last_send_s": wait,
        "events_processed_by_worker": int(processed),
        "events_sent": sent + 1,
        # What the worker wrote to its changelog by the end of the wait (None: a worker without the counters).
        "changelog_records": None if changelog[0] is None else int(changelog[0]),
        "changelog_mb_per_s": None if changelog[1] is None else round(changelog[1] / 1e6 / elapsed, 2),
        "worker_alive": alive,
        "cpu": cpu,  # cores used over the measured stretch (CpuMeter)
        "detection": det,
        "transport_baseline": base,
        "detection_from_broker_ack": _percentiles(stored, len(sent_at) - len(stored)),
        "slowest": _slowest(sent_at, alerted, echoed, stored_at),
        "ratio_p50_vs_transport": ratio(det["p50_ms"], base["p50_ms"]),
        "ratio_p99_vs_transport": ratio(p99, base["p99_ms"]),
        "goal_p99_ms": LATENCY_GOAL * 1000,
        "met": p99 is not None and p99 <= LATENCY_GOAL * 1000,
    }


def latencies(workdir: Path, rates: list[float], seconds: float) -> dict[str, Any]:
    """Detection latency of the worker as shipped at each rate (the first is the goal's), then at the
    last rate without local evaluation (one more trip through the broker per alert), and with Faust's
    own 1,500 ms fetch wait instead of ``streams.live.faust_ext.settings.FETCH_MAX_WAIT_MS``."""
    runs = [latency(workdir, rate, seconds) for rate in rates]
    runs.append(latency(workdir, rates[-1], seconds, faust={"local_evaluation": False},
                        variant="without local evaluation"))  # fmt: skip
    runs.append(latency(workdir, rates[-1], seconds, faust={"fetch_max_wait_ms": None},
                        variant="with Faust's 1,500 ms fetch wait"))  # fmt: skip
    return {"runs": runs}


# -- recovery ---------------------------------------------------------------------------------


def _state_log(workdir: Path, events: int) -> Path:
    """``events`` generated events, each by a distinct actor, within 50 s of event time: state that
    stays open (nothing later arrives to expire it)."""
    path = workdir / f"state-{events}.jsonl"
    if not path.exists():
        source = ensure_log(workdir / f"state-src-{events}.jsonl", events + 1, seed=13, incidents=False,
                            events_per_day=(events + 1) / 50 * 86400)  # fmt: skip
        with path.open("w") as out:
            for n, line in enumerate(iter_lines([str(source)])):
                event = json.loads(line.raw)
                event["actor"] = {**event["actor"], "id": f"bench-actor-{n}"}
                out.write(json.dumps(event) + "\n")
    return path


def recovery(workdir: Path, sizes: list[int]) -> dict[str, Any]:
    """Restart a worker holding the state of K events; time from its start to its first processed
    record, against the same restart with (almost) no state."""
    rows: list[dict[str, float | None]] = []
    for events in sizes:
        with EmbeddedBroker() as broker:
            path = _state_log(workdir, events)
            lines = path.read_text().splitlines()
            body, extra = lines[:events], lines[events]
            topic, app_id = f"rec{events}.events", f"rec{events}"
            (workdir / f"rec-{events}.jsonl").write_text("\n".join(body) + "\n")
            _replay(broker.bootstrap, workdir / f"rec-{events}.jsonl", topic, 1)
            env = app_env(broker.bootstrap, app_id, topic, workdir, 1, "uvloop", {})
            first = Proc(WORKER, env, workdir / f"{app_id}-1.log")
            try:
                wait_processed(first, events, timeout=900)
                time.sleep(6)  # the worker samples its state size every 5 s
                keys_before = first.metric("modwatch_state_keys") or 0.0
            finally:
                first.stop()
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
            producer.send(topic, extra.encode())
            producer.flush()
            producer.close()
            env = {**env, "MODWATCH_METRICS_PORT": str(free_port())}
            second = Proc(WORKER, env, workdir / f"{app_id}-2.log")
            try:
                ready = wait_processed(second, 1, timeout=900)
                time.sleep(6)
                keys_after = second.metric("modwatch_state_keys") or 0.0
            finally:
                second.stop()
        rows.append({"events": events, "state_keys_before": int(keys_before),
                     "state_keys_after_restart": int(keys_after), "start_to_first_record_s": round(ready, 2)})
        log(f"recovery: {events:,} events, {int(keys_before):,} keys: first record {ready:.1f} s after start")
    base = rows[0]["start_to_first_record_s"]
    for row in rows:
        row["ratio_vs_smallest"] = ratio(row["start_to_first_record_s"], base)
    return {"rows": rows}
