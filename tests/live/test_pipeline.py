"""The live worker's stages without Faust: ``Evaluator.flush`` (what is logged to the changelog after
each batch) and evaluation in place for the keyed partitions a worker owns."""

from __future__ import annotations

import json
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import pytest

from streams.config.loader import load_rules
from streams.core.decode import Limits
from streams.core.engine import Engine
from streams.core.state import open_record, unpacked
from streams.core.topology import H_BUNDLE, H_TICK, WATERMARK_KEY, bundle_value, partition_of, unbundle_value
from streams.live.changelog import Change, changelog_records
from streams.live.pipeline import Evaluator, Router
from streams.live.wire import Outgoing, bundle
from streams.offline.backtest import run_backtest
from streams.outputs.metrics import Health
from tests.worker_harness import REPO

EXAMPLE = REPO / "examples" / "events.jsonl"
PARTITIONS = 2


def as_json(store: dict[str, Any]) -> Any:
    """The store's records as the changelog carries them (JSON; the worker packs them in memory)."""
    return json.loads(json.dumps({key: unpacked(value) for key, value in store.items()}))


class CountingStore(dict[str, Any]):
    """A dict that counts assignments and deletions: the changelog writes a table would send."""

    writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes += 1
        super().__delitem__(key)


def _keyed(engine: Engine) -> Iterator[Outgoing]:
    router = Router(engine, "keyed", "dead", PARTITIONS, Limits())
    for offset, line in enumerate(EXAMPLE.read_text().splitlines()):
        yield from router.on_record("in", 0, offset, None, line.encode())


def test_a_batch_logs_each_changed_key_once_with_its_last_value() -> None:
    """Replaying the flushed changes (a tombstone deletes) rebuilds the store exactly, as a restarted
    worker's changelog recovery would, with fewer writes than one per assignment."""
    engine = Engine(load_rules(REPO / "config"))
    store = CountingStore()
    evaluator = Evaluator(engine, store, PARTITIONS)
    evaluator.expect({"in:0"})
    changelog: dict[tuple[int, str], Any] = {}
    logged = deleted = 0

    def replay(changes: list[Change]) -> None:
        nonlocal logged, deleted
        assert len({(c.partition, c.key) for c in changes}) == len(changes), "a key logged twice in a batch"
        for change in changes:
            logged += 1
            expected = change.key[len(WATERMARK_KEY) :] if change.key.startswith(WATERMARK_KEY) else None
            assert change.partition == (int(expected) if expected else partition_of(change.key, PARTITIONS))
            if change.value is None:
                deleted += 1
                changelog.pop((change.partition, change.key), None)
            else:
                changelog[(change.partition, change.key)] = json.loads(json.dumps(unpacked(change.value)))

    for index, record in enumerate(_keyed(engine)):
        evaluator.on_record(record.partition or 0, record.value, record.headers)
        if index % 25 == 24:
            replay(evaluator.flush())
    replay(evaluator.flush())
    assert evaluator.flush() == []
    assert {key for _, key in changelog} == set(store)
    assert {key: value for (_, key), value in changelog.items()} == as_json(store)
    assert deleted > 0, "the example log must exercise deletes"
    assert logged < store.writes


def _logged_through_commits(defer: bool) -> tuple[dict[str, Any], dict[str, Any], list[list[Change]]]:
    """The example through one evaluator, flushed every 5 records and committed every 40; returns
    the store, the changelog replayed, and what each commit interval logged."""
    engine = Engine(load_rules(REPO / "config"))
    store: dict[str, Any] = {}
    evaluator = Evaluator(engine, store, PARTITIONS)
    evaluator.expect({"in:0"})
    evaluator.defer = defer
    changelog: dict[str, Any] = {}
    intervals: list[list[Change]] = [[]]
    for index, record in enumerate(_keyed(engine)):
        evaluator.on_record(record.partition or 0, record.value, record.headers)
        if index % 5 == 4:
            intervals[-1] += evaluator.flush()
        if index % 40 == 39:
            intervals[-1] += evaluator.flush(commit=True)
            intervals.append([])
    intervals[-1] += evaluator.flush(commit=True)
    for changes in intervals:
        for change in changes:
            if change.value is None:
                changelog.pop(change.key, None)
            else:
                changelog[change.key] = json.loads(json.dumps(unpacked(change.value)))
    return as_json(store), changelog, intervals


def test_logging_at_commits_logs_a_key_at_most_twice_per_commit_and_the_same_state() -> None:
    """With ``defer``, a key is logged at its first change after a commit and, if it changed again,
    at the commit; watermarks only at the commit. At each commit the changelog holds the store as
    it is, as logging at every batch gives, with fewer records."""
    store, changelog, intervals = _logged_through_commits(defer=True)
    assert changelog == store
    _, every_batch, batches = _logged_through_commits(defer=False)
    assert every_batch == store
    assert sum(map(len, intervals)) < sum(map(len, batches))
    for changes in intervals:
        counts = Counter(change.key for change in changes)
        assert max(counts.values(), default=0) <= 2
    assert any(n == 2 for changes in intervals for n in Counter(c.key for c in changes).values())


def test_a_recovered_partition_is_packed_without_being_logged_again() -> None:
    """A restarted worker's table holds the changelog's JSON: lists. Its first use of a partition
    packs that partition's records in place, as they were, and logs only what the event changed."""
    records = list(_keyed(Engine(load_rules(REPO / "config"))))
    half = len(records) // 2
    before = Evaluator(Engine(load_rules(REPO / "config")), {}, PARTITIONS)
    before.expect({"in:0"})
    for record in records[:half]:
        before.on_record(record.partition or 0, record.value, record.headers)
    before.flush(commit=True)
    recovered = as_json(before.store)
    store: dict[str, Any] = dict(recovered)
    after = Evaluator(Engine(load_rules(REPO / "config")), store, PARTITIONS)
    after.expect({"in:0"})
    first = records[half]
    partition = first.partition or 0
    after.on_record(partition, first.value, first.headers)

    def rule_keys(keys: Any, on_partition: bool) -> set[str]:
        return {key for key in keys if not key.startswith(WATERMARK_KEY)
                and (partition_of(key, PARTITIONS) == partition) == on_partition}  # fmt: skip

    mine, theirs = rule_keys(store, True), rule_keys(recovered, False)
    assert len(mine) > 10 and theirs
    assert all(type(store[key]) is bytes for key in mine)
    assert all(type(store[key]) is list for key in theirs)  # no shard for that partition yet
    logged = {change.key for change in after.flush(commit=True)}
    assert len(logged) < len(mine) / 2
    assert all(unpacked(store[key]) == recovered[key] for key in mine - logged if key in recovered)


def test_a_worker_forgets_the_unlogged_changes_of_partitions_it_lost() -> None:
    engine = Engine(load_rules(REPO / "config"))
    evaluator = Evaluator(engine, {}, PARTITIONS)
    evaluator.expect({"in:0"})
    evaluator.defer = True
    for index, record in enumerate(_keyed(engine)):
        evaluator.on_record(record.partition or 0, record.value, record.headers)
        if index % 5 == 4:
            evaluator.flush()
    evaluator.flush()
    waiting = {partition: set(keys) for partition, keys in evaluator.dirty.items()}
    assert waiting[0] and waiting[1]  # keys changed again since they were logged: for the commit
    assert evaluator.keep_partitions({1}) == len(waiting[0])
    assert evaluator.flush(commit=True) == [Change(1, key, evaluator.store.get(key)) for key in waiting[1]]


def test_a_worker_drops_the_state_of_partitions_it_lost_and_keeps_the_rest() -> None:
    """Kept, a lost partition's keys would be memory held for nothing; the rest must stay as they
    are: the store reports them as read (``streams.live.faust_ext.store``), so they are not read back."""
    engine = Engine(load_rules(REPO / "config"))
    evaluator = Evaluator(engine, {}, PARTITIONS)
    evaluator.expect({"in:0"})
    assert evaluator.forget_partitions({0, 1}) == 0  # the first assignment
    for record in _keyed(engine):
        evaluator.on_record(record.partition or 0, record.value, record.headers)
    evaluator.on_tick(0, {"in:0": 0.0})  # an old position: writes the watermark key, expires nothing
    evaluator.flush()
    store = evaluator.store
    before = dict(store)
    on = {p: {k for k in store if k == f"{WATERMARK_KEY}{p}" or (not k.startswith(WATERMARK_KEY)
                                                              and partition_of(k, PARTITIONS) == p)}
          for p in range(PARTITIONS)}  # fmt: skip
    assert len(on[0]) > 10 and len(on[1]) > 10 and on[0] | on[1] == set(before)
    assert f"{WATERMARK_KEY}0" in on[0]
    assert evaluator.forget_partitions({0, 1}) == 0  # nothing lost: nothing walked or deleted
    assert evaluator.forget_partitions({1}) == len(on[0])
    assert store == {key: before[key] for key in on[1]}
    assert evaluator.forget_partitions({0, 1}) == 0  # back: read from the changelog, not from here


def test_ticks_report_only_what_the_logged_state_covers() -> None:
    """After a crash, the keyed partitions' new owner reads the state logged at the last commit and
    then the ticks sent after it: a tick reporting a position beyond that state would make the
    events read again late. With ``report_committed`` a tick reports where each source was when the
    state was last logged, once the commit is through, and idle only if that position was the
    partition's end."""
    engine = Engine(load_rules(REPO / "config"))
    router = Router(engine, "keyed", "dead", PARTITIONS, Limits(), idle_seconds=0.0)
    router.report_committed = True
    router.assign({"in:0"})
    lines = EXAMPLE.read_text().splitlines()
    asked: list[int | None] = []

    def caught_up(source: str, offset: int | None) -> bool:
        asked.append(offset)
        return offset == 30

    def reported(caught: Any = caught_up) -> dict[str, float | None]:
        (tick, *_) = router.tick(caught)
        return dict(json.loads(dict(tick.headers)[H_TICK]))

    def read(offsets: range) -> None:
        for offset in offsets:
            router.on_record("in", 0, offset, None, lines[offset].encode())

    read(range(20))
    assert router.tick(lambda source, offset: False) == []  # nothing logged yet: nothing to report
    router.logging_state()
    at_20 = router.sources["in:0"]
    read(range(20, 30))  # while the commit is under way
    assert router.sources["in:0"] > at_20
    assert router.tick(lambda source, offset: False) == []
    router.state_logged()
    assert reported() == {"in:0": at_20} and asked[-1] == 20  # read to 30; logged to 20: not idle
    router.logging_state()
    router.state_logged()
    assert reported() == {"in:0": None}  # silent, and logged to the partition's end: idle
    router.report_committed = False  # as before: the position read, whatever is logged
    assert reported(lambda source, offset: False) == {"in:0": router.sources["in:0"]}


# -- evaluation in place: the keyed partitions a worker owns skip the keyed topic ------------------


def _two_workers(local: bool, lag: int, batch: int = 0,
                 max_bytes: int = 4096) -> tuple[dict[str, Any], Counter[str], int, int]:  # fmt: skip
    """The example log through two simulated workers, each reading one input partition (by actor)
    and owning two of four keyed partitions. A record for the other worker's partition reaches it
    ``lag`` events later, as the keyed topic would deliver it; ticks every 50 events. With ``local``,
    each worker evaluates its own partitions in place. With ``batch``, the records of every ``batch``
    events leave together at the batch's end, packed by ``bundle`` (and before a tick, as the app's
    batch lock makes them). Returns the alerts by id, the events counted, the late events and the
    event records sent through the keyed topic."""
    ruleset = load_rules(REPO / "config")
    owned = ({0, 1}, {2, 3})
    engines = [Engine(ruleset), Engine(ruleset)]
    routers = [Router(engine, "keyed", "dead", 4, Limits()) for engine in engines]
    evaluators = [Evaluator(engine, {}, 4) for engine in engines]
    for router, evaluator, mine in zip(routers, evaluators, owned, strict=True):
        evaluator.expect({"in:0", "in:1"})
        if local:
            router.evaluate_locally(mine)
    alerts: dict[str, Any] = {}
    in_flight: deque[tuple[int, Outgoing]] = deque()
    pending: list[Outgoing] = []
    sent = 0

    def leave(index: int) -> None:
        nonlocal sent
        for record in bundle(pending, "keyed", max_bytes):
            sent += 1
            in_flight.append((index + lag, record))
        pending.clear()

    def run(work: list[Any], index: int) -> None:
        nonlocal sent
        for item in work:
            if isinstance(item, Outgoing) and batch and item.value:
                pending.append(item)
            elif isinstance(item, Outgoing):
                sent += bool(item.value)  # an event, not a tick
                in_flight.append((index + lag, item))
            else:
                owner = next(w for w, parts in enumerate(owned) if item.partition in parts)
                alerts.update((a.alert_id, a.to_dict()) for a in evaluators[owner].on_local(item))

    def deliver(until: int) -> None:
        while in_flight and in_flight[0][0] <= until:
            _, record = in_flight.popleft()
            owner = next(w for w, parts in enumerate(owned) if record.partition in parts)
            got = evaluators[owner].on_record(record.partition or 0, record.value, record.headers)
            alerts.update((a.alert_id, a.to_dict()) for a in got)

    lines = EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        source = zlib.crc32(json.loads(line)["actor"]["id"].encode()) % 2
        run(routers[source].on_record("in", source, index, None, line.encode()), index)
        if batch and (index % batch == batch - 1 or index % 50 == 49):
            leave(index)
        if index % 50 == 49:
            for router in routers:
                run(router.tick(), index)
        deliver(index)
    leave(len(lines))
    for router in routers:
        run(router.tick(), len(lines))
    deliver(len(lines) + lag)
    counted: Counter[str] = engines[0].stats.events + engines[1].stats.events
    return alerts, counted, engines[0].stats.late + engines[1].stats.late, sent


def test_evaluating_owned_partitions_in_place_gives_the_same_alerts() -> None:
    """Two workers that evaluate their own keyed partitions in place publish the backtest's alerts,
    identical field by field to those of the keyed-topic path, count every event once, and send
    only the other worker's share through the keyed topic."""
    expected = {a.alert_id: a.to_dict() for a in run_backtest([str(EXAMPLE)], load_rules(REPO / "config")).alerts}
    for lag in (0, 7):
        remote, remote_counted, remote_late, remote_sent = _two_workers(local=False, lag=lag)
        local, local_counted, local_late, local_sent = _two_workers(local=True, lag=lag)
        assert set(local) == set(expected), (lag, sorted(set(expected) ^ set(local))[:5])
        assert local == remote
        assert local_counted == remote_counted and sum(local_counted.values()) == len(EXAMPLE.read_text().splitlines())
        assert local_late == remote_late == 0
        assert 0 < local_sent < remote_sent


def test_bundled_keyed_records_give_the_same_alerts_in_fewer_records() -> None:
    """A batch's records for a keyed partition packed into one (``bundle``) reach the evaluator as
    if each had come alone: the same alerts field by field, every event counted once, none late,
    with and without evaluation in place, and several events to a record (bundles of at most 4 KiB
    here, so that a batch's partition also splits into several)."""
    for local in (False, True):
        alone, alone_counted, _, alone_sent = _two_workers(local=local, lag=7)
        packed_alerts, packed_counted, packed_late, packed_sent = _two_workers(local=local, lag=7, batch=20)
        assert packed_alerts == alone
        assert packed_counted == alone_counted and packed_late == 0
        assert 0 < packed_sent < alone_sent / 2, (packed_sent, alone_sent)


def test_bundle_packs_a_partitions_records_in_order_and_leaves_the_rest() -> None:
    def event(part: int, n: int, size: int = 10) -> Outgoing:
        return Outgoing("keyed", bytes([65 + n]) * size, None, part, float(n), (("mw-keys", f"k{n}".encode()),))

    dead = Outgoing("dead", b"bad", b"key", None, None, (("mw-dl-reason", b"invalid_json"),))
    records = [event(0, 0), dead, event(1, 1), event(0, 2), event(0, 3, size=200), event(0, 4)]
    out = bundle(records, "keyed", max_bytes=100)
    assert out[0] == dead
    by_partition: dict[int, list[Outgoing]] = {}
    for record in out[1:]:
        assert record.partition is not None
        by_partition.setdefault(record.partition, []).append(record)
    assert by_partition[1] == [records[2]]  # alone in its partition: sent as it is
    first, big, last = by_partition[0]
    assert first.headers == ((H_BUNDLE, b"1"),) and first.timestamp == 2.0
    assert unbundle_value(first.value) == [(r.value, list(r.headers)) for r in (records[0], records[3])]
    assert big == records[4]  # over max_bytes with anything else: alone
    assert last == records[5]


def test_a_bundle_comes_back_byte_for_byte_and_a_foreign_one_is_refused(caplog: Any) -> None:
    parts = [(b'{"a": 1}', [("mw-keys", "target=caf\u00e9".encode())]), (b"", []), (b"\xff\x00", [("k", b"\xff\n")])]
    assert unbundle_value(bundle_value(parts)) == parts
    value = bundle_value(parts)
    for bad in (b"", b"\x00\x00\x00\x02{}", value[:-1], value + b"x", b"\x00\x00\x00\x09[[-1,[]]]"):
        with pytest.raises(ValueError):
            unbundle_value(bad)
    evaluator = Evaluator(Engine(load_rules(REPO / "config")), {}, PARTITIONS)
    assert evaluator.on_record(0, value[:-1], [(H_BUNDLE, b"1")]) == []
    assert "unreadable bundle on the keyed topic, partition 0" in caplog.text


def test_one_worker_owning_every_partition_sends_only_ticks_through_the_keyed_topic() -> None:
    """With every keyed partition local, events never leave the process (ticks still go through the
    keyed topic, so that its offsets are committed), and the alerts and the state are those of the
    keyed-topic path."""
    results = []
    for local in (False, True):
        engine = Engine(load_rules(REPO / "config"))
        router = Router(engine, "keyed", "dead", PARTITIONS, Limits())
        store: dict[str, Any] = {}
        evaluator = Evaluator(engine, store, PARTITIONS)
        evaluator.expect({"in:0"})
        if local:
            router.evaluate_locally(set(range(PARTITIONS)))
        ids: set[str] = set()
        records = 0
        for offset, line in enumerate(EXAMPLE.read_text().splitlines()):
            work = router.on_record("in", 0, offset, None, line.encode())
            work += router.tick() if offset % 50 == 49 else []
            for item in work:
                if isinstance(item, Outgoing):
                    records += bool(item.value)  # an event, not a tick
                    got = evaluator.on_record(item.partition or 0, item.value, item.headers)
                else:
                    got = evaluator.on_local(item)
                ids |= {a.alert_id for a in got}
        results.append((ids, as_json(store), records))
    (remote_ids, remote_store, remote_records), (local_ids, local_store, local_records) = results
    assert local_ids == remote_ids and local_ids
    assert local_store == remote_store
    assert local_records == 0 < remote_records


# -- the state census behind ``modwatch_state_keys``: counted in slices ------------------------------


def _reference_count(engine: Engine, records: list[Any]) -> Counter[str]:
    """Keys holding state per rule, by opening each record (the definition the census must keep)."""
    sizes: Counter[str] = Counter()
    for stored in records:
        holders: set[str] = set()
        for rule_id in open_record(stored):
            unit = engine.by_id.get(rule_id)
            holders.update(getattr(unit, "member_ids", None) or (rule_id,))
        sizes.update(holders)
    return sizes


def test_the_state_census_counts_only_owned_partitions_in_slices() -> None:
    """A worker owning two of four keyed partitions counts the keys of those two only (the store
    also holds the others', as standby replicas put them there), in slices of ``step`` keys, and
    gets what opening every record gives; a key deleted during the walk is skipped."""
    engine = Engine(load_rules(REPO / "config"))
    router = Router(engine, "keyed", "dead", 4, Limits())
    store: dict[str, Any] = {}
    evaluator = Evaluator(engine, store, 4)
    evaluator.expect({"in:0"})
    for offset, line in enumerate(EXAMPLE.read_text().splitlines()):
        for record in router.on_record("in", 0, offset, None, line.encode()):
            evaluator.on_record(record.partition or 0, record.value, record.headers)
    store["legacy"] = {"rapid_takedown": [None, None]}  # a record saved before the flat format, on partition 0
    evaluator.reset()
    owned = {partition_of("legacy", 4), (partition_of("legacy", 4) + 1) % 4}
    for partition in owned:
        evaluator.shard(partition)
    mine = [v for k, v in store.items() if not k.startswith(WATERMARK_KEY) and partition_of(k, 4) in owned]
    assert len(mine) < len(store) - 1, "the example log must put keys on the partitions not owned"

    slices = evaluator.census(step=10)
    next(slices)
    gone = next(k for k in reversed(list(store)) if partition_of(k, 4) in owned and not k.startswith(WATERMARK_KEY))
    expected = _reference_count(engine, [v for v in mine if v is not store[gone]])
    del store[gone]
    rest = sum(1 for _ in slices)
    assert rest >= len(store) // 10 - 1
    assert evaluator.health.state_keys == dict(expected)
    assert evaluator.health.state_keys["rapid_takedown"] >= 1
    assert evaluator.health.timers == sum(evaluator.shard(p).timers for p in owned)


def test_a_change_too_big_for_a_changelog_record_is_counted_not_sent() -> None:
    """The producer refuses a record over its size, and the failed send stopped the agent: such a
    change is left out (and counted), the others and the tombstones go on."""
    health = Health()
    changes = [Change(0, "small", [1, 2]), Change(1, "big", ["x" * 500]), Change(0, "gone", None)]
    records = list(changelog_records(changes, lambda obj: json.dumps(obj).encode(), 100, health))
    assert records == [(b'"small"', b"[1, 2]", 0), (b'"gone"', None, 0)]
    assert health.unlogged_states == 1
    assert (health.changelog_records, health.changelog_bytes) == (2, len(b'"small"[1, 2]"gone"'))
