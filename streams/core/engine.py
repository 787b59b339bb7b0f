"""The rule engine: event in, alerts out. Pure and deterministic; knows nothing of Kafka or Faust.

Shape of the work, shared by ``backtest`` and the live worker:

1. ``route(event)`` — each rule says which shard keys the event must reach (``actor.id=emp-1``,
   ``request=R-7``...). The live worker repartitions on these keys; backtest just loops.
2. ``apply(shard, event, key, roles)`` — the rules' state for that key is read from the shard's
   store, updated, written back (reassigned, so a Faust table writes its changelog), and hits become
   scored, suppressed, de-duplicated alerts.
3. ``advance(shard)`` — when the watermark passes a key's deadline, windows expire and absence
   timers fire.

Event time. A shard tracks the newest event time per source (an input partition; backtest has one);
the watermark is the oldest of those minus the allowed lateness. An event older than the watermark
is late: counted, and only stateless rules still see it.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streams.core.alerts import Alert, Pseudonymizer, Template, alert_id, labels_for, subjects_for
from streams.core.decode import Decoded
from streams.core.regions import ISO_REGIONS, region_label
from streams.core.rules.base import ACTION_TYPES, Hit, Role, Rule
from streams.core.rules.predicate import Context
from streams.core.rules.sequence import SequenceGroup, SequenceRule, group_parts, group_sequences, is_group_id
from streams.core.ruleset import RuleSet
from streams.core.state import CONFLICT, DUPLICATE, NEW, RecentIds, Shard, open_record, stored_record, unpacked
from streams.core.stats import EngineStats

log = logging.getLogger(__name__)

CONFLICT_RULE = "event_id_conflict"  # the integrity alert's rule id (no rule of the config has it)
_INF, _NEG_INF = float("inf"), float("-inf")


def content_digest(view: dict[str, Any]) -> bytes:
    """A record's content, whatever the order of its keys: what tells a redelivery from a conflict."""
    return hashlib.blake2b(orjson.dumps(view, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()

MAX_ALERT_IDS = 32  # alert ids remembered per rule and key, to drop redelivered duplicates


# The export fields counted as personal when the rule set has no ``personal_fields`` list: the same as
# the default rules.yaml's, IP addresses included (personal data under the GDPR).
DEFAULT_PERSONAL_FIELDS = frozenset({
    "name", "email", "ip", "ip_address", "phone", "address", "user_id", "account_id", "participant_id", "location",
})  # fmt: skip


class Engine:
    def __init__(self, ruleset: RuleSet, lateness: float = 300.0, pseudonymize: bytes | None = None,
                 group_pairs: bool = True) -> None:  # fmt: skip
        self.ruleset = ruleset
        self.rules = ruleset.rules
        # What routes and keeps state: the rules, with sequence rules that share their first side
        # and join keys merged into one group (one store per key instead of one per rule).
        self.units = group_sequences(self.rules) if group_pairs else list(self.rules)
        for unit in self.units:
            if isinstance(unit, SequenceGroup):
                unit.on_error = self._rule_error  # a failing member is isolated like a failing rule
        self.by_id = {rule.id: rule for rule in (*self.rules, *self.units)}
        self.unit_ids = frozenset(unit.id for unit in self.units)
        self.group_of = {m.id: u for u in self.units if isinstance(u, SequenceGroup) for m in u.members}
        # Rules by the event types they accept: most events concern a few rules only.
        self.by_type: dict[str, tuple[Rule, ...]] = {}
        for rule in self.units:
            for event_type in rule.event_types:
                self.by_type[event_type] = (*self.by_type.get(event_type, ()), rule)
        self.lateness = lateness
        self.stats = EngineStats()
        self.recent = RecentIds()
        self.templates = {rule.id: Template(rule.config.summary) for rule in self.rules}
        # One Role per (rule, side), made once: routing runs for every event.
        self.roles = {(rule.id, side): Role(rule, side) for rule in self.units for side in _sides(rule)}
        # ``by_type`` with each rule's Roles by side, for ``route``: no (rule id, side) key per hit.
        self._roles_by_type = {event_type: tuple((rule, {side: self.roles[(rule.id, side)] for side in _sides(rule)})
                                          for rule in rules) for event_type, rules in self.by_type.items()}  # fmt: skip
        self.suppress = {rule.id: _suppress_interval(rule) for rule in self.rules}
        self.personal_fields = frozenset(ruleset.lists.get("personal_fields", DEFAULT_PERSONAL_FIELDS))
        self.pseudo = Pseudonymizer(pseudonymize) if pseudonymize else None

    # -- 1. routing ---------------------------------------------------------------------------
    def route(self, decoded: Decoded) -> dict[str, list[Role]]:
        ctx = Context(decoded.view, decoded.ts)
        event_type = decoded.event.event_type
        routes: dict[str, list[Role]] = {}
        for rule, roles in self._roles_by_type.get(event_type, ()):
            try:
                pairs = rule.route(ctx, event_type)
            except Exception:
                self._rule_error(rule, decoded.view)
                continue
            for key, side in pairs:
                role = roles[side]
                found = routes.get(key)
                if found is None:
                    routes[key] = [role]
                else:
                    found.append(role)
        return routes

    # -- 2. evaluation ------------------------------------------------------------------------
    def watermark(self, shard: Shard) -> float:
        return shard.event_time() - self.lateness

    def apply(self, shard: Shard, decoded: Decoded, key: str, roles: list[Role], late: bool = False) -> list[Alert]:
        record = open_record(shard.store.get(key))
        if not self.unit_ids.issuperset(record):  # a cheap test: state under another grouping is rare
            self._regroup(record)
        alerts: list[Alert] = []
        view, ts = decoded.view, decoded.ts
        bound = _INF  # how early this event can make the key's deadline
        for role in roles:
            rule = role.rule
            if rule.stateful:
                if late:
                    continue
                when = rule.event_deadline(ts, role.side)
                if when is None:
                    bound = _NEG_INF
                elif when < bound:
                    bound = when
            elif ts + self.suppress[rule.id] < bound:
                bound = ts + self.suppress[rule.id]
            entry = record.get(rule.id) or [None, None]
            try:
                state, hits = rule.apply(entry[0], view, ts, role.side)
            except Exception:
                self._rule_error(rule, view)
                continue
            entry[0] = state
            for hit in hits:
                alert = self._emit_in(record, rule, key, hit, entry)
                if alert is not None:
                    alerts.append(alert)
            if entry[0] is None and entry[1] is None:
                record.pop(rule.id, None)
            else:
                record[rule.id] = entry
        self._store(shard, key, record, bound)
        return alerts

    # -- 3. time ------------------------------------------------------------------------------
    def advance(self, shard: Shard) -> list[Alert]:
        watermark = self.watermark(shard)
        if not shard.has_due(watermark):  # the common case: checked before any work
            return []
        alerts: list[Alert] = []
        by_id, suppress, unit_ids, store = self.by_id, self.suppress, self.unit_ids, shard.store
        for key in shard.due(watermark):
            record = open_record(store.get(key))
            if not record:
                continue
            if not unit_ids.issuperset(record):  # a cheap test: state under another grouping is rare
                self._regroup(record)
            next_due = _INF  # the record's deadline after this pass, as ``deadline`` computes it
            for rule_id in list(record):
                rule = by_id.get(rule_id)
                entry = record[rule_id]
                if rule is None:  # a rule removed from the config: its state goes with it
                    del record[rule_id]
                    continue
                state = entry[0]
                when = rule.deadline(state) if state is not None else None
                if when is not None and when <= watermark:
                    try:
                        entry[0], hits = rule.advance(state, watermark)
                    except Exception:
                        # Drop the state the rule cannot advance: kept, it would fail on every event.
                        self._rule_error(rule, {"event_id": f"(timer {key})"})
                        entry[0], hits = None, []
                    for hit in hits:
                        alert = self._emit_in(record, rule, key, hit, entry)
                        if alert is not None:
                            alerts.append(alert)
                    when = rule.deadline(entry[0]) if entry[0] is not None else None
                if when is not None and when < next_due:
                    next_due = when
                sup = entry[1]
                if sup is not None:
                    until = sup[0] + suppress[rule_id]
                    if until < watermark:
                        entry[1] = None
                    elif until + 0.001 < next_due:
                        next_due = until + 0.001
                if entry[0] is None and entry[1] is None:
                    del record[rule_id]
            if record:
                shard.put(key, stored_record(record))
                shard.schedule(key, next_due if next_due != _INF else None)
            elif key in store:
                del store[key]
        shard.release()
        return alerts

    def deadline(self, record: dict[str, Any]) -> float | None:
        """The earliest event time at which ``advance`` has work for this key."""
        earliest: float | None = None  # the least of the times, without a list (once per event and key)
        for rule_id, (state, sup) in record.items():
            rule = self.by_id.get(rule_id)
            if rule is None:
                return _NEG_INF
            if state is not None:
                when = rule.deadline(state)
                if when is not None and (earliest is None or when < earliest):
                    earliest = when
            if sup is not None:
                when = sup[0] + self.suppress[rule_id] + 0.001
                if earliest is None or when < earliest:
                    earliest = when
        return earliest

    # -- the per-event driver: every caller (backtest, explain, rule fixtures, the live evaluator,
    # the benchmark) runs these steps, in this order, through ``admit`` and ``step`` ------------------
    def admit(self, decoded: Decoded) -> str:
        """Step 0: is this event new (``NEW``)? An id seen within the horizon with the same content is
        a redelivery (``DUPLICATE``: counted, skipped); with other content, a ``CONFLICT``: counted,
        not evaluated, dead-lettered by the caller and raised as an integrity alert
        (``conflict_alert``). The live worker admits in its router (stage 1), before repartitioning."""
        verdict = self.recent.check(decoded.event.event_id, decoded.ts, content_digest(decoded.view))
        if verdict == DUPLICATE:
            self.stats.duplicates += 1
        elif verdict == CONFLICT:
            self.stats.id_conflicts += 1
        return verdict

    def conflict_alert(self, decoded: Decoded) -> Alert:
        """The integrity alert for an event id reused with other content. Its id depends on the event
        id and both contents, so a redelivery of the same conflict mints the same id."""
        event_id = decoded.event.event_id
        first = self.recent.first_digest(event_id) or b""
        digest = content_digest(decoded.view)
        severity = self.ruleset.scorer.integrity_severity
        key = f"event_id={event_id}"
        view = self.pseudo.view(decoded.view) or {} if self.pseudo is not None else decoded.view  # a reporter's id
        actor = view.get("actor")
        actor_id = actor.get("id") if isinstance(actor, dict) else None
        alert = Alert(
            alert_id=alert_id(CONFLICT_RULE, key, first.hex() + ":" + digest.hex()),
            rule_id=CONFLICT_RULE,
            severity=severity,
            score=self.ruleset.scorer.bands.floor(severity),
            title="Event id reused with other content",
            summary=(f"event {event_id} ({decoded.event.event_type}) arrived again with other content than "
                     "the first time: the second version was not evaluated and went to the dead letters"),
            actor_id=str(actor_id) if actor_id is not None else None,
            group_key=self.pseudo.group_key(key) if self.pseudo is not None else key,
            event_ids=[event_id],
            first_seen=decoded.ts,
            last_seen=decoded.ts,
            signals=[CONFLICT_RULE],
            labels={"event_type": decoded.event.event_type},
        )
        self.stats.alerts[(CONFLICT_RULE, severity.label)] += 1
        return alert

    def step(self, shard: Shard, decoded: Decoded, source: str = "log", routes: dict[str, list[Role]] | None = None,
             keys: Sequence[str] | None = None, primary: bool = True) -> list[Alert]:  # fmt: skip
        """Steps 1-5 for an admitted event on one shard: count it (its ``primary`` copy only: the live
        router may send one event to several partitions), decide whether it is late, move the
        source's event time, apply it to each key it routes to, and fire the timers now due.

        ``routes`` is ``route(decoded)`` when the caller already has it (the live router computed it);
        ``keys`` limits it to the keys this shard owns."""
        late = decoded.ts < self.watermark(shard)
        if primary:
            self.observe_event(decoded)
            if late:
                self.stats.late += 1
        if source:
            shard.observe(source, decoded.ts)
        if routes is None:
            routes = self.route(decoded)
        alerts: list[Alert] = []
        for key in routes if keys is None else keys:
            alerts.extend(self.apply(shard, decoded, key, routes[key], late))
        alerts.extend(self.advance(shard))
        return alerts

    def process(self, shard: Shard, decoded: Decoded) -> list[Alert]:
        """``admit`` then ``step``: one event of a single-source log, on ``shard`` (a conflict gives
        its integrity alert only)."""
        verdict = self.admit(decoded)
        if verdict == NEW:
            return self.step(shard, decoded)
        return [self.conflict_alert(decoded)] if verdict == CONFLICT else []

    def observe_event(self, decoded: Decoded) -> None:
        """Count an event for the metrics (once per event, even when it reaches several keys)."""
        view, stats = decoded.view, self.stats
        event_type = decoded.event.event_type
        stats.events[event_type] += 1
        target = view.get("target")
        region = target.get("region") if isinstance(target, dict) else None
        if not region:
            actor = view.get("actor")
            region = actor.get("region") if isinstance(actor, dict) else None
        region = region if type(region) is str and region in ISO_REGIONS else region_label(region)  # inlined
        stats.events_by_region[(event_type, region)] += 1
        if event_type in ACTION_TYPES:
            linked = "yes" if view.get("request_id") else "no"
            ticketed = "yes" if view.get("ticket_id") else "no"
            stats.actions[(event_type, region, linked, ticketed)] += 1
        elif event_type == "data.export":
            destination = view.get("destination")
            kind = str(destination.get("kind")) if isinstance(destination, dict) else "other"
            fields = view.get("fields") or ()
            personal = "yes" if any(f in self.personal_fields for f in fields if isinstance(f, str)) else "no"
            count = view.get("record_count")
            stats.exported[(kind, personal)] += count if isinstance(count, int) else 0

    # -- state written under another grouping ----------------------------------------------------
    def _regroup(self, record: dict[str, Any]) -> None:
        """Move sequence state kept under another grouping to where this engine keeps it: a member's
        own state (written before its rule was grouped: an upgrade, or a rule that now shares its
        first side with another) into its group; a group this engine does not form (members removed
        or changed) to each remaining member, alone or in its new group. Pending events and what
        each was pending for survive a configuration change."""
        for rule_id in list(record):
            entry = record[rule_id]
            state = entry[0]
            if state is None or rule_id in self.unit_ids:
                continue
            if rule_id in self.group_of and isinstance(state, dict) and "a" in state:
                self._merge(record, rule_id, state["a"], [b[:3] for b in state["b"]])
            elif rule_id not in self.by_id and is_group_id(rule_id):
                members, firsts, waiting = group_parts(state)
                for bit, member_id in enumerate(members):
                    self._merge(record, member_id, firsts, [b[:3] for b in waiting if b[3] >> bit & 1])
            else:
                continue  # a rule removed from the configuration: ``advance`` drops its state
            entry[0] = None
            if entry[1] is None:
                del record[rule_id]

    def _merge(self, record: dict[str, Any], rule_id: str, firsts: list[Any], pending: list[Any]) -> None:
        """Add a sequence rule's first events and pending events to the state this engine keeps
        for that rule: its group's, or its own. Nothing for a rule that is gone or not a sequence."""
        group = self.group_of.get(rule_id)
        unit = group or self.by_id.get(rule_id)
        if unit is None or not isinstance(unit, SequenceGroup | SequenceRule):
            return
        entry = record.get(unit.id) or [None, None]
        if group is not None:
            entry[0] = group.merge(entry[0], rule_id, firsts, pending)
        else:
            state = entry[0] or {"a": [], "b": []}
            known = {a[1] for a in state["a"]}
            state["a"].extend(a for a in firsts if a[1] not in known)
            state["a"].sort(key=lambda a: a[0])
            waiting = {b[1] for b in state["b"]}
            state["b"].extend(b for b in pending if b[1] not in waiting)
            state["b"].sort(key=lambda b: b[0])
            entry[0] = state
        record[unit.id] = entry

    # -- internals ----------------------------------------------------------------------------
    def _store(self, shard: Shard, key: str, record: dict[str, Any], bound: float | None = None) -> None:
        if record:
            shard.put(key, stored_record(record))
            if bound is not None and bound != _NEG_INF and shard.is_scheduled(key):
                shard.schedule(key, bound)  # only ever moves a scheduled deadline earlier
            else:
                shard.schedule(key, self.deadline(record))
        elif key in shard.store:
            del shard.store[key]

    def _emit_in(self, record: dict[str, Any], rule: Rule, key: str, hit: Hit, entry: list[Any]) -> Alert | None:
        """``_emit`` for a hit of ``rule``, or of the group member the hit names (its suppression
        is kept in the member's own entry of the record)."""
        if hit.rule_id is None or hit.rule_id == rule.id:
            return self._emit(rule, key, hit, entry)
        member = self.by_id[hit.rule_id]
        member_entry = record.get(member.id) or [None, None]
        alert = self._emit(member, key, hit, member_entry)
        if member_entry[1] is not None:
            record[member.id] = member_entry
        return alert

    def _emit(self, rule: Rule, key: str, hit: Hit, entry: list[Any]) -> Alert | None:
        """Score a hit and decide: a new alert, a duplicate of one already sent, or suppressed."""
        new_id = alert_id(rule.id, self.pseudo.group_key(key, hit.view, hit.first) if self.pseudo else key, hit.anchor)
        sup = entry[1]
        if rule.config.mode == "observe":
            self._observe(hit, new_id, entry)
            return None
        if sup is not None and new_id in sup[1]:
            # The same incident again (a later event in the same window, or a redelivery that got
            # past the id checks): never a second alert; counted with the suppressed.
            self.stats.suppressed[rule.id] += 1
            return None
        if sup is not None and not rule.bucketed and abs(hit.ts - sup[0]) < self.suppress[rule.id]:
            sup[1] = [*sup[1], new_id][-MAX_ALERT_IDS:]
            self.stats.suppressed[rule.id] += 1
            return None
        ids = sup[1] if sup is not None else []
        entry[1] = [hit.ts, [*ids, new_id][-MAX_ALERT_IDS:]]
        return self.build(rule, key, hit, new_id)

    def _observe(self, hit: Hit, new_id: str, entry: list[Any]) -> None:
        """An ``observe`` rule feeds the request-to-action latency histogram instead of alerting."""
        ids = entry[1][1] if entry[1] is not None else []
        if new_id in ids:
            return
        entry[1] = [hit.ts, [*ids, new_id][-MAX_ALERT_IDS:]]
        first = hit.first or {}
        requester = first.get("requester")
        if not isinstance(requester, dict):
            requester = {}
        seconds = hit.facts.get("latency_seconds")
        if isinstance(seconds, int | float):
            self.stats.observe_latency(region_label(requester.get("jurisdiction")), str(requester.get("kind")), seconds)

    def build(self, rule: Rule, key: str, hit: Hit, new_id: str) -> Alert:
        score = self.ruleset.scorer.score(rule, hit)
        if self.pseudo is not None:  # every person's id; the employees' stay (``Pseudonymizer``)
            key = self.pseudo.group_key(key, hit.view, hit.first)
            hit = Hit(hit.anchor, hit.ts, hit.first_seen, hit.event_ids, self.pseudo.view(hit.view) or {},
                      self.pseudo.view(hit.first), hit.facts)  # fmt: skip
        ctx = Context(hit.view, hit.ts, first=hit.first)
        actor = hit.view.get("actor")
        facts = {"group": key, **hit.facts, "score": score.value, "severity": score.severity.label}
        alert = Alert(
            alert_id=new_id,
            rule_id=rule.id,
            severity=score.severity,
            score=score.value,
            title=rule.config.title,
            summary=self.templates[rule.id].render(ctx, facts),
            actor_id=actor.get("id") if isinstance(actor, dict) else None,
            group_key=key,
            event_ids=hit.event_ids,
            first_seen=hit.first_seen,
            last_seen=hit.ts,
            signals=[s.name for s in score.signals],
            labels=labels_for(ctx),
            mode=rule.config.mode,
            facts=facts,
            page=rule.config.page == "always",
            subjects=subjects_for(ctx),
        )
        self.stats.alerts[(rule.id, score.severity.label)] += 1
        return alert

    def _rule_error(self, rule: Rule, view: dict[str, Any]) -> None:
        # Ids only: events carry personal data and must not end up in logs. The id as its repr: it is
        # event text, and a terminal tailing the log would obey the escape sequences it may hold.
        self.stats.rule_errors[rule.id] += 1
        log.exception("rule %s failed on event %r", rule.id, view.get("event_id"))

    def state_size(self, shard: Shard) -> Counter[str]:
        """Number of keys holding state, per rule (for metrics and the bounded-state tests)."""
        return self.count_state(shard.store.values())

    def count_state(self, records: Iterable[Any]) -> Counter[str]:
        """Number of stored records (``open_record``'s format) holding state, per rule.

        A record of one rule (most of them) is counted under its rule id, and spread over a group's
        members at the end, without opening the record: the worker's metrics walk every key of its
        state. A record of several holds a group and a member's suppression at times, so its rules
        are collected first and each counted once."""
        units: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for stored in records:
            stored = unpacked(stored)
            if not stored:
                continue
            if type(stored) is list and len(stored) == 3:
                units[stored[0]] += 1
                continue
            holders: set[str] = set()
            for rule_id in stored.keys() if isinstance(stored, dict) else stored[0::3]:  # a dict: saved before
                holders.update(self._members(rule_id))
            sizes.update(holders)
        for rule_id, count in units.items():
            for member in self._members(rule_id):
                sizes[member] += count
        return sizes

    def _members(self, rule_id: str) -> Sequence[str]:
        unit = self.by_id.get(rule_id)
        return unit.member_ids if isinstance(unit, SequenceGroup) else (rule_id,)


def _sides(rule: Rule) -> tuple[str, ...]:
    if isinstance(rule, SequenceGroup):
        return ("first", *rule.then_sides.values())
    return ("event", "first", "then")


def _suppress_interval(rule: Rule) -> float:
    if rule.config.suppress is not None:
        return rule.config.suppress
    return rule.window if rule.stateful else 3600.0


class Replay:
    """An engine over one shard, fed a log's events in order: what backtest, explain, the rule
    fixtures and the benchmark run (the live worker has a shard per keyed partition instead)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shard = Shard()
        self.conflicted = False  # whether the last event fed was an id conflict (to dead-letter it)

    def feed(self, decoded: Decoded) -> list[Alert]:
        """The alerts one event raises (none for a duplicate, the integrity alert for a conflict)."""
        verdict = self.engine.admit(decoded)
        self.conflicted = verdict == CONFLICT
        if verdict == NEW:
            return self.engine.step(self.shard, decoded)
        return [self.engine.conflict_alert(decoded)] if self.conflicted else []
