"""Build docs/rules.md, the rules reference, from the code and the default configuration.

Types, defaults and bounds of every option come from the pydantic models of the rule kinds; event
types, operators, lists, boosters, bands and the default rules from the code and ``config/``. Only the
prose lives here: what an option means, and per default rule what it catches, its known false
positives and how to tune it. A missing piece of prose is an error, so a new option, operator or
default rule cannot ship undocumented; ``tests/test_rules_reference.py`` fails when the committed file
is stale.

    python docs/build_rules_reference.py            # rewrite docs/rules.md
    python docs/build_rules_reference.py --check    # exit 1 if docs/rules.md is not current
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streams.core.rules import RULE_KINDS, RuleConfig
from streams.core.rules.base import ACTION_TYPES, ALL_TYPES, EVENT_GROUPS, ScoreSpec, Selector
from streams.core.rules.duration import format_duration, parse_duration
from streams.core.rules.predicate import _OPS, Predicate
from streams.core.rules.sequence import JoinKey
from streams.core.rules.threshold import RESOLUTION, GroupKey
from streams.core.ruleset import _rule_adapter
from streams.core.scoring import Bands, BoosterConfig, ScoringConfig

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "rules.md"
CONFIG = ROOT / "config"

KIND_ORDER = ("match", "threshold", "cardinality", "sequence", "absence")

# -- prose: options -------------------------------------------------------------------------------------

COMMON_DOCS = {
    "id": "Unique rule id; part of every alert id, metric label and fixture. Renaming a rule changes its alert ids.",
    "kind": "The rule kind (a section below).",
    "title": "Short human title, copied into every alert.",
    "description": "What the rule looks for, in a sentence or two; shown by `modwatch explain`.",
    "summary": "The alert's sentence: a [template](#summary-templates) over the incident's fields and facts.",
    "score": "The rule's base score and the boosters it considers ([score](#score)).",
    "mode": "`live`: alerts go everywhere. `shadow`: alerts are recorded (backtest output, alert topic, JSONL, "
    "metrics) but never sent to paging sinks (webhook, Alertmanager). `observe`: no alerts at all; hits only feed "
    "the request-to-action latency histogram.",
    "enabled": "`false` keeps the rule in the file (validated) without running it.",
    "suppress": "How long repeats of an open incident under the same group key are suppressed and counted "
    "instead of raised. Default: the rule's window (`within`, `window`, `within + lookback`), or 1h for `match`. "
    "For `match` it is also the bucket of event time that makes one incident.",
    "page": "`always`: each alert at or above the paging severity pages on its own, as well as through its "
    "incident. `false` (the default): the rule's alerts page only through incidents ([incidents](incidents.md)).",
}

OPTION_DOCS: dict[tuple[str, str], str] = {
    ("match", "select"): "Which events match: event types and a predicate.",
    ("match", "group_by"): "Field path whose value keys the incident (first value if several); one alert per key "
    "and `suppress` bucket.",
    ("threshold", "select"): "Which events count.",
    ("threshold", "group_by"): "Group keys: each value of each path is its own counter (an event with two "
    "sensitive tags counts under both).",
    ("threshold", "window"): f"Sliding event-time window. State is {RESOLUTION} buckets per key, so the window is "
    f"exact to 1/{RESOLUTION} of its length.",
    ("threshold", "at_least"): "Fire when the window's total is at least this. Give exactly one of `at_least` and "
    "`above`.",
    ("threshold", "above"): "Fire when the window's total is strictly above this.",
    ("threshold", "aggregate"): "`count` counts events; `sum` adds up the numeric `field`.",
    ("threshold", "field"): "The numeric field summed when `aggregate: sum` (required then).",
    ("cardinality", "select"): "Which events count.",
    ("cardinality", "group_by"): "Group keys, as for `threshold`.",
    ("cardinality", "window"): "Sliding event-time window.",
    ("cardinality", "at_least"): "Fire when at least this many distinct values are seen in the window.",
    ("cardinality", "above"): "Fire when strictly more distinct values than this are seen.",
    ("cardinality", "field"): "The field whose distinct values are counted (all values of a list).",
    ("cardinality", "min_events"): "The window must also hold at least this many events (1: any number). Counted "
    "from the newest 50 events kept per key, hence the bound.",
    ("sequence", "first"): "The earlier event A (usually the external request).",
    ("sequence", "then"): "The later event B (the action or export).",
    ("sequence", "join"): "How A and B are joined, tried in order for B: the first join whose `then` path has a "
    "value is used; A is stored under every key it offers.",
    ("sequence", "within"): "B must come at most this long after A (in event time).",
    ("sequence", "max_fanout"): "At most this many keys are taken from one event (a request naming thousands of "
    "targets).",
    ("sequence", "where"): "A predicate over the pair: B is the current event, A is under `first.`.",
    ("sequence", "after_within"): "An A logged up to this long *after* B still pairs (a request written down "
    "after the action it asked for); 0: A must come first. The pair's latency is then negative and its "
    "`{order}` fact reads `request logged after the action`. A waiting B is held until event time passes "
    "B + `after_within` (plus the allowed lateness).",
    ("absence", "first"): "The event A that expects a companion.",
    ("absence", "then"): "The companion B whose absence is the finding.",
    ("absence", "join"): "How A and B are joined, as for `sequence`.",
    ("absence", "within"): "How long after A a B may still arrive; the alert fires when event time passes "
    "A + `within` (plus the allowed lateness).",
    ("absence", "max_fanout"): "As for `sequence`.",
    ("absence", "lookback"): "A B this long *before* A counts too (a request logged before the action citing it).",
}

BLOCK_DOCS: dict[tuple[str, str], str] = {
    ("selector", "events"): "Event types or groups (see [events](#events-and-groups)); at least one.",
    ("selector", "where"): "A [predicate](#the-predicate-language) the event must satisfy; absent: every event.",
    ("score", "base"): "The rule's base score, 0-100.",
    ("score", "boosters"): "`all`, or the names of the boosters from `scoring.yaml` this rule considers.",
    ("join key", "name"): "Name of the key (`request`, `target`): the prefix of the group key, e.g. `request=R-7`.",
    ("join key", "first"): "Path in A.",
    ("join key", "then"): "Path in B.",
    ("group key", "field"): "Path whose values are the keys.",
    ("group key", "in"): "Keep only these values (a list, or a `$list` name): e.g. only sensitive tags.",
    ("booster", "points"): "Added to the score when the condition holds (negative: a mitigation).",
    ("booster", "description"): "Why it matters; shown by `modwatch explain` and in the report.",
    ("booster", "when"): "A [predicate](#the-predicate-language) over the incident: the completing event, and the "
    "earlier event of a pair under `first.`.",
}

KIND_NOTES = {
    "match": "Late events still match. One incident per group key and `suppress`-long bucket of event time, so "
    "the alert id does not depend on which event of the bucket arrived first.",
    "threshold": "The bound is checked at every event, not when the window closes: a 30-day sum alerts at the "
    "event that takes it past the bound, with the total so far. "
    "Facts for the summary: `{total}`, `{count}`, `{window}`. The alert lists the window's events "
    "(the newest 50) and describes its newest event.",
    "cardinality": "Facts: `{distinct}`, `{count}` (the window's events, at most 50), `{window}`. The default "
    "`host_reports` uses it.",
    "sequence": "Order-insensitive within the allowed lateness: a B that arrives before its A waits. In event "
    "time A comes first, unless `after_within` lets an A logged shortly after B pair too. Facts: "
    "`{latency}` (e.g. `24s`; `-30s` for an A logged 30 s after B), `{latency_seconds}`, and `{order}` "
    "(only for such a pair). Placeholders under `first.` read A. A key holds at most 100 A events and 100 "
    "waiting B events, the newest by event time; the others are counted in "
    "`modwatch_held_events_dropped_total`.",
    "absence": "Fires from the watermark, never the wall clock: a replay of last year behaves as last year did. "
    "Facts: `{within}`. A key holds at most 100 A events, the oldest by event time (they fire first, and a B "
    "that cancels them cancels the later ones too); the others are counted in "
    "`modwatch_held_events_dropped_total`.",
}

KIND_EXAMPLES = {
    "match": """\
- id: unapproved_prod_grant
  kind: match
  title: Production access granted without approval
  select:
    events: [access.grant]
    where:
      all:
        - {field: scope, regex: "^prod"}
        - {field: approved_by, exists: false}
  group_by: grantee.id
  suppress: 12h
  score: {base: 40, boosters: [no_ticket, remote_access]}
  summary: "{actor.id} granted {grantee.id} {scope} access with no approver."
""",
    "threshold": """\
- id: mass_suspension
  kind: threshold
  title: One employee suspends many accounts
  select:
    events: [account.suspend, account.terminate]
    where: {field: actor.kind, eq: employee}
  group_by: [actor.id]
  window: 1h
  at_least: 50
  score: {base: 30}
  summary: "{actor.id} suspended {count} accounts within {window}."
""",
    "cardinality": """\
- id: many_regions_exported
  kind: cardinality
  title: One actor exports data about subjects in many regions
  select: {events: [data.export]}
  group_by: [actor.id]
  field: subject_regions.@keys
  window: 7d
  at_least: 10
  score: {base: 35}
  summary: "{actor.id} exported data about subjects in {distinct} regions within {window}."
""",
    "sequence": """\
- id: grant_then_export
  kind: sequence
  title: Export soon after being granted access
  first: {events: [access.grant]}
  then: {events: [data.export]}
  join:
    - {name: person, first: grantee.id, then: actor.id}
  within: 2h
  where: {field: record_count, gt: 1000}
  score: {base: 40}
  summary: "{actor.id} exported {record_count} records {latency} after {first.actor.id} granted access."
""",
    "absence": """\
- id: grant_without_revocation_request
  kind: absence
  title: Remote grant never followed by a ticketed action
  first:
    events: [access.grant]
    where: {field: remote, eq: true}
  then:
    events: [action]
    where: {field: ticket_id, exists: true}
  join:
    - {name: person, first: grantee.id, then: actor.id}
  within: 7d
  score: {base: 25}
  summary: "{grantee.id} got remote access to {system.id} and did no ticketed work within {within}."
""",
}

OP_DOCS = {
    "eq": ("`{field: actor.kind, eq: employee}`", "some value equals the scalar"),
    "ne": ("`{field: destination.kind, ne: internal}`", "some value differs from the scalar (a missing field "
           "satisfies nothing: use `not` + `eq` for \"is not X or is absent\")"),
    "in": ("`{field: fields, in: $personal_fields}`", "some value is in the list (inline, or a `$list` name)"),
    "not_in": ("`{field: target.tags, not_in: [spam]}`", "some value is not in the list"),
    "exists": ("`{field: ticket_id, exists: false}`", "the field has a value (`true`) or none (`false`)"),
    "gt": ("`{field: record_count, gt: 1000}`", "some numeric value is greater"),
    "gte": ("`{field: record_count, gte: 1000}`", "greater or equal"),
    "lt": ("`{field: deadline_seconds, lt: 300}`", "less"),
    "lte": ("`{field: deadline_seconds, lte: 60}`", "less or equal"),
    "regex": ("`{field: scope, regex: \"^prod\"}`", "some string value matches (search, not full match)"),
    "eq_field": ("`{field: target.region, eq_field: first.requester.jurisdiction}`",
                 "some value equals a value of the other field; both must be present"),
    "ne_field": ("`{field: target.region, ne_field: first.requester.jurisdiction}`",
                 "some value differs from every value of the other field; both must be present"),
    "age_lt": ("`{field: actor.created_at, age_lt: 7d}`",
               "the timestamp in the field is less than this long before the event"),
    "age_gt": ("`{field: actor.created_at, age_gt: 365d}`", "more than this long before the event"),
}

# -- prose: the default rules ------------------------------------------------------------------------------

RULE_NOTES: dict[str, dict[str, str]] = {
    "rapid_takedown": {
        "catches": "The \"one minute processing requirement\": authorities demanded that meetings or accounts be "
        "shut down within a minute of a directive. In the example log, the Ministry of State Security's "
        "confidential request `req-104ee2d` naming four Tiananmen-anniversary meetings (three US, one HK) and the "
        "liaison's shutdowns 24-48 s later score 45 + foreign requester 20 + confidential 10 + no ticket 15 + "
        "sensitive target 15 = critical. One alert per request: the other shutdowns and the two host suspensions "
        "under the same request within the window are counted as suppressed repeats (and raise their own "
        "`cross_jurisdiction`, `undocumented_action` and `takedown_burst` alerts).",
        "false_positives": "Fast, legitimate child-safety removals: a partner hotline (NCMEC in the US, the IWF in "
        "GB) reports abuse material and trust and safety removes it within seconds, ticketed and in the partner's "
        "own jurisdiction. These score 45 - 10 (ticketed) = 35, **low**: 11 such alerts on the example log, "
        "recorded but below a `high` paging threshold. Automated hash-match pipelines answering partner feeds "
        "look the same.",
        "tuning": "Keep `within: 60s`: it is the requirement itself. To silence partner removals entirely, add "
        "`where: {not: {field: first.requester.kind, eq: partner}}`, but check the effect with `modwatch rules "
        "diff` first: a government request routed through a \"partner\" would then be missed. Prefer leaving them "
        "low (they cost nothing if the webhook pages from `high`). `after_within: 5m` pairs a request logged "
        "after the action (acted on first, written down later; the alert's latency is negative); a request "
        "logged later than that is more likely another one, and the action then raises `unlogged_request`.",
    },
    "cross_jurisdiction": {
        "catches": "Actions against users outside the requester's jurisdiction: the US and Hong Kong hosts "
        "suspended on a Chinese request, the names and IP addresses of a 4,000-person meeting's participants "
        "(US, HK, GB...) handed to the Ministry of Public Security, and the ~23,000-account \"Xinjiang users\" "
        "spreadsheet that included global accounts (the example's `req-101da27` export: CN 15,000, US 3,000, "
        "5,000 other).",
        "false_positives": "Lawful cross-border requests: a court order under a mutual legal assistance treaty, "
        "or an international partner acting on content hosted elsewhere. Region attribution: `target.region` is "
        "where the platform places the target (hosting or billing region), which may not be where the user "
        "lives. One alert per request key for 30 days: later actions under the same request are counted, "
        "not raised again.",
        "tuning": "The `ticketed` (-10) and `lawful_in_jurisdiction` (-20) mitigations already lower documented "
        "work. To exclude courts, combine `where` with `all:`: `where: {all: [{any: [...as now...]}, {not: {field: "
        "first.requester.kind, eq: court}}]}`. "
        "`within: 30d` bounds how late a fulfilment can be tied to its request; shortening it misses slow "
        "hand-overs.",
    },
    "bulk_export": {
        "catches": "Bulk hand-overs of personal data: the ~23,000-account spreadsheet (critical, 90) and the "
        "4,000 participants' names and IP addresses (critical, 100), each in a single export.",
        "false_positives": "Internal analytics and ETL exports (usage tables to the warehouse: hundreds of "
        "thousands of records, no personal fields). They score 35 - 15 (internal non-personal) - 10 (ticketed) "
        "= 10, **info**: 22 on the example log, kept for the record and never paged. Exports to the data subject "
        "themselves are excluded by `where`.",
        "tuning": "`above` is the size that matters for one actor in `window`. Do not raise it past the exports "
        "you must catch: `modwatch rules diff` with `above: 30000` shows the Xinjiang spreadsheet (23,000) "
        "disappearing. To drop internal exports altogether: `select.where: {not: {field: destination.kind, in: "
        "[data_subject, internal]}}`.",
    },
    "cumulative_exfiltration": {
        "catches": "The slow version of the hand-overs: personal data leaving the company a few hundred records "
        "at a time. In the example log `emp-mk-004` sends 8 ticketed exports of 240-388 contact records to an "
        "external \"lead-broker\" over three weeks, never more than one a day: `bulk_export` never fires, the "
        "30-day total does (high). The large hand-overs also cross it (critical).",
        "false_positives": "A contracted processor receiving personal data routinely (payments, support "
        "tooling), and a legal team answering many lawful government requests within 30 days (the "
        "`lawful_in_jurisdiction` mitigation lowers those). `suppress: 30d` means one alert per actor per month.",
        "tuning": "Exclude known processors by name: add `{field: destination.name, not_in: $processors}` to "
        "`select.where.all`, with a `processors` list. Shorter `window` or higher `above` make the drip harder "
        "to see: this rule exists because each export is small.",
    },
    "undocumented_action": {
        "catches": "Requests kept \"outside normal company procedures and without written records\": moderation "
        "actions and exports with no ticket. In the example: the Christian group's account put into quarantine "
        "(high: no ticket + religious tag), the executive's shutdown after the fabricated reports, the "
        "Tiananmen shutdowns, the unticketed exports (critical with personal data to an external destination).",
        "false_positives": "Automated actors (`actor.kind: system`) that act on classifier verdicts without "
        "tickets, emergency actions ticketed afterwards, and producers that do not fill in `ticket_id` at all "
        "(a tooling gap that shows up as a flood from one team). Alone it is medium (30 + 15): it becomes high "
        "only with a sensitive target or personal data.",
        "tuning": "Exclude system actors: `select.where: {all: [{field: ticket_id, exists: false}, {field: "
        "actor.kind, ne: system}]}`. "
        "`group_by`/`suppress` set the volume: one alert per actor per hour by default.",
    },
    "cross_region_access": {
        "catches": "Off-the-books access: the proposal to give the liaison a remote machine in the United States "
        "connected to US servers. In the example, `emp-eng-019` grants the CN liaison remote `prod-servers` "
        "access to `us-jump-07` with no ticket, approver or expiry (high: 35 + no ticket 15 + remote 15).",
        "false_positives": "Follow-the-sun on-call: an engineer in one region gets a system in another for a "
        "shift, ticketed, approved and expiring. These score 25, **low** (4 on the example log).",
        "tuning": "To ignore expiring grants, add `{field: expires_at, exists: false}` to `select.where`. A "
        "`no_approver` booster (`{field: approved_by, exists: false}`) in `scoring.yaml` would separate "
        "approved from unapproved grants further.",
    },
    "fabricated_reports": {
        "catches": "Fabricated evidence: reports that meetings incited violence, supported terrorism or "
        "distributed child sexual abuse material, used to persuade executives to cancel them. In the example, "
        "four severe reports against one religious US meeting within 38 minutes, three from accounts created "
        "1-3 days earlier and one from the liaison (high; the meeting is shut down ten minutes later).",
        "false_positives": "A genuinely abusive meeting reported by several participants who only just signed up "
        "(raids bring new accounts on both sides), and trust and safety staff filing reports as part of their "
        "work (`employee_reporter`).",
        "tuning": "`at_least: 3` and `window: 1h` set the coordination bar; the 7-day account age is in "
        "`select.where` (`age_lt: 7d`). Dropping the employee branch loses the liaison's own reports.",
    },
    "host_reports": {
        "catches": "Fabricated reports spread thin: severe reports from new accounts or staff against several "
        "meetings of one host, each meeting below `fabricated_reports`' three within an hour. The host, whose "
        "account the reports aim to get suspended, is the key: at least four reports against at least two of "
        "its meetings within 24 h. One meeting reported on its own is `fabricated_reports`' alone (the example "
        "log's four reports against one religious meeting raise no `host_reports` alert).",
        "false_positives": "A host whose meetings are raided several times a day (raids bring new accounts on "
        "both sides), and trust and safety staff reporting a host's meetings as part of their work "
        "(`employee_reporter`).",
        "tuning": "`at_least` is the number of distinct meetings, `min_events` the number of reports, `window` "
        "how far apart they may be; the 7-day account age is in `select.where` (`age_lt: 7d`), as in "
        "`fabricated_reports`.",
    },
    "takedown_burst": {
        "catches": "A campaign against one community: at least three takedowns within a day of targets sharing "
        "a sensitive tag or the same owner. In the example, the Tiananmen wave (four meetings and two hosts) "
        "raises one alert for the `political` tag and one for `tiananmen` (high).",
        "false_positives": "Each sensitive tag and the owner are separate keys, so one wave can raise an alert per "
        "tag (two here). A prolific spammer's meetings share an owner: routine zoombombing and spam waves are "
        "ticketed and their tags are not in `sensitive_tags`, so they stay quiet unless the owner key reaches the "
        "bound.",
        "tuning": "Drop `target.owner_id` from `group_by` to count communities only; raise `at_least` for "
        "platforms with many legitimate political moderation actions; edit `sensitive_tags` to match the "
        "platform's taxonomy.",
    },
    "unlogged_request": {
        "catches": "Requests handled \"without written records\": an action or export cites a `request_id` that "
        "was never logged as `request.received`. In the example, `emp-ts-017` shuts down a political US meeting "
        "citing `req-1024ddd`, which appears nowhere else (high).",
        "false_positives": "Requests logged in another system whose events are not ingested (a producer gap, "
        "which this rule surfaces early), requests older than `lookback` (long-running legal holds), and typos "
        "in `request_id`.",
        "tuning": "`within: 10m` tolerates a request logged shortly after the action; `lookback: 30d` how old "
        "a request may be. A longer lookback keeps more state (one timestamp per request id).",
    },
    "request_latency": {
        "catches": "Not an alert (`mode: observe`): every action or export that fulfils a logged request within "
        "30 days feeds `modwatch_request_to_action_seconds`, by requester jurisdiction, with a bucket boundary at "
        "60 s. The backtest report draws it with the one-minute line.",
        "false_positives": "None: it raises nothing.",
        "tuning": "Disable it (`enabled: false`) to drop the histogram; `within` bounds the latencies measured.",
    },
}

# -- rendering helpers -------------------------------------------------------------------------------------


def _is_duration(metadata: list[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata)


def type_text(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A field's type as the reference shows it."""
    metadata = list(metadata or [])
    if _is_duration(metadata):
        return "duration"
    if annotation == Predicate:
        return "[predicate](#the-predicate-language)"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0], [*args[1:], *metadata])
    if origin in (typing.Union, types.UnionType):
        if any(a == Predicate for a in args) or "predicate.Condition" in repr(annotation):
            return "[predicate](#the-predicate-language)"
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts)
    if origin is typing.Literal:
        return ", ".join(f"`{v}`" for v in args) if len(args) > 1 else f"`{args[0]}`"
    if origin is list:
        return f"list of {type_text(args[0])}"
    names = {
        str: "string", int: "integer", float: "number", bool: "boolean",
        Selector: "[selector](#selector)", ScoreSpec: "[score](#score)", JoinKey: "[join key](#join-key)",
        GroupKey: "[group key](#group-key)",
    }  # fmt: skip
    if annotation in names:
        return names[annotation]
    raise ValueError(f"no rendering for type {annotation!r}")


def bounds_text(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        for attr, text in (("gt", "> {}"), ("ge", ">= {}"), ("lt", "< {}"), ("le", "<= {}"),
                           ("min_length", "min length {}"), ("max_length", "max length {}")):  # fmt: skip
            value = getattr(m, attr, None)
            if value is not None:
                shown = format_duration(value) if _is_duration(info.metadata) and attr in ("gt", "ge") else value
                parts.append(text.format(shown))
        pattern = getattr(m, "pattern", None)
        if pattern:
            parts.append(f"pattern `{pattern}`")
    return ", ".join(parts)


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.default
    if value is None or value is PydanticUndefined:
        return "none"
    if _is_duration(info.metadata) and isinstance(value, int | float):
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def options_table(fields: dict[str, FieldInfo], doc: dict[str, str], where: str) -> list[str]:
    out = ["| option | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, info in fields.items():
        key = info.alias or name
        if key not in doc:
            raise SystemExit(f"build_rules_reference: no description for {where} option {key!r}")
        out.append(f"| `{key}` | {_cell(type_text(info.annotation, info.metadata))} | {default_text(info)} | "
                   f"{_cell(bounds_text(info))} | {_cell(doc[key])} |")  # fmt: skip
    return out


def _block_docs(block: str) -> dict[str, str]:
    return {name: text for (b, name), text in BLOCK_DOCS.items() if b == block}


def _rule_blocks(text: str) -> dict[str, str]:
    """The YAML text of each rule in rules.yaml, comments included, keyed by rule id."""
    body = text[text.index("\nrules:\n") + len("\nrules:\n") :]
    blocks: dict[str, str] = {}
    for chunk in re.split(r"\n(?=  - id: )", body):
        match = re.match(r"(?:\s*#.*\n)*\s*- id: (\w+)", chunk)
        if match is None:
            continue
        lines = [line for line in chunk.rstrip().splitlines() if line.strip()]
        while lines and lines[-1].lstrip().startswith("#"):  # a comment introducing the next rule
            lines.pop()
        start = next(i for i, line in enumerate(lines) if line.startswith("  - id: "))
        blocks[match.group(1)] = "\n".join(line[2:] for line in lines[start:])
    return blocks


def _validate_example(kind: str, text: str, lists: dict[str, list[str]]) -> None:
    entries = yaml.safe_load(text)
    config = _rule_adapter().validate_python(entries[0])
    assert config.kind == kind, (kind, config.kind)
    RULE_KINDS[kind](config, lists)


# -- the document ----------------------------------------------------------------------------------------


def build() -> str:
    rules_text = (CONFIG / "rules.yaml").read_text(encoding="utf-8")
    rules_raw = yaml.safe_load(rules_text)
    scoring = ScoringConfig.model_validate(yaml.safe_load((CONFIG / "scoring.yaml").read_text(encoding="utf-8")))
    lists: dict[str, list[str]] = {k: [str(v) for v in vs] for k, vs in (rules_raw.get("lists") or {}).items()}
    missing_kinds = set(RULE_KINDS) - set(KIND_ORDER)
    if missing_kinds:
        raise SystemExit(f"build_rules_reference: rule kinds without a section: {sorted(missing_kinds)}")
    missing_ops = [op for op in _OPS if op not in OP_DOCS]
    if missing_ops:
        raise SystemExit(f"build_rules_reference: operators without a description: {missing_ops}")

    out: list[str] = [
        "# Rules reference",
        "",
        "<!-- Generated by docs/build_rules_reference.py from the rule models, config/rules.yaml and "
        "config/scoring.yaml. Do not edit by hand: change the code, the config or the prose in the generator, then "
        "run `python docs/build_rules_reference.py`. tests/test_rules_reference.py fails when this file is stale. -->",
        "",
        "A rule set is a directory (default `./config`): `rules.yaml` holds named `lists` and the `rules`; "
        "`scoring.yaml` holds the severity `bands` and the `boosters`; `fixtures/` holds each rule's firing and "
        "quiet examples. `modwatch rules validate` checks it without running anything; errors name the file, "
        "the rule and the field.",
        "",
        "Contents: [options every rule has](#options-every-rule-has) · [rule kinds](#rule-kinds) · "
        "[building blocks](#building-blocks) · [events and groups](#events-and-groups) · "
        "[the predicate language](#the-predicate-language) · [summary templates](#summary-templates) · "
        "[scoring](#scoring-bands-and-boosters) · [lists](#lists) · [the default rules](#the-default-rules) · "
        "[tuning a rule safely](#tuning-a-rule-safely)",
        "",
        "Durations are written `90s`, `5m`, `24h`, `30d`, `1w`, `1d12h` (or a number of seconds). Every rule runs "
        "in event time (`occurred_at`), tolerates the allowed lateness (5 minutes by default) and keeps small, "
        "bounded state per group key.",
        "",
        "## Options every rule has",
        "",
        *options_table(RuleConfig.model_fields, COMMON_DOCS, "common"),
        "",
        "## Rule kinds",
        "",
    ]
    for kind in KIND_ORDER:
        cls = RULE_KINDS[kind]
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0]
        doc = " ".join(doc.split()).replace(f"``{kind}``: ", "")
        own = {n: f for n, f in cls.config_model.model_fields.items() if n not in RuleConfig.model_fields}
        docs = {name: text for (k, name), text in OPTION_DOCS.items() if k == kind}
        example = KIND_EXAMPLES[kind]
        _validate_example(kind, example, lists)
        out += [
            f"### {kind}",
            "",
            doc[0].upper() + doc[1:] if doc else "",
            "",
            KIND_NOTES[kind],
            "",
            *options_table(own, docs, kind),
            "",
            "Example:",
            "",
            "```yaml",
            example.rstrip(),
            "```",
            "",
        ]
    out += ["## Building blocks", ""]
    for title, model in (("selector", Selector), ("score", ScoreSpec), ("join key", JoinKey),
                         ("group key", GroupKey)):  # fmt: skip
        out += [f"### {title}", "", *options_table(model.model_fields, _block_docs(title), title), ""]
    out += [
        "A group key may also be written as a bare path: `group_by: [actor.id]`.",
        "",
        "## Events and groups",
        "",
        "`events:` takes event types or these groups:",
        "",
        "| group | event types |",
        "|---|---|",
        *(f"| `{g}` | {', '.join(f'`{t}`' for t in types_)} |" for g, types_ in EVENT_GROUPS.items()),
        "",
        f"Event types: {', '.join(f'`{t}`' for t in ALL_TYPES)}. Moderation actions are "
        f"{', '.join(f'`{t}`' for t in ACTION_TYPES)}. The fields of each are in `streams/core/events.py`; unknown "
        "extra fields are accepted and ignored.",
        "",
        "## The predicate language",
        "",
        "Declarative, no code in YAML. A condition names a field path and exactly one operator; conditions "
        "combine with `all: [...]`, `any: [...]` and `not: {...}`.",
        "",
        "- Paths are dotted: `target.region`, `first.requester.jurisdiction`. A list met on the way is "
        "flattened (`targets.id` is every target's id); `@keys` takes a mapping's keys "
        "(`subject_regions.@keys`).",
        "- In a pair (`sequence` `where`, and boosters), `first.` reads the earlier event; every other path reads "
        "the current event.",
        "- When a path yields several values the comparison holds if it holds for any of them. A missing field "
        "satisfies nothing except `exists: false`.",
        "- `in` / `not_in` take a list or a `$name` from `lists:` in rules.yaml.",
        "",
        "| operator | example | holds when |",
        "|---|---|---|",
        *(f"| `{op}` | {_cell(OP_DOCS[op][0])} | {_cell(OP_DOCS[op][1])} |" for op in _OPS),
        "",
        "## Summary templates",
        "",
        "`summary` is a sentence with `{path}` placeholders: event fields (`{actor.id}`, `{target.region}`, and "
        "under `first.` the earlier event of a pair) or the facts the rule computed (`{latency}`, `{total}`, "
        "`{count}`, `{window}`, `{distinct}`, `{within}`), plus `{group}` (the group key), `{score}` and "
        "`{severity}`. A missing value prints as `?`, or as the fallback after a bar: `{subject_regions|none "
        "listed}`. Several values print comma-separated (at most 10).",
        "",
        "## Scoring: bands and boosters",
        "",
        "An alert's score is its rule's `score.base` plus the points of every booster that holds for the "
        "incident, clamped to 0-100, then banded. Boosters are signals, not verdicts: one alone should not make "
        "an alert high. `modwatch explain ALERT_ID --log LOG` shows the breakdown of one alert.",
        "",
        "| band | lowest score (default) | in config/scoring.yaml |",
        "|---|---|---|",
    ]
    for band in ("critical", "high", "medium", "low"):
        default = Bands.model_fields[band].default
        out.append(f"| {band} | {default} | {getattr(scoring.bands, band)} |")
    out += [
        "| info | below `low` | |",
        "",
        *options_table(BoosterConfig.model_fields, _block_docs("booster"), "booster"),
        "",
        "The boosters of the default `scoring.yaml`:",
        "",
        "| booster | points | meaning | when |",
        "|---|---|---|---|",
    ]
    for name, booster in scoring.boosters.items():
        when = json.dumps(booster.when.model_dump(by_alias=True, exclude_none=True, warnings=False))
        out.append(f"| `{name}` | {booster.points:+d} | {_cell(' '.join(booster.description.split()))} | "
                   f"`{_cell(when)}` |")  # fmt: skip
    out += [
        "",
        "## Lists",
        "",
        "Named lists in `rules.yaml`, used as `$name` by `in`, `not_in` and group keys:",
        "",
        *(f"- `{name}`: {', '.join(values)}" for name, values in lists.items()),
        "",
        "## The default rules",
        "",
        "Tied to the patterns in [the threat model](threat-model.md) and to the example log "
        "([examples/README.md](../examples/README.md)). Each has firing and quiet fixtures in "
        "`config/fixtures/<rule>.yaml`.",
        "",
    ]
    blocks = _rule_blocks(rules_text)
    for raw in rules_raw["rules"]:
        rule_id = raw["id"]
        notes = RULE_NOTES.get(rule_id)
        if notes is None:
            raise SystemExit(f"build_rules_reference: default rule {rule_id!r} has no notes (RULE_NOTES)")
        mode = raw.get("mode", "live")
        out += [
            f"### {rule_id}",
            "",
            f"**{raw['title']}** — `{raw['kind']}`, base score {raw['score']['base']}"
            + (f", mode `{mode}`" if mode != "live" else "")
            + ".",
            "",
            f"**What it catches.** {notes['catches']}",
            "",
            f"**Known false positives.** {notes['false_positives']}",
            "",
            f"**How to tune.** {notes['tuning']}",
            "",
            "```yaml",
            blocks[rule_id],
            "```",
            "",
        ]
    stale = set(RULE_NOTES) - {r["id"] for r in rules_raw["rules"]}
    if stale:
        raise SystemExit(f"build_rules_reference: notes for rules not in config/rules.yaml: {sorted(stale)}")
    out += [
        "## Tuning a rule safely",
        "",
        "1. Change the rule or a booster in a copy of the config directory, and add or adjust its fixtures: "
        "`modwatch rules test --config NEW`.",
        "2. See what the change would have done to past alerts: `modwatch rules diff --config config --config NEW "
        "last-year.jsonl.gz` lists the alerts only the old rules raise, only the new ones raise, and those whose "
        "severity changed.",
        "3. Understand any alert: `modwatch explain ALERT_ID --log LOG` (or `modwatch backtest LOG --output "
        "alerts.jsonl --explain` for every high and critical one).",
        "4. Ship a new rule as `mode: shadow`: it is evaluated, counted in metrics and written with the alerts, "
        "but never sent to a pager or webhook. Switch it to `live` once its alerts look right.",
        "5. `modwatch backtest LOG --output alerts.jsonl --report report.html` gives the timeline, the alerts by "
        "rule, the request-to-action latency with the one-minute line, the top actors and the explained high "
        "and critical alerts in one offline HTML file.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build docs/rules.md from the code and config/.")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/rules.md is not current")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python docs/build_rules_reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
