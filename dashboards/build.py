"""Generate the Grafana dashboards in this folder: ``python dashboards/build.py``.

The committed JSON files are what users import (or what the compose stack provisions); this script is
how they are kept correct: one place for the datasource reference, units, thresholds and layout, so
panels never overlap and every query uses the metric names of ``streams/outputs/metrics.py``.
``tests/observability/test_dashboards.py`` fails when the committed JSON differs from this output,
and evaluates every query against a real Prometheus.

Grafana variables in the queries: ``$region`` and ``$rule`` (multi-value, All = ``.*``),
``$__rate_interval`` and ``$__range``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
# Where the compose stack's Alertmanager shows modwatch's alerts.
ALERTMANAGER_UI = "http://localhost:9093/#/alerts?silenced=false&inhibited=false&filter=%7Bsource%3D%22modwatch%22%7D"
ONE_MINUTE = 60  # the "one minute processing requirement" of the case

Panel = dict[str, Any]

# Severity colours shared by every panel that splits by severity.
SEVERITY_COLOURS = {"critical": "dark-red", "high": "orange", "medium": "yellow", "low": "blue", "info": "text"}


class Grid:
    """Places panels left to right in rows of 24 columns; a row panel or a too-wide panel starts a new line."""

    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self.x = 0
        self.y = 0
        self.line_height = 0

    def _newline(self) -> None:
        self.y += self.line_height
        self.x = 0
        self.line_height = 0

    def row(self, title: str) -> None:
        if self.x:
            self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})  # fmt: skip
        self.y += 1

    def add(self, panel: Panel, w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def numbered(self) -> list[Panel]:
        return [{"id": index, **panel} for index, panel in enumerate(self.panels, start=1)]


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> Panel:
    return {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "editorMode": "code",
    }


def thresholds(*steps: tuple[float | None, str]) -> Panel:
    return {"mode": "absolute", "steps": [{"value": value, "color": colour} for value, colour in steps]}


GREEN = thresholds((None, "green"))


def severity_overrides() -> list[Panel]:
    return [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}],
        }
        for name, colour in SEVERITY_COLOURS.items()
    ]


def timeseries(title: str, description: str, targets: list[Panel], unit: str, *, stack: bool = False,
               steps: Panel = GREEN, line: bool = False, overrides: list[Panel] | None = None,
               axis: str = "") -> Panel:  # fmt: skip
    """A time series; ``line`` draws the thresholds as lines (the one-minute requirement, a lag limit)."""
    custom: Panel = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 25 if stack else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line" if line else "off"},
        "axisSoftMin": 0,
        "axisLabel": axis,
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "color": {"mode": "palette-classic"}, "custom": custom, "thresholds": steps},
            "overrides": overrides or [],
        },
        "options": {
            "legend": {
                "displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"], "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }  # fmt: skip


def stat(title: str, description: str, targets: list[Panel], unit: str, steps: Panel = GREEN,
         decimals: int | None = None, colour_mode: str = "background", mappings: list[Panel] | None = None,
         ) -> Panel:  # fmt: skip
    defaults: Panel = {"unit": unit, "thresholds": steps, "color": {"mode": "thresholds"}, "mappings": mappings or []}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": colour_mode,
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        },
    }


def bargauge(title: str, description: str, targets: list[Panel], unit: str, steps: Panel = GREEN,
             overrides: list[Panel] | None = None) -> Panel:  # fmt: skip
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "min": 0, "thresholds": steps, "color": {"mode": "thresholds"}},
            "overrides": overrides or [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
            "valueMode": "color",
        },
    }


def table(title: str, description: str, targets: list[Panel], unit: str, rename: dict[str, str],
          overrides: list[Panel] | None = None) -> Panel:  # fmt: skip
    """A table of instant queries; several queries are merged into one row per label set."""
    merge = [{"id": "merge", "options": {}}] if len(targets) > 1 else []
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": GREEN, "custom": {"align": "auto"}},
            "overrides": overrides or [],
        },
        "options": {"showHeader": True},
        "transformations": [
            *merge,
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": rename}},
        ],
    }


def heatmap(title: str, description: str, targets: list[Panel], unit: str) -> Panel:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5, "fill": "dark-orange"},
            "yAxis": {"axisPlacement": "left", "unit": unit},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        },
    }


def text(title: str, content: str) -> Panel:
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": content}}


def variables(region_metric: str, region_label: str) -> list[Panel]:
    def query(name: str, label: str, definition: str) -> Panel:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "definition": definition,
            "query": {"query": definition, "refId": f"{name}-values"},
            "refresh": 2,  # on time range change: new regions and rules appear without a reload
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "regex": "",
            "sort": 1,
            "hide": 0,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "options": [],
            "regex": "",
            "refresh": 1,
            "hide": 0,
            "includeAll": False,
            "multi": False,
        },
        query("region", "Region", f"label_values({region_metric}, {region_label})"),
        query("rule", "Rule", "label_values(modwatch_alerts_total, rule)"),
    ]


def dashboard(uid: str, title: str, description: str, grid: Grid, region: tuple[str, str], other: str) -> Panel:
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "title": other, "type": "dashboards", "tags": ["modwatch"], "asDropdown": False, "includeVars": True,
                "keepTime": True, "icon": "dashboard", "targetBlank": False, "url": "",
            },
        ],
        "liveNow": False,
        "panels": grid.numbered(),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["modwatch"],
        "templating": {"list": variables(*region)},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --- Moderation overview ----------------------------------------------------------------------------

ACTIONS = 'modwatch_moderation_actions_total{target_region=~"$region"}'
LATENCY = "modwatch_request_to_action_seconds"


def moderation_overview() -> Panel:
    g = Grid()
    g.row("Moderation actions")
    g.add(timeseries(
        "Actions by type", "Moderation actions (meeting shutdowns, suspensions, quarantines, terminations, removals) "
        "per minute, by action, in the selected target regions.",
        [target(f"sum by (action) (rate({ACTIONS}[$__rate_interval])) * 60", "{{action}}")], "opm", stack=True,
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Actions by target region", "Moderation actions per minute by the region of the account, meeting or "
        "content acted on (ISO code; anything unexpected is 'other').",
        [target(f"sum by (target_region) (rate({ACTIONS}[$__rate_interval])) * 60", "{{target_region}}")],
        "opm", stack=True,
    ), 12, 8)  # fmt: skip
    g.add(stat(
        "Actions in range", "All moderation actions in the selected regions and time range.",
        [target(f"sum(increase({ACTIONS}[$__range]))", instant=True)], "short", decimals=0, colour_mode="none",
    ), 6, 4)  # fmt: skip
    g.add(stat(
        "Fulfilling an external request", "Actions in range that carry or fulfil an external request "
        "(linked_request=yes).",
        [target('sum(increase(modwatch_moderation_actions_total{target_region=~"$region", linked_request="yes"}'
                "[$__range]))", instant=True)], "short", decimals=0, colour_mode="none",
    ), 6, 4)  # fmt: skip
    g.add(stat(
        "Request-linked, no ticket", "Actions in range that fulfil an external request and have no ticket: "
        "the 'outside normal procedures, no written record' pattern. Anything above zero deserves a look.",
        [target('sum(increase(modwatch_moderation_actions_total{target_region=~"$region", linked_request="yes", '
                'ticketed="no"}[$__range]))', instant=True)], "short",
        steps=thresholds((None, "green"), (1, "red")), decimals=0,
    ), 6, 4)  # fmt: skip
    g.add(stat(
        "Share crossing the requester's jurisdiction",
        "Approximation from the metrics modwatch exports: cross_jurisdiction incidents in range (alerts plus "
        "suppressed repeats, modwatch_alerts_total and modwatch_alerts_suppressed_total with "
        "rule=\"cross_jurisdiction\") divided by the moderation actions that fulfil an external request "
        "(modwatch_moderation_actions_total{linked_request=\"yes\"}). The numerator also counts data exports "
        "fulfilling a request, which the denominator does not, and the region filter does not apply to it: read "
        "it as an indicator, and open the cross_jurisdiction alerts for the incidents themselves.",
        [target(
            '(sum(increase(modwatch_alerts_total{rule="cross_jurisdiction"}[$__range])) '
            '+ (sum(increase(modwatch_alerts_suppressed_total{rule="cross_jurisdiction"}[$__range])) or vector(0))) '
            '/ clamp_min(sum(increase(modwatch_moderation_actions_total{linked_request="yes"}[$__range])), 1)',
            instant=True,
        )], "percentunit", steps=thresholds((None, "green"), (0.01, "orange"), (0.1, "red")), decimals=1,
    ), 6, 4)  # fmt: skip
    g.row("Requests: how fast, and for whom")
    g.add(timeseries(
        "Request → action latency (p50, p90, p99)",
        "Event time from an external request to the action or export fulfilling it, quantiles over all "
        "requesters. The red line is the one-minute requirement of the case: fulfilment below it, above all for "
        "a foreign government, is what rapid_takedown alerts on.",
        [
            target(f"histogram_quantile(0.5, sum by (le) (rate({LATENCY}_bucket[$__rate_interval])))", "p50", "A"),
            target(f"histogram_quantile(0.9, sum by (le) (rate({LATENCY}_bucket[$__rate_interval])))", "p90", "B"),
            target(f"histogram_quantile(0.99, sum by (le) (rate({LATENCY}_bucket[$__rate_interval])))", "p99", "C"),
        ],
        "s", steps=thresholds((None, "green"), (ONE_MINUTE, "red")), line=True,
    ), 12, 9)  # fmt: skip
    g.add(heatmap(
        "Request → action latency distribution",
        "Fulfilments per latency bucket (event time, request to action). The 60 s bucket boundary is the "
        "one-minute requirement; the buckets below it are the suspicious ones.",
        [target(f"sum by (le) (increase({LATENCY}_bucket[$__rate_interval]))", "{{le}}", fmt="heatmap")], "s",
    ), 12, 9)  # fmt: skip
    g.add(bargauge(
        "Fulfilled within a minute, by requester",
        "Requests fulfilled within 60 s in range, by requester jurisdiction and kind.",
        [target(f'sum by (jurisdiction, requester_kind) (increase({LATENCY}_bucket{{le="60.0"}}[$__range])) > 0',
                "{{jurisdiction}} {{requester_kind}}", instant=True)],
        "short", steps=thresholds((None, "green"), (1, "orange"), (5, "red")),
    ), 12, 8)  # fmt: skip
    g.add(table(
        "Requests fulfilled, by jurisdiction",
        "Per requester jurisdiction and kind: fulfilments in range, and the share done within one minute.",
        [
            target(f"sum by (jurisdiction, requester_kind) (increase({LATENCY}_count[$__range])) > 0", ref="A",
                   instant=True, fmt="table"),
            target(f'sum by (jurisdiction, requester_kind) (increase({LATENCY}_bucket{{le="60.0"}}[$__range])) '
                   f"/ (sum by (jurisdiction, requester_kind) (increase({LATENCY}_count[$__range])) > 0)", ref="B",
                   instant=True, fmt="table"),
        ],
        "short", {"jurisdiction": "Jurisdiction", "requester_kind": "Requester", "Value #A": "Fulfilled",
                  "Value #B": "Within 1 min"},
        overrides=[{"matcher": {"id": "byName", "options": "Within 1 min"},
                    "properties": [{"id": "unit", "value": "percentunit"}]}],
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Cross-jurisdiction incidents vs request-linked actions",
        "Per hour: cross_jurisdiction alerts and suppressed repeats (actions or exports reaching targets or data "
        "subjects outside the requester's jurisdiction) against all moderation actions fulfilling an external "
        "request. See the share above for what the ratio means.",
        [
            target('(sum(rate(modwatch_alerts_total{rule="cross_jurisdiction"}[$__rate_interval])) '
                   '+ (sum(rate(modwatch_alerts_suppressed_total{rule="cross_jurisdiction"}[$__rate_interval])) '
                   "or vector(0))) * 3600", "cross-jurisdiction", "A"),
            target('sum(rate(modwatch_moderation_actions_total{linked_request="yes"}[$__rate_interval])) * 3600',
                   "request-linked actions", "B"),
        ],
        "short", axis="per hour",
        overrides=[{"matcher": {"id": "byName", "options": "cross-jurisdiction"},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}],
    ), 24, 7)  # fmt: skip
    g.row("Data exports")
    g.add(timeseries(
        "Exported records by destination and personal data",
        "Records exported per minute, by destination kind (internal, data_subject, external, government) and "
        "whether the export carries personal fields.",
        [target("sum by (destination_kind, personal_data) (rate(modwatch_exported_records_total[$__rate_interval]))"
                " * 60", "{{destination_kind}} · personal {{personal_data}}")],
        "short", stack=True, axis="records / min",
    ), 12, 8)  # fmt: skip
    g.add(bargauge(
        "Records exported in range",
        "Records exported in the time range, by destination kind and personal data. Personal data going to "
        "external or government destinations is what bulk_export and cumulative_exfiltration watch.",
        [target("sum by (destination_kind, personal_data) (increase(modwatch_exported_records_total[$__range]))",
                "{{destination_kind}} · personal {{personal_data}}", instant=True)],
        "short",
    ), 6, 8)  # fmt: skip
    g.add(stat(
        "Personal data to external or government",
        "Records with personal fields exported to external or government destinations in range.",
        [target('sum(increase(modwatch_exported_records_total{personal_data="yes", '
                'destination_kind=~"external|government"}[$__range]))', instant=True)],
        "short", steps=thresholds((None, "green"), (1000, "orange"), (10000, "red")), decimals=0,
    ), 6, 8)  # fmt: skip
    g.row("Alerts")
    g.add(timeseries(
        "Alerts by severity", "Alerts raised per hour by severity, for the selected rules (repeats of an open "
        "incident are suppressed and not counted here).",
        [target('sum by (severity) (rate(modwatch_alerts_total{rule=~"$rule"}[$__rate_interval])) * 3600',
                "{{severity}}")],
        "short", stack=True, overrides=severity_overrides(), axis="alerts / hour",
    ), 12, 8)  # fmt: skip
    g.add(bargauge(
        "Alerts by rule and severity in range", "Alerts raised in the time range, per rule and severity.",
        [target('sum by (rule, severity) (increase(modwatch_alerts_total{rule=~"$rule"}[$__range])) > 0',
                "{{rule}} · {{severity}}", instant=True)],
        "short",
    ), 12, 8)  # fmt: skip
    g.add(table(
        "High and critical alerts by rule",
        "Count of high and critical alerts in range, and repeats suppressed. The incidents themselves (summary, "
        "event ids) are in Alertmanager and the alerts topic: see the panel to the right.",
        [target('sum by (rule, severity) (increase(modwatch_alerts_total{rule=~"$rule", severity=~"high|critical"}'
                "[$__range])) > 0", instant=True, fmt="table")],
        "short", {"rule": "Rule", "severity": "Severity", "Value": "Alerts"},
    ), 12, 8)  # fmt: skip
    g.add(bargauge(
        "Open incidents by severity and risk object",
        "Incidents open now (streams/core/incidents.py: an actor's, a target owner's or a requester's alerts "
        "grouped into one page), by severity and risk object kind, from the worker running the incidents stage. "
        "Opened, updated and closed: modwatch_incidents_{opened,updated,closed}_total. 0 without a live worker.",
        [target("sum by (severity, risk_object) (modwatch_open_incidents) or on() vector(0)",
                "{{severity}} · {{risk_object}}", instant=True)],
        "short",
    ), 12, 8)  # fmt: skip
    g.add(text(
        "Latest high and critical alerts",
        "Prometheus holds counts, not incidents. The latest high and critical alerts, each with its summary, "
        "event ids and alert id, are in:\n\n"
        "- **Alertmanager** (the worker's Alertmanager sink): "
        f"[open alerts]({ALERTMANAGER_UI}) "
        "(compose stack; filter `severity=~\"high|critical\"`), or Grafana's *Alerting → Alert groups* "
        "with the provisioned *Alertmanager* data source.\n"
        "- **The alerts topic** `modwatch.alerts` (JSON, keyed by `alert_id`) and the `alerts_jsonl` file, "
        "if configured.\n\n"
        "Every alert id is deterministic: the same incident has the same id everywhere.",
    ), 12, 8)  # fmt: skip
    return dashboard(
        "modwatch-moderation-overview", "modwatch · Moderation overview",
        "Moderation actions, request-to-action latency, data exports and alerts, from modwatch's metrics.",
        g, ("modwatch_moderation_actions_total", "target_region"), "Pipeline health",
    )  # fmt: skip


# --- Pipeline health --------------------------------------------------------------------------------


def pipeline_health() -> Panel:
    g = Grid()
    g.row("Is it running?")
    g.add(stat(
        "Worker up", "Prometheus' scrape of the worker's /metrics (job=\"modwatch\"): 1 up, 0 down.",
        [target('min(up{job="modwatch"})', instant=True)], "none",
        steps=thresholds((None, "red"), (1, "green")),
        mappings=[{"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}],
    ), 4, 4)  # fmt: skip
    g.add(stat(
        "Uptime", "Time since the worker process started.",
        [target("time() - max(modwatch_start_time_seconds)", instant=True)], "s",
        steps=thresholds((None, "orange"), (300, "green")), colour_mode="none",
    ), 4, 4)  # fmt: skip
    g.add(stat(
        "Consumer lag", "Records on the input topics not yet committed by the worker (all input topics).",
        [target("sum(modwatch_consumer_lag)", instant=True)], "short",
        steps=thresholds((None, "green"), (1000, "orange"), (10000, "red")), decimals=0,
    ), 4, 4)  # fmt: skip
    g.add(stat(
        "Since committed offsets last moved", "Wall time since the committed offsets of the input topics last "
        "advanced. Long with lag above zero is a commit stall (ModwatchCommitStalled).",
        [target("time() - max(modwatch_last_commit_progress_timestamp_seconds)", instant=True)], "s",
        steps=thresholds((None, "green"), (120, "orange"), (300, "red")),
    ), 4, 4)  # fmt: skip
    g.add(stat(
        "Dead letters in range", "Records rejected to the dead-letter topic in range (all reasons).",
        [target("sum(increase(modwatch_dead_letters_total[$__range])) or vector(0)", instant=True)], "short",
        steps=thresholds((None, "green"), (1, "orange")), decimals=0,
    ), 4, 4)  # fmt: skip
    g.add(stat(
        "Sink failures in range", "Failed alert deliveries plus alerts dropped for a full buffer, all sinks.",
        [target("(sum(increase(modwatch_sink_failures_total[$__range])) or vector(0)) "
                "+ (sum(increase(modwatch_sink_dropped_total[$__range])) or vector(0))", instant=True)], "short",
        steps=thresholds((None, "green"), (1, "red")), decimals=0,
    ), 4, 4)  # fmt: skip
    g.row("Throughput and lag")
    g.add(timeseries(
        "Throughput", "Events evaluated per second, by event type, in the selected regions.",
        [target('sum by (event_type) (rate(modwatch_events_processed_total{region=~"$region"}[$__rate_interval]))',
                "{{event_type}}")], "ops", stack=True,
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Input vs committed", "Records per second arriving on each input topic (growth of the end offsets) "
        "and committed by the worker. Arrivals persistently above commits is growing lag.",
        [
            target("sum by (topic) (rate(modwatch_consumer_end_offset[$__rate_interval]))", "in {{topic}}", "A"),
            target("sum by (topic) (rate(modwatch_consumer_committed_offset[$__rate_interval]))",
                   "committed {{topic}}", "B"),
        ], "ops",
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Consumer lag by topic", "End offset minus committed offset per input topic. Orange line: 1,000 records, "
        "the level of the ModwatchConsumerLagGrowing alert.",
        [target("sum by (topic) (modwatch_consumer_lag)", "{{topic}}")], "short",
        steps=thresholds((None, "green"), (1000, "orange")), line=True,
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Processing latency p50 / p99", "Wall time from a record's arrival at the worker to its alerts. The goal is "
        "seconds (a sub-minute takedown must page within seconds); red line: 5 s.",
        [
            target("histogram_quantile(0.5, sum by (le) (rate(modwatch_processing_latency_seconds_bucket"
                   "[$__rate_interval])))", "p50", "A"),
            target("histogram_quantile(0.99, sum by (le) (rate(modwatch_processing_latency_seconds_bucket"
                   "[$__rate_interval])))", "p99", "B"),
        ], "s", steps=thresholds((None, "green"), (5, "red")), line=True,
    ), 12, 8)  # fmt: skip
    g.row("Errors and anomalies in the stream")
    g.add(timeseries(
        "Dead letters by reason", "Records rejected per minute, by reason (invalid_json, contract_violation, "
        "too_large...). Each keeps its original bytes on the dead-letter topic.",
        [target("sum by (reason) (rate(modwatch_dead_letters_total[$__rate_interval])) * 60", "{{reason}}")],
        "opm", stack=True,
    ), 8, 8)  # fmt: skip
    g.add(timeseries(
        "Late and duplicate events", "Events per minute older than the watermark (beyond the allowed lateness: "
        "counted, not evaluated) and redelivered events skipped.",
        [
            target("sum(rate(modwatch_late_events_total[$__rate_interval])) * 60", "late", "A"),
            target("sum(rate(modwatch_duplicate_events_total[$__rate_interval])) * 60", "duplicates", "B"),
        ], "opm",
    ), 8, 8)  # fmt: skip
    g.add(timeseries(
        "Rule errors", "Rule evaluation errors per minute, by rule (the event went on to the other rules; the "
        "worker log names the rule and event id).",
        [target('sum by (rule) (rate(modwatch_rule_errors_total{rule=~"$rule"}[$__rate_interval])) * 60',
                "{{rule}}")], "opm", steps=thresholds((None, "green"), (0.001, "red")),
    ), 8, 8)  # fmt: skip
    g.row("Consumer group, state and sinks")
    g.add(timeseries(
        "Rebalances", "Partition assignments the worker received, per 5 minutes. Frequent ones mean workers "
        "joining and leaving (crashes, session timeouts).",
        [target("sum(increase(modwatch_rebalances_total[5m]))", "assignments")], "short",
    ), 8, 8)  # fmt: skip
    g.add(timeseries(
        "State size", "Keys holding rule state, by rule, and keys waiting on an event-time deadline (timers). "
        "Bounded by the rules' windows: steady growth means the watermark is stuck.",
        [
            target('sum by (rule) (modwatch_state_keys{rule=~"$rule"})', "{{rule}}", "A"),
            target("sum(modwatch_timers)", "timers", "B"),
        ], "short", stack=False,
    ), 8, 8)  # fmt: skip
    g.add(timeseries(
        "Sink failures and drops", "Failed alert deliveries (each failed attempt, retried with backoff) and alerts "
        "dropped because a sink's buffer was full, per minute and sink (webhook, alertmanager).",
        [
            target("sum by (sink) (rate(modwatch_sink_failures_total[$__rate_interval])) * 60", "failed {{sink}}",
                   "A"),
            target("sum by (sink) (rate(modwatch_sink_dropped_total[$__rate_interval])) * 60", "dropped {{sink}}",
                   "B"),
        ], "opm", steps=thresholds((None, "green"), (0.001, "red")),
    ), 8, 8)  # fmt: skip
    g.add(timeseries(
        "State written to the changelog", "Bytes of rule state the worker writes to its changelog topic per "
        "second (a changed key at most twice per offset commit). A few busy keys holding many pending events "
        "can dominate it (at 2,000 events/s, three dataset keys were 88% of ~5 MB/s when they were written "
        "at every batch; 1.16 MB/s in all since 30 Nov 2026).",
        [target("sum(rate(modwatch_changelog_bytes_total[$__rate_interval]))", "bytes/s")], "Bps",
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "State bounds reached", "Events a sequence or absence rule stopped holding because a key already held "
        "100 (a sequence drops its oldest, an absence its newest), per minute and rule, and changed keys too "
        "big for a changelog record (not logged: a restart "
        "recovers their previous value).",
        [
            target('sum by (rule) (rate(modwatch_held_events_dropped_total{rule=~"$rule"}[$__rate_interval])) * 60',
                   "dropped {{rule}}", "A"),
            target("sum(rate(modwatch_state_unlogged_total[$__rate_interval])) * 60", "not logged", "B"),
        ], "opm", steps=thresholds((None, "green"), (0.001, "orange")),
    ), 12, 8)  # fmt: skip
    g.row("Inputs")
    g.add(timeseries(
        "Raw records normalized", "Contract events made per minute from each raw input's records (settings "
        "inputs: mapped by the input's mapping and enriched with the context tables in the routing stage).",
        [target("sum by (input) (rate(modwatch_input_events_normalized_total[$__rate_interval])) * 60",
                "{{input}}")], "opm", stack=True,
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Raw records dropped", "Raw records per minute whose action the mapping does not map (or drop_when "
        "matched), by input and source action ('other': an action the mapping does not name). Counted, not "
        "dead-lettered: a new action the platform started logging shows here first.",
        [target("sum by (input, action) (rate(modwatch_input_records_dropped_total[$__rate_interval])) * 60",
                "{{input}} {{action}}")], "opm", stack=True,
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Raw records rejected", "Raw records per minute that could not be mapped (no action or time, a failed "
        "conversion, not JSON...), by input and reason. Each is on the dead-letter topic with its original "
        "bytes: a mapping out of step with its source.",
        [target("sum by (input, reason) (rate(modwatch_input_records_rejected_total[$__rate_interval])) * 60",
                "{{input}} {{reason}}")], "opm", steps=thresholds((None, "green"), (0.001, "red")),
    ), 12, 8)  # fmt: skip
    g.add(timeseries(
        "Context misses", "Lookups in the context tables that failed per minute, by input and table (staff, "
        "accounts, geoip): the event goes on tagged context:unknown_*. A rise means a table out of date "
        "(modwatch context publish).",
        [target("sum by (input, table) (rate(modwatch_input_context_misses_total[$__rate_interval])) * 60",
                "{{input}} {{table}}")], "opm", steps=thresholds((None, "green"), (0.001, "orange")),
    ), 12, 8)  # fmt: skip
    return dashboard(
        "modwatch-pipeline-health", "modwatch · Pipeline health",
        "Is the modwatch worker running and keeping up: throughput, lag, commits, latency, dead letters, late "
        "events, rebalances, state size, sink failures, raw inputs.",
        g, ("modwatch_events_processed_total", "region"), "Moderation overview",
    )  # fmt: skip


DASHBOARDS = {"moderation-overview.json": moderation_overview, "pipeline-health.json": pipeline_health}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    stale = []
    for name, content in render().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(name)
        else:
            path.write_text(content, encoding="utf-8")
    if stale:
        print(f"out of date (run python dashboards/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
