"""The worker's state store: Faust's in-memory store, plus how far into each changelog partition its
data has reached, so that a rebalance reads back only what the worker does not already hold.

Faust starts reading an assigned state partition's changelog at the offset the store reports
(``persisted_offset``). Its in-memory store reports none, so every rebalance, a worker joining or
leaving, made every worker read every partition it was assigned back from the changelog's start,
its own partitions too, while its streams waited (2.5-7.5 s for ~30k entries on the bench's
machines, growing with the state: README, Performance, "Failover").

This store reports, for each changelog partition the worker holds (as active, or as a standby copy)
since the last rebalance, the last offset its data reflects:

- a record recovery applied (``apply_changelog_batch``: an active partition's read-back, or a
  standby copy's reading, which goes on while the worker runs), and
- a record the worker wrote itself, once the broker acknowledged it (the app calls
  ``set_persisted_offset``; only the partition's owner writes it, from the data it holds, and holds
  everything it wrote).

A partition that stays with the worker through a rebalance is then read from after that offset:
nothing, after a clean revoke (the worker commits and logs its state before giving partitions up,
``streams.live.faust_ext.consumer.Consumer.on_partitions_revoked``). The data may be ahead of the
changelog (changes not yet logged): the records after the committed input offsets are evaluated
again, and a repeated event neither counts twice nor makes a new alert (rule state and alert ids are
by event id). A standby copy that becomes active is read from where the copy had got to.

A partition the worker no longer holds loses its offset here at once, so if it comes back it is read
from the start; the app drops its keys (``Evaluator.forget_partitions``). Faust's in-memory store
dropped the keys of standby copies when a recovery ended (and read on from the old offset): this
one keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from faust.stores import STORES, memory
from faust.types import TP, EventT

log = logging.getLogger(__name__)

SCHEME = "modwatch"  # store URL ``modwatch://``, the worker's ``store`` setting for Faust


class Store(memory.Store):
    """Faust's in-memory store that knows the changelog offset its data has reached in each
    partition it holds, as active or as a standby copy (module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reached: dict[TP, int] = {}  # changelog partition held -> last offset the data reflects
        self.active: frozenset[TP] = frozenset()  # changelog partitions held as active
        self.held: frozenset[TP] = frozenset()  # as active or as a standby copy

    def persisted_offset(self, tp: TP) -> int | None:
        return self.reached.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """``offset`` of ``tp`` is in the data (a record the worker wrote, acknowledged). Ignored for
        a partition not held as active: an acknowledgement that arrives after a rebalance took it."""
        if tp in self.active and offset > self.reached.get(tp, -1):
            self.reached[tp] = offset

    def apply_changelog_batch(self, batch: Iterable[EventT], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:  # fmt: skip
        events = list(batch)  # Faust passes a list (the recovery buffer); walked twice here
        super().apply_changelog_batch(events, to_key, to_value)
        reached = self.reached
        held = self.held
        for event in events:
            message = event.message
            tp = message.tp
            if tp in held and message.offset > reached.get(tp, -1):
                reached[tp] = message.offset

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:  # fmt: skip
        """Called by the table before recovery reads the offsets: keep the offsets of the
        partitions still held, as active or as standby copies, and forget the others."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topic = self.table.changelog_topic.get_topic_name()
        assignor = self.app.assignor
        self.active = frozenset(tp for tp in assignor.assigned_actives() if tp.topic == topic)
        self.held = self.active | frozenset(tp for tp in assignor.assigned_standbys() if tp.topic == topic)
        self.reached = {tp: offset for tp, offset in self.reached.items() if tp in self.held}
        kept = ", ".join(f"{tp.partition}@{self.reached[tp]}" for tp in sorted(self.active) if tp in self.reached)
        fresh = ", ".join(str(tp.partition) for tp in sorted(self.active) if tp not in self.reached)
        log.info("state partitions held through the rebalance, read from after offset: %s; read from the start: %s",
                 kept or "none", fresh or "none")  # fmt: skip

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Drop the keys recovery read for partitions no longer held. Faust's in-memory store drops
        those of standby copies too (and then reads on from the old offset): kept here, a standby
        copy spares its worker the read-back when the partition becomes its own."""
        held = {tp.partition for tp in (*active_tps, *standby_tps)}
        doomed = [key for key, partition in self._key_partition.items() if partition not in held]
        for key in doomed:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)


def register() -> None:
    """Make ``modwatch://`` name this store for Faust (``faust.stores.by_url``)."""
    STORES.aliases.setdefault(SCHEME, f"{__name__}:Store")
