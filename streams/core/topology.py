"""How events move between the worker's two stages, independent of Faust.

Stage 1 (route) reads the input topics and sends each event once to every partition of the keyed
topic that owns one of its rule keys. Stage 2 (evaluate) keeps the rules' state for the keys of its
partition in a changelog-backed table.

The partition of a rule key is ``crc32(key) % partitions``: stable across processes and restarts
(Python's ``hash`` is salted per process), so a key's state always lives in one changelog partition.
Records carry their routing in headers, so stage 2 never has to guess; event time travels as the
record timestamp (never lost to repartitioning, unlike Faust's ``group_by``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

H_SOURCE = "mw-source"  # the input topic:partition the event came from
H_KEYS = "mw-keys"  # newline-separated rule keys this record is for
H_PRIMARY = "mw-primary"  # "1" on exactly one of an event's records: count the event there
H_ARRIVAL = "mw-arrival"  # wall time the router received the record (for processing latency)
H_TICK = "mw-tick"  # JSON {source: newest event time} (and idle sources as null)
H_BUNDLE = "mw-bundle"  # "1": the value holds several event records of one partition (``bundle_value``)
H_EVENT_TYPE = "event_type"
H_EVENT_ID = "event_id"

WATERMARK_KEY = "~wm~"  # table key prefix holding a partition's per-source event time


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode("utf-8")) % partitions


def split_by_partition(keys: Iterable[str], partitions: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for key in keys:
        out.setdefault(partition_of(key, partitions), []).append(key)
    return dict(sorted(out.items()))


def input_key(view: dict[str, object]) -> bytes | None:
    """The Kafka key of an input record (replay uses it): the actor, so one actor's events keep
    their order within a partition."""
    actor = view.get("actor")
    if isinstance(actor, dict) and isinstance(actor.get("id"), str):
        return str(actor["id"]).encode("utf-8")
    return None


@dataclass(frozen=True)
class Headers:
    """The routing headers of a keyed record, decoded."""

    source: str
    keys: tuple[str, ...]
    primary: bool
    tick: dict[str, float | None] | None
    arrival: float | None = None
    bundle: bool = False  # the value packs several event records (``bundle_value``)

    @classmethod
    def parse(cls, raw: Iterable[tuple[str, bytes]] | dict[str, bytes] | None) -> Headers:
        items = dict(raw.items() if isinstance(raw, dict) else (raw or []))
        tick_raw = items.get(H_TICK)
        tick = json.loads(tick_raw) if tick_raw else None
        keys = items.get(H_KEYS, b"").decode("utf-8")
        return cls(
            source=items.get(H_SOURCE, b"").decode("utf-8"),
            keys=tuple(k for k in keys.split("\n") if k),
            primary=items.get(H_PRIMARY) == b"1",
            tick=tick,
            arrival=float(items[H_ARRIVAL]) if H_ARRIVAL in items else None,
            bundle=H_BUNDLE in items,
        )


def event_headers(
    source: str, keys: list[str], primary: bool, event_type: str, event_id: str, arrival: float | None = None
) -> list[tuple[str, bytes]]:
    extra = [(H_ARRIVAL, repr(arrival).encode())] if arrival is not None else []
    return [
        *extra,
        (H_SOURCE, source.encode()),
        (H_KEYS, "\n".join(keys).encode()),
        (H_PRIMARY, b"1" if primary else b"0"),
        (H_EVENT_TYPE, event_type.encode()),
        (H_EVENT_ID, event_id.encode()),
    ]


def tick_headers(sources: dict[str, float | None]) -> list[tuple[str, bytes]]:
    return [(H_TICK, json.dumps(sources, sort_keys=True).encode())]


RecordParts = tuple[bytes, Sequence[tuple[str, bytes]]]  # a record's value and headers


def bundle_value(records: Sequence[RecordParts]) -> bytes:
    """Several keyed-topic event records as the value of one record (headed ``H_BUNDLE``).

    The router sends a batch's events for one keyed partition as one record instead of one record
    each: the evaluating worker's Faust and aiokafka then handle one record, not dozens, and their
    per-record cost was as much as the evaluation itself. Each record comes back exactly, value and
    headers (``unbundle_value``), and goes through the same path as a record sent alone.

    Layout: a 4-byte big-endian length, that many bytes of JSON ``[[value length, [[header name,
    header value], ...]], ...]`` (header values as Latin-1 text, which maps every byte to one
    character and back), then the values one after the other.
    """
    meta = json.dumps(
        [[len(value), [[name, raw.decode("latin-1")] for name, raw in headers]] for value, headers in records],
        separators=(",", ":"),
    ).encode("utf-8")
    return len(meta).to_bytes(4, "big") + meta + b"".join(value for value, _ in records)


def unbundle_value(value: bytes) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """The records ``bundle_value`` packed, in their order. Raises ValueError on a value it did not make."""
    if len(value) < 4:
        raise ValueError("bundle shorter than its length prefix")
    size = int.from_bytes(value[:4], "big")
    try:
        meta = json.loads(value[4 : 4 + size])
        if not isinstance(meta, list):
            raise ValueError("not a list")
        position, records = 4 + size, []
        for length, headers in meta:
            if not isinstance(length, int) or length < 0:
                raise ValueError(f"value length {length!r}")
            records.append((value[position : position + length],
                            [(name, text.encode("latin-1")) for name, text in headers]))  # fmt: skip
            position += length
    except (UnicodeError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"bundle metadata unreadable: {exc}") from None
    if position != len(value):
        raise ValueError(f"bundle values end at byte {position} of {len(value)}")
    return records
