"""Worker and trivial-agent processes for the live benchmarks, and timing them by their metrics.

A process's throughput is read the same way for the worker and the trivial agent: the sum of
``modwatch_events_processed_total`` polled from its metrics endpoint every :data:`POLL` seconds,
from the first poll that sees a processed event to the first that sees all of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.core.events import EVENT_TYPES
from streams.tools.broker import free_port

from .common import REPO, CpuMeter

POLL = 0.2  # seconds between metric polls: +-0.2 s on runs of 10 s and more
TRIVIAL_POLL = 0.05  # the trivial agent is through 20,000 events in a few seconds
WORKER = "bench.worker_variant"
TRIVIAL = "bench.trivial_app"

# Faust's own defaults for every setting the shipped worker tunes: laid over the shipped settings,
# they give the untuned baseline. ``fetch_max_wait_ms`` (null: Faust's hard-coded 1,500 ms),
# ``fast_delivery`` (False: Faust's delivery of records, ``Consumer.wait_first``) and
# ``wake_on_buffer_drop`` (False: Faust's fetch loop, ``Consumer.on_buffer_drop``) are not Faust's
# settings but the worker's consumer's, per app (streams.live.faust_ext.settings).
FAUST_DEFAULTS: dict[str, Any] = {
    "fetch_max_wait_ms": None,
    "stream_buffer_maxsize": 4096,
    "broker_max_poll_records": None,
    "consumer_max_fetch_size": 1024**2,
    "producer_linger": 0.0,
    "producer_max_batch_size": 16384,
    "producer_threaded": False,
    "fast_delivery": False,
    "wake_on_buffer_drop": False,
}


def app_env(bootstrap: str, app_id: str, input_topic: str, workdir: Path, partitions: int = 1,
            loop: str = "uvloop", faust: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """The environment of one worker or trivial agent: its own group, internal topics and ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODWATCH_", "BENCH_"))}
    data = workdir / app_id
    data.mkdir(parents=True, exist_ok=True)
    (data / "none.yaml").write_text("{}\n")
    env.update({
        "MODWATCH_BOOTSTRAP_SERVERS": bootstrap,
        "MODWATCH_APP_ID": app_id,
        "MODWATCH_RULES_DIR": str(REPO / "config"),
        "MODWATCH_DATA_DIR": str(data / "faust"),
        "MODWATCH_METRICS_PORT": str(free_port()),
        "MODWATCH_WEB_PORT": "0",  # Faust's web server off, for the worker and the trivial agent alike
        "MODWATCH_TOPICS__EVENTS": json.dumps(dict.fromkeys(EVENT_TYPES, input_topic)),
        "MODWATCH_TOPICS__ALERTS": f"{app_id}.alerts",
        "MODWATCH_TOPICS__DEADLETTER": f"{app_id}.deadletter",
        "MODWATCH_TOPICS__KEYED": f"{app_id}.keyed",
        "MODWATCH_TOPICS__PARTITIONS": str(partitions),
        "MODWATCH_SETTINGS": str(data / "none.yaml"),
        "BENCH_LOOP": loop,
        "BENCH_FAUST": json.dumps(faust or {}),
    })  # fmt: skip
    for name in ("BENCH_GC_LOG", "BENCH_STALL_LOG"):  # bench.worker_variant logs collections, stalls
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


class Proc:
    """A benchmark subprocess (``python -m MODULE``) with its metrics port and log file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.port = int(env["MODWATCH_METRICS_PORT"])
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=REPO, stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        self.started = time.perf_counter()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metric(self, name: str) -> float | None:
        """Sum of a metric's samples, or None while the endpoint is not up."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                body = resp.read().decode()
        except OSError:
            return None
        total = 0.0
        for line in body.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total

    def processed(self) -> float | None:
        return self.metric("modwatch_events_processed_total")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Timing:
    events_per_s: float
    startup_s: float  # spawn to the first poll that saw a processed event
    span_s: float  # first to last poll
    cpu: dict[str, Any] | None = None  # CpuMeter's figures over the same span
    overlap: dict[str, Any] | None = None  # several processes: ``_overlap``


def _overlap(polls: list[tuple[float, list[float]]]) -> dict[str, Any] | None:
    """For several processes timed together: when each started and stopped processing (seconds from
    the first poll that saw an event), and the rate while **all** of them were processing, from the
    first poll at which each had processed an event to the last poll before the first of them had
    processed its last. A process that starts late (its assignment or recovery took longer) or ends
    early (its partitions held fewer events) lowers the first-to-last rate without saying so."""
    if not polls or len(polls[0][1]) < 2:
        return None
    origin = next(t for t, counts in polls if sum(counts) > 0)
    firsts, lasts = [], []
    for index in range(len(polls[0][1])):
        series = [(t, counts[index]) for t, counts in polls]
        final = series[-1][1]
        firsts.append(next((t for t, c in series if c > 0), None))
        lasts.append(next((t for t, c in series if c >= final), None))
    out: dict[str, Any] = {
        "started_s": [None if t is None else round(t - origin, 2) for t in firsts],
        "finished_s": [None if t is None else round(t - origin, 2) for t in lasts],
    }
    if None in firsts or None in lasts:
        return out
    start, end = max(t for t in firsts if t is not None), min(t for t in lasts if t is not None)
    window = [(t, sum(counts)) for t, counts in polls if start <= t <= end]
    if len(window) >= 2 and window[-1][0] > window[0][0]:
        out["all_active_s"] = round(window[-1][0] - window[0][0], 2)
        out["all_active_events_per_s"] = round((window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))
    return out


def time_processing(procs: Sequence[Proc], total: int, timeout: float = 900.0, poll: float = POLL,
                    others: dict[str, Sequence[int]] | None = None) -> Timing:  # fmt: skip
    """Poll until the processes together have processed ``total`` events; rate from first to last.
    The cores the processes used over that span are measured too, with those of ``others`` (name:
    pids; the broker) and the whole machine's."""
    spawned = min(p.started for p in procs)
    meter = CpuMeter({"timed": [p.proc.pid for p in procs], **(others or {})})
    deadline = time.perf_counter() + timeout
    first: tuple[float, float] | None = None
    polls: list[tuple[float, list[float]]] = []
    while True:
        tick = time.perf_counter()
        counts = [p.processed() for p in procs]
        now = time.perf_counter()  # the count is taken as the answer is built: closer to the end
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.module} exited with {p.proc.returncode}:\n{p.tail()}")
        done = sum(c or 0.0 for c in counts)
        polls.append((now, [c or 0.0 for c in counts]))
        if first is None and done > 0:
            first = (now, done)
            meter.start()
        if first is not None and done >= total:
            if done == first[1]:
                raise RuntimeError(f"all {total} events were processed before the second poll: use more events")
            return Timing((done - first[1]) / (now - first[0]), first[0] - spawned, now - first[0], meter.stop(),
                          _overlap(polls))  # fmt: skip
        if now > deadline:
            raise RuntimeError(f"processed {done:.0f} of {total} events in {timeout:g} s:\n{procs[0].tail()}")
        time.sleep(max(0.0, poll - (time.perf_counter() - tick)))


def wait_processed(proc: Proc, at_least: float, timeout: float = 300.0, poll: float = 0.1) -> float:
    """Seconds from the process's spawn until it has processed ``at_least`` events."""
    deadline = time.perf_counter() + timeout
    while True:
        done = proc.processed()
        if done is not None and done >= at_least:
            return time.perf_counter() - proc.started
        if not proc.alive():
            raise RuntimeError(f"{proc.module} exited with {proc.proc.returncode}:\n{proc.tail()}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{proc.module}: {done} of {at_least} events after {timeout:g} s:\n{proc.tail()}")
        time.sleep(poll)
