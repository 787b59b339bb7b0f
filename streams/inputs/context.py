"""Context: the joins the rules need, which no audit log carries (docs/inputs.md, "Context").

Tables are given as data (``streams.inputs.context_files`` reads them from ``--context DIR``):

- ``staff``: an identity as the sources write it (an id or an e-mail; one row per identity, rows of
  one person share ``person``) -> kind, region, role, created_at. Fills the actor and the grantee.
- ``accounts``: a platform account, meeting or system -> region, created_at, tags, owner. Fills the
  target (region, owner_id, tags; a meeting's region from its host's), an access grant's system
  region, and a reporter's region and created_at (an actor staff does not know).
- ``tickets``: an action, export or grant on a target a ticket names, at a time the ticket is open
  (``opened_at <= t <= closed_at``, no ``closed_at``: still open), by the ticket's assignee or
  approver (under any of their identities) gets its ``ticket_id`` and ``approved_by``.
- ``geoip``: a function from an IP address to a region; fills ``actor.region`` from ``source.ip``
  (the provenance a mapping keeps) when staff left it ``ZZ``.

What is filled: a region only where the event has ``ZZ``; role, created_at, owner_id, ticket_id and
approved_by only where absent; tags are added to; an actor's or grantee's kind is the directory's
(mappings can only guess it). A failed lookup keeps the event, tags it (``context:unknown_actor``,
``context:unknown_grantee``, ``context:unknown_target``) and is counted by table; a table that is
absent is not consulted and makes no misses. ``enrich`` is a pure function of (event, tables), so
backtest, normalize and the worker give the same values.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

from streams.core import decode as dec
from streams.core.events import ACTION_TYPES, ActorKind, Target
from streams.inputs.mapping import Mapped

UNKNOWN_REGION = "ZZ"
UNKNOWN_ACTOR = "context:unknown_actor"
UNKNOWN_GRANTEE = "context:unknown_grantee"
UNKNOWN_TARGET = "context:unknown_target"
STAFF_KINDS: tuple[str, ...] = get_args(ActorKind)
ACCOUNT_KINDS: tuple[str, ...] = get_args(Target.model_fields["kind"].annotation)
TICKETED = (*ACTION_TYPES, "data.export", "access.grant")

# The contract's timestamps (streams/core/events.py): a value the tables give must decode there too.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")

GeoLookup = Callable[[str], "str | None"]


class RowError(ValueError):
    """A table value that cannot be used; ``column`` names it (the file reader adds file and line)."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"{column}: {message}")
        self.column = column


@dataclass(frozen=True, slots=True)
class Staff:
    id: str
    kind: str
    region: str
    role: str | None = None
    created_at: str | None = None
    person: str | None = None  # rows of one person (several identities) share it; default: the id


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    kind: str
    region: str
    created_at: str | None = None
    tags: tuple[str, ...] = ()
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    ticket_id: str
    targets: tuple[str, ...]
    opened_at: float
    closed_at: float | None = None
    approved_by: str | None = None
    assignee: str | None = None


@dataclass(frozen=True)
class Context:
    """The tables (None: absent) and the indexes built from them once."""

    staff: Mapping[str, Staff] | None = None
    accounts: Mapping[str, Account] | None = None
    tickets: tuple[Ticket, ...] | None = None
    geoip: GeoLookup | None = None
    _by_target: dict[str, list[Ticket]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for ticket in self.tickets or ():
            for target in ticket.targets:
                self._by_target.setdefault(target, []).append(ticket)

    @property
    def empty(self) -> bool:
        return self.staff is None and self.accounts is None and self.tickets is None and self.geoip is None

    def person(self, identity: str) -> str:
        row = (self.staff or {}).get(identity)
        return row.person or row.id if row is not None else identity


# -- rows: values as the files give them (strings, lists for ;-separated columns) -----------------


def _text(values: Mapping[str, Any], column: str, required: bool = False) -> str | None:
    value = values.get(column)
    if isinstance(value, list):
        value = ";".join(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowError(column, "a value is required")
        return None
    if not isinstance(value, str):
        raise RowError(column, f"expected a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > 200:
        raise RowError(column, "longer than 200 characters")
    return value


def _list(values: Mapping[str, Any], column: str) -> tuple[str, ...]:
    value = values.get(column)
    if value is None:
        return ()
    items = value if isinstance(value, list) else str(value).split(";") if isinstance(value, str) else None
    if items is None or not all(isinstance(i, str) for i in items):
        raise RowError(column, "expected a ';'-separated list of strings")
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


def _choice(values: Mapping[str, Any], column: str, allowed: tuple[str, ...]) -> str:
    value = _text(values, column, required=True)
    if value not in allowed:
        raise RowError(column, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _region(values: Mapping[str, Any], column: str) -> str:
    value = _text(values, column) or UNKNOWN_REGION
    if len(value) > 8:
        raise RowError(column, f"{value!r} is not a region code")
    return value.upper()


def _time(values: Mapping[str, Any], column: str, required: bool = False) -> str | None:
    value = _text(values, column, required)
    if value is not None and _RFC3339.fullmatch(value) is None:
        raise RowError(column, f"{value!r} is not an RFC 3339 timestamp with a zone (2024-06-04T10:00:00Z)")
    return value


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def staff_row(values: Mapping[str, Any]) -> Staff:
    identity = _text(values, "id", required=True)
    assert identity is not None
    return Staff(identity, _choice(values, "kind", STAFF_KINDS), _region(values, "region"), _text(values, "role"),
                 _time(values, "created_at"), _text(values, "person"))  # fmt: skip


def account_row(values: Mapping[str, Any]) -> Account:
    identity = _text(values, "id", required=True)
    assert identity is not None
    return Account(identity, _choice(values, "kind", ACCOUNT_KINDS), _region(values, "region"),
                   _time(values, "created_at"), _list(values, "tags"), _text(values, "owner"))  # fmt: skip


def ticket_row(values: Mapping[str, Any]) -> Ticket:
    ticket_id = _text(values, "ticket_id", required=True)
    opened = _time(values, "opened_at", required=True)
    closed = _time(values, "closed_at")
    assert ticket_id is not None and opened is not None
    targets = _list(values, "targets")
    if not targets:
        raise RowError("targets", "a ticket names at least one target")
    if closed is not None and _seconds(closed) < _seconds(opened):
        raise RowError("closed_at", "before opened_at")
    return Ticket(ticket_id, targets, _seconds(opened), None if closed is None else _seconds(closed),
                  _text(values, "approved_by"), _text(values, "assignee"))  # fmt: skip


def build_context(staff: Iterable[Staff] | None = None, accounts: Iterable[Account] | None = None,
                  tickets: Iterable[Ticket] | None = None, geoip: GeoLookup | None = None) -> Context:  # fmt: skip
    """A Context from rows; a later row for the same id replaces an earlier one (tickets: all kept)."""
    return Context(None if staff is None else {row.id: row for row in staff},
                   None if accounts is None else {row.id: row for row in accounts},
                   None if tickets is None else tuple(tickets), geoip)  # fmt: skip


# -- enrichment -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enriched:
    event: dict[str, Any]
    misses: tuple[str, ...]  # the tables whose lookup failed: "staff", "accounts", "geoip"


def enrich(event: Mapping[str, Any], ctx: Context, ts: float) -> Enriched:
    """``event`` (a contract event as JSON data, at event time ``ts``) with what the tables know.
    The input is not changed; the same (event, tables) give the same output."""
    out: dict[str, Any] = json.loads(json.dumps(event))  # a deep copy of plain JSON data
    misses: list[str] = []
    tags: list[str] = []
    event_type = out.get("event_type")
    actor = out.get("actor")
    if isinstance(actor, dict):
        _actor(actor, event_type, ctx, misses, tags)
        ip = (out.get("source") or {}).get("ip") if isinstance(out.get("source"), dict) else None
        if ctx.geoip is not None and actor.get("region") == UNKNOWN_REGION and isinstance(ip, str):
            region = ctx.geoip(ip)
            if region:
                actor["region"] = region
            else:
                misses.append("geoip")
    grantee = out.get("grantee")
    if isinstance(grantee, dict) and ctx.staff is not None:
        row = ctx.staff.get(str(grantee.get("id")))
        if row is None:
            misses.append("staff")
            tags.append(UNKNOWN_GRANTEE)
        else:
            grantee["kind"] = row.kind
            _fill_region(grantee, row.region)
    if ctx.accounts is not None:
        for key in ("target", "system"):
            node = out.get(key)
            if isinstance(node, dict) and not _target(node, ctx.accounts):
                misses.append("accounts")
                tags.append(UNKNOWN_TARGET)
        for target in out.get("targets") or ():  # a request's: the register gives regions; fill ZZ only
            if isinstance(target, dict):
                _target(target, ctx.accounts)
    if ctx.tickets is not None and event_type in TICKETED and out.get("ticket_id") is None:
        ticket = _ticket(out, ctx, ts)
        if ticket is not None:
            out["ticket_id"] = ticket.ticket_id
            if ticket.approved_by is not None and out.get("approved_by") is None:
                out["approved_by"] = ticket.approved_by
    if tags:
        have = list(out.get("tags") or ())
        out["tags"] = have + [t for t in dict.fromkeys(tags) if t not in have]
    return Enriched(out, tuple(misses))


def _fill_region(node: dict[str, Any], region: str) -> None:
    if node.get("region") in (None, UNKNOWN_REGION) and region != UNKNOWN_REGION:
        node["region"] = region


def _actor(actor: dict[str, Any], event_type: Any, ctx: Context, misses: list[str], tags: list[str]) -> None:
    identity = str(actor.get("id"))
    row = None if ctx.staff is None else ctx.staff.get(identity)
    if row is not None:
        actor["kind"] = row.kind
        _fill_region(actor, row.region)
        for name, value in (("role", row.role), ("created_at", row.created_at)):
            if actor.get(name) is None and value is not None:
                actor[name] = value
        return
    # A reporter (or any actor staff does not know) may be a platform account.
    account = None if ctx.accounts is None else ctx.accounts.get(identity)
    if account is not None:
        _fill_region(actor, account.region)
        if actor.get("created_at") is None and account.created_at is not None:
            actor["created_at"] = account.created_at
        return
    if ctx.staff is not None or (ctx.accounts is not None and event_type == "report.filed"):
        misses.append("staff" if ctx.staff is not None else "accounts")
        tags.append(UNKNOWN_ACTOR)


def _target(node: dict[str, Any], accounts: Mapping[str, Account]) -> bool:
    """Fill a target (or system) from its row, or its owner's; False when neither is known."""
    row = accounts.get(str(node.get("id")))
    owner_id = node.get("owner_id") or (row.owner if row is not None else None)
    owner = accounts.get(str(owner_id)) if owner_id is not None else None
    if row is None and owner is None:
        return False
    if row is not None:
        _fill_region(node, row.region)
        if "kind" in node and row.owner is not None and node.get("owner_id") is None:
            node["owner_id"] = row.owner
        if "kind" in node and row.tags:
            have = list(node.get("tags") or ())
            node["tags"] = have + [t for t in row.tags if t not in have]
    if owner is not None:
        _fill_region(node, owner.region)  # a meeting lives where its host does
    return True


def _ticket(event: dict[str, Any], ctx: Context, ts: float) -> Ticket | None:
    """The ticket covering the event: names one of its targets, open at ``ts``, assigned to or
    approved by the actor (any identity of the same person); the latest opened, then the smallest id."""
    names = [node.get("id") for key in ("target", "grantee", "system") if isinstance(node := event.get(key), dict)]
    actor = ctx.person(str((event.get("actor") or {}).get("id")))
    found: list[Ticket] = []
    for name in names:
        for ticket in ctx._by_target.get(str(name), ()):
            if not ticket.opened_at <= ts or (ticket.closed_at is not None and ts > ticket.closed_at):
                continue
            people = {ctx.person(p) for p in (ticket.assignee, ticket.approved_by) if p is not None}
            if actor in people:
                found.append(ticket)
    return min(found, key=lambda t: (-t.opened_at, t.ticket_id)) if found else None


# -- mapped events --------------------------------------------------------------------------------


@dataclass
class ContextStats:
    """Per source: lookups that failed, by table; events the tables left invalid (kept unenriched)."""

    misses: Counter[str] = field(default_factory=Counter)
    invalid: int = 0


def enrich_mapped(mapped: Mapped, ctx: Context, stats: ContextStats, limits: dec.Limits = dec.DEFAULT_LIMITS,
                  now: float | None = None) -> Mapped:  # fmt: skip
    """A mapped event enriched and decoded again (a contract event: the same JSON shape, keys sorted).
    Should the enriched event not decode (a line grown past the size limit), the mapped one is kept
    and counted in ``stats.invalid``."""
    if ctx.empty:
        return mapped
    result = enrich(mapped.event, ctx, mapped.ts)
    stats.misses.update(result.misses)
    if result.event == mapped.event:
        return mapped
    line = json.dumps(result.event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    decoded = dec.decode(line, limits, now)
    if isinstance(decoded, dec.Rejected):
        stats.invalid += 1
        return mapped
    return Mapped(result.event, decoded, line)
