"""The live worker's incidents stage: every alert of every keyed partition through one incident engine.

Incidents group alerts across rule keys (an actor's alerts come from many keys, on many keyed
partitions, possibly on several workers), so they are computed in one place: an internal topic of
one partition, the *incident feed* (``<app_id>-incident-feed``), read by the ``incidents`` agent of
the worker group. Faust gives its one partition to one worker; on a rebalance another takes it over.

- **What the feed carries.** Each alert the worker publishes (``mode: live``, at or above the
  incidents' ``min_severity``), as ``incident_feed.alert_state``: the alert's JSON plus what its JSON
  leaves out and the incident engine reads (``subjects``, ``page``). And **watermark marks**: every
  ``tick_seconds`` each worker sends, for each keyed partition it evaluates, that partition's
  watermark when it moved. A partition's alerts and marks leave one producer for one topic
  partition, so a mark arrives after every alert its partition raised below it.
- **Order.** The stage's watermark is the lowest mark of all keyed partitions (none until every one
  has reported). ``IncidentFeed.release`` hands the alerts it passes to the engine sorted by
  ``(last_seen, alert_id)``, as the backtest does: the same incident ids and revisions whatever the
  interleaving of the partitions' alerts.
- **Recovery.** After each batch the stage's whole state (``snapshot``: the engine's, the alerts
  not yet released, the marks) is one value of the ``incidents`` table, written to its changelog
  before the feed's offsets are committed. A worker taking the partition over reads it back and
  reads on from the committed offset; alerts read again are recognised by id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from streams.core.alerts import Alert
from streams.core.incident_config import IncidentsConfig
from streams.core.incident_feed import IncidentFeed, alert_from_state, alert_state
from streams.core.incidents import IncidentEngine, IncidentUpdate
from streams.outputs.metrics import Health

log = logging.getLogger(__name__)

MARK_HEADER = "mw-mark"
SNAPSHOT_KEY = "incidents"  # the one key of the ``incidents`` table
RecordHeaders = list[tuple[str, bytes]]


def feed_topic(app_id: str) -> str:
    return f"{app_id}-incident-feed"


def alert_record(alert: Alert) -> tuple[bytes, bytes]:
    """Key and value of an alert on the incident feed."""
    return alert.alert_id.encode(), json.dumps(alert_state(alert), sort_keys=True).encode()


def mark_record(partition: int, watermark: float) -> tuple[bytes, bytes, RecordHeaders]:
    """Key, value and headers of a watermark mark: every alert keyed partition ``partition`` raises
    from now on has ``last_seen`` above ``watermark`` (but a late event's)."""
    value = json.dumps({"partition": partition, "watermark": watermark}).encode()
    return f"mark:{partition}".encode(), value, [(MARK_HEADER, b"1")]


class IncidentStage:
    """The ``incidents`` agent's logic as a plain object (tested without Faust)."""

    def __init__(self, config: IncidentsConfig, partitions: int, health: Health | None = None) -> None:
        self.config = config
        self.partitions = partitions  # keyed partitions: each must report a mark
        self.health = health or Health()
        self.feed = IncidentFeed(IncidentEngine(config))
        self.marks: dict[int, float] = {}
        self.loaded = False  # state read back from the table since the last assignment

    def wants(self, alert: Alert) -> bool:
        """Whether the worker should put ``alert`` on the feed (the engine would ignore the others)."""
        return alert.mode == "live" and alert.severity >= self.feed.engine.min_severity

    def on_record(self, value: bytes | None, headers: Any) -> None:
        """A record of the feed: an alert to hold, or a keyed partition's watermark."""
        try:
            data = json.loads(value or b"")
            if any(k == MARK_HEADER for k, _ in headers or ()):
                partition, watermark = int(data["partition"]), float(data["watermark"])
                if watermark > self.marks.get(partition, float("-inf")):
                    self.marks[partition] = watermark
                return
            self.feed.add(alert_from_state(data))
        except (ValueError, KeyError, TypeError) as exc:  # the worker wrote it; a mismatch is a foreign writer
            log.error("unreadable record on the incident feed: %s", exc)

    def watermark(self) -> float:
        return min((self.marks.get(p, float("-inf")) for p in range(self.partitions)), default=float("-inf"))

    def release(self) -> list[IncidentUpdate]:
        """The updates of the alerts the watermark passed (and the closings it brings), counted."""
        watermark = self.watermark()
        if watermark == float("-inf"):
            return []
        updates = self.feed.release(watermark)
        if updates:
            changes = [(u.change, u.incident.severity.label, u.incident.kind) for u in updates]
            opened = [(i.severity.label, i.kind) for i in self.feed.engine.open_incidents()]
            self.health.record_incidents(changes, opened)
        return updates

    def snapshot(self) -> dict[str, Any]:
        return {"feed": self.feed.snapshot(), "marks": {str(p): w for p, w in self.marks.items()}}

    def restore(self, data: dict[str, Any] | None) -> None:
        """Read back ``snapshot()`` (None: start empty). Called on the first batch after an assignment."""
        self.loaded = True
        if not data:
            self.feed = IncidentFeed(IncidentEngine(self.config))
            self.marks = {}
            return
        self.feed = IncidentFeed.restore(self.config, data["feed"])
        self.marks = {int(p): float(w) for p, w in data.get("marks", {}).items()}
        opened = [(i.severity.label, i.kind) for i in self.feed.engine.open_incidents()]
        self.health.record_incidents([], opened)
        log.info("incidents stage: %d open incidents and %d held alerts read back", len(opened),
                 len(self.feed.pending))  # fmt: skip
