"""What ``streams.live.faust_ext.faust_patches`` and ``streams.live.faust_ext.rebalance_patches``
change in Faust, checked on Faust's
own methods with a stand-in consumer (no broker): the ordering they enforce is what matters. The
worker tests under ``tests/faults`` show the effect against a broker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from mode.utils.locks import Event

from streams.live.faust_ext.faust_patches import (
    CommitHook,
    deliver_without_tasks,
    log_state_before_commit,
    state_logged_at_commit,
    wake_fetch_on_buffer_drop,
)
from streams.live.faust_ext.rebalance_patches import (
    commit_before_revoking,
    leave_group_from_generation_zero,
    seek_before_resuming,
)

EVENTS = TP("events", 0)
KEYED = TP("keyed", 1)
CHANGELOG = TP("app-state-changelog", 1)


class StandIn:
    """What Faust's ``resume_partitions`` and ``perform_seek`` use of a consumer; the seek records
    which partitions were active (handed to the agents) while it ran."""

    def __init__(self, assigned: set[TP], fail: bool = False) -> None:
        self.assigned = assigned
        self.fail = fail
        self.active: set[TP] = set()
        self._paused_partitions: set[TP] = set(assigned)
        self._read_offset: dict[TP, int | None] = {}
        self._committed_offset: dict[TP, int] = {}
        self.active_during_seek: set[TP] | None = None

    def _get_active_partitions(self) -> set[TP]:
        return self.active

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp.topic.endswith("-changelog")

    def assignment(self) -> set[TP]:
        return self.assigned

    async def seek_to_committed(self) -> dict[TP, int]:
        await asyncio.sleep(0)
        self.active_during_seek = set(self.active)
        if self.fail:
            raise TimeoutError("the broker did not answer")
        return {EVENTS: 143, KEYED: 40}


@pytest.fixture(autouse=True)
def patched() -> None:
    for _ in range(2):  # a second call changes nothing
        seek_before_resuming()
        commit_before_revoking()


def resume(consumer: StandIn, tps: set[TP]) -> None:
    Consumer.resume_partitions(consumer, tps)  # type: ignore[arg-type]


def seek(consumer: StandIn) -> None:
    asyncio.run(Consumer.perform_seek(consumer))  # type: ignore[arg-type]


def test_stream_partitions_reach_the_agents_only_after_the_seek_to_committed_offsets() -> None:
    consumer = StandIn({EVENTS, KEYED, CHANGELOG})
    resume(consumer, {EVENTS, KEYED, CHANGELOG})
    assert consumer.active == {CHANGELOG}  # recovery resumes changelogs for itself, at once
    seek(consumer)
    assert consumer.active_during_seek == {CHANGELOG}
    assert consumer.active == {EVENTS, KEYED, CHANGELOG}
    assert consumer._committed_offset == {EVENTS: 143, KEYED: 40}  # Faust's own seek ran
    assert not consumer._paused_partitions & {EVENTS, KEYED}


def test_a_failed_seek_still_resumes_the_partitions_it_held() -> None:
    consumer = StandIn({EVENTS}, fail=True)
    resume(consumer, {EVENTS})
    with pytest.raises(TimeoutError):
        seek(consumer)
    assert consumer.active == {EVENTS}  # Faust's order, rather than a worker that stops reading


def test_a_partition_revoked_before_the_seek_stays_paused() -> None:
    consumer = StandIn({EVENTS, KEYED})
    resume(consumer, {EVENTS, KEYED})
    consumer.assigned = {KEYED}  # a new rebalance took EVENTS away meanwhile
    seek(consumer)
    assert consumer.active == {KEYED}


def _consumer_thread(waiters: set[asyncio.Future[None]]) -> SimpleNamespace:
    """Faust's consumer thread as the wake-up reaches it: its loop (here the running one) and
    aiokafka's fetcher with its waiters."""
    return SimpleNamespace(thread_loop=asyncio.get_running_loop(),
                           _consumer=SimpleNamespace(_fetcher=SimpleNamespace(_fetch_waiters=waiters)))  # fmt: skip


def test_stream_partitions_resumed_after_the_seek_wake_the_fetch_loop() -> None:
    """Their records may be fetched already, and the fetch loop waits up to a second for a partition
    to fetch (``wake_fetch_on_buffer_drop``): the resume after the seek ends that wait."""

    async def scenario() -> tuple[bool, bool]:
        consumer = StandIn({EVENTS})
        waiter = asyncio.get_running_loop().create_future()
        consumer._thread = _consumer_thread({waiter})  # type: ignore[attr-defined]
        resume(consumer, {EVENTS})
        await asyncio.sleep(0)
        assert not waiter.done() and not consumer.__dict__.get("_modwatch_returned", asyncio.Event()).is_set()
        await Consumer.perform_seek(consumer)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        return waiter.done(), consumer._modwatch_returned.is_set()  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == (True, True)


def test_a_seek_with_nothing_held_resumes_nothing() -> None:
    consumer = StandIn({EVENTS})
    seek(consumer)  # Faust also seeks back when a fetch comes while the flow is stopped
    assert consumer.active == set()


class Revoking:
    """What Faust's ``on_partitions_revoked`` uses of a consumer. ``commit`` records the acknowledged
    offsets it could see; the revocation callback (the app's: wait for the agents, commit again,
    flush) records what it found."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self._active_partitions: set[TP] = {EVENTS, KEYED}
        self._paused_partitions: set[TP] = set()
        self._acked: dict[TP, list[int]] = {EVENTS: [141, 142, 143]}
        self._acked_index: dict[TP, set[int]] = {EVENTS: {141, 142, 143}}
        self._gap: dict[TP, list[int]] = {}
        self._read_offset: dict[TP, int] = {EVENTS: 143}
        self._committed_offset: dict[TP, int] = {EVENTS: 141}
        self.committed_acks: list[int] | None = None
        self.acks_at_callback: dict[TP, list[int]] | None = None
        self.diag = self
        self.app = self

    def set_flag(self, flag: str) -> None: ...

    def unset_flag(self, flag: str) -> None: ...

    def _start_span_from_rebalancing(self, name: str) -> Any:
        return contextlib.nullcontext()

    async def commit(self) -> bool:
        if self.fail:
            raise ConnectionError("coordinator moved")
        self.committed_acks = list(self._acked.get(EVENTS, []))
        return True

    async def _on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.acks_at_callback = dict(self._acked)


def revoke(consumer: Revoking) -> None:
    asyncio.run(Consumer.on_partitions_revoked(consumer, {EVENTS, KEYED}))  # type: ignore[arg-type]


def test_a_rebalance_commits_the_finished_batches_before_faust_forgets_their_offsets() -> None:
    consumer = Revoking()
    revoke(consumer)
    assert consumer.committed_acks == [141, 142, 143]  # seen by the commit: it covers them
    assert consumer.acks_at_callback == {}  # Faust's own commit, later, finds nothing (why this exists)
    assert EVENTS not in consumer._committed_offset


def test_a_failed_commit_before_a_rebalance_does_not_stop_it() -> None:
    consumer = Revoking(fail=True)
    revoke(consumer)
    assert consumer.acks_at_callback == {}  # the rebalance went on


class Committing:
    """What ``log_state_before_commit``'s ``_commit_tps`` uses of a consumer: acked offsets
    become the offsets to commit, and a commit is recorded in order with the hook's calls."""

    def __init__(self, hook: CommitHook | None, journal: list[Any]) -> None:
        self.app = type("App", (), {"modwatch_commit": hook})()
        self.journal = journal
        self._acked: dict[TP, list[int]] = {}
        self._committed_offset: dict[TP, int] = {}

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        return {tp: max(self._acked[tp]) + 1 for tp in tps if self._acked.get(tp)}

    async def _handle_attached(self, offsets: dict[TP, int]) -> None:
        self.journal.append("attached")

    async def _commit_offsets(self, offsets: dict[TP, int], start_new_transaction: bool = True) -> bool:
        self.journal.append(("commit", dict(offsets)))
        self._committed_offset.update(offsets)
        return True

    async def crash(self, exc: BaseException) -> None:
        raise AssertionError(exc)


def test_the_state_is_logged_under_the_batch_lock_before_the_offsets_chosen_are_committed() -> None:
    log_state_before_commit()
    log_state_before_commit()  # a second call changes nothing
    journal: list[Any] = []
    lock = asyncio.Lock()

    agents: list[asyncio.Task[None]] = []

    async def before() -> None:
        agents.append(asyncio.create_task(batch(13)))  # the next batch comes while the state is sent
        await asyncio.sleep(0.01)
        journal.append("state logged")

    hook = CommitHook(lock, before, lambda offsets: journal.append(("after", offsets)))
    consumer = Committing(hook, journal)
    consumer._acked[EVENTS] = [10, 11]

    async def batch(offset: int) -> None:  # an agent's batch: its offset is acked after the lock is released
        async with lock:
            journal.append(f"batch {offset} starts")
            await asyncio.sleep(0.01)
            journal.append(f"batch {offset} applied")
        consumer._acked[EVENTS].append(offset)

    async def main() -> bool:
        agents.append(asyncio.create_task(batch(12)))
        await asyncio.sleep(0)  # the agent holds the lock
        did = await Consumer._commit_tps(consumer, [EVENTS], True)  # type: ignore[arg-type]
        await asyncio.gather(*agents)
        return bool(did)

    assert asyncio.run(main())
    assert journal == [
        "batch 12 starts", "batch 12 applied",  # the commit waited for the batch
        "state logged",  # then logged its changes, before the offsets that include it are committed
        "attached", ("commit", {EVENTS: 13}), ("after", {EVENTS: 13}),
        "batch 13 starts", "batch 13 applied",  # waited for the state; not in this commit
    ]  # fmt: skip
    assert consumer._acked[EVENTS] == [10, 11, 12, 13]


def test_an_app_without_the_hook_commits_as_faust_does() -> None:
    log_state_before_commit()
    journal: list[Any] = []
    consumer = Committing(None, journal)
    consumer._acked[EVENTS] = [4]
    original = Consumer._modwatch_commit_tps  # type: ignore[attr-defined]
    assert asyncio.run(original(consumer, [EVENTS], True))
    journal.clear()
    assert asyncio.run(Consumer._commit_tps(consumer, [EVENTS], True))  # type: ignore[arg-type]
    assert journal == ["attached", ("commit", {EVENTS: 5})]
    assert state_logged_at_commit()


class Fetching:
    """What Faust's fetch loop's ``wait_first`` (mode's ``Service.wait_first``) uses of a consumer."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.suspend_flow = Event()
        self._stopped = Event()
        self._crashed = Event()
        self.app = SimpleNamespace(tables=SimpleNamespace(_changelog_queue=None))  # an app without tables
        self.tasks = 0
        factory = self.loop.get_task_factory()

        def count(loop: Any, coro: Any, **kwargs: Any) -> Any:
            self.tasks += 1
            return factory(loop, coro, **kwargs) if factory else asyncio.Task(coro, loop=loop, **kwargs)

        self.loop.set_task_factory(count)

    async def deliver(self, delivery: Any) -> Any:
        """The fetch loop's call, as in ``Consumer._drain_messages``."""
        return await Consumer.wait_first(self, delivery, self.suspend_flow.wait())  # type: ignore[arg-type]


@pytest.fixture()
def delivering() -> None:
    for _ in range(2):  # a second call changes nothing
        deliver_without_tasks()


@pytest.mark.usefixtures("delivering")
def test_a_record_delivered_without_waiting_makes_no_task() -> None:
    delivered: list[int] = []

    async def on_message() -> str:  # room in the stream buffer: Faust's delivery never waits
        delivered.append(7)
        return "delivered"

    async def main() -> tuple[Any, int]:
        consumer = Fetching()
        result = await consumer.deliver(on_message())
        return result, consumer.tasks

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, tasks = asyncio.run(main())
        gc.collect()
    assert delivered == [7]
    assert result.results == ["delivered"] and not result.stopped
    assert tasks == 0  # Faust's wait_first made four
    assert not [w for w in caught if "never awaited" in str(w.message)]  # the flag's wait was closed


@pytest.mark.usefixtures("delivering")
def test_a_delivery_that_waits_for_room_finishes_from_where_it_waited() -> None:
    journal: list[str] = []

    async def main() -> Any:
        consumer = Fetching()
        room = asyncio.Event()

        async def on_message() -> str:
            journal.append("decoded")
            await room.wait()  # the stream buffer is full
            journal.append("put")
            return "delivered"

        fetch = asyncio.create_task(consumer.deliver(on_message()))
        for _ in range(5):
            await asyncio.sleep(0)
        assert journal == ["decoded"] and not fetch.done()
        room.set()
        return await fetch

    result = asyncio.run(main())
    assert journal == ["decoded", "put"]  # its first part ran once
    assert result.results == ["delivered"]


@pytest.mark.usefixtures("delivering")
def test_a_rebalance_still_abandons_a_delivery_that_waits() -> None:
    journal: list[str] = []

    async def main() -> Any:
        consumer = Fetching()
        room = asyncio.Event()

        async def on_message() -> None:
            try:
                await room.wait()
                journal.append("put")
            except asyncio.CancelledError:
                journal.append("abandoned")
                raise

        fetch = asyncio.create_task(consumer.deliver(on_message()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # Faust suspends the flow at a rebalance
        result = await fetch
        await asyncio.sleep(0.01)
        return result

    result = asyncio.run(main())
    assert journal == ["abandoned"]
    assert len(result.done) == 1 and not result.stopped  # the flag's wait won, as in Faust


@pytest.mark.usefixtures("delivering")
@pytest.mark.parametrize("waits", [False, True])
def test_a_delivery_that_fails_raises_in_the_fetch_loop(waits: bool) -> None:
    async def on_message() -> None:
        if waits:
            await asyncio.sleep(0.01)
        raise ValueError("bad record")

    async def main() -> None:
        await Fetching().deliver(on_message())

    with pytest.raises(ValueError, match="bad record"):
        asyncio.run(main())


class Tables:
    """The table manager's changelog queue, as Faust makes it: bounded, filled by the fetch loop."""

    def __init__(self, maxsize: int) -> None:
        self._changelog_queue: asyncio.Queue[int] = asyncio.Queue(maxsize)


def _recovering(maxsize: int) -> tuple[Fetching, asyncio.Queue[int]]:
    consumer = Fetching()
    tables = Tables(maxsize)
    consumer.app = SimpleNamespace(tables=tables)
    for n in range(maxsize):
        tables._changelog_queue.put_nowait(n)
    return consumer, tables._changelog_queue


@pytest.mark.usefixtures("delivering")
def test_after_a_delivery_that_waited_a_full_changelog_queue_drains_to_half_first() -> None:
    """Recovery: the fetch loop waits once for half the queue, not once per record."""
    seen: list[int] = []

    async def main() -> None:
        consumer, queue = _recovering(8)

        async def put_without_waiting() -> str:
            return "delivered"

        await consumer.deliver(put_without_waiting())  # did not wait: returns with the queue full
        seen.append(queue.qsize())

        room = asyncio.Event()

        async def put_after_waiting() -> str:
            await room.wait()  # the queue was full
            return "delivered"

        async def recovery_loop() -> None:  # takes a record now and then
            while True:
                await asyncio.sleep(0.005)
                queue.get_nowait()

        taking = asyncio.create_task(recovery_loop())
        fetch = asyncio.create_task(consumer.deliver(put_after_waiting()))
        await asyncio.sleep(0.01)
        room.set()
        await fetch
        seen.append(queue.qsize())
        taking.cancel()

    asyncio.run(main())
    assert seen[0] == 8
    assert seen[1] <= 4  # returned only once the queue was down to half


@pytest.mark.usefixtures("delivering")
def test_a_rebalance_ends_the_wait_for_the_changelog_queue() -> None:
    async def main() -> int:
        consumer, queue = _recovering(8)

        async def put_after_waiting() -> str:
            await asyncio.sleep(0.001)
            return "delivered"

        fetch = asyncio.create_task(consumer.deliver(put_after_waiting()))
        await asyncio.sleep(0.02)
        assert not fetch.done()  # nothing takes from the queue: the fetch loop waits
        consumer.suspend_flow.set()
        await asyncio.wait_for(fetch, 1.0)
        return queue.qsize()

    assert asyncio.run(main()) == 8



def test_a_worker_leaves_its_group_in_the_first_generation_too() -> None:
    """Tansu numbers a group's first generation 0, and aiokafka leaves a group only from 1: a worker
    stopped in that generation stayed a member until its session timed out."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    leave_group_from_generation_zero()
    sent: list[Any] = []
    reset: list[bool] = []

    async def send_req(request: Any) -> None:
        sent.append(request)

    def member(generation: int, member_id: str, instance: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(generation=generation, member_id=member_id, group_id="g", _group_instance_id=instance,
                               _send_req=send_req, reset_generation=lambda: reset.append(True))  # fmt: skip

    asyncio.run(GroupCoordinator._maybe_leave_group(member(0, "m-1")))
    assert [(r._group, r._member_id) for r in sent] == [("g", "m-1")] and reset == [True]
    asyncio.run(GroupCoordinator._maybe_leave_group(member(1, "m-2")))  # aiokafka's own path
    assert [r._member_id for r in sent] == ["m-1", "m-2"]
    sent.clear()
    asyncio.run(GroupCoordinator._maybe_leave_group(member(-1, "")))  # never joined: nothing to leave
    asyncio.run(GroupCoordinator._maybe_leave_group(member(0, "m-3", instance="static-1")))  # static membership
    assert sent == []


class Buffering:
    """What Faust's flow control (``on_buffer_full``, ``on_buffer_drop``, ``_get_active_partitions``)
    and its fetch loop's ``_wait_next_records`` use of a consumer. Its fetch answers with what
    ``records`` holds for the active partitions or, with none, waits as aiokafka does for new records;
    ``thread`` stands for the consumer thread that owns aiokafka's fetch waiters."""

    def __init__(self, assigned: set[TP]) -> None:
        self.app = SimpleNamespace(in_recovery=False, client_only=False)
        self.flow_active = True
        self._active_partitions: set[TP] | None = set(assigned)
        self._buffered_partitions: set[TP] = set()
        self._paused_partitions: set[TP] = set()
        self.not_waiting_next_records = Event()
        self.records: dict[TP, list[str]] = {}
        self.waiter: asyncio.Future[None] | None = None
        self._thread: Any = None

    _get_active_partitions = Consumer._get_active_partitions  # Faust's own: the live set

    async def sleep(self, seconds: float) -> None:  # mode's Service.sleep, without the stop
        await asyncio.sleep(seconds)

    async def _getmany(self, active_partitions: set[TP], timeout: float) -> dict[TP, list[str]]:
        while True:
            found = {tp: rs for tp, rs in self.records.items() if tp in active_partitions}
            if found:
                return found
            self.waiter = asyncio.get_running_loop().create_future()
            self._thread._consumer._fetcher._fetch_waiters.add(self.waiter)
            try:
                await asyncio.wait_for(self.waiter, timeout)
            except TimeoutError:
                return {}
            finally:
                self._thread._consumer._fetcher._fetch_waiters.discard(self.waiter)


async def _turns(count: int = 10) -> None:
    """Let the event loop run ``count`` rounds of ready callbacks (no wall-clock time)."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_paused_partition_that_comes_back_wakes_the_fetch_loop_sleeping_with_none_active() -> None:
    """Faust's fetch loop sleeps a second when no partition is active; the trivial agent, whose one
    partition was paused at every full buffer, spent most of its time there."""
    wake_fetch_on_buffer_drop()
    wake_fetch_on_buffer_drop()  # a second call changes nothing

    async def scenario(wake: bool) -> tuple[bool, Any]:
        consumer = Buffering({EVENTS})
        consumer.records = {EVENTS: ["r1"]}
        Consumer.on_buffer_full(consumer, EVENTS)  # type: ignore[arg-type]
        assert Consumer._get_active_partitions(consumer) == set()  # type: ignore[arg-type]
        wait = Consumer._wait_next_records if wake else Consumer._modwatch_wait_next_records  # type: ignore[attr-defined]
        task = asyncio.ensure_future(wait(consumer, 1.0))
        await _turns()
        assert not task.done()  # waiting: nothing is active
        drop = Consumer.on_buffer_drop if wake else Consumer._modwatch_on_buffer_drop  # type: ignore[attr-defined]
        drop(consumer, EVENTS)
        await _turns()
        done = task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return done, (task.result() if done else None)

    done, result = asyncio.run(scenario(wake=True))
    assert done and result == ({}, {EVENTS})  # the next round of the loop fetches EVENTS' records
    done, _ = asyncio.run(scenario(wake=False))
    assert not done  # Faust as it is: still asleep, up to a second


def test_a_paused_partition_that_comes_back_releases_the_fetch_waiting_for_the_others() -> None:
    """With other partitions still active, Faust's fetch waits in aiokafka for new records of those;
    the partition that came back has its records fetched already, and waited with them."""
    wake_fetch_on_buffer_drop()

    async def scenario() -> None:
        consumer = Buffering({EVENTS, KEYED})
        consumer._thread = _consumer_thread(set())
        consumer.records = {EVENTS: ["r1", "r2"]}
        Consumer.on_buffer_full(consumer, EVENTS)  # type: ignore[arg-type]
        task = asyncio.ensure_future(Consumer._wait_next_records(consumer, 1.0))  # type: ignore[arg-type]
        await _turns()
        assert not task.done() and consumer.waiter is not None  # aiokafka waits for KEYED's records
        Consumer.on_buffer_drop(consumer, KEYED)  # type: ignore[arg-type]  # never paused: no wake-up
        await _turns()
        assert not task.done()
        Consumer.on_buffer_drop(consumer, EVENTS)  # type: ignore[arg-type]
        await _turns()
        assert task.done() and task.result() == ({EVENTS: ["r1", "r2"]}, {EVENTS, KEYED})

    asyncio.run(scenario())
