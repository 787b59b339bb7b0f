"""Explanations as text for a terminal (``modwatch explain``, ``backtest --explain``): the events
with their fields, the rule's condition, the score booster by booster. Every value that came from
an event is cleaned of control characters first (``safe_text``): events are written by the people
being watched, and a terminal obeys escape sequences."""

from __future__ import annotations

import re
from typing import Any

from streams.core.alerts import iso
from streams.core.rules.duration import format_duration
from streams.offline.explain import Explanation

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe_text(value: Any, limit: int = 300) -> str:
    """A value from an event as one printable line: control and bidi characters become ``?``, newlines
    spaces, and long text is cut."""
    text = _CONTROL.sub("?", str(value).replace("\n", " ").replace("\r", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _get(view: dict[str, Any], *path: str) -> Any:
    node: Any = view
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _join(values: Any, limit: int = 10) -> str:
    if not isinstance(values, list | tuple):
        return str(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" … (+{len(values) - limit})" if len(values) > limit else "")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _target_text(target: dict[str, Any]) -> str:
    text = f"{target.get('kind', '?')} {target.get('id', '?')} ({target.get('region', '?')})"
    if target.get("owner_id"):
        text += f" owner {target['owner_id']}"
    if target.get("tags"):
        text += f" tags {_join(target['tags'])}"
    return text


def event_fields(view: dict[str, Any]) -> list[tuple[str, str]]:
    """The contract fields of an event worth reading, as (label, text) pairs, in a fixed order. Shared by
    the text renderer and the HTML report (which escapes them)."""
    out: list[tuple[str, str]] = []
    actor = view.get("actor")
    if isinstance(actor, dict):
        text = f"{actor.get('id', '?')} ({actor.get('kind', '?')}, {actor.get('region', '?')}"
        text += f", {actor['role']})" if actor.get("role") else ")"
        if actor.get("created_at"):
            text += f" created {actor['created_at']}"
        out.append(("actor", text))
    requester = view.get("requester")
    if isinstance(requester, dict):
        out.append(("requester", f"{requester.get('agency', '?')} ({requester.get('kind', '?')}, "
                                 f"{requester.get('jurisdiction', '?')})"))  # fmt: skip
    if view.get("request_kind"):
        out.append(("request", str(view["request_kind"])))
    if view.get("confidential") is True:
        out.append(("confidential", "yes"))
    if view.get("deadline_seconds") is not None:
        out.append(("deadline", format_duration(float(view["deadline_seconds"]))))
    targets = view.get("targets")
    if isinstance(targets, list) and targets:
        shown = "; ".join(_target_text(t) for t in targets[:6] if isinstance(t, dict))
        out.append((f"targets ({len(targets)})", shown + (f"; … (+{len(targets) - 6})" if len(targets) > 6 else "")))
    target = view.get("target")
    if isinstance(target, dict):
        out.append(("target", _target_text(target)))
    if view.get("category"):
        out.append(("category", str(view["category"])))
    if view.get("record_count") is not None:
        out.append(("records", _count(view["record_count"])))
    if view.get("fields"):
        out.append(("fields", _join(view["fields"], 20)))
    regions = view.get("subject_regions")
    if isinstance(regions, dict) and regions:
        out.append(("data subjects", ", ".join(f"{k} {_count(v)}" for k, v in sorted(regions.items()))))
    destination = view.get("destination")
    if isinstance(destination, dict):
        out.append(("destination", f"{destination.get('kind', '?')} {destination.get('name', '?')} "
                                   f"({destination.get('region', '?')})"))  # fmt: skip
    grantee = view.get("grantee")
    if isinstance(grantee, dict):
        out.append(("grantee", f"{grantee.get('kind', '?')} {grantee.get('id', '?')} ({grantee.get('region', '?')})"))
    system = view.get("system")
    if isinstance(system, dict):
        out.append(("system", f"{system.get('id', '?')} ({system.get('region', '?')})"))
    if view.get("scope"):
        out.append(("scope", str(view["scope"])))
    if "remote" in view:
        out.append(("remote", "yes" if view["remote"] is True else "no"))
    if view.get("expires_at"):
        out.append(("expires", str(view["expires_at"])))
    if view.get("event_type") != "request.received" and view.get("request_id"):
        out.append(("cites request", str(view["request_id"])))
    elif view.get("request_id"):
        out.append(("request id", str(view["request_id"])))
    if view.get("ticket_id"):
        out.append(("ticket", str(view["ticket_id"])))
    elif view.get("event_type") not in ("request.received", "report.filed"):
        out.append(("ticket", "none"))
    if view.get("approved_by"):
        out.append(("approved by", str(view["approved_by"])))
    if view.get("reason"):
        out.append(("reason", str(view["reason"])))
    if view.get("tags"):
        out.append(("tags", _join(view["tags"])))
    return [(label, safe_text(text)) for label, text in out]


def fact_text(value: Any) -> str:
    """A rule's fact (a count, a total, a duration) as text: whole floats without their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def offset_text(ts: float, start: float) -> str:
    return "" if ts == start else "+" + format_duration(ts - start)


# -- the text renderer ------------------------------------------------------------------------------


def render_text(ex: Explanation) -> str:
    alert = ex.alert
    mode = "" if alert.mode == "live" else f"  [{alert.mode}: recorded, never paged]"
    lines = [
        f"alert {alert.alert_id}  {alert.rule_id}  {alert.severity.label} (score {alert.score}){mode}",
        f"  {safe_text(alert.title)}",
        f"  {safe_text(alert.summary, 1000)}",
        f"  group {safe_text(alert.group_key)}; first event {iso(alert.first_seen)}, fired at {iso(alert.last_seen)}",
        "",
        f"condition ({ex.kind}): {safe_text(ex.condition, 1000)}",
    ]
    if ex.description:
        lines.append(f"  {safe_text(ex.description, 1000)}")
    if ex.facts:
        lines.append("  found: " + ", ".join(f"{k} {safe_text(fact_text(v), 80)}" for k, v in ex.facts.items()))
    lines += ["", f"events ({len(ex.events)}), in event time:"]
    start = next((e.ts for e in ex.events if e.ts is not None), None)
    for n, event in enumerate(ex.events, start=1):
        if event.view is None or event.ts is None:
            lines.append(f"  {n}. {safe_text(event.event_id)}: not found in the log")
            continue
        offset = offset_text(event.ts, start) if start is not None else ""
        lines.append(f"  {n}. {iso(event.ts)} {offset:>7}  {safe_text(event.event_id)}  "
                     f"{safe_text(event.view.get('event_type', '?'))}")  # fmt: skip
        lines.extend(f"       {label:<14} {text}" for label, text in event_fields(event.view))
    base = f"base (rule {alert.rule_id})"
    total = "= score" + (f" ({ex.raw}, clamped to 0-100)" if ex.raw != ex.score else "")
    width = max(len(base), len(total), *(len(b.name) + 2 for b in ex.applied)) + 1
    lines += ["", "score:", f"  {base:<{width}} {ex.base:>4}"]
    for booster in ex.applied:
        lines.append(f"  {'+ ' + booster.name:<{width}} {booster.points:>+4}  {booster.description}")
    lines.append(f"  {total:<{width}} {ex.score:>4}  severity {ex.band_text()}")
    if ex.not_applied:
        lines.append("  not applying: " + ", ".join(f"{b.name} ({b.points:+d})" for b in ex.not_applied))
    if ex.excluded:
        lines.append("  not considered by this rule: " + ", ".join(ex.excluded))
    return "\n".join(lines)
