"""The whole on-call path, live: a real ``modwatch worker`` (embedded broker) with the Alertmanager sink
enabled through its environment, a real Prometheus scraping the worker and evaluating the shipped
alerting rules, and a real Alertmanager running the shipped routing tree. The example log is replayed
into the worker; then

- every high and critical alert of the example is in Alertmanager, each with the labels of its
  incident, the case's critical ones routed to the pager;
- the Pipeline health panels have data from the live worker;
- Prometheus' aggregate ModwatchCriticalAlert reaches Alertmanager and is inhibited there by the
  incidents' own pages (the shipped inhibition of duplicates).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from streams.core.alerts import Alert
from streams.core.scoring import Severity
from streams.core.topology import input_key
from streams.tools.broker import EmbeddedBroker
from streams.tools.replay import replay

from ..worker_harness import WorkerProcess, worker_env
from .servers import (
    Alertmanager,
    Prometheus,
    Receiver,
    alertmanager_test_config,
    dashboard_queries,
    has_data,
    prometheus_config,
    wait_for,
)
from .test_alertmanager import CASE_ALERT, EXAMPLE, example_alerts, expected_labels

pytestmark = pytest.mark.broker

# Pipeline health panels that must show the live worker (the others count things that did not
# happen in this run: dead letters, rule errors, sink failures).
LIVE_PANELS = {"Worker up", "Uptime", "Consumer lag", "Since committed offsets last moved", "Throughput",
               "Input vs committed", "Consumer lag by topic", "Processing latency p50 / p99",
               "Late and duplicate events", "Rebalances", "State size", "Dead letters in range",
               "Sink failures in range"}  # fmt: skip


def test_live_worker_pages_alertmanager_and_feeds_prometheus(
    broker: EmbeddedBroker, unique_prefix: str, tmp_path: Path
) -> None:
    paged = {i: a for i, a in example_alerts().items() if a.severity >= Severity.HIGH}
    assert CASE_ALERT in paged and len(paged) >= 10
    with Receiver() as receiver:
        alertmanager = Alertmanager(tmp_path / "alertmanager", alertmanager_test_config(receiver.url))
        alertmanager.start()
        # Per-alert paging: this test follows every high and critical alert through the stack; one page
        # per incident (the default) is tests/observability/test_incident_pages.py's.
        env = worker_env(broker.bootstrap, unique_prefix, tmp_path, MODWATCH_ALERTMANAGER_URL=alertmanager.url,
                         MODWATCH_ALERTMANAGER_MIN_SEVERITY="high", MODWATCH_ALERTMANAGER_PAGING="alerts")  # fmt: skip
        worker = WorkerProcess(env, tmp_path / "worker.log")
        prometheus = Prometheus(tmp_path / "prometheus", prometheus_config(
            [f"127.0.0.1:{env['MODWATCH_METRICS_PORT']}"], alertmanager=f"127.0.0.1:{alertmanager.port}"))
        try:
            prometheus.start()
            worker.start()
            wait_for("the worker's metrics in Prometheus", lambda: prometheus.query('up{job="modwatch"} == 1'),
                     timeout=60)  # fmt: skip
            stats = replay([str(EXAMPLE)], broker.bootstrap, lambda _t: f"{unique_prefix}.events", input_key,
                           out=io.StringIO())  # fmt: skip
            assert stats.rejected_total == 0

            def incidents() -> dict[str, dict[str, Any]] | None:
                got = {a["labels"]["alert_id"]: a for a in alertmanager.alerts(source="modwatch")}
                return got if set(got) >= set(paged) else None

            got = wait_for("every high and critical alert in Alertmanager", incidents, timeout=120)
            assert worker.alive(), worker.log_tail()
            _check_incidents(got, paged)
            _check_pipeline_panels(prometheus)
            _check_inhibition(alertmanager)
        except BaseException:
            print(f"--- worker log ---\n{worker.log_tail()}\n--- prometheus ---\n{prometheus.log_tail()}\n"
                  f"--- alertmanager ---\n{alertmanager.log_tail()}")  # fmt: skip
            raise
        finally:
            worker.stop()
            prometheus.stop()
            alertmanager.stop()


def _check_incidents(got: dict[str, dict[str, Any]], paged: dict[str, Alert]) -> None:
    assert set(got) == set(paged)  # nothing below high, nothing twice
    for alert_id, alert in paged.items():
        assert got[alert_id]["labels"] == expected_labels(alert), alert_id
        assert got[alert_id]["annotations"]["summary"] == alert.summary
        receivers = {r["name"] for r in got[alert_id]["receivers"]}
        assert receivers == ({"pager", "chat"} if alert.severity == Severity.CRITICAL else {"chat"}), alert_id
    case = got[CASE_ALERT]["labels"]
    print("case alert labels in Alertmanager:", case)
    assert case["alertname"] == "rapid_takedown" and case["severity"] == "critical"
    assert (case["jurisdiction"], case["agency"], case["target_region"]) == ("CN", "Ministry of State Security", "US")


def _check_pipeline_panels(prometheus: Prometheus) -> None:
    queries = dashboard_queries("pipeline-health.json")

    def with_data() -> set[str] | None:
        titles = {q.source.split(": ", 1)[1].rsplit(" [", 1)[0] for q in queries
                  if has_data(prometheus.query(q.expr) if q.instant else prometheus.query_range(q.expr))}  # fmt: skip
        return titles if titles >= LIVE_PANELS else None

    # Lag, commits and state are sampled by the worker every 5 s.
    titles = wait_for("the live pipeline panels to have data", with_data, timeout=30, interval=1)
    print(f"pipeline-health: {len(queries)} queries, panels with data: {sorted(titles)}")
    firing = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]
              if a["labels"].get("component") == "pipeline" and a["state"] == "firing"}  # fmt: skip
    assert firing == set(), f"pipeline alerts firing on a healthy worker: {firing}"


def _check_inhibition(alertmanager: Alertmanager) -> None:
    def inhibited() -> list[dict[str, Any]] | None:
        aggregate = alertmanager.alerts(alertname="ModwatchCriticalAlert")
        return aggregate if aggregate and all(a["status"]["inhibitedBy"] for a in aggregate) else None

    aggregate = wait_for("ModwatchCriticalAlert from Prometheus, inhibited by the incidents", inhibited, timeout=30)
    assert {a["status"]["state"] for a in aggregate} == {"suppressed"}
    assert "rapid_takedown" in {a["labels"]["rule"] for a in aggregate}
