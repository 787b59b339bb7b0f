"""The Alertmanager sink against a real Alertmanager running the shipped routing tree: the case's
alerts arrive with their labels and annotations, critical ones page, failures are retried and
counted, and alerts resolve after ``resolve_after``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from streams.config.loader import load_rules
from streams.config.settings import Settings
from streams.core.alerts import Alert, iso
from streams.core.scoring import Severity
from streams.offline.backtest import run_backtest
from streams.outputs.metrics import Health
from streams.outputs.sinks import SinkSet
from streams.outputs.sinks.alertmanager import AlertmanagerSink, alerts_endpoint, to_alertmanager
from streams.tools.broker import free_port

from .servers import REPO, Alertmanager, Receiver, alertmanager_test_config, wait_for

EXAMPLE = REPO / "examples" / "events.jsonl"
# The Tiananmen shutdown: a meeting hosted in the US shut down within a minute of a request from the
# Ministry of State Security, by the China-based liaison, without a ticket.
CASE_ALERT = "3abd4daf9ec4896708b5344e"  # rapid_takedown, critical
HIGH_ALERT = "26a21e66d4a74a743f063310"  # undocumented_action, high: the quarantined US account


@cache
def example_alerts() -> dict[str, Alert]:
    return {a.alert_id: a for a in run_backtest([str(EXAMPLE)], load_rules(REPO / "config")).alerts}


def expected_labels(alert: Alert) -> dict[str, str]:
    """What the page carries for routing: the rule, severity, id and the alert's bounded labels."""
    labels = {k: v for k, v in alert.labels.items() if k != "request_id"}
    return labels | {"alertname": alert.rule_id, "rule": alert.rule_id, "severity": alert.severity.label,
                     "alert_id": alert.alert_id, "source": "modwatch"}  # fmt: skip


def run_sink(sink: AlertmanagerSink, alerts: list[Alert], until: Callable[[], bool], timeout: float = 20.0,
             meanwhile: Callable[[], Any] | None = None) -> None:  # fmt: skip
    """Start the sink in an event loop, hand it the alerts as the stream would, and run until ``until()``.

    The loop runs in its own thread while this one runs ``meanwhile`` (servers are started from the
    main thread: their die-with-parent signal follows the thread that started them)."""
    errors: list[BaseException] = []

    async def main() -> None:
        await sink.start()
        try:
            for alert in alerts:
                sink.deliver(alert)
            deadline = time.monotonic() + timeout
            while not until():
                assert time.monotonic() < deadline, f"sink stats {dict(sink.stats)}"
                await asyncio.sleep(0.1)
        finally:
            await sink.stop()

    def loop() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        thread.join(timeout + 5)
    assert not thread.is_alive(), "the sink's event loop did not stop"
    if errors:
        raise errors[0]


def by_id(alertmanager: Alertmanager) -> dict[str, dict[str, Any]]:
    return {a["labels"]["alert_id"]: a for a in alertmanager.alerts(source="modwatch")}


def test_case_alert_arrives_with_its_labels_and_pages(alertmanager: Alertmanager, receiver: Receiver) -> None:
    alerts = example_alerts()
    case, high = alerts[CASE_ALERT], alerts[HIGH_ALERT]
    low = next(a for a in alerts.values() if a.severity == Severity.LOW)
    health = Health()
    sink = AlertmanagerSink(alertmanager.url, Severity.HIGH, health=health)
    sent_at = time.time()
    run_sink(sink, [case, high, low], until=lambda: sink.stats["sent"] == 2)

    got = wait_for("both alerts in Alertmanager", lambda: by_id(alertmanager) if len(by_id(alertmanager)) == 2
                   else None)  # fmt: skip
    assert set(got) == {CASE_ALERT, HIGH_ALERT}  # the low one is below the sink's severity
    page = got[CASE_ALERT]
    assert page["labels"] == expected_labels(case)
    assert page["labels"].items() >= {
        "alertname": "rapid_takedown", "severity": "critical", "jurisdiction": "CN",
        "agency": "Ministry of State Security", "requester_kind": "government", "target_region": "US",
    }.items()  # fmt: skip
    annotations = page["annotations"]
    assert annotations["summary"] == case.summary
    assert annotations["title"] == case.title
    assert annotations["alert_id"] == CASE_ALERT
    assert annotations["event_ids"] == ",".join(case.event_ids)
    assert annotations["score"] == str(case.score)
    assert annotations["request_id"] == case.labels["request_id"]
    assert _time(page["startsAt"]) == pytest.approx(case.first_seen, abs=0.001)  # event time
    assert _time(page["endsAt"]) == pytest.approx(sent_at + 3600, abs=30)  # resolve_after, default 1 h
    assert page["status"]["state"] == "active"
    # The shipped routing tree: critical pages and is posted to chat; high goes to chat only.
    assert {r["name"] for r in page["receivers"]} == {"pager", "chat"}
    assert {r["name"] for r in got[HIGH_ALERT]["receivers"]} == {"chat"}
    wait_for("the page at the pager receiver", lambda: CASE_ALERT in receiver.alert_ids("/pager"))
    wait_for("both alerts at the chat receiver", lambda: receiver.alert_ids("/chat") >= {CASE_ALERT, HIGH_ALERT})
    assert HIGH_ALERT not in receiver.alert_ids("/pager")
    assert health.sink_failures["alertmanager"] == 0 and health.sink_dropped["alertmanager"] == 0


def test_an_unreachable_alertmanager_is_retried_and_counted(tmp_path: Path, receiver: Receiver) -> None:
    """Alertmanager is down when the alert fires: each attempt is counted as a failure, and the alert
    is delivered once Alertmanager is up, without the stream ever waiting."""
    port = free_port()
    health = Health()
    sink = AlertmanagerSink(f"http://127.0.0.1:{port}", Severity.HIGH, max_backoff=1.0, health=health)
    server = Alertmanager(tmp_path / "alertmanager", alertmanager_test_config(receiver.url), port=port)

    def fail_then_start() -> None:
        wait_for("two failed attempts", lambda: health.sink_failures["alertmanager"] >= 2)
        server.start()

    try:
        run_sink(sink, [example_alerts()[CASE_ALERT]], until=lambda: sink.stats["sent"] == 1,
                 meanwhile=fail_then_start)  # fmt: skip
        assert set(by_id(server)) == {CASE_ALERT}
    finally:
        server.stop()
    assert health.sink_failures["alertmanager"] >= 2
    assert sink.stats["failures"] == health.sink_failures["alertmanager"]


def test_alert_resolves_after_resolve_after(alertmanager: Alertmanager, receiver: Receiver) -> None:
    sink = AlertmanagerSink(alertmanager.url, Severity.HIGH, resolve_after=2.0)
    run_sink(sink, [example_alerts()[HIGH_ALERT]], until=lambda: sink.stats["sent"] == 1)
    assert set(by_id(alertmanager)) == {HIGH_ALERT}
    wait_for("the alert to resolve", lambda: not by_id(alertmanager), timeout=15)

    def resolved() -> bool:
        return any(n["status"] == "resolved" and HIGH_ALERT in {a["labels"]["alert_id"] for a in n["alerts"]}
                   for n in receiver.received.get("/chat", []))  # fmt: skip

    wait_for("a resolved notification in chat", resolved, timeout=15)


def test_full_queue_drops_and_counts_without_blocking() -> None:
    alerts = example_alerts()
    health = Health()
    sink = AlertmanagerSink("http://127.0.0.1:9", Severity.HIGH, capacity=1, health=health)
    low = next(a for a in alerts.values() if a.severity == Severity.LOW)
    sink.deliver(low)  # below min severity: neither queued nor dropped
    sink.deliver(alerts[CASE_ALERT])
    sink.deliver(alerts[HIGH_ALERT])  # queue full
    assert sink.queue is not None and sink.queue.qsize() == 1
    assert health.sink_dropped["alertmanager"] == 1 and sink.stats["dropped"] == 1


def test_settings_wire_the_sink_and_shadow_alerts_skip_it() -> None:
    settings = Settings(alertmanager_url="http://am:9093/", alertmanager_min_severity="critical",
                        alertmanager_resolve_after_seconds=120)  # fmt: skip
    sinks = SinkSet.from_settings(settings, Health())
    sink = next(s for s in sinks.sinks if s.name == "alertmanager")
    assert isinstance(sink, AlertmanagerSink)
    assert sink.endpoint == "http://am:9093/api/v2/alerts"
    assert sink.min_severity == Severity.CRITICAL and sink.resolve_after == 120
    case = example_alerts()[CASE_ALERT]
    shadow = Alert.from_dict(case.to_dict() | {"mode": "shadow"})
    sinks.deliver(shadow)
    assert sink.queue is None or sink.queue.empty()
    sinks.deliver(case)
    assert sink.queue is not None and sink.queue.qsize() == 1
    assert Settings().alertmanager_url is None
    assert alerts_endpoint("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"


def test_payload_times() -> None:
    case = example_alerts()[CASE_ALERT]
    payload = to_alertmanager(case, resolve_after=600, now=1_700_000_000)
    assert payload["startsAt"] == iso(case.first_seen)
    assert payload["endsAt"] == iso(1_700_000_600)
    assert "endsAt" not in to_alertmanager(case, resolve_after=0)  # Alertmanager's resolve_timeout applies
    many = Alert.from_dict(case.to_dict() | {"event_ids": [f"ev-{i}" for i in range(80)]})
    assert to_alertmanager(many, 60)["annotations"]["event_ids"].endswith(",ev-49,… (+30)")


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
