"""modwatch's Kafka consumer for Faust: subclasses of Faust's aiokafka driver ``Consumer`` and its
``AIOKafkaConsumerThread``, made by the transport of ``streams.live.faust_ext.transport``. Each
overriding method's docstring says what Faust (0.15) or aiokafka does, why that fails here, and what
this one does instead; each calls Faust's own (``super()``) for what it leaves as it is. Three
corrections can be turned off per app (``streams.live.faust_ext.settings``). The one correction
that is no method of these classes (aiokafka's group coordinator) is in
``streams.live.faust_ext.patches``, installed on this consumer's own coordinator only.
docs/faust.md lists every correction with the tests that protect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, cast

import aiokafka
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from mode.services import WaitResults

from streams.live.faust_ext.fetching import (
    ActiveOnly,
    Resumed,
    changelog_ebb,
    close,
    fetched_highwaters,
    returned,
    wake_fetch_loop,
)
from streams.live.faust_ext.patches import install as install_patches
from streams.live.faust_ext.settings import CommitHook, ConsumerOptions

log = logging.getLogger(__name__)


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """The thread that owns the aiokafka consumer: its fetch wait, which partitions a fetch returns,
    the end offsets table recovery reads to, and (``on_start``) the group coordinator's leave."""

    def _create_worker_consumer(self, transport: driver.Transport) -> aiokafka.AIOKafkaConsumer:
        """Faust's consumer, waiting at most the app's ``fetch_max_wait_ms`` for records.

        Faust hard-codes ``fetch_max_wait_ms=1500``, and Tansu does not answer a waiting fetch when
        records arrive, so at a trickle each stage (input -> route, keyed -> evaluate) held records
        for up to 1.5 s: detection latency p50 2.9 s at 250 events/s, 113 ms with 50 ms (the
        default, ``settings.FETCH_MAX_WAIT_MS``; bench/README.md, latency). A shorter wait costs an
        empty fetch per wait per worker. Set before the consumer starts, when aiokafka builds its
        fetcher from it.
        """
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = cast(Consumer, self.consumer).options.fetch_max_wait_ms
        return consumer

    async def on_start(self) -> None:
        """Faust's start (the aiokafka consumer is made and started), then the guarded corrections of
        aiokafka that no method here can carry, on this consumer only (``streams.live.faust_ext.patches``)."""
        await super().on_start()
        install_patches(self._ensure_consumer())

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: set[TP],
                             timeout: float | None = None,
                             max_records: int | None = None) -> Any:  # fmt: skip
        """Return records of the active partitions only, even when none is active.

        Faust's fetch loop asks the consumer thread for the records of its set of active partitions
        (``Consumer._wait_next_records``) and passes the set itself, not a copy. The fetch waits up
        to a second, reading the set each time records arrive. If the set is emptied meanwhile
        (recovery pauses the changelogs, and ``Consumer.resume_partitions`` holds the stream
        partitions back until their seek is done), aiokafka's ``fetched_records`` reads the empty
        set as "every partition" and returns records of the stream partitions. Faust then drops
        them, as they are not active, but the Kafka consumer's position has moved past them: they
        were never delivered. A restarted worker lost the whole second half of the log that way, in
        6 of 20 runs of test_state_survives_a_graceful_restart (consumer position 600, committed and
        read offsets 557, no event evaluated; traced by logging each fetch). The set is still read
        live, as before (``ActiveOnly``).
        """
        if active_partitions is not None:  # None: a client-only app's "every partition"
            active_partitions = cast(set[TP], ActiveOnly(active_partitions))
        return await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """End offsets that table recovery reads each changelog to: its real end.

        Recovery reads a changelog partition up to the end offset from ListOffsets(latest) and then
        pauses it. Tansu answers ListOffsets with the *first* offset of the last record batch + 1:
        after a worker's final flush wrote its last state changes as one batch of, say, 22 records,
        recovery stopped 21 records short. Whether those records were applied anyway depended on a
        race (were they already queued when the partition was paused?), so a restarted worker
        sometimes lost the state its predecessor flushed last (test_state_survives_a_graceful_restart:
        the windows opened before the restart never completed). The high watermark in a Fetch
        response is right, so the end offsets Faust asks for (active and standby changelogs) are
        checked with one Fetch at the listed end - 1 (``fetched_highwaters``); on Apache Kafka that
        changes nothing. In a transaction Faust reads last stable offsets instead: left as they are.
        """
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return listed
        return cast(Mapping[TP, int], await fetched_highwaters(self._ensure_consumer(), listed))


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer: how it hands records to the agents, commits, and goes through a
    rebalance."""

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @cached_property
    def options(self) -> ConsumerOptions:
        """The app's settings for this consumer, read once (the fetch loop reads them per record)."""
        return ConsumerOptions.of(self.app.conf)

    # -- waking the fetch loop --------------------------------------------------------------------

    def on_buffer_drop(self, tp: TP) -> None:
        """Take a stream partition back as soon as its buffer has room again, and wake the fetch loop.

        A stream buffer that fills takes its partition out of Faust's active set (``on_buffer_full``),
        and one that drains to half puts it back (``on_buffer_drop``). Meanwhile the fetch loop
        (``_wait_next_records``) either sleeps a full second, when no partition is active, or waits
        in aiokafka's ``fetched_records`` for new records of the partitions still active, up to a
        second. Neither wakes up when the partition comes back, although its records are already
        fetched and waiting. So every time a buffer filled, the partition stood still for up to a
        second after its buffer drained. The trivial agent of the live benchmark, whose only
        partition is paused each time its buffer fills, used 0.43 of a core and spent the rest in
        that sleep.

        With this, putting a partition back wakes both waits: the second's sleep waits for the
        partition's return instead (``_wait_next_records``), and the consumer thread's fetch waiters
        are released (aiokafka then re-reads the active set, which Faust passes live:
        ``ConsumerThread._fetch_records``). The stream partitions that ``perform_seek`` puts back
        after a rebalance's seek wake them too. Off with the app setting ``wake_on_buffer_drop``.
        """
        came_back = self.options.wake_on_buffer_drop and tp in self._buffered_partitions
        super().on_buffer_drop(tp)
        if came_back:
            wake_fetch_loop(self)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        """Faust's, except that with no active partition the second's sleep ends when one comes back
        (``on_buffer_drop`` says why); the stop of the consumer ends it too, as Faust's fetch loop
        checks that next."""
        if not self.options.wake_on_buffer_drop or not self.flow_active or self.app.client_only:
            return await super()._wait_next_records(timeout)
        came_back = returned(self)
        came_back.clear()
        active = self._get_active_partitions()
        if active:
            return await super()._wait_next_records(timeout)
        with contextlib.suppress(TimeoutError):  # Faust: ``await self.sleep(1)``, then an empty fetch
            await asyncio.wait_for(came_back.wait(), timeout=1.0)
        return {}, active

    # -- delivering records -----------------------------------------------------------------------

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Hand each fetched record to its streams without four tasks per record.

        Faust's fetch loop (``Consumer._drain_messages``) delivers each record with
        ``wait_first(callback(message), suspend_flow.wait())``, so that a rebalance can abandon a
        delivery that waits for room in a full stream buffer. mode's ``wait_first`` makes a task of
        the delivery, of the rebalance flag's wait and of the service's stopped and crashed flags,
        waits for the first, then cancels the others: at 2,000 events/s that was ~10% of the
        worker's time, for deliveries that nearly always finish without waiting at all.

        With this, the delivery is first run up to where it would wait. Most finish there, and the
        record is delivered as before, without a task. One that waits goes on through mode's
        ``wait_first``, from where it waits (``Resumed``), so a rebalance still abandons it. Only the
        fetch loop's call is changed: two awaitables, the first a coroutine, no timeout, the flow not
        suspended. After a delivery that waited, the fetch loop may also wait for the changelog
        queue to drain (``changelog_ebb``). Off with the app setting ``fast_delivery``.
        """
        if (not self.options.fast_delivery or timeout is not None or len(coros) != 2
                or not inspect.iscoroutine(coros[0]) or self.suspend_flow.is_set() or self._stopped.is_set()
                or self._crashed.is_set()):  # fmt: skip
            return await super().wait_first(*coros, timeout=timeout)
        delivery, suspended = coros
        try:
            yielded = delivery.send(None)
        except StopIteration as done:
            close(suspended)
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            close(suspended)
            raise
        results = await super().wait_first(Resumed(delivery, yielded), suspended)
        await changelog_ebb(self)
        return results

    # -- committing -------------------------------------------------------------------------------

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        """Log the worker's state changes at each offset commit, before the offsets.

        At least once needs the state an offset implies in the changelog before that offset is
        committed; not at every batch. A busy key rewritten at every batch made most of the
        changelog's bytes (at 2,000 events/s, 3.8-5.5 MB/s, ~88% of it three dataset keys of ~55 KB;
        1.16 MB/s with this). With this, the agents log a key the first time it changes after a
        commit, and every other change at the commit (``Evaluator.flush``), and ticks report only the
        positions that the state logged at the last commit covers (``Router.tick``).

        Faust's steps, with one added: the offsets are chosen and the state changes handed to the
        producer under the agents' batch lock (the app's ``CommitHook``), so no batch is
        half-applied then; Faust's commit then flushes the producer before it commits. Faust's own
        ``_commit_tps`` cannot be called for the rest: it would choose the offsets again, after the
        lock, including batches whose state is not logged. An app without ``modwatch_commit``
        commits as Faust does.
        """
        hook: CommitHook | None = getattr(self.app, "modwatch_commit", None)
        if hook is None:
            return await super()._commit_tps(tps, start_new_transaction)
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

    # -- rebalancing ------------------------------------------------------------------------------

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Hand a stream partition to the agents only once it is back at its committed offset.

        After a rebalance, Faust's recovery marks the stream partitions active and only then seeks
        them to their committed offsets (``Recovery.on_recovery_completed``, ``_resume_streams``).
        The Kafka consumer meanwhile kept its position: after records that Faust fetched and then
        dropped when the rebalance cleared its buffers, or after prefetching. So a fetch in between
        handed the agents records from the tail of the partition first, and the records from the
        committed offset on after them (faust-streaming issues #216 and #221). Those first records
        moved the event time of their partition ahead by minutes of events, and the events behind
        them arrived late: the joining-worker test lost `rapid_takedown` pairs that way (a worker's
        first records after the rebalance were offsets 212 and 265-271, then 143 on).

        With this, stream partitions (not changelogs, which recovery resumes for itself) are held
        back until the next ``perform_seek`` has finished, as both of Faust's call sites follow one
        with the other. While they are held, Faust's set of active partitions can be empty, which
        aiokafka reads as every partition: ``ConsumerThread._fetch_records`` keeps the records
        fetched meanwhile from being dropped and never read again.
        """
        tps = set(tps)
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        if streams:
            self.__dict__.setdefault("_held_for_seek", set()).update(streams)
        super().resume_partitions(tps - streams)

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, then the stream partitions ``resume_partitions``
        held back are resumed, those still assigned (one revoked meanwhile stays off). A failed seek
        still resumes them: Faust's order, rather than a worker that stops reading. Their records
        may be fetched already: the fetch loop is woken (``on_buffer_drop``)."""
        try:
            await super().perform_seek()
        finally:
            held = self.__dict__.pop("_held_for_seek", None)
            if held:
                super().resume_partitions(held & set(self.assignment()))
                wake_fetch_loop(self)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit what the agents finished before a rebalance takes partitions away.

        Faust's ``on_partitions_revoked`` forgets the revoked partitions' acknowledged offsets
        first, and only then waits for the agents and commits: the commit at a rebalance covered
        nothing, and the partitions' new owners re-read everything done since the last periodic
        commit (``broker_commit_interval``, 2.8 s; ~60 events per rebalance in the joining-worker
        test). Committing first, as the periodic commit would (the producer is flushed before it),
        makes that only the batches still running at the rebalance. A failed commit is logged and
        the rebalance goes on: the records are re-read, as before.
        """
        try:
            await self.commit()
        except Exception as exc:  # the rebalance must go on; at least once still holds
            log.warning("could not commit offsets before the rebalance (records since the last commit "
                        "will be read again): %r", exc)  # fmt: skip
        await super().on_partitions_revoked(revoked)
