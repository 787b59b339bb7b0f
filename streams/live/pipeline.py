"""The live worker's two stages as plain objects: records in, records and alerts out.

``Router`` and ``Evaluator`` hold no Kafka or Faust objects, so they are tested directly; the Faust
app (``streams/live/app.py``) only moves records between topics and these methods.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from streams.core.alerts import Alert
from streams.core.decode import ID_CONFLICT, Decoded, Limits, decode
from streams.core.engine import Engine
from streams.core.rules.base import Role
from streams.core.state import CONFLICT, DUPLICATE, Shard, packed
from streams.core.topology import (
    WATERMARK_KEY,
    Headers,
    event_headers,
    partition_of,
    split_by_partition,
    tick_headers,
    unbundle_value,
)
from streams.inputs import Dropped, Mapped
from streams.live.changelog import Change, PartitionStore, key_partition
from streams.live.raw_inputs import Normalizer
from streams.live.wire import LocalEvent, Outgoing, Work
from streams.outputs.metrics import Health

log = logging.getLogger(__name__)


class Router:
    """Stage 1: decode, dead-letter what is bad, and send each event to the keyed partitions that
    own its rule keys. Remembers, per input partition, the newest event time (for ticks).

    An event for a keyed partition this worker owns itself (``evaluate_locally``) becomes a
    ``LocalEvent`` instead of a record: the app hands it to the evaluator at once. That skips a
    produce, a broker round trip, a consume and a second decode and routing of the event; with one
    worker, every partition is local and the keyed topic carries only ticks.

    Ticks still go through the keyed topic, to every partition, local or not. That keeps every keyed
    partition consumed and its offset committed by its owner. A worker that takes a partition over
    in a rebalance then starts from that committed offset. Without it, a keyed partition that had
    only ever been evaluated in place had no committed offset, and its new owner skipped the records
    the other worker sent to it just after the rebalance: the joining-worker test lost 26 to 79
    events this way in 3 of 8 runs.
    """

    def __init__(self, engine: Engine, keyed_topic: str, deadletter_topic: str, partitions: int,
                 limits: Limits, idle_seconds: float = 10.0, health: Health | None = None,
                 normalizer: Normalizer | None = None) -> None:  # fmt: skip
        self.engine = engine
        # Raw topics: a record is mapped and enriched first (``streams.live.raw_inputs``), then each
        # event it gives is routed as a contract event read from an input topic.
        self.normalizer = normalizer
        self.health = health or Health()
        self.keyed_topic = keyed_topic
        self.deadletter_topic = deadletter_topic
        self.partitions = partitions
        self.limits = limits
        self.idle_seconds = idle_seconds
        self.sources: dict[str, float] = {}  # source -> newest event time
        self.activity: dict[str, float] = {}  # source -> wall time of its last record (or assignment)
        self.next_offsets: dict[str, int] = {}  # source -> offset after the last record read
        self.dead: Counter[str] = self.health.dead_letters
        self.routed = 0
        self.duplicates = 0
        self.raised: list[Alert] = []  # integrity alerts raised here (``take_raised``)
        self.local: frozenset[int] = frozenset()  # keyed partitions evaluated in this process
        # With ``report_committed`` (set by the app when the state is logged at each offset commit),
        # ticks report where each source was when the state was last logged and committed.
        self.report_committed = False
        self.logged_times: dict[str, float] = {}  # source -> event time the logged state covers
        self.logged_offsets: dict[str, int] = {}  # source -> next offset to read, likewise
        self._logging: tuple[dict[str, float], dict[str, int]] = ({}, {})

    def evaluate_locally(self, partitions: set[int] | frozenset[int]) -> None:
        """Called on rebalance with the keyed partitions whose state this worker now holds (their
        table partitions are recovered before any stream resumes)."""
        self.local = frozenset(partitions)

    def on_record(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                  headers: Any = None) -> list[Work]:  # fmt: skip
        source = f"{topic}:{partition}"
        self.activity[source] = time.monotonic()
        self.next_offsets[source] = offset + 1
        arrival = time.time()
        raw = self.normalizer.input_of(topic) if self.normalizer is not None else None
        if raw is not None:
            return self._on_raw(topic, partition, offset, key, value, headers, source, arrival)
        out = decode(value or b"", self.limits)
        if not isinstance(out, Decoded):
            return [self._dead_letter(topic, partition, offset, key, value, headers, out.reason, out.detail)]
        return self._route(topic, partition, offset, key, value, headers, source, arrival, out, value or b"")

    def _on_raw(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                headers: Any, source: str, arrival: float) -> list[Work]:  # fmt: skip
        """A raw record: each event it maps to is routed (its keyed record carries the event's JSON,
        not the raw record); a rejection is a dead letter of the raw record with the reason; a
        dropped action is only counted (by the normalizer)."""
        assert self.normalizer is not None
        raw = self.normalizer.input_of(topic)
        assert raw is not None
        work: list[Work] = []
        for outcome in self.normalizer.normalize(raw, value or b""):
            if isinstance(outcome, Mapped):
                work += self._route(topic, partition, offset, key, value, headers, source, arrival, outcome.decoded,
                                    outcome.line.encode())  # fmt: skip
            elif not isinstance(outcome, Dropped):
                work.append(self._dead_letter(topic, partition, offset, key, value, headers, outcome.reason,
                                              f"{raw.name}: {outcome.detail}"))  # fmt: skip
        return work

    def _route(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, headers: Any,
               source: str, arrival: float, out: Decoded, event_value: bytes) -> list[Work]:  # fmt: skip
        """Admit and route one decoded event; ``value`` is the record read (what a dead letter keeps),
        ``event_value`` the event's JSON (what the keyed topic carries)."""
        event = out.event
        if out.ts > self.sources.get(source, float("-inf")):
            self.sources[source] = out.ts
        verdict = self.engine.admit(out)
        if verdict == DUPLICATE:
            self.duplicates += 1
            return []
        if verdict == CONFLICT:
            # Not evaluated: dead-lettered, and raised as an integrity alert (``raised``).
            self.raised.append(self.engine.conflict_alert(out))
            detail = f"event_id: {event.event_id!r} was seen before with other content"
            return [self._dead_letter(topic, partition, offset, key, value, headers, ID_CONFLICT, detail)]
        self.routed += 1
        routes = self.engine.route(out)
        by_partition = split_by_partition(routes, self.partitions)
        if not by_partition:
            # No rule wants the event; still count it once, on the partition of its id.
            by_partition = {partition_of(event.event_id, self.partitions): []}
        work: list[Work] = []
        for index, (part, part_keys) in enumerate(by_partition.items()):
            if part in self.local:
                work.append(LocalEvent(part, out, tuple(part_keys), routes, index == 0, source, arrival))
                continue
            hdrs = event_headers(source, part_keys, index == 0, event.event_type, event.event_id, arrival)
            work.append(Outgoing(self.keyed_topic, event_value, None, part, out.ts, tuple(hdrs)))
        return work

    def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                     headers: Any, reason: str, detail: str) -> Outgoing:  # fmt: skip
        self.dead[reason] += 1
        log.warning("dead letter from %s:%d offset %d: %s (%s)", topic, partition, offset, reason, detail)
        dl_headers = [(k, v) for k, v in (headers or [])] + [
            ("mw-dl-topic", topic.encode()),
            ("mw-dl-partition", str(partition).encode()),
            ("mw-dl-offset", str(offset).encode()),
            ("mw-dl-reason", reason.encode()),
            ("mw-dl-detail", detail.encode()[:1000]),
        ]
        return Outgoing(self.deadletter_topic, value or b"", key, None, None, tuple(dl_headers))

    def take_raised(self) -> list[Alert]:
        """Alerts the router raised itself (integrity alerts), for the app to publish; emptied."""
        raised, self.raised = self.raised, []
        return raised

    def logging_state(self) -> None:
        """Called when the state is logged for an offset commit: it covers every record read so far."""
        self._logging = (dict(self.sources), dict(self.next_offsets))

    def state_logged(self) -> None:
        """Called once that state is in the changelog (the commit flushed the producer): ticks
        report those positions from now on."""
        self.logged_times, self.logged_offsets = self._logging

    def assign(self, sources: set[str]) -> None:
        """Called on rebalance with the input partitions (``topic:partition``) this worker now owns.

        A source it lost is forgotten: its ticks must not speak for a partition another worker is
        reading (a stale "idle" from here would drop that source from the watermark while its
        events are still coming). A source it gained and has not read yet is announced idle after
        ``idle_seconds`` of silence, like any other, so an empty partition does not hold the
        watermark back for ever (keyed partitions wait for every input partition: ``Evaluator.expect``).
        Every source's silence counts from now: a rebalance pauses them all while tables recover.
        """
        now = time.monotonic()
        known: list[dict[str, Any]] = [self.activity, self.sources, self.next_offsets, self.logged_times,
                                       self.logged_offsets, *self._logging]  # fmt: skip
        for gone in set().union(*(table.keys() for table in known)) - sources:
            for table in known:
                table.pop(gone, None)
        for source in sources:
            self.activity[source] = now

    def tick(self, caught_up: Callable[[str, int | None], bool] | None = None) -> list[Outgoing]:
        """Broadcast each source's event time to every keyed partition; a source silent for
        ``idle_seconds`` is announced idle (null) so it stops holding the watermark back.

        ``caught_up(source, next offset to read or None)`` tells whether the worker has read every
        record the partition holds. A silent source with records left is behind, not idle (a
        paused or recovering consumer, a slow fetch): announced idle, it would let the watermark run
        ahead to the other sources, and its own events, arriving later, would be late and skipped
        by the stateful rules: a window would miss them, a timer fire before them.

        With ``report_committed``, a tick says only what the state logged at the last commit covers:
        each source's event time then, and idle once its position then is the partition's end. A
        worker that takes the keyed partitions over after a crash reads that state, then the ticks
        sent after it: a tick reporting a position beyond it would make the events read again late.
        """
        now = time.monotonic()
        report: dict[str, float | None] = {}
        times, offsets = self.sources, self.next_offsets
        if self.report_committed:
            times, offsets = self.logged_times, self.logged_offsets
        for source, last in self.activity.items():
            silent = now - last > self.idle_seconds
            if silent and (caught_up is None or caught_up(source, offsets.get(source))):
                report[source] = None
            elif source in times:
                report[source] = times[source]
        if not report:
            return []
        hdrs = tuple(tick_headers(report))
        return [Outgoing(self.keyed_topic, b"", None, p, None, hdrs) for p in range(self.partitions)]


CENSUS_STEP = 2048  # keys counted between two yields of ``Evaluator.census`` (~5 ms)


class Evaluator:
    """Stage 2: run the rules for the keys a record names, on the shard of its partition.

    ``store`` is the state without its changelog (the Faust table's local storage, or a dict): what
    changed since the last ``flush`` is for the caller to log, before the offsets of the records
    that changed it are committed.
    """

    def __init__(self, engine: Engine, store: MutableMapping[str, Any], partitions: int,
                 health: Health | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.health = health or Health()
        self.store = store
        self.partitions = partitions
        self.shards: dict[int, Shard] = {}
        self.dirty: dict[int, set[str]] = {}  # keyed partition -> keys written since the last flush
        # Set by the app when offsets are committed through
        # ``streams.live.faust_ext.consumer.Consumer._commit_tps``:
        # a key already logged since the last commit, and the watermarks, wait for the commit.
        self.defer = False
        self.logged: set[str] = set()  # keys logged since the last commit (with ``defer``)
        self.expected: frozenset[str] = frozenset()  # every input partition, "topic:partition"
        self.held: frozenset[int] = frozenset()  # keyed partitions at the last ``forget_partitions``

    def expect(self, sources: set[str]) -> None:
        """Called on rebalance with every partition of the input topics, whichever worker reads it.

        A shard holds its watermark back (at -inf) for an input partition it has not heard from yet,
        by record or tick, until that partition reports an event time or is announced idle. Without
        this, the first router to send records (another worker's, or a faster partition's) sets the
        watermark alone: the events of partitions not yet read arrive late and are skipped by the
        stateful rules, and absence timers fire before the events that would have stopped them.
        """
        self.expected = frozenset(sources)

    def reset(self) -> None:
        """Called on rebalance: shards are rebuilt from the (recovered) table on next use."""
        self.shards.clear()

    def shard(self, partition: int) -> Shard:
        shard = self.shards.get(partition)
        if shard is None:
            dirty = self.dirty.setdefault(partition, set())
            shard = Shard(PartitionStore(self.store, partition, self.partitions, dirty), packed=True)
            saved = self.store.get(f"{WATERMARK_KEY}{partition}")
            if isinstance(saved, dict):
                shard.sources.update({k: float(v) for k, v in saved.items()})
            for source in self.expected - shard.sources.keys():
                shard.sources[source] = float("-inf")  # not heard from yet: hold the watermark back
            shard.rebuild_timers(self.engine.deadline)
            self._pack_recovered(shard)
            self.shards[partition] = shard
        return shard

    def _pack_recovered(self, shard: Shard) -> None:
        """Records read back from the changelog are JSON lists: pack them as the shard would have
        (``Shard``), in the store itself, so that the unchanged values are not logged again. Else a
        restarted worker's recovered state would stay lists, walked by every garbage collection, until
        each key was written again."""
        for key in shard.store:  # this partition's keys
            value = self.store.get(key)
            if type(value) is list:
                self.store[key] = packed(value)

    def on_record(self, partition: int, value: bytes | None, headers: Any) -> list[Alert]:
        """A record of the keyed topic: a tick, an event with the rule keys it is for, or a bundle
        of such events (``bundle``), each then handled as if it had come alone."""
        meta = Headers.parse(headers)
        if meta.bundle:
            try:
                records = unbundle_value(value or b"")
            except ValueError as exc:  # the router made it; a mismatch means a foreign writer
                log.error("unreadable bundle on the keyed topic, partition %d: %s", partition, exc)
                return []
            alerts: list[Alert] = []
            for member_value, member_headers in records:
                alerts.extend(self._on_one(partition, member_value, Headers.parse(member_headers)))
            return alerts
        return self._on_one(partition, value, meta)

    def _on_one(self, partition: int, value: bytes | None, meta: Headers) -> list[Alert]:
        if meta.tick is not None:
            return self.on_tick(partition, meta.tick)
        out = decode(value or b"", Limits(max_bytes=max(len(value or b""), 1)), now=float("inf"))
        if not isinstance(out, Decoded):  # the router validated it; a mismatch means a foreign writer
            log.error("undecodable record on the keyed topic, partition %d: %s", partition, out.reason)
            return []
        wanted = set(meta.keys)
        routes = {key: roles for key, roles in self.engine.route(out).items() if key in wanted} if wanted else {}
        return self.on_event(partition, out, tuple(routes), routes, meta.primary, meta.source, meta.arrival)

    def on_local(self, work: LocalEvent) -> list[Alert]:
        """An event the router handed over for a partition this worker owns."""
        return self.on_event(work.partition, work.decoded, work.keys, work.routes, work.primary, work.source,
                             work.arrival)  # fmt: skip

    def on_tick(self, partition: int, report: dict[str, float | None]) -> list[Alert]:
        """Input partitions' event times (None: idle); fires the timers the watermark now passes."""
        shard = self.shard(partition)
        for source, ts in report.items():
            if ts is None:
                shard.sources.pop(source, None)
            else:
                shard.observe(source, ts)
        known = {k: v for k, v in shard.sources.items() if v != float("-inf")}
        key = f"{WATERMARK_KEY}{partition}"
        if self.store.get(key) != known:  # an idle tick writes nothing
            self.store[key] = known
            self.dirty.setdefault(partition, set()).add(key)
        return self.engine.advance(shard)

    def on_event(self, partition: int, out: Decoded, keys: tuple[str, ...], routes: dict[str, list[Role]],
                 primary: bool, source: str, arrival: float | None) -> list[Alert]:  # fmt: skip
        """Apply one event to ``keys`` (routed as ``routes``) on the shard of ``partition``."""
        alerts = self.engine.step(self.shard(partition), out, source, routes, keys, primary)
        if alerts and arrival:
            self.health.processing.observe(max(0.0, time.time() - arrival))
        return alerts

    def flush(self, commit: bool = False) -> list[Change]:
        """The keys written since the last flush, each once, with its value now; forgets them.

        Called after a batch of records: their offsets may be committed only once these changes are
        in the changelog (at least once: a restarted worker recovers the state the offsets imply).

        With ``defer``, a batch's flush leaves out the keys already logged since the last commit,
        and the watermarks; ``flush(commit=True)``, called just before offsets are committed, has
        them all. A key an event changes once is logged at once, as before; a busy key (a dataset
        exported several times a second, its 100 pending exports ~55 KB) at most twice per commit
        instead of at every batch: at 2,000 events/s, ~50 times a second.
        """
        changes: list[Change] = []
        get = self.store.get
        if commit or not self.defer:
            self.logged.clear()
            for partition, keys in self.dirty.items():
                changes.extend(Change(partition, key, get(key)) for key in keys)
                keys.clear()
            return changes
        logged = self.logged
        for partition, keys in self.dirty.items():
            later = []
            for key in keys:
                if key in logged or key.startswith(WATERMARK_KEY):
                    later.append(key)
                else:
                    changes.append(Change(partition, key, get(key)))
                    logged.add(key)
            keys.clear()
            keys.update(later)  # the same set: the partition's store marks keys in it
        return changes

    def keep_partitions(self, partitions: set[int]) -> int:
        """Called on rebalance: forget the unlogged changes of keyed partitions this worker no longer
        owns (their new owner reads the state logged at the last commit, and the records after it).
        Returns how many were forgotten."""
        dropped = 0
        for partition, keys in self.dirty.items():
            if partition not in partitions and keys:
                dropped += len(keys)
                keys.clear()
        return dropped

    def forget_partitions(self, partitions: set[int]) -> int:
        """Called on rebalance, after ``keep_partitions``, with the keyed partitions this worker holds
        (its own and its standby copies): delete from the store the keys of the partitions it held
        before and no longer does. Their new owner reads them from the changelog; kept, they would
        be memory held for nothing and, were the partition to come back, a base that unlogged
        changes could have left wrong (it is then read from the start, ``streams.live.faust_ext.store``). Walks
        the store only when a partition was lost. Returns the keys deleted."""
        lost = self.held - partitions
        self.held = frozenset(partitions)
        if not lost:
            return 0
        doomed = [key for key in self.store if key_partition(key, self.partitions) in lost]
        for key in doomed:
            self.store.pop(key, None)
        return len(doomed)

    def census(self, step: int = CENSUS_STEP) -> Iterator[None]:
        """Count the keys holding state per rule, and the pending timers, over this worker's
        partitions (those with a shard), into ``health.state_keys`` and ``health.timers``.

        A generator that yields after each ``step`` keys, so that the caller can let the agents run
        between slices: one walk of a million keys takes seconds. The keys are those of the store
        when the walk starts; a key deleted meanwhile is skipped, so the counts are approximate
        while events arrive, as a gauge is.
        """
        owned = set(self.shards)
        keys = list(self.store.keys())
        mine = len(owned) < self.partitions  # else every key of the store is on an owned partition
        sizes: Counter[str] = Counter()
        get = self.store.get
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            if mine:
                chunk = [key for key in chunk if partition_of(key, self.partitions) in owned]
            sizes.update(self.engine.count_state(get(key) for key in chunk if not key.startswith(WATERMARK_KEY)))
            yield
        self.health.state_keys = dict(sizes)
        self.health.timers = sum(shard.timers for shard in self.shards.values())


