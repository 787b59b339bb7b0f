"""The order alerts reach the incident engine in: the same offline and live.

``IncidentEngine`` is deterministic for a given order of alerts, but the order is not: a backtest
raises an event's alerts key by key, rule by rule, and the live worker raises them on several keyed
partitions, possibly several workers, whose alerts interleave as they arrive. The incident id is
made from an incident's first alert, and its alert list, risk and the requester map follow the
order, so two orders can give two ids.

``IncidentFeed`` holds alerts back until event time has passed them (the watermark: every alert
with ``last_seen`` at or below it has been raised) and hands them to the engine sorted by
``(last_seen, alert_id)``; then it moves the engine's event time to the watermark. An alert's
``last_seen`` is the time it is raised at: its completing event, or for an absence the deadline the
watermark passed. So whichever partitions raised them and in whatever interleaving, the engine sees
the same alerts in the same order, and the backtest (``run_backtest``) and the live worker's
incidents stage (``streams/live/incidents_stage.py``) give the same ids and revisions.

The price is latency: an incident opens once the watermark passes its alert, ``lateness_seconds``
of event time after it. An alert that arrives after the watermark passed its ``last_seen`` (a late
event's stateless alert) is handed over at the next release, out of the sorted order.
"""

from __future__ import annotations

from typing import Any

from streams.core.alerts import Alert
from streams.core.incident_config import IncidentsConfig
from streams.core.incidents import IncidentEngine, IncidentUpdate

SNAPSHOT_VERSION = 1


def order_key(alert: Alert) -> tuple[float, str]:
    return (alert.last_seen, alert.alert_id)


def alert_state(alert: Alert) -> dict[str, Any]:
    """An alert with what its JSON leaves out and the engine reads (``page``, ``subjects``)."""
    return {"alert": alert.to_dict(), "page": alert.page, "subjects": dict(alert.subjects)}


def alert_from_state(data: dict[str, Any]) -> Alert:
    alert = Alert.from_dict(data["alert"])
    alert.page = bool(data.get("page", False))
    alert.subjects = {str(k): str(v) for k, v in data.get("subjects", {}).items()}
    return alert


class IncidentFeed:
    def __init__(self, engine: IncidentEngine) -> None:
        self.engine = engine
        self.pending: dict[str, Alert] = {}  # alert id -> alert, not yet passed by the watermark
        self.watermark = float("-inf")  # the highest released

    def add(self, alert: Alert) -> None:
        """Hold an alert until ``release`` passes it. A redelivered alert (an id pending or already
        observed) is dropped here; the engine ignores shadow alerts and those below ``min_severity``."""
        if alert.alert_id in self.pending or alert.alert_id in self.engine.recent:
            return
        if alert.mode != "live" or alert.severity < self.engine.min_severity:
            return
        self.pending[alert.alert_id] = alert

    def release(self, watermark: float) -> list[IncidentUpdate]:
        """Observe the held alerts at or below ``watermark`` in ``(last_seen, alert_id)`` order, then
        advance the engine to it. Called as the watermark moves (after each event offline; at each
        watermark mark live). Cheap when nothing is due."""
        updates: list[IncidentUpdate] = []
        if self.pending:
            due = sorted((a for a in self.pending.values() if a.last_seen <= watermark), key=order_key)
            for alert in due:
                del self.pending[alert.alert_id]
                updates += self.engine.observe(alert)
        if watermark > self.watermark:
            self.watermark = watermark
            updates += self.engine.advance(watermark)
        return updates

    def drain(self) -> list[IncidentUpdate]:
        """At the end of a finite log: observe every held alert in order, without moving event time
        past the last one (the backtest; the live worker waits for the watermark)."""
        due = sorted(self.pending.values(), key=order_key)
        self.pending.clear()
        updates: list[IncidentUpdate] = []
        for alert in due:
            updates += self.engine.observe(alert)
        return updates

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "engine": self.engine.snapshot(),
            "pending": [alert_state(a) for a in sorted(self.pending.values(), key=order_key)],
            "watermark": self.watermark if self.watermark != float("-inf") else None,
        }

    @classmethod
    def restore(cls, config: IncidentsConfig, data: dict[str, Any]) -> IncidentFeed:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"incident feed state of version {data.get('version')!r}, expected {SNAPSHOT_VERSION}")
        feed = cls(IncidentEngine.restore(config, data["engine"]))
        for item in data.get("pending", []):
            alert = alert_from_state(item)
            feed.pending[alert.alert_id] = alert
        feed.watermark = float(data["watermark"]) if data.get("watermark") is not None else float("-inf")
        return feed
