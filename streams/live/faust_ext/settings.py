"""The worker's Faust app class and the settings its consumer reads (``streams.live.faust_ext.consumer``).

Faust builds ``app.conf`` from ``App.Settings``, and a Settings subclass adds settings the Faust way
(a ``Param`` per setting, with a default and a type). These three belong to one app, not to the
process: two apps in one process (the benchmark's worker and its trivial agent are separate
processes, but a test may build several apps) each get their own. A plain ``faust.App`` on our
transport has none of them: its consumer uses the defaults below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types.settings import params, sections

#: How long the worker's Kafka fetches wait for records (ms). Faust hard-codes 1,500 ms, and Tansu does
#: not answer a waiting fetch when records arrive, so at a trickle each stage (input -> route, keyed ->
#: evaluate) held records for up to 1.5 s: detection latency p50 2.9 s at 250 events/s, 113 ms with
#: 50 ms (bench/README.md, latency). A shorter wait costs an empty fetch per wait per worker.
FETCH_MAX_WAIT_MS = 50
#: Faust's own fetch wait (``AIOKafkaConsumerThread._create_worker_consumer``, 0.15).
FAUST_FETCH_MAX_WAIT_MS = 1500


class Settings(faust.Settings):
    """Faust's settings plus three of modwatch's consumer (``App(id, fetch_max_wait_ms=1500, ...)``).
    Faust reads ``None`` as "not given": pass ``FAUST_FETCH_MAX_WAIT_MS`` for Faust's fetch wait."""

    @sections.Consumer.setting(params.UnsignedInt, default=FETCH_MAX_WAIT_MS)
    def fetch_max_wait_ms(self) -> int:  # type: ignore[empty-body]  # the decorator reads its docstring
        """How long a Kafka fetch of the worker's consumer waits for records, in ms (Faust: 1,500)."""

    @sections.Consumer.setting(params.Bool, default=True)
    def fast_delivery(self) -> bool:  # type: ignore[empty-body]
        """Deliver a fetched record without Faust's four tasks when it needs no wait
        (``Consumer.wait_first``); False: Faust's delivery."""

    @sections.Consumer.setting(params.Bool, default=True)
    def wake_on_buffer_drop(self) -> bool:  # type: ignore[empty-body]
        """Wake the fetch loop when a stream partition paused for a full buffer comes back
        (``Consumer.on_buffer_drop``); False: Faust's waits of up to a second."""


@dataclass(frozen=True)
class ConsumerOptions:
    """The three settings as the consumer reads them, once (``Consumer.options``)."""

    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    fast_delivery: bool = True
    wake_on_buffer_drop: bool = True

    @classmethod
    def of(cls, conf: Any) -> ConsumerOptions:
        """From an app's ``conf``; a plain ``faust.Settings`` has none of them: the defaults."""
        default = cls()
        return cls(
            fetch_max_wait_ms=int(getattr(conf, "fetch_max_wait_ms", default.fetch_max_wait_ms)),
            fast_delivery=bool(getattr(conf, "fast_delivery", default.fast_delivery)),
            wake_on_buffer_drop=bool(getattr(conf, "wake_on_buffer_drop", default.wake_on_buffer_drop)),
        )


@dataclass(frozen=True)
class CommitHook:
    """What the consumer calls around an offset commit (``Consumer._commit_tps``); the app sets one as
    ``app.modwatch_commit``. ``before`` runs under ``lock`` (the agents' batch lock), after the
    offsets to commit were chosen; ``after`` gets the offsets once they are committed."""

    lock: asyncio.Lock
    before: Callable[[], Awaitable[None]]
    after: Callable[[dict[Any, int]], None]


class App(faust.App):
    """Faust's app with modwatch's settings (``Settings``) and the commit hook its consumer calls."""

    Settings = Settings
    modwatch_commit: CommitHook | None = None
