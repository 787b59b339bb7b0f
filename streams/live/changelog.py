"""The evaluator's state as Faust's table holds it and as its changelog gets it: a view of one keyed
partition's keys, and the changes to log (left out, and counted, when too big for a record)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from streams.core.state import unpacked
from streams.core.topology import WATERMARK_KEY, partition_of
from streams.outputs.metrics import Health

log = logging.getLogger(__name__)


class PartitionStore(MutableMapping[str, Any]):
    """A view of the state store holding only one keyed partition's keys (the store holds all the
    partitions assigned to this worker).

    Writes and deletes go to the store at once and mark the key dirty; nothing is logged here. The
    app sends a dirty key's value to the changelog after a batch or at the next offset commit
    (``Evaluator.flush``), not once per assignment: the engine writes a key several times per event.
    """

    def __init__(self, store: MutableMapping[str, Any], partition: int, partitions: int, dirty: set[str]) -> None:
        self.store = store
        self.partition = partition
        self.partitions = partitions
        self.dirty = dirty

    def __getitem__(self, key: str) -> Any:
        return self.store[key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.store.get(key)
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self.store[key] = value
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self.store[key]
        self.dirty.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self.store

    def __iter__(self) -> Iterator[str]:
        for key in list(self.store.keys()):
            if not key.startswith(WATERMARK_KEY) and partition_of(key, self.partitions) == self.partition:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


def key_partition(key: str, partitions: int) -> int:
    """The keyed partition a state key belongs to: a watermark key names it, a rule key hashes to it."""
    if key.startswith(WATERMARK_KEY):
        return int(key[len(WATERMARK_KEY) :])
    return partition_of(key, partitions)


@dataclass(frozen=True, slots=True)
class Change:
    """A key's value to write to the changelog (None: the key was deleted)."""

    partition: int
    key: str
    value: Any


def changelog_records(changes: list[Change], dumps: Callable[[Any], bytes], limit: int,
                      health: Health) -> Iterator[tuple[bytes, bytes | None, int]]:  # fmt: skip
    """(key, value, partition) of each change serialised with ``dumps``; None is a tombstone.

    A change whose key and value pass ``limit`` bytes is left out, logged and counted
    (``health.unlogged_states``): the producer would refuse it, and the failed send would stop the
    agent, so that the worker evaluated nothing more. The rules bound their state per key; this is
    for a state no bound caught. A restart recovers that key's previous value."""
    for change in changes:
        key = dumps(change.key)
        value = None if change.value is None else dumps(unpacked(change.value))
        size = len(key) + len(value or b"")
        if value is not None and size > limit:  # a tombstone always goes
            health.unlogged_states += 1
            log.error("state of key %r is %d bytes, over the %d a changelog record may hold: not logged "
                      "(a restart recovers its previous value)", change.key[:200], len(value), limit)  # fmt: skip
            continue
        health.changelog_records += 1
        health.changelog_bytes += size
        yield key, value, change.partition
