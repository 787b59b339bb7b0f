"""``jobs``: ``modwatch backtest --jobs N`` against ``--jobs 1`` on the engine section's log, and where
one process's time goes.

- The command itself, ``python -m streams.cli backtest LOG -o OUT --config config --jobs N``, as a
  subprocess, for each N of ``--jobs-list`` in interleaved rounds (forward, then backward). Per run:
  wall time around the subprocess, its CPU (user + system of the command and of the processes it
  forked, from ``getrusage(RUSAGE_CHILDREN)``), the machine's busy and stolen time, the sha256 of
  its alerts file and the counts of its summary line. Reported: median events/s per N, the ratio to
  ``--jobs 1``, the cores used; whether every alerts file is byte-identical and every summary equal.
- The cost split, in a fresh interpreter (``python -m bench.jobs split LOG EVENTS ROUNDS``), on the
  first ``--jobs-split-events`` lines of the same log: one pass doing what ``--jobs 1`` does, the
  wall time of each step summed over the events (read a line; decode it; its content digest; the
  event-id check, ``RecentIds.check``: the digest and the check are ``Engine.admit``; route; count it,
  ``observe_event``; the rules, ``Engine.step`` with the routes given: apply and advance; write its
  alerts), after a short warm-up pass, in ``--jobs-rounds`` rounds (medians). The timing costs eight
  ``perf_counter`` calls an event, under a microsecond against the ~100 us an event takes.
  ``backtest --jobs N`` has every process read every line and check each event id, and the parent
  write the merged alerts once the processes are done; the decoding, the digests, the routing, the
  counting and the rules are divided among the N processes, each chunk of lines going to one of
  them (``streams/offline/parallel.py``). So the ideal speedup on N free cores is
  ``total / (read + check + write + (decode + digest + route + count + rules) / N)`` (Amdahl), with
  no cost for the queues, the views rebuilt from the line by a process with routes for an event of
  another's chunk, the pickled alerts, the merge, or keys unevenly spread over the processes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import resource
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path
from typing import IO, Any

from .common import REPO, log, machine_cpu_seconds, median, ratio
from .engine import CONFIG, ensure_log

JOBS_GOAL = 1.7  # --jobs 2 >= 1.7x --jobs 1 on two cores
ESTIMATE_CORES = (2, 4, 8, 16)
# The steps of the cost split, in the order one event goes through them.
STEPS = ("read", "decode", "digest", "check", "route", "count", "rules", "write")
# Done by every process (read, check) or by the parent once the processes are done (write); the
# others are divided among the processes, chunk by chunk.
SERIAL = ("read", "check", "write")
DIVIDED = ("decode", "digest", "route", "count", "rules")
FORMULA = "total / (read + check + write + (decode + digest + route + count + rules) / N)"

_READ = re.compile(r"events read: ([\d,]+)\s+processed: ([\d,]+)\s+rejected: ([\d,]+)\s+late: ([\d,]+)\s+"
                   r"duplicates skipped: ([\d,]+)\s+outside --since/--until: ([\d,]+)")  # fmt: skip
_ALERTS = re.compile(r"alerts: ([\d,]+)\s+suppressed: ([\d,]+)\s+rule errors: ([\d,]+)\s+\(([\d.]+)s")


def _summary(stderr: str) -> tuple[dict[str, int], float]:
    """The counts of ``print_summary``'s first two lines, and the elapsed seconds it states."""
    read, alerts = _READ.search(stderr), _ALERTS.search(stderr)
    if read is None or alerts is None:
        raise RuntimeError(f"no summary in the command's stderr:\n{stderr[-2000:]}")
    names = ("read", "processed", "rejected", "late", "duplicates", "outside_range")
    counts = {name: int(value.replace(",", "")) for name, value in zip(names, read.groups(), strict=True)}
    for name, value in zip(("alerts", "suppressed", "rule_errors"), alerts.groups()[:3], strict=True):
        counts[name] = int(value.replace(",", ""))
    return counts, float(alerts.group(4))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backtest_run(path: Path, out: Path, jobs: int) -> dict[str, Any]:
    """One ``modwatch backtest --jobs N`` as a subprocess: wall time, CPU, output digest, counts."""
    command = [sys.executable, "-m", "streams.cli", "backtest", str(path), "-o", str(out),
               "--config", str(CONFIG), "--jobs", str(jobs)]  # fmt: skip
    cpu_before, machine_before = _cpu_children(), machine_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu, machine_after = _cpu_children() - cpu_before, machine_cpu_seconds()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    counts, elapsed = _summary(done.stderr)
    run: dict[str, Any] = {
        "jobs": jobs,
        "seconds": round(wall, 2),
        "events_per_s": round(counts["read"] / wall),
        "cpu_seconds": round(cpu, 2),
        "cores": round(cpu / wall, 2),
        # the command's own figure: from the start of reading to the last alert written (no
        # interpreter start, imports or rule loading)
        "command_elapsed_s": elapsed,
        "sha256": _sha256(out),
        "counts": counts,
    }
    if machine_before and machine_after:
        run["machine_busy_cores"] = round((machine_after["busy"] - machine_before["busy"]) / wall, 2)
        run["machine_steal_cores"] = round((machine_after["steal"] - machine_before["steal"]) / wall, 2)
    return run


def _median_of(runs: list[dict[str, Any]], name: str) -> float | None:
    values = [r[name] for r in runs if r.get(name) is not None]
    return round(median(values), 2) if values else None  # JSON has no NaN


def throughput(workdir: Path, events: int, jobs_list: list[int], rounds: int, split_events: int) -> dict[str, Any]:
    if 1 not in jobs_list:  # the baseline
        jobs_list = [1, *jobs_list]
    path = ensure_log(workdir / f"log-{events}.jsonl", events)
    outdir = workdir / "jobs-alerts"
    outdir.mkdir(exist_ok=True)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in jobs_list}
    reference: str | None = None
    kept: list[str] = []  # alerts files left in the work directory: the first run's, and any that differ
    for number in range(rounds):
        for jobs in jobs_list if number % 2 == 0 else list(reversed(jobs_list)):
            out = outdir / f"alerts-jobs{jobs}-round{number + 1}.jsonl"
            log(f"jobs: round {number + 1}/{rounds}: backtest --jobs {jobs} of {events:,} events")
            run = backtest_run(path, out, jobs)
            run["round"] = number + 1
            runs[jobs].append(run)
            log(f"jobs: --jobs {jobs}: {run['events_per_s']:,} events/s, {run['cores']} cores, "
                f"{run['counts']['alerts']:,} alerts")  # fmt: skip
            if reference is None:
                reference = run["sha256"]
            if run["sha256"] == reference and kept:
                out.unlink()
            else:
                kept.append(out.name)
    every = [run for rs in runs.values() for run in rs]
    identical = len({run["sha256"] for run in every}) == 1
    counts_equal = all(run["counts"] == every[0]["counts"] for run in every)
    if not identical or not counts_equal:
        log(f"jobs: OUTPUTS DIFFER (identical {identical}, counts equal {counts_equal}); kept: {', '.join(kept)}")
    by_jobs: dict[str, dict[str, Any]] = {}
    base_rate = median([r["events_per_s"] for r in runs[1]])
    for jobs, rs in runs.items():
        rate = median([r["events_per_s"] for r in rs])
        by_jobs[str(jobs)] = {
            "events_per_s": round(rate),
            "runs_events_per_s": [r["events_per_s"] for r in rs],
            "seconds": round(median([r["seconds"] for r in rs]), 2),
            "cores": round(median([r["cores"] for r in rs]), 2),
            # the whole machine's: above the runs' own cores, something else was running
            "machine_busy_cores": _median_of(rs, "machine_busy_cores"),
            "cpu_us_per_event": round(median([r["cpu_seconds"] / r["counts"]["read"] * 1e6 for r in rs]), 1),
            "ratio_vs_jobs_1": ratio(rate, base_rate),
        }
    two = by_jobs.get("2", {}).get("ratio_vs_jobs_1")
    split_events = min(split_events, events)
    log(f"jobs: cost split of one process over the first {split_events:,} events (child process)")
    child = subprocess.run([sys.executable, "-m", "bench.jobs", "split", str(path), str(split_events), str(rounds)],
                           cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)  # fmt: skip
    split: dict[str, Any] = json.loads(child.stdout)
    ideal_two = split["ideal_speedup"].get("2")
    return {
        "events": events,
        "jobs_list": jobs_list,
        "rounds": rounds,
        "alerts": every[0]["counts"]["alerts"],
        "by_jobs": by_jobs,
        "ratio_jobs_2_vs_1": two,
        "goal_ratio_jobs_2_vs_1": JOBS_GOAL,
        "met": two is not None and two >= JOBS_GOAL,
        "identical": identical,
        "counts_equal": counts_equal,
        "alerts_files_kept": kept,
        "split": split,
        "jobs_2_vs_ideal": ratio(two, ideal_two),
        "runs": every,
    }


# -- the cost split (child process) ------------------------------------------------------------


def _timed_pass(path: str, events: int, ruleset: Any, out: IO[str]) -> tuple[dict[str, float], float, float, int]:
    """One pass of the first ``events`` lines doing what ``--jobs 1`` does, step by step, with the
    wall time of each step summed over the events (``perf_counter`` before and after each: a
    preemption by another process lands in a step in proportion to its length, so the shares hold on
    a busy machine). Returns the seconds by step (and, under ``gc``, the garbage collector's, which
    the steps include: a collection counts in the step whose allocation set it off), the pass's CPU
    and wall seconds, and its alerts."""
    from streams.core.decode import Decoded, decode
    from streams.core.engine import Engine, content_digest
    from streams.core.state import CONFLICT, DUPLICATE, NEW, Shard
    from streams.offline.logio import iter_lines

    engine, shard = Engine(ruleset), Shard()
    recent, stats = engine.recent, engine.stats
    clock = time.perf_counter
    read = dec = dig = chk = rte = cnt = rul = wrt = 0.0
    alerts = 0
    collecting = [0.0, 0.0]  # seconds in the collector, start of the current collection

    def collector(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting[1] = clock()
        else:
            collecting[0] += clock() - collecting[1]

    out.seek(0)
    out.truncate()
    gc.collect()
    gc.callbacks.append(collector)
    cpu, started = time.process_time(), clock()
    t0 = started
    for line in islice(iter_lines([path]), events):
        t1 = clock()
        read += t1 - t0
        if line.oversize is not None:
            t0 = t1
            continue
        decoded = decode(line.raw)
        t2 = clock()
        dec += t2 - t1
        if not isinstance(decoded, Decoded):
            t0 = t2
            continue
        digest = content_digest(decoded.view)
        t3 = clock()
        dig += t3 - t2
        # Engine.admit, as parallel.py splits it: the digest (divided) and the check (every process)
        verdict = recent.check(decoded.event.event_id, decoded.ts, digest)
        if verdict == DUPLICATE:
            stats.duplicates += 1
        elif verdict == CONFLICT:
            stats.id_conflicts += 1
        t4 = clock()
        chk += t4 - t3
        if verdict == NEW:
            routes = engine.route(decoded)
            t5 = clock()
            rte += t5 - t4
            engine.observe_event(decoded)  # what step does for its primary copy only: process 0's
            t6 = clock()
            cnt += t6 - t5
            if decoded.ts < engine.watermark(shard):
                stats.late += 1
            raised = engine.step(shard, decoded, routes=routes, primary=False)  # apply + advance
        else:
            t6 = t4
            raised = [engine.conflict_alert(decoded)] if verdict == CONFLICT else []
        t7 = clock()
        rul += t7 - t6
        if raised:
            alerts += len(raised)
            for alert in raised:
                out.write(alert.to_json() + "\n")
        t0 = clock()
        wrt += t0 - t7
    out.flush()
    wall = clock() - started
    gc.callbacks.remove(collector)
    spent = {"read": read, "decode": dec, "digest": dig, "check": chk, "route": rte, "count": cnt, "rules": rul,
             "write": wrt, "gc": collecting[0]}  # fmt: skip
    return spent, time.process_time() - cpu, wall, alerts


def _split_child(path: str, events: int, rounds: int) -> dict[str, Any]:
    import tempfile

    from streams.config.loader import load_rules

    ruleset = load_rules(CONFIG)
    seconds: dict[str, list[float]] = {name: [] for name in (*STEPS, "gc")}
    cpu: list[float] = []
    wall: list[float] = []
    alerts = 0
    with tempfile.TemporaryFile("w+") as out:
        _timed_pass(path, min(events, 5_000), ruleset, out)  # warm-up: lazy imports, first calls
        for number in range(rounds):
            spent, used, took, alerts = _timed_pass(path, events, ruleset, out)
            for name, value in spent.items():
                seconds[name].append(round(value, 3))
            cpu.append(round(used, 3))
            wall.append(round(took, 3))
            log(f"jobs: split round {number + 1}/{rounds}: {took:.1f} s; "
                + ", ".join(f"{name} {value:.2f} s" for name, value in spent.items()))  # fmt: skip
    components = {name: median(seconds[name]) for name in STEPS}
    total = sum(components.values())
    serial = sum(components[name] for name in SERIAL)
    divided = sum(components[name] for name in DIVIDED)
    return {
        "events": events,
        "rounds": rounds,
        "alerts": alerts,
        "steps_seconds": seconds,
        "pass_cpu_seconds": cpu,
        "pass_wall_seconds": wall,
        "components_seconds": {name: round(value, 3) for name, value in components.items()},
        "shares": {name: round(value / total, 3) for name, value in components.items()},
        "total_seconds": round(total, 3),
        # inside the steps above: the collector's time, charged to the step that set it off
        "gc_seconds": round(median(seconds["gc"]), 3),
        "gc_share": round(median(seconds["gc"]) / total, 3),
        "one_process_events_per_s": round(events / total),
        "serial_seconds": round(serial, 3),
        "divided_seconds": round(divided, 3),
        "formula": FORMULA,
        "ideal_speedup": {str(n): round(total / (serial + divided / n), 2) for n in ESTIMATE_CORES},
    }


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "split":
        print(json.dumps(_split_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.exit("usage: python -m bench.jobs split LOG EVENTS ROUNDS")
