"""The worker's state store (``streams.live.faust_ext.store``): the changelog offset its data has reached, per
partition it holds (as active or as a standby copy), is what Faust's recovery starts reading from
after a rebalance."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from streams.live.app import _logged
from streams.live.faust_ext.store import SCHEME, Store, register


@pytest.fixture
def table() -> Any:
    register()
    app = faust.App("store-test", broker="kafka://127.0.0.1:1", store=f"{SCHEME}://")
    return app.Table("state", default=None, partitions=4)


def _tps(table: Any) -> list[TP]:
    topic = table.changelog_topic.get_topic_name()
    return [TP(topic, p) for p in range(4)]


def _rebalance(table: Any, actives: set[TP], standbys: frozenset[TP] = frozenset()) -> None:
    table.app.assignor.assigned_actives = lambda: set(actives)
    table.app.assignor.assigned_standbys = lambda: set(standbys)
    asyncio.run(table.data.on_rebalance(actives | standbys, set(), actives | standbys))


def _changelog(tp: TP, offsets: range) -> list[Any]:
    """Changelog records as Faust's recovery hands them to the store."""
    events = []
    for offset in offsets:
        key, value = f"k{tp.partition}-{offset}", [offset]
        message = SimpleNamespace(tp=tp, partition=tp.partition, offset=offset, value=value)
        events.append(SimpleNamespace(key=key, value=value, message=message))
    return events


def _same(x: Any) -> Any:
    return x


def test_the_table_uses_the_store(table: Any) -> None:
    assert type(table.data) is Store


def test_recovery_counts_for_active_partitions_only(table: Any) -> None:
    tp0, tp1, tp2, _ = _tps(table)
    _rebalance(table, {tp0, tp1})
    store = table.data
    store.apply_changelog_batch([*_changelog(tp0, range(5)), *_changelog(tp2, range(3))], _same, _same)
    assert store["k0-4"] == [4] and store["k2-2"] == [2]  # both applied, as Faust's store does
    assert store.persisted_offset(tp0) == 4
    assert store.persisted_offset(tp2) is None  # not held: Faust's store drops these keys at recovery end
    assert store.persisted_offset(tp1) is None  # nothing read or written yet: read from the start


def test_acknowledged_writes_move_the_offset_forward_only_while_active(table: Any) -> None:
    tp0, tp1, _, tp3 = _tps(table)
    _rebalance(table, {tp0, tp1})
    store = table.data
    store.set_persisted_offset(tp1, 7)
    store.set_persisted_offset(tp1, 3)  # an earlier record's acknowledgement
    store.set_persisted_offset(tp3, 9)  # not this worker's: an acknowledgement after the rebalance
    assert (store.persisted_offset(tp1), store.persisted_offset(tp3)) == (7, None)


def test_a_rebalance_keeps_the_offsets_of_partitions_still_held_and_forgets_the_others(table: Any) -> None:
    tp0, tp1, tp2, tp3 = _tps(table)
    _rebalance(table, {tp0, tp1})
    store = table.data
    store.apply_changelog_batch(_changelog(tp0, range(5)), _same, _same)
    store.set_persisted_offset(tp1, 7)
    _rebalance(table, {tp1, tp3})
    assert [store.persisted_offset(tp) for tp in (tp0, tp1, tp2, tp3)] == [None, 7, None, None]
    _rebalance(table, {tp0, tp1})  # tp0 back: another worker wrote it meanwhile, so from the start
    assert store.persisted_offset(tp0) is None


def test_faust_recovery_starts_reading_a_held_partition_after_the_store_offset(table: Any) -> None:
    """The point of the store: the offset reaches Faust's recovery (``Recovery._add``). If a Faust
    upgrade stops asking the store, a rebalance reads every partition from the start again."""
    tp0, tp1, *_ = _tps(table)
    _rebalance(table, {tp0, tp1})
    table.data.set_persisted_offset(tp0, 41)
    offsets: Counter[TP] = Counter()
    recovery = table.app.tables.recovery
    recovery._add(table, tp0, offsets)
    recovery._add(table, tp1, offsets)
    assert offsets == {tp0: 41, tp1: None}


def test_the_app_moves_the_offset_when_the_broker_acknowledges_a_changelog_record(table: Any) -> None:
    tp0, *_ = _tps(table)
    _rebalance(table, {tp0})

    async def acks() -> None:
        loop = asyncio.get_running_loop()
        sent, failed = loop.create_future(), loop.create_future()
        sent.add_done_callback(lambda fut: _logged(table.data, tp0, fut))
        failed.add_done_callback(lambda fut: _logged(table.data, tp0, fut))
        failed.set_exception(RuntimeError("not delivered"))
        await asyncio.sleep(0)
        assert table.data.persisted_offset(tp0) is None  # a failed send reaches nothing
        sent.set_result(SimpleNamespace(offset=12))
        await asyncio.sleep(0)

    asyncio.run(acks())
    assert table.data.persisted_offset(tp0) == 12


def test_a_standby_copy_is_counted_kept_through_recovery_and_read_on_from_when_it_becomes_active(
        table: Any) -> None:  # fmt: skip
    """Faust's in-memory store drops a standby copy's keys when a recovery ends (and reads on from the
    old offset): a copy that spares no read-back. Here it stays, and the partition taken over is read
    from where the copy had got to."""
    tp0, tp1, tp2, tp3 = _tps(table)
    _rebalance(table, {tp0, tp1}, frozenset({tp2}))
    store = table.data
    store.apply_changelog_batch([*_changelog(tp0, range(5)), *_changelog(tp2, range(3)), *_changelog(tp3, range(2))],
                                _same, _same)  # fmt: skip
    asyncio.run(store.on_recovery_completed({tp0, tp1}, {tp2}))
    assert "k2-2" in store and "k0-4" in store
    assert "k3-1" not in store  # neither active nor a copy here
    assert (store.persisted_offset(tp2), store.persisted_offset(tp3)) == (2, None)
    store.set_persisted_offset(tp2, 9)  # only the owner writes: a late acknowledgement, ignored
    assert store.persisted_offset(tp2) == 2
    _rebalance(table, {tp0, tp2})  # the copy's owner left: tp2 is this worker's now
    assert [store.persisted_offset(tp) for tp in (tp0, tp1, tp2)] == [4, None, 2]
    offsets: Counter[TP] = Counter()
    table.app.tables.recovery._add(table, tp2, offsets)
    assert offsets == {tp2: 2}
