"""Where the rules' state lives: a shard (one partition's key -> record store, event time per source,
timer index), the packed record format, and the ids of recent events (for duplicates).

A record is ``{rule id: [rule state, suppression]}`` while the engine works on it, and one flat list
``[rule id, state, suppression, ...]`` when stored (``open_record``, ``stored_record``).
"""

from __future__ import annotations

import heapq
import marshal
import struct
from bisect import bisect_right
from collections.abc import Callable, MutableMapping
from itertools import repeat
from operator import and_
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
KEEP_ALL_BELOW = 1024  # a ``RecentIds`` holding fewer ids forgets none (not worth it; as it always did)

DIGEST_SIZE = 16  # bytes of the content digests ``RecentIds`` packs (``content_digest``'s)
BUCKET_IDS = 64  # ids per bucket of a ``_Generation``, on average
_FANOUT = 4  # buckets a bucket splits into
_TAG = struct.Struct("<h")  # a tag: the top 16 bits of an id's hash
_NO_DIGEST = bytes(DIGEST_SIZE)  # packed for an id whose digest is not of 16 bytes (in ``versions``)


def _utf8(event_id: str) -> bytes:
    """``event_id`` in UTF-8, a lone surrogate (JSON can carry one) included."""
    try:
        return event_id.encode()
    except UnicodeEncodeError:
        return event_id.encode("utf-8", "surrogatepass")


class _Generation:
    """The ids of one generation of ``RecentIds``, packed. In a dict, an id cost ~190 bytes (its slot,
    a tuple of its timestamp and its digest's bytes) and its str where the rule state did not hold
    it too (~64 bytes, for ~4 ids in 10 in the memory benchmark): most of that benchmark's excess
    over its goal. Here it costs its UTF-8 and 2 delimiters, a 2-byte tag, its 16-byte digest and
    ~6 bytes of buckets (~36 bytes for a 10-character id), in no object the garbage collector walks.

    A hash table of buckets by the hash of the id's UTF-8 (``hashed``), each three bytes strings,
    one record per id in the same order: ``tags`` (``_TAG``), searched first: no tag, the common
    case, is a miss; ``keys``, the UTF-8 between 0xFF and 0xFE (bytes that UTF-8 never holds, so a
    delimited id found there is that id, whole, and its index is the count of 0xFF before it);
    ``digests``. It grows by linear hashing: each time the ids outnumber ``BUCKET_IDS`` per bucket,
    the next bucket splits in ``_FANOUT`` by the next bits of the hash (into its own place and the
    ones a round's width on: the lists are that long, with empty buckets), so there is no pause to
    rehash the whole table; an id is moved ~0.8 times on average (~1.4 splitting in two). An id with
    more than one content (or a digest not of 16 bytes) has them in ``versions``, ``[first digest,
    other, ...]``, as well.

    ``RecentIds.check`` does ``get`` and ``add`` itself for the current generation: it runs for
    every event, and in CPython each call and attribute costs about as much as a search of a
    bucket. Even so the memory benchmark feeds ~3-4% fewer events a second than with the dict
    (~7,600 more instructions an event, of ~180,000)."""

    __slots__ = ("count", "digests", "keys", "limit", "mask", "split", "tags", "versions", "wide")

    def __init__(self) -> None:
        self.count = 0  # the ids held
        self.limit = BUCKET_IDS  # the count past which a bucket splits
        self.tags = [b""] * _FANOUT
        self.keys = [b""] * _FANOUT
        self.digests = [b""] * _FANOUT
        self.mask = 0  # the bucket of a hash is ``hashed & mask``, or ``hashed & wide`` below ``split``
        self.wide = _FANOUT - 1
        self.split = 0
        self.versions: dict[str, list[bytes]] = {}

    def bucket(self, hashed: int) -> int:
        index = hashed & self.mask
        return hashed & self.wide if index < self.split else index

    def find(self, event_id: str, raw: bytes, index: int) -> bytes | list[bytes] | None:
        """The digest ``event_id`` (``raw`` in UTF-8, in bucket ``index``) was added with, its list
        in ``versions``, or None."""
        keys = self.keys[index]
        at = keys.find(b"\xff" + raw + b"\xfe")
        if at < 0:
            return None
        if self.versions:
            versions = self.versions.get(event_id)
            if versions is not None:
                return versions
        at = keys.count(b"\xff", 0, at) * DIGEST_SIZE
        return self.digests[index][at : at + DIGEST_SIZE]

    def get(self, event_id: str, raw: bytes, hashed: int) -> bytes | list[bytes] | None:
        """``find``, when the tag is there."""
        index = self.bucket(hashed)
        if self.tags[index].find(_TAG.pack(hashed >> 48)) < 0:
            return None
        return self.find(event_id, raw, index)

    def add(self, event_id: str, raw: bytes, hashed: int, digest: bytes) -> None:
        """Remember an id not held yet, with its first content's digest."""
        if len(digest) != DIGEST_SIZE:
            self.versions[event_id] = [digest]
            digest = _NO_DIGEST
        index = self.bucket(hashed)
        self.tags[index] += _TAG.pack(hashed >> 48)
        self.keys[index] += b"\xff" + raw + b"\xfe"
        self.digests[index] += digest
        self.count += 1
        if self.count > self.limit:
            self.split_one()

    def split_one(self) -> None:
        """Split the bucket at ``split`` in ``_FANOUT`` by the next bits of the hash (linear hashing)."""
        index, width = self.split, self.mask + 1
        keys, tags, digests = self.keys[index], self.tags[index], self.digests[index]
        raws = keys[1:-1].split(b"\xfe\xff") if keys else []
        targets = list(map(and_, map(hash, raws), repeat(self.wide)))
        order = sorted(range(len(raws)), key=targets.__getitem__)  # by the bucket each goes to
        targets.sort()
        raws = [raws[at] for at in order]
        tag_list = [tags[2 * at : 2 * at + 2] for at in order]
        digest_list = [digests[at * DIGEST_SIZE : (at + 1) * DIGEST_SIZE] for at in order]
        end = 0
        for target in range(index, self.wide + 1, width):
            start, end = end, bisect_right(targets, target, end)
            self.tags[target] = b"".join(tag_list[start:end])
            self.keys[target] = _joined(raws[start:end])
            self.digests[target] = b"".join(digest_list[start:end])
        self.split += 1
        if self.split == width:  # a round done: the next is _FANOUT times as wide
            self.mask, self.wide, self.split = self.wide, (self.wide + 1) * _FANOUT - 1, 0
            for buckets in (self.tags, self.keys, self.digests):
                buckets.extend([b""] * (self.wide + 1 - len(buckets)))
        self.limit = BUCKET_IDS * (self.mask + 1 + (_FANOUT - 1) * self.split)


def _joined(raws: list[bytes]) -> bytes:
    """A bucket's ``keys`` from its ids' UTF-8 (``_Generation``)."""
    return b"\xff" + b"\xfe\xff".join(raws) + b"\xfe" if raws else b""


class RecentIds:
    """Event ids seen within ``horizon`` seconds of event time, each with a digest of its content, to
    tell a redelivery (same id, same content: skipped) from a conflict (same id, other content: an
    integrity signal; someone who learns a harmless event's id must not hide another event behind
    it). Bounded: ids older than the horizon behind the newest event are forgotten as the log
    advances, and at most ``MAX_VERSIONS`` contents are kept besides the first per id.

    There is one per worker and ~1 id per active key, so the ids are packed (``_Generation``) and
    have no timestamp each. They go into the current of two generations, in the order they arrive;
    the current one becomes the previous once event time has moved more than a horizon past its
    opening, and the previous one is dropped whole once every id in it is older than the horizon
    (its ids arrived when the newest event time was at most ``_closed``). So an id whose event time
    is within the horizon of the newest is always remembered, and it is forgotten by the time event
    time has moved two horizons past the newest when it arrived (past its own time, in order):
    later than the exact cut per timestamp made before, never earlier. Dropping a generation gives
    all its memory back at once. While fewer than ``KEEP_ALL_BELOW`` ids are held none is forgotten,
    as before, and the first generation opens when there are that many (not with the first id:
    else its first ids would make a previous generation of their own, searched for every event
    through a horizon)."""

    def __init__(self, horizon: float = 86400.0) -> None:
        self.horizon = horizon
        self._current = _Generation()
        self._previous = _Generation()
        self._newest = float("-inf")
        self._opened = float("-inf")  # the newest event time when the current generation began
        self._closed = float("-inf")  # the newest event time when the previous one ended
        self._due = float("-inf")  # past this event time, ``_forget`` may drop something

    def check(self, event_id: str, ts: float, digest: bytes) -> str:
        """``NEW`` (remembered from now on), ``DUPLICATE`` or ``CONFLICT`` (its content remembered
        too, so that its own redelivery is a duplicate)."""
        try:
            raw = event_id.encode()
        except UnicodeEncodeError:
            raw = _utf8(event_id)
        hashed = hash(raw)
        tag = _TAG.pack(hashed >> 48)
        current = self._current  # ``get`` and ``add`` inline (see ``_Generation``)
        index = hashed & current.mask
        if index < current.split:
            index = hashed & current.wide
        if current.tags[index].find(tag) >= 0 and (kept := current.find(event_id, raw, index)) is not None:
            return _again(current, event_id, kept, digest)
        if self._previous.count and (kept := self._previous.get(event_id, raw, hashed)) is not None:
            return _again(self._previous, event_id, kept, digest)
        last = self._newest
        if ts > last:
            self._newest = ts
            if ts > self._due:
                self._forget(last)
        if self._current is not current or len(digest) != DIGEST_SIZE:
            self._current.add(event_id, raw, hashed, digest)
            return NEW
        current.tags[index] += tag
        current.keys[index] += b"\xff" + raw + b"\xfe"
        current.digests[index] += digest
        current.count += 1
        if current.count > current.limit:
            current.split_one()
        return NEW

    def _forget(self, last: float) -> None:
        """Drop what is older than the horizon, a generation at a time; ``last`` is the newest event
        time before this event's (every id of the current generation arrived by then). Called once
        event time passes ``_due``, when there may be something to drop."""
        if self._current.count + self._previous.count < KEEP_ALL_BELOW:
            return
        cutoff = self._newest - self.horizon
        if self._opened == float("-inf"):  # the first generation: it counts from when forgetting starts
            self._opened = last
        if self._opened < cutoff:  # the previous generation's ids all arrived before the cutoff
            # and the current one's too when event time jumped
            self._previous = self._current if last >= cutoff else _Generation()
            self._current = _Generation()
            self._opened, self._closed = self._newest, last
        elif self._closed < cutoff and self._previous.count:
            self._previous = _Generation()
        self._due = min(self._opened, self._closed if self._previous.count else self._opened) + self.horizon

    def first_digest(self, event_id: str) -> bytes | None:
        """The digest of the first content seen under ``event_id``."""
        raw = _utf8(event_id)
        kept = self._current.get(event_id, raw, hash(raw))
        if kept is None and self._previous.count:
            kept = self._previous.get(event_id, raw, hash(raw))
        return kept[0] if isinstance(kept, list) else kept

    def __len__(self) -> int:
        return self._current.count + self._previous.count


def _again(generation: _Generation, event_id: str, kept: bytes | list[bytes], digest: bytes) -> str:
    """``RecentIds.check`` of an id ``generation`` holds: ``kept`` is its digest, or its list of
    contents once it had more than one."""
    if isinstance(kept, list):
        if digest in kept:
            return DUPLICATE
        if len(kept) <= MAX_VERSIONS:
            kept.append(digest)
        return CONFLICT
    if kept == digest:
        return DUPLICATE
    generation.versions[event_id] = [kept, digest]
    return CONFLICT
