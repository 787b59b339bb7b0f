"""modwatch's Faust consumer (``streams.live.faust_ext``: the ``Consumer`` and ``ConsumerThread``
subclasses, the ``modwatch://`` transport, the guarded patch of aiokafka), checked method by method on
stand-in consumers (subclasses of ours that skip Faust's constructor; no broker): the ordering each
enforces is what matters. docs/faust.md has a section per correction.

Each correction, its tests here, and the worker's behaviour against the Tansu broker that shows it:

- fetch wait (``ConsumerThread._create_worker_consumer``): ``test_the_fetch_wait_is_the_apps_setting``;
  behaviour: the bench's ``latency`` section (p50 113 ms, 2.9 s with Faust's 1,500 ms), no pytest.
- active partitions only (``ConsumerThread._fetch_records``): tests/live/test_worker.py
  ``test_a_fetch_returns_only_the_active_partitions`` (broker) and
  ``test_state_survives_a_graceful_restart`` (a restarted worker lost the second half of its log).
- fetched highwaters (``ConsumerThread._highwaters``): tests/live/test_worker.py
  ``test_changelog_end_offsets_come_from_a_fetch`` (broker) and ``test_state_survives_a_graceful_restart``.
- waking the fetch loop (``Consumer.on_buffer_drop``, ``_wait_next_records``): the ``paused partition``
  tests here; behaviour: the bench's trivial agent (0.43 of a core without it), no pytest.
- delivery without tasks (``Consumer.wait_first``): the ``delivery`` tests here; behaviour: every
  broker test of the worker delivers its records through it (``test_live_worker_matches_backtest``).
- state logged before commit (``Consumer._commit_tps``): the ``commit`` tests here; behaviour:
  tests/faults/test_crash.py ``test_kill_9_mid_replay_loses_nothing_and_repeats_keep_their_ids`` and
  ``test_state_survives_a_graceful_restart``.
- seek before resuming (``Consumer.resume_partitions``, ``perform_seek``): the ``seek`` tests here;
  behaviour: tests/faults/test_scale_out.py ``test_a_worker_joining_mid_replay_loses_nothing_and_adds_nothing``.
- commit before revoking (``Consumer.on_partitions_revoked``): the ``rebalance commits`` tests here;
  behaviour: the same joining-worker test, and ``test_a_survivor_reads_back_only_what_it_does_not_hold``.
- leaving the group from generation 0 (``patches.leave_group_from_generation_zero``, installed on one
  coordinator): the ``leaves its group`` tests here; behaviour: ``test_state_survives_a_graceful_restart``
  (the stopped worker's log says it left).
- the version guard (``patches.check_versions``) and no class of Faust or aiokafka changed for the
  process: ``test_an_untested_version_is_refused_by_name``,
  ``test_a_started_worker_changes_no_class_of_faust_or_aiokafka`` (broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from mode.utils.locks import Event

from streams.live.faust_ext import patches
from streams.live.faust_ext.consumer import Consumer
from streams.live.faust_ext.patches import leave_group_from_generation_zero
from streams.live.faust_ext.settings import CommitHook, ConsumerOptions

EVENTS = TP("events", 0)
KEYED = TP("keyed", 1)
CHANGELOG = TP("app-state-changelog", 1)
DEFAULTS = ConsumerOptions()  # the app settings of the worker as shipped


class StandIn(Consumer):
    """What Faust's ``resume_partitions`` and ``perform_seek`` use of a consumer; the seek records
    which partitions were active (handed to the agents) while it ran."""

    def __init__(self, assigned: set[TP], fail: bool = False) -> None:  # not Faust's: no app, no thread
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


def resume(consumer: StandIn, tps: set[TP]) -> None:
    consumer.resume_partitions(tps)


def seek(consumer: StandIn) -> None:
    asyncio.run(consumer.perform_seek())


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
        assert not waiter.done() and not consumer.__dict__.get("_returned", asyncio.Event()).is_set()
        await consumer.perform_seek()
        await asyncio.sleep(0)
        return waiter.done(), consumer._returned.is_set()  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == (True, True)


def test_a_seek_with_nothing_held_resumes_nothing() -> None:
    consumer = StandIn({EVENTS})
    seek(consumer)  # Faust also seeks back when a fetch comes while the flow is stopped
    assert consumer.active == set()


class Revoking(Consumer):
    """What Faust's ``on_partitions_revoked`` uses of a consumer. ``commit`` records the acknowledged
    offsets it could see; the revocation callback (the app's: wait for the agents, commit again,
    flush) records what it found."""

    def __init__(self, fail: bool = False) -> None:  # not Faust's
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
    asyncio.run(consumer.on_partitions_revoked({EVENTS, KEYED}))


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


class Committing(Consumer):
    """What ``Consumer._commit_tps`` uses of a consumer: acked offsets become the offsets to commit,
    and a commit is recorded in order with the hook's calls."""

    def __init__(self, hook: CommitHook | None, journal: list[Any]) -> None:  # not Faust's
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


def test_the_commit_logs_the_state_under_the_batch_lock_before_the_offsets_chosen_are_committed() -> None:
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
        did = await consumer._commit_tps([EVENTS], True)
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
    journal: list[Any] = []
    consumer = Committing(None, journal)
    consumer._acked[EVENTS] = [4]
    assert asyncio.run(FaustConsumer._commit_tps(consumer, [EVENTS], True))
    faust = list(journal)
    journal.clear()
    assert asyncio.run(consumer._commit_tps([EVENTS], True))
    assert journal == faust == ["attached", ("commit", {EVENTS: 5})]


class Fetching(Consumer):
    """What Faust's fetch loop's ``wait_first`` (mode's ``Service.wait_first``) uses of a consumer."""

    def __init__(self, options: ConsumerOptions = DEFAULTS) -> None:  # not Faust's
        self.options = options
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
        return await self.wait_first(delivery, self.suspend_flow.wait())


@pytest.mark.parametrize("fast", [True, False])
def test_a_record_delivered_without_waiting_makes_no_task(fast: bool) -> None:
    delivered: list[int] = []

    async def on_message() -> str:  # room in the stream buffer: Faust's delivery never waits
        delivered.append(7)
        return "delivered"

    async def main() -> tuple[Any, int]:
        consumer = Fetching(ConsumerOptions(fast_delivery=fast))
        result = await consumer.deliver(on_message())
        return result, consumer.tasks

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, tasks = asyncio.run(main())
        gc.collect()
    assert delivered == [7]
    assert result.results == ["delivered"] and not result.stopped
    assert tasks == (0 if fast else 4)  # Faust's wait_first (the app setting fast_delivery off) makes four
    assert not [w for w in caught if "never awaited" in str(w.message)]  # the flag's wait was closed


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
    sent: list[Any] = []
    reset: list[bool] = []

    async def send_req(request: Any) -> None:
        sent.append(request)

    def member(generation: int, member_id: str, instance: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(generation=generation, member_id=member_id, group_id="g", _group_instance_id=instance,
                               _send_req=send_req, reset_generation=lambda: reset.append(True))  # fmt: skip

    asyncio.run(leave_group_from_generation_zero(member(0, "m-1")))
    assert [(r._group, r._member_id) for r in sent] == [("g", "m-1")] and reset == [True]
    asyncio.run(leave_group_from_generation_zero(member(1, "m-2")))  # aiokafka's own path
    assert [r._member_id for r in sent] == ["m-1", "m-2"]
    sent.clear()
    asyncio.run(leave_group_from_generation_zero(member(-1, "")))  # never joined: nothing to leave
    asyncio.run(leave_group_from_generation_zero(member(0, "m-3", instance="static-1")))  # static membership
    assert sent == []


class Buffering(Consumer):
    """What Faust's flow control (``on_buffer_full``, ``on_buffer_drop``, ``_get_active_partitions``)
    and its fetch loop's ``_wait_next_records`` use of a consumer. Its fetch answers with what
    ``records`` holds for the active partitions or, with none, waits as aiokafka does for new records;
    ``thread`` stands for the consumer thread that owns aiokafka's fetch waiters."""

    def __init__(self, assigned: set[TP], options: ConsumerOptions = DEFAULTS) -> None:  # not Faust's
        self.options = options
        self.app = SimpleNamespace(in_recovery=False, client_only=False)
        self.flow_active = True
        self._active_partitions: set[TP] | None = set(assigned)
        self._buffered_partitions: set[TP] = set()
        self._paused_partitions: set[TP] = set()
        self.not_waiting_next_records = Event()
        self.records: dict[TP, list[str]] = {}
        self.waiter: asyncio.Future[None] | None = None
        self._thread: Any = None

    async def sleep(self, seconds: float) -> None:  # mode's Service.sleep, without the stop
        await asyncio.sleep(seconds)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> dict[TP, list[str]]:  # type: ignore[override]
        assert active_partitions is not None
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

    async def scenario(wake: bool) -> tuple[bool, Any]:
        consumer = Buffering({EVENTS}, ConsumerOptions(wake_on_buffer_drop=wake))
        consumer.records = {EVENTS: ["r1"]}
        consumer.on_buffer_full(EVENTS)
        assert consumer._get_active_partitions() == set()
        task = asyncio.ensure_future(consumer._wait_next_records(1.0))
        await _turns()
        assert not task.done()  # waiting: nothing is active
        consumer.on_buffer_drop(EVENTS)
        await _turns()
        done = task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return done, (task.result() if done else None)

    done, result = asyncio.run(scenario(wake=True))
    assert done and result == ({}, {EVENTS})  # the next round of the loop fetches EVENTS' records
    done, _ = asyncio.run(scenario(wake=False))
    assert not done  # the app setting wake_on_buffer_drop off: Faust's, still asleep, up to a second


def test_a_paused_partition_that_comes_back_releases_the_fetch_waiting_for_the_others() -> None:
    """With other partitions still active, Faust's fetch waits in aiokafka for new records of those;
    the partition that came back has its records fetched already, and waited with them."""

    async def scenario() -> None:
        consumer = Buffering({EVENTS, KEYED})
        consumer._thread = _consumer_thread(set())
        consumer.records = {EVENTS: ["r1", "r2"]}
        consumer.on_buffer_full(EVENTS)
        task = asyncio.ensure_future(consumer._wait_next_records(1.0))
        await _turns()
        assert not task.done() and consumer.waiter is not None  # aiokafka waits for KEYED's records
        consumer.on_buffer_drop(KEYED)  # never paused: no wake-up
        await _turns()
        assert not task.done()
        consumer.on_buffer_drop(EVENTS)
        await _turns()
        assert task.done() and task.result() == ({EVENTS: ["r1", "r2"]}, {EVENTS, KEYED})

    asyncio.run(scenario())


def test_the_fetch_wait_is_the_apps_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust hard-codes 1,500 ms; the worker's consumer waits the app's ``fetch_max_wait_ms`` (50 ms
    by default), set on the aiokafka consumer before it starts and builds its fetcher."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from streams.live.faust_ext.consumer import ConsumerThread
    from streams.live.faust_ext.settings import FAUST_FETCH_MAX_WAIT_MS, FETCH_MAX_WAIT_MS, App

    def faust_consumer(thread: Any, transport: Any) -> SimpleNamespace:  # Faust's, as far as the wait goes
        return SimpleNamespace(_fetch_max_wait_ms=1500)

    monkeypatch.setattr(AIOKafkaConsumerThread, "_create_worker_consumer", faust_consumer)

    def wait_of(**options: Any) -> int:
        app = App("fetch-wait-test", broker="modwatch://127.0.0.1:1", **options)
        thread = ConsumerThread.__new__(ConsumerThread)  # what the method reads of the thread: the app's options
        thread.consumer = SimpleNamespace(options=ConsumerOptions.of(app.conf))  # type: ignore[assignment]
        return int(thread._create_worker_consumer(None)._fetch_max_wait_ms)  # type: ignore[arg-type]

    assert wait_of() == FETCH_MAX_WAIT_MS == 50
    assert wait_of(fetch_max_wait_ms=FAUST_FETCH_MAX_WAIT_MS) == 1500
    assert ConsumerOptions.of(SimpleNamespace()) == DEFAULTS  # a plain Faust app's settings: the defaults


def test_the_broker_setting_selects_our_transport_with_every_broker_and_the_credentials() -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

    from streams.live.faust_ext.settings import App
    from streams.live.faust_ext.transport import SCHEME, Transport, broker_urls, register

    register()
    assert faust.transport.by_url(f"{SCHEME}://h1:9092") is Transport
    credentials = faust.SASLCredentials(username="u", password="p")
    for broker in (broker_urls("h1:9092, h2:9093"), f"{SCHEME}://h1:9092;h2:9093"):
        app = App("transport-test", broker=broker, broker_credentials=credentials)
        assert type(app.transport) is Transport and type(app.producer_transport) is Transport
        assert app.transport.Consumer is Consumer  # whose thread is ConsumerThread
        assert server_list(app.transport.url, 9092) == ["h1:9092", "h2:9093"]
        auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
        assert auth["sasl_plain_username"] == "u" and auth["security_protocol"] == "SASL_PLAINTEXT"


def test_the_leave_patch_is_installed_on_one_coordinator_not_on_aiokafkas_class() -> None:
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    faust_method = GroupCoordinator.__dict__["_maybe_leave_group"]
    ours = GroupCoordinator.__new__(GroupCoordinator)  # a coordinator as AIOKafkaConsumer.start makes it
    other = GroupCoordinator.__new__(GroupCoordinator)
    patches.install(SimpleNamespace(_coordinator=ours))
    assert ours._maybe_leave_group.__func__ is leave_group_from_generation_zero  # type: ignore[attr-defined]
    assert "_maybe_leave_group" not in vars(other)
    assert GroupCoordinator.__dict__["_maybe_leave_group"] is faust_method
    patches.install(SimpleNamespace(_coordinator=None))  # a consumer without a group: nothing to do


@pytest.mark.parametrize(("name", "version"), [("faust-streaming", "0.16.0"), ("aiokafka", "0.12.1")])
def test_an_untested_version_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str, version: str) -> None:
    installed = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", name: version}
    monkeypatch.setattr(patches, "installed_version", installed.__getitem__)
    with pytest.raises(patches.UnsupportedVersion) as refused:
        patches.check_versions()
    message = str(refused.value)
    assert f"{name} {version}" in message  # what is installed, both named
    assert "faust-streaming>=0.15.3,<0.16" in message and "aiokafka>=0.13,<0.15" in message  # what was tested
    assert f"pip install '{name}" in message
    with pytest.raises(patches.UnsupportedVersion):  # install refuses too
        patches.install(SimpleNamespace(_coordinator=None))


def test_the_installed_versions_are_tested_ones() -> None:
    patches.check_versions()


def test_the_tested_ranges_are_pyprojects() -> None:
    import tomllib

    from tests.worker_harness import REPO

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in patches.TESTED:
        assert f"{name}{patches.tested_range(name)}" in deps


# Run in a worker process: the classes of Faust, mode and aiokafka before the app is made, compared
# once it has started and been assigned its partitions (its consumer has started: patches installed).
PROBE = r"""
import json, sys
import aiokafka.consumer.fetcher, aiokafka.consumer.group_coordinator, faust, faust.app.base, faust.stores.memory
import faust.tables, faust.transport.consumer, faust.transport.drivers.aiokafka, mode.services
from streams.config.settings import Settings
from streams.live import app as app_module
from streams.live.worker import run_worker
from tests.live.test_faust_ext import changed_classes, class_attributes

before = class_attributes()
create_app = app_module.create_app

def probed(*args, **kwargs):
    runtime = create_app(*args, **kwargs)

    @runtime.app.on_partitions_assigned.connect
    async def compare(sender, assigned=None, **rest):
        with open(sys.argv[1], "w") as out:
            json.dump(changed_classes(before), out)

    return runtime

app_module.create_app = probed
sys.exit(run_worker(Settings(), loglevel="warning", loop="asyncio"))
"""


def class_attributes() -> dict[type, dict[str, Any]]:
    """Every class of the loaded Faust, mode and aiokafka modules -> its attributes, as objects."""
    import sys

    out: dict[type, dict[str, Any]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in ("faust", "mode", "aiokafka"):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == name:
                out[value] = dict(vars(value))
    return out


def changed_classes(before: dict[type, dict[str, Any]]) -> list[str]:
    """``Class.attribute`` for each method or other behaviour (anything callable, or a descriptor
    such as a property) added, removed or replaced since ``before``. Plain data the libraries keep
    on their classes changes as they run (aiokafka counts its producers' client ids on the class)."""
    missing = object()
    changed = []
    for cls, attributes in before.items():
        now = vars(cls)
        for name in set(attributes) | set(now):
            old, new = attributes.get(name, missing), now.get(name, missing)
            behaviour = any(callable(v) or hasattr(type(v), "__get__") for v in (old, new) if v is not missing)
            if old is not new and behaviour:
                changed.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    return sorted(changed)


@pytest.mark.broker
def test_a_started_worker_changes_no_class_of_faust_or_aiokafka(session_broker: Any, unique_prefix: str,
                                                                 tmp_path: Any) -> None:  # fmt: skip
    """The corrections are our classes' methods and one coordinator's (``patches.install``): Faust's,
    mode's and aiokafka's classes stay as they are for everything else in the process."""
    import json
    import subprocess
    import sys
    import time

    from tests.worker_harness import REPO, worker_env

    out = tmp_path / "changed.json"
    env = worker_env(session_broker.bootstrap, unique_prefix, tmp_path)
    log = (tmp_path / "probe.log").open("w")
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(out)], env=env, cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.stat().st_size) and probe.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert out.exists() and out.stat().st_size, (tmp_path / "probe.log").read_text()[-3000:]
        time.sleep(0.2)  # the file is written in one go; let it close
        assert json.loads(out.read_text()) == []
    finally:
        probe.terminate()
        try:
            probe.wait(30)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()
        log.close()


def test_the_class_comparison_sees_a_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``test_a_started_worker_changes_no_class_of_faust_or_aiokafka`` relies on."""
    before = class_attributes()

    async def patched(self: Any, timeout: float) -> Any: ...

    monkeypatch.setattr(FaustConsumer, "_wait_next_records", patched)
    assert changed_classes(before) == ["faust.transport.consumer.Consumer._wait_next_records"]
