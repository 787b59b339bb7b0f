"""Incidents over files: ``backtest --incidents FILE``, ``explain INCIDENT_ID``, the report's section.

``backtest --incidents`` writes each incident's final revision (the last ``IncidentUpdate`` the run
produced for it), one JSON object per line, ordered by first alert time then incident id: the same
log and configuration give the same bytes. Every revision is what the live path publishes; offline,
the final one is what an analyst reads.

An incident is explained as its alerts are: the log is replayed with the same rules and incident
configuration (incident ids are deterministic), then the incident's alerts are explained with
``explain``'s machinery and their events merged into one timeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import IO, Any

from streams.core.alerts import Alert, iso
from streams.core.incident_config import IncidentsConfig
from streams.core.incidents import Incident, IncidentEngine, IncidentUpdate
from streams.core.ruleset import RuleSet
from streams.core.scoring import Severity
from streams.offline.backtest import run_backtest
from streams.offline.explain import ExplainedEvent, Explanation, explain_ids
from streams.offline.explain_text import event_fields, offset_text, safe_text


def write_incidents(out: IO[str], incidents: Iterable[Incident]) -> int:
    count = 0
    for incident in incidents:
        out.write(incident.to_json() + "\n")
        count += 1
    return count


@dataclass(frozen=True)
class PageCount:
    """Pages without incidents (every live alert at or above the paging severity) and with them (an
    incident that reached it, plus the alerts of ``page: always`` rules at or above it)."""

    before: int
    incidents: int
    always: int

    @property
    def after(self) -> int:
        return self.incidents + self.always


def page_count(alerts: Sequence[Alert], updates: Sequence[IncidentUpdate], paging: Severity) -> PageCount:
    paging_alerts = [a for a in alerts if a.mode == "live" and a.severity >= paging]
    paged = {u.incident.incident_id for u in updates if u.pages}
    return PageCount(len(paging_alerts), len(paged), sum(1 for a in paging_alerts if a.page))


# -- explain ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentExplanation:
    incident: Incident
    explanations: list[Explanation]  # its alerts (the ids the incident lists), in event-time order

    def timeline(self) -> list[tuple[ExplainedEvent, list[str]]]:
        """Every event of its alerts once, in event time, with the rules of the alerts it contributed to."""
        rules: dict[str, list[str]] = {}
        events: dict[str, ExplainedEvent] = {}
        for ex in self.explanations:
            for event in ex.events:
                events.setdefault(event.event_id, event)
                if ex.alert.rule_id not in rules.setdefault(event.event_id, []):
                    rules[event.event_id].append(ex.alert.rule_id)
        order = sorted(events.values(), key=lambda e: (e.ts if e.ts is not None else float("inf"), e.event_id))
        return [(event, rules[event.event_id]) for event in order]


def find_incidents(ruleset: RuleSet, config: IncidentsConfig, paths: list[str], **options: Any) -> list[Incident]:
    """Every incident these rules and incident rules raise over ``paths`` (final revisions)."""
    return run_backtest(paths, ruleset, incidents=IncidentEngine(config), **options).incidents()


def explain_incident(incident: Incident, ruleset: RuleSet, paths: list[str], **options: Any) -> IncidentExplanation:
    explanations = explain_ids(ruleset, list(incident.alert_ids), paths, **options)
    explanations.sort(key=lambda ex: (ex.alert.last_seen, ex.alert.alert_id))
    return IncidentExplanation(incident, explanations)


def render_incident_text(ie: IncidentExplanation) -> str:
    incident = ie.incident
    timeline = ie.timeline()
    start = min([incident.first_seen, *(e.ts for e, _ in timeline if e.ts is not None)])
    lines = [
        f"incident {incident.incident_id}  {incident.severity.label.upper()}  score {incident.score}  "
        f"{incident.status}  revision {incident.revision}",
        f"  {safe_text(incident.summary, 600)}",
        f"  {safe_text(incident.kind)}: {safe_text(incident.value)}",
        f"  first alert {iso(incident.first_seen)}, last alert {iso(incident.last_seen)}",
        "",
        f"alerts ({incident.alert_count}" + (f", the first {len(incident.alert_ids)} listed)" if
                                             incident.alert_count > len(incident.alert_ids) else ")") + ":",
    ]  # fmt: skip
    for ex in ie.explanations:
        a = ex.alert
        when = f"{iso(a.last_seen)} {offset_text(a.last_seen, start) or '+0s':>8}"
        lines.append(f"  {when}  {a.severity.label:<8} {a.score:>3}  {a.rule_id:<24} {a.alert_id}")
        lines.append(f"{'':37}{safe_text(a.summary)}")
    lines += ["", "timeline (events of its alerts, in event time):"]
    for event, rules in timeline:
        when = f"{iso(event.ts)} {offset_text(event.ts, start) or '+0s':>8}" if event.ts is not None else "(not in log)"
        kind = event.view.get("event_type", "?") if event.view else "?"
        lines.append(f"  {when:>33}  {safe_text(event.event_id, 80)}  {safe_text(kind, 40)}  <- {', '.join(rules)}")
        if event.view:
            for label, text in event_fields(event.view)[:4]:
                lines.append(f"{'':37}{label}: {safe_text(text)}")
    lines += ["", "each alert's score, booster by booster: modwatch explain ALERT_ID --log ..."]
    return "\n".join(lines)


# -- the report's section -----------------------------------------------------------------------------

def incidents_html(incidents: Sequence[Incident], pages: PageCount | None) -> str:
    """The report's incidents section: a table of every incident (escaped: values come from events)."""
    e = lambda value: escape(str(value), quote=True)  # noqa: E731
    parts = [f'<h2 id="incidents">Incidents ({len(incidents)})</h2>']
    if pages is not None:
        parts.append(f'<p class="pages">pages: {pages.before} without incidents, {pages.after} with them '
                     f"({pages.incidents} incidents, {pages.always} alerts of page: always rules)</p>")  # fmt: skip
    if not incidents:
        parts.append("<p>no incidents</p>")
        return "".join(parts)
    parts.append("<table><thead><tr><th>severity</th><th>incident</th><th>risk object</th><th>score</th>"
                 "<th>alerts</th><th>rules</th><th>first alert</th><th>last alert</th><th>status</th></tr>"
                 "</thead><tbody>")  # fmt: skip
    for i in incidents:
        parts.append(
            f'<tr class="incident"><td><span class="sev {i.severity.label}">{i.severity.label}</span>'
            f"</td><td><code>{e(i.incident_id)}</code></td><td>{e(i.kind)}: {e(i.value)}</td><td>{i.score}</td>"
            f"<td>{i.alert_count}</td><td>{e(', '.join(i.rule_ids()))}</td><td>{e(iso(i.first_seen))}</td>"
            f"<td>{e(iso(i.last_seen))}</td><td>{e(i.status)}</td></tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)
