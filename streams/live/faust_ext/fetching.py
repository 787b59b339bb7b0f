"""The pieces ``streams.live.faust_ext.consumer``'s methods are built of: waking Faust's fetch loop,
running a delivery up to its first wait, the changelog queue's ebb and the end offsets checked with
a Fetch. Each method's docstring there says what Faust does, why it fails here and what we do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


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


def returned(consumer: Any) -> asyncio.Event:
    """Set when a paused stream partition is put back in the active set (on the fetch loop's loop)."""
    event: asyncio.Event | None = getattr(consumer, "_returned", None)
    if event is None:
        event = consumer._returned = asyncio.Event()
    return event


def wake_fetch_loop(consumer: Any) -> None:
    """A partition is active again: end the fetch loop's wait for one (``Consumer.on_buffer_drop``)."""
    returned(consumer).set()
    _release_fetch_waiters(consumer)


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


class Resumed:
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


def close(awaitable: Any) -> None:
    """Close a coroutine that will not be awaited (else Python warns that it never was)."""
    closing = getattr(awaitable, "close", None)
    if closing is not None:
        closing()


CHANGELOG_EBB_POLL = 0.002  # seconds between looks at a full changelog queue draining


async def changelog_ebb(consumer: Any) -> None:
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


async def fetched_highwaters(consumer: Any, listed: Mapping[Any, int | None]) -> dict[Any, int | None]:
    """``listed`` (partition -> end offset) raised to the high watermark of a Fetch at end - 1.

    ``consumer`` is a started aiokafka consumer. A partition whose Fetch fails keeps its listed
    offset: no worse than before.
    """
    from aiokafka.protocol.fetch import FetchRequest

    result = dict(listed)
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
    for tp, end in listed.items():
        node = consumer._client.cluster.leader_for_partition(tp)
        if end is None or node is None or node < 0:
            continue
        by_node.setdefault(node, {}).setdefault(tp.topic, []).append((tp.partition, max(end - 1, 0), 1 << 16))
    for node, topics in by_node.items():
        # The records at end - 1 answer it at once. Not max_wait 0: Tansu answers that with no partitions.
        # read_uncommitted (0), like ListOffsets(latest).
        request = FetchRequest(100, 1, 1 << 20, 0, list(topics.items()))
        try:
            response = await consumer._client.send(node, request)
        except Exception as exc:  # a failed check must not fail recovery
            log.warning("could not check changelog end offsets on node %s: %r", node, exc)
            continue
        for topic, parts in response.topics:
            for partition, error_code, highwater, *_ in parts:
                tp = next((t for t in listed if t.topic == topic and t.partition == partition), None)
                if tp is None or error_code != 0 or highwater is None:
                    continue
                end = result[tp]
                if end is None or highwater > end:
                    log.info("%s[%d]: end offset %s per ListOffsets, %d per Fetch", topic, partition, end, highwater)
                    result[tp] = highwater
    return result
