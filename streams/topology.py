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
from collections.abc import Iterable
from dataclasses import dataclass

H_SOURCE = "mw-source"  # the input topic:partition the event came from
H_KEYS = "mw-keys"  # newline-separated rule keys this record is for
H_PRIMARY = "mw-primary"  # "1" on exactly one of an event's records: count the event there
H_ARRIVAL = "mw-arrival"  # wall time the router received the record (for processing latency)
H_TICK = "mw-tick"  # JSON {source: newest event time} (and idle sources as null)
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
