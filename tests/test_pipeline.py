"""``Evaluator.flush``: what the live worker logs to the changelog after each batch of keyed records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from streams.config import load_rules
from streams.decode import Limits
from streams.engine import Engine
from streams.pipeline import Change, Evaluator, Outgoing, Router
from streams.topology import WATERMARK_KEY, partition_of

from .worker_harness import REPO

EXAMPLE = REPO / "examples" / "events.jsonl"
PARTITIONS = 2


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
                changelog[(change.partition, change.key)] = json.loads(json.dumps(change.value))

    for index, record in enumerate(_keyed(engine)):
        evaluator.on_record(record.partition or 0, record.value, record.headers)
        if index % 25 == 24:
            replay(evaluator.flush())
    replay(evaluator.flush())
    assert evaluator.flush() == []
    assert {key for _, key in changelog} == set(store)
    assert {key: value for (_, key), value in changelog.items()} == json.loads(json.dumps(store))
    assert deleted > 0, "the example log must exercise deletes"
    assert logged < store.writes
