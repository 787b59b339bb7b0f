"""What modwatch changes in Faust and aiokafka around a rebalance: how a worker reads state back,
resumes its stream partitions, commits what it finished and leaves its group. Installed by
``streams.live.worker.run_worker`` with the fetch and delivery changes of ``streams.live.faust_ext.faust_patches``; the
tests that pin each against Faust's and aiokafka's own methods are in tests/test_faust_patches.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streams.live.faust_ext.faust_patches import wake_fetch_loop

log = logging.getLogger(__name__)


def use_fetched_highwaters() -> None:
    """Make Faust's table recovery read each changelog to its real end.

    Recovery reads a changelog partition up to the end offset from ListOffsets(latest) and then
    pauses it. Tansu answers ListOffsets with the *first* offset of the last record batch + 1: after
    a worker's final flush wrote its last state changes as one batch of, say, 22 records, recovery
    stopped 21 records short. Whether those records were applied anyway depended on a race (were
    they already queued when the partition was paused?), so a restarted worker sometimes lost the
    state its predecessor flushed last (test_state_survives_a_graceful_restart: the windows opened
    before the restart never completed). The high watermark in a Fetch response is right, so the
    end offsets Faust asks for (active and standby changelogs) are checked with one Fetch at the
    listed end - 1; on Apache Kafka that changes nothing.
    """
    from faust.transport.drivers import aiokafka as driver

    thread: Any = driver.AIOKafkaConsumerThread
    if getattr(thread, "_modwatch_listed_highwaters", None) is not None:
        return
    listed_highwaters = thread._highwaters
    thread._modwatch_listed_highwaters = listed_highwaters

    async def highwaters(self: Any, partitions: Any) -> Any:
        listed = await listed_highwaters(self, partitions)
        if self.consumer.in_transaction:  # last stable offsets, not ListOffsets
            return listed
        return await fetched_highwaters(self._ensure_consumer(), listed)

    thread._highwaters = highwaters


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


def seek_before_resuming() -> None:
    """Make Faust hand a stream partition to the agents only once it is back at its committed offset.

    After a rebalance, Faust's recovery marks the stream partitions active and only then seeks them
    to their committed offsets (``Recovery.on_recovery_completed``, ``_resume_streams``). The Kafka
    consumer meanwhile kept its position: after records that Faust fetched and then dropped when
    the rebalance cleared its buffers, or after prefetching. So a fetch in between handed the
    agents records from the tail of the partition first, and the records from the committed offset
    on after them (faust-streaming issues #216 and #221). Those first records moved the event time
    of their partition ahead by minutes of events, and the events behind them arrived late:
    the joining-worker test lost `rapid_takedown` pairs that way (a worker's first records after
    the rebalance were offsets 212 and 265-271, then 143 on).

    With this, stream partitions (not changelogs, which recovery resumes for itself) named in
    ``resume_partitions`` are held back until the next ``perform_seek`` has finished, as both of
    Faust's call sites follow one with the other. A failed seek still resumes them: the old
    ordering, rather than a worker that stops reading. While they are held, Faust's set of active
    partitions can be empty, which aiokafka reads as every partition: install
    ``fetch_only_active_partitions`` with this (``run_worker`` does), or records fetched during the
    seek are dropped and never read again.
    """
    from faust.transport.consumer import Consumer

    cls: Any = Consumer
    if getattr(cls, "_modwatch_resume_partitions", None) is not None:
        return
    resume = cls._modwatch_resume_partitions = cls.resume_partitions
    seek = cls.perform_seek

    def resume_partitions(self: Any, tps: Any) -> None:
        tps = set(tps)
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        if streams:
            self.__dict__.setdefault("_modwatch_held", set()).update(streams)
        resume(self, tps - streams)

    async def perform_seek(self: Any) -> None:
        try:
            await seek(self)
        finally:
            held = self.__dict__.pop("_modwatch_held", None)
            if held:
                resume(self, held & set(self.assignment()))  # a partition revoked meanwhile stays off
                wake_fetch_loop(self)  # its records may be fetched already: ``wake_fetch_on_buffer_drop``

    cls.resume_partitions = resume_partitions
    cls.perform_seek = perform_seek


def commit_before_revoking() -> None:
    """Make Faust commit what the agents finished before a rebalance takes partitions away.

    Faust's ``Consumer.on_partitions_revoked`` (0.15) forgets the revoked partitions' acknowledged
    offsets first, and only then waits for the agents and commits: the commit at a rebalance
    covered nothing, and the partitions' new owners re-read everything done since the last periodic
    commit (``broker_commit_interval``, 2.8 s; ~60 events per rebalance in the joining-worker test).
    Committing first, as the periodic commit would (the producer is flushed before it), makes that
    only the batches still running at the rebalance. A failed commit is logged and the rebalance
    goes on: the records are re-read, as before.
    """
    from faust.transport.consumer import Consumer

    cls: Any = Consumer
    if getattr(cls, "_modwatch_on_partitions_revoked", None) is not None:
        return
    revoked = cls._modwatch_on_partitions_revoked = cls.on_partitions_revoked

    async def on_partitions_revoked(self: Any, tps: Any) -> None:
        try:
            await self.commit()
        except Exception as exc:  # the rebalance must go on; at least once still holds
            log.warning("could not commit offsets before the rebalance (records since the last commit "
                        "will be read again): %r", exc)  # fmt: skip
        await revoked(self, tps)

    cls.on_partitions_revoked = on_partitions_revoked


def leave_group_from_generation_zero() -> None:
    """Make a stopping worker leave its consumer group in the group's first generation too.

    aiokafka sends LeaveGroup only from generation 1 (``GroupCoordinator._maybe_leave_group``:
    ``generation > 0``). Apache Kafka numbers a group's first generation 1; Tansu numbers it 0. So on
    Tansu a worker stopped in that generation stayed a member until its session timed out
    (``session_timeout_seconds``): the survivor of two workers started together took the partitions
    over that much later (bench ``failover``: 5.5-6.8 s of each takeover). Kafka's own client leaves
    whenever it has a member id; this does too, as aiokafka does from generation 1.
    """
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.group import LeaveGroupRequest

    cls: Any = GroupCoordinator
    if getattr(cls, "_modwatch_maybe_leave_group", None) is not None:
        return
    original = cls._modwatch_maybe_leave_group = cls._maybe_leave_group

    async def _maybe_leave_group(self: Any) -> None:
        if self.generation != 0 or not self.member_id or self._group_instance_id is not None:
            await original(self)  # aiokafka's: leaves from generation 1, resets the generation
            return
        try:
            await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
        except KafkaError as exc:  # a minimal effort, as aiokafka's: the session times out instead
            log.warning("could not leave the consumer group: %r", exc)
        else:
            log.info("left the consumer group (generation 0)")
        self.reset_generation()

    cls._maybe_leave_group = _maybe_leave_group
