"""``modwatch worker`` with benchmark overrides: ``python -m bench.worker_variant``.

``$BENCH_FAUST`` is a JSON object of Faust settings laid over ``streams.live.app._faust_settings`` (to
measure one tuning at a time, or to put Faust's defaults back), plus the worker's consumer settings
``fetch_max_wait_ms`` (null: Faust's 1,500 ms), ``fast_delivery`` and ``wake_on_buffer_drop``
(``streams.live.faust_ext.settings``, handed to ``run_worker``) and ``local_evaluation``, ``bundle_keyed_records``
and ``standby_replicas`` for the settings of those names; ``$BENCH_LOOP`` is ``uvloop`` or
``asyncio``; ``$BENCH_LOGLEVEL`` is the worker's log level (``warning`` unless set; ``info`` logs
Faust's recovery, which the ``failover`` section reads); ``$BENCH_GC_LOG=1`` logs each garbage
collection of 10 ms or more (``log_gc_pauses``); ``$BENCH_STALL_LOG=1`` logs each stall of the event
loop of 40 ms or more with what the loop's thread was running (``log_stalls``). Everything else
comes from the usual ``MODWATCH_*`` environment.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from streams.config.settings import Settings
from streams.live import app as app_module
from streams.live.faust_ext.settings import FETCH_MAX_WAIT_MS
from streams.live.worker import run_worker


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


def log_stalls(threshold: float = 0.040, every: float = 0.005) -> None:
    """Log each stretch in which the event loop ran no callback of its own for ``threshold`` s or more:
    a task beats every ``every`` s, a thread samples the loop thread's stack while the beat is late and
    logs the most frequent innermost frames when it comes back. Samples come at the GIL's switch
    interval (5 ms) at best, so a stall is seen from ~``threshold`` on. Nothing is watched before the
    first beat (start-up). A sample whose innermost frame is ``execute_from_commandline`` caught the
    loop in its own C code (uvloop), not in a Python callback."""
    beat: list[float | None] = [None]
    main_thread = threading.get_ident()
    create_app = app_module.create_app

    def with_heartbeat(*args: Any, **kwargs: Any) -> Any:
        runtime = create_app(*args, **kwargs)

        @runtime.app.task
        async def heartbeat() -> None:
            while True:
                beat[0] = time.perf_counter()
                await asyncio.sleep(every)

        return runtime

    app_module.create_app = with_heartbeat  # run_worker looks it up at call time

    def watch() -> None:
        samples: Counter[str] = Counter()
        worst = 0.0
        while True:
            time.sleep(every)
            last = beat[0]
            if last is None:  # not started yet
                continue
            late = time.perf_counter() - last
            if late >= threshold:
                worst = max(worst, late)
                frame = sys._current_frames().get(main_thread)
                if frame is not None:
                    stack = traceback.extract_stack(frame)[-8:]
                    samples[" < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))] += 1
            elif worst:
                top = "; ".join(f"{n}x {s}" for s, n in samples.most_common(3))
                print(f"stall: {worst * 1000:.0f} ms at {time.time():.2f}: {top}", file=sys.stderr, flush=True)
                samples.clear()
                worst = 0.0

    threading.Thread(target=watch, name="stall-watch", daemon=True).start()


# modwatch's own settings, not Faust's, with their types
MODWATCH_SETTINGS: dict[str, type] = {"local_evaluation": bool, "bundle_keyed_records": bool, "standby_replicas": int}


def main() -> int:
    if os.environ.get("BENCH_GC_LOG") == "1":
        log_gc_pauses()
    if os.environ.get("BENCH_STALL_LOG") == "1":
        log_stalls()
    extra = overrides()
    fetch_wait = extra.pop("fetch_max_wait_ms", FETCH_MAX_WAIT_MS)  # null: Faust's 1,500 ms
    # null or absent: the setting as configured
    own = {name: cast(value) for name, cast in MODWATCH_SETTINGS.items()
           if (value := extra.pop(name, None)) is not None}  # fmt: skip
    fast_delivery = bool(extra.pop("fast_delivery", True))
    wake_on_buffer_drop = bool(extra.pop("wake_on_buffer_drop", True))
    shipped = app_module._faust_settings

    def patched(settings: Settings) -> dict[str, Any]:
        return {**shipped(settings), **extra}

    app_module._faust_settings = patched  # create_app looks it up at call time
    loop = os.environ.get("BENCH_LOOP", "uvloop")
    settings = Settings(**own)
    loglevel = os.environ.get("BENCH_LOGLEVEL", "warning")
    return run_worker(settings, loglevel=loglevel, loop=loop, fetch_max_wait_ms=fetch_wait,
                      fast_delivery=fast_delivery, wake_on_buffer_drop=wake_on_buffer_drop)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
