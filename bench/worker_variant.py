"""``modwatch worker`` with benchmark overrides: ``python -m bench.worker_variant``.

``$BENCH_FAUST`` is a JSON object of Faust settings laid over ``streams.app._faust_settings`` (to
measure one tuning at a time, or to put Faust's defaults back), plus ``fetch_max_wait_ms`` for
``streams.worker.set_fetch_max_wait``, ``fast_delivery`` for ``streams.worker.deliver_without_tasks``
and ``local_evaluation`` for the setting of that name;
``$BENCH_LOOP`` is ``uvloop`` or ``asyncio``; ``$BENCH_GC_LOG=1`` logs each garbage collection of
10 ms or more (``log_gc_pauses``). Everything else comes from the usual ``MODWATCH_*`` environment.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

from streams import app as app_module
from streams.settings import Settings
from streams.worker import FETCH_MAX_WAIT_MS, run_worker


def overrides() -> dict[str, Any]:
    value = json.loads(os.environ.get("BENCH_FAUST") or "{}")
    if not isinstance(value, dict):
        raise SystemExit("BENCH_FAUST must be a JSON object")
    return value


def log_gc_pauses(threshold: float = 0.010) -> None:
    """Log every garbage collection that takes ``threshold`` s or more, with its generation."""
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took >= threshold:
            print(f"gc: generation {info['generation']} took {took * 1000:.0f} ms at {time.time():.2f}",
                  file=sys.stderr, flush=True)  # fmt: skip

    gc.callbacks.append(callback)


def main() -> int:
    if os.environ.get("BENCH_GC_LOG") == "1":
        log_gc_pauses()
    extra = overrides()
    fetch_wait = extra.pop("fetch_max_wait_ms", FETCH_MAX_WAIT_MS)  # null: Faust's 1,500 ms
    local = extra.pop("local_evaluation", None)  # null: the setting as configured
    fast_delivery = bool(extra.pop("fast_delivery", True))
    shipped = app_module._faust_settings

    def patched(settings: Settings) -> dict[str, Any]:
        return {**shipped(settings), **extra}

    app_module._faust_settings = patched  # create_app looks it up at call time
    loop = os.environ.get("BENCH_LOOP", "uvloop")
    settings = Settings() if local is None else Settings(local_evaluation=bool(local))
    return run_worker(settings, loglevel="warning", loop=loop, fetch_max_wait_ms=fetch_wait,
                      fast_delivery=fast_delivery)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
