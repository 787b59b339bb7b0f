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

import bisect
import hashlib
import heapq
import hmac
import logging
import marshal
from collections import Counter
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.core.alerts import Alert, Template, alert_id, labels_for
from streams.core.decode import Decoded
from streams.core.regions import region_label
from streams.core.rules.base import ACTION_TYPES, Hit, Role, Rule
from streams.core.rules.predicate import Context
from streams.core.rules.sequence import SequenceGroup, SequenceRule, group_parts, group_sequences, is_group_id
from streams.core.ruleset import RuleSet

log = logging.getLogger(__name__)

MAX_ALERT_IDS = 32  # alert ids remembered per rule and key, to drop redelivered duplicates


# Request-to-action latency buckets (seconds): dense around the one-minute processing requirement so
# that "acted within 60 s of the request" is a bucket boundary, then the hours and a day of routine,
# lawful handling.
LATENCY_BUCKETS = (5.0, 15.0, 30.0, 45.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86400.0)
DEFAULT_PERSONAL_FIELDS = frozenset({"name", "email", "ip_address", "phone", "address", "user_id", "account_id"})


class Histogram:
    """Bucket counts (not cumulative), sum and count: cheap to update, exported at scrape time."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


@dataclass
class EngineStats:
    """Counters the engine keeps; the metrics module and the backtest summary read them.
    Label values are bounded: event types, rule ids, severities, ISO regions or ``other``."""

    events: Counter[str] = field(default_factory=Counter)  # by event type
    events_by_region: Counter[tuple[str, str]] = field(default_factory=Counter)  # (event type, region)
    actions: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # (type, region, linked, ticketed)
    exported: Counter[tuple[str, str]] = field(default_factory=Counter)  # (destination kind, personal) -> records
    request_latency: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (jurisdiction, kind)
    late: int = 0
    duplicates: int = 0
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, severity)
    suppressed: Counter[str] = field(default_factory=Counter)  # by rule
    rule_errors: Counter[str] = field(default_factory=Counter)  # by rule

    def observe_latency(self, jurisdiction: str, kind: str, seconds: float) -> None:
        key = (jurisdiction, kind)
        hist = self.request_latency.get(key)
        if hist is None:
            hist = self.request_latency[key] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)


def open_record(stored: Any) -> dict[str, list[Any]]:
    """A key's stored record as the engine works on it: {rule id: [rule state, suppression]}.

    Stored, a record is one flat list ``[rule id, state, suppression, rule id, ...]``: most keys
    hold one rule's state, and a dict of one-item lists cost ~180 bytes more per key than a list of
    three. A record saved before (the dict itself) is read as it is; a packed one (``Shard``) is
    unpacked."""
    stored = unpacked(stored)
    if not stored:
        return {}
    if isinstance(stored, dict):
        return stored
    if len(stored) == 3:  # the common case, without the general loop
        return {stored[0]: [stored[1], stored[2]]}
    items = iter(stored)
    return {rule_id: [state, sup] for rule_id, state, sup in zip(items, items, items, strict=True)}


def packed(flat: list[Any]) -> bytes:
    """A record's flat list as a packed shard stores it (``Shard``)."""
    return marshal.dumps(flat)


def unpacked(stored: Any) -> Any:
    """A stored value as JSON can carry it: a packed record (``Shard``) as its flat list."""
    return marshal.loads(stored) if type(stored) is bytes else stored


def stored_record(record: dict[str, list[Any]]) -> list[Any]:
    """The flat list ``open_record`` reads, allocated at its exact size (a list grown by appends
    keeps spare slots, and there is one record per key)."""
    if len(record) == 1:
        for rule_id, (state, sup) in record.items():
            return [rule_id, state, sup]
    flat: list[Any] = [None] * (3 * len(record))
    for index, (rule_id, (state, sup)) in enumerate(record.items()):
        flat[3 * index : 3 * index + 3] = rule_id, state, sup
    return flat


class Shard:
    """The state of one partition: a key -> record store (see ``open_record``), the event time per
    source, and a timer index. The store may be a dict or a Faust table.

    ``packed`` stores each record as one ``marshal`` string (the live worker's): Python's cyclic
    garbage collector walks every list of a record, and at 2,000 events/s the state was ~300,000
    lists; each full collection paused the worker for 150-450 ms, every ~10 s. Bytes are not walked.
    Packing and unpacking cost ~0.5 us each; ``marshal`` keeps every value exactly (a NaN sum, a
    big integer), which JSON does not. The changelog gets the record as JSON (``unpacked``), as before.
    """

    def __init__(self, store: MutableMapping[str, Any] | None = None, packed: bool = False) -> None:
        self.store: MutableMapping[str, Any] = store if store is not None else {}
        self.packed = packed
        self.sources: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._peak = 0  # the most timers held at once since the last ``release``

    def put(self, key: str, flat: list[Any]) -> None:
        """Store a record (``stored_record``'s flat list); reassigned, as a Faust table only logs
        assignments."""
        self.store[key] = packed(flat) if self.packed else flat

    def observe(self, source: str, ts: float) -> None:
        if ts > self.sources.get(source, float("-inf")):
            self.sources[source] = ts

    def event_time(self) -> float:
        return min(self.sources.values()) if self.sources else float("-inf")

    def schedule(self, key: str, when: float | None) -> None:
        if when is None:
            return
        current = self._scheduled.get(key)
        if current is None or when < current:
            self._scheduled[key] = when
            heapq.heappush(self._heap, (when, key))

    def has_due(self, watermark: float) -> bool:
        return bool(self._heap) and self._heap[0][0] <= watermark

    def is_scheduled(self, key: str) -> bool:
        return key in self._scheduled

    def rebuild_timers(self, engine: Engine) -> None:
        """After recovery (a restarted worker): schedule every stored key again."""
        self._heap, self._scheduled = [], {}
        for key, record in list(self.store.items()):
            self.schedule(key, engine.deadline(open_record(record)))

    def due(self, watermark: float) -> list[str]:
        if len(self._scheduled) > self._peak:
            self._peak = len(self._scheduled)
        keys = []
        while self._heap and self._heap[0][0] <= watermark:
            when, key = heapq.heappop(self._heap)
            if self._scheduled.get(key) == when:
                del self._scheduled[key]
                keys.append(key)
        return keys

    def release(self) -> None:
        """Give back the memory of a burst whose windows have expired. A dict keeps the size of its
        peak when keys are deleted (CPython shrinks one only once later inserts run out of room), so
        after a quiet spell the timer index, and the store when it is a plain dict, would hold on to
        it: both are copied once the timers fall to an eighth of their peak (an O(n) copy, at most
        once per eightfold shrink). A Faust table's storage is its own and stays as it is."""
        count = len(self._scheduled)
        if self._peak < 65536 or count * 8 > self._peak:
            return
        self._scheduled = dict(self._scheduled)
        if type(self.store) is dict:
            kept = dict(self.store)
            self.store.clear()  # in place: whoever holds the store keeps the same object
            self.store.update(kept)
        self._peak = count

    @property
    def timers(self) -> int:
        return len(self._scheduled)


class RecentIds:
    """Event ids seen within ``horizon`` seconds of event time, to skip redelivered duplicates.
    Bounded: ids older than the horizon behind the newest event are pruned as the log advances."""

    def __init__(self, horizon: float = 86400.0) -> None:
        self.horizon = horizon
        self._seen: dict[str, float] = {}
        self._newest = float("-inf")
        self._next_prune = 4096
        self._pruned_at = float("-inf")

    def add(self, event_id: str, ts: float) -> bool:
        """True if new; False if this id was already seen."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = ts
        if ts > self._newest:
            self._newest = ts
        # Prune when the set has doubled, or (once it is big enough to matter) when event time moved
        # a horizon on, so a quiet spell after a burst gives the memory back.
        moved_on = len(self._seen) >= 1024 and self._newest - self._pruned_at > self.horizon
        if len(self._seen) >= self._next_prune or moved_on:
            cutoff = self._newest - self.horizon
            self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
            self._next_prune = max(4096, 2 * len(self._seen))
            self._pruned_at = self._newest
        return True

    def __len__(self) -> int:
        return len(self._seen)


class Pseudonymizer:
    """Replaces target and data-subject ids in alerts with a keyed HMAC, consistently (the same id
    always gives the same pseudonym, so analysts can still correlate) and irreversibly without the
    key. Employee ids (actors, grantees) stay: investigating them is the point."""

    KEY_PREFIXES = ("target=", "target.id=", "target.owner_id=")

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __call__(self, value: str) -> str:
        return "p_" + hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def group_key(self, key: str) -> str:
        for prefix in self.KEY_PREFIXES:
            if key.startswith(prefix):
                return prefix + self(key[len(prefix) :])
        return key

    def view(self, view: dict[str, Any] | None) -> dict[str, Any] | None:
        if view is None:
            return None
        out = dict(view)
        target = view.get("target")
        if isinstance(target, dict):
            out["target"] = {
                **target,
                **{k: self(str(target[k])) for k in ("id", "owner_id") if target.get(k) is not None},
            }
        targets = view.get("targets")
        if isinstance(targets, list):
            out["targets"] = [{**t, "id": self(str(t.get("id")))} if isinstance(t, dict) else t for t in targets]
        return out


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
        self.suppress = {rule.id: _suppress_interval(rule) for rule in self.rules}
        self.personal_fields = frozenset(ruleset.lists.get("personal_fields", DEFAULT_PERSONAL_FIELDS))
        self.pseudo = Pseudonymizer(pseudonymize) if pseudonymize else None

    # -- 1. routing ---------------------------------------------------------------------------
    def route(self, decoded: Decoded) -> dict[str, list[Role]]:
        ctx = Context(decoded.view, decoded.ts)
        event_type = decoded.event.event_type
        routes: dict[str, list[Role]] = {}
        roles = self.roles
        for rule in self.by_type.get(event_type, ()):
            try:
                pairs = rule.route(ctx, event_type)
            except Exception:
                self._rule_error(rule, decoded.view)
                continue
            for key, side in pairs:
                role = roles[(rule.id, side)]
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
        for rule_id, entry in record.items():
            if entry[0] is not None and rule_id not in self.unit_ids:
                self._regroup(record)
                break
        alerts: list[Alert] = []
        view, ts = decoded.view, decoded.ts
        bound = float("inf")  # how early this event can make the key's deadline
        for role in roles:
            rule = role.rule
            if late and rule.stateful:
                continue
            when = rule.event_deadline(ts, role.side) if rule.stateful else ts + self.suppress[rule.id]
            bound = min(bound, when if when is not None else float("-inf"))
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
        for key in shard.due(watermark):
            record = open_record(shard.store.get(key))
            if not record:
                continue
            self._regroup(record)
            next_due = float("inf")  # the record's deadline after this pass, as ``deadline`` computes it
            for rule_id in list(record):
                rule = self.by_id.get(rule_id)
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
                    if sup[0] + self.suppress[rule_id] < watermark:
                        entry[1] = None
                    elif sup[0] + self.suppress[rule_id] + 0.001 < next_due:
                        next_due = sup[0] + self.suppress[rule_id] + 0.001
                if entry[0] is None and entry[1] is None:
                    del record[rule_id]
            if record:
                shard.put(key, stored_record(record))
                shard.schedule(key, next_due if next_due != float("inf") else None)
            elif key in shard.store:
                del shard.store[key]
        shard.release()
        return alerts

    def deadline(self, record: dict[str, Any]) -> float | None:
        """The earliest event time at which ``advance`` has work for this key."""
        times = []
        for rule_id, (state, sup) in record.items():
            rule = self.by_id.get(rule_id)
            if rule is None:
                return float("-inf")
            if state is not None:
                when = rule.deadline(state)
                if when is not None:
                    times.append(when)
            if sup is not None:
                times.append(sup[0] + self.suppress[rule_id] + 0.001)
        return min(times) if times else None

    # -- the backtest path --------------------------------------------------------------------
    def process(self, shard: Shard, decoded: Decoded, source: str = "log") -> list[Alert]:
        """Route and apply one event on a single shard, then fire due timers (backtest)."""
        if not self.recent.add(decoded.event.event_id, decoded.ts):
            self.stats.duplicates += 1
            return []
        self.observe_event(decoded)
        late = decoded.ts < self.watermark(shard)
        if late:
            self.stats.late += 1
        shard.observe(source, decoded.ts)
        alerts: list[Alert] = []
        for key, roles in self.route(decoded).items():
            alerts.extend(self.apply(shard, decoded, key, roles, late))
        alerts.extend(self.advance(shard))
        return alerts

    def observe_event(self, decoded: Decoded) -> None:
        """Count an event for the metrics (once per event, even when it reaches several keys)."""
        view, stats = decoded.view, self.stats
        event_type = decoded.event.event_type
        stats.events[event_type] += 1
        target = view.get("target")
        target_region = target.get("region") if isinstance(target, dict) else None
        actor = view.get("actor")
        region = region_label(target_region or (actor.get("region") if isinstance(actor, dict) else None))
        stats.events_by_region[(event_type, region)] += 1
        ticketed = "yes" if view.get("ticket_id") else "no"
        if event_type in ACTION_TYPES:
            linked = "yes" if view.get("request_id") else "no"
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
            if bound is not None and bound != float("-inf") and shard.is_scheduled(key):
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
        new_id = alert_id(rule.id, self.pseudo.group_key(key) if self.pseudo else key, hit.anchor)
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
        if self.pseudo is not None:
            key = self.pseudo.group_key(key)
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
        )
        self.stats.alerts[(rule.id, score.severity.label)] += 1
        return alert

    def _rule_error(self, rule: Rule, view: dict[str, Any]) -> None:
        # Ids only: events carry personal data and must not end up in logs.
        self.stats.rule_errors[rule.id] += 1
        log.exception("rule %s failed on event %s", rule.id, view.get("event_id"))

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
