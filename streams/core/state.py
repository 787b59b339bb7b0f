"""Where the rules' state lives: a shard (one partition's key -> record store, event time per source,
timer index), the packed record format, and the ids of recent events (for duplicates).

A record is ``{rule id: [rule state, suppression]}`` while the engine works on it, and one flat list
``[rule id, state, suppression, ...]`` when stored (``open_record``, ``stored_record``).
"""

from __future__ import annotations

import heapq
import marshal
from collections.abc import Callable, MutableMapping
from typing import Any


def open_record(stored: Any) -> dict[str, list[Any]]:
    """A key's stored record as the engine works on it: {rule id: [rule state, suppression]}.

    Stored, a record is one flat list ``[rule id, state, suppression, rule id, ...]``: most keys
    hold one rule's state, and a dict of one-item lists cost ~180 bytes more per key than a list of
    three. A record saved before (the dict itself) is read as it is; a packed one (``Shard``) is
    unpacked."""
    stored = unpacked(stored)
    if not stored:
        return {}
    if isinstance(stored, dict):
        return stored
    if len(stored) == 3:  # the common case, without the general loop
        return {stored[0]: [stored[1], stored[2]]}
    items = iter(stored)
    return {rule_id: [state, sup] for rule_id, state, sup in zip(items, items, items, strict=True)}


def packed(flat: list[Any]) -> bytes:
    """A record's flat list as a packed shard stores it (``Shard``)."""
    return marshal.dumps(flat)


def unpacked(stored: Any) -> Any:
    """A stored value as JSON can carry it: a packed record (``Shard``) as its flat list."""
    return marshal.loads(stored) if type(stored) is bytes else stored


def stored_record(record: dict[str, list[Any]]) -> list[Any]:
    """The flat list ``open_record`` reads, allocated at its exact size (a list grown by appends
    keeps spare slots, and there is one record per key)."""
    if len(record) == 1:
        for rule_id, (state, sup) in record.items():
            return [rule_id, state, sup]
    flat: list[Any] = [None] * (3 * len(record))
    for index, (rule_id, (state, sup)) in enumerate(record.items()):
        flat[3 * index : 3 * index + 3] = rule_id, state, sup
    return flat


class Shard:
    """The state of one partition: a key -> record store (see ``open_record``), the event time per
    source, and a timer index. The store may be a dict or a Faust table.

    ``packed`` stores each record as one ``marshal`` string (the live worker's): Python's cyclic
    garbage collector walks every list of a record, and at 2,000 events/s the state was ~300,000
    lists; each full collection paused the worker for 150-450 ms, every ~10 s. Bytes are not walked.
    Packing and unpacking cost ~0.5 us each; ``marshal`` keeps every value exactly (a NaN sum, a
    big integer), which JSON does not. The changelog gets the record as JSON (``unpacked``), as before.
    """

    def __init__(self, store: MutableMapping[str, Any] | None = None, packed: bool = False) -> None:
        self.store: MutableMapping[str, Any] = store if store is not None else {}
        self.packed = packed
        self.sources: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._peak = 0  # the most timers held at once since the last ``release``

    def put(self, key: str, flat: list[Any]) -> None:
        """Store a record (``stored_record``'s flat list); reassigned, as a Faust table only logs
        assignments."""
        self.store[key] = packed(flat) if self.packed else flat

    def observe(self, source: str, ts: float) -> None:
        if ts > self.sources.get(source, float("-inf")):
            self.sources[source] = ts

    def event_time(self) -> float:
        return min(self.sources.values()) if self.sources else float("-inf")

    def schedule(self, key: str, when: float | None) -> None:
        if when is None:
            return
        current = self._scheduled.get(key)
        if current is None or when < current:
            self._scheduled[key] = when
            heapq.heappush(self._heap, (when, key))

    def has_due(self, watermark: float) -> bool:
        return bool(self._heap) and self._heap[0][0] <= watermark

    def is_scheduled(self, key: str) -> bool:
        return key in self._scheduled

    def rebuild_timers(self, deadline: Callable[[dict[str, list[Any]]], float | None]) -> None:
        """After recovery (a restarted worker): schedule every stored key again, at the time
        ``deadline`` (``Engine.deadline``) gives for its record."""
        self._heap, self._scheduled = [], {}
        for key, record in list(self.store.items()):
            self.schedule(key, deadline(open_record(record)))

    def due(self, watermark: float) -> list[str]:
        if len(self._scheduled) > self._peak:
            self._peak = len(self._scheduled)
        keys = []
        while self._heap and self._heap[0][0] <= watermark:
            when, key = heapq.heappop(self._heap)
            if self._scheduled.get(key) == when:
                del self._scheduled[key]
                keys.append(key)
        return keys

    def release(self) -> None:
        """Give back the memory of a burst whose windows have expired. A dict keeps the size of its
        peak when keys are deleted (CPython shrinks one only once later inserts run out of room), so
        after a quiet spell the timer index, and the store when it is a plain dict, would hold on to
        it: both are copied once the timers fall to an eighth of their peak (an O(n) copy, at most
        once per eightfold shrink). A Faust table's storage is its own and stays as it is."""
        count = len(self._scheduled)
        if self._peak < 65536 or count * 8 > self._peak:
            return
        self._scheduled = dict(self._scheduled)
        if type(self.store) is dict:
            kept = dict(self.store)
            self.store.clear()  # in place: whoever holds the store keeps the same object
            self.store.update(kept)
        self._peak = count

    @property
    def timers(self) -> int:
        return len(self._scheduled)


#: What ``RecentIds.check`` says of an event id.
NEW, DUPLICATE, CONFLICT = "new", "duplicate", "conflict"
MAX_VERSIONS = 4  # contents remembered per id: a redelivered conflicting version is a duplicate too


class RecentIds:
    """Event ids seen within ``horizon`` seconds of event time, each with a digest of its content, to
    tell a redelivery (same id, same content: skipped) from a conflict (same id, other content: an
    integrity signal; someone who learns a harmless event's id must not hide another event behind
    it). Bounded: ids older than the horizon behind the newest event are pruned as the log advances,
    and at most ``MAX_VERSIONS`` contents are kept per id."""

    def __init__(self, horizon: float = 86400.0) -> None:
        self.horizon = horizon
        self._seen: dict[str, tuple[float, bytes] | tuple[float, bytes, list[bytes]]] = {}
        self._newest = float("-inf")
        self._next_prune = 4096
        self._pruned_at = float("-inf")

    def check(self, event_id: str, ts: float, digest: bytes) -> str:
        """``NEW`` (remembered from now on), ``DUPLICATE`` or ``CONFLICT`` (its content remembered
        too, so that its own redelivery is a duplicate)."""
        seen = self._seen.get(event_id)
        if seen is not None:
            if seen[1] == digest or (len(seen) == 3 and digest in seen[2]):
                return DUPLICATE
            others: list[bytes] = seen[2] if len(seen) == 3 else []
            if len(others) < MAX_VERSIONS:
                others.append(digest)
            self._seen[event_id] = (seen[0], seen[1], others)
            return CONFLICT
        self._seen[event_id] = (ts, digest)
        if ts > self._newest:
            self._newest = ts
        # Prune when the set has doubled, or (once it is big enough to matter) when event time moved
        # a horizon on, so a quiet spell after a burst gives the memory back.
        moved_on = len(self._seen) >= 1024 and self._newest - self._pruned_at > self.horizon
        if len(self._seen) >= self._next_prune or moved_on:
            cutoff = self._newest - self.horizon
            self._seen = {k: v for k, v in self._seen.items() if v[0] >= cutoff}
            self._next_prune = max(4096, 2 * len(self._seen))
            self._pruned_at = self._newest
        return NEW

    def first_digest(self, event_id: str) -> bytes | None:
        """The digest of the first content seen under ``event_id``."""
        seen = self._seen.get(event_id)
        return None if seen is None else seen[1]

    def __len__(self) -> int:
        return len(self._seen)
