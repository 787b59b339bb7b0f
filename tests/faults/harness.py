"""Helpers for the fault tests: metrics scraping, paced replays in a thread, backtest references,
and waiting on conditions (never on fixed sleeps: the machine is shared and slow at times).

The worker processes themselves come from ``tests/worker_harness.py``.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streams.config.loader import load_rules
from streams.core.topology import input_key
from streams.offline.backtest import run_backtest
from streams.tools.generate import write_log
from streams.tools.replay import ReplayStats, replay

from ..worker_harness import REPO, WorkerProcess

EXAMPLE = REPO / "examples" / "events.jsonl"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- waiting ------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
               diagnostics: Callable[[], str] | None = None) -> Any:  # fmt: skip
    """Poll ``condition`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{diagnostics()}" if diagnostics is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


# -- metrics ------------------------------------------------------------------------------------


def scrape(port: int, timeout: float = 5.0) -> Samples | None:
    """Every sample of a worker's /metrics as {(name, sorted labels): value}; None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode("utf-8")
    except (OSError, urllib.error.URLError):
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples | None, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when there are none)."""
    if not samples:
        return 0.0
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= set(lbls))


def metrics_port(worker: WorkerProcess) -> int:
    return int(worker.env["MODWATCH_METRICS_PORT"])


def processed(worker: WorkerProcess) -> int:
    """Events this worker process has evaluated (each counted once, on its primary keyed record)."""
    return int(total(scrape(metrics_port(worker)), "modwatch_events_processed_total"))


def wait_ready(worker: WorkerProcess, timeout: float = 90.0) -> Samples:
    """Until the worker serves metrics and has received its first partition assignment."""

    def ready() -> Samples | None:
        assert worker.alive(), f"worker exited:\n{worker.log_tail()}"
        samples = scrape(metrics_port(worker))
        return samples if total(samples, "modwatch_rebalances_total") >= 1 else None

    result: Samples = wait_until(ready, timeout, "the worker's first partition assignment",
                                 diagnostics=worker.log_tail)  # fmt: skip
    return result


class Sampler:
    """Scrapes one or more workers every ``interval`` seconds in a thread; keeps (wall time, samples)."""

    def __init__(self, ports: Iterable[int], interval: float = 1.0) -> None:
        self.ports = list(ports)
        self.interval = interval
        self.series: dict[int, list[tuple[float, Samples]]] = {p: [] for p in self.ports}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for port in list(self.ports):
                samples = scrape(port, timeout=2.0)
                if samples is not None:
                    self.series[port].append((time.time(), samples))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# -- logs and references ------------------------------------------------------------------------


def generated_log(path: Path, events: int, seed: int) -> Path:
    write_log(str(path), events, seed=seed, incidents=True)
    return path


def split_log(path: Path, cut: int, workdir: Path) -> tuple[Path, Path]:
    """The first ``cut`` lines and the rest, as two files."""
    lines = path.read_text().splitlines(keepends=True)
    first, second = workdir / f"{path.stem}-a.jsonl", workdir / f"{path.stem}-b.jsonl"
    first.write_text("".join(lines[:cut]))
    second.write_text("".join(lines[cut:]))
    return first, second


def backtest_alerts(*paths: Path) -> dict[str, dict[str, Any]]:
    """alert id -> alert (as published), from ``modwatch backtest`` over the whole log."""
    result = run_backtest([str(p) for p in paths], load_rules(REPO / "config"))
    return {a.alert_id: a.to_dict() for a in result.alerts}


def event_index(event_id: str) -> int:
    """Line order of a generated or example event id (``ev-000123`` -> 123)."""
    return int(event_id.rsplit("-", 1)[1])


@dataclass
class Published:
    """What the alerts topic holds: every record, by id."""

    records: list[dict[str, Any]]
    counts: Counter[str] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counter(r["alert_id"] for r in self.records)

    @classmethod
    def of(cls, kafka_records: list[Any]) -> Published:
        return cls([json.loads(r.value) for r in kafka_records])

    @property
    def ids(self) -> set[str]:
        return set(self.counts)

    @property
    def repeats(self) -> int:
        """Records beyond the first of their id (what a consumer drops)."""
        return len(self.records) - len(self.counts)

    def differing_repeats(self) -> list[str]:
        """Ids published more than once with different content."""
        first: dict[str, dict[str, Any]] = {}
        differ = []
        for record in self.records:
            seen = first.setdefault(record["alert_id"], record)
            if seen != record and record["alert_id"] not in differ:
                differ.append(record["alert_id"])
        return differ


# -- replay in a thread -------------------------------------------------------------------------


class Replayer(threading.Thread):
    """``streams.tools.replay.replay`` of one log at ``rate`` events/s, in a thread (so a test can act
    mid-replay). ``join_ok()`` waits for it and re-raises what went wrong."""

    def __init__(self, bootstrap: str, topic: str, path: Path, rate: float | None = None, partitions: int = 1) -> None:
        super().__init__(name=f"replay-{path.name}", daemon=True)
        self.args = (bootstrap, topic, path, rate, partitions)
        self.stats: ReplayStats | None = None
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.finished_at = 0.0

    def run(self) -> None:
        bootstrap, topic, path, rate, partitions = self.args
        self.started_at = time.time()
        try:
            self.stats = replay([str(path)], bootstrap, lambda _t: topic, input_key, partitions=partitions,
                                rate=rate, out=io.StringIO())  # fmt: skip
        except BaseException as exc:  # reported by join_ok()
            self.error = exc
        finally:
            self.finished_at = time.time()

    def join_ok(self, timeout: float = 120.0) -> ReplayStats:
        self.join(timeout)
        assert not self.is_alive(), f"replay of {self.args[2]} still running after {timeout:g} s"
        if self.error is not None:
            raise AssertionError(f"replay failed: {self.error!r}") from self.error
        assert self.stats is not None
        assert self.stats.rejected_total == 0 and self.stats.failed == 0, self.stats.summary()
        return self.stats


def replay_now(bootstrap: str, topic: str, path: Path, partitions: int = 1) -> ReplayStats:
    """A replay at full speed, in this thread."""
    replayer = Replayer(bootstrap, topic, path, None, partitions)
    replayer.run()
    if replayer.error is not None:
        raise AssertionError(f"replay failed: {replayer.error!r}") from replayer.error
    assert replayer.stats is not None and replayer.stats.failed == 0
    return replayer.stats
