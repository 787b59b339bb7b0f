"""``modwatch worker`` with benchmark overrides: ``python -m bench.worker_variant``.

``$BENCH_FAUST`` is a JSON object of Faust settings laid over ``streams.app._faust_settings`` (to
measure one tuning at a time, or to put Faust's defaults back), plus ``fetch_max_wait_ms`` for
``streams.worker.set_fetch_max_wait``, ``fast_delivery`` for ``streams.worker.deliver_without_tasks``
and ``local_evaluation`` for the setting of that name;
``$BENCH_LOOP`` is ``uvloop`` or ``asyncio``. Everything else comes from the usual ``MODWATCH_*``
environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

from streams import app as app_module
from streams.settings import Settings
from streams.worker import FETCH_MAX_WAIT_MS, run_worker


def overrides() -> dict[str, Any]:
    value = json.loads(os.environ.get("BENCH_FAUST") or "{}")
    if not isinstance(value, dict):
        raise SystemExit("BENCH_FAUST must be a JSON object")
    return value


def main() -> int:
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
