"""``modwatch backtest --report FILE``: one self-contained HTML file about a backtest.

Inline CSS and inline SVG drawn here, no script and nothing fetched: the file opens offline, in a
mail attachment or an evidence folder, and renders the same everywhere. Sections: totals, a timeline
of alerts by severity over the replayed period, alerts by rule, the request-to-action latency
distribution with the one-minute line, the top actors by score, the incidents (when the backtest ran
them) and the high and critical alerts with their explanations.

Everything that comes from events (ids, names, summaries, reasons) is untrusted and goes through
``html.escape``: the only markup in the file is written here.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from streams.core.alerts import Alert, iso
from streams.core.scoring import Severity
from streams.core.stats import LATENCY_BUCKETS, Histogram
from streams.offline.backtest import BacktestResult
from streams.offline.explain import Explanation
from streams.offline.explain_text import event_fields, fact_text, offset_text
from streams.offline.incidents import Incident, PageCount, incidents_html

SEVERITY_COLORS = {
    Severity.CRITICAL: "#b91c1c",
    Severity.HIGH: "#ea580c",
    Severity.MEDIUM: "#ca8a04",
    Severity.LOW: "#2563eb",
    Severity.INFO: "#94a3b8",
}
ORDER = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO)
MINUTE_COLOR = "#7c3aed"  # the one-minute line and the bars under it
SLOW_COLOR = "#64748b"


@dataclass
class ReportData:
    result: BacktestResult
    explanations: list[Explanation] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    config: str = ""
    period: tuple[float, float] | None = None  # first and last event time replayed
    title: str = "modwatch backtest report"
    incidents: list[Incident] | None = None  # with backtest --incidents: a section of them, and the pages
    pages: PageCount | None = None


def _e(value: object) -> str:
    return escape(str(value), quote=True)


# -- SVG primitives ------------------------------------------------------------------------------------


def _svg(chart_id: str, width: int, height: int, title: str, body: Iterable[str]) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _rect(x: float, y: float, w: float, h: float, color: str, tip: str = "", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    tooltip = f"<title>{_e(tip)}</title>" if tip else ""
    return (f'<rect{klass} x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{color}">{tooltip}</rect>')  # fmt: skip


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, color: str = "#334155",
          extra: str = "") -> str:  # fmt: skip
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{color}" text-anchor="{anchor}"{extra}>'
            f"{_e(text)}</text>")  # fmt: skip


def _line(x1: float, y1: float, x2: float, y2: float, color: str = "#cbd5e1", width: float = 1, extra: str = "") -> str:
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
            f'stroke-width="{width}"{extra}/>')  # fmt: skip


def _nice_max(value: float) -> int:
    """A round axis maximum at or above ``value`` whose quarters are whole numbers (four gridlines)."""
    quarter = max(value, 1) / 4
    magnitude = 10 ** max(0, math.floor(math.log10(quarter)))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        tick = step * magnitude
        if tick >= quarter and tick == int(tick):
            return int(4 * tick)
    return int(40 * magnitude)


def _y_axis(left: float, top: float, height: float, right: float, top_value: int) -> list[str]:
    out = []
    for i in range(5):
        value = top_value * i / 4
        y = top + height - height * i / 4
        out.append(_line(left, y, right, y))
        out.append(_text(left - 6, y + 4, f"{value:,.0f}", "end", 11))
    return out


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for label, color in items:
        out.append(_rect(x, y - 10, 12, 12, color))
        out.append(_text(x + 16, y, label, size=12))
        x += 24 + 7.5 * len(label)
    return out


def _empty(chart_id: str, title: str, message: str) -> str:
    return _svg(chart_id, 960, 80, title, [_text(480, 45, message, "middle", 14, "#64748b")])


# -- charts ---------------------------------------------------------------------------------------------

_STEPS = ((3600, "hour"), (6 * 3600, "6 hours"), (86400, "day"), (7 * 86400, "week"), (30 * 86400, "30 days"))


def _bucket_size(span: float) -> tuple[int, str]:
    for size, name in _STEPS:
        if span / size <= 90:
            return size, name
    return math.ceil(span / 90 / 86400) * 86400, "period"


def timeline_chart(alerts: Sequence[Alert], period: tuple[float, float] | None) -> str:
    title = "Alerts over the replayed period, by severity"
    if not alerts:
        return _empty("chart-timeline", title, "no alerts in the replayed period")
    lo = min(a.last_seen for a in alerts)
    hi = max(a.last_seen for a in alerts)
    if period is not None:
        lo, hi = min(lo, period[0]), max(hi, period[1])
    size, unit = _bucket_size(max(hi - lo, 1.0))
    start = math.floor(lo / size) * size
    count = int((hi - start) // size) + 1
    bins: list[Counter[Severity]] = [Counter() for _ in range(count)]
    for alert in alerts:
        bins[int((alert.last_seen - start) // size)][alert.severity] += 1
    width, height, left, top, plot_h = 960, 300, 50, 30, 200
    plot_w = width - left - 20
    top_value = _nice_max(max(sum(b.values()) for b in bins))
    bar_w = plot_w / count
    body = _y_axis(left, top, plot_h, left + plot_w, top_value)
    for i, counts in enumerate(bins):
        x, y = left + i * bar_w, float(top + plot_h)
        when = datetime.fromtimestamp(start + i * size, UTC).strftime("%Y-%m-%d %H:%M")
        for severity in reversed(ORDER):  # info at the bottom, critical on top
            n = counts[severity]
            if not n:
                continue
            h = plot_h * n / top_value
            y -= h
            body.append(_rect(x + 0.5, y, max(bar_w - 1, 1), h, SEVERITY_COLORS[severity],
                              f"{when} UTC: {n} {severity.label}", f"bar sev-{severity.label}"))  # fmt: skip
    label_every = max(1, math.ceil(count / 10))
    fmt = "%m-%d %H:%M" if size < 86400 else "%Y-%m-%d"
    for i in range(0, count, label_every):
        x = left + i * bar_w
        if x > left + plot_w - 60:  # a label there would run off the chart
            break
        body.append(_line(x, top + plot_h, x, top + plot_h + 4, "#94a3b8"))
        body.append(_text(x, top + plot_h + 18, datetime.fromtimestamp(start + i * size, UTC).strftime(fmt), size=11))
    body.append(_text(left, top - 12, f"alerts per {unit} (UTC)", size=12, color="#475569"))
    body += _legend(left, height - 20, [(s.label, SEVERITY_COLORS[s]) for s in ORDER])
    return _svg("chart-timeline", width, height, title, body)


def rules_chart(alerts: Sequence[Alert]) -> str:
    title = "Alerts by rule and severity"
    if not alerts:
        return _empty("chart-rules", title, "no alerts")
    by_rule: dict[str, Counter[Severity]] = {}
    shadow = {a.rule_id for a in alerts if a.mode == "shadow"}
    for alert in alerts:
        by_rule.setdefault(alert.rule_id, Counter())[alert.severity] += 1
    rows = sorted(by_rule.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    row_h, left, top, width = 26, 230, 10, 960
    plot_w = width - left - 60
    height = top + row_h * len(rows) + 40
    most = max(sum(c.values()) for _, c in rows)
    body = []
    for i, (rule_id, counts) in enumerate(rows):
        y = top + i * row_h
        label = rule_id + (" (shadow)" if rule_id in shadow else "")
        body.append(_text(left - 8, y + 16, label, "end", 12))
        x = float(left)
        for severity in ORDER:
            n = counts[severity]
            if n:
                w = plot_w * n / most
                body.append(_rect(x, y + 4, w, row_h - 8, SEVERITY_COLORS[severity],
                                  f"{rule_id}: {n} {severity.label}", f"bar sev-{severity.label}"))  # fmt: skip
                x += w
        body.append(_text(x + 6, y + 16, str(sum(counts.values())), size=12))
    body += _legend(left, height - 12, [(s.label, SEVERITY_COLORS[s]) for s in ORDER])
    return _svg("chart-rules", width, height, title, body)


def _short(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _latency_labels() -> list[str]:
    edges = [0.0, *LATENCY_BUCKETS]
    labels = [f"{_short(lo)}\u2013{_short(hi)}" for lo, hi in itertools.pairwise(edges)]
    labels[0] = f"≤{_short(LATENCY_BUCKETS[0])}"
    return [*labels, f">{_short(LATENCY_BUCKETS[-1])}"]


def latency_counts(result: BacktestResult) -> tuple[list[int], dict[str, list[int]], str]:
    """Request-to-action latency per bucket of ``LATENCY_BUCKETS``: overall, per requester jurisdiction,
    and where they come from. The engine's histograms (fed by an ``observe`` rule) when there are any;
    otherwise the latencies of the sequence alerts raised."""
    stats = result.engine.stats if result.engine is not None else None
    per: dict[str, list[int]] = {}
    if stats is not None and any(h.count for h in stats.request_latency.values()):
        for (jurisdiction, _kind), hist in sorted(stats.request_latency.items()):
            row = per.setdefault(jurisdiction, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, n in enumerate(hist.counts):
                row[i] += n
        source = "every action or export that answered a logged request (the engine's latency histogram)"
    else:
        for alert in result.alerts:
            seconds = alert.facts.get("latency_seconds")
            if isinstance(seconds, int | float):
                hist = Histogram(LATENCY_BUCKETS)
                hist.observe(float(seconds))
                row = per.setdefault(alert.labels.get("jurisdiction", "other"), [0] * (len(LATENCY_BUCKETS) + 1))
                for i, n in enumerate(hist.counts):
                    row[i] += n
        source = "the request-action pairs of the alerts raised (no latency observe rule in this rule set)"
    total = [sum(col) for col in zip(*per.values(), strict=True)] if per else [0] * (len(LATENCY_BUCKETS) + 1)
    return total, per, source


def latency_chart(counts: list[int]) -> str:
    title = "Request-to-action latency, with the one-minute line"
    if not sum(counts):
        return _empty("chart-latency", title, "no request-to-action latencies observed")
    labels = _latency_labels()
    width, height, left, top, plot_h = 960, 300, 50, 30, 200
    plot_w = width - left - 20
    top_value = _nice_max(max(counts))
    bar_w = plot_w / len(counts)
    minute = LATENCY_BUCKETS.index(60.0) + 1  # bars before this one are at most a minute
    body = _y_axis(left, top, plot_h, left + plot_w, top_value)
    for i, n in enumerate(counts):
        x = left + i * bar_w
        h = plot_h * n / top_value
        color = MINUTE_COLOR if i < minute else SLOW_COLOR
        cls = "bar within-minute" if i < minute else "bar"
        body.append(_rect(x + 4, top + plot_h - h, bar_w - 8, h, color, f"{labels[i]}: {n}", cls))
        if n:
            body.append(_text(x + bar_w / 2, top + plot_h - h - 4, str(n), "middle", 11))
        body.append(_text(x + bar_w / 2, top + plot_h + 16, labels[i], "middle", 11))
    x = left + minute * bar_w
    body.append(_line(x, top - 10, x, top + plot_h + 24, MINUTE_COLOR, 2, ' stroke-dasharray="6 4" id="minute-line"'))
    body.append(_text(x + 6, top, "one minute", size=12, color=MINUTE_COLOR, extra=' font-weight="bold"'))
    within = sum(counts[:minute])
    body.append(_text(left, height - 20, f"{within} of {sum(counts)} within one minute of the request", size=12))
    return _svg("chart-latency", width, height, title, body)


@dataclass
class ActorRow:
    actor_id: str
    score: int
    alerts: int
    worst: Severity
    rules: list[str]


def top_actors(alerts: Sequence[Alert], limit: int = 10) -> list[ActorRow]:
    """Actors by the sum of their alerts' scores."""
    rows: dict[str, ActorRow] = {}
    for alert in alerts:
        if not alert.actor_id:
            continue
        row = rows.get(alert.actor_id)
        if row is None:
            row = rows[alert.actor_id] = ActorRow(alert.actor_id, 0, 0, Severity.INFO, [])
        row.score += alert.score
        row.alerts += 1
        row.worst = max(row.worst, alert.severity)
        if alert.rule_id not in row.rules:
            row.rules.append(alert.rule_id)
    return sorted(rows.values(), key=lambda r: (-r.score, r.actor_id))[:limit]


def actors_chart(rows: list[ActorRow]) -> str:
    title = "Top actors by total alert score"
    if not rows:
        return _empty("chart-actors", title, "no alerts name an actor")
    row_h, left, top, width = 26, 230, 10, 960
    plot_w = width - left - 80
    height = top + row_h * len(rows) + 14
    most = max(r.score for r in rows) or 1
    body = []
    for i, row in enumerate(rows):
        y = top + i * row_h
        body.append(_text(left - 8, y + 16, row.actor_id[:32], "end", 12))
        w = plot_w * row.score / most
        body.append(_rect(left, y + 4, w, row_h - 8, SEVERITY_COLORS[row.worst],
                          f"{row.actor_id}: {row.score} over {row.alerts} alert(s)", f"bar sev-{row.worst.label}"))
        body.append(_text(left + w + 6, y + 16, f"{row.score} ({row.alerts})", size=12))
    return _svg("chart-actors", width, height, title, body)


# -- HTML -------------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#0f172a;margin:0;
background:#f8fafc}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.meta{color:#475569;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}
.card.sev-critical b{color:#b91c1c}.card.sev-high b{color:#ea580c}
figure{background:#fff;border:1px solid #e2e8f0;border-radius:8px;margin:0 0 12px;padding:10px;overflow-x:auto}
figcaption{color:#475569;font-size:13px;margin-top:4px}
svg.chart{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e2e8f0;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9}
td.nw{white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.sev{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-weight:600}
.sev.critical{background:#b91c1c}.sev.high{background:#ea580c}.sev.medium{background:#ca8a04}
.sev.low{background:#2563eb}.sev.info{background:#94a3b8}
.mode{color:#7c3aed;font-weight:600}
details{margin:2px 0 6px}summary{cursor:pointer;color:#1d4ed8}
.why{background:#f8fafc;border-left:3px solid #cbd5e1;padding:6px 12px}
.why ol{margin:4px 0;padding-left:20px}
.why dl{display:grid;grid-template-columns:max-content 1fr;gap:0 12px;margin:2px 0}
.why dt{color:#64748b}.why dd{margin:0;word-break:break-word}
code{font-size:12px;word-break:break-word}
.score td{border:none;padding:1px 8px}
.off{color:#64748b}
"""


def _sev_badge(severity: Severity) -> str:
    return f'<span class="sev {severity.label}">{severity.label}</span>'


def explanation_html(ex: Explanation) -> str:
    out = ['<div class="why">', f"<p><b>Condition</b> ({_e(ex.kind)}): <code>{_e(ex.condition)}</code></p>"]
    if ex.description:
        out.append(f"<p>{_e(ex.description)}</p>")
    if ex.facts:
        out.append("<p><b>Found</b>: " + _e(", ".join(f"{k} {fact_text(v)}" for k, v in ex.facts.items())) + "</p>")
    out.append(f"<p><b>Events</b> ({len(ex.events)}), in event time:</p><ol>")
    start = next((e.ts for e in ex.events if e.ts is not None), None)
    for event in ex.events:
        if event.view is None or event.ts is None:
            out.append(f"<li><code>{_e(event.event_id)}</code>: not found in the log</li>")
            continue
        offset = offset_text(event.ts, start) if start is not None else ""
        out.append(f'<li><b>{_e(iso(event.ts))}</b> <span class="off">{_e(offset)}</span> '
                   f"<code>{_e(event.event_id)}</code> {_e(event.view.get('event_type', '?'))}<dl>")  # fmt: skip
        out.extend(f"<dt>{_e(label)}</dt><dd>{_e(text)}</dd>" for label, text in event_fields(event.view))
        out.append("</dl></li>")
    out.append('</ol><p><b>Score</b></p><table class="score">')
    out.append(f'<tr><td>base (rule {_e(ex.alert.rule_id)})</td><td class="num">{ex.base}</td><td></td></tr>')
    for b in ex.applied:
        out.append(f'<tr><td>+ {_e(b.name)}</td><td class="num">{b.points:+d}</td><td>{_e(b.description)}</td></tr>')
    clamp = f" ({ex.raw}, clamped to 0-100)" if ex.raw != ex.score else ""
    out.append(f'<tr><td><b>= score{clamp}</b></td><td class="num"><b>{ex.score}</b></td>'
               f"<td>{_sev_badge(ex.severity)} {_e(ex.band_text())}</td></tr></table>")  # fmt: skip
    if ex.not_applied:
        out.append("<p>Not applying: " + _e(", ".join(f"{b.name} ({b.points:+d})" for b in ex.not_applied)) + "</p>")
    out.append("</div>")
    return "".join(out)


def _cards(data: ReportData) -> str:
    result = data.result
    stats = result.engine.stats if result.engine is not None else None
    by_sev = Counter(a.severity for a in result.alerts)
    shadow = sum(1 for a in result.alerts if a.mode == "shadow")
    cards = [
        ("events read", f"{result.read:,}", ""),
        ("rejected", f"{sum(result.rejected.values()):,}", ""),
        ("late", f"{stats.late:,}" if stats else "0", ""),
        ("alerts", f"{len(result.alerts):,}", ""),
        ("critical", f"{by_sev[Severity.CRITICAL]:,}", "sev-critical"),
        ("high", f"{by_sev[Severity.HIGH]:,}", "sev-high"),
        ("shadow", f"{shadow:,}", ""),
        ("suppressed repeats", f"{sum(stats.suppressed.values()):,}" if stats else "0", ""),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card {cls}"><b>{_e(value)}</b>{_e(label)}</div>' for label, value, cls in cards
    ) + "</div>"


def _latency_table(per: dict[str, list[int]]) -> str:
    minute = LATENCY_BUCKETS.index(60.0) + 1
    rows = "".join(
        f'<tr><td>{_e(j)}</td><td class="num">{sum(c)}</td><td class="num">{sum(c[:minute])}</td>'
        f'<td class="num">{100 * sum(c[:minute]) / sum(c):.0f}%</td></tr>'
        for j, c in sorted(per.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
        if sum(c)
    )
    if not rows:
        return ""
    return ("<table><tr><th>requester jurisdiction</th><th>answered</th><th>within one minute</th><th>share</th></tr>"
            f"{rows}</table>")  # fmt: skip


def _alert_table(alerts: Sequence[Alert], explanations: dict[str, Explanation]) -> str:
    if not alerts:
        return "<p>No high or critical alerts.</p>"
    out = ['<table id="alerts"><tr><th>fired (UTC)</th><th>severity</th><th>score</th><th>rule</th><th>actor</th>'
           "<th>summary</th></tr>"]  # fmt: skip
    for alert in alerts:
        mode = "" if alert.mode == "live" else f' <span class="mode">{_e(alert.mode)}</span>'
        out.append(
            f'<tr class="alert sev-{alert.severity.label}" data-alert-id="{_e(alert.alert_id)}">'
            f'<td class="nw">{_e(iso(alert.last_seen))}</td><td class="nw">{_sev_badge(alert.severity)}{mode}</td>'
            f'<td class="num">{alert.score}</td><td>{_e(alert.rule_id)}</td>'
            f'<td class="nw">{_e(alert.actor_id or "")}</td>'
            f"<td>{_e(alert.summary)}</td></tr>"
        )
        ex = explanations.get(alert.alert_id)
        body = explanation_html(ex) if ex is not None else "<p>(no explanation recorded)</p>"
        out.append(f'<tr class="explain"><td></td><td colspan="5"><details><summary>why: alert '
                   f"<code>{_e(alert.alert_id)}</code></summary>{body}</details></td></tr>")  # fmt: skip
    out.append("</table>")
    return "".join(out)


def _actor_table(rows: str) -> str:
    if not rows:
        return ""
    head = "<tr><th>actor</th><th>total score</th><th>alerts</th><th>worst</th><th>rules</th></tr>"
    return f'<table id="actor-table">{head}{rows}</table>'


def render_report(data: ReportData) -> str:
    """The whole report as one HTML document (deterministic for the same input)."""
    alerts = sorted(data.result.alerts, key=lambda a: (a.last_seen, a.rule_id, a.alert_id))
    serious = [a for a in alerts if a.severity >= Severity.HIGH]
    explanations = {ex.alert.alert_id: ex for ex in data.explanations}
    total, per, source = latency_counts(data.result)
    actors = top_actors(alerts)
    period = ""
    if data.period is not None:
        period = f"{iso(data.period[0])} to {iso(data.period[1])}"
    actor_rows = "".join(
        f'<tr><td>{_e(r.actor_id)}</td><td class="num">{r.score}</td><td class="num">{r.alerts}</td>'
        f"<td>{_sev_badge(r.worst)}</td><td>{_e(', '.join(r.rules))}</td></tr>"
        for r in actors
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network: nothing may be loaded from anywhere, not even by an injected tag.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">",
        f"<title>{_e(data.title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="meta">logs: {_e(", ".join(data.logs) or "?")} · rules: {_e(data.config or "?")}'
        + (f" · events from {_e(period)}" if period else "")
        + "</p>",
        _cards(data),
        '<h2 id="timeline">Alerts over time</h2><figure>',
        timeline_chart(alerts, data.period),
        "<figcaption>Each bar is one period of event time; colours are severities. Shadow-mode alerts are "
        "included (they are recorded, never paged).</figcaption></figure>",
        '<h2 id="by-rule">Alerts by rule</h2><figure>',
        rules_chart(alerts),
        "</figure>",
        '<h2 id="latency">Request-to-action latency</h2><figure>',
        latency_chart(total),
        f"<figcaption>From {_e(source)}. Bars left of the dashed line were acted on within one minute of the "
        "request: the “one minute processing requirement”.</figcaption>",
        _latency_table(per),
        "</figure>",
        '<h2 id="actors">Top actors by score</h2><figure>',
        actors_chart(actors),
        "<figcaption>Sum of the scores of the alerts naming the actor; colour is the worst severity.</figcaption>",
        _actor_table(actor_rows),
        "</figure>",
        incidents_html(data.incidents, data.pages) if data.incidents is not None else "",
        f'<h2 id="serious">High and critical alerts ({len(serious)})</h2>',
        _alert_table(serious, explanations),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(path: str | Path, data: ReportData) -> None:
    Path(path).write_text(render_report(data), encoding="utf-8")
