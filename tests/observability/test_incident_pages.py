"""Incident pages against a real Alertmanager (Debian's ``prometheus-alertmanager``): the alerts of
one actor, one after another, are one Alertmanager alert with the incident's labels, updated as the
incident grows and resolved when it closes; a ``page: always`` alert still pages on its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from streams.config.loader import load_incidents, load_rules
from streams.core.alerts import Alert
from streams.core.incidents import IncidentEngine, IncidentUpdate
from streams.core.scoring import Severity
from streams.offline.backtest import run_backtest
from streams.outputs.metrics import Health
from streams.outputs.sinks.alertmanager import INCIDENT_ALERTNAME, AlertmanagerSink, incident_labels

from .servers import REPO, Alertmanager, Receiver, wait_for
from .test_alertmanager import CASE_ALERT, HIGH_ALERT

EXAMPLE = REPO / "examples" / "events.jsonl"


@cache
def example() -> tuple[dict[str, Alert], tuple[IncidentUpdate, ...]]:
    config = REPO / "config"
    result = run_backtest([str(EXAMPLE)], load_rules(config), incidents=IncidentEngine(load_incidents(config)))
    return {a.alert_id: a for a in result.alerts}, tuple(result.updates)


def drive(sink: AlertmanagerSink, steps: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    """Run the sink in an event loop in its own thread while ``steps`` hands it work and checks."""
    errors: list[BaseException] = []

    async def main() -> None:
        await sink.start()
        try:
            await asyncio.wait_for(steps(), timeout)
        finally:
            await sink.stop()

    def loop() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join(timeout + 10)
    assert not thread.is_alive(), "the sink's event loop did not stop"
    if errors:
        raise errors[0]


async def until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def incident_alerts(alertmanager: Alertmanager) -> list[dict[str, Any]]:
    return alertmanager.alerts(alertname=INCIDENT_ALERTNAME)


def test_one_actors_alerts_are_one_incident_page_updated_then_resolved(alertmanager: Alertmanager,
                                                                     receiver: Receiver) -> None:  # fmt: skip
    alerts, updates = example()
    # The liaison's incident: the rapid takedown and the takedowns after it, alert by alert.
    mine = [u for u in updates if CASE_ALERT in u.incident.alert_ids and u.incident.kind == "actor"]
    incident_id = mine[0].incident.incident_id
    assert mine[0].change == "opened" and mine[-1].change == "closed"
    assert len(mine) >= 4
    contributing = [alerts[a] for a in mine[-1].incident.alert_ids]
    health = Health()
    sink = AlertmanagerSink(alertmanager.url, Severity.HIGH, health=health, paging="incidents")
    seen_revisions: list[int] = []

    async def steps() -> None:
        # The alerts pass through the sink as the stream hands them over: only page: always ones go.
        for alert in contributing:
            sink.deliver(alert)
        for update in mine[:-1]:
            sink.deliver_incident(update)
            revision = update.incident.revision

            def current(revision: int = revision) -> dict[str, Any] | None:
                found = [a for a in incident_alerts(alertmanager) if a["labels"]["incident_id"] == incident_id]
                return found[0] if len(found) == 1 and found[0]["annotations"]["revision"] == str(revision) else None

            page = await until(f"revision {revision} in Alertmanager", current)
            seen_revisions.append(revision)
            assert page["labels"] == incident_labels(update.incident)
            assert page["annotations"]["alert_ids"] == ",".join(update.incident.alert_ids)
            assert page["annotations"]["summary"] == update.incident.summary
            assert page["status"]["state"] == "active"
        # One Alertmanager alert for the whole incident, whatever its revisions.
        assert len([a for a in incident_alerts(alertmanager) if a["labels"]["incident_id"] == incident_id]) == 1
        final = mine[-2].incident
        assert final.alert_count == len(contributing)
        # The page: always alert paged on its own as well; the incident's other alerts did not.
        individual = {a["labels"]["alert_id"] for a in alertmanager.alerts(source="modwatch")
                      if "alert_id" in a["labels"]}  # fmt: skip
        assert individual == {a.alert_id for a in contributing if a.page and a.severity >= Severity.HIGH}
        assert CASE_ALERT in individual
        # It closes: the same alert is resolved.
        sink.deliver_incident(mine[-1])
        await until("the incident resolved", lambda: not [
            a for a in incident_alerts(alertmanager) if a["labels"]["incident_id"] == incident_id])

    drive(sink, steps)
    assert seen_revisions == [u.incident.revision for u in mine[:-1]]
    assert health.sink_failures["alertmanager"] == 0
    # The receivers got the incident (critical: pager and chat), by its labels.
    wait_for("the incident at the chat receiver", lambda: INCIDENT_ALERTNAME in receiver.alert_ids("/chat"))


def test_alert_paging_keeps_every_alert_and_sends_no_incident(alertmanager: Alertmanager) -> None:
    """``alertmanager_paging: alerts``: every alert at or above the severity on its own, as before."""
    alerts, updates = example()
    sink = AlertmanagerSink(alertmanager.url, Severity.HIGH, paging="alerts")

    async def steps() -> None:
        sink.deliver(alerts[CASE_ALERT])
        sink.deliver(alerts[HIGH_ALERT])
        for update in updates:
            sink.deliver_incident(update)
        await until("both alerts", lambda: len(alertmanager.alerts(source="modwatch")) == 2)

    drive(sink, steps)
    ids = {a["labels"].get("alert_id") for a in alertmanager.alerts(source="modwatch")}
    assert ids == {CASE_ALERT, HIGH_ALERT}
