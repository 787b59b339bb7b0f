"""Every dashboard query and every alerting rule, evaluated by a real Prometheus over the metrics of a
backtest of examples/events.jsonl (``modwatch backtest --metrics FILE``, served over loopback HTTP and
scraped every second).

The textfile is served first with every sample at zero, then with the run's values, so counters grow
between scrapes as they would during the run, and rates and increases are the run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streams.cli.main import main as modwatch

from .servers import (
    REPO,
    Prometheus,
    Query,
    TextfileServer,
    dashboard_queries,
    has_data,
    load_dashboards,
    prometheus_config,
    rule_queries,
    wait_for,
)

EXAMPLE = REPO / "examples" / "events.jsonl"

# Rules with critical alerts in the example log (see `modwatch backtest examples/events.jsonl`).
CRITICAL_RULES = {"bulk_export", "cross_jurisdiction", "cumulative_exfiltration", "rapid_takedown",
                  "undocumented_action"}  # fmt: skip


@pytest.fixture(scope="module")
def backtest_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("backtest")
    code = modwatch(["backtest", str(EXAMPLE), "--output", str(out / "alerts.jsonl"), "--metrics",
                     str(out / "metrics.prom"), "--config", str(REPO / "config")])  # fmt: skip
    assert code == 0
    return (out / "metrics.prom").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def prometheus(backtest_metrics: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping the backtest's metrics: zero for a few scrapes, then the run's values."""
    with TextfileServer(backtest_metrics) as textfile:
        server = Prometheus(tmp_path_factory.mktemp("prometheus"), prometheus_config([textfile.target]))
        server.start()
        try:
            wait_for("two scrapes of the zeroed metrics",
                     lambda: server.query('count_over_time(modwatch_alerts_total{rule="bulk_export"}[1m])')
                     and textfile.scrapes >= 2)  # fmt: skip
            textfile.publish()
            scraped = textfile.scrapes
            wait_for("the run's metrics in Prometheus", lambda: server.query("sum(modwatch_alerts_total) > 0"))
            wait_for("two scrapes of the run's metrics", lambda: textfile.scrapes >= scraped + 2)
            yield server
        finally:
            server.stop()


def _evaluate(prometheus: Prometheus, query: Query) -> list[dict[str, Any]]:
    """Evaluate as Grafana would (instant, or a range over the last minute); Prometheus' own error
    message fails the test. Returns the result series."""
    if query.instant:
        return prometheus.query(query.expr)
    return prometheus.query_range(query.expr, seconds=60)


def test_every_dashboard_query_evaluates(prometheus: Prometheus) -> None:
    queries = dashboard_queries()
    assert len(queries) > 30
    failures, with_data = [], []
    for query in queries:
        try:
            if has_data(_evaluate(prometheus, query)):
                with_data.append(query.source)
        except AssertionError as exc:
            failures.append(f"{query.source}: {query.expr}\n  {exc}")
    assert not failures, "\n".join(failures)
    # A backtest has no live pipeline: its health panels (lag, commits, up...) are empty here and get
    # their data in test_live_stack.py.
    print(f"{len(queries)} dashboard queries evaluated, {len(with_data)} returned data")


def test_every_moderation_overview_panel_returns_data(prometheus: Prometheus) -> None:
    queries = dashboard_queries("moderation-overview.json")
    empty = [f"{q.source}: {q.expr}" for q in queries if not has_data(_evaluate(prometheus, q))]
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # Not just series, but the run's numbers: 600 events' worth of actions and alerts.
    actions = prometheus.query('sum(increase(modwatch_moderation_actions_total[10m]))')
    assert float(actions[0]["value"][1]) > 100
    share = next(q for q in queries if "Share crossing the requester's jurisdiction" in q.source)
    assert 0 < float(prometheus.query(share.expr)[0]["value"][1]) < 1


def test_variable_queries_list_values(prometheus: Prometheus) -> None:
    """The region and rule variables (``label_values(metric, label)``) have values to offer."""
    for name, dashboard in load_dashboards().items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            metric, label = variable["definition"].removeprefix("label_values(").removesuffix(")").split(", ")
            values = prometheus.api(f"label/{label}/values", **{"match[]": metric})
            assert values, f"{name}: variable {variable['name']} has no values"


def test_every_alerting_rule_evaluates(prometheus: Prometheus) -> None:
    queries = rule_queries()
    assert len(queries) >= 10
    with_data = sum(has_data(_evaluate(prometheus, query)) for query in queries)
    print(f"{len(queries)} alerting rule expressions evaluated, {with_data} returned data")
    # Prometheus itself loaded and evaluated every rule without error.
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r.get("health") == "ok" for r in rules) else None

    rules = wait_for("every rule evaluated with health ok", evaluated)
    assert {r["name"] for r in rules} == {q.source.removeprefix("alerts.yml: ") for q in queries}
    assert all(not r.get("lastError") for r in rules)


def test_incident_rules_fire_on_the_example(prometheus: Prometheus) -> None:
    """The aggregate incident rules fire for the case's critical patterns in the example log."""

    def firing() -> set[str]:
        alerts = prometheus.api("alerts")["alerts"]
        rules = {a["labels"]["rule"] for a in alerts
                 if a["labels"]["alertname"] == "ModwatchCriticalAlert" and a["state"] == "firing"}  # fmt: skip
        return rules if rules >= CRITICAL_RULES else set()

    assert wait_for("ModwatchCriticalAlert firing for every critical rule", firing) == CRITICAL_RULES
    high = [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "ModwatchHighAlertRate"]
    assert {a["labels"]["rule"] for a in high} == {"undocumented_action"}  # 4 high alerts, above the rate of 3
    # The pipeline's own alerts do not fire: ModwatchHeartbeatMissing (a backtest has no live worker)
    # is pending for its 5 minutes, and the others have no live metrics to fire on.
    pipeline = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]
                if a["labels"].get("component") == "pipeline" and a["state"] == "firing"}  # fmt: skip
    assert pipeline == set()

