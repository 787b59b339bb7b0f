"""What modwatch changes in how Faust fetches records and hands them to the agents: each function
installs one change (idempotently), and ``streams.live.worker.run_worker`` installs them all, with the
rebalance changes of ``streams.live.faust_ext.rebalance_patches``. Each docstring says what Faust or aiokafka does,
why that fails here, and what the change does instead; the tests that pin each change against
Faust's own methods are in tests/test_faust_patches.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


#: How long the worker's Kafka fetches wait for records (ms). Faust hard-codes 1,500 ms, and Tansu does
#: not answer a waiting fetch when records arrive, so at a trickle each stage (input -> route, keyed ->
#: evaluate) held records for up to 1.5 s: detection latency p50 2.9 s at 250 events/s, 113 ms with
#: 50 ms (bench/README.md, latency). A shorter wait costs an empty fetch per wait per worker.
FETCH_MAX_WAIT_MS = 50


def set_fetch_max_wait(ms: int | None) -> None:
    """Make the Faust consumer created from now on wait at most ``ms`` for records (None: Faust's 1,500)."""
    from faust.transport.drivers import aiokafka as driver

    thread: Any = driver.AIOKafkaConsumerThread
    original = getattr(thread, "_modwatch_create_worker_consumer", None) or thread._create_worker_consumer
    thread._modwatch_create_worker_consumer = original
    if ms is None:
        thread._create_worker_consumer = original
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms  # read when the consumer starts its fetcher
        return consumer

    thread._create_worker_consumer = create


class ActiveOnly:
    """Faust's live set of active partitions as aiokafka's ``fetched_records`` should read it: only
    these partitions, none when the set is empty (aiokafka reads an empty collection as "every
    assigned partition")."""

    __slots__ = ("partitions",)

    def __init__(self, partitions: Any) -> None:
        self.partitions = partitions

    def __bool__(self) -> bool:
        return True  # never "every partition"

    def __contains__(self, tp: object) -> bool:  # all that ``fetched_records`` asks of it
        return tp in self.partitions


def fetch_only_active_partitions() -> None:
    """Make a Faust fetch return records of the active partitions only, even when none is active.

    Faust's fetch loop asks the consumer thread for the records of its set of active partitions
    (``Consumer._wait_next_records``, 0.15) and passes the set itself, not a copy. The fetch
    waits up to a second, reading the set each time records arrive. If the set is emptied meanwhile
    (recovery pauses the changelogs, and ``seek_before_resuming`` holds the stream partitions
    back until their seek is done), aiokafka's ``fetched_records`` reads the empty set as "every
    partition" and returns records of the stream partitions. Faust then drops them, as they are
    not active, but the Kafka consumer's position has moved past them: they were never delivered.
    A restarted worker lost the whole second half of the log that way, in 6 of 20 runs of
    test_state_survives_a_graceful_restart (consumer position 600, committed and read offsets 557,
    no event evaluated; traced by logging each fetch). The set is still read live, as before.
    """
    from faust.transport.drivers import aiokafka as driver

    thread: Any = driver.AIOKafkaConsumerThread
    if getattr(thread, "_modwatch_fetch_records", None) is not None:
        return
    fetch = thread._modwatch_fetch_records = thread._fetch_records

    async def fetch_records(self: Any, consumer: Any, active_partitions: Any, timeout: float | None = None,
                            max_records: int | None = None) -> Any:  # fmt: skip
        if active_partitions is not None:  # None: a client-only app's "every partition"
            active_partitions = ActiveOnly(active_partitions)
        return await fetch(self, consumer, active_partitions, timeout=timeout, max_records=max_records)

    thread._fetch_records = fetch_records


def wake_fetch_on_buffer_drop() -> None:
    """Make Faust's fetch loop take a stream partition back as soon as its buffer has room again.

    A stream buffer that fills takes its partition out of Faust's active set (``on_buffer_full``,
    0.15), and one that drains to half puts it back (``on_buffer_drop``). Meanwhile the fetch loop
    (``Consumer._wait_next_records``) either sleeps a full second, when no partition is active, or
    waits in aiokafka's ``fetched_records`` for new records of the partitions still active, up to a
    second. Neither wakes up when the partition comes back, although its records are already
    fetched and waiting. So every time a buffer filled, the partition stood still for up to a second
    after its buffer drained. The trivial agent of the live benchmark, whose only partition is paused
    each time its buffer fills, used 0.43 of a core and spent the rest in that sleep.

    With this, putting a partition back wakes both waits: the second's sleep waits for the
    partition's return instead, and the consumer thread's fetch waiters are released (aiokafka then
    re-reads the active set, which Faust passes live: ``fetch_only_active_partitions``). The stream
    partitions that ``seek_before_resuming`` puts back after a rebalance's seek wake them too.
    """
    from faust.transport.consumer import Consumer

    cls: Any = Consumer
    if getattr(cls, "_modwatch_on_buffer_drop", None) is not None:
        return
    on_buffer_drop = cls._modwatch_on_buffer_drop = cls.on_buffer_drop
    wait_next_records = cls._modwatch_wait_next_records = cls._wait_next_records

    def on_drop(self: Any, tp: Any) -> None:
        returned = tp in self._buffered_partitions
        on_buffer_drop(self, tp)
        if returned:
            wake_fetch_loop(self)

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        if not self.flow_active or self.app.client_only:
            return await wait_next_records(self, timeout)
        returned = _returned(self)
        returned.clear()
        active = self._get_active_partitions()
        if active:
            return await wait_next_records(self, timeout)
        # Faust: ``await self.sleep(1)``, then an empty fetch. The same second at most, ended early
        # by a partition's return (or the consumer's stop, which Faust's fetch loop checks next).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(returned.wait(), timeout=1.0)
        return {}, active

    cls.on_buffer_drop = on_drop
    cls._wait_next_records = _wait_next_records


def wake_fetch_loop(consumer: Any) -> None:
    """A partition is active again: end the fetch loop's wait for one (``wake_fetch_on_buffer_drop``)."""
    _returned(consumer).set()
    _release_fetch_waiters(consumer)


def _returned(consumer: Any) -> asyncio.Event:
    """Set when a paused stream partition is put back in the active set (on the fetch loop's loop)."""
    event: asyncio.Event | None = getattr(consumer, "_modwatch_returned", None)
    if event is None:
        event = consumer._modwatch_returned = asyncio.Event()
    return event


def _release_fetch_waiters(consumer: Any) -> None:
    """End aiokafka's wait for new records in the consumer thread, so that ``fetched_records``
    reads the active set again. Nothing to do before the thread's consumer exists."""
    thread = getattr(consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    loop = getattr(thread, "thread_loop", None)
    if fetcher is None or loop is None or loop.is_closed():
        return

    def release() -> None:  # in the consumer thread: aiokafka's own loop owns the waiters
        for waiter in list(fetcher._fetch_waiters):
            if not waiter.done():
                waiter.set_result(None)

    with contextlib.suppress(RuntimeError):  # the thread's loop closed meanwhile (a stop)
        loop.call_soon_threadsafe(release)


class _Resumed:
    """A coroutine that was stepped once and suspended on ``yielded``, as an awaitable that runs it
    to the end (what ``await coro`` would have done after its first step)."""

    def __init__(self, coro: Any, yielded: Any) -> None:
        self.coro, self.yielded = coro, yielded

    def __await__(self) -> Any:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                yield yielded  # the future it waits on, to the task that runs this
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancelled, for one: the coroutine gets it where it waits
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(None)
                except StopIteration as stop:
                    return stop.value


def deliver_without_tasks() -> None:
    """Make Faust hand each fetched record to its streams without four tasks per record.

    Faust's fetch loop (``Consumer._drain_messages``, 0.15) delivers each record with
    ``wait_first(callback(message), suspend_flow.wait())``, so that a rebalance can abandon a
    delivery that waits for room in a full stream buffer. ``wait_first`` makes a task of the
    delivery, of the rebalance flag's wait and of the service's stopped and crashed flags, waits for
    the first, then cancels the others: at 2,000 events/s that was ~10% of the worker's time, for
    deliveries that nearly always finish without waiting at all.

    With this, the delivery is first run up to where it would wait. Most finish there, and the
    record is delivered as before, without a task. One that waits goes on through Faust's
    ``wait_first``, from where it waits, so a rebalance still abandons it. Only the fetch loop's
    call is changed: two awaitables, the first a coroutine, no timeout, the flow not suspended.
    After a delivery that waited, the fetch loop may also wait for the changelog queue to drain
    (``_changelog_ebb``).
    """
    import inspect

    from faust.transport.consumer import Consumer
    from mode.services import WaitResults

    cls: Any = Consumer
    if getattr(cls, "_modwatch_wait_first", None) is not None:
        return
    wait_first = cls._modwatch_wait_first = cls.wait_first

    async def deliver(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if (timeout is not None or len(coros) != 2 or not inspect.iscoroutine(coros[0])
                or self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set()):  # fmt: skip
            return await wait_first(self, *coros, timeout=timeout)
        delivery, suspended = coros
        try:
            yielded = delivery.send(None)
        except StopIteration as done:
            _close(suspended)
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            _close(suspended)
            raise
        results = await wait_first(self, _Resumed(delivery, yielded), suspended)
        await _changelog_ebb(self)
        return results

    cls.wait_first = deliver


CHANGELOG_EBB_POLL = 0.002  # seconds between looks at a full changelog queue draining


async def _changelog_ebb(consumer: Any) -> None:
    """After a delivery that had to wait: if the table changelog queue is three quarters full or
    more, wait until it has drained to half before the fetch loop delivers more.

    Table recovery reads a changelog faster than Faust's recovery loop applies it, and while it
    recovers Faust does not stop fetching a partition whose queue is full (``on_buffer_full``). So
    once the queue (``stream_buffer_maxsize`` records) had filled, every further record waited for
    one free slot, through a task of its own, ``asyncio.wait`` and ``wait_first``'s four tasks: that
    machinery took about as much of the worker as the recovery itself. Waiting once for half the
    queue lets the next ~2,000 records in without waiting (bench ``failover``, 30k state entries read
    back from ~100k changelog records: 6.1-7.5 s against 11.7-14.4 s, in alternating runs). A
    rebalance or a stop ends the wait at once. Only a delivery that waited looks at the queue.
    Standby replicas' changelog reads share that queue: with them, the fetch loop can also wait
    here outside a recovery, for as long as the recovery loop takes to apply half the queue
    (~0.15 s here: 2,048 records), and the stream records fetched meanwhile wait with it."""
    queue = consumer.app.tables._changelog_queue  # None until a table registers its changelog
    if queue is None or not queue.maxsize or queue.qsize() * 4 < queue.maxsize * 3:
        return
    low = queue.maxsize // 2
    while queue.qsize() > low:
        if consumer.suspend_flow.is_set() or consumer._stopped.is_set() or consumer._crashed.is_set():
            return
        await asyncio.sleep(CHANGELOG_EBB_POLL)


def _close(awaitable: Any) -> None:
    """Close a coroutine that will not be awaited (else Python warns that it never was)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


@dataclass(frozen=True)
class CommitHook:
    """What ``log_state_before_commit`` calls around an offset commit; the app sets one as
    ``app.modwatch_commit``. ``before`` runs under ``lock`` (the agents' batch lock), after the
    offsets to commit were chosen; ``after`` gets the offsets once they are committed."""

    lock: asyncio.Lock
    before: Callable[[], Awaitable[None]]
    after: Callable[[dict[Any, int]], None]


def log_state_before_commit() -> None:
    """Make Faust log the worker's state changes at each offset commit, before the offsets.

    At least once needs the state an offset implies in the changelog before that offset is
    committed; not at every batch. A busy key rewritten at every batch made most of the changelog's
    bytes (at 2,000 events/s, 3.8-5.5 MB/s, ~88% of it three dataset keys of ~55 KB; 1.16 MB/s with
    this). With this, the agents log a key the first time it changes after a commit, and
    every other change at the commit (``Evaluator.flush``), and ticks report only the positions that
    the state logged at the last commit covers (``Router.tick``).

    ``Consumer._commit_tps`` (Faust 0.15) is replaced by the same steps with one added: the offsets
    are chosen and the state changes handed to the producer under the agents' batch lock, so no
    batch is half-applied then; Faust's commit then flushes the producer before it commits. An app
    without ``modwatch_commit`` commits as Faust does.
    """
    from faust.exceptions import ProducerSendError
    from faust.transport.consumer import Consumer

    cls: Any = Consumer
    if getattr(cls, "_modwatch_commit_tps", None) is not None:
        return
    original = cls._modwatch_commit_tps = cls._commit_tps

    async def _commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        hook: CommitHook | None = getattr(self.app, "modwatch_commit", None)
        if hook is None:
            return bool(await original(self, tps, start_new_transaction))
        async with hook.lock:
            offsets = self._filter_committable_offsets(tps)
            if offsets:
                await hook.before()
        if not offsets:
            return False
        try:
            await self._handle_attached(offsets)
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        did_commit = bool(await self._commit_offsets(offsets, start_new_transaction=start_new_transaction))
        if did_commit:
            hook.after({tp: offset for tp, offset in offsets.items() if self._committed_offset.get(tp) == offset})
        return did_commit

    cls._commit_tps = _commit_tps


def state_logged_at_commit() -> bool:
    """Whether ``log_state_before_commit`` is in place (the worker installs it before the app)."""
    from faust.transport.consumer import Consumer

    return getattr(Consumer, "_modwatch_commit_tps", None) is not None
