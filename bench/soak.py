"""Soak run (not part of the test suite): one live worker under a steady replay for many minutes.

Embedded broker + one ``modwatch worker`` + a replay of a generated log at a fixed rate (default 500
events/s) for ``--minutes`` (default 10). Every ``--interval`` seconds (default 10) it samples the
worker's resident memory (``VmRSS`` from /proc, and the broker's for context) and, from the worker's
/metrics, consumer lag, offsets, events evaluated, alerts raised and state size. At the end it
compares the alerts published on the alerts topic with ``modwatch backtest`` of the same log, writes
``bench/results/soak.json`` and prints a table.

    .venv/bin/python -m bench.soak --minutes 10 --rate 500

What to look for: RSS flat once the rules' windows have filled (the log's event time runs ~4 hours
per wall second at 500/s, so windows fill in the first minute); lag bounded (the worker keeps up with
the rate); live alerts equal to the backtest's.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/soak.py` as well as `python -m bench.soak`
    sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from streams.config.loader import load_rules  # noqa: E402
from streams.core.topology import input_key  # noqa: E402
from streams.offline.backtest import run_backtest  # noqa: E402
from streams.tools.broker import EmbeddedBroker  # noqa: E402
from streams.tools.generate import write_log  # noqa: E402
from streams.tools.replay import ReplayStats, replay  # noqa: E402
from tests.worker_harness import WorkerProcess, alert_ids, read_topic, worker_env  # noqa: E402

PREFIX = "soak"


def rss_mib(pid: int | None) -> float | None:
    """Resident set size of ``pid`` in MiB, from /proc/PID/status (psutil is not a dependency)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError):
        return None
    return None


def scrape(port: int) -> dict[str, float]:
    """Sum of each metric's samples (labels dropped), or {} if the endpoint does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def sample(worker: WorkerProcess, broker: EmbeddedBroker, port: int, started: float, sent: int) -> dict[str, Any]:
    metrics = scrape(port)
    return {
        "t": round(time.monotonic() - started, 1),
        "worker_rss_mib": rss_mib(worker.proc.pid if worker.proc else None),
        "broker_rss_mib": rss_mib(broker.pid),
        "replayed": sent,
        "end_offset": metrics.get("modwatch_consumer_end_offset"),
        "committed": metrics.get("modwatch_consumer_committed_offset"),
        "lag": metrics.get("modwatch_consumer_lag"),
        "evaluated": metrics.get("modwatch_events_processed_total"),
        "alerts": metrics.get("modwatch_alerts_total"),
        "state_keys": metrics.get("modwatch_state_keys"),
        "timers": metrics.get("modwatch_timers"),
        "rebalances": metrics.get("modwatch_rebalances_total"),
    }


class Replayer(threading.Thread):
    def __init__(self, bootstrap: str, path: Path, rate: float) -> None:
        super().__init__(name="soak-replay", daemon=True)
        self.bootstrap, self.path, self.rate = bootstrap, path, rate
        self.stats: ReplayStats | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stats = replay([str(self.path)], self.bootstrap, lambda _t: f"{PREFIX}.events", input_key,
                                rate=self.rate, out=io.StringIO())  # fmt: skip
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def slope_mib_per_min(samples: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of ``key`` over time, in MiB per minute."""
    points = [(s["t"], s[key]) for s in samples if s.get(key) is not None]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(samples: list[dict[str, Any]]) -> None:
    head = f"{'t (s)':>7} {'worker MiB':>10} {'broker MiB':>10} {'replayed':>9} {'evaluated':>9} {'lag':>6} " \
           f"{'alerts':>7} {'state keys':>10} {'timers':>7}"  # fmt: skip
    print(head)
    print("-" * len(head))
    for s in samples:
        print(f"{s['t']:>7.0f} {fmt(s['worker_rss_mib'], ',.1f'):>10} {fmt(s['broker_rss_mib'], ',.1f'):>10} "
              f"{fmt(s['replayed']):>9} {fmt(s['evaluated']):>9} {fmt(s['lag']):>6} {fmt(s['alerts']):>7} "
              f"{fmt(s['state_keys']):>10} {fmt(s['timers']):>7}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady replay")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    events = int(args.rate * args.minutes * 60)

    workdir = Path(tempfile.mkdtemp(prefix="modwatch-soak-"))
    log = workdir / "events.jsonl"
    t0 = time.monotonic()
    write_log(str(log), events, seed=args.seed, incidents=True)
    print(f"generated {events:,} events in {time.monotonic() - t0:.1f} s ({log})", flush=True)

    samples: list[dict[str, Any]] = []
    with EmbeddedBroker() as broker:
        env = worker_env(broker.bootstrap, PREFIX, workdir)
        port = int(env["MODWATCH_METRICS_PORT"])
        worker = WorkerProcess(env, workdir / "worker.log").start()
        try:
            deadline = time.monotonic() + 120
            while scrape(port).get("modwatch_rebalances_total", 0) < 1:
                if not worker.alive() or time.monotonic() > deadline:
                    raise SystemExit(f"worker did not start:\n{worker.log_tail()}")
                time.sleep(0.5)
            replayer = Replayer(broker.bootstrap, log, args.rate)
            started = time.monotonic()
            replayer.start()
            next_sample = started
            while replayer.is_alive():
                if time.monotonic() >= next_sample:
                    expected_sent = min(events, int((time.monotonic() - started) * args.rate))
                    samples.append(sample(worker, broker, port, started, expected_sent))
                    print_row = samples[-1]
                    print(f"t={print_row['t']:.0f}s rss={fmt(print_row['worker_rss_mib'], '.1f')} MiB "
                          f"lag={fmt(print_row['lag'])} evaluated={fmt(print_row['evaluated'])} "
                          f"alerts={fmt(print_row['alerts'])}", flush=True)  # fmt: skip
                    next_sample += args.interval
                if not worker.alive():
                    raise SystemExit(f"worker died:\n{worker.log_tail()}")
                time.sleep(0.2)
            replay_seconds = time.monotonic() - started
            if replayer.error is not None or replayer.stats is None:
                raise SystemExit(f"replay failed: {replayer.error!r}")
            sent = replayer.stats.sent
            # Drain: until every event is evaluated and committed (sample_health runs every 5 s).
            drain_deadline = time.monotonic() + 300
            while time.monotonic() < drain_deadline:
                last = sample(worker, broker, port, started, sent)
                if (last["evaluated"] or 0) >= sent and last["lag"] == 0 and (last["end_offset"] or 0) >= sent:
                    break
                time.sleep(1.0)
            drained = time.monotonic() - started - replay_seconds
            samples.append(last)
            records = read_topic(broker.bootstrap, f"{PREFIX}.alerts", until=lambda r: True, timeout=300, settle=5.0)
        finally:
            worker.stop()
    live_ids = alert_ids(records)

    print("backtest of the same log...", flush=True)
    t0 = time.monotonic()
    backtest = run_backtest([str(log)], load_rules(REPO / "config"))
    backtest_ids = {a.alert_id for a in backtest.alerts}
    backtest_seconds = time.monotonic() - t0

    steady = [s for s in samples if s["t"] >= (samples[-1]["t"] / 2)]  # the second half
    rss = [s["worker_rss_mib"] for s in samples if s["worker_rss_mib"] is not None]
    lags = [s["lag"] for s in samples[:-1] if s["lag"] is not None]
    summary = {
        "events": events,
        "rate": args.rate,
        "replay_seconds": round(replay_seconds, 1),
        "achieved_rate": round(sent / replay_seconds, 1),
        "drain_seconds_after_replay": round(drained, 1),
        "worker_rss_mib": {"first": rss[0], "max": max(rss), "last": rss[-1]} if rss else None,
        "worker_rss_slope_mib_per_min": {"whole": slope_mib_per_min(samples, "worker_rss_mib"),
                                         "second_half": slope_mib_per_min(steady, "worker_rss_mib")},
        "broker_rss_slope_mib_per_min": slope_mib_per_min(samples, "broker_rss_mib"),
        "lag_during_replay": {"max": max(lags), "mean": sum(lags) / len(lags)} if lags else None,
        "final_lag": samples[-1]["lag"],
        "alerts": {
            "live_unique_ids": len(live_ids),
            "live_records": len(records),
            "backtest": len(backtest_ids),
            "missing_vs_backtest": len(backtest_ids - live_ids),
            "extra_vs_backtest": len(live_ids - backtest_ids),
            "metric_alerts_total": samples[-1]["alerts"],
        },
        "backtest_seconds": round(backtest_seconds, 1),
    }  # fmt: skip
    result = {"config": vars(args), "summary": summary, "samples": samples}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print_table(samples)
    print()
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
