"""What every benchmark shares: machine facts, timing, RSS, ratios and the results files.

The machine is shared and noisy, so no absolute figure stands alone: each is divided by a baseline
measured in the same run, moments before or after (and interleaved when a benchmark repeats).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def machine() -> dict[str, Any]:
    """The facts the README table is labelled with."""
    model = "unknown"  # also when /proc/cpuinfo cannot be read (not Linux)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "load_1min_at_start": round(load, 2),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settle_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS shows what is still live."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, rounded; None when either is missing (JSON has no NaN)."""
    if value is None or not base or value != value or base != base:
        return None
    return round(value / base, 3)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process, all its threads (``/proc/PID/stat``); None once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def machine_cpu_seconds() -> dict[str, float]:
    """The whole machine's CPU time so far (``/proc/stat``), summed over its cores: busy, idle, and
    stolen (time the hypervisor gave this machine's virtual CPUs to someone else)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq) / CLOCK_TICKS,
            "idle": (idle + iowait) / CLOCK_TICKS, "steal": steal / CLOCK_TICKS}  # fmt: skip


class CpuMeter:
    """Cores used between ``start`` and ``stop``: by each named group of processes, and by the whole
    machine. A ratio that misses its goal may be the machine's limit rather than the code's: two
    workers cannot run at 1.6x one when one worker and the broker already fill the machine's cores.

    ``stop`` returns ``{"seconds": wall time, "cores": {name: CPU s / wall s}, "machine_busy_cores",
    "machine_steal_cores", "nproc"}``. A process that exits before ``stop`` is left out of its group.
    """

    def __init__(self, groups: dict[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._start: tuple[float, dict[int, float | None], dict[str, float]] | None = None

    def start(self) -> None:
        pids = {pid for group in self.groups.values() for pid in group}
        self._start = (time.perf_counter(), {pid: process_cpu_seconds(pid) for pid in pids}, machine_cpu_seconds())

    @property
    def started(self) -> bool:
        return self._start is not None

    def stop(self) -> dict[str, Any] | None:
        if self._start is None:
            return None
        began, before, machine_before = self._start
        wall = time.perf_counter() - began
        if wall <= 0:
            return None
        cores: dict[str, float | None] = {}
        for name, pids in self.groups.items():
            used = [(process_cpu_seconds(pid), before.get(pid)) for pid in pids]
            spent = [after - start for after, start in used if after is not None and start is not None]
            cores[name] = round(sum(spent) / wall, 2) if spent else None
        machine_after = machine_cpu_seconds()
        out: dict[str, Any] = {"seconds": round(wall, 2), "cores": cores, "nproc": os.cpu_count()}
        if machine_before and machine_after:
            out["machine_busy_cores"] = round((machine_after["busy"] - machine_before["busy"]) / wall, 2)
            out["machine_steal_cores"] = round((machine_after["steal"] - machine_before["steal"]) / wall, 2)
        return out
